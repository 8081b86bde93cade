//! `slipway doctor`: is this machine ready for the main job?
//!
//! Each check says ok, warn or fail, with a hint where something is off. The daemon check
//! answers fast even when nothing listens (a 1.5 s ping budget), because doctor is what people
//! run when things hang.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{ClusterTarget, Config};
use crate::docker::{self, Daemon};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DaemonInfo {
    pub endpoint: String,
    pub endpoint_source: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub buildkit: bool,
    /// `classic` (graph drivers such as overlay2) or `containerd` (the containerd image
    /// store, Docker Desktop's and Engine 29's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_store: Option<String>,
    /// The BuildKit built into this Docker release, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buildkit_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub daemon: DaemonInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_context: Option<crate::kubeconfig::KubeContext>,
    pub checks: Vec<Check>,
}

fn check(name: &str, status: Status, message: impl Into<String>, hint: Option<String>) -> Check {
    Check {
        name: name.to_string(),
        status,
        message: message.into(),
        hint,
    }
}

/// Below this much free space under the daemon's data root, builds are likely to fail.
const LOW_DISK: u64 = 5_000_000_000;

/// Runs every check. `config` is the project's configuration, when there is one.
pub async fn run(config: Option<&Config>) -> Report {
    let mut checks = Vec::new();
    let endpoint = docker::endpoint();
    let mut info = DaemonInfo {
        endpoint: endpoint.host.clone(),
        endpoint_source: endpoint.source.clone(),
        ..Default::default()
    };

    let daemon = match docker::connect_to(endpoint.clone(), Duration::from_millis(1500)).await {
        Ok(d) => Some(d),
        Err(e) => {
            checks.push(check(
                "docker daemon",
                Status::Fail,
                crate::error::plain(&e),
                Some(docker::start_hint(&endpoint)),
            ));
            None
        }
    };

    if let Some(d) = &daemon {
        daemon_checks(d, &mut info, &mut checks).await;
    }

    let kube = crate::kubeconfig::current();
    cluster_check(daemon.as_ref(), kube.as_ref(), config, &mut checks).await;

    match config {
        Some(cfg) => base_image_checks(daemon.as_ref(), cfg, &mut checks).await,
        None => checks.push(check(
            "config",
            Status::Warn,
            "no slipway.toml found: base images not checked",
            Some("run `slipway init` in your project".into()),
        )),
    }

    let ok = checks.iter().all(|c| c.status != Status::Fail);
    Report {
        ok,
        daemon: info,
        kube_context: kube,
        checks,
    }
}

/// The BuildKit vendored by a Docker Engine release (moby's go.mod at each release).
fn bundled_buildkit(docker_version: &str) -> Option<String> {
    let mut parts = docker_version.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    let bk = match (major, minor) {
        (18, 9) => "v0.3",
        (19, 3) => "v0.6",
        (20, 10) => "v0.8",
        (23, _) => "v0.10",
        (24, _) => "v0.11",
        (25, _) => "v0.12",
        (26, _) => "v0.13",
        _ => return None,
    };
    Some(bk.to_string())
}

async fn daemon_checks(d: &Daemon, info: &mut DaemonInfo, checks: &mut Vec<Check>) {
    info.reachable = true;
    match d.docker.version().await {
        Ok(v) => {
            info.server_version = v.version.clone();
            info.api_version = v.api_version.clone();
            info.buildkit = v.api_version.as_deref().is_some_and(docker::has_buildkit);
            checks.push(check(
                "docker daemon",
                Status::Ok,
                format!(
                    "Docker {} (API {}) at {} (from {})",
                    v.version.as_deref().unwrap_or("?"),
                    v.api_version.as_deref().unwrap_or("?"),
                    d.endpoint.host,
                    d.endpoint.source
                ),
                None,
            ));
            info.buildkit_version = v.version.as_deref().and_then(bundled_buildkit);
            checks.push(if info.buildkit {
                let version = info
                    .buildkit_version
                    .as_deref()
                    .map(|b| format!(" {b}"))
                    .unwrap_or_default();
                check(
                    "buildkit",
                    Status::Ok,
                    format!(
                        "BuildKit{version} available: builds send the context and the Dockerfile \
                         over a BuildKit session (as buildx does)"
                    ),
                    None,
                )
            } else {
                check(
                    "buildkit",
                    Status::Warn,
                    "this daemon has no BuildKit: builds use the legacy builder (no cache mounts, no build secrets)",
                    Some("upgrade Docker to 18.09 or newer".into()),
                )
            });
        }
        Err(e) => checks.push(check(
            "docker daemon",
            Status::Fail,
            format!("version query failed: {e}"),
            None,
        )),
    }
    if let Ok(sys) = d.docker.info().await {
        info.data_root = sys.docker_root_dir.clone();
        let containerd_store =
            docker::is_containerd_store(sys.driver_status.as_deref().unwrap_or_default());
        let driver = sys.driver.clone().unwrap_or_else(|| "?".into());
        info.image_store = Some(
            if containerd_store {
                "containerd"
            } else {
                "classic"
            }
            .into(),
        );
        checks.push(check(
            "image store",
            Status::Ok,
            if containerd_store {
                format!(
                    "containerd image store ({driver} snapshotter): image IDs are manifest digests; \
                     slipway builds over the BuildKit session, which works there"
                )
            } else {
                format!("classic image store ({driver})")
            },
            None,
        ));
        if info.buildkit {
            checks.push(check(
                "build cache",
                Status::Ok,
                crate::cache::daemon_support(containerd_store),
                None,
            ));
        }
        let local = d.endpoint.host.starts_with("unix://");
        match (&sys.docker_root_dir, local) {
            (Some(root), true) => match free_bytes(Path::new(root)) {
                Some(free) => {
                    info.free_bytes = Some(free);
                    let msg = format!("{} free under {root}", crate::report::fmt_bytes(free));
                    checks.push(if free < LOW_DISK {
                        check("disk", Status::Warn, msg, Some("free some space: `docker system prune` removes unused images and build cache".into()))
                    } else {
                        check("disk", Status::Ok, msg, None)
                    });
                }
                None => checks.push(check(
                    "disk",
                    Status::Warn,
                    format!("cannot read free space under {root}"),
                    None,
                )),
            },
            _ => checks.push(check(
                "disk",
                Status::Ok,
                "remote daemon: free space not checked",
                None,
            )),
        }
    }
}

/// The cluster `up` would load into, found exactly as `up` finds it
/// ([`crate::cluster::Cluster::detect`]), and every local cluster on the daemon.
async fn cluster_check(
    daemon: Option<&Daemon>,
    kube: Option<&crate::kubeconfig::KubeContext>,
    config: Option<&Config>,
    checks: &mut Vec<Check>,
) {
    use crate::cluster::{self, Cluster, Detection};
    let target = config
        .map(|c| c.cluster.clone())
        .unwrap_or(ClusterTarget::Auto);
    let from = match (&target, kube) {
        (ClusterTarget::Auto, Some(k)) => {
            format!("from kube context `{}` ({})", k.name, k.file.display())
        }
        (ClusterTarget::Auto, None) => "no kube context: found by node containers".to_string(),
        _ => "from slipway.toml".to_string(),
    };
    let Some(d) = daemon else {
        checks.push(check(
            "cluster",
            Status::Warn,
            format!("{target}: node containers not checked (no daemon)"),
            None,
        ));
        return;
    };
    match cluster::found(&d.docker).await {
        Ok(found) if found.is_empty() => checks.push(check(
            "local clusters",
            Status::Ok,
            "none: no kind or minikube node containers on this daemon",
            None,
        )),
        Ok(found) => checks.push(check(
            "local clusters",
            Status::Ok,
            cluster::describe_found(&found),
            None,
        )),
        Err(e) => checks.push(check(
            "local clusters",
            Status::Warn,
            format!("cannot list node containers: {}", crate::error::plain(&e)),
            None,
        )),
    }
    let c = match Cluster::detect(&d.docker, &target).await {
        Ok(Detection::Found(c)) => c,
        Ok(Detection::NoCluster(why)) => {
            checks.push(check(
                "cluster",
                Status::Ok,
                format!("`up` skips the load: {why}"),
                None,
            ));
            registry_check(d, None, config, checks).await;
            return;
        }
        Err(e) => {
            checks.push(check(
                "cluster",
                Status::Fail,
                format!("{target} ({from}): {}", crate::error::plain(&e)),
                crate::error::exit_and_hint(&e).1,
            ));
            return;
        }
    };
    let stopped: Vec<&str> = c
        .nodes()
        .iter()
        .filter(|n| !n.running)
        .map(|n| n.name.as_str())
        .collect();
    let n = c.nodes().len();
    let message = format!(
        "{} ({from}): `up` loads into {} of {n} node container(s)",
        c.target(),
        n - stopped.len()
    );
    if stopped.is_empty() {
        checks.push(check("cluster", Status::Ok, message, None));
    } else {
        checks.push(check(
            "cluster",
            Status::Warn,
            format!("{message}; stopped: {}", stopped.join(", ")),
            Some(format!("start them: `docker start {}`", stopped.join(" "))),
        ));
    }
    registry_check(d, Some(&c), config, checks).await;
}

/// The local registry `up` would push to, found exactly as `up` finds it
/// ([`crate::cluster::registry::resolve`]): whether the daemon reaches it, and whether every
/// running node resolves its name (a pull of a tag it lacks answers "not found").
async fn registry_check(
    d: &Daemon,
    cluster: Option<&crate::cluster::Cluster>,
    config: Option<&Config>,
    checks: &mut Vec<Check>,
) {
    use crate::cluster::{registry, Runtime};
    let configured = config.and_then(|c| c.cluster_registry.as_deref());
    let found = registry::resolve(&d.docker, cluster, configured, &crate::report::Silent).await;
    let r = match found {
        Ok(Some(r)) => r,
        Ok(None) => {
            if cluster.is_some() {
                checks.push(check(
                    "registry",
                    Status::Ok,
                    "none wired into the cluster: `up` loads node by node",
                    None,
                ));
            }
            return;
        }
        Err(e) => {
            checks.push(check(
                "registry",
                Status::Fail,
                crate::error::plain(&e),
                crate::error::exit_and_hint(&e).1,
            ));
            return;
        }
    };
    let mut message = format!(
        "{} (found in {}): `up` pushes there instead of loading node by node",
        r.host, r.found_in
    );
    if r.from_nodes != r.host {
        message.push_str(&format!("; the manifests name it {}", r.from_nodes));
    }
    let probe = format!("{}/slipway-doctor/probe", r.host);
    if let Err(e) = crate::push::lookup(d, &probe, "absent").await {
        checks.push(check(
            "registry",
            Status::Fail,
            format!("{message}; the Docker daemon cannot reach it: {}", crate::error::plain(&e)),
            Some(format!(
                "start the registry (the kind recipe: `docker run -d -p 127.0.0.1:{}:5000 --name kind-registry registry:2`), or fix `registry` under [cluster] in slipway.toml",
                r.host.rsplit_once(':').map_or("5001", |(_, p)| p)
            )),
        ));
        return;
    }
    checks.push(check("registry", Status::Ok, message, None));
    let Some(c) = cluster else { return };
    if c.runtime() != Runtime::Containerd {
        checks.push(check(
            "registry: nodes",
            Status::Warn,
            format!(
                "not checked: the nodes of {} run Docker, not containerd",
                c.target()
            ),
            None,
        ));
        return;
    }
    let answers = registry::probe(&d.docker, c, &r).await;
    let (good, bad): (Vec<_>, Vec<_>) = answers.iter().partition(|(_, a)| a.is_ok());
    if bad.is_empty() {
        let names: Vec<&str> = good.iter().map(|(n, _)| n.as_str()).collect();
        checks.push(check(
            "registry: nodes",
            Status::Ok,
            format!("{} resolve {}", names.join(", "), r.from_nodes),
            None,
        ));
    } else {
        let each: Vec<String> = bad
            .iter()
            .map(|(n, a)| format!("{n}: {}", a.as_ref().err().map_or("", String::as_str)))
            .collect();
        checks.push(check(
            "registry: nodes",
            Status::Fail,
            format!("cannot pull from {}: {}", r.from_nodes, each.join("; ")),
            Some(format!(
                "wire it into each node's containerd as the kind local-registry recipe does: /etc/containerd/certs.d/{}/hosts.toml naming the registry's address as the nodes reach it (plain HTTP: `[host.\"http://ADDRESS\"]`)",
                r.from_nodes
            )),
        ));
    }
}

async fn base_image_checks(daemon: Option<&Daemon>, cfg: &Config, checks: &mut Vec<Check>) {
    let overrides = cfg.base_image_args();
    for (name, comp) in &cfg.components {
        let path = cfg.dockerfile_path(comp);
        let Ok(text) = std::fs::read_to_string(&path) else {
            checks.push(check(
                &format!("base images: {name}"),
                Status::Warn,
                format!("{} does not exist yet", path.display()),
                Some("run `slipway dockerfiles` to generate it".into()),
            ));
            continue;
        };
        let mut args = overrides.clone();
        args.extend(comp.build_args.clone());
        let images = crate::bases::base_images(&text, &args);
        let Some(d) = daemon else { continue };
        let mut missing = Vec::new();
        for img in &images {
            if d.docker.inspect_image(img).await.is_err() {
                missing.push(img.clone());
            }
        }
        checks.push(if missing.is_empty() {
            check(&format!("base images: {name}"), Status::Ok, format!("present: {}", images.join(", ")), None)
        } else {
            check(
                &format!("base images: {name}"),
                Status::Fail,
                format!("missing locally: {}", missing.join(", ")),
                Some("pull them (`docker pull IMAGE`), or point [base_images] in slipway.toml at images your daemon has (`docker images`)".into()),
            )
        });
    }
}

#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}

/// The human-readable form.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {:<22} {}\n", c.name, c.message));
        if let Some(h) = &c.hint {
            out.push_str(&format!("      {:<22} hint: {h}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod buildkit_tests {
    #[test]
    fn bundled_buildkit_by_docker_release() {
        assert_eq!(
            super::bundled_buildkit("20.10.24+dfsg1").as_deref(),
            Some("v0.8")
        );
        assert_eq!(
            super::bundled_buildkit("26.1.5+dfsg1").as_deref(),
            Some("v0.13")
        );
        assert_eq!(super::bundled_buildkit("99.0.0"), None);
        assert_eq!(super::bundled_buildkit("garbage"), None);
    }
}
