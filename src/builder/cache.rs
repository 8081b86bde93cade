//! The build cache across machines, on the daemon: reading it (`cachefrom` of each build,
//! a directory cache loaded first) and writing it (each stage as an inline-cache image, pushed
//! or saved). Why it works this way: [`crate::cache`].

use futures_util::StreamExt;

use super::image::Shared;
use super::ComponentPlan;
use crate::cache::{self as spec, CacheOptions, CacheSpec};
use crate::docker::Daemon;
use crate::report::{Event, Reporter};

/// The stages of `c` its cache holds (from its Dockerfile, up to the target).
fn stages(c: &ComponentPlan) -> Vec<String> {
    let text = std::fs::read_to_string(&c.dockerfile).unwrap_or_default();
    spec::stages_up_to(&text, &c.target)
}

/// The images a build of `c` names in `cachefrom`: per stage, each registry entry's image
/// and each directory entry's loaded image.
pub(crate) fn cache_from(opts: &CacheOptions, c: &ComponentPlan) -> Vec<String> {
    if opts.from.is_empty() {
        return Vec::new();
    }
    let stages = stages(c);
    let mut refs = Vec::new();
    for s in &opts.from {
        for stage in &stages {
            match s {
                CacheSpec::Registry { reference } => {
                    refs.push(spec::registry_tag(reference, &c.name, stage))
                }
                CacheSpec::Local { .. } => refs.push(spec::local_tag(&c.repository, stage)),
                CacheSpec::Inline => {}
            }
        }
    }
    refs.dedup();
    refs
}

/// Before the builds: says what the daemon lacks and how slipway makes up for it, and loads
/// each directory cache's archive of the components to build. Nothing here fails the run: a
/// cache that cannot be read is a slower build, named in a warning.
pub(crate) async fn prepare(
    daemon: &Daemon,
    reporter: &dyn Reporter,
    opts: &CacheOptions,
    to_build: &[&ComponentPlan],
) {
    if to_build.is_empty() || (opts.from.is_empty() && opts.to.is_empty()) {
        return;
    }
    let version = daemon
        .docker
        .version()
        .await
        .ok()
        .and_then(|v| v.version)
        .unwrap_or_else(|| "?".into());
    let containerd = daemon.containerd_store().await;
    let store = if containerd { "containerd" } else { "classic" };
    let daemon_name = format!(
        "the Docker daemon at {} (Engine {version}, {store} image store)",
        daemon.endpoint.host
    );
    if opts.exports() {
        let wheres: Vec<String> = opts
            .to
            .iter()
            .filter_map(|s| match s {
                CacheSpec::Registry { reference } => {
                    Some(spec::registry_tag(reference, "COMPONENT", "STAGE"))
                }
                CacheSpec::Local { dir } => {
                    Some(spec::local_archive(dir, "COMPONENT").display().to_string())
                }
                CacheSpec::Inline => None,
            })
            .collect();
        reporter.report(Event::Warn {
            message: format!(
                "{daemon_name} exports build cache only inline, into an image: its Engine API \
                 (POST /build) takes no cache-to{}; slipway writes each Dockerfile stage as an \
                 inline-cache image instead: {}",
                if containerd {
                    " (its BuildKit's registry and local exporters are reachable only through buildx's gRPC path)"
                } else {
                    ", and its BuildKit has no registry or local exporter"
                },
                wheres.join(", ")
            ),
        });
    }
    let dirs: Vec<&std::path::Path> = opts
        .from
        .iter()
        .filter_map(|s| match s {
            CacheSpec::Local { dir } => Some(dir.as_path()),
            _ => None,
        })
        .collect();
    if dirs.is_empty() {
        return;
    }
    if containerd {
        // moby's containerd-store builder reads cache-from images from a registry only
        // (registryremotecache; the classic store's localinlinecache also reads local images).
        reporter.report(Event::Warn {
            message: format!(
                "{daemon_name} reads cache-from images only from a registry, never from its own \
                 image store: the type=local cache ({}) is not used on it; use type=registry",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        return;
    }
    for dir in dirs {
        for c in to_build {
            let archive = spec::local_archive(dir, &c.name);
            if !archive.exists() {
                reporter.report(Event::Log {
                    task: c.name.clone(),
                    line: format!("cache: no {} yet", archive.display()),
                });
                continue;
            }
            match load(daemon, &archive).await {
                Ok(()) => reporter.report(Event::Log {
                    task: c.name.clone(),
                    line: format!("cache: loaded {}", archive.display()),
                }),
                Err(e) => reporter.report(Event::Warn {
                    message: format!(
                        "cannot load the build cache {} into the daemon, `{}` builds without \
                         it: {e:#}",
                        archive.display(),
                        c.name
                    ),
                }),
            }
        }
    }
}

/// `docker load < archive`.
async fn load(daemon: &Daemon, archive: &std::path::Path) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(archive).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let docker = daemon.long()?;
    crate::docker::images::load(&docker, body).await
}

/// After `c` was built: builds each of its stages as an inline-cache image (every step is in
/// the daemon's cache by now, so this is quick) and writes them where `--cache-to` says. A
/// failure is a warning: the image is built and tagged, only the next run is slower.
pub(crate) async fn export(shared: &Shared, c: &ComponentPlan) {
    if let Err(e) = export_stages(shared, c).await {
        shared.reporter.report(Event::Warn {
            message: format!("the build cache of `{}` was not written: {e:#}", c.name),
        });
    }
}

async fn export_stages(shared: &Shared, c: &ComponentPlan) -> anyhow::Result<()> {
    let stages = stages(c);
    let locals: Vec<String> = stages
        .iter()
        .map(|s| spec::local_tag(&c.repository, s))
        .collect();
    let result = async {
        for (stage, tag) in stages.iter().zip(&locals) {
            super::image::build_stage(shared, c, stage, tag).await?;
        }
        for to in &shared.cache.to {
            match to {
                CacheSpec::Registry { reference } => {
                    for (stage, local) in stages.iter().zip(&locals) {
                        let target = spec::registry_tag(reference, &c.name, stage);
                        push(shared, local, &target).await?;
                        shared.reporter.report(Event::Log {
                            task: c.name.clone(),
                            line: format!("cache: pushed {target}"),
                        });
                    }
                }
                CacheSpec::Local { dir } => {
                    let archive = spec::local_archive(dir, &c.name);
                    save(shared, &locals, &archive).await?;
                    shared.reporter.report(Event::Log {
                        task: c.name.clone(),
                        line: format!("cache: wrote {}", archive.display()),
                    });
                }
                CacheSpec::Inline => {}
            }
        }
        anyhow::Ok(())
    }
    .await;
    // The stage images go with their last tag (the registry or the archive keeps them; the
    // daemon's BuildKit keeps its own cache): no dangling images left behind.
    for tag in &locals {
        let _ = shared
            .docker
            .remove_image(
                tag,
                Some(bollard::query_parameters::RemoveImageOptions::default()),
                None,
            )
            .await;
    }
    result
}

/// Tags `local` as `target` and pushes it with the Docker config's credentials; the tag is
/// removed again (the registry keeps it).
async fn push(shared: &Shared, local: &str, target: &str) -> anyhow::Result<()> {
    let (repo, tag) = target.rsplit_once(':').expect("a registry tag");
    shared
        .docker
        .tag_image(
            local,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(tag)
                    .build(),
            ),
        )
        .await?;
    let result = async {
        let (registry, creds) = crate::push::credentials_for(repo).await?;
        let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
            .tag(tag)
            .build();
        let mut stream = shared.docker.push_image(repo, Some(opts), creds);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                anyhow::Error::new(e).context(format!("pushing {target} to {registry}"))
            })?;
            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                anyhow::bail!("pushing {target} to {registry}: {e}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    super::image::remove_tag(&shared.docker, target).await;
    result
}

/// `docker save TAGS > archive`, through a temp file and a rename.
async fn save(shared: &Shared, tags: &[String], archive: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tokio::io::AsyncWriteExt;
    let dir = archive.parent().unwrap_or(std::path::Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".slipway-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let (file, path) = tmp.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let names: Vec<&str> = tags.iter().map(String::as_str).collect();
    let mut stream = shared.docker.export_images(&names);
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk.context("saving the stage images")?)
            .await?;
    }
    out.flush().await?;
    out.sync_all().await?;
    drop(out);
    path.persist(archive)
        .with_context(|| format!("writing {}", archive.display()))?;
    Ok(())
}
