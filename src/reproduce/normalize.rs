//! Image normalisation: the same filesystem and config give the same image ID, whenever and
//! wherever the image was built.
//!
//! The image is exported from the daemon (a docker-save tar, streamed to spool files in a
//! temporary directory, never held in memory), each layer is rewritten by
//! [`super::layer`] (mtimes clamped to SOURCE_DATE_EPOCH, entries in a fixed order), the config
//! gets SOURCE_DATE_EPOCH as its creation time and in its history, and the new diff IDs; the
//! result is loaded back under the image's tags. A layer that is already normal is not
//! rewritten (its spool file is loaded as it is), and an image whose normal form the daemon
//! already has is not loaded at all: its tags are just moved.
//!
//! Besides times, the config loses what only the legacy builder writes and what names that
//! build's own containers and intermediate images: `container`, `container_config` and
//! `config.Image` (Docker 25 stopped writing them; BuildKit never did; nothing reads them at
//! run time). Labels, environment, entrypoint and the rest are kept as they are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures_util::TryStreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::sde::rfc3339;
use super::{layer, partial, stored};
use crate::archive::blocks;
use crate::archive::oci::{self, Descriptor};
use crate::archive::save::{self, diff_ids, Saved};
use crate::archive::ImageFiles;
use crate::docker::Daemon;
use crate::error::Fail;

/// What normalising one image did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Normalized {
    /// `sha256:...` of the normal form (the config digest).
    pub image_id: String,
    /// What the daemon calls it: the config digest on the classic image store, the manifest
    /// digest on the containerd image store.
    pub daemon_id: String,
    /// The image it was made from.
    pub source_id: String,
    pub layers: Vec<LayerOutcome>,
    /// The daemon had the normal form already: only tags were set.
    pub already_present: bool,
    /// How the image came from the daemon: `pushed 1 of 5 layers` (only the layers above
    /// those an earlier image shares, see [`super::partial`]), or `whole image` and why.
    pub export: String,
    /// An earlier normal image with the same OS files (dpkg status, os-release): the new
    /// layers touch none of them.
    #[serde(skip)]
    pub same_os_as: Option<String>,
    /// Milliseconds spent exporting, rewriting and loading (or tagging).
    pub export_ms: u64,
    pub rewrite_ms: u64,
    pub load_ms: u64,
}

/// One layer's fate.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerOutcome {
    /// Diff ID before and after.
    pub before: String,
    pub after: String,
    pub size: u64,
    /// Whether its bytes changed.
    pub rewritten: bool,
}

/// Normalises `image` (a reference or an ID) on `daemon` with SOURCE_DATE_EPOCH `sde`, loads
/// the result back under `tags` and returns its image ID.
pub async fn normalize(
    daemon: &Daemon,
    image: &str,
    sde: i64,
    tags: &[String],
) -> anyhow::Result<String> {
    Ok(normalize_image(daemon, image, sde, tags).await?.image_id)
}

/// [`normalize`], saying what it did to each layer.
pub async fn normalize_image(
    daemon: &Daemon,
    image: &str,
    sde: i64,
    tags: &[String],
) -> anyhow::Result<Normalized> {
    normalize_on_bases(daemon, image, sde, tags, &[]).await
}

/// [`normalize_image`], keeping the layers the image shares with one of `bases` (each the diff
/// IDs of a base image) as they are. A base's layers are an input of the build, named by the
/// base's image ID: they are the same bytes wherever that base is, so rewriting them adds
/// nothing to reproducibility; kept, they stay shared with the base and with every other image
/// on it (in the daemon, on cluster nodes, in a registry), and are never read or rewritten.
pub async fn normalize_on_bases(
    daemon: &Daemon,
    image: &str,
    sde: i64,
    tags: &[String],
    bases: &[Vec<String>],
) -> anyhow::Result<Normalized> {
    Ok(
        normalize_keeping(daemon, image, sde, tags, bases, Keep::default())
            .await?
            .0,
    )
}

/// Paths in a layer a caller wants to know about (`attest::is_os_file`): normalising says when
/// an image's new layers have none, so that what was read of an earlier image still holds
/// ([`Normalized::same_os_as`]).
pub type Watched = fn(&[u8]) -> bool;

/// A normal form whose files are written, before the daemon has loaded it: enough for a load
/// into a cluster's nodes to start (`up` starts it then).
#[derive(Debug, Clone)]
pub struct Ready {
    /// Its ID: the config digest.
    pub image_id: String,
    /// Its layers' diff IDs, bottom first.
    pub diff_ids: Vec<String>,
    pub files: Arc<ImageFiles>,
}

/// What a caller keeps of a normalisation besides the image on the daemon.
#[derive(Clone, Copy, Default)]
struct Keep<'a> {
    /// The normal form's files on disk (for a load in the same run: see [`ImageFiles`]).
    files: bool,
    /// Paths to say the new layers leave alone, or not.
    watched: Option<Watched>,
    /// Told of the kept files as soon as they are written, before the daemon loads the image.
    ready: Option<&'a (dyn Fn(Ready) + Sync)>,
}

/// The normal form's files while the daemon loads it: kept for the caller (and handed to
/// `ready` first), or only their directory held until then.
enum Held {
    Kept(Arc<ImageFiles>),
    Dir { _dir: tempfile::TempDir },
}

impl Held {
    fn new(plan: &Plan, dir: tempfile::TempDir, keep: Keep<'_>) -> Self {
        if !keep.files {
            return Held::Dir { _dir: dir };
        }
        let files = Arc::new(plan.clone().files(dir));
        if let Some(ready) = keep.ready {
            ready(Ready {
                image_id: plan.image_id.clone(),
                diff_ids: plan.outcomes.iter().map(|o| o.after.clone()).collect(),
                files: files.clone(),
            });
        }
        Held::Kept(files)
    }

    fn kept(self) -> Option<Arc<ImageFiles>> {
        match self {
            Held::Kept(files) => Some(files),
            Held::Dir { .. } => None,
        }
    }
}

/// [`normalize_on_bases`], also returning the normal form's files on disk when
/// `keeping.files` and saying whether the new layers have a `keeping.watched` path.
async fn normalize_keeping(
    daemon: &Daemon,
    image: &str,
    sde: i64,
    tags: &[String],
    bases: &[Vec<String>],
    keeping: Keep<'_>,
) -> anyhow::Result<(Normalized, Option<Arc<ImageFiles>>)> {
    let watched = keeping.watched;
    if sde < 0 {
        bail!("SOURCE_DATE_EPOCH must not be negative (got {sde})");
    }
    let docker = daemon.long()?;
    let inspect = docker.inspect_image(image).await.with_context(|| {
        format!(
            "normalising {image}: the daemon at {} has no such image",
            daemon.endpoint.host
        )
    })?;
    let source_id = inspect.id.unwrap_or_default();
    let layers = inspect.root_fs.and_then(|r| r.layers).unwrap_or_default();
    let keep = bases
        .iter()
        .map(|b| common_prefix(b, &layers))
        .max()
        .unwrap_or(0);
    let cache = crate::leftovers::cache_dir();
    let containerd = daemon.containerd_store().await;

    // The daemon's push of only the layers above those an earlier image shares (see
    // `partial`), when it can be had; else the whole export.
    let mut whole = String::from("whole image");
    if !containerd && partial_export_allowed(daemon) {
        let dir = crate::leftovers::temp_dir("normalize")
            .context("creating a temporary directory for the image's layers")?;
        let size = inspect.size.unwrap_or(0).max(0) as u64;
        let job = Job {
            daemon,
            docker: &docker,
            image,
            source_id: &source_id,
            raw: &layers,
            keep,
            sde,
            tags,
            watched,
        };
        match partial_plan(&job, dir.path(), size).await {
            Ok(Ok(p)) => {
                let t1 = std::time::Instant::now();
                let held = Held::new(&p.plan, dir, keeping);
                match load_or_tag(daemon, &docker, image, &p.plan, tags, p.held).await {
                    Ok((already_present, daemon_id)) => {
                        let plan = p.plan;
                        partial::remember(
                            &cache,
                            (&layers, &p.raw_sizes, keep),
                            sde,
                            &plan.image_id,
                            &plan.outcomes,
                            p.learned,
                        );
                        let export =
                            format!("pushed {} of {} layers", p.pushed, plan.outcomes.len());
                        let took = [p.export_ms, p.rewrite_ms, ms(t1)];
                        let loaded = (already_present, daemon_id);
                        let (mut n, files) = done(plan, source_id, loaded, export, took, held);
                        n.same_os_as = p.same_os_as;
                        return Ok((n, files));
                    }
                    Err(e) => whole = format!("whole image: the partial load failed: {e:#}"),
                }
            }
            Ok(Err(why)) => whole = format!("whole image: {why}"),
            Err(e) => whole = format!("whole image: the push failed: {e:#}"),
        }
    }

    let dir = crate::leftovers::temp_dir("normalize")
        .context("creating a temporary directory for the image's layers")?;
    let t0 = std::time::Instant::now();
    // 1. Export, spooling every file of the docker-save tar.
    let saved = export(daemon, image, &source_id, dir.path()).await?;
    let export_ms = ms(t0);
    let t0 = std::time::Instant::now();
    // 2. Rewrite layers and config.
    let work_dir = dir.path().to_path_buf();
    let tags_owned = tags.to_vec();
    let (plan, learned, raw_sizes) = tokio::task::spawn_blocking(move || {
        rewrite_image(&saved, &work_dir, sde, &tags_owned, keep)
    })
    .await
    .context("rewrite task")?
    .with_context(|| format!("normalising {image}"))?;
    let rewrite_ms = ms(t0);
    let t0 = std::time::Instant::now();
    let held = Held::new(&plan, dir, keeping);
    // 3. Load (unless the daemon has it), or just move the tags.
    let (already_present, daemon_id) = load_or_tag(daemon, &docker, image, &plan, tags, 0).await?;
    if daemon_id != plan.image_id {
        // The containerd image store: a later load finds the config without an export.
        crate::docker::images::remember_config(&cache, &daemon_id, &plan.image_id);
    }
    if !containerd {
        let raw = (&layers[..], &raw_sizes[..], keep);
        partial::remember(&cache, raw, sde, &plan.image_id, &plan.outcomes, learned);
    }
    let took = [export_ms, rewrite_ms, ms(t0)];
    let loaded = (already_present, daemon_id);
    Ok(done(plan, source_id, loaded, whole, took, held))
}

/// What normalising `source_id` into `plan` did: `loaded` (whether the daemon had it, and
/// what it calls it), how it was exported, the milliseconds of export, rewrite and load; and
/// the normal form's files, when kept.
fn done(
    plan: Plan,
    source_id: String,
    (already_present, daemon_id): (bool, String),
    export: String,
    [export_ms, rewrite_ms, load_ms]: [u64; 3],
    held: Held,
) -> (Normalized, Option<Arc<ImageFiles>>) {
    let normalized = Normalized {
        image_id: plan.image_id.clone(),
        daemon_id,
        source_id,
        layers: plan.outcomes.clone(),
        already_present,
        same_os_as: None,
        export,
        export_ms,
        rewrite_ms,
        load_ms,
    };
    (normalized, held.kept())
}

/// Whether normalising may ask the daemon to push the new layers to slipway (see
/// [`super::partial`]): a daemon on a local socket, which reaches slipway's registry on
/// 127.0.0.1 and pushes to it over plain HTTP, as it does to any loopback registry.
/// `SLIPWAY_EXPORT=whole` turns it off.
fn partial_export_allowed(daemon: &Daemon) -> bool {
    let off = std::env::var("SLIPWAY_EXPORT").is_ok_and(|v| v.trim() == "whole");
    !off && daemon.endpoint.host.starts_with("unix://")
}

/// One image to normalise, as [`partial_plan`] needs it.
struct Job<'a> {
    daemon: &'a Daemon,
    docker: &'a bollard::Docker,
    image: &'a str,
    source_id: &'a str,
    /// Its layers' diff IDs as built.
    raw: &'a [String],
    keep: usize,
    sde: i64,
    tags: &'a [String],
    watched: Option<Watched>,
}

/// The normal form made from only the layers the daemon pushed ([`partial_plan`]).
struct PartialPlan {
    plan: Plan,
    learned: partial::Learned,
    raw_sizes: Vec<u64>,
    /// Layer blobs the daemon pushed.
    pushed: usize,
    /// The record's image, when the new layers leave its OS files as they were.
    same_os_as: Option<String>,
    /// How many bottom layers the daemon was seen to hold (see [`start_from`]).
    held: usize,
    export_ms: u64,
    rewrite_ms: u64,
}

/// The normal form of `job`'s image from an earlier image's record and the layers above those
/// the two share, which the daemon pushes to slipway's own registry (it skips the layers whose
/// blobs that registry says it has). `Ok(Err(why))` when this path cannot be taken: no record,
/// the shared layers' normal forms are not in the daemon, or the record cannot answer for a
/// path of a new layer.
async fn partial_plan(
    job: &Job<'_>,
    dir: &Path,
    size: u64,
) -> anyhow::Result<Result<PartialPlan, String>> {
    let cache = crate::leftovers::cache_dir();
    let host = &job.daemon.endpoint.host;
    if partial::unpushable(&cache, host, job.raw, job.keep) {
        return Ok(Err(
            "the daemon has no registry digest for the base's layers".into(),
        ));
    }
    let (prepared, held) = match start_from(job, &cache).await {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    let from = prepared.from;

    // The push: a blob the daemon pushed before for a new layer is asked for again; any other
    // blob it asks about is said to be here, so it sends nothing else. A new layer the daemon
    // still skipped (it knew the layer under a digest slipway had not seen: pushed elsewhere,
    // or by a run with another cache) is named by that digest in the manifest it pushed: once
    // learnt, a second push asks for it.
    let t0 = std::time::Instant::now();
    let need: HashSet<String> = job.raw[from..].iter().cloned().collect();
    let mut received = partial::received(&cache);
    // The base's layers are what must not travel: an imported base has no registry digest
    // in the daemon, which would compress and push all of it (seconds per 100 MB).
    let base_size: u64 = prepared.record.raw_sizes[..job.keep].iter().sum();
    let budget = 2 * size.saturating_sub(base_size) + (16 << 20);
    let mut attempt = 0;
    let (pushed, by_digest, files, uploads) = loop {
        attempt += 1;
        let (known, need, config) = (received.clone(), need.clone(), job.source_id.to_string());
        let presence: crate::docker::receive::Presence =
            std::sync::Arc::new(move |digest: &str| match known.get(digest) {
                Some(d) if need.contains(d) => None,
                _ if digest == config => None,
                _ => Some(1),
            });
        let into = dir.join(format!("pushed-{attempt}"));
        let receiver = crate::docker::receive::Receiver::start(&into, presence, budget).await?;
        let pushed = crate::docker::receive::push_to(job.daemon, job.source_id, &receiver).await;
        let blobs = receiver.blobs();
        let over = receiver.over_budget();
        receiver.stop().await;
        if over {
            partial::remember_unpushable(&cache, host, job.raw, job.keep);
            return Ok(Err(
                "the daemon pushed more than the new layers: the base's have no registry digest"
                    .into(),
            ));
        }
        let pushed = pushed?;
        let by_digest: HashMap<String, PathBuf> = blobs
            .iter()
            .map(|b| (b.digest.clone(), b.path.clone()))
            .collect();
        if pushed.config != job.source_id {
            bail!(
                "the daemon pushed the config {} for the image {}",
                pushed.config,
                job.source_id
            );
        }
        if pushed.layers.len() != job.raw.len() {
            bail!(
                "the daemon pushed a manifest of {} layers for an image of {}",
                pushed.layers.len(),
                job.raw.len()
            );
        }
        let skipped: Vec<(String, String)> = pushed.layers[from..]
            .iter()
            .zip(&job.raw[from..])
            .filter(|(l, _)| !by_digest.contains_key(&l.digest))
            .map(|(l, d)| (l.digest.clone(), d.clone()))
            .collect();
        if skipped.is_empty() {
            let files = pushed.layers[from..]
                .iter()
                .map(|l| by_digest[&l.digest].clone())
                .collect::<Vec<_>>();
            let uploads = blobs.iter().filter(|b| b.digest != job.source_id).count();
            break (pushed, by_digest, files, uploads);
        }
        if attempt == 2 {
            return Ok(Err(format!(
                "the daemon did not push the new layer {}: a registry had its blob",
                skipped[0].1
            )));
        }
        partial::remember_received(&cache, &skipped);
        received.extend(skipped);
    };
    let config_file = by_digest
        .get(&pushed.config)
        .context("the daemon pushed no config")?;
    let config = std::fs::read(config_file).context("reading the pushed config")?;
    let blob_ids: Vec<(String, String)> = pushed.layers[from..]
        .iter()
        .map(|l| l.digest.clone())
        .zip(job.raw[from..].iter().cloned())
        .collect();
    let export_ms = ms(t0);

    let t0 = std::time::Instant::now();
    let prepared_image = prepared.record.image_id.clone();
    let (raw, sde, tags, work) = (
        job.raw.to_vec(),
        job.sde,
        job.tags.to_vec(),
        dir.to_path_buf(),
    );
    let watched = job.watched;
    let rewritten = tokio::task::spawn_blocking(move || {
        let new = Fresh {
            files,
            config,
            watched,
        };
        rewrite_partial(&prepared, &raw, new, &work, sde, &tags)
    })
    .await
    .context("rewrite task")?
    .with_context(|| format!("normalising {}", job.image))?;
    let Ok(Rewritten {
        plan,
        learned,
        raw_sizes,
        os_touched,
    }) = rewritten
    else {
        return Ok(Err(rewritten.err().unwrap_or_default()));
    };
    // Only what was verified against the config's diff IDs is remembered.
    partial::remember_received(&cache, &blob_ids);
    Ok(Ok(PartialPlan {
        plan,
        learned,
        raw_sizes,
        pushed: uploads,
        same_os_as: prepared_image.filter(|_| !os_touched),
        held,
        export_ms,
        rewrite_ms: ms(t0),
    }))
}

/// How many records normalising looks at before it exports the whole image.
const RECORDS_TRIED: usize = 4;

/// The record normalising `job` starts from: the best of [`partial::candidates`] whose shared
/// layers' normal forms the daemon still holds (the load leaves them out): the record's own
/// image is there, or another image slipway remembers loading shares them. A newer record's
/// image may be gone (removed, pruned) while an older one's is there. Returns it with how
/// many bottom layers the daemon holds as one chain; `Err(why)` when none.
async fn start_from(job: &Job<'_>, cache: &Path) -> Result<(partial::Prepared, usize), String> {
    let host = &job.daemon.endpoint.host;
    let docker = job.docker;
    let exists = |id: String| async move { docker.inspect_image(&id).await.is_ok() };
    let mut why = "no earlier image shares its bottom layers".to_string();
    let candidates = partial::candidates(cache, job.raw, job.keep, job.sde);
    for c in candidates.iter().take(RECORDS_TRIED) {
        let Some(prepared) = partial::prepare_from(cache, job.raw, job.keep, job.sde, c) else {
            continue;
        };
        let from = prepared.from;
        if job.raw[from..].iter().any(|d| job.raw[..from].contains(d)) {
            why = "a new layer repeats a shared one".into();
            continue;
        }
        let shared = &prepared.record.outcomes[..from];
        let afters: Vec<String> = shared.iter().map(|o| o.after.clone()).collect();
        // The record's own image holds its bottom layers; else another image slipway loaded.
        let chain = match &prepared.record.image_id {
            Some(id) if exists(id.clone()).await => from,
            _ => stored::held_chain(cache, host, &afters, exists).await,
        };
        let held = held_layers(shared, chain);
        if afters.iter().all(|a| held.contains(a)) {
            return Ok((prepared, chain));
        }
        why = "the daemon no longer holds the shared layers' normal forms".into();
    }
    Err(why)
}

/// What the daemon pushed for [`rewrite_partial`]: the new layers' files (bottom first) and
/// the config, and the paths to look out for.
struct Fresh {
    files: Vec<PathBuf>,
    config: Vec<u8>,
    watched: Option<Watched>,
}

/// What [`rewrite_partial`] made.
struct Rewritten {
    plan: Plan,
    learned: partial::Learned,
    raw_sizes: Vec<u64>,
    /// Whether a new layer has a watched path (or there is nothing to watch for).
    os_touched: bool,
}

/// The normal form of the image whose layers as built are `raw` and whose config is `config`,
/// from the record `p` and the new layers' tars `files` (bottom first, from `p.from`).
/// `Ok(Err(why))` when the record cannot answer for a path of the new layers.
fn rewrite_partial(
    p: &partial::Prepared,
    raw: &[String],
    Fresh {
        files,
        config,
        watched,
    }: Fresh,
    dir: &Path,
    sde: i64,
    tags: &[String],
) -> anyhow::Result<Result<Rewritten, String>> {
    let from = p.from;
    // 1. The new layers, plain, checked against the config, scanned and listed.
    let mut scans: Vec<(PathBuf, layer::Scan)> = Vec::new();
    let mut listings: Vec<Vec<layer::Listed>> = Vec::new();
    for (j, file) in files.iter().enumerate() {
        let i = from + j;
        let (plain, scan) = scan_checked(file, dir, i, &raw[i], sde, "pushed")?;
        listings.push(layer::list(BufReader::with_capacity(
            1 << 20,
            File::open(&plain)?,
        ))?);
        scans.push((plain, scan));
    }
    let keys = listings
        .iter()
        .flatten()
        .map(|l| layer::key_of(&l.head.path));
    if let Err(path) = p.answers_for(keys) {
        return Ok(Err(format!(
            "the base was not read at /{}",
            String::from_utf8_lossy(&path)
        )));
    }
    let os_touched = watched.is_none_or(|w| {
        listings
            .iter()
            .flatten()
            .any(|l| w(layer::key_of(&l.head.path)))
    });
    if !p.same_etc(&listings) {
        return Ok(Err(
            "the new layers touch /etc where the old ones did not".into()
        ));
    }
    // 2. What each new layer repeats unchanged from below, as `unchanged_entries` finds it.
    let mut lower = Lower::default();
    lower.apply(p.base().0.to_vec());
    for listed in &p.below {
        lower.apply(listed.clone());
    }
    let n = raw.len();
    let mut above: Vec<HashSet<Vec<u8>>> = vec![HashSet::new(); n - from + 1];
    for j in (0..n - from).rev() {
        let mut set = above[j + 1].clone();
        set.extend(scans[j].1.entries.iter().map(|e| e.key.to_vec()));
        above[j] = set;
    }
    let mut drops: HashMap<String, HashSet<Vec<u8>>> = HashMap::new();
    let mut learned = p.learned();
    for (j, listed) in listings.into_iter().enumerate() {
        learned.layer(&raw[from + j], &listed);
        let drop = lower.drops(&scans[j].1, listed, &above[j + 1], &above[j], sde);
        drops.insert(raw[from + j].clone(), drop);
    }
    // 3. The rewrite of the new layers; the shared ones are as the record says.
    let mut raw_sizes = p.record.raw_sizes[..from].to_vec();
    let mut layers: Vec<(String, PathBuf)> = p.record.outcomes[..from]
        .iter()
        .enumerate()
        .map(|(i, o)| (o.after.clone(), dir.join(format!("held-{i}.tar"))))
        .collect();
    let mut outcomes = p.record.outcomes[..from].to_vec();
    let mut done: HashMap<String, LayerResult> = HashMap::new();
    for (j, (file, scan)) in scans.into_iter().enumerate() {
        let i = from + j;
        raw_sizes.push(scan.len);
        if !done.contains_key(&raw[i]) {
            let drop = drops.get(&raw[i]).cloned().unwrap_or_default();
            let result = rewrite_layer(&file, scan, &drop, &dir.join(format!("out-{i}.tar")), sde)
                .with_context(|| format!("layer {i} ({})", raw[i]))?;
            done.insert(raw[i].clone(), result);
        }
        let r = &done[&raw[i]];
        layers.push((r.after.clone(), r.file.clone()));
        outcomes.push(LayerOutcome {
            before: raw[i].clone(),
            after: r.after.clone(),
            size: r.size,
            rewritten: r.rewritten,
        });
    }
    let mut config: Value = serde_json::from_slice(&config).context("the pushed config")?;
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    normalize_config(&mut config, &diff_ids, sde)?;
    let bytes = canonical_json(&config);
    let plan = Plan {
        image_id: format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
        config: bytes,
        stored: vec![None; layers.len()],
        layers,
        outcomes,
        tags: tags.to_vec(),
    };
    Ok(Ok(Rewritten {
        plan,
        learned,
        raw_sizes,
        os_touched,
    }))
}

/// Exports `source_id` from the daemon, spooling every file of the docker-save tar into `dir`.
async fn export(
    daemon: &Daemon,
    image: &str,
    source_id: &str,
    dir: &Path,
) -> anyhow::Result<Saved> {
    // The long bound: a daemon may write the whole export to its own disk before it sends the
    // first byte (Docker 20.10's `docker save` does), minutes for a big image on a busy host.
    let export = daemon
        .long()?
        .export_image(source_id)
        .map_err(io::Error::other);
    let reader = tokio_util::io::StreamReader::new(export);
    let spool_dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        save::spool(bridge, &spool_dir)
    })
    .await
    .context("export task")?
    .with_context(|| format!("exporting {image} from {}", daemon.endpoint.host))
}

/// Loads the normal form `plan` under its tags, or only moves the tags when the daemon has it
/// already (which it says: `true`); then checks that every tag names it. Returns that, and
/// what the daemon calls the image. `chain`: how many bottom layers the daemon was seen to
/// hold already (the image a partial normalisation started from); the classic store's load
/// leaves those out.
async fn load_or_tag(
    daemon: &Daemon,
    docker: &bollard::Docker,
    image: &str,
    plan: &Plan,
    tags: &[String],
    chain: usize,
) -> anyhow::Result<(bool, String)> {
    let already_present = docker.inspect_image(&plan.image_id).await.is_ok();
    if already_present {
        for tag in tags {
            let (repo, t) = split_tag(tag);
            docker
                .tag_image(
                    &plan.image_id,
                    Some(bollard::query_parameters::TagImageOptions {
                        repo: Some(repo.to_string()),
                        tag: Some(t.to_string()),
                    }),
                )
                .await
                .with_context(|| format!("tagging {} as {tag}", plan.image_id))?;
        }
    } else {
        // The daemon finishes a load it has whole even when no one listens any more: an
        // interrupted build waits for it (`interrupt::settle`) before untagging.
        let containerd = daemon.containerd_store().await;
        let cache = crate::leftovers::cache_dir();
        let exists = |id: String| async move { docker.inspect_image(&id).await.is_ok() };
        let host = &daemon.endpoint.host;
        let held = match containerd {
            true => stored::held(&cache, host, &plan.rewritten_blobs(), exists).await,
            false => {
                let afters: Vec<String> = plan.layers.iter().map(|(d, _)| d.clone()).collect();
                let remembered = stored::held_chain(&cache, host, &afters, exists).await;
                held_layers(&plan.outcomes, remembered.max(chain))
            }
        };
        // What the daemon surely holds: the image normalising started from is still there.
        let sure = match containerd {
            true => HashSet::new(),
            false => held_layers(&plan.outcomes, chain),
        };
        let (d, p) = (docker.clone(), plan.clone());
        crate::interrupt::unabortable(async move {
            match load(&d, &p, containerd, &held).await {
                // A layer slipway took the daemon to hold may be gone; and the containerd
                // image store may collect a snapshot it had counted on while it unpacks
                // (another image that held it was untagged or removed meanwhile): the blobs
                // are in by then, and a second load with every layer unpacks what is missing.
                Err(e) if held != sure || (containerd && lost_snapshot(&e)) => {
                    load(&d, &p, containerd, &sure).await
                }
                other => other,
            }
        })
        .await
        .with_context(|| {
            format!(
                "loading the normalised {image} into {}",
                daemon.endpoint.host
            )
        })?;
    }
    // The containerd image store names images by manifest digest: look it up by tag.
    let by = tags.first().map_or(plan.image_id.as_str(), String::as_str);
    let loaded = docker.inspect_image(by).await.map_err(|e| {
        anyhow::Error::new(e).context(Fail::job(format!(
            "the daemon at {} did not keep the normalised image {}",
            daemon.endpoint.host, plan.image_id
        )))
    })?;
    for tag in tags {
        let id = docker.inspect_image(tag).await.ok().and_then(|i| i.id);
        if id.as_deref() != loaded.id.as_deref() {
            bail!(
                "after loading the normalised image, `{tag}` points at {} instead of {}",
                id.unwrap_or_else(|| "nothing".into()),
                plan.image_id
            );
        }
    }
    let daemon_id = loaded.id.unwrap_or_else(|| plan.image_id.clone());
    // The image keeps these layers while it exists (see `stored`).
    let kept = match daemon_id != plan.image_id {
        true => plan.plain_blobs(),
        false => plan.layers.iter().map(|(d, _)| d.clone()).collect(),
    };
    let cache = crate::leftovers::cache_dir();
    stored::remember(&cache, &daemon.endpoint.host, &daemon_id, kept);
    Ok((already_present, daemon_id))
}

/// An image as plain files, for a load from a daemon that names images by manifest digest and
/// exports compressed layers (the containerd image store): its config (whose digest is what a
/// node's containerd calls the image) and its layers decompressed. Uses as much disk as the
/// image unpacked, removed when the value is dropped.
pub async fn export_plain(daemon: &Daemon, image: &str) -> anyhow::Result<ImageFiles> {
    let dir = crate::leftovers::temp_dir("export")
        .context("creating a temporary directory for the image's layers")?;
    // The long bound on a response, as for [`export`].
    let export = daemon.long()?.export_image(image).map_err(io::Error::other);
    let reader = tokio_util::io::StreamReader::new(export);
    let work = dir.path().to_path_buf();
    let (config, layers) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let saved = save::spool(bridge, &work)?;
        let (config, paths) = saved.image()?;
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != paths.len() {
            bail!(
                "the image config names {} layers, its manifest {}",
                diff_ids.len(),
                paths.len()
            );
        }
        let manifest = saved.read_json("manifest.json")?;
        let config_path = manifest
            .pointer("/0/Config")
            .and_then(Value::as_str)
            .context("manifest.json has no Config")?;
        let (_, config_file) = saved.resolve(config_path)?;
        let config = std::fs::read(config_file)?;
        let mut layers = Vec::new();
        let mut done: HashMap<String, PathBuf> = HashMap::new();
        for (i, ((key, spool), diff_id)) in paths.iter().zip(diff_ids).enumerate() {
            let file = match done.get(key) {
                Some(f) => f.clone(),
                None => {
                    let plain = work.join(format!("plain-{i}.tar"));
                    let f = if gunzip(spool, &plain)? {
                        plain
                    } else {
                        spool.clone()
                    };
                    done.insert(key.clone(), f.clone());
                    f
                }
            };
            layers.push((diff_id, file));
        }
        Ok((config, layers))
    })
    .await
    .context("export task")?
    .with_context(|| format!("exporting {image} from {}", daemon.endpoint.host))?;
    Ok(ImageFiles::new(
        format!("sha256:{}", hex::encode(Sha256::digest(&config))),
        config,
        layers,
        dir,
    ))
}

/// How many leading entries `a` and `b` share.
fn common_prefix(a: &[String], b: &[String]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn ms(t0: std::time::Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What normalising a freshly built image gave: the image the build tags and records, as the
/// load needs it.
#[derive(Debug)]
pub struct NormalImage {
    /// The normal form's ID: its config digest.
    pub image_id: String,
    /// What the daemon calls it (the manifest digest on the containerd image store).
    pub daemon_id: String,
    /// Its layers' diff IDs, bottom first.
    pub diff_ids: Vec<String>,
    /// Its files on disk, when the run keeps them for a load.
    pub files: Option<Arc<ImageFiles>>,
    /// An earlier normal image with the same OS files ([`Normalized::same_os_as`]).
    pub same_os_as: Option<String>,
}

/// The normal forms one build run made, by component: filled by the builds (which run in
/// parallel) and handed on whole by the run that owns it. Nothing outlives that run.
#[derive(Debug, Default)]
pub struct NormalForms {
    /// Whether the normal forms' files are kept on disk (for a load in the same run).
    keep_files: bool,
    /// Paths the caller wants to know the new layers leave alone ([`Watched`]).
    watched: Option<Watched>,
    /// Where each kept normal form goes as soon as its files are written (before the daemon
    /// has loaded it), and then word that its build is over.
    ready: Option<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    made: std::sync::Mutex<BTreeMap<String, NormalImage>>,
}

impl NormalForms {
    pub fn new(keep_files: bool) -> Self {
        NormalForms {
            keep_files,
            watched: None,
            ready: None,
            made: Default::default(),
        }
    }

    /// The same, handing each kept normal form to `ready` as soon as its files are written.
    pub fn handing_to(
        mut self,
        ready: Option<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    ) -> Self {
        self.ready = ready;
        self
    }

    /// Says that the build of `component` is over: its image is on the daemon under its tags.
    pub fn built(&self, component: &str) {
        self.hand_on(Handoff::Built {
            component: component.to_string(),
        });
    }

    fn hand_on(&self, h: Handoff) {
        if let Some(tx) = &self.ready {
            // A receiver gone (its load ended early) takes nothing more: nothing is lost.
            let _ = tx.send(h);
        }
    }

    /// The same, saying of each image whether its new layers have a `watched` path.
    pub fn watching(mut self, watched: Watched) -> Self {
        self.watched = Some(watched);
        self
    }

    /// Every normal form made so far, by component (taken out: the next call gives none).
    pub fn take(&self) -> BTreeMap<String, NormalImage> {
        std::mem::take(&mut *self.made.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a build run tells a load that runs beside it ([`NormalForms::handing_to`]).
#[derive(Debug)]
pub enum Handoff {
    /// A component's normal form is written; the daemon does not hold it yet.
    Written { component: String, ready: Ready },
    /// A component's build is over: its image is on the daemon.
    Built { component: String },
}

/// The build engine's step after a successful build (`src/builder/image.rs` calls it): normalises
/// the image just built (`raw`, named by the build's temporary tag `temp`, which moves to the
/// normal form), adds it to `made` under the component `task`, and removes the raw image when
/// nothing names it any more. Returns the normal image ID, the one to tag and record.
#[allow(clippy::too_many_arguments)]
pub async fn after_build(
    daemon: &Daemon,
    reporter: &dyn crate::report::Reporter,
    task: &str,
    raw: &str,
    sde: i64,
    temp: &str,
    base_layers: &[Vec<String>],
    made: &NormalForms,
) -> anyhow::Result<String> {
    reporter.report(crate::report::Event::Step {
        task: task.to_string(),
        step: format!("normalise the image (SOURCE_DATE_EPOCH={sde})"),
        cached: false,
    });
    let tags: Vec<String> = [temp]
        .iter()
        .filter(|t| !t.is_empty())
        .map(|t| t.to_string())
        .collect();
    let hand_on = |ready: Ready| {
        made.hand_on(Handoff::Written {
            component: task.to_string(),
            ready,
        })
    };
    let keep = Keep {
        files: made.keep_files,
        watched: made.watched,
        ready: Some(&hand_on),
    };
    let (n, files) = normalize_keeping(daemon, raw, sde, &tags, base_layers, keep)
        .await
        .context(Fail::job(format!(
            "component `{task}`: normalising its image {raw}"
        )))?;
    reporter.report(crate::report::Event::Log {
        task: task.to_string(),
        line: normalised_line(raw, &n),
    });
    if n.daemon_id != n.source_id {
        remove_if_unnamed(daemon, &n.source_id).await;
    }
    made.made.lock().unwrap_or_else(|e| e.into_inner()).insert(
        task.to_string(),
        NormalImage {
            image_id: n.image_id.clone(),
            daemon_id: n.daemon_id.clone(),
            diff_ids: n.layers.iter().map(|l| l.after.clone()).collect(),
            files,
            same_os_as: n.same_os_as.clone(),
        },
    );
    Ok(n.daemon_id)
}

/// `normalised 0123 -> 4567 (1 of 5 layers rewritten; export 10 ms, rewrite 20 ms, load 30 ms)`.
fn normalised_line(raw: &str, n: &Normalized) -> String {
    let rewritten = n.layers.iter().filter(|l| l.rewritten).count();
    format!(
        "normalised {} -> {} ({rewritten} of {} layers rewritten{}; {}, export {} ms, rewrite {} ms, {} {} ms)",
        crate::docker::images::short_id(raw),
        crate::docker::images::short_id(&n.image_id),
        n.layers.len(),
        if n.already_present {
            ", already present"
        } else {
            ""
        },
        n.export,
        n.export_ms,
        n.rewrite_ms,
        if n.already_present { "tag" } else { "load" },
        n.load_ms,
    )
}

/// Removes the image `id` when no tag names it: only this image, never the legacy builder's
/// intermediate images (its cache).
async fn remove_if_unnamed(daemon: &Daemon, id: &str) {
    let untagged = daemon
        .docker
        .inspect_image(id)
        .await
        .map(|i| i.repo_tags.unwrap_or_default().is_empty())
        .unwrap_or(false);
    if untagged {
        let _ = crate::docker::images::untag(&daemon.docker, id).await;
    }
}

/// `repo:tag` → (`repo`, `tag`); a reference without a tag gets `latest`.
pub fn split_tag(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// The normal form, ready to load.
#[derive(Debug, Clone)]
struct Plan {
    image_id: String,
    config: Vec<u8>,
    /// `(diff ID, file)` per layer, in order (a diff ID may repeat).
    layers: Vec<(String, PathBuf)>,
    /// Per layer, the blob the daemon exported when normalising left the layer as it was (the
    /// daemon holds that blob); `None` for a rewritten layer. Known on the containerd image
    /// store only, whose export names each blob by its digest.
    stored: Vec<Option<Descriptor>>,
    outcomes: Vec<LayerOutcome>,
    tags: Vec<String>,
}

impl Plan {
    /// Its files for a load in the same run, with every layer's size (a layer an earlier image
    /// shares has no file: the daemon holds it, see [`partial_plan`]).
    fn files(self, dir: tempfile::TempDir) -> ImageFiles {
        let sizes = self
            .outcomes
            .iter()
            .map(|o| (o.after.clone(), o.size))
            .collect();
        ImageFiles::new(self.image_id, self.config, self.layers, dir).with_sizes(sizes)
    }

    /// The rewritten layers' digests: blobs a load must carry unless the daemon holds them.
    fn rewritten_blobs(&self) -> HashSet<String> {
        self.layers
            .iter()
            .zip(&self.stored)
            .filter(|(_, s)| s.is_none())
            .map(|((d, _), _)| d.clone())
            .collect()
    }

    /// The uncompressed blobs the loaded manifest names (every layer but a compressed base).
    fn plain_blobs(&self) -> Vec<String> {
        self.layers
            .iter()
            .zip(&self.stored)
            .filter(|(_, s)| s.as_ref().is_none_or(|d| d.media_type == oci::MEDIA_LAYER))
            .map(|((d, _), _)| d.clone())
            .collect()
    }
}

/// Rewrites the layers of `saved` after the first `keep` (those it shares with its base, whose
/// diff IDs the daemon vouched for) and its config.
fn rewrite_image(
    saved: &Saved,
    dir: &Path,
    sde: i64,
    tags: &[String],
    keep: usize,
) -> anyhow::Result<(Plan, partial::Learned, Vec<u64>)> {
    let (mut config, layer_paths) = saved.image()?;
    let old_ids = diff_ids(&config)?;
    if old_ids.len() != layer_paths.len() {
        bail!(
            "the image config names {} layers, its manifest {}",
            old_ids.len(),
            layer_paths.len()
        );
    }

    // 1. The layers the build made, plain and scanned.
    let mut scanned: HashMap<String, (PathBuf, layer::Scan)> = HashMap::new();
    for (i, (key, spool)) in layer_paths.iter().enumerate() {
        if i < keep || scanned.contains_key(key) {
            continue;
        }
        let (file, scan) = scan_checked(spool, dir, i, &old_ids[i], sde, "exported")?;
        scanned.insert(key.clone(), (file, scan));
    }
    // 2. What each of them repeats unchanged from below (see `Lower`).
    let (drops, learned) = unchanged_entries(&layer_paths, keep, sde, &scanned)?;
    let raw_sizes: Vec<u64> = layer_paths
        .iter()
        .map(|(key, spool)| match scanned.get(key) {
            Some((_, scan)) => scan.len,
            None => std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0),
        })
        .collect();

    // 3. The rewrite.
    let mut done: HashMap<String, (String, PathBuf, u64, bool)> = HashMap::new();
    let mut layers = Vec::new();
    let mut stored = Vec::new();
    let mut outcomes = Vec::new();
    for (i, (key, spool)) in layer_paths.iter().enumerate() {
        if i < keep && !done.contains_key(key) {
            // A base layer: as it is, unread.
            let size = std::fs::metadata(spool).map(|m| m.len()).unwrap_or(0);
            done.insert(
                key.clone(),
                (old_ids[i].clone(), spool.clone(), size, false),
            );
        } else if !done.contains_key(key) {
            let (file, scan) = scanned.remove(key).context("a layer was not scanned")?;
            let drop = drops.get(key).cloned().unwrap_or_default();
            let result = rewrite_layer(&file, scan, &drop, &dir.join(format!("out-{i}.tar")), sde)
                .with_context(|| format!("layer {i} ({})", old_ids[i]))?;
            done.insert(
                key.clone(),
                (result.after, result.file, result.size, result.rewritten),
            );
        }
        let (after, file, size, rewritten) = &done[key];
        layers.push((after.clone(), file.clone()));
        // A base layer is named as the daemon stores it (as the base's registry serves it); a
        // layer the build made is named by its diff ID (uncompressed) wherever the daemon
        // stored it compressed, so that the manifest does not depend on the daemon's gzip.
        stored.push(match rewritten {
            true => None,
            false if i < keep => stored_blob(key, spool)?,
            // (A gzip blob's spool file is gone by now: `scan_layer` decompressed it.)
            false => exported_digest(key)
                .filter(|d| d == after)
                .map(|d| Descriptor::new(oci::MEDIA_LAYER, &d, *size)),
        });
        outcomes.push(LayerOutcome {
            before: old_ids[i].clone(),
            after: after.clone(),
            size: *size,
            rewritten: *rewritten,
        });
    }
    let diff_ids: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    normalize_config(&mut config, &diff_ids, sde)?;
    let bytes = canonical_json(&config);
    let image_id = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let plan = Plan {
        image_id,
        config: bytes,
        layers,
        stored,
        outcomes,
        tags: tags.to_vec(),
    };
    Ok((plan, learned, raw_sizes))
}

/// The blob the daemon exported as `key` (`blobs/sha256/<hex>` in an OCI-layout export; `None`
/// for the classic store's `<v1 ID>/layer.tar`), described as the daemon stores it.
fn stored_blob(key: &str, spool: &Path) -> anyhow::Result<Option<Descriptor>> {
    let Some(digest) = exported_digest(key) else {
        return Ok(None);
    };
    let read = || format!("reading the exported layer {key}");
    let size = std::fs::metadata(spool).with_context(read)?.len();
    let media_type = match is_gzip(spool).with_context(read)? {
        true => oci::MEDIA_LAYER_GZIP,
        false => oci::MEDIA_LAYER,
    };
    Ok(Some(Descriptor::new(media_type, &digest, size)))
}

/// The digest of the blob an OCI-layout export names `key` (`blobs/sha256/<hex>`).
fn exported_digest(key: &str) -> Option<String> {
    key.strip_prefix("blobs/sha256/")
        .map(|hex| format!("sha256:{hex}"))
}

struct LayerResult {
    after: String,
    file: PathBuf,
    size: u64,
    rewritten: bool,
}

/// Layer `i` from the daemon (`how` it came: exported, pushed) scanned by [`scan_layer`], and
/// checked to be the layer the image config names (`diff_id`).
fn scan_checked(
    file: &Path,
    dir: &Path,
    i: usize,
    diff_id: &str,
    sde: i64,
    how: &str,
) -> anyhow::Result<(PathBuf, layer::Scan)> {
    let (plain, scan) = scan_layer(file, &dir.join(format!("out-{i}.plain.tar")), sde)
        .with_context(|| format!("layer {i} ({diff_id})"))?;
    if scan.digest != diff_id {
        bail!(
            "layer {i} as {how} has digest {}, but the config says {diff_id}",
            scan.digest
        );
    }
    Ok((plain, scan))
}

/// A build-made layer as a plain tar (decompressed to `plain` when it came gzipped), scanned.
fn scan_layer(spool: &Path, plain: &Path, sde: i64) -> anyhow::Result<(PathBuf, layer::Scan)> {
    let file = match gunzip(spool, plain)? {
        true => plain.to_path_buf(),
        false => spool.to_path_buf(),
    };
    let input = BufReader::with_capacity(1 << 20, File::open(&file)?);
    let scan = layer::scan(input, io::sink(), sde)?;
    Ok((file, scan))
}

/// Writes the normal form of a scanned layer, leaving out the entries in `drop`.
fn rewrite_layer(
    file: &Path,
    mut scan: layer::Scan,
    drop: &HashSet<Vec<u8>>,
    out: &Path,
    sde: i64,
) -> anyhow::Result<LayerResult> {
    let before = scan.digest.clone();
    scan.entries.retain(|e| !drop.contains(&*e.key));
    if drop.is_empty() && layer::is_normal(&scan) {
        return Ok(LayerResult {
            after: before,
            file: file.to_path_buf(),
            size: scan.len,
            rewritten: false,
        });
    }
    let mut src = BufReader::with_capacity(256 << 10, File::open(file)?);
    let dst = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let (after, size) = layer::rewrite(&scan, &mut src, dst, sde)?;
    // The input is no longer needed: free its space now.
    let _ = std::fs::remove_file(file);
    Ok(LayerResult {
        after,
        file: out.to_path_buf(),
        size,
        rewritten: true,
    })
}

/// The filesystem below a layer, for the paths the build's layers touch: path -> the entry
/// that shows there. Builders differ in what they put in a layer besides real changes
/// (Docker's classic worker records every file a step opened for writing, copied up by
/// overlayfs though unchanged; the containerd worker compares and leaves those out; BuildKit
/// 0.8 writes the directories it mounts into). An entry equal in every header field and in
/// content to the one below changes nothing, so normalising leaves it out: the same build
/// gives the same layer on each of them.
#[derive(Default)]
struct Lower {
    entries: HashMap<Vec<u8>, layer::Listed>,
}

impl Lower {
    fn apply(&mut self, listed: Vec<layer::Listed>) {
        for l in listed {
            let key = layer::key_of(&l.head.path).to_vec();
            let (dir, base) = match key.iter().rposition(|&c| c == b'/') {
                Some(i) => (&key[..i], &key[i + 1..]),
                None => (&key[..0], &key[..]),
            };
            let under = |d: &[u8]| {
                let mut p = d.to_vec();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p
            };
            if base == b".wh..wh..opq" {
                let prefix = under(dir);
                self.entries.retain(|k, _| !k.starts_with(&prefix));
            } else if let Some(name) = base.strip_prefix(b".wh.") {
                let mut target = under(dir);
                target.extend_from_slice(name);
                let prefix = under(&target);
                self.entries
                    .retain(|k, _| *k != target && !k.starts_with(&prefix));
            } else {
                self.entries.insert(key, l);
            }
        }
    }

    /// Whether `l` equals the entry below, mtimes compared as normalising leaves them
    /// (clamped to `sde`: raw build times would make the answer depend on the clock).
    fn same(&self, l: &layer::Listed, sde: i64) -> bool {
        let Some(below) = self.entries.get(layer::key_of(&l.head.path)) else {
            return false;
        };
        let (a, b) = (&l.head, &below.head);
        let kind = |t: u8| if t == 0 { b'0' } else { t };
        kind(a.typeflag) == kind(b.typeflag)
            && a.typeflag != b'1'
            && a.size == b.size
            && a.mode & 0o7777 == b.mode & 0o7777
            && (a.uid, a.gid) == (b.uid, b.gid)
            && a.mtime.min(sde) == b.mtime.min(sde)
            && a.link == b.link
            && a.pax == b.pax
            && l.digest == below.digest
    }
}

/// `/etc`, where a container runtime mounts `hosts`, `resolv.conf` and `hostname`.
const ETC: &[u8] = b"etc";

impl Lower {
    /// Whether `l` is the `/etc` a RUN step's runtime made for its mounts on a base that has
    /// none: an empty root-owned directory, nothing below it, nothing under it in this layer or
    /// above (`touched`: the paths of this layer and those above). BuildKit 0.8 leaves it in the
    /// layer; 0.11 and later remove the mount stubs they made, parents included.
    fn runtime_stub(&self, l: &layer::Listed, touched: &HashSet<Vec<u8>>) -> bool {
        let h = &l.head;
        layer::key_of(&h.path) == ETC
            && h.typeflag == b'5'
            && h.mode & 0o7777 == 0o755
            && (h.uid, h.gid) == (0, 0)
            && !self.entries.contains_key(ETC)
            && !touched.iter().any(|k| k.starts_with(b"etc/"))
    }
}

fn is_whiteout(key: &[u8]) -> bool {
    let base = key.rsplit(|&c| c == b'/').next().unwrap_or(key);
    base.starts_with(b".wh.")
}

/// Whether a layer file starts with gzip's magic bytes.
fn is_gzip(path: &Path) -> anyhow::Result<bool> {
    let mut magic = [0u8; 2];
    let n = File::open(path)?.read(&mut magic)?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// A layer file as a tar stream, decompressed when it is gzip.
pub fn plain_reader(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let gzip = is_gzip(path)?;
    let file = BufReader::with_capacity(1 << 20, File::open(path)?);
    Ok(match gzip {
        true => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        false => Box::new(file),
    })
}

/// Per layer (by its key in the export or its diff ID), the entries to leave out.
type Drops = HashMap<String, HashSet<Vec<u8>>>;

/// For each build-made layer (by its key in the export), the entries it repeats unchanged
/// from the layers below it ([`Lower`]); and what a later run needs to normalise this image's
/// successor from only its new layers ([`partial::Learned`]).
fn unchanged_entries(
    layer_paths: &[(String, PathBuf)],
    keep: usize,
    sde: i64,
    scanned: &HashMap<String, (PathBuf, layer::Scan)>,
) -> anyhow::Result<(Drops, partial::Learned)> {
    let keys_of = |key: &String| -> HashSet<Vec<u8>> {
        scanned
            .get(key)
            .map(|(_, s)| s.entries.iter().map(|e| e.key.to_vec()).collect())
            .unwrap_or_default()
    };
    // Paths touched by the build's layers at or above each position.
    let mut above: Vec<HashSet<Vec<u8>>> = vec![HashSet::new(); layer_paths.len() + 1];
    for i in (0..layer_paths.len()).rev() {
        let mut set = above[i + 1].clone();
        if i >= keep {
            set.extend(keys_of(&layer_paths[i].0));
        }
        above[i] = set;
    }
    // What is read of the base: the paths the build touches, `/etc`, and their parents (so
    // that a later build's new path under a directory the base lacks is known to be new).
    let queried = partial::with_parents(above[keep].iter().cloned().chain([ETC.to_vec()]));
    let mut learned = partial::Learned::default();
    let mut lower = Lower::default();
    let mut drops = HashMap::new();
    for (i, (key, spool)) in layer_paths.iter().enumerate() {
        if i < keep {
            let wanted = |k: &[u8]| queried.contains(k) || is_whiteout(k);
            lower.apply(layer::list_where(plain_reader(spool)?, wanted)?);
            continue;
        }
        if i == keep {
            learned.base(lower.entries.values(), &queried);
        }
        let Some((file, scan)) = scanned.get(key) else {
            continue;
        };
        let listed = layer::list(BufReader::with_capacity(1 << 20, File::open(file)?))?;
        learned.layer(&scan.digest, &listed);
        let drop = lower.drops(scan, listed, &above[i + 1], &above[i], sde);
        drops.insert(key.clone(), drop);
    }
    if keep == layer_paths.len() {
        learned.base(lower.entries.values(), &queried);
    }
    Ok((drops, learned))
}

impl Lower {
    /// The entries of a build-made layer (`scan`, listed whole in `listed`) that repeat the
    /// entry below unchanged, to be left out; then the layer goes onto `self`. `upper`: the
    /// paths the build's layers above it touch; `touched`: those and its own.
    fn drops(
        &mut self,
        scan: &layer::Scan,
        listed: Vec<layer::Listed>,
        upper: &HashSet<Vec<u8>>,
        touched: &HashSet<Vec<u8>>,
        sde: i64,
    ) -> HashSet<Vec<u8>> {
        let listed: Vec<layer::Listed> = listed
            .into_iter()
            .filter(|l| {
                let k = layer::key_of(&l.head.path);
                self.entries.contains_key(k) || upper.contains(k) || is_whiteout(k) || k == ETC
            })
            .collect();
        // Entries that must stay whatever they repeat: hard links and their targets, paths
        // that occur twice, and anything under a directory this layer makes opaque.
        let mut count: HashMap<&[u8], usize> = HashMap::new();
        let mut pinned: HashSet<Vec<u8>> = HashSet::new();
        let mut opaque: Vec<Vec<u8>> = Vec::new();
        for e in &scan.entries {
            *count.entry(&e.key).or_default() += 1;
            if let Some(target) = &e.link {
                pinned.insert(target.to_vec());
                pinned.insert(e.key.to_vec());
            }
            if let Some(dir) = e.key.strip_suffix(b".wh..wh..opq") {
                opaque.push(dir.to_vec());
            }
        }
        let drop: HashSet<Vec<u8>> = listed
            .iter()
            .filter(|l| self.same(l, sde) || self.runtime_stub(l, touched))
            .map(|l| layer::key_of(&l.head.path).to_vec())
            .filter(|k| count.get(k.as_slice()) == Some(&1) && !pinned.contains(k))
            .filter(|k| !opaque.iter().any(|d| k.starts_with(d)))
            .collect();
        self.apply(listed);
        drop
    }
}

/// A gzip-compressed layer blob (what the containerd image store exports) decompressed into
/// `out`; false when `blob` is a plain tar.
fn gunzip(blob: &Path, out: &Path) -> anyhow::Result<bool> {
    if !is_gzip(blob)? {
        return Ok(false);
    }
    let input = BufReader::with_capacity(1 << 20, File::open(blob)?);
    let mut decoder = flate2::bufread::MultiGzDecoder::new(input);
    let mut dst = BufWriter::with_capacity(1 << 20, File::create(out)?);
    io::copy(&mut decoder, &mut dst).context("decompressing a gzip layer")?;
    dst.flush()?;
    let _ = std::fs::remove_file(blob);
    Ok(true)
}

/// Sets the times and diff IDs of an image config and drops the legacy builder's records of
/// its own containers.
pub fn normalize_config(config: &mut Value, diff_ids: &[String], sde: i64) -> anyhow::Result<()> {
    let obj = config
        .as_object_mut()
        .context("the image config is not a JSON object")?;
    let time = Value::String(rfc3339(sde));
    obj.insert("created".into(), time.clone());
    if let Some(history) = obj.get_mut("history").and_then(Value::as_array_mut) {
        for h in history {
            if let Some(h) = h.as_object_mut() {
                if h.contains_key("created") {
                    h.insert("created".into(), time.clone());
                }
                if let Some(Value::String(by)) = h.get_mut("created_by") {
                    if let Some(even) = healthcheck_history(by) {
                        *by = even;
                    }
                }
            }
        }
    }
    // BuildKit 0.8 writes unset fields as null (`"OnBuild": null`), 0.13 leaves them out; Go
    // reads both as unset.
    if let Some(c) = obj.get_mut("config").and_then(Value::as_object_mut) {
        c.retain(|_, v| !v.is_null());
    }
    obj.remove("container");
    obj.remove("container_config");
    if let Some(image) = obj
        .get_mut("config")
        .and_then(Value::as_object_mut)
        .and_then(|c| c.get_mut("Image"))
    {
        *image = Value::String(String::new());
    }
    let ids = obj
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .context("the image config has no rootfs.diff_ids")?;
    *ids = Value::Array(diff_ids.iter().cloned().map(Value::String).collect());
    Ok(())
}

/// The history text of a HEALTHCHECK as BuildKit 0.13 writes it: 0.8 prints the Go struct
/// without its start interval (`"30s" "5s" "20s" '\x03'`), 0.13 with it (`... "20s" "0s" ...`,
/// zero when unset, which is all 0.8 could build).
fn healthcheck_history(by: &str) -> Option<String> {
    let body = by.strip_prefix("HEALTHCHECK &{")?;
    let cut = body.rfind("] ")? + 2;
    let tail: Vec<&str> = body[cut..].split(' ').collect();
    let durations = tail.iter().take_while(|t| t.starts_with('"')).count();
    if durations != 3 || tail.len() != 4 {
        return None;
    }
    Some(format!(
        "HEALTHCHECK &{{{}{} {} {} \"0s\" {}",
        &body[..cut],
        tail[0],
        tail[1],
        tail[2],
        tail[3]
    ))
}

/// Compact JSON with object keys sorted: the same value always gives the same bytes.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push(b'{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).expect("string"));
                    out.push(b':');
                    write(v, out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(v, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).expect("scalar")),
        }
    }
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// Streams the normal form `plan` to the daemon (`POST /images/load`) without the layers in
/// `held`: to the classic image store as a docker-save tar (`held`: a bottom run the daemon
/// holds as a chain, see [`held_layers`]); to the containerd image store as an OCI layout
/// ([`oci_layout`]; `held`: rewritten layers whose blobs it holds).
async fn load(
    docker: &bollard::Docker,
    plan: &Plan,
    containerd: bool,
    held: &HashSet<String>,
) -> anyhow::Result<()> {
    type Write = Box<dyn FnOnce(&mut blocks::ChannelWriter) -> anyhow::Result<()> + Send>;
    let write: Write = match containerd {
        true => {
            let (plan, held) = (plan.clone(), held.clone());
            Box::new(move |w| oci_layout(w, &plan, &held))
        }
        false => {
            let held = held.clone();
            let config_name = format!("{}.json", plan.image_id.trim_start_matches("sha256:"));
            let layer_paths: Vec<String> = plan
                .layers
                .iter()
                .map(|(d, _)| format!("{}/layer.tar", d.trim_start_matches("sha256:")))
                .collect();
            let manifest = save::manifest(&config_name, &plan.tags, &layer_paths);
            let config = plan.config.clone();
            let layers = plan.layers.clone();
            Box::new(move |w| save::write(w, &config_name, &config, &manifest, &layers, &held))
        }
    };
    let (body, producer) = blocks::streamed(write);
    let loaded = crate::docker::images::load(docker, body).await;
    let produced = producer.await.context("load task")?;
    produced.context("writing the normalised image")?;
    loaded.context("the daemon refused the normalised image")
}

/// The normal form `plan` as an OCI layout for the containerd image store, named by its tags.
/// A layer the daemon stores already (see [`Plan::stored`]) is named in the manifest by that
/// blob and left out of the archive, and so is a rewritten layer in `held` (the daemon holds its
/// blob: see [`super::stored`]): after a small change only the changed layers travel.
fn oci_layout<W: Write>(out: W, plan: &Plan, held: &HashSet<String>) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut descriptors = Vec::with_capacity(plan.layers.len());
    let mut written = HashSet::new();
    for ((diff_id, file), stored) in plan.layers.iter().zip(&plan.stored) {
        if let Some(d) = stored {
            descriptors.push(d.clone());
            continue;
        }
        let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f.metadata()?.len();
        descriptors.push(Descriptor::new(oci::MEDIA_LAYER, diff_id, size));
        if !held.contains(diff_id) && written.insert(diff_id.clone()) {
            let reader = BufReader::with_capacity(1 << 20, f);
            tar.append_data(&mut blocks::regular(size), oci::blob_path(diff_id), reader)?;
        }
    }
    let config = &plan.config;
    let manifest = oci::manifest(&plan.image_id, config.len() as u64, descriptors);
    let names: Vec<String> = plan.tags.iter().map(|t| oci::normalize_ref(t)).collect();
    let index = oci::oci_index_names(&manifest, &names);
    let small: [(String, &[u8]); 4] = [
        (oci::blob_path(&plan.image_id), config),
        (oci::blob_path(&oci::sha256_digest(&manifest)), &manifest),
        ("index.json".to_string(), &index),
        ("oci-layout".to_string(), oci::OCI_LAYOUT),
    ];
    for (path, data) in small {
        tar.append_data(&mut blocks::regular(data.len() as u64), path, data)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// Whether a load failed because the containerd image store lost a snapshot it was unpacking
/// onto (`failed to unpack loaded image: ... parent snapshot ... does not exist: not found`).
fn lost_snapshot(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("failed to unpack") && text.contains("snapshot") && text.contains("not found")
}

/// The layers of the bottom run that the daemon holds as a chain: those normalising left as
/// they were (the image it started from has them), or the first `chain` (an image slipway
/// loaded earlier has them), whichever run is longer. A layer repeated above that run must
/// still be sent.
fn held_layers(outcomes: &[LayerOutcome], chain: usize) -> HashSet<String> {
    let unchanged = outcomes.iter().take_while(|o| o.before == o.after).count();
    let kept = unchanged.max(chain.min(outcomes.len()));
    let above: HashSet<&String> = outcomes[kept..].iter().map(|o| &o.after).collect();
    outcomes[..kept]
        .iter()
        .map(|o| o.after.clone())
        .filter(|d| !above.contains(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_snapshot_lost_while_unpacking_is_told_from_other_load_failures() {
        let lost = anyhow::anyhow!(
            "Docker stream error: failed to unpack loaded image: failed to prepare extraction \
             snapshot \"extract-1 sha256:2d7c\": parent snapshot sha256:18af does not exist: \
             not found"
        )
        .context("the daemon refused the normalised image");
        assert!(lost_snapshot(&lost));
        assert!(!lost_snapshot(&anyhow::anyhow!("no space left on device")));
        assert!(!lost_snapshot(&anyhow::anyhow!("image not found")));
    }

    #[test]
    fn the_bottom_layers_left_as_they_were_are_held_back() {
        let o = |before: &str, after: &str| LayerOutcome {
            before: before.into(),
            after: after.into(),
            size: 0,
            rewritten: before != after,
        };
        let layers = [
            o("a", "a"),
            o("b", "b"),
            o("c", "c2"),
            o("d", "d"),
            o("b", "b"),
        ];
        // `d` sits above a rewritten layer (another chain); `b` is needed there too.
        assert_eq!(held_layers(&layers, 0), HashSet::from(["a".to_string()]));
        assert!(held_layers(&[o("a", "a2"), o("b", "b")], 0).is_empty());
        // An image loaded earlier holds the chain up to the rewritten `c2`.
        let by_chain = held_layers(&layers, 3);
        assert_eq!(by_chain, HashSet::from(["a".to_string(), "c2".to_string()]));
        assert_eq!(held_layers(&layers, 9).len(), 4);
    }

    #[test]
    fn config_times_diff_ids_and_legacy_fields() {
        let mut c = json!({
            "architecture": "amd64",
            "config": {"Env": ["A=1"], "Image": "sha256:abc", "Labels": {"dev.slipway.input-digest": "sha256:d"}},
            "container": "ed81",
            "container_config": {"Hostname": "ed81"},
            "created": "2026-11-25T19:12:42.917258958Z",
            "docker_version": "20.10.24",
            "history": [
                {"created": "2026-11-25T19:07:39Z", "created_by": "COPY x"},
                {"created": "2026-11-25T19:09:37Z", "created_by": "CMD", "empty_layer": true},
                {"created_by": "no time"}
            ],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:1"]}
        });
        normalize_config(&mut c, &["sha256:2".to_string()], 0).unwrap();
        assert_eq!(
            c,
            json!({
                "architecture": "amd64",
                "config": {"Env": ["A=1"], "Image": "", "Labels": {"dev.slipway.input-digest": "sha256:d"}},
                "created": "1970-01-01T00:00:00Z",
                "docker_version": "20.10.24",
                "history": [
                    {"created": "1970-01-01T00:00:00Z", "created_by": "COPY x"},
                    {"created": "1970-01-01T00:00:00Z", "created_by": "CMD", "empty_layer": true},
                    {"created_by": "no time"}
                ],
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": ["sha256:2"]}
            })
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_is_compact() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, {"z": "<&>", "a": null}], "a": true}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":true,"b":[1,{"a":null,"z":"<&>"}]}"#
        );
    }

    #[test]
    fn tags_split_at_the_last_colon_of_the_name() {
        assert_eq!(split_tag("a/b:1"), ("a/b", "1"));
        assert_eq!(
            split_tag("localhost:5000/b"),
            ("localhost:5000/b", "latest")
        );
        assert_eq!(split_tag("localhost:5000/b:v2"), ("localhost:5000/b", "v2"));
    }

    /// A tar with one file `name` holding `body` (mode 0644, mtime `mtime`).
    fn one_file_tar(name: &str, body: &[u8], mtime: u64) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    /// A built layer the containerd image store exports gzipped and that is normal already: its
    /// gzip spool is gone once decompressed, and the load names it by its diff ID and carries it.
    #[test]
    fn an_already_normal_gzipped_layer_is_carried_uncompressed() {
        let sde = 1_700_000_000;
        // The normal form of a one-file layer.
        let raw = one_file_tar("app.txt", b"hello\n", 5);
        let scan = layer::scan(&raw[..], io::sink(), sde).unwrap();
        let mut normal = Vec::new();
        let mut src = BufReader::new(io::Cursor::new(raw.clone()));
        let (diff_id, _) = layer::rewrite(&scan, &mut src, &mut normal, sde).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&normal).unwrap();
        let gz = gz.finish().unwrap();
        let gz_digest = oci::sha256_digest(&gz);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config_path = oci::blob_path(&oci::sha256_digest(&config));
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_path, "RepoTags": [], "Layers": [oci::blob_path(&gz_digest)],
        }]))
        .unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            (oci::blob_path(&gz_digest), &gz),
            (config_path, &config),
            ("manifest.json".to_string(), &manifest),
        ] {
            b.append_data(&mut blocks::regular(data.len() as u64), path, &data[..])
                .unwrap();
        }
        let export = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saved = save::spool(&export[..], dir.path()).unwrap();
        let (plan, _, _) =
            rewrite_image(&saved, dir.path(), sde, &["app/web:1".into()], 0).unwrap();
        assert!(!plan.outcomes[0].rewritten);
        assert_eq!(plan.layers[0].0, diff_id);
        assert_eq!(plan.stored, vec![None]);
        assert_eq!(std::fs::read(&plan.layers[0].1).unwrap(), normal);
        // The layout the load sends carries the layer, named by its diff ID.
        let mut out = Vec::new();
        oci_layout(&mut out, &plan, &HashSet::new()).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(&out[..]).entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().to_string());
        }
        assert!(names.contains(&oci::blob_path(&diff_id)), "{names:?}");
    }
}

#[cfg(test)]
mod buildkit_version_tests {
    use super::*;

    #[test]
    fn configs_of_buildkit_0_8_and_0_13_normalise_alike() {
        let old = r#"HEALTHCHECK &{["CMD" "python3" "-c" "x"] "30s" "5s" "20s" '\x03'}"#;
        let new = r#"HEALTHCHECK &{["CMD" "python3" "-c" "x"] "30s" "5s" "20s" "0s" '\x03'}"#;
        assert_eq!(healthcheck_history(old).as_deref(), Some(new));
        assert_eq!(healthcheck_history(new), None);
        assert_eq!(healthcheck_history("RUN make"), None);

        let mut a = serde_json::json!({
            "config": {"Cmd": ["x"], "OnBuild": null},
            "history": [{"created": "x", "created_by": old}],
            "rootfs": {"diff_ids": []}
        });
        let mut b = serde_json::json!({
            "config": {"Cmd": ["x"]},
            "history": [{"created": "y", "created_by": new}],
            "rootfs": {"diff_ids": []}
        });
        normalize_config(&mut a, &[], 0).unwrap();
        normalize_config(&mut b, &[], 0).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }
}

#[cfg(test)]
mod lower_tests {
    use super::*;

    fn listed(path: &str, mtime: i64, digest: &str) -> layer::Listed {
        layer::Listed {
            head: layer::Head {
                path: path.as_bytes().to_vec(),
                link: vec![],
                typeflag: b'0',
                size: 0,
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime,
                pax: vec![],
            },
            digest: digest.into(),
        }
    }

    #[test]
    fn an_entry_equal_to_the_one_below_changes_nothing() {
        let mut lower = Lower::default();
        lower.apply(vec![
            listed("etc/.pwd.lock", 100, "sha256:e"),
            listed("etc/gone", 100, "sha256:e"),
            listed("opt/a/x", 100, "sha256:e"),
        ]);
        let sde = 1000;
        assert!(lower.same(&listed("./etc/.pwd.lock", 100, "sha256:e"), sde));
        assert!(!lower.same(&listed("etc/.pwd.lock", 101, "sha256:e"), sde));
        assert!(!lower.same(&listed("etc/.pwd.lock", 100, "sha256:f"), sde));
        assert!(!lower.same(&listed("etc/new", 100, "sha256:e"), sde));
        // Times after SOURCE_DATE_EPOCH all become it.
        assert!(lower.same(&listed("etc/.pwd.lock", 101, "sha256:e"), 50));
        // Whiteouts and opaque directories hide what was below.
        lower.apply(vec![
            listed("etc/.wh.gone", 0, ""),
            listed("opt/a/.wh..wh..opq", 0, ""),
        ]);
        assert!(!lower.same(&listed("etc/gone", 100, "sha256:e"), sde));
        assert!(!lower.same(&listed("opt/a/x", 100, "sha256:e"), sde));
        assert!(lower.same(&listed("etc/.pwd.lock", 100, "sha256:e"), sde));
    }

    #[test]
    fn the_etc_a_runtime_made_for_its_mounts_on_a_base_without_one_is_left_out() {
        let dir = |path: &str, mode: u32| {
            let mut l = listed(path, 100, "sha256:e");
            l.head.typeflag = b'5';
            l.head.mode = mode;
            l
        };
        let touched = |keys: &[&str]| -> HashSet<Vec<u8>> {
            keys.iter().map(|k| k.as_bytes().to_vec()).collect()
        };
        let bare = Lower::default();
        assert!(bare.runtime_stub(&dir("etc/", 0o755), &touched(&["etc", "www/b.txt"])));
        // Anything under it, here or above, or another mode makes it real.
        assert!(!bare.runtime_stub(&dir("etc/", 0o755), &touched(&["etc", "etc/app.conf"])));
        assert!(!bare.runtime_stub(&dir("etc/", 0o700), &touched(&["etc"])));
        assert!(!bare.runtime_stub(&listed("etc", 100, "sha256:e"), &touched(&["etc"])));
        assert!(!bare.runtime_stub(&dir("opt/", 0o755), &touched(&["opt"])));
        // A base with an /etc: the directory is what it is (and `same` decides).
        let mut based = Lower::default();
        based.apply(vec![dir("etc/", 0o755)]);
        assert!(!based.runtime_stub(&dir("etc/", 0o755), &touched(&["etc"])));
    }
}
