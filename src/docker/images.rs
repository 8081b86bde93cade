//! What an image is, the same way on every daemon.
//!
//! On the classic image store an image's ID is the digest of its config. On the containerd
//! image store (Docker Desktop's and Engine 29's default) it is the digest of its manifest,
//! which also covers how the layers were compressed; and Docker 26's inspect does not show the
//! config digest. slipway names base images by config digest everywhere, so that the same
//! base gives the same input digest on every daemon: on the containerd store it is read from
//! the image's export (the first small blob that is a config with the image's layers; the
//! export stops there) and kept in a file, since a manifest digest always names one config.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::Daemon;

/// Largest blob read to see whether it is the config.
const MAX_CONFIG: u64 = 4 << 20;

/// The file in slipway's cache directory that maps manifest digests to config digests (valid
/// on every daemon and in every project: a manifest digest always names one config).
const CACHE_FILE: &str = "image-configs.json";

/// An image ID as `docker images` shows it: its first 12 hex digits, without `sha256:`.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Removes the tag `reference`, never the image while another tag names it, and never its
/// parents (`noprune`: the legacy builder's cache). Given an image ID no tag names, removes
/// that image alone.
pub async fn untag(
    docker: &bollard::Docker,
    reference: &str,
) -> Result<(), bollard::errors::Error> {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .noprune(true)
        .build();
    docker.remove_image(reference, Some(options), None).await?;
    Ok(())
}

/// `POST /images/load` of the archive `body` (a docker-save tar or an OCI layout), its
/// progress read to the end: the daemon's last error message, if it refused any of it.
pub async fn load<S, E>(docker: &bollard::Docker, body: S) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    use futures_util::StreamExt;
    let options = bollard::query_parameters::ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut progress = docker.import_image_stream(options, body, None);
    let mut failure = None;
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(e) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(anyhow::anyhow!(e));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The config digest of `image` (known to the daemon as `id`, with layers `diff_ids`) on a
/// containerd-store daemon; kept in `cache_dir`'s [`CACHE_FILE`].
pub async fn config_digest(
    daemon: &Daemon,
    image: &str,
    id: &str,
    diff_ids: &[String],
    cache_dir: &Path,
) -> anyhow::Result<String> {
    if let Some(d) = read_cache(cache_dir).get(id) {
        return Ok(d.clone());
    }
    // The long bound on a response: see `reproduce::normalize::export`.
    let export = daemon
        .long()?
        .export_image(id)
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(export);
    let want = diff_ids.to_vec();
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let mut archive = tar::Archive::new(bridge);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            if !path.starts_with("blobs/sha256/") || entry.size() > MAX_CONFIG {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let layers: Option<Vec<String>> = value
                .pointer("/rootfs/diff_ids")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if layers.as_deref() == Some(want.as_slice()) {
                return Ok(Some(format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(&bytes))
                )));
            }
        }
        Ok(None)
    })
    .await
    .context("the export task stopped")?
    .with_context(|| {
        format!(
            "reading the config of {image} from {}",
            daemon.endpoint.host
        )
    })?;
    let digest = found.with_context(|| {
        format!(
            "the export of {image} from {} holds no config with its layers",
            daemon.endpoint.host
        )
    })?;
    remember_config(cache_dir, id, &digest);
    Ok(digest)
}

fn read_cache(cache_dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(cache_dir.join(CACHE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Notes in `cache_dir` that the image the daemon calls `id` (a manifest digest) has the
/// config `config`, as normalising learns when it loads an image it wrote.
pub fn remember_config(cache_dir: &Path, id: &str, config: &str) {
    let mut known = read_cache(cache_dir);
    if known.get(id).map(String::as_str) == Some(config) {
        return;
    }
    known.insert(id.to_string(), config.to_string());
    let _ = std::fs::create_dir_all(cache_dir);
    // A cache: losing it costs one export, so a failed write is not an error.
    if let Ok(bytes) = serde_json::to_vec_pretty(&known) {
        let _ = crate::fsutil::write_atomic(&cache_dir.join(CACHE_FILE), &bytes, None);
    }
}
