//! Reading a few files of an image without running it.
//!
//! The daemon lays an image's layers over one another (upper layers override lower ones,
//! whiteouts remove) for a container; a container that is created but never started costs no
//! process, and its archive endpoint (`GET /containers/ID/archive`, what `docker cp` uses)
//! gives any path of that merged view as a small tar. That is far cheaper than exporting the
//! image to read its layers. The container is removed before returning, whatever happened; one
//! a killed run left carries its pid in [`READER_LABEL`] and the next run removes it
//! ([`crate::leftovers::reap_readers`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use anyhow::Context as _;
use futures_util::TryStreamExt;

use super::Daemon;

/// The label of the containers made to read files: the pid of the run that made it.
pub const READER_LABEL: &str = "dev.slipway.reader-pid";

/// Largest file read (dpkg's status file of a large image is a few MB).
const MAX_FILE: u64 = 64 << 20;
/// Symbolic links followed for one path (`/etc/os-release` → `../usr/lib/os-release`).
const MAX_LINKS: usize = 8;

/// The contents of those of `paths` (absolute) that are files in `image`, following symbolic
/// links; a path the image lacks is left out.
pub async fn read_files(
    daemon: &Daemon,
    image: &str,
    paths: &[&str],
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    // Before this run's first reader on a daemon: what killed runs left there goes first.
    static REAPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let first = {
        let mut reaped = REAPED.lock().unwrap_or_else(|e| e.into_inner());
        let first = !reaped.contains(&daemon.endpoint.host);
        if first {
            reaped.push(daemon.endpoint.host.clone());
        }
        first
    };
    if first {
        crate::leftovers::reap_readers(daemon).await;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("slipway-read-{}-{nanos}", std::process::id());
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.to_string()),
        // Never started: an entrypoint is needed only because an image without one (FROM
        // scratch) cannot be created otherwise.
        entrypoint: Some(vec!["/slipway-never-runs".to_string()]),
        cmd: Some(Vec::new()),
        network_disabled: Some(true),
        labels: Some(HashMap::from([(
            READER_LABEL.to_string(),
            std::process::id().to_string(),
        )])),
        ..Default::default()
    };
    let opts = bollard::query_parameters::CreateContainerOptions {
        name: Some(name.clone()),
        platform: String::new(),
    };
    let created = daemon
        .docker
        .create_container(Some(opts), body)
        .await
        .with_context(|| {
            format!(
                "creating a container (never started) of {image} on {} to read its files",
                daemon.endpoint.host
            )
        })?;
    let mut out = BTreeMap::new();
    let mut result = Ok(());
    for path in paths {
        match read_following(daemon, &created.id, path).await {
            Ok(Some(bytes)) => {
                out.insert(path.to_string(), bytes);
            }
            Ok(None) => {}
            Err(e) => {
                result = Err(e.context(format!("reading {path} of {image}")));
                break;
            }
        }
    }
    let remove = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    let removed = daemon
        .docker
        .remove_container(&created.id, Some(remove))
        .await
        .with_context(|| format!("removing the container {name} slipway created to read {image}"));
    result?;
    removed?;
    Ok(out)
}

/// One path, following symbolic links (relative ones from the link's directory).
async fn read_following(
    daemon: &Daemon,
    container: &str,
    path: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let mut path = path.to_string();
    for _ in 0..MAX_LINKS {
        match read_one(daemon, container, &path).await? {
            None => return Ok(None),
            Some(Entry::File(bytes)) => return Ok(Some(bytes)),
            Some(Entry::Link(target)) => {
                path = if target.starts_with('/') {
                    target
                } else {
                    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                    format!("{dir}/{target}")
                };
            }
        }
    }
    Ok(None)
}

enum Entry {
    File(Vec<u8>),
    Link(String),
}

/// The archive of one path: its file's bytes or its link's target; `None` when there is no
/// such path (or it is a directory or something else).
async fn read_one(daemon: &Daemon, container: &str, path: &str) -> anyhow::Result<Option<Entry>> {
    let opts = bollard::query_parameters::DownloadFromContainerOptions {
        path: path.to_string(),
    };
    let stream = daemon.docker.download_from_container(container, Some(opts));
    let tar: Vec<u8> = match stream.map_ok(|b| b.to_vec()).try_concat().await {
        Ok(t) => t,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut archive = tar::Archive::new(tar.as_slice());
    let Some(entry) = archive.entries()?.next() else {
        return Ok(None);
    };
    let mut entry = entry?;
    let kind = entry.header().entry_type();
    if kind.is_symlink() {
        let target = entry
            .link_name()?
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Some(Entry::Link(target)));
    }
    if !kind.is_file() {
        return Ok(None);
    }
    if entry.size() > MAX_FILE {
        anyhow::bail!("it is larger than {} MB", MAX_FILE >> 20);
    }
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    Ok(Some(Entry::File(bytes)))
}
