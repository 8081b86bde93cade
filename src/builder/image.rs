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
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};

use super::stream::Progress;
use super::{millis, Builder, CacheState, ComponentPlan};
use crate::docker::Endpoint;
use crate::error::Fail;
use crate::record::{ImageRecord, Outcome};
use crate::report::{Event, Reporter};

/// What every build task shares.
pub(crate) struct Shared {
    /// A client with the long timeout builds need.
    pub docker: Docker,
    pub endpoint: Endpoint,
    pub reporter: std::sync::Arc<dyn Reporter>,
    pub app: String,
    pub builder: Builder,
    pub no_cache: bool,
    /// The normal forms this run makes, handed on to the run's result.
    pub normal_forms: crate::reproduce::normalize::NormalForms,
}

/// A failed build: the error, and the end of the failing step's log.
struct Failure {
    error: anyhow::Error,
    log_tail: Vec<String>,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            error,
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
    });
    let reason = match &c.cache {
        CacheState::Build { reason } => reason.clone(),
        CacheState::Cached { .. } => "--no-cache".into(),
    };
    let built = if c.build_secrets.is_empty() {
        build_streaming(shared, c, temp).await
    } else {
        build_with_secrets(shared, c, temp).await
    };
    // Reproducible images (src/reproduce): the image tagged and recorded is the normal form
    // of what was built (build times clamped to SOURCE_DATE_EPOCH), so the same inputs give
    // the same image ID on every run and every daemon.
    let built = match built {
        Ok(raw) => {
            let daemon = crate::docker::Daemon {
                docker: shared.docker.clone(),
                endpoint: shared.endpoint.clone(),
            };
            let sde = c.source_date_epoch.unwrap_or(0);
            crate::reproduce::normalize::after_build(
                &daemon,
                shared.reporter.as_ref(),
                &c.name,
                &raw,
                sde,
                temp,
                &c.base_layers,
                &shared.normal_forms,
            )
            .await
            .map_err(Failure::from)
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
    match result {
        Ok(record) => {
            shared.reporter.report(Event::Finished {
                task: c.name.clone(),
                outcome: format!("built, {reason}"),
            });
            Ok(record)
        }
        Err(f) => {
            shared.reporter.report(Event::Failed {
                task: c.name.clone(),
                error: format!("{:#}", f.error),
                log_tail: f.log_tail,
            });
            Err(f.error)
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
            shared.endpoint.host, c.name
        ))
        .hint(format!(
            "run the build again once the daemon is back; {}",
            crate::docker::start_hint(&shared.endpoint)
        )),
    )
}

/// Builds with `POST /build`, streaming the context; returns the image ID.
async fn build_streaming(
    shared: &Shared,
    c: &ComponentPlan,
    temp: &str,
) -> Result<String, Failure> {
    let (body, packer) = crate::context::pack_stream(c.context_spec());
    let args: HashMap<String, String> = c.build_args.clone().into_iter().collect();
    let labels: HashMap<String, String> = c.labels(&shared.app).into_iter().collect();
    let mut options = BuildImageOptionsBuilder::default()
        .t(temp)
        .dockerfile(&c.dockerfile_name)
        .target(&c.target)
        .buildargs(&args)
        .labels(&labels)
        .nocache(shared.no_cache)
        .rm(true)
        .forcerm(true);
    options = match shared.builder {
        Builder::BuildKit => options
            .version(BuilderVersion::BuilderBuildKit)
            .session(&session_id(&c.name)),
        Builder::Legacy => options.version(BuilderVersion::BuilderV1),
    };
    let mut stream =
        shared
            .docker
            .build_image(options.build(), None, Some(bollard::body_try_stream(body)));
    let mut progress = Progress::new(&c.name);
    let mut events = Vec::new();
    let mut failure: Option<DockerError> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                progress.on_item(info, &mut events);
                for e in events.drain(..) {
                    shared.reporter.report(e);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // Dropping the request stops the packer if it is still sending.
    drop(stream);
    let packed = packer.await;
    let failed = progress.failed_step();

    match failure {
        Some(DockerError::DockerStreamError { error }) => {
            let error = match &failed.step {
                Some(step) => anyhow::anyhow!("step `{step}` failed: {error}"),
                None => anyhow::anyhow!("the build failed: {error}"),
            };
            return Err(Failure {
                error,
                log_tail: failed.log_tail,
            });
        }
        Some(DockerError::DockerResponseServerError {
            status_code,
            message,
        }) => {
            return Err(anyhow::anyhow!(
                "the daemon refused the build (HTTP {status_code}): {message}"
            )
            .into())
        }
        Some(other) => {
            // The packer's own error (a file that vanished) explains a broken upload best.
            if let Ok(Err(e)) = packed {
                return Err(e.context("packing the context").into());
            }
            return Err(Failure {
                error: connection_lost(shared, c, failed.step.as_deref(), other),
                log_tail: failed.log_tail,
            });
        }
        None => {}
    }
    let packed = packed
        .context("the context packer stopped")?
        .context("packing the context")?;
    check_context(c, &packed.sha256)?;
    match progress.image_id() {
        Some(id) => Ok(id.to_string()),
        None => Err(Failure {
            error: connection_lost(
                shared,
                c,
                failed.step.as_deref(),
                "the build stream ended without an image ID",
            ),
            log_tail: failed.log_tail,
        }),
    }
}

/// The context sent must be the one the digest was computed from, or the tag would lie.
fn check_context(c: &ComponentPlan, sent_sha256: &str) -> anyhow::Result<()> {
    if sent_sha256 != c.inputs.context {
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

/// Builds through BuildKit's gRPC session, serving the component's build secrets from the
/// environment; returns the image ID.
async fn build_with_secrets(
    shared: &Shared,
    c: &ComponentPlan,
    temp: &str,
) -> Result<String, Failure> {
    use bollard::grpc::build::ImageBuildFrontendOptions;

    shared.reporter.report(Event::Step {
        task: c.name.clone(),
        step: "BuildKit session with build secrets (no step progress on this path)".into(),
        cached: false,
    });
    let (body, packer) = crate::context::pack_stream(c.context_spec());
    let tar = body
        .try_fold(bytes::BytesMut::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await;
    let packed = packer
        .await
        .context("the context packer stopped")?
        .context("packing the context")?;
    let tar = tar.context("packing the context")?.freeze();
    check_context(c, &packed.sha256)?;

    let mut options = ImageBuildFrontendOptions::builder()
        .dockerfile(Path::new(&c.dockerfile_name))
        .nocache(shared.no_cache)
        .pull(false);
    if !c.target.is_empty() {
        options = options.target(&c.target);
    }
    for (k, v) in &c.build_args {
        options = options.buildarg(k, v);
    }
    for (k, v) in c.labels(&shared.app) {
        options = options.label(&k, &v);
    }
    for s in &c.build_secrets {
        options = options.set_secret(s, &super::secret_source(&c.name, s)?);
    }
    if let Err(e) = solve_with_session(&shared.docker, temp, options.build(), tar).await {
        // "Grpc response failure: status = Unknown error, message = executor failed running
        // [/bin/sh -c CMD]: exit code: 4": BuildKit's message is the part people need.
        let message = e.split_once("message = ").map_or(e.as_str(), |(_, m)| m);
        return Err(anyhow::anyhow!("the build failed: {message}").into());
    }
    // This path returns no image ID: the temporary tag names the image.
    let id = shared
        .docker
        .inspect_image(temp)
        .await
        .with_context(|| format!("inspecting the image just built as {temp}"))?
        .id
        .unwrap_or_default();
    Ok(id)
}

/// Runs bollard's gRPC `docker_build`, whose future is not `Send`, on a thread of its own.
/// Dropping the returned future (a cancelled task) cancels the build there.
async fn solve_with_session(
    docker: &Docker,
    name: &str,
    options: bollard::grpc::build::ImageBuildFrontendOptions,
    tar: bytes::Bytes,
) -> Result<(), String> {
    use bollard::grpc::build::ImageBuildLoadInput;

    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
    let docker = docker.clone();
    let name = name.to_string();
    std::thread::spawn(move || {
        let result = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(async move {
                let driver = bollard::grpc::driver::moby::Moby::new(&docker);
                let build = bollard::grpc::driver::Build::docker_build(
                    driver,
                    &name,
                    options,
                    ImageBuildLoadInput::Upload(tar),
                    None,
                    None,
                );
                tokio::select! {
                    r = build => r.map_err(|e| e.to_string()),
                    _ = cancel_rx => Err("cancelled".to_string()),
                }
            }),
            Err(e) => Err(format!("cannot start a runtime for the build session: {e}")),
        };
        let _ = done_tx.send(result);
    });
    let result = done_rx
        .await
        .unwrap_or_else(|_| Err("the build session thread stopped".into()));
    drop(cancel_tx);
    result
}

/// Removes a tag (never the image under it while another tag names it).
pub(crate) async fn remove_tag(docker: &Docker, reference: &str) {
    let _ = docker
        .remove_image(
            reference,
            Some(RemoveImageOptionsBuilder::default().noprune(true).build()),
            None,
        )
        .await;
}
