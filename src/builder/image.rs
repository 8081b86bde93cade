//! Building one component's image on the daemon, and moving its tags once it exists.
//!
//! The normal path is `POST /build` through bollard with BuildKit and a session: the context
//! tar streams from the packer straight into the request body, and the build's status stream
//! is read item by item ([`super::stream::Progress`]).
//!
//! Every build is named with a temporary tag of its own (`PREFIX/NAME:slipway-build-...`),
//! never with a tag that exists: only once the build succeeded are the digest tag and the
//! extra tags pointed at the image, and then the temporary tag is removed. So a failed,
//! cancelled or interrupted build moves nothing, and the new image always has a name (an
//! unnamed image could be pruned, or deleted by someone removing an identical image's last
//! tag, before slipway tags it).
//!
//! A component with build secrets takes the other path: BuildKit's gRPC control API through
//! the daemon's `/session` and `/grpc` endpoints (bollard's `Moby` driver), the only one on
//! which BuildKit can ask slipway for a secret. It costs: the context is held in memory and the
//! daemon sends no progress, so it is used only where secrets are declared.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, TagImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::stream::Progress;
use super::{millis, Builder, CacheState, ComponentPlan};
use crate::docker::Daemon;
use crate::error::Fail;
use crate::record::{ImageRecord, Outcome};
use crate::report::{Event, Reporter};

/// What every build task shares.
pub(crate) struct Shared {
    /// A client with the long timeout builds need.
    pub docker: Docker,
    /// The daemon as the run connected to it (short request bound, its facts asked once).
    pub daemon: Daemon,
    pub reporter: std::sync::Arc<dyn Reporter>,
    pub app: String,
    pub builder: Builder,
    pub no_cache: bool,
    /// The normal forms this run makes, handed on to the run's result.
    pub normal_forms: crate::reproduce::normalize::NormalForms,
    /// Where each component's build log goes (`.slipway/logs`).
    pub log_dir: std::path::PathBuf,
    /// `--cache-from` / `--cache-to` ([`crate::cache`]).
    pub cache: crate::cache::CacheOptions,
    /// Per component, the images its builds name in `cachefrom` (from the build cache's
    /// options: see the builder's `cache` module).
    pub cache_from: HashMap<String, Vec<String>>,
}

/// What one `POST /build` makes: the component's image (its target, under the temporary tag,
/// progress reported) or, for the build cache, one stage as an inline-cache image (quietly:
/// every step of it was just built).
#[derive(Clone, Copy)]
pub(crate) struct Request<'a> {
    pub tag: &'a str,
    pub target: &'a str,
    pub inline_cache: bool,
    pub quiet: bool,
    /// Builds without the daemon's build cache for this request alone (`--no-cache` applies
    /// to every request).
    pub no_cache: bool,
}

impl<'a> Request<'a> {
    fn image(c: &'a ComponentPlan, temp: &'a str) -> Self {
        Request {
            tag: temp,
            target: &c.target,
            inline_cache: false,
            quiet: false,
            no_cache: false,
        }
    }
}

/// A failed build: the error, the step that failed (with its command) and the end of its log.
struct Failure {
    error: anyhow::Error,
    step: Option<String>,
    log_tail: Vec<String>,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            error,
            step: None,
            log_tail: Vec::new(),
        }
    }
}

/// Builds one component, tags it, and reports `Started` ... `Finished` or `Failed`.
/// The temporary tag a build of `c` is named with.
pub(crate) fn temp_tag(c: &ComponentPlan) -> String {
    format!("{}:slipway-build-{}", c.repository, session_id(&c.name))
}

pub(crate) async fn build_component(
    shared: &Shared,
    c: &ComponentPlan,
    temp: &str,
) -> anyhow::Result<ImageRecord> {
    let t0 = Instant::now();
    shared.reporter.report(Event::Started {
        task: c.name.clone(),
        what: "build".into(),
        estimate_ms: c.last_build_ms,
    });
    let reason = match &c.cache {
        CacheState::Build { reason } => reason.clone(),
        CacheState::Cached { .. } | CacheState::Registry { .. } => "--no-cache".into(),
    };
    let mut log = Vec::new();
    let mut built = build_once(shared, c, Request::image(c, temp), &mut log).await;
    if let Some(why) = built.as_ref().err().and_then(transient) {
        built = build_again(shared, c, temp, &mut log, why, false).await;
    }
    if built.as_ref().err().is_some_and(cache_lost_a_layer) {
        let why = "the daemon's build cache names a layer its image store no longer has (a \
                   Docker bug, moby/moby#41595; `docker builder prune` clears such entries)";
        built = build_again(shared, c, temp, &mut log, why, true).await;
    }
    // Reproducible images (src/reproduce): the image tagged and recorded is the normal form
    // of what was built (build times clamped to SOURCE_DATE_EPOCH), so the same inputs give
    // the same image ID on every run and every daemon.
    let built = match built {
        Ok(raw) => {
            let mut normal = normalise(shared, c, &raw, temp).await;
            // Another run that built the same image at the same moment (the same inputs in
            // another project) removed it once it had normalised its own: build it again.
            if normal.is_err() && shared.docker.inspect_image(&raw).await.is_err() {
                shared.reporter.report(Event::Log {
                    task: c.name.clone(),
                    line: "the image being normalised was removed meanwhile (another run built \
                           the same image and removed it); building again from the cache"
                        .into(),
                });
                log.push("# the image was removed while normalising it; built again".into());
                normal = match build_once(shared, c, Request::image(c, temp), &mut log).await {
                    Ok(raw) => normalise(shared, c, &raw, temp).await,
                    Err(f) => Err(f),
                };
            }
            normal
        }
        Err(f) => Err(f),
    };
    let result = match built {
        Ok(image_id) => finish(
            &shared.docker,
            c,
            &image_id,
            Outcome::Built,
            Some(reason.clone()),
            t0,
        )
        .await
        .map_err(Failure::from),
        Err(f) => Err(f),
    };
    // After the real tags are set (or nothing was built): untagging never deletes the image.
    remove_tag(&shared.docker, temp).await;
    let log_file = write_log(shared, c, log, result.as_ref().err());
    match result {
        Ok(record) => {
            shared.normal_forms.built(&c.name);
            shared.reporter.report(Event::Finished {
                task: c.name.clone(),
                outcome: "built".into(),
                reason: Some(super::reason_code(&reason).into()),
                detail: Some(reason.clone()),
                changed_files: c.changed_files.clone(),
                bytes_sent: None,
            });
            Ok(record)
        }
        Err(f) => {
            shared.reporter.report(Event::Failed {
                task: c.name.clone(),
                error: format!("{:#}", f.error),
                step: f.step.clone(),
                log_tail: f.log_tail,
                log_file: log_file.clone(),
            });
            let hint = log_file.map(|p| format!("the whole build log of `{}` is in {p}", c.name));
            Err(match (&f.step, hint) {
                (Some(step), hint) => {
                    let fail = Fail::job(format!(
                        "step {} of `{}` failed",
                        super::stream::step_label(step),
                        c.name
                    ));
                    f.error.context(match hint {
                        Some(h) => fail.hint(h),
                        None => fail,
                    })
                }
                (None, _) => f.error,
            })
        }
    }
}

async fn build_once(
    shared: &Shared,
    c: &ComponentPlan,
    request: Request<'_>,
    log: &mut Vec<String>,
) -> Result<String, Failure> {
    match shared.builder {
        Builder::BuildKit => build_session(shared, c, request, log).await,
        Builder::Legacy => build_streaming(shared, c, request, log).await,
    }
}

/// The build once more after a failure that says `why` (see [`transient`],
/// [`cache_lost_a_layer`]): from the cache, or without it.
async fn build_again(
    shared: &Shared,
    c: &ComponentPlan,
    temp: &str,
    log: &mut Vec<String>,
    why: &str,
    no_cache: bool,
) -> Result<String, Failure> {
    let how = if no_cache { " without the cache" } else { "" };
    shared.reporter.report(Event::Log {
        task: c.name.clone(),
        line: format!(
            "{why}; building again {}",
            if no_cache {
                "without the cache"
            } else {
                "from the cache"
            }
        ),
    });
    log.push(format!("# {why}; built again{how}"));
    let request = Request {
        no_cache,
        ..Request::image(c, temp)
    };
    build_once(shared, c, request, log).await
}

/// Normalises the image `raw` just built (see [`crate::reproduce::normalize::after_build`]).
async fn normalise(
    shared: &Shared,
    c: &ComponentPlan,
    raw: &str,
    temp: &str,
) -> Result<String, Failure> {
    crate::reproduce::normalize::after_build(
        &shared.daemon,
        shared.reporter.as_ref(),
        &c.name,
        raw,
        c.source_date_epoch.unwrap_or(0),
        temp,
        &c.base_layers,
        &shared.normal_forms,
    )
    .await
    .map_err(Failure::from)
}

/// Why a failed build is worth one more try, when it failed for a reason outside the build
/// itself that the same build again (from the cache, so only the failed step runs again)
/// does not meet: `None` for every other failure.
fn transient(f: &Failure) -> Option<&'static str> {
    if lost_in_export(f) {
        Some(
            "the daemon lost the image while exporting it (another client removed the same \
             image at that moment)",
        )
    } else if runtime_did_not_start(f) {
        Some(
            "the container runtime could not start the step's process (runc's init ended \
             before its setup: the host was short of memory or starting many containers); \
             the step's command never ran",
        )
    } else {
        None
    }
}

/// Whether a `RUN` step failed because runc could not start its process
/// ([`crate::docker::runtime_did_not_start`]). BuildKit 0.8 logs runc's words as the step's
/// output and fails it with `exit code: 1`; later versions put them in the error.
fn runtime_did_not_start(f: &Failure) -> bool {
    let error = format!("{:#}", f.error);
    std::iter::once(error.as_str())
        .chain(f.log_tail.iter().map(String::as_str))
        .any(crate::docker::runtime_did_not_start)
}

/// The error of a build that failed at BuildKit's export, in words; `None` for a failure at
/// any other step.
fn export_error(f: &Failure) -> Option<String> {
    f.step
        .as_deref()
        .is_some_and(|s| s.contains("exporting to image"))
        .then(|| format!("{:#}", f.error))
}

/// Whether BuildKit's export failed because a cached step's layer is gone from the daemon's
/// image store (Docker 20.10: the build cache keeps naming it; every build from that cache
/// fails the same way until the cache entry goes).
fn cache_lost_a_layer(f: &Failure) -> bool {
    export_error(f).is_some_and(|e| e.contains("layer does not exist"))
}

/// Whether a build failed because the image it was exporting vanished from the daemon's image
/// store: the same content built by another client (another slipway, another CI job on a shared
/// daemon) gives the same image ID, and that client removed it between this export's create and
/// tag. Nothing of the build is wrong; the same build again (from the cache) succeeds.
fn lost_in_export(f: &Failure) -> bool {
    export_error(f).is_some_and(|e| {
        e.contains("failed to get digest") && e.contains("no such file or directory")
    })
}

/// Writes the build's whole log to `.slipway/logs/COMPONENT.log` (atomically; build secrets
/// were hidden as the lines arrived) and returns the path as people should read it, or
/// `None` when it could not be written (a warning says why: the build's own result matters
/// more).
fn write_log(
    shared: &Shared,
    c: &ComponentPlan,
    lines: Vec<String>,
    failure: Option<&Failure>,
) -> Option<String> {
    let mut text = format!("# slipway: build of `{}` as {}\n", c.name, c.image);
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str(&match failure {
        Some(f) => match &f.step {
            Some(step) => format!("# failed at {step}: {:#}\n", f.error),
            None => format!("# failed: {:#}\n", f.error),
        },
        None => "# built\n".to_string(),
    });
    let path = shared.log_dir.join(format!("{}.log", c.name));
    let written = std::fs::create_dir_all(&shared.log_dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| crate::fsutil::write_atomic(&path, text.as_bytes(), None));
    match written {
        Ok(_) => Some(crate::report::shown_relative(&path)),
        Err(e) => {
            shared.reporter.report(Event::Warn {
                message: format!("could not write the build log {}: {e:#}", path.display()),
            });
            None
        }
    }
}

/// Points the digest tag and every extra tag at `image_id` and returns the record.
pub(crate) async fn finish(
    docker: &Docker,
    c: &ComponentPlan,
    image_id: &str,
    outcome: Outcome,
    reason: Option<String>,
    t0: Instant,
) -> anyhow::Result<ImageRecord> {
    let mut tags = vec![c.image.clone()];
    tags.extend(c.extra_tags.iter().cloned());
    for reference in &tags {
        let current = docker
            .inspect_image(reference)
            .await
            .ok()
            .and_then(|i| i.id);
        if current.as_deref() == Some(image_id) {
            continue;
        }
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        docker
            .tag_image(
                image_id,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(repo)
                        .tag(tag)
                        .build(),
                ),
            )
            .await
            .with_context(|| {
                format!("component `{}`: tagging {image_id} as {reference}", c.name)
            })?;
    }
    let size = docker
        .inspect_image(image_id)
        .await
        .with_context(|| format!("component `{}`: inspecting its image {image_id}", c.name))?
        .size
        .unwrap_or(0);
    Ok(ImageRecord {
        image: c.image.clone(),
        repository: c.repository.clone(),
        tag: c.tag.clone(),
        tags,
        image_id: image_id.to_string(),
        input_digest: c.input_digest.clone(),
        outcome,
        reason,
        duration_ms: millis(t0.elapsed()),
        size: u64::try_from(size).unwrap_or(0),
        pushed: None,
        push_error: None,
        attestations: Vec::new(),
    })
}

/// A session ID no other build uses.
fn session_id(component: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("slipway-{component}-{}-{nanos:x}", std::process::id())
}

/// The error for a connection to the daemon that broke during a build.
fn connection_lost(
    shared: &Shared,
    c: &ComponentPlan,
    step: Option<&str>,
    cause: impl std::fmt::Display,
) -> anyhow::Error {
    let at = step.map(|s| format!(" at step `{s}`")).unwrap_or_default();
    anyhow::anyhow!("{cause}").context(
        Fail::job(format!(
            "lost the Docker daemon at {} while building `{}`{at}; no tag was moved",
            shared.daemon.endpoint.host, c.name
        ))
        .hint(format!(
            "run the build again once the daemon is back; {}",
            crate::docker::start_hint(&shared.daemon.endpoint)
        )),
    )
}

/// Builds with `POST /build` on the BuildKit session: the context and the Dockerfile are
/// session locals the daemon's BuildKit fetches (only the files it lacks from the last build
/// of this context), build secrets come from the same session; the request has no body.
/// Returns the image ID.
async fn build_session(
    shared: &Shared,
    c: &ComponentPlan,
    request: Request<'_>,
    log: &mut Vec<String>,
) -> Result<String, Failure> {
    use crate::docker::session::{Providers, Session};

    let spec = c.context_spec();
    let (context_dir, dockerfile_dir, dockerfile_name) =
        tokio::task::spawn_blocking(move || crate::context::locals(&spec))
            .await
            .context("the context task stopped")?
            .context("packing the context")?;
    let mut providers = Providers {
        credentials: Some(std::sync::Arc::new(|host: &str| {
            let creds = crate::push::credentials(host).ok().flatten()?;
            let user = creds.username.unwrap_or_default();
            let secret = creds.password.or(creds.identitytoken).unwrap_or_default();
            Some((user, secret))
        })),
        ..Providers::default()
    };
    providers
        .locals
        .insert("context".into(), std::sync::Arc::new(context_dir));
    providers
        .locals
        .insert("dockerfile".into(), std::sync::Arc::new(dockerfile_dir));
    for s in &c.build_secrets {
        providers
            .secrets
            .insert(s.clone(), super::secret_value(&c.name, s)?);
    }
    let id = session_id(&c.name);
    let session = Session::open(
        &shared.daemon.endpoint,
        &id,
        &c.name,
        &shared_key(c),
        providers,
    )
    .await
    .map_err(|e| connection_lost(shared, c, None, format!("{e:#}")))?;

    let options = build_options(shared, c, request, &dockerfile_name)
        .version(BuilderVersion::BuilderBuildKit)
        .session(session.id())
        .remote("client-session");
    let stream = crate::docker::session::build(&shared.daemon.endpoint, &options.build());
    let (progress, failure) = follow(shared, c, stream, log, request.quiet).await?;
    let failed = progress.failed_step();
    // The file sync's own error (a file that vanished or cannot be read) is the real cause
    // of a failed "load build context" step.
    let sync_error = session.transfers().error.clone();
    if let Some(failure) = failure {
        return Err(build_failure(shared, c, failure, failed, sync_error));
    }
    if let Some(e) = sync_error {
        return Err(anyhow::anyhow!("sending the context: {e}").into());
    }
    let sent = session.transfers().fingerprints.get("context").cloned();
    drop(session);
    if let Some(sent) = sent {
        check_context(c, &sent, &c.context_fingerprint)?;
    }
    image_id(shared, c, &progress, failed)
}

/// Builds `stage` of `c` as an image with inline cache, tagged `tag`, on the session path
/// and without progress (the build cache's stage images, which the builder's `cache` module
/// writes).
pub(crate) async fn build_stage(
    shared: &Shared,
    c: &ComponentPlan,
    stage: &str,
    tag: &str,
) -> anyhow::Result<()> {
    let request = Request {
        tag,
        target: stage,
        inline_cache: true,
        quiet: true,
        no_cache: false,
    };
    match build_session(shared, c, request, &mut Vec::new()).await {
        Ok(_) => Ok(()),
        Err(f) => Err(match f.step {
            Some(step) => f
                .error
                .context(format!("step {} failed", super::stream::step_label(&step))),
            None => f.error,
        }),
    }
}

/// What every `POST /build` of `c` asks, whichever builder runs it.
fn build_options(
    shared: &Shared,
    c: &ComponentPlan,
    request: Request<'_>,
    dockerfile: &str,
) -> BuildImageOptionsBuilder {
    let mut args: HashMap<String, String> = c.build_args.clone().into_iter().collect();
    if request.inline_cache {
        // moby turns this build arg into BuildKit's inline cache exporter; it is no ARG of the
        // Dockerfile and leaves no trace in the image but the cache metadata.
        args.insert("BUILDKIT_INLINE_CACHE".into(), "1".into());
    }
    let labels: HashMap<String, String> = c.labels(&shared.app).into_iter().collect();
    let options = BuildImageOptionsBuilder::default();
    let options = match shared.cache_from.get(&c.name) {
        Some(from) if !from.is_empty() => options.cachefrom(from),
        _ => options,
    };
    options
        .t(request.tag)
        .dockerfile(dockerfile)
        .target(request.target)
        .buildargs(&args)
        .labels(&labels)
        .nocache(shared.no_cache || request.no_cache)
        .rm(true)
        .forcerm(true)
}

/// The key BuildKit keeps this context's last transfer under: one per context directory and
/// component, so a rebuild sends only what changed.
fn shared_key(c: &ComponentPlan) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(c.context_dir.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(c.name.as_bytes());
    format!("slipway-{}", &hex::encode(h.finalize())[..24])
}

/// How long a build may go without a word from the daemon: `SLIPWAY_BUILD_IDLE_TIMEOUT`
/// (seconds), default 15 minutes (a step that compiles for long in silence sends nothing).
pub(crate) fn build_idle_timeout() -> std::time::Duration {
    std::env::var("SLIPWAY_BUILD_IDLE_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(
            std::time::Duration::from_secs(900),
            std::time::Duration::from_secs,
        )
}

/// How long the daemon may take to answer `POST /build` at all (response headers and the
/// first status; BuildKit sends one as soon as it starts).
const FIRST_ANSWER: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a build's stream may be silent before slipway asks the daemon whether it is there.
const PROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// How long that question may go unanswered before the daemon counts as lost.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the daemon did not answer `GET /_ping` (within [`PROBE_TIMEOUT`]); `None` when it did.
async fn unanswered_ping(docker: &bollard::Docker) -> Option<String> {
    match tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("it does not answer a ping: {e}")),
        Err(_) => Some(format!(
            "it did not answer a ping within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// The error for a daemon that went quiet during a build.
fn stalled(
    shared: &Shared,
    c: &ComponentPlan,
    step: Option<&str>,
    waited: std::time::Duration,
    first: bool,
) -> anyhow::Error {
    let what = match (first, step) {
        (true, _) => "did not answer `POST /build`".to_string(),
        (false, Some(step)) => format!("sent nothing about `POST /build` at step `{step}`"),
        (false, None) => "sent nothing about `POST /build`".to_string(),
    };
    Fail::job(format!(
        "the Docker daemon at {} {what} of `{}` for {}s: stopped waiting; no tag was moved",
        shared.daemon.endpoint.host,
        c.name,
        waited.as_secs()
    ))
    .hint(format!(
        "check that the daemon answers (`docker -H {} info`), its free disk and its log \
         (`journalctl -u docker`); a step that runs silently for longer needs \
         SLIPWAY_BUILD_IDLE_TIMEOUT=SECONDS (now {})",
        shared.daemon.endpoint.host,
        build_idle_timeout().as_secs()
    ))
    .into()
}

/// Reads a build's status stream to its end, reporting progress and keeping every step and
/// line in `log`; returns where the build stands and the error that ended the stream, if any.
/// Build secrets' values never get through: they read `***`. A daemon that does not answer within
/// [`FIRST_ANSWER`], or then goes quiet for [`build_idle_timeout`], is an error naming it.
async fn follow(
    shared: &Shared,
    c: &ComponentPlan,
    mut stream: impl futures_util::Stream<Item = Result<bollard::models::BuildInfo, DockerError>>
        + Unpin,
    log: &mut Vec<String>,
    quiet: bool,
) -> Result<(Progress, Option<DockerError>), Failure> {
    let secrets = c
        .build_secrets
        .iter()
        .filter_map(|s| super::secret_value(&c.name, s).ok())
        .map(|v| String::from_utf8_lossy(&v).trim().to_string())
        .filter(|v| v.len() >= 4)
        .collect();
    let mut progress = Progress::new(&c.name).hiding(secrets);
    let mut events = Vec::new();
    let idle = build_idle_timeout();
    let mut first = true;
    loop {
        let bound = if first { idle.min(FIRST_ANSWER) } else { idle };
        let mut silent = std::time::Duration::ZERO;
        let next = loop {
            let wait = PROBE_AFTER.min(bound - silent);
            if let Ok(next) = tokio::time::timeout(wait, stream.next()).await {
                break next;
            }
            silent += wait;
            if silent >= bound {
                let failed = progress.failed_step();
                return Err(Failure {
                    error: stalled(shared, c, failed.step.as_deref(), bound, first),
                    step: None,
                    log_tail: failed.log_tail,
                });
            }
            // A daemon that died without closing the connection (its host or its container
            // gone) leaves the stream silent: asked on another connection, it does not answer.
            tokio::select! {
                next = stream.next() => break next,
                gone = unanswered_ping(&shared.daemon.docker) => {
                    if let Some(cause) = gone {
                        let failed = progress.failed_step();
                        return Err(Failure {
                            error: connection_lost(shared, c, failed.step.as_deref(), cause),
                            step: None,
                            log_tail: failed.log_tail,
                        });
                    }
                }
            }
        };
        first = false;
        let Some(item) = next else { break };
        match item {
            Ok(info) => {
                progress.on_item(info, &mut events);
                for e in events.drain(..) {
                    log.extend(crate::report::log_file_line(&e));
                    if !quiet {
                        shared.reporter.report(e);
                    }
                }
            }
            Err(e) => return Ok((progress, Some(e))),
        }
    }
    Ok((progress, None))
}

/// The error for a build stream that ended with `failure`.
fn build_failure(
    shared: &Shared,
    c: &ComponentPlan,
    failure: DockerError,
    failed: super::stream::FailedStep,
    cause: Option<String>,
) -> Failure {
    let said = match &failure {
        DockerError::DockerStreamError { error } => Some(error.as_str()),
        DockerError::DockerResponseServerError { message, .. } => Some(message.as_str()),
        _ => None,
    };
    if let Some((line, what)) = said.and_then(super::stream::dockerfile_error) {
        let path = crate::report::shown_path(&c.dockerfile);
        let fail = Fail::job(format!("{path}:{line}: {what}"))
            .hint(format!("fix line {line} of {path} and build again"));
        return anyhow::Error::from(fail).into();
    }
    match failure {
        DockerError::DockerStreamError { error } => {
            // The step's command is shown once, with the step; BuildKit's error repeats it.
            let error = match (&failed.step, cause) {
                (_, Some(cause)) => anyhow::anyhow!("sending the context: {cause}"),
                (Some(_), None) => anyhow::anyhow!("{}", super::stream::without_command(&error)),
                (None, None) => anyhow::anyhow!("the build failed: {error}"),
            };
            Failure {
                error,
                step: failed.step,
                log_tail: failed.log_tail,
            }
        }
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => anyhow::anyhow!("the daemon refused the build (HTTP {status_code}): {message}").into(),
        other => match cause {
            Some(cause) => anyhow::anyhow!("sending the context: {cause}").into(),
            None => Failure {
                error: connection_lost(shared, c, failed.step.as_deref(), other),
                step: None,
                log_tail: failed.log_tail,
            },
        },
    }
}

/// The image ID the build reported.
fn image_id(
    shared: &Shared,
    c: &ComponentPlan,
    progress: &Progress,
    failed: super::stream::FailedStep,
) -> Result<String, Failure> {
    match progress.image_id() {
        Some(id) => Ok(id.to_string()),
        None => Err(Failure {
            error: connection_lost(
                shared,
                c,
                failed.step.as_deref(),
                "the build stream ended without an image ID",
            ),
            step: None,
            log_tail: failed.log_tail,
        }),
    }
}

/// Builds with the classic builder (a daemon without BuildKit): `POST /build` with the context
/// tar streamed as the request body. Returns the image ID.
async fn build_streaming(
    shared: &Shared,
    c: &ComponentPlan,
    request: Request<'_>,
    log: &mut Vec<String>,
) -> Result<String, Failure> {
    let (body, packer) = crate::context::pack_stream(c.context_spec());
    let options =
        build_options(shared, c, request, &c.dockerfile_name).version(BuilderVersion::BuilderV1);
    let stream =
        shared
            .docker
            .build_image(options.build(), None, Some(bollard::body_try_stream(body)));
    let (progress, failure) = follow(shared, c, stream, log, false).await?;
    // Dropping the request (done by now) stops the packer if it is still sending.
    let packed = packer.await;
    let failed = progress.failed_step();
    if let Some(failure) = failure {
        // The packer's own error (a file that vanished) explains a broken upload best.
        let cause = match &packed {
            Ok(Err(e)) => Some(format!("{e:#}")),
            _ => None,
        };
        return Err(build_failure(shared, c, failure, failed, cause));
    }
    let packed = packed
        .context("the context packer stopped")?
        .context("packing the context")?;
    check_context(c, &packed.sha256, &c.inputs.context)?;
    image_id(shared, c, &progress, failed)
}

/// The context sent must be the one the digest was computed from, or the tag would lie.
fn check_context(c: &ComponentPlan, sent: &str, planned: &str) -> anyhow::Result<()> {
    if sent != planned {
        return Err(Fail::job(format!(
            "the context of `{}` ({}) changed while it was being built; no tag was moved",
            c.name,
            c.context.display()
        ))
        .hint("run the build again once the files stop changing")
        .into());
    }
    Ok(())
}

/// Removes the tag `reference` (never the image), giving up after a few seconds: a daemon
/// lost during the build does not answer, and a temporary tag left behind is reaped by the
/// next run.
pub(crate) async fn remove_tag(docker: &Docker, reference: &str) {
    let untag = crate::docker::images::untag(docker, reference);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), untag).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(step: &str, error: &str) -> Failure {
        Failure {
            error: anyhow::anyhow!("{error}"),
            step: Some(step.to_string()),
            log_tail: Vec::new(),
        }
    }

    #[test]
    fn only_an_export_that_lost_its_image_is_built_again() {
        // As Docker 20.10 words it when a concurrent removal wins.
        let lost = "failed to get digest sha256:50efd7d6e78c: open /var/lib/docker/image/overlay2/\
                    imagedb/content/sha256/50efd7d6e78c: no such file or directory";
        assert!(lost_in_export(&failure("exporting to image", lost)));
        assert!(!lost_in_export(&failure(
            "[2/2] COPY index.html /www/",
            lost
        )));
        assert!(!lost_in_export(&failure(
            "exporting to image",
            "no space left on device"
        )));
    }

    #[test]
    fn an_export_whose_cached_layer_is_gone_is_built_again_without_the_cache() {
        // Docker 20.10, every build from the broken cache entry (moby/moby#41595).
        let gone = "layer does not exist";
        assert!(cache_lost_a_layer(&failure("exporting to image", gone)));
        // A retry from the cache would meet the same entry.
        assert!(transient(&failure("exporting to image", gone)).is_none());
        assert!(!cache_lost_a_layer(&failure(
            "[2/3] RUN ls /layer",
            "layer does not exist"
        )));
        assert!(!cache_lost_a_layer(&failure(
            "exporting to image",
            "no space left on device"
        )));
    }

    #[test]
    fn a_step_whose_process_the_runtime_could_not_start_is_built_again() {
        let step = "[deps 1/3] RUN python3 -m venv --without-pip /venv";
        // Docker 20.10 (BuildKit 0.8): runc's words are the step's log, the error its exit.
        let mut logged = failure(step, "exit code: 1");
        logged.log_tail = vec![
            "runc run failed: unable to start container process: waiting \
                                for init preliminary setup: read init-p: connection reset by peer"
                .into(),
        ];
        assert!(transient(&logged).is_some());
        // Later BuildKit: in the error itself.
        let in_error = failure(
            step,
            "failed to create shim task: OCI runtime create failed: runc create failed: unable \
             to start container process: process_linux.go:105: possibly OOM-killed caused: read \
             init-p: connection reset by peer: unknown",
        );
        assert!(transient(&in_error).is_some());
        // The Dockerfile's own failures are not tried again.
        let missing = failure(
            step,
            "runc run failed: unable to start container process: exec: \"python3\": executable \
             file not found in $PATH",
        );
        assert!(transient(&missing).is_none());
        assert!(transient(&failure(step, "exit code: 1")).is_none());
    }
}
