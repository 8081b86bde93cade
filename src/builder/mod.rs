//! The build engine: plan every component's image as data, then build only what changed.
//!
//! [`plan`] works out, before anything runs, what each component's image is made of (its
//! Dockerfile, packed context, build args, target, platform and base image IDs), the input
//! digest over all of that, the tag it gets (`PREFIX/NAME:<12 hex>`), and whether an image with
//! that digest already exists, or else which input changed since the image its tags last
//! pointed to. `slipway plan` prints that; [`execute`] (behind `slipway build` and `up`) builds
//! the components that are not cached, in parallel, and moves tags only after a build
//! succeeded, so a failed or interrupted run leaves every tag where it was.
//!
//! Builds go through BuildKit in the daemon (the legacy builder only where there is none), with
//! the context streamed from the packer in `crate::context`; a component with build secrets
//! goes through BuildKit's gRPC session instead, the one path on which the daemon can ask
//! slipway for a secret (see [`image`]).

mod attestations;
mod cache;
pub mod digest;
mod image;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::{Component, Config};
use crate::context::{self, ContextSpec};
use crate::detect::Stacks;
use crate::docker::Daemon;
use crate::error::Fail;
use crate::instructions::{self, SOURCE_DATE_EPOCH_ARG};
use crate::record::{self, BuildReport, BuiltImage, ImageRecord, Outcome};
use crate::report::{Event, Reporter};
use crate::reproduce::normalize::{Handoff, NormalForms, NormalImage};

pub use digest::Inputs;

pub use crate::instructions::BUILD_ID_ARG;

/// A context larger than this gets a warning (it is still built, as Docker would).
pub const LARGE_CONTEXT: u64 = 1 << 30;

/// Label with the full input digest (`sha256:...`).
pub const LABEL_DIGEST: &str = "dev.slipway.input-digest";
/// Label with the per-input hashes ([`Inputs`] as JSON), for cache-miss reasons.
pub const LABEL_INPUTS: &str = "dev.slipway.inputs";
/// Label with the component name.
pub const LABEL_COMPONENT: &str = "dev.slipway.component";
/// Label with the app name.
pub const LABEL_APP: &str = "dev.slipway.app";

/// Which of the daemon's builders builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Builder {
    BuildKit,
    Legacy,
}

impl Builder {
    /// How the context packer must shape the tar for this builder.
    pub fn for_context(self) -> context::Builder {
        match self {
            Builder::BuildKit => context::Builder::BuildKit,
            Builder::Legacy => context::Builder::Classic,
        }
    }
}

/// Everything a build run will do, computed before it starts.
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    pub app: String,
    /// `os/arch` of the daemon.
    pub platform: String,
    pub builder: Builder,
    pub components: Vec<ComponentPlan>,
    /// How the bases resolved differ from `slipway.lock` (without `--locked`, which refuses
    /// any difference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_drift: Option<String>,
    /// Every base image the planned components use, as it resolved: what `slipway.lock` pins.
    #[serde(skip)]
    pub pins: BTreeMap<String, crate::pins::Pin>,
    /// Whether the project has a `slipway.lock`.
    #[serde(skip)]
    pub lock_exists: bool,
}

/// One component's image: what it is made of, its tag, and whether it must be built.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentPlan {
    pub name: String,
    pub stack: Option<String>,
    /// The Dockerfile, relative to the project root.
    pub dockerfile: PathBuf,
    /// The context directory, relative to the project root.
    pub context: PathBuf,
    /// The stage built (empty: the Dockerfile's last stage, for a Dockerfile of the user's
    /// that has no stage of the configured name).
    pub target: String,
    /// Non-secret build args passed to the build (those the Dockerfile declares).
    pub build_args: BTreeMap<String, String>,
    /// Names of the build secrets mounted during the build (never their values).
    pub build_secrets: Vec<String>,
    /// Base image reference -> image ID on the daemon.
    pub base_images: BTreeMap<String, String>,
    pub context_files: u64,
    pub context_bytes: u64,
    /// The per-input hashes the digest is computed from.
    pub inputs: Inputs,
    /// `sha256:...` over [`Self::inputs`].
    pub input_digest: String,
    /// `PREFIX/NAME`.
    pub repository: String,
    /// The input-digest tag: the digest's first 12 hex digits.
    pub tag: String,
    /// `PREFIX/NAME:TAG`.
    pub image: String,
    /// Further references moved to the image after a successful build (`PREFIX/NAME:latest`).
    pub extra_tags: Vec<String>,
    pub cache: CacheState,
    /// When the context changed: the paths that differ from the last build's context
    /// (added, changed, or removed: `path (removed)`), in path order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_files: Vec<String>,
    /// Each context entry's path and short hash, kept after a build for the next plan.
    #[serde(skip)]
    pub(crate) context_entries: Vec<(String, String)>,
    /// How long the component's last build took (an estimate for this one).
    #[serde(skip)]
    pub(crate) last_build_ms: Option<u64>,
    /// Things the user should know (unused build args, files the packer skipped).
    pub warnings: Vec<String>,
    /// The time the image's files and config carry (SOURCE_DATE_EPOCH), and where it came from.
    pub date: crate::reproduce::sde::Sde,
    /// The Dockerfile and context on disk, for the build.
    #[serde(skip)]
    pub(crate) dockerfile_path: PathBuf,
    #[serde(skip)]
    pub(crate) context_dir: PathBuf,
    #[serde(skip)]
    pub(crate) source_date_epoch: Option<i64>,
    /// The Dockerfile's name inside the packed context (the build's `dockerfile` parameter).
    #[serde(skip)]
    pub dockerfile_name: String,
    /// The context walk's metadata fingerprint at planning time: a build that sent another
    /// file set than the one hashed must not be tagged with this digest.
    #[serde(skip)]
    pub(crate) context_fingerprint: String,
    /// slipway's own files, left out of the context ([`own_files`]).
    #[serde(skip)]
    pub(crate) leave_out: Vec<PathBuf>,
    /// The builder the context is packed for.
    #[serde(skip)]
    pub(crate) builder: Builder,
    /// The diff IDs of each base image, as inspected for the plan: normalising keeps the
    /// layers the image shares with one of them.
    #[serde(skip)]
    pub(crate) base_layers: Vec<Vec<String>>,
    /// The diff IDs of the cached image (when [`CacheState::Cached`]), as inspected for the
    /// plan: the load needs them.
    #[serde(skip)]
    pub(crate) cached_diff_ids: Vec<String>,
    /// Each base image as it resolved ([`crate::pins`]).
    #[serde(skip)]
    pub(crate) pins: BTreeMap<String, crate::pins::Pin>,
}

/// Whether a component's image exists already.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CacheState {
    /// An image with this input digest exists.
    Cached { image_id: String },
    /// None on the daemon, but the registry holds `PREFIX/NAME:TAG` (manifest `digest`): it is
    /// not built (with `--push` or `[images] registry`).
    Registry { digest: String },
    /// It must be built, because of `reason` ("Dockerfile changed", "never built", ...).
    Build { reason: String },
}

impl ComponentPlan {
    /// Whether it need not be built: on the daemon or in the registry.
    pub fn is_cached(&self) -> bool {
        matches!(
            self.cache,
            CacheState::Cached { .. } | CacheState::Registry { .. }
        )
    }

    /// What the context packer needs to pack this component's context as the plan did.
    pub fn context_spec(&self) -> ContextSpec {
        ContextSpec {
            dir: self.context_dir.clone(),
            dockerfile: self.dockerfile_path.clone(),
            ignore_file: None,
            source_date_epoch: self.source_date_epoch,
            builder: self.builder.for_context(),
            leave_out: self.leave_out.clone(),
        }
    }

    /// The labels every image of this component carries.
    pub(crate) fn labels(&self, app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_DIGEST.to_string(), self.input_digest.clone()),
            (LABEL_INPUTS.to_string(), self.inputs.to_label()),
            (LABEL_COMPONENT.to_string(), self.name.clone()),
            (LABEL_APP.to_string(), app.to_string()),
        ])
    }
}

/// How `build` runs.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// How many components build at once (default: all).
    pub jobs: Option<usize>,
    /// Stop every other build when one fails.
    pub fail_fast: bool,
    /// Build every selected component, and without the daemon's build cache.
    pub no_cache: bool,
    /// Also write the run's report here.
    pub metadata_file: Option<PathBuf>,
    /// Keep the normal forms' files on disk for a load in the same run (see [`Built`]).
    pub keep_normal_forms: bool,
    /// Where each kept normal form goes as soon as its files are written, and then word that
    /// its build is over, so that a load can start before the run ends (`up`). The sender is
    /// dropped when the run ends.
    pub ready: Option<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    /// Do not pull a missing base image (offline work): it is an error naming the pull.
    pub no_pull: bool,
    /// Look every image up in its registry before building ([`PlanOptions::registry`]).
    pub registry: bool,
    /// Pull the images found in the registry into the daemon (for a load in the same run).
    pub pull_found: bool,
    /// `--locked` ([`PlanOptions::locked`]).
    pub locked: bool,
    /// Write each image's SBOM and provenance under this directory ([`crate::attest::dir`]).
    pub attestations: Option<PathBuf>,
    /// `--cache-from` / `--cache-to` ([`crate::cache`]): never an input of the digest.
    pub cache: crate::cache::CacheOptions,
}

/// What the plan may do beyond asking the daemon.
#[derive(Clone, Default)]
pub struct PlanOptions {
    /// Pull missing base images (with the Docker config's credentials), reporting here.
    pub pull: Option<Arc<dyn Reporter>>,
    /// Look up each image the daemon lacks in its registry (`PREFIX/NAME:<input-digest tag>`,
    /// with the credentials a push uses): one that is there is not built
    /// ([`CacheState::Registry`]). `--push` and `[images] registry = true` turn it on.
    pub registry: bool,
    /// `--locked`: `slipway.lock` must exist and pin every base as it resolves, no more.
    pub locked: bool,
    /// A base the daemon lacks that `slipway.lock` pins is pulled only for a component that
    /// must be built: the pin's ID is enough for the input digest, so a fresh runner whose
    /// images are all cached (in the registry) pulls nothing. Not for a run that builds
    /// regardless of the cache (`--no-cache`).
    pub lazy_bases: bool,
}

/// What a build run hands on: its report (recorded and shown), and per image what the load
/// needs, in component order.
#[derive(Debug)]
pub struct Built {
    pub report: BuildReport,
    pub images: Vec<BuiltImage>,
}

/// The components a selection names (all when empty), or a usage error naming the unknown one.
pub fn select<'a>(config: &'a Config, selection: &[String]) -> anyhow::Result<Vec<&'a Component>> {
    if selection.is_empty() {
        return Ok(config.components.values().collect());
    }
    let mut out: Vec<&Component> = Vec::new();
    for name in selection {
        match config.components.get(name) {
            Some(c) => {
                if !out.iter().any(|o| o.name == c.name) {
                    out.push(c);
                }
            }
            None => {
                let known: Vec<&str> = config.components.keys().map(String::as_str).collect();
                let mut fail = Fail::usage(format!(
                    "no component `{name}` in {}",
                    config.path.display()
                ));
                fail = match crate::config::did_you_mean(name, &known) {
                    Some(s) => fail.hint(format!("did you mean `{s}`?")),
                    None => fail.hint(format!("components: {}", known.join(", "))),
                };
                return Err(fail.into());
            }
        }
    }
    Ok(out)
}

/// The daemon's platform and builder.
pub async fn daemon_builder(daemon: &Daemon) -> anyhow::Result<(String, Builder, String)> {
    let version = daemon.docker.version().await.context(Fail::job(format!(
        "cannot ask the Docker daemon at {} for its version",
        daemon.endpoint.host
    )))?;
    let os = version.os.unwrap_or_else(|| "linux".into());
    let arch = version.arch.unwrap_or_else(|| "amd64".into());
    let api = version.api_version.unwrap_or_default();
    let forced_legacy = std::env::var("SLIPWAY_BUILDER").is_ok_and(|v| v == "legacy");
    let builder = if crate::docker::has_buildkit(&api) && !forced_legacy && os == "linux" {
        Builder::BuildKit
    } else {
        Builder::Legacy
    };
    Ok((format!("{os}/{arch}"), builder, api))
}

/// Computes the build plan of the selected components (all when `selection` is empty),
/// detecting their stacks.
pub async fn plan(
    config: &Config,
    daemon: &Daemon,
    selection: &[String],
) -> anyhow::Result<BuildPlan> {
    plan_with(config, daemon, selection, &Stacks::detect(config)).await
}

/// [`plan`], with the stacks detected already.
pub async fn plan_with(
    config: &Config,
    daemon: &Daemon,
    selection: &[String],
    stacks: &Stacks,
) -> anyhow::Result<BuildPlan> {
    plan_pulling(config, daemon, selection, stacks, PlanOptions::default()).await
}

/// [`plan_with`], pulling a missing base image (with the Docker config's credentials,
/// reporting to `opts.pull`) instead of failing, as `docker build` does, and looking images up
/// in their registry when `opts.registry`.
pub async fn plan_pulling(
    config: &Config,
    daemon: &Daemon,
    selection: &[String],
    stacks: &Stacks,
    opts: PlanOptions,
) -> anyhow::Result<BuildPlan> {
    let components = select(config, selection)?;
    // Both answers at once: `docker info` is the slow one (some 10 ms on 20.10).
    let (version, containerd_store) =
        tokio::join!(daemon_builder(daemon), daemon.containerd_store());
    let (platform, builder, _) = version?;
    let facts = DaemonFacts {
        platform: platform.clone(),
        builder,
        containerd_store,
        pull: opts.pull.clone(),
        registry: opts.registry,
        lock: None,
        lazy_bases: opts.lazy_bases,
    };
    let lock_path = crate::pins::path(config);
    let lock = crate::pins::read(&lock_path)?;
    if opts.locked && lock.is_none() {
        return Err(
            Fail::usage(format!("--locked: there is no {}", lock_path.display()))
                .hint("run `slipway lock` and commit slipway.lock")
                .into(),
        );
    }
    let facts = DaemonFacts {
        lock: lock.clone(),
        ..facts
    };
    let last = record::read_last(config).ok();
    let futures = components
        .into_iter()
        .map(|c| plan_component(config, daemon, c, stacks, &facts, last.as_ref()));
    let planned = futures_util::future::join_all(futures).await;
    let components = planned.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let pins: BTreeMap<String, crate::pins::Pin> =
        components.iter().flat_map(|c| c.pins.clone()).collect();
    let drift = lock
        .as_ref()
        .map(|l| crate::pins::Drift::between(l, &pins, selection.is_empty()))
        .filter(|d| !d.is_empty());
    if let (true, Some(d)) = (opts.locked, &drift) {
        return Err(Fail::usage(format!(
            "--locked: {} is out of date: {}",
            lock_path.display(),
            d.describe()
        ))
        .hint("move the pins on purpose with `slipway lock --update` (or `slipway lock` for new and stale ones) and commit slipway.lock")
        .into());
    }
    Ok(BuildPlan {
        app: config.app.name.clone(),
        platform,
        builder,
        components,
        lock_drift: drift.map(|d| {
            format!(
                "slipway.lock: {} (`slipway lock --update` moves the pins; --locked refuses this)",
                d.describe()
            )
        }),
        pins,
        lock_exists: lock.is_some(),
    })
}

/// The SOURCE_DATE_EPOCH a context is packed with: every entry's mtime in the tar is set to
/// it, so the digest follows file contents and modes, not mtimes (a `touch`, a fresh checkout
/// or an edit undone do not rebuild). The rule is [`crate::reproduce::sde::for_context`]'s:
/// the environment, else the last git commit touching the context, else 0.
pub fn source_date_epoch(context_dir: &std::path::Path) -> anyhow::Result<i64> {
    Ok(crate::reproduce::sde::for_context(context_dir)?.epoch)
}

/// slipway's own files, which never enter a build context: its state (`.slipway/`), the
/// config file and `slipway.lock`, the Dockerfiles and ignore files it generated (a user's own
/// stay: they are part of the directory as Docker sees it), and its default manifest and chart
/// output directories (a Secret manifest holds secret values).
pub fn own_files(config: &Config) -> Vec<PathBuf> {
    let mut own = vec![
        config.root.join(".slipway"),
        config.path.clone(),
        crate::pins::path(config),
        config.root.join("k8s"),
        config.root.join("charts"),
    ];
    for c in config.components.values() {
        let dockerfile = config.dockerfile_path(c);
        let generated = |p: &std::path::Path| {
            std::fs::read(p)
                .is_ok_and(|b| crate::instructions::is_generated(&String::from_utf8_lossy(&b)))
        };
        if generated(&dockerfile) {
            own.push(dockerfile.clone());
        }
        let ignore = crate::instructions::ignore_path(&dockerfile);
        if generated(&ignore) {
            own.push(ignore);
        }
        // A directory of nothing but generated files (`dockerfiles/`) goes as a whole.
        if let Some(dir) = dockerfile.parent().filter(|d| *d != config.root) {
            let all_generated = std::fs::read_dir(dir).is_ok_and(|entries| {
                entries
                    .flatten()
                    .all(|e| e.file_type().is_ok_and(|t| t.is_file()) && generated(&e.path()))
            });
            if all_generated && !own.iter().any(|p| p == dir) {
                own.push(dir.to_path_buf());
            }
        }
    }
    own
}

/// What the plan needs to know of the daemon.
struct DaemonFacts {
    platform: String,
    builder: Builder,
    /// Image IDs are manifest digests there: base images are named by config digest instead.
    containerd_store: bool,
    /// Pull missing base images, reporting here.
    pull: Option<Arc<dyn Reporter>>,
    /// Look images up in their registry ([`PlanOptions::registry`]).
    registry: bool,
    /// `slipway.lock`: a base the daemon lacks is pulled by its pinned digest.
    lock: Option<crate::pins::LockFile>,
    /// [`PlanOptions::lazy_bases`].
    lazy_bases: bool,
}

async fn plan_component(
    config: &Config,
    daemon: &Daemon,
    c: &Component,
    stacks: &Stacks,
    facts: &DaemonFacts,
    last: Option<&BuildReport>,
) -> anyhow::Result<ComponentPlan> {
    let (platform, builder) = (facts.platform.as_str(), facts.builder);
    let dockerfile_path = config.dockerfile_path(c);
    let context_dir = config.context_dir(c);
    let text = read_dockerfile(config, c, &dockerfile_path, &context_dir)?;
    let text_str = String::from_utf8_lossy(&text);
    let declared = instructions::declared_args(&text_str);
    let mut warnings = Vec::new();
    let date = crate::reproduce::sde::for_context(&context_dir)?;
    let source_date_epoch = date.epoch;
    let mut build_args = build_args(config, c, &declared, source_date_epoch, &mut warnings);
    let (build_secrets, optional_given) = build_secrets(c, &text_str);
    let target = target_stage(config, c, &text_str)?;
    // The args the FROM lines see (the build ID added below is not one of them).
    let base_args = build_args.clone();
    let bases = |lazy| {
        resolve_bases(
            config, daemon, facts, c, &text_str, &base_args, &declared, lazy,
        )
    };
    let (base_images, mut base_layers, pins, deferred) = bases(facts.lazy_bases).await?;

    let source_date_epoch = Some(source_date_epoch);
    let spec = ContextSpec {
        dir: context_dir.clone(),
        dockerfile: dockerfile_path.clone(),
        ignore_file: None,
        source_date_epoch,
        builder: builder.for_context(),
        leave_out: own_files(config),
    };
    let packed = pack_for_digest(c, spec, &mut warnings).await?;

    let inputs = Inputs::new(
        &text,
        &packed.sha256,
        packed.bytes,
        &build_args,
        &target,
        platform,
        &base_images,
    )
    .with_optional_secrets(optional_given);
    let input_digest = inputs.digest();
    let names = Names::of(config, &c.name, &input_digest);
    // A build ID that follows the inputs, for tools that would otherwise make a random one
    // (the generated Next.js Dockerfiles hand it to `generateBuildId`). It is a function of the
    // inputs above, so it is passed without being part of them.
    if declared.contains(BUILD_ID_ARG) && !build_args.contains_key(BUILD_ID_ARG) {
        build_args.insert(BUILD_ID_ARG.to_string(), names.tag.clone());
    }
    let (cache, cached_diff_ids) = cache_state(
        daemon,
        &c.name,
        &names,
        &input_digest,
        &inputs,
        last,
        facts.registry,
    )
    .await?;
    if deferred
        && !matches!(
            cache,
            CacheState::Cached { .. } | CacheState::Registry { .. }
        )
    {
        // It must be built: now its bases are needed (pulled by their pinned digests).
        let (now, layers, _, _) = bases(false).await?;
        if now != base_images {
            return Err(Fail::job(format!(
                "component `{}`: the base images pulled are not the ones slipway.lock pins ({})",
                c.name,
                now.iter()
                    .filter(|(k, v)| base_images.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k} is {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .hint("move the pins on purpose: `slipway lock --update`")
            .into());
        }
        base_layers = layers;
    }
    let changed_files = match &cache {
        CacheState::Build { reason } if reason.contains("context changed") => {
            changed_files(&read_entries(config, &c.name), &packed.entries)
        }
        _ => Vec::new(),
    };
    Ok(ComponentPlan {
        name: c.name.clone(),
        stack: shown_stack(c, stacks),
        dockerfile: c.dockerfile.clone(),
        context: c.context.clone(),
        target,
        build_args,
        build_secrets,
        base_images,
        context_files: packed.files as u64,
        context_bytes: packed.bytes,
        inputs,
        input_digest,
        repository: names.repository,
        tag: names.tag,
        image: names.image,
        extra_tags: names.extra_tags,
        cache,
        changed_files,
        context_entries: packed.entries.clone(),
        last_build_ms: last
            .and_then(|l| l.components.get(&c.name))
            .filter(|r| r.outcome == Outcome::Built)
            .map(|r| r.duration_ms),
        warnings,
        date,
        dockerfile_path,
        context_dir,
        source_date_epoch,
        dockerfile_name: packed.dockerfile_name.clone(),
        context_fingerprint: packed.fingerprint.clone(),
        leave_out: own_files(config),
        builder,
        base_layers,
        cached_diff_ids,
        pins,
    })
}

/// A component's image names.
struct Names {
    /// `PREFIX/NAME`.
    repository: String,
    /// The input-digest tag: the digest's first 12 hex digits.
    tag: String,
    /// `PREFIX/NAME:TAG`.
    image: String,
    /// Further references moved to the image after a build.
    extra_tags: Vec<String>,
}

impl Names {
    fn of(config: &Config, component: &str, input_digest: &str) -> Names {
        let repository = config.image_repo(component);
        let tag = input_digest.trim_start_matches("sha256:")[..12].to_string();
        let image = format!("{repository}:{tag}");
        let extra_tags: Vec<String> = config
            .images
            .tags
            .iter()
            .filter(|t| **t != tag)
            .map(|t| format!("{repository}:{t}"))
            .collect();
        Names {
            repository,
            tag,
            image,
            extra_tags,
        }
    }
}

/// The component's Dockerfile, once its Dockerfile and its context are both there.
fn read_dockerfile(
    config: &Config,
    c: &Component,
    dockerfile_path: &std::path::Path,
    context_dir: &std::path::Path,
) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(dockerfile_path).map_err(|e| {
        Fail::usage(format!(
            "component `{}`: cannot read its Dockerfile {}: {e}",
            c.name,
            dockerfile_path.display()
        ))
        .hint("run `slipway dockerfiles` to generate it, or set `dockerfile = \"PATH\"` in the component to use your own")
    })?;
    if !crate::instructions::looks_like_dockerfile(&text) {
        // Said without a word of the file: it may be anything.
        return Err(Fail::usage(format!(
            "component `{}`: {} is not a Dockerfile (its first instruction is not FROM or ARG)",
            c.name,
            crate::report::shown_path(&c.dockerfile)
        ))
        .hint(format!("fix `dockerfile` in {}", config.path.display()))
        .into());
    }
    if !context_dir.is_dir() {
        return Err(Fail::usage(format!(
            "component `{}`: its context {} is not a directory",
            c.name,
            context_dir.display()
        ))
        .hint(format!("fix `context` in {}", config.path.display()))
        .into());
    }
    Ok(text)
}

/// The non-secret build args passed: the `[base_images]` overrides and the component's own,
/// each only when the Dockerfile declares it (a warning names those it does not), and
/// SOURCE_DATE_EPOCH when it is declared.
fn build_args(
    config: &Config,
    c: &Component,
    declared: &BTreeSet<String>,
    source_date_epoch: i64,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut build_args: BTreeMap<String, String> = config
        .base_image_args()
        .into_iter()
        .filter(|(k, _)| declared.contains(k))
        .collect();
    for (k, v) in &c.build_args {
        if declared.contains(k) {
            build_args.insert(k.clone(), v.clone());
        } else {
            warnings.push(format!(
                "build arg {k} is not declared by an ARG in {}; it is not passed",
                c.dockerfile.display()
            ));
        }
    }
    // A Dockerfile that declares SOURCE_DATE_EPOCH gets it, as BuildKit 0.11+ passes it: the
    // generated ones date the user account in /etc/shadow by it. (The context's mtimes are
    // set to the same time, so it adds nothing new to the input digest.)
    if declared.contains(SOURCE_DATE_EPOCH_ARG) && !build_args.contains_key(SOURCE_DATE_EPOCH_ARG) {
        build_args.insert(
            SOURCE_DATE_EPOCH_ARG.to_string(),
            source_date_epoch.to_string(),
        );
    }
    build_args
}

/// The build secrets mounted: the component's, and those the Dockerfile mounts as optional
/// that are set (returned apart too: their names are an input).
fn build_secrets(c: &Component, dockerfile: &str) -> (Vec<String>, Vec<String>) {
    let mut build_secrets = c.build_secrets.clone();
    let mut optional_given = Vec::new();
    for id in instructions::optional_secrets(dockerfile) {
        if secret_given(&id) && !build_secrets.contains(&id) {
            build_secrets.push(id.clone());
            optional_given.push(id);
        }
    }
    (build_secrets, optional_given)
}

/// The stage built: the configured one, or (for a Dockerfile of the user's own without a
/// `production` stage) the last one, named by the empty string.
fn target_stage(config: &Config, c: &Component, dockerfile: &str) -> anyhow::Result<String> {
    let stages = instructions::stage_names(dockerfile);
    if stages.iter().any(|s| s.eq_ignore_ascii_case(&c.target)) {
        return Ok(c.target.clone());
    }
    if c.dockerfile_explicit && c.target == "production" {
        return Ok(String::new());
    }
    Err(Fail::usage(format!(
        "component `{}`: {} has no stage `{}` (stages: {})",
        c.name,
        c.dockerfile.display(),
        c.target,
        if stages.is_empty() {
            "none named".to_string()
        } else {
            stages.join(", ")
        }
    ))
    .hint(format!(
        "set `target` of the component in {} to one of its stages",
        config.path.display()
    ))
    .into())
}

/// The base images' IDs, diff IDs and pins, and whether one was left unpulled (`lazy`).
type Resolved = (
    BTreeMap<String, String>,
    Vec<Vec<String>>,
    BTreeMap<String, crate::pins::Pin>,
    bool,
);

/// The base images and the IDs they resolve to on the daemon, with each one's diff IDs and
/// pin. A base the daemon lacks is pulled (when the plan may pull): by its pinned digest when
/// `slipway.lock` has one, then tagged as the Dockerfile names it; with `lazy`, one the lock
/// pins is not pulled: its pin stands for it (no diff IDs).
#[allow(clippy::too_many_arguments)]
async fn resolve_bases(
    config: &Config,
    daemon: &Daemon,
    facts: &DaemonFacts,
    c: &Component,
    dockerfile: &str,
    build_args: &BTreeMap<String, String>,
    declared: &BTreeSet<String>,
    lazy: bool,
) -> anyhow::Result<Resolved> {
    let mut base_images = BTreeMap::new();
    let mut base_layers = Vec::new();
    let mut pins = BTreeMap::new();
    let mut deferred = false;
    for image in crate::bases::base_images(dockerfile, build_args) {
        let mut found = daemon.docker.inspect_image(&image).await;
        let pin = facts.lock.as_ref().and_then(|l| l.bases.get(&image));
        if let (
            true,
            Some(pin),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }),
        ) = (lazy, pin, &found)
        {
            base_images.insert(image.clone(), pin.id.clone());
            base_layers.push(Vec::new());
            pins.insert(image, pin.clone());
            deferred = true;
            continue;
        }
        if let (
            Some(reporter),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }),
        ) = (&facts.pull, &found)
        {
            let other = other_base(config, declared);
            let other = other.as_deref();
            match pin.and_then(|p| p.digest.clone()) {
                Some(digest) => {
                    pull_base(daemon, &c.name, &digest, other, reporter.as_ref()).await?;
                    tag_as(daemon, &digest, &image).await?;
                }
                None => pull_base(daemon, &c.name, &image, other, reporter.as_ref()).await?,
            }
            found = daemon.docker.inspect_image(&image).await;
        }
        let id = match found {
            Ok(i) => {
                let layers = i.root_fs.and_then(|r| r.layers).unwrap_or_default();
                let repository = format!("{}@", crate::pins::repository_of(&image));
                let digest = i
                    .repo_digests
                    .unwrap_or_default()
                    .into_iter()
                    .find(|d| d.starts_with(&repository));
                let platform = [i.os, i.architecture, i.variant]
                    .into_iter()
                    .flatten()
                    .filter(|p| !p.is_empty())
                    .collect::<Vec<_>>()
                    .join("/");
                let id = i.id.unwrap_or_default();
                let id = match facts.containerd_store {
                    true => {
                        let cache = crate::leftovers::cache_dir();
                        crate::docker::images::config_digest(daemon, &image, &id, &layers, &cache)
                            .await
                            .with_context(|| {
                                format!("component `{}`: base image `{image}`", c.name)
                            })?
                    }
                    false => id,
                };
                base_layers.push(layers);
                pins.insert(
                    image.clone(),
                    crate::pins::Pin {
                        id: id.clone(),
                        digest,
                        platform,
                    },
                );
                id
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(missing_base(config, c, &image, declared).into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "component `{}`: inspecting base image `{image}`",
                    c.name
                )))
            }
        };
        base_images.insert(image, id);
    }
    Ok((base_images, base_layers, pins, deferred))
}

/// Names the image `source` (a pinned `REPO@sha256:...`, or an ID) as `reference` on the
/// daemon.
async fn tag_as(daemon: &Daemon, source: &str, reference: &str) -> anyhow::Result<()> {
    let (repo, tag) = match reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) => (r, t),
        None => (reference, "latest"),
    };
    let opts = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repo)
        .tag(tag)
        .build();
    daemon
        .docker
        .tag_image(source, Some(opts))
        .await
        .with_context(|| format!("tagging the pinned base {source} as {reference}"))
}

/// Writes `slipway.lock` from the plan's pins when the project has none (`build` and `up`);
/// returns whether it wrote it. Only a plan of every component has every pin.
pub fn write_lock_if_absent(config: &Config, plan: &BuildPlan, all: bool) -> anyhow::Result<bool> {
    if plan.lock_exists || !all {
        return Ok(false);
    }
    let lock = crate::pins::LockFile::new(plan.pins.clone());
    crate::pins::write(&crate::pins::path(config), &lock)?;
    Ok(true)
}

/// Packs the context as the build will (hashing, not sending it), noting what is worth a
/// warning. (With no `ignore_file`, the packer finds `<dockerfile>.dockerignore`, else
/// `<context>/.dockerignore`.)
async fn pack_for_digest(
    c: &Component,
    spec: ContextSpec,
    warnings: &mut Vec<String>,
) -> anyhow::Result<context::Packed> {
    let name = c.name.clone();
    let packed = tokio::task::spawn_blocking(move || context::digest(&spec))
        .await
        .context("the context hashing task stopped")?
        .with_context(|| format!("component `{name}`: packing its context"))?;
    warnings.extend(packed.warnings.iter().cloned());
    if packed.bytes > LARGE_CONTEXT {
        // Docker would send it too; say so, since it is rarely meant.
        warnings.push(format!(
            "its context {} is {}: every build that is not cached hashes and sends all of it; \
             leave out what the image does not need in a .dockerignore",
            c.context.display(),
            crate::report::fmt_bytes(packed.bytes)
        ));
    }
    Ok(packed)
}

/// The stack, for people: the configured one, else what detection found for a generated
/// Dockerfile (a Dockerfile of the user's own has no stack).
fn shown_stack(c: &Component, stacks: &Stacks) -> Option<String> {
    match (&c.stack, c.dockerfile_explicit) {
        (Some(s), _) => Some(s.clone()),
        (None, true) => None,
        (None, false) => stacks.get(&c.name).map(|s| s.as_str().to_string()),
    }
}

fn missing_base(config: &Config, c: &Component, image: &str, declared: &BTreeSet<String>) -> Fail {
    let mut hint =
        format!("pull it (`docker pull {image}`), or run without --no-pull and slipway pulls it");
    if let Some(other) = other_base(config, declared) {
        hint.push_str(&format!(", or {other}"));
    }
    Fail::job(format!(
        "component `{}`: base image `{image}` is not on the Docker daemon",
        c.name
    ))
    .hint(hint)
}

/// "point the Dockerfile at an image you have with `python = "IMAGE"` under [base_images] in
/// slipway.toml", when the Dockerfile takes its base from one of those keys' ARGs.
fn other_base(config: &Config, declared: &BTreeSet<String>) -> Option<String> {
    let keys: Vec<String> = crate::config::BASE_IMAGE_KEYS
        .iter()
        .filter(|k| declared.contains(&crate::config::base_image_arg(k)))
        .map(|k| format!("`{k} = \"IMAGE\"`"))
        .collect();
    (!keys.is_empty()).then(|| {
        format!(
            "point the Dockerfile at an image you have with {} under [base_images] in {}",
            keys.join(" or "),
            config.path.display()
        )
    })
}

/// The hint for a base image the daemon could not pull, from the daemon's words: a registry
/// it cannot reach is not fixed by logging in, nor a name it does not know by the network.
fn pull_hint(error: &str, registry: &str, image: &str, other: Option<&str>) -> String {
    let lower = error.to_lowercase();
    let unreachable = [
        "no such host",
        "dial tcp",
        "i/o timeout",
        "connection refused",
        "network is unreachable",
        "tls handshake timeout",
        "proxyconnect",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let unknown = ["manifest unknown", "not found", "repository does not exist"]
        .iter()
        .any(|w| lower.contains(w));
    let denied = ["unauthorized", "denied", "authentication required"]
        .iter()
        .any(|w| lower.contains(w));
    let mut hint = if unreachable {
        format!(
            "the Docker daemon could not reach {registry} (it pulls, with its own network and \
             proxy settings): fix its access, or bring the image another way (`docker load`)"
        )
    } else if denied && !unknown {
        format!("log in to {registry} (`docker login {registry}`): the daemon pulls with the Docker config's credentials")
    } else if unknown || denied {
        // Docker Hub answers "pull access denied ... may require 'docker login'" for a name
        // it does not have as well as for a private one.
        format!(
            "check the name and tag of `{image}`, and log in if it is private (`docker login {registry}`)"
        )
    } else {
        format!("check the name and your access (`docker login {registry}`), or pull it yourself: docker pull {image}")
    };
    if let Some(other) = other {
        hint.push_str(&format!("; or {other}"));
    }
    hint
}

/// Pulls a base image the daemon lacks (`docker pull`, with the Docker config's credentials
/// for its registry), with a progress line as its layers arrive.
async fn pull_base(
    daemon: &Daemon,
    component: &str,
    image: &str,
    other: Option<&str>,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let task = format!("pull {image}");
    reporter.report(Event::Started {
        task: task.clone(),
        what: format!("pulling base image {image} for `{component}`"),
        estimate_ms: None,
    });
    if let Err(e) = crate::push::pull(daemon, image, &task, reporter).await {
        let registry = crate::push::registry_of(image);
        reporter.report(Event::failed(task, format!("{e:#}")));
        let hint = pull_hint(&format!("{e:#}"), &registry, image, other);
        return Err(e.context(
            Fail::job(format!(
                "component `{component}`: base image `{image}` is not on the Docker daemon and pulling it failed"
            ))
            .hint(hint),
        ));
    }
    reporter.report(Event::finished(task, "pulled"));
    Ok(())
}

/// What the plan asks of an existing image.
struct Found {
    id: String,
    labels: BTreeMap<String, String>,
    diff_ids: Vec<String>,
}

/// The ID, labels and diff IDs of an image, or `None` when there is no such image.
async fn image_labels(daemon: &Daemon, reference: &str) -> anyhow::Result<Option<Found>> {
    match daemon.docker.inspect_image(reference).await {
        Ok(i) => {
            let labels = i
                .config
                .and_then(|c| c.labels)
                .map(|l| l.into_iter().collect())
                .unwrap_or_default();
            Ok(Some(Found {
                id: i.id.unwrap_or_default(),
                labels,
                diff_ids: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("inspecting image `{reference}`"))),
    }
}

async fn cache_state(
    daemon: &Daemon,
    component: &str,
    names: &Names,
    input_digest: &str,
    inputs: &Inputs,
    last: Option<&BuildReport>,
    registry: bool,
) -> anyhow::Result<(CacheState, Vec<String>)> {
    let (image, extra_tags) = (names.image.as_str(), &names.extra_tags);
    let cached = |found: Found| {
        let image_id = found.id;
        (CacheState::Cached { image_id }, found.diff_ids)
    };
    let build = |reason: String| (CacheState::Build { reason }, Vec::new());
    if let Some(found) = image_labels(daemon, image).await? {
        if found.labels.get(LABEL_DIGEST).map(String::as_str) == Some(input_digest) {
            return Ok(cached(found));
        }
    }
    // Not on the daemon: the registry may have it (a fresh CI runner, another machine).
    if registry {
        // The error names the image, so the component.
        if let Some(digest) = crate::push::lookup(daemon, &names.repository, &names.tag).await? {
            return Ok((CacheState::Registry { digest }, Vec::new()));
        }
    }
    // Not cached: compare with the image this component's tags last pointed to.
    let mut previous: Vec<String> = Vec::new();
    if let Some(r) = last.and_then(|l| l.components.get(component)) {
        if r.repository == names.repository {
            previous.push(r.image.clone());
        }
    }
    previous.extend(extra_tags.iter().cloned());
    for reference in previous {
        let Some(found) = image_labels(daemon, &reference).await? else {
            continue;
        };
        if found.labels.get(LABEL_DIGEST).map(String::as_str) == Some(input_digest) {
            // Same inputs, only the digest tag is gone: re-tag, no build.
            return Ok(cached(found));
        }
        let reason = match found
            .labels
            .get(LABEL_INPUTS)
            .and_then(|l| Inputs::from_label(l))
        {
            Some(old) => {
                let changes = inputs.changes_since(&old);
                if changes.is_empty() {
                    format!("{reference} was built from other inputs")
                } else {
                    changes.join(", ")
                }
            }
            None => format!("{reference} has no record of its inputs"),
        };
        return Ok(build(reason));
    }
    let reason = match last.and_then(|l| l.components.get(component)) {
        Some(r) => format!(
            "no image of it is left (the last one built, {}, was removed)",
            r.image
        ),
        None => "never built".into(),
    };
    Ok(build(reason))
}

/// Where the context listing of a component's last build is kept.
fn entries_path(config: &Config, component: &str) -> PathBuf {
    config
        .root
        .join(".slipway")
        .join("contexts")
        .join(format!("{component}.json"))
}

/// The context listing of the component's last build (empty when there is none).
fn read_entries(config: &Config, component: &str) -> BTreeMap<String, String> {
    std::fs::read(entries_path(config, component))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Keeps the context listing of each component the run built or found, for the next plan
/// to name the files that changed (best effort: the names are a courtesy).
fn write_entries(config: &Config, plan: &BuildPlan, report: &BuildReport) {
    for c in &plan.components {
        if !report.components.contains_key(&c.name) || c.context_entries.is_empty() {
            continue;
        }
        let map: BTreeMap<&str, &str> = c
            .context_entries
            .iter()
            .map(|(p, h)| (p.as_str(), h.as_str()))
            .collect();
        let path = entries_path(config, &c.name);
        if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec(&map)) {
            let _ = std::fs::create_dir_all(dir);
            let _ = crate::fsutil::write_atomic(&path, &text, None);
        }
    }
}

/// The paths whose entries differ between `old` and `new`: added or changed, and removed
/// (`path (removed)`), in path order. Empty when there is no `old` to compare with.
pub fn changed_files(old: &BTreeMap<String, String>, new: &[(String, String)]) -> Vec<String> {
    if old.is_empty() {
        return Vec::new();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut out: Vec<String> = Vec::new();
    for (path, hash) in new {
        seen.insert(path.as_str());
        if old.get(path) != Some(hash) {
            out.push(path.clone());
        }
    }
    for path in old.keys().filter(|p| !seen.contains(p.as_str())) {
        out.push(format!("{path} (removed)"));
    }
    out.sort();
    out
}

/// Why a component is built, as one word for scripts (`--progress json`), from the reason
/// [`cache_state`] gives people: the first (most telling) change decides.
pub fn reason_code(reason: &str) -> &'static str {
    const CODES: [(&str, &str); 12] = [
        ("never built", "never_built"),
        ("--no-cache", "no_cache"),
        ("slipway's digest scheme changed", "scheme_changed"),
        ("Dockerfile changed", "dockerfile_changed"),
        ("context changed", "context_changed"),
        ("build arg ", "build_arg_changed"),
        ("target changed", "target_changed"),
        ("platform changed", "platform_changed"),
        ("optional build secret ", "build_secret_changed"),
        ("base image ", "base_image_changed"),
        ("no image of it is left", "image_removed"),
        ("", "other_inputs"),
    ];
    CODES
        .iter()
        .find(|(text, _)| reason.starts_with(text))
        .map_or("other_inputs", |(_, code)| code)
}

/// The plan as a table for people, naming the first few changed files.
pub fn render_plan(plan: &BuildPlan) -> String {
    render_plan_with(plan, crate::report::Verbosity::Normal)
}

/// The plan as a table for people; with `Verbosity::Verbose`, every changed file.
pub fn render_plan_with(plan: &BuildPlan, verbosity: crate::report::Verbosity) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "COMPONENT".into(),
        "DOCKERFILE".into(),
        "IMAGE".into(),
        "STATUS".into(),
    ]];
    for c in &plan.components {
        let dockerfile = match &c.stack {
            Some(s) => format!("{s}: {}", c.dockerfile.display()),
            None => c.dockerfile.display().to_string(),
        };
        let status = match &c.cache {
            CacheState::Cached { .. } => "cached".to_string(),
            CacheState::Registry { .. } => "cached (registry)".to_string(),
            CacheState::Build { reason } if c.changed_files.is_empty() => {
                format!("build: {reason}")
            }
            CacheState::Build { reason } => format!(
                "build: {reason}: {}",
                crate::report::shown_files(&c.changed_files, verbosity)
            ),
        };
        rows.push([c.name.clone(), dockerfile, c.image.clone(), status]);
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[i], w = w));
        }
        out.push_str(&r[3]);
        out.push('\n');
    }
    out.push_str("\nimage dates (SOURCE_DATE_EPOCH):\n");
    let w = widths[0];
    for c in &plan.components {
        out.push_str(&format!(
            "  {:<w$}  {}  {}\n",
            c.name,
            c.date.rfc3339(),
            c.date.origin()
        ));
    }
    for c in &plan.components {
        for w in &c.warnings {
            out.push_str(&format!("warning: {}: {w}\n", c.name));
        }
    }
    let undated: Vec<&str> = plan
        .components
        .iter()
        .filter(|c| c.date.source == crate::reproduce::sde::Source::Zero)
        .map(|c| c.name.as_str())
        .collect();
    if !undated.is_empty() {
        out.push_str(&format!(
            "note: {} dated 1970-01-01 so that the same files give the same image on any machine; \
             `docker images` shows such an image as decades old and `docker image prune --filter until=...` \
             removes it: commit the context to git, or set SOURCE_DATE_EPOCH, to date it\n",
            undated.join(", ")
        ));
    }
    if plan.builder == Builder::Legacy {
        out.push_str("warning: the daemon has no BuildKit: builds use the legacy builder\n");
    }
    if let Some(d) = &plan.lock_drift {
        out.push_str(&format!("warning: {d}\n"));
    }
    out
}

/// Plans and builds the selected components; see [`execute`].
pub async fn run_build(
    reporter: Arc<dyn Reporter>,
    config: &Config,
    daemon: &Daemon,
    selection: &[String],
    opts: &BuildOptions,
) -> anyhow::Result<BuildReport> {
    let stacks = Stacks::detect(config);
    let plan_opts = PlanOptions {
        pull: (!opts.no_pull).then(|| reporter.clone()),
        registry: opts.registry,
        locked: opts.locked,
        lazy_bases: !opts.no_cache,
    };
    let plan = plan_pulling(config, daemon, selection, &stacks, plan_opts).await?;
    let built = execute(reporter.clone(), config, daemon, &plan, opts).await?;
    if write_lock_if_absent(config, &plan, selection.is_empty())? {
        reporter.report(Event::Info {
            message: format!("wrote {} (commit it)", crate::pins::FILE),
        });
    }
    Ok(built.report)
}

/// What one component's task ended with.
type TaskResult = (String, anyhow::Result<ImageRecord>);

/// Builds the components of `plan` that are not cached (all of them with `--no-cache`), in
/// parallel, and moves every tag only after its build succeeded. Writes the record of the run
/// to `.slipway/last-build.json` (and `opts.metadata_file`). A failed build is reported as it
/// happens; the others finish unless `opts.fail_fast`; the result is then an error (exit 1).
/// Ctrl-C stops every build and returns [`Fail::interrupted`] with no tag moved.
///
/// This listens for Ctrl-C and SIGTERM itself while builds run ([`crate::interrupt::Signals`]).
/// Before building it untags the temporary tags runs killed outright left
/// ([`crate::leftovers::reap_tags`]).
pub async fn execute(
    reporter: Arc<dyn Reporter>,
    config: &Config,
    daemon: &Daemon,
    plan: &BuildPlan,
    opts: &BuildOptions,
) -> anyhow::Result<Built> {
    let to_build: Vec<&ComponentPlan> = plan
        .components
        .iter()
        .filter(|c| opts.no_cache || !c.is_cached())
        .collect();
    check_before_building(plan, &to_build, reporter.as_ref())?;

    let mut run = Run::default();
    retag_cached(
        daemon,
        plan,
        &to_build,
        opts.pull_found,
        reporter.as_ref(),
        &mut run,
    )
    .await;
    // The reaping runs beside the builds (it never touches a live run's tags), and only after
    // a run that died: listing tags by pattern is slow on a daemon with many images.
    let state_dir = config.root.join(".slipway");
    let reap = reap_tags(daemon, plan, &state_dir, reporter.as_ref());
    let work = async {
        let made = match to_build.is_empty() {
            true => BTreeMap::new(),
            false => {
                let _marker = crate::leftovers::RunMarker::new(&state_dir);
                let log_dir = state_dir.join("logs");
                let reporter = reporter.clone();
                build_all(reporter, daemon, plan, &to_build, opts, &log_dir, &mut run).await?
            }
        };
        if let Some(dir) = &opts.attestations {
            let (report, failures) = (&mut run.report, &mut run.failures);
            let done = attestations::write_all(daemon, plan, &made, report, failures, dir).await;
            if !done.is_empty() {
                reporter.report(Event::Info {
                    message: format!(
                        "SBOM and provenance of {} in {}",
                        done.join(", "),
                        crate::report::shown_relative(dir)
                    ),
                });
            }
        }
        anyhow::Ok(made)
    };
    let ((), made) = tokio::join!(reap, work);
    let made = made?;
    write_records(
        config,
        plan,
        &run.report,
        &run.failures,
        opts,
        reporter.as_ref(),
    )?;
    write_entries(config, plan, &run.report);
    if run.failures.is_empty() {
        let images = handed_on(plan, &run.report, made);
        return Ok(Built {
            report: run.report,
            images,
        });
    }
    Err(failed(run.failures, to_build.len()))
}

/// What a run has so far: the images made or found, and the components that failed.
#[derive(Default)]
struct Run {
    report: BuildReport,
    failures: Vec<(String, anyhow::Error)>,
}

/// Says what the plan found worth saying (files the packer skipped, unused build args: `build`
/// says it too, not only `plan`), and fails on what would stop a build before starting any.
fn check_before_building(
    plan: &BuildPlan,
    to_build: &[&ComponentPlan],
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    if let Some(d) = &plan.lock_drift {
        reporter.report(Event::Warn { message: d.clone() });
    }
    for c in &plan.components {
        for w in &c.warnings {
            reporter.report(Event::Warn {
                message: format!("{}: {w}", c.name),
            });
        }
    }
    for c in to_build {
        if !c.build_secrets.is_empty() && plan.builder == Builder::Legacy {
            return Err(Fail::job(format!(
                "component `{}` has build secrets, which need BuildKit; this daemon has none",
                c.name
            ))
            .hint("use a Docker daemon of version 18.09 or later with BuildKit")
            .into());
        }
        for s in &c.build_secrets {
            secret_source(&c.name, s)?;
        }
    }
    if plan.builder == Builder::Legacy && !to_build.is_empty() {
        reporter.report(Event::Warn {
            message: "the Docker daemon has no BuildKit: building with the legacy builder \
                      (no cache mounts, no build secrets)"
                .into(),
        });
    }
    Ok(())
}

/// Cached components: makes sure every tag points at the image (no build). Those the registry
/// has are recorded with their pinned digest, and pulled first when `pull_found`.
async fn retag_cached(
    daemon: &Daemon,
    plan: &BuildPlan,
    to_build: &[&ComponentPlan],
    pull_found: bool,
    reporter: &dyn Reporter,
    run: &mut Run,
) {
    for c in plan
        .components
        .iter()
        .filter(|c| !to_build.iter().any(|b| b.name == c.name))
    {
        let t0 = Instant::now();
        let (done, outcome) = match &c.cache {
            CacheState::Cached { image_id } => (
                image::finish(&daemon.docker, c, image_id, Outcome::Cached, None, t0).await,
                "cached",
            ),
            CacheState::Registry { digest } => (
                from_registry(daemon, c, digest, pull_found, reporter, t0).await,
                "cached (registry)",
            ),
            CacheState::Build { .. } => continue,
        };
        match done {
            Ok(r) => {
                // `cached`, or `cached` with the reason `registry` (found there, not built).
                reporter.report(match outcome {
                    "cached" => Event::finished(&c.name, "cached"),
                    detail => Event::Finished {
                        task: c.name.clone(),
                        outcome: "cached".into(),
                        reason: Some("registry".into()),
                        detail: Some(detail.into()),
                        changed_files: Vec::new(),
                        bytes_sent: None,
                    },
                });
                run.report.components.insert(c.name.clone(), r);
            }
            Err(e) => {
                reporter.report(Event::failed(&c.name, format!("{e:#}")));
                run.failures.push((c.name.clone(), e));
            }
        }
    }
}

/// The record of an image the registry has under its input-digest tag: pinned by the
/// registry's manifest digest, and not on the daemon (no image ID, no size) unless `pull`,
/// which pulls it by that digest, checks it carries the plan's input digest, and sets its tags
/// on the daemon as a build would (for a load).
async fn from_registry(
    daemon: &Daemon,
    c: &ComponentPlan,
    digest: &str,
    pull: bool,
    reporter: &dyn Reporter,
    t0: Instant,
) -> anyhow::Result<ImageRecord> {
    let pinned = format!("{}@{digest}", c.repository);
    if !pull {
        return Ok(ImageRecord {
            image: c.image.clone(),
            repository: c.repository.clone(),
            tag: c.tag.clone(),
            tags: vec![c.image.clone()],
            image_id: String::new(),
            input_digest: c.input_digest.clone(),
            outcome: Outcome::Registry,
            reason: None,
            duration_ms: millis(t0.elapsed()),
            size: 0,
            pushed: Some(pinned),
            push_error: None,
            attestations: Vec::new(),
        });
    }
    let id = pull_pinned(
        daemon,
        &c.name,
        &pinned,
        &c.image,
        &c.input_digest,
        reporter,
    )
    .await?;
    let mut record = image::finish(&daemon.docker, c, &id, Outcome::Registry, None, t0).await?;
    record.pushed = Some(pinned);
    Ok(record)
}

/// Pulls `pinned` (`REPO@sha256:...`, an image the registry had under its input-digest tag
/// `image`), checks it carries `input_digest` (its label), and names it `image` on the daemon;
/// returns its image ID. For `up` and `load`, which need it on the daemon to load it.
pub async fn pull_pinned(
    daemon: &Daemon,
    component: &str,
    pinned: &str,
    image: &str,
    input_digest: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<String> {
    reporter.report(Event::Started {
        task: component.to_string(),
        what: format!("pull {pinned}"),
        estimate_ms: None,
    });
    // Found by what the registry says it is, not by `pinned`: a daemon that had the image
    // already may not have made that reference.
    let id = crate::push::pull_image(daemon, pinned, component, reporter)
        .await
        .with_context(|| {
            Fail::job(format!(
                "component `{component}`: pulling {pinned} from its registry failed"
            ))
            .hint(
                "check the registry and your access, or build it here: `slipway build --no-cache`",
            )
        })?;
    let found = image_labels(daemon, &id).await?.ok_or_else(|| {
        Fail::job(format!(
            "component `{component}`: {pinned} ({id}) is not on the daemon after pulling it"
        ))
    })?;
    let label = found.labels.get(LABEL_DIGEST).map(String::as_str);
    if label != Some(input_digest) {
        return Err(Fail::job(format!(
            "component `{component}`: {image} in the registry was not built from these inputs (its {LABEL_DIGEST} is {}, expected {input_digest})",
            label.unwrap_or("missing"),
        ))
        .hint(format!("replace it: `slipway build {component} --no-cache --push`"))
        .into());
    }
    tag_as(daemon, &id, image).await?;
    Ok(found.id)
}

/// Untags the temporary tags that runs killed outright left ([`crate::leftovers::reap_tags`]).
async fn reap_tags(
    daemon: &Daemon,
    plan: &BuildPlan,
    state_dir: &std::path::Path,
    reporter: &dyn Reporter,
) {
    let dead = crate::leftovers::dead_runs(state_dir);
    if dead.is_empty() {
        return;
    }
    let repositories: Vec<String> = plan
        .components
        .iter()
        .map(|c| c.repository.clone())
        .collect();
    let Some(reaped) = crate::leftovers::reap_tags(daemon, &repositories).await else {
        return;
    };
    for mark in dead {
        let _ = std::fs::remove_file(mark);
    }
    if !reaped.is_empty() {
        reporter.report(Event::Info {
            message: format!(
                "removed {} temporary tag(s) left by slipway runs that were killed: {}",
                reaped.len(),
                reaped.join(", ")
            ),
        });
    }
}

/// Builds `to_build` in parallel (at most `opts.jobs` at once) into `run`; returns the normal
/// forms the builds made. Ctrl-C (or SIGTERM) stops every build, removes their temporary tags
/// and returns [`Fail::interrupted`].
async fn build_all(
    reporter: Arc<dyn Reporter>,
    daemon: &Daemon,
    plan: &BuildPlan,
    to_build: &[&ComponentPlan],
    opts: &BuildOptions,
    log_dir: &std::path::Path,
    run: &mut Run,
) -> anyhow::Result<BTreeMap<String, NormalImage>> {
    let docker = daemon.long()?;
    let shared = Arc::new(image::Shared {
        docker,
        daemon: daemon.clone(),
        reporter: reporter.clone(),
        app: plan.app.clone(),
        builder: plan.builder,
        no_cache: opts.no_cache,
        normal_forms: NormalForms::new(opts.keep_normal_forms)
            .watching(crate::attest::is_os_file)
            .handing_to(opts.ready.clone()),
        log_dir: log_dir.to_path_buf(),
        cache: opts.cache.clone(),
        cache_from: to_build
            .iter()
            .map(|c| (c.name.clone(), cache::cache_from(&opts.cache, c)))
            .collect(),
    });
    if plan.builder == Builder::BuildKit {
        cache::prepare(daemon, reporter.as_ref(), &opts.cache, to_build).await;
    }
    let jobs = opts.jobs.unwrap_or(to_build.len()).max(1);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set: tokio::task::JoinSet<TaskResult> = tokio::task::JoinSet::new();
    let temps: Vec<String> = to_build.iter().map(|c| image::temp_tag(c)).collect();
    for (c, temp) in to_build.iter().zip(&temps) {
        let c = (*c).clone();
        let temp = temp.clone();
        let shared = shared.clone();
        let semaphore = semaphore.clone();
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let name = c.name.clone();
            let result = image::build_component(&shared, &c, &temp).await;
            let exports = shared.cache.exports() && shared.builder == Builder::BuildKit;
            if result.is_ok() && exports {
                cache::export(&shared, &c).await;
            }
            (name, result)
        });
    }
    let mut signals = crate::interrupt::Signals::new()?;
    let ctrl_c = signals.recv();
    tokio::pin!(ctrl_c);
    // Tell `run` (lib.rs) that Ctrl-C is handled here (with the clean-up below).
    let _handling = crate::interrupt::handling();
    let mut stopped = false;
    loop {
        tokio::select! {
            next = set.join_next() => {
                let Some(joined) = next else { break };
                match joined {
                    Ok((name, Ok(record))) => {
                        run.report.components.insert(name, record);
                    }
                    Ok((name, Err(e))) => {
                        run.failures.push((name, e));
                        if opts.fail_fast && !stopped && !set.is_empty() {
                            stopped = true;
                            reporter.report(Event::Warn {
                                message: "--fail-fast: stopping the other builds".into(),
                            });
                            set.abort_all();
                            crate::interrupt::settle(crate::interrupt::GRACE / 2).await;
                            remove_tags(&shared.docker, &temps).await;
                        }
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => run.failures.push(("?".into(), anyhow::anyhow!("a build task failed: {e}"))),
                }
            }
            _ = &mut ctrl_c => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                // A load of a normal form the daemon had whole names the image when it
                // finishes, listened to or not: wait for it, then untag.
                crate::interrupt::settle(crate::interrupt::GRACE / 2).await;
                // A build cancelled while its image was being exported may have named it.
                remove_tags(&shared.docker, &temps).await;
                reporter.report(Event::Warn {
                    message: "interrupted: every build stopped, no tag moved".into(),
                });
                return Err(Fail::interrupted().into());
            }
        }
    }
    Ok(shared.normal_forms.take())
}

/// The error for a run in which builds failed: `N of M component builds failed`, with the
/// failures' hints; with one failure, its own error under that summary.
fn failed(mut failures: Vec<(String, anyhow::Error)>, to_build: usize) -> anyhow::Error {
    let n = failures.len();
    let total = to_build.max(n);
    let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
    let summary = format!(
        "{n} of {total} component build{} failed: {}",
        if total == 1 { "" } else { "s" },
        names.join(", ")
    );
    // The summary carries the failures' hints (main shows the first Fail's hint).
    let mut hints: Vec<String> = Vec::new();
    for (_, e) in &failures {
        if let (_, Some(h)) = crate::error::exit_and_hint(e) {
            if !hints.contains(&h) {
                hints.push(h);
            }
        }
    }
    let mut fail = Fail::job(summary);
    if !hints.is_empty() {
        fail = fail.hint(hints.join("; "));
    }
    if n == 1 {
        let (_, e) = failures.pop().unwrap_or_else(|| unreachable!());
        return e.context(fail);
    }
    for (name, e) in &failures {
        fail.message.push_str(&format!("\n  {name}: {e:#}"));
    }
    fail.into()
}

/// Per image of the run, what the load needs: a built one's normal form (its diff IDs, and
/// its files when kept), a cached one's diff IDs as the plan inspected them.
fn handed_on(
    plan: &BuildPlan,
    report: &BuildReport,
    mut made: BTreeMap<String, NormalImage>,
) -> Vec<BuiltImage> {
    report
        .components
        .iter()
        .map(|(name, r)| {
            // The load names an image by its config digest (what nodes' containerd calls it);
            // the daemon may call it by its manifest digest (containerd image store).
            let mut image_id = r.image_id.clone();
            let (diff_ids, normal_form) = match made.remove(name) {
                Some(n) if n.daemon_id == r.image_id => {
                    image_id = n.image_id;
                    (Some(n.diff_ids), n.files)
                }
                _ => {
                    let planned = plan.components.iter().find(|c| &c.name == name);
                    let known = planned
                        .filter(|c| matches!(&c.cache, CacheState::Cached { image_id } if *image_id == r.image_id))
                        .map(|c| c.cached_diff_ids.clone())
                        .filter(|d| !d.is_empty());
                    (known, None)
                }
            };
            BuiltImage {
                component: name.clone(),
                reference: r.image.clone(),
                image_id,
                diff_ids,
                normal_form,
            }
        })
        .collect()
}

/// Whether the build secret `name` is set: the variable itself, or `NAME_FILE` naming a file.
fn secret_given(name: &str) -> bool {
    std::env::var_os(name).is_some() || secret_file_var(name).is_some()
}

/// `NAME_FILE`, when set and not empty.
fn secret_file_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(format!("{name}_FILE")).filter(|f| !f.is_empty())
}

/// Where a build secret's value comes from: the environment variable of its name, else the
/// file named by `NAME_FILE` (as container images conventionally take secrets). The value
/// itself is only ever read by bollard's session when BuildKit asks for it.
pub(crate) fn secret_source(
    component: &str,
    name: &str,
) -> anyhow::Result<bollard::grpc::build::SecretSource> {
    use bollard::grpc::build::SecretSource;
    if std::env::var_os(name).is_some() {
        return Ok(SecretSource::Env(name.to_string()));
    }
    if let Some(file) = secret_file_var(name) {
        let path = PathBuf::from(file);
        if !path.is_file() {
            return Err(Fail::usage(format!(
                "component `{component}` needs the build secret {name}: {name}_FILE names {}, which is not a readable file",
                path.display()
            ))
            .hint(format!("point {name}_FILE at the file holding the secret, or export {name}"))
            .into());
        }
        return Ok(SecretSource::File(path));
    }
    Err(Fail::usage(format!(
        "component `{component}` needs the build secret {name}, which is not set in the environment"
    ))
    .hint(format!(
        "export {name} (or {name}_FILE=PATH) before running slipway; the build reads it through \
         a secret mount (RUN --mount=type=secret,id={name}) and it is stored nowhere"
    ))
    .into())
}

/// A build secret's value, for the BuildKit session (read when the build starts, held only in
/// memory while it runs).
pub(crate) fn secret_value(component: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    use bollard::grpc::build::SecretSource;
    match secret_source(component, name)? {
        SecretSource::Env(var) => Ok(std::env::var_os(var)
            .map(std::os::unix::ffi::OsStringExt::into_vec)
            .unwrap_or_default()),
        SecretSource::File(path) => std::fs::read(&path).with_context(|| {
            format!(
                "component `{component}`: reading the build secret {name} from {}",
                path.display()
            )
        }),
    }
}

/// Removes the temporary tags of stopped builds (best effort, briefly: the user is waiting;
/// each removal gives up after a few seconds).
async fn remove_tags(docker: &bollard::Docker, tags: &[String]) {
    futures_util::future::join_all(tags.iter().map(|t| image::remove_tag(docker, t))).await;
}

/// Writes `.slipway/last-build.json` (merged: components not in this run keep their record)
/// and the metadata file.
fn write_records(
    config: &Config,
    plan: &BuildPlan,
    report: &BuildReport,
    failures: &[(String, anyhow::Error)],
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    record::merge_last(config, report, reporter)?;
    if let Some(path) = &opts.metadata_file {
        let mut run = report.clone();
        for (name, e) in failures {
            // What it would have been: the digest and tag, with no image and no tags.
            let planned = plan.components.iter().find(|c| &c.name == name);
            run.components.insert(
                name.clone(),
                ImageRecord {
                    image: planned.map(|c| c.image.clone()).unwrap_or_default(),
                    repository: config.image_repo(name),
                    tag: planned.map(|c| c.tag.clone()).unwrap_or_default(),
                    tags: Vec::new(),
                    image_id: String::new(),
                    input_digest: planned.map(|c| c.input_digest.clone()).unwrap_or_default(),
                    outcome: Outcome::Failed,
                    reason: Some(format!("{e:#}")),
                    duration_ms: 0,
                    size: 0,
                    pushed: None,
                    push_error: None,
                    attestations: Vec::new(),
                },
            );
        }
        record::write(path, &run)
            .with_context(|| format!("writing the metadata file {}", path.display()))?;
    }
    Ok(())
}

/// Milliseconds since `t0`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_pull_hints_at_what_the_daemon_said() {
        let hint = |e: &str| pull_hint(e, "docker.io", "python:3.13", Some("set it"));
        // Offline, or a daemon without DNS or proxy for the registry (the daemon's words).
        let offline = hint(
            "Docker responded with status code 500: Get \"https://registry-1.docker.io/v2/\": \
             dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host",
        );
        assert!(offline.contains("could not reach docker.io"), "{offline}");
        assert!(!offline.contains("docker login"), "{offline}");
        assert!(offline.ends_with("; or set it"), "{offline}");
        // Docker Hub says the same for a name it lacks and for a private one.
        let hub = hint(
            "pull access denied for slipway-test/none, repository does not exist or may require \
             'docker login': denied: requested access to the resource is denied",
        );
        assert!(
            hub.contains("check the name and tag of `python:3.13`"),
            "{hub}"
        );
        let tag = hint("manifest for python:3.13 not found: manifest unknown: manifest unknown");
        assert!(tag.contains("check the name and tag"), "{tag}");
        let private = hint("Head \"https://ghcr.io/v2/o/a/manifests/1\": unauthorized");
        assert!(private.starts_with("log in to docker.io"), "{private}");
        let other = hint("no space left on device");
        assert!(other.contains("docker pull python:3.13"), "{other}");
    }

    fn component(name: &str, stack: Option<&str>, cache: CacheState) -> ComponentPlan {
        let bases = BTreeMap::from([(
            "slipway-test/python:3.11".to_string(),
            format!("sha256:{}", "1".repeat(64)),
        )]);
        let args = BTreeMap::from([(
            "PYTHON_IMAGE".to_string(),
            "slipway-test/python:3.11".to_string(),
        )]);
        let inputs = Inputs::new(
            name.as_bytes(),
            &"2".repeat(64),
            20480,
            &args,
            "production",
            "linux/amd64",
            &bases,
        );
        let input_digest = inputs.digest();
        let tag = input_digest[7..19].to_string();
        ComponentPlan {
            name: name.into(),
            stack: stack.map(String::from),
            dockerfile: format!("dockerfiles/{name}.Dockerfile").into(),
            context: format!("contexts/{name}").into(),
            target: "production".into(),
            build_args: args,
            build_secrets: vec!["PIP_TOKEN".into()],
            base_images: bases,
            context_files: 12,
            context_bytes: 20480,
            inputs,
            image: format!("taskboard/{name}:{tag}"),
            repository: format!("taskboard/{name}"),
            tag,
            input_digest,
            extra_tags: vec![format!("taskboard/{name}:latest")],
            cache,
            changed_files: Vec::new(),
            context_entries: Vec::new(),
            last_build_ms: None,
            warnings: Vec::new(),
            date: crate::reproduce::sde::Sde {
                epoch: 0,
                source: crate::reproduce::sde::Source::Zero,
            },
            dockerfile_path: PathBuf::new(),
            context_dir: PathBuf::new(),
            source_date_epoch: None,
            dockerfile_name: String::new(),
            context_fingerprint: String::new(),
            leave_out: vec![],
            builder: Builder::BuildKit,
            base_layers: vec![],
            cached_diff_ids: vec![],
            pins: BTreeMap::new(),
        }
    }

    fn sample_plan() -> BuildPlan {
        let mut frontend = component(
            "frontend",
            None,
            CacheState::Build {
                reason: "context changed (20.5 kB, was 19.9 kB), build arg NEXT_PUBLIC_URL changed"
                    .into(),
            },
        );
        frontend
            .warnings
            .push("build arg DEBUG is not declared by an ARG in dockerfiles/frontend.Dockerfile; it is not passed".into());
        let mut backend = component(
            "backend",
            Some("python"),
            CacheState::Cached {
                image_id: format!("sha256:{}", "3".repeat(64)),
            },
        );
        backend.date = crate::reproduce::sde::Sde {
            epoch: 1_764_000_000,
            source: crate::reproduce::sde::Source::GitCommit,
        };
        BuildPlan {
            app: "taskboard".into(),
            platform: "linux/amd64".into(),
            builder: Builder::BuildKit,
            components: vec![backend, frontend],
            lock_drift: None,
            pins: BTreeMap::new(),
            lock_exists: false,
        }
    }

    #[test]
    fn changed_files_name_added_changed_and_removed_paths() {
        let old: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("gone", "3")]
            .iter()
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect();
        let new: Vec<(String, String)> = [("a", "1"), ("b", "9"), ("new", "4")]
            .iter()
            .map(|(p, h)| (p.to_string(), h.to_string()))
            .collect();
        assert_eq!(changed_files(&old, &new), ["b", "gone (removed)", "new"]);
        assert!(changed_files(&BTreeMap::new(), &new).is_empty());
        assert_eq!(
            reason_code("context changed (1 kB), Dockerfile changed"),
            "context_changed"
        );
        assert_eq!(reason_code("never built"), "never_built");
        assert_eq!(
            reason_code("x:1 has no record of its inputs"),
            "other_inputs"
        );
    }

    #[test]
    fn plan_table() {
        insta::assert_snapshot!(render_plan(&sample_plan()));
    }

    #[test]
    fn an_image_in_the_registry_is_cached_there() {
        let digest = format!("sha256:{}", "4".repeat(64));
        let mut plan = sample_plan();
        plan.components[1].cache = CacheState::Registry {
            digest: digest.clone(),
        };
        assert!(plan.components[1].is_cached());
        let table = render_plan(&plan);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("frontend") && l.ends_with("cached (registry)")),
            "{table}"
        );
        let json = serde_json::to_value(&plan.components[1].cache).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "registry", "digest": digest})
        );
    }

    #[test]
    fn plan_json() {
        insta::assert_snapshot!(serde_json::to_string_pretty(&sample_plan()).unwrap());
    }
}
