//! `slipway verify`: build a component twice with no cache and prove the image ID is the same.
//!
//! Both builds are normalised ([`crate::reproduce::normalize`]) with the same SOURCE_DATE_EPOCH; the
//! second may run on another daemon (`--against`). When the IDs differ, the two images are
//! exported and compared: the first layer whose diff ID differs is listed on both sides and the
//! first entry that differs is named with its size, mtime and content digest, together with
//! the Dockerfile step that made the layer. A config that differs (the layers being the same)
//! is named by its JSON path.
//!
//! `--against` an image in a registry (`REPO:TAG`, `REPO@sha256:...`) builds once and compares
//! with that image, read through [`crate::registry`]: anyone can prove a published image came
//! from this tree.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::Value;

use crate::archive::save::{self, diff_ids};
use crate::builder::{self as build, BuildOptions};
use crate::config::Config;
use crate::docker::{self, Daemon, Endpoint};
use crate::error::Fail;
use crate::record::{self, ImageRecord};
use crate::report::{Event, Reporter};
use crate::reproduce::layer::{self, Listed};
use crate::reproduce::sde::{rfc3339, Sde};

/// One build of the two.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// The daemon it ran on (`unix:///var/run/docker.sock`, `tcp://...`).
    pub daemon: String,
    /// The normalised image ID.
    pub image_id: String,
    /// The input digest the build engine computed on that daemon.
    pub input_digest: String,
    /// Build and normalisation, in milliseconds.
    pub duration_ms: u64,
}

/// The result of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub component: String,
    pub identical: bool,
    pub source_date_epoch: Sde,
    pub first: Side,
    pub second: Side,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
    /// The registry image compared with (`--against REGISTRY_REF`): then `second` is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_image: Option<String>,
}

/// Where two images first differ.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Difference {
    /// A layer: the first whose diff ID differs (or that only one image has).
    Layer {
        /// 0-based, counting layers only (not metadata steps).
        index: usize,
        /// How many layers each image has.
        layers: (usize, usize),
        /// The Dockerfile step that made it, from the image history.
        step: String,
        first: Option<String>,
        second: Option<String>,
        /// The first entry that differs; `None` when only the tar encoding does.
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<Box<FileDifference>>,
        /// Paths of further entries that differ (at most [`MORE_PATHS`]).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        more: Vec<String>,
        /// How many entries of the layer differ in all.
        files_differing: usize,
    },
    /// The layers are the same; the config is not.
    Config {
        /// JSON pointer of the first value that differs (`/config/Env/2`).
        path: String,
        first: Option<Value>,
        second: Option<Value>,
    },
}

/// The first entry of a layer that differs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileDifference {
    /// Absolute path in the image (`/stamp`).
    pub path: String,
    /// What differs: `content`, `size`, `mtime`, `mode`, `owner`, `type`, `link`, `xattrs`,
    /// `only in one image`.
    pub differs: Vec<String>,
    pub first: Option<FileInfo>,
    pub second: Option<FileInfo>,
}

/// One side of a [`FileDifference`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileInfo {
    pub kind: String,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    /// The header's mode field, octal (permission bits, and type bits when the writer put
    /// them there).
    pub mode: String,
    pub uid: u64,
    pub gid: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// `sha256:` of the data.
    pub digest: String,
}

impl FileInfo {
    fn of(l: &Listed) -> Self {
        let h = &l.head;
        FileInfo {
            kind: h.kind().to_string(),
            size: h.size,
            mtime: h.mtime,
            // The header's whole mode field, so that a difference in its type bits shows.
            mode: format!("{:04o}", h.mode),
            uid: h.uid,
            gid: h.gid,
            link: (!h.link.is_empty()).then(|| String::from_utf8_lossy(&h.link).into_owned()),
            digest: l.digest.clone(),
        }
    }
}

/// An exported image: its config and, when asked for, the listing of one layer.
struct Dump {
    config: Value,
    layer: Option<Vec<Listed>>,
}

/// Exports `image` from `daemon` (spooled to a temporary directory) and lists layer `index`.
async fn dump(daemon: &Daemon, image: &str, index: Option<usize>) -> anyhow::Result<Dump> {
    let docker = daemon.long()?;
    let dir = crate::leftovers::temp_dir("verify")?;
    let export = docker.export_image(image).map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(export);
    let path = dir.path().to_path_buf();
    let image_name = image.to_string();
    let host = daemon.endpoint.host.clone();
    tokio::task::spawn_blocking(move || {
        let saved = save::spool(tokio_util::io::SyncIoBridge::new(reader), &path)
            .with_context(|| format!("exporting {image_name} from {host}"))?;
        let (config, layers) = saved.image()?;
        let layer = match index.and_then(|i| layers.get(i)) {
            Some((_, file)) => Some(
                layer::list(BufReader::with_capacity(1 << 20, File::open(file)?)).with_context(
                    || format!("listing layer {} of {image_name}", index.unwrap_or(0)),
                )?,
            ),
            None => None,
        };
        Ok(Dump { config, layer })
    })
    .await
    .context("export task")?
}

/// Where the images `a` (on daemon `da`) and `b` (on `db`) first differ; `None` when they are
/// the same image.
pub async fn compare(
    da: &Daemon,
    a: &str,
    db: &Daemon,
    b: &str,
) -> anyhow::Result<Option<Difference>> {
    let ia = da
        .docker
        .inspect_image(a)
        .await
        .with_context(|| format!("inspecting {a} on {}", da.endpoint.host))?;
    let ib = db
        .docker
        .inspect_image(b)
        .await
        .with_context(|| format!("inspecting {b} on {}", db.endpoint.host))?;
    if ia.id.is_some() && ia.id == ib.id {
        return Ok(None);
    }
    let la = ia.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let lb = ib.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let index = (0..la.len().max(lb.len())).find(|&i| la.get(i) != lb.get(i));
    let (first, second) = tokio::try_join!(dump(da, a, index), dump(db, b, index))?;
    // Same layers and the same config are the same image, even when one daemon names it by
    // its manifest digest (the containerd image store) and the other by its config digest.
    if index.is_none() && first.config == second.config {
        return Ok(None);
    }
    Ok(Some(difference(&first, &second, index)?))
}

fn difference(a: &Dump, b: &Dump, index: Option<usize>) -> anyhow::Result<Difference> {
    let Some(index) = index else {
        let (path, x, y) = first_json_difference(&a.config, &b.config, String::new())
            .unwrap_or_else(|| ("".into(), Some(a.config.clone()), Some(b.config.clone())));
        return Ok(Difference::Config {
            path,
            first: x,
            second: y,
        });
    };
    let (ida, idb) = (diff_ids(&a.config)?, diff_ids(&b.config)?);
    let step = step_of(&a.config, index)
        .or_else(|| step_of(&b.config, index))
        .unwrap_or_else(|| "(unknown step)".into());
    let (file, more, files_differing) = match (&a.layer, &b.layer) {
        (Some(x), Some(y)) => file_differences(x, y, MORE_PATHS),
        (Some(x), None) => file_differences(x, &[], MORE_PATHS),
        (None, Some(y)) => file_differences(&[], y, MORE_PATHS),
        (None, None) => (None, Vec::new(), 0),
    };
    let file = file.map(Box::new);
    Ok(Difference::Layer {
        index,
        layers: (ida.len(), idb.len()),
        step,
        first: ida.get(index).cloned(),
        second: idb.get(index).cloned(),
        file,
        more,
        files_differing,
    })
}

/// The Dockerfile step that made layer `index`: the `index`-th history entry that is not an
/// empty layer, made readable (`RUN date > /stamp`).
pub fn step_of(config: &Value, index: usize) -> Option<String> {
    let history = config.get("history")?.as_array()?;
    let entry = history
        .iter()
        .filter(|h| {
            !h.get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .nth(index)?;
    let by = entry.get("created_by")?.as_str()?.trim();
    Some(readable_step(by))
}

/// `/bin/sh -c #(nop) COPY ...` → `COPY ...`; `/bin/sh -c CMD` → `RUN CMD`;
/// `RUN /bin/sh -c CMD # buildkit` → `RUN CMD`.
pub fn readable_step(created_by: &str) -> String {
    let s = created_by.trim();
    let s = s.strip_suffix("# buildkit").unwrap_or(s).trim_end();
    if let Some(rest) = s.strip_prefix("/bin/sh -c #(nop)") {
        return rest.trim().to_string();
    }
    if let Some(rest) = s.strip_prefix("/bin/sh -c ") {
        return format!("RUN {}", rest.trim());
    }
    if let Some(rest) = s.strip_prefix("RUN /bin/sh -c ") {
        return format!("RUN {}", rest.trim());
    }
    s.to_string()
}

fn only_one(l: &Listed, first: bool) -> FileDifference {
    let info = FileInfo::of(l);
    FileDifference {
        path: display_path(&l.head.path),
        differs: vec!["only in one image".into()],
        first: first.then(|| info.clone()),
        second: (!first).then_some(info),
    }
}

fn display_path(p: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(layer::key_of(p)))
}

/// How many further differing paths a report names after the first.
pub const MORE_PATHS: usize = 20;

/// The first entry (in path order) that differs between two layer listings.
pub fn first_file_difference(a: &[Listed], b: &[Listed]) -> Option<FileDifference> {
    file_differences(a, b, 0).0
}

/// The first entry that differs, the paths of up to `more` further ones, and how many differ
/// in all.
pub fn file_differences(
    a: &[Listed],
    b: &[Listed],
    more: usize,
) -> (Option<FileDifference>, Vec<String>, usize) {
    fn sorted(v: &[Listed]) -> Vec<&Listed> {
        let mut v: Vec<&Listed> = v.iter().collect();
        v.sort_by(|x, y| layer::path_cmp(layer::key_of(&x.head.path), layer::key_of(&y.head.path)));
        v
    }
    let (a, b) = (sorted(a), sorted(b));
    let (mut i, mut j) = (0, 0);
    let mut first: Option<FileDifference> = None;
    let mut paths = Vec::new();
    let mut count = 0usize;
    let mut found = |d: FileDifference| {
        count += 1;
        if first.is_none() {
            first = Some(d);
        } else if paths.len() < more {
            paths.push(d.path);
        }
        more == 0
    };
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => {
                layer::path_cmp(layer::key_of(&x.head.path), layer::key_of(&y.head.path))
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let stop = match order {
            std::cmp::Ordering::Less => {
                i += 1;
                found(only_one(a[i - 1], true))
            }
            std::cmp::Ordering::Greater => {
                j += 1;
                found(only_one(b[j - 1], false))
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&a[i].head, &b[j].head);
                let mut differs = Vec::new();
                if x.typeflag != y.typeflag {
                    differs.push("type");
                }
                if a[i].digest != b[j].digest {
                    differs.push("content");
                }
                if x.size != y.size {
                    differs.push("size");
                }
                if x.mtime != y.mtime {
                    differs.push("mtime");
                }
                if x.mode & 0o7777 != y.mode & 0o7777 {
                    differs.push("mode");
                } else if x.mode != y.mode {
                    // Same permissions, another encoding of the header's mode field (some
                    // BuildKit versions write the file type bits there too).
                    differs.push("mode field");
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    differs.push("owner");
                }
                if x.link != y.link {
                    differs.push("link");
                }
                if x.pax != y.pax {
                    differs.push("xattrs");
                }
                let (p, q) = (a[i], b[j]);
                i += 1;
                j += 1;
                !differs.is_empty()
                    && found(FileDifference {
                        path: display_path(&x.path),
                        differs: differs.into_iter().map(String::from).collect(),
                        first: Some(FileInfo::of(p)),
                        second: Some(FileInfo::of(q)),
                    })
            }
        };
        if stop {
            break;
        }
    }
    (first, paths, count)
}

/// The first JSON pointer where two values differ, with both values there.
pub fn first_json_difference(
    a: &Value,
    b: &Value,
    at: String,
) -> Option<(String, Option<Value>, Option<Value>)> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_json_difference(p, q, path) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some((path, p.cloned(), q.cloned())),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let path = format!("{at}/{i}");
                match (x.get(i), y.get(i)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_json_difference(p, q, path) {
                            return Some(d);
                        }
                    }
                    (p, q) => return Some((path, p.cloned(), q.cloned())),
                }
            }
            None
        }
        _ if a == b => None,
        _ => Some((at, Some(a.clone()), Some(b.clone()))),
    }
}

/// `slipway verify COMPONENT [--against DOCKER_HOST]`: two no-cache builds through the build
/// engine (each normalised by it), then [`compare`]. The first build runs on `daemon` and is
/// recorded like any build; the second runs on `against` when given (its base images are
/// copied there first when it lacks them, and the build record is left as the first build
/// wrote it), else on `daemon` again.
pub async fn run(
    reporter: Arc<dyn Reporter>,
    config: &Config,
    daemon: &Daemon,
    component: &str,
    against: Option<&str>,
) -> anyhow::Result<VerifyReport> {
    if let Some(reference) = against.filter(|a| !a.contains("://")) {
        return against_registry(reporter, config, daemon, component, reference).await;
    }
    let selected = build::select(config, &[component.to_string()])?;
    let sde = crate::reproduce::sde::for_context(&config.context_dir(selected[0]))?;
    let other = match against {
        Some(host) => Some(
            docker::connect_to(
                Endpoint {
                    host: host.to_string(),
                    source: "--against".into(),
                },
                std::time::Duration::from_secs(10),
            )
            .await?,
        ),
        None => None,
    };
    let selection = [component.to_string()];
    let opts = BuildOptions {
        no_cache: true,
        ..Default::default()
    };

    let t0 = Instant::now();
    let (plan, first) = build_once(&reporter, config, daemon, component).await?;
    let first = Side {
        daemon: daemon.endpoint.host.clone(),
        image_id: first.image_id,
        input_digest: first.input_digest,
        duration_ms: millis(t0),
    };
    // Keep the first image named while the second build moves the component's tags.
    let keep = format!(
        "{}:slipway-verify-{}",
        config.image_repo(component),
        std::process::id()
    );
    tag(daemon, &first.image_id, &keep).await?;

    let result = async {
        let t0 = Instant::now();
        let second_daemon = other.as_ref().unwrap_or(daemon);
        let second = match &other {
            Some(b) => {
                copy_bases(reporter.as_ref(), daemon, b, &plan).await?;
                let saved = std::fs::read(record::last_build_path(config)).ok();
                let plan_b = build::plan(config, b, &selection).await?;
                let built = build::execute(reporter.clone(), config, b, &plan_b, &opts).await;
                // The record describes this machine's daemon: put the first build's back.
                if let Some(bytes) = saved {
                    crate::fsutil::write_atomic(&record::last_build_path(config), &bytes, None)?;
                }
                one(built?.report, component)?
            }
            None => {
                // Planned again: a base image may have changed since (the input digests then
                // say so).
                let plan = build::plan(config, daemon, &selection).await?;
                one(
                    build::execute(reporter.clone(), config, daemon, &plan, &opts)
                        .await?
                        .report,
                    component,
                )?
            }
        };
        let second = Side {
            daemon: second_daemon.endpoint.host.clone(),
            image_id: second.image_id,
            input_digest: second.input_digest,
            duration_ms: millis(t0),
        };
        reporter.report(Event::Step {
            task: component.to_string(),
            step: "compare the two images".into(),
            cached: false,
        });
        let difference = compare(daemon, &first.image_id, second_daemon, &second.image_id).await?;
        anyhow::Ok((second, difference))
    }
    .await;
    let _ = crate::docker::images::untag(&daemon.docker, &keep).await;
    let (second, difference) = result?;
    Ok(VerifyReport {
        component: component.to_string(),
        identical: difference.is_none(),
        source_date_epoch: sde,
        first,
        second,
        difference,
        registry_image: None,
    })
}

/// `slipway verify COMPONENT --against REGISTRY_REF`: one no-cache build here, compared with
/// the image `reference` names in its registry (read with [`crate::registry`]: its manifest,
/// its config, and the layer that differs), so anyone can check that a published image came
/// from this tree. The same image has the same config digest; where they differ, the first
/// layer and file are named as for two builds.
async fn against_registry(
    reporter: Arc<dyn Reporter>,
    config: &Config,
    daemon: &Daemon,
    component: &str,
    reference: &str,
) -> anyhow::Result<VerifyReport> {
    let selected = build::select(config, &[component.to_string()])?;
    let sde = crate::reproduce::sde::for_context(&config.context_dir(selected[0]))?;
    let (repository, tag) = crate::registry::split_reference(reference);
    let client = crate::push::client(daemon, &repository, false).await?;
    let manifest = client.get_manifest(&tag).await?.ok_or_else(|| {
        Fail::usage(format!("{reference} is not in its registry")).hint(
            "name an image that was pushed: the `pushed` reference `slipway build --push` records",
        )
    })?;
    let pushed = manifest.image().map_err(|e| {
        e.context(
            Fail::usage(format!(
                "{reference} is not one image (a multi-platform index?)"
            ))
            .hint("name one platform's image by its manifest digest: REPO@sha256:..."),
        )
    })?;
    let remote_config: Value =
        serde_json::from_slice(&client.get_blob(&pushed.config.digest).await?)
            .with_context(|| format!("the config of {reference} is not JSON"))?;

    let t0 = Instant::now();
    let (_, built) = build_once(&reporter, config, daemon, component).await?;
    let local_id = crate::push::config_digest_of(daemon, &built.image).await?;
    let first = Side {
        daemon: daemon.endpoint.host.clone(),
        image_id: local_id.clone(),
        input_digest: built.input_digest,
        duration_ms: millis(t0),
    };
    let second = Side {
        daemon: reference.to_string(),
        image_id: pushed.config.digest.clone(),
        input_digest: remote_config
            .pointer(&format!(
                "/config/Labels/{}",
                build::LABEL_DIGEST.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        duration_ms: 0,
    };
    reporter.report(Event::Step {
        task: component.to_string(),
        step: format!("compare with {reference}"),
        cached: false,
    });
    let difference = if local_id == pushed.config.digest {
        None
    } else {
        let local_layers = daemon
            .docker
            .inspect_image(&built.image)
            .await?
            .root_fs
            .and_then(|r| r.layers)
            .unwrap_or_default();
        let remote_layers = diff_ids(&remote_config)?;
        let index = (0..local_layers.len().max(remote_layers.len()))
            .find(|&i| local_layers.get(i) != remote_layers.get(i));
        let local = dump(daemon, &built.image, index).await?;
        let layer = match index.and_then(|i| pushed.layers.get(i)) {
            Some(blob) => Some(list_blob(&client, &blob.digest).await.with_context(|| {
                format!("listing layer {} of {reference}", index.unwrap_or_default())
            })?),
            None => None,
        };
        let remote = Dump {
            config: remote_config,
            layer,
        };
        Some(difference(&local, &remote, index)?)
    };
    Ok(VerifyReport {
        component: component.to_string(),
        identical: difference.is_none(),
        source_date_epoch: sde,
        first,
        second,
        difference,
        registry_image: Some(reference.to_string()),
    })
}

/// The entries of the layer blob `digest` (gzip or plain tar), read from a temporary file.
async fn list_blob(client: &crate::registry::Client, digest: &str) -> anyhow::Result<Vec<Listed>> {
    let dir = crate::leftovers::temp_dir("verify")?;
    let path = dir.path().join("layer");
    client.get_blob_to(digest, &path).await?;
    tokio::task::spawn_blocking(move || {
        let listed = layer::list(crate::reproduce::normalize::plain_reader(&path)?);
        drop(dir);
        listed
    })
    .await
    .context("listing task")?
}

/// One no-cache build of `component` on `daemon` through the build engine: its plan and its
/// record.
async fn build_once(
    reporter: &Arc<dyn Reporter>,
    config: &Config,
    daemon: &Daemon,
    component: &str,
) -> anyhow::Result<(build::BuildPlan, ImageRecord)> {
    let opts = BuildOptions {
        no_cache: true,
        ..Default::default()
    };
    let plan = build::plan(config, daemon, &[component.to_string()]).await?;
    let built = build::execute(reporter.clone(), config, daemon, &plan, &opts).await?;
    Ok((plan, one(built.report, component)?))
}

fn millis(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn one(report: record::BuildReport, component: &str) -> anyhow::Result<ImageRecord> {
    report
        .components
        .get(component)
        .cloned()
        .with_context(|| format!("the build of `{component}` reported no image"))
}

async fn tag(daemon: &Daemon, id: &str, reference: &str) -> anyhow::Result<()> {
    let (repo, tag) = crate::reproduce::normalize::split_tag(reference);
    daemon
        .docker
        .tag_image(
            id,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .with_context(|| format!("tagging {id} as {reference}"))
}

/// Copies the plan's base images from `a` to `b` where `b` lacks them (a daemon such as a
/// minikube node's starts empty, and nothing can be pulled); one with another ID there is
/// left alone, with a warning: the builds then start from different images.
async fn copy_bases(
    reporter: &dyn Reporter,
    a: &Daemon,
    b: &Daemon,
    plan: &build::BuildPlan,
) -> anyhow::Result<()> {
    for c in &plan.components {
        for (reference, id) in &c.base_images {
            match b.docker.inspect_image(reference).await {
                Ok(i) if i.id.as_deref() == Some(id.as_str()) => continue,
                Ok(i) => {
                    reporter.report(Event::Warn {
                        message: format!(
                            "base image {reference} is {} on {} but {} on {}: the two builds start from different images",
                            i.id.unwrap_or_default(),
                            b.endpoint.host,
                            id,
                            a.endpoint.host
                        ),
                    });
                    continue;
                }
                Err(_) => {}
            }
            reporter.report(Event::Info {
                message: format!(
                    "copying base image {reference} from {} to {} (nothing is pulled during a build)",
                    a.endpoint.host, b.endpoint.host
                ),
            });
            transfer(a, b, reference).await.with_context(|| {
                format!("copying base image {reference} to {}", b.endpoint.host)
            })?;
        }
    }
    Ok(())
}

/// `docker save REF | DOCKER_HOST=b docker load`, streamed.
pub async fn transfer(a: &Daemon, b: &Daemon, reference: &str) -> anyhow::Result<()> {
    let from = a.long()?;
    let to = b.long()?;
    let export = from.export_image(reference);
    crate::docker::images::load(&to, export).await
}

/// The report as people read it.
pub fn render(r: &VerifyReport) -> String {
    let mut out = String::new();
    let verdict = match (&r.registry_image, r.identical) {
        (None, true) => "reproducible".to_string(),
        (None, false) => "NOT reproducible".to_string(),
        (Some(image), true) => format!("built here, the same image as {image}"),
        (Some(image), false) => format!("built here, NOT the image {image}"),
    };
    let _ = writeln!(out, "{}: {verdict}", r.component);
    let _ = writeln!(
        out,
        "  SOURCE_DATE_EPOCH {} ({}, {})",
        r.source_date_epoch.epoch,
        r.source_date_epoch.rfc3339(),
        r.source_date_epoch.origin()
    );
    let names = match r.registry_image {
        None => ["first build: ", "second build:"],
        Some(_) => ["built here:  ", "pushed:      "],
    };
    for (name, s) in [(names[0], &r.first), (names[1], &r.second)] {
        let _ = writeln!(
            out,
            "  {name} {} on {} ({:.1} s)",
            s.image_id,
            s.daemon,
            s.duration_ms as f64 / 1000.0
        );
    }
    if r.registry_image.is_some() && r.first.input_digest != r.second.input_digest {
        let _ = writeln!(
            out,
            "  the input digests differ ({} / {}): it was built from another tree or other base images",
            crate::docker::images::short_id(&r.first.input_digest),
            crate::docker::images::short_id(&r.second.input_digest)
        );
    } else if r.first.input_digest != r.second.input_digest {
        let _ = writeln!(
            out,
            "  the input digests differ ({} / {}): the daemons resolved other base images",
            crate::docker::images::short_id(&r.first.input_digest),
            crate::docker::images::short_id(&r.second.input_digest)
        );
    }
    if let Some(d) = &r.difference {
        out.push_str(&render_difference(d));
    }
    out
}

/// A [`Difference`] as indented lines.
pub fn render_difference(d: &Difference) -> String {
    let mut out = String::new();
    match d {
        Difference::Layer {
            index,
            layers,
            step,
            first,
            second,
            file,
            more,
            files_differing,
        } => {
            let _ = writeln!(
                out,
                "  first difference: layer {index} (0-based; {}), made by `{step}`",
                if layers.0 == layers.1 {
                    format!("{} layers", layers.0)
                } else {
                    format!("{} layers / {} layers", layers.0, layers.1)
                }
            );
            let _ = writeln!(
                out,
                "    diff IDs: {} / {}",
                first.as_deref().unwrap_or("(none)"),
                second.as_deref().unwrap_or("(none)")
            );
            match file {
                Some(f) => {
                    let _ = writeln!(out, "    {}: {} differs", f.path, f.differs.join(", "));
                    for (name, info) in [("first: ", &f.first), ("second:", &f.second)] {
                        let _ = match info {
                            Some(i) => writeln!(
                                out,
                                "      {name} {} {} bytes, mtime {} ({}), mode {}, owner {}:{}, {}{}",
                                i.kind,
                                i.size,
                                i.mtime,
                                rfc3339(i.mtime.max(0)),
                                i.mode,
                                i.uid,
                                i.gid,
                                i.digest,
                                i.link.as_ref().map(|l| format!(", link to {l}")).unwrap_or_default()
                            ),
                            None => writeln!(out, "      {name} (absent)"),
                        };
                    }
                }
                None => {
                    let _ = writeln!(
                        out,
                        "    every entry is the same; the tar encoding differs (entry order or header format)"
                    );
                }
            }
            if *files_differing > 1 {
                let _ = writeln!(
                    out,
                    "    {} more entr{} of this layer differ{}: {}{}",
                    files_differing - 1,
                    if *files_differing == 2 { "y" } else { "ies" },
                    if *files_differing == 2 { "s" } else { "" },
                    more.join(", "),
                    if more.len() + 1 < *files_differing {
                        ", ..."
                    } else {
                        ""
                    }
                );
            }
        }
        Difference::Config {
            path,
            first,
            second,
        } => {
            let show = |v: &Option<Value>| {
                v.as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(absent)".into())
            };
            let _ = writeln!(out, "  first difference: the image config at {path}");
            let _ = writeln!(out, "      first:  {}", show(first));
            let _ = writeln!(out, "      second: {}", show(second));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed(path: &str, size: u64, mtime: i64, digest: &str) -> Listed {
        Listed {
            head: layer::Head {
                path: path.as_bytes().to_vec(),
                link: vec![],
                typeflag: b'0',
                size,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime,
                pax: vec![],
            },
            digest: digest.into(),
        }
    }

    #[test]
    fn steps_are_named_from_history() {
        let c = json!({"history": [
            {"created_by": "/bin/sh -c #(nop) COPY file:73e2 in /bin/busybox "},
            {"created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]", "empty_layer": true},
            {"created_by": "/bin/sh -c date +%s%N > /stamp"},
            {"created_by": "RUN /bin/sh -c echo hi > /x # buildkit"}
        ]});
        assert_eq!(step_of(&c, 0).unwrap(), "COPY file:73e2 in /bin/busybox");
        assert_eq!(step_of(&c, 1).unwrap(), "RUN date +%s%N > /stamp");
        assert_eq!(step_of(&c, 2).unwrap(), "RUN echo hi > /x");
        assert_eq!(step_of(&c, 3), None);
    }

    #[test]
    fn the_first_differing_file_is_named() {
        let a = vec![
            listed("app/", 0, 5, "e"),
            listed("app/x", 1, 5, "d1"),
            listed("stamp", 20, 5, "s1"),
        ];
        let b = vec![
            listed("app/", 0, 5, "e"),
            listed("app/x", 1, 5, "d1"),
            listed("stamp", 19, 5, "s2"),
        ];
        let d = first_file_difference(&a, &b).unwrap();
        assert_eq!(d.path, "/stamp");
        assert_eq!(d.differs, ["content", "size"]);
        assert_eq!(d.first.as_ref().unwrap().size, 20);
        assert_eq!(d.second.as_ref().unwrap().size, 19);
        let c = vec![listed("app/", 0, 5, "e"), listed("app/x", 1, 5, "d1")];
        let d = first_file_difference(&a, &c).unwrap();
        assert_eq!((d.path.as_str(), d.second.is_none()), ("/stamp", true));
        assert_eq!(first_file_difference(&a, &a), None);
        let text = render_difference(&Difference::Layer {
            index: 2,
            layers: (3, 3),
            step: "RUN date > /stamp".into(),
            first: Some("sha256:1".into()),
            second: Some("sha256:2".into()),
            file: first_file_difference(&a, &b).map(Box::new),
            more: vec!["/x".into()],
            files_differing: 2,
        });
        assert!(
            text.contains("layer 2 (0-based; 3 layers), made by `RUN date > /stamp`"),
            "{text}"
        );
        assert!(text.contains("/stamp: content, size differs"), "{text}");
        assert!(
            text.contains("1 more entry of this layer differs: /x\n"),
            "{text}"
        );
        let (_, more, n) = file_differences(&a, &c, 5);
        assert_eq!((more.len(), n), (0, 1));
        let d = vec![listed("app/", 0, 6, "e"), listed("app/x", 1, 5, "d2")];
        let (first, more, n) = file_differences(&a, &d, 5);
        assert_eq!(first.unwrap().path, "/app");
        assert_eq!(
            (more, n),
            (vec!["/app/x".to_string(), "/stamp".to_string()], 3)
        );
        assert!(
            text.contains("first:  file 20 bytes, mtime 5 (1970-01-01T00:00:05Z)"),
            "{text}"
        );
    }

    #[test]
    fn json_differences_by_pointer() {
        let a = json!({"config": {"Env": ["A=1", "B=2"], "Labels": {"x/y": "1"}}});
        let b = json!({"config": {"Env": ["A=1", "B=3"], "Labels": {"x/y": "1"}}});
        assert_eq!(
            first_json_difference(&a, &b, String::new()),
            Some((
                "/config/Env/1".into(),
                Some(json!("B=2")),
                Some(json!("B=3"))
            ))
        );
        let c = json!({"config": {"Env": ["A=1", "B=2"], "Labels": {"x/y": "2"}}});
        assert_eq!(
            first_json_difference(&a, &c, String::new()).unwrap().0,
            "/config/Labels/x~1y"
        );
        assert_eq!(first_json_difference(&a, &a, String::new()), None);
    }
}
