//! The one place that opens a connection to the Docker daemon.
//!
//! Users point Docker tools at a daemon with `DOCKER_HOST` or with the active Docker context
//! (`docker context use`, `DOCKER_CONTEXT`); slipway honours both, in that order, like the
//! docker CLI. Everything else talks to the daemon through the [`Daemon`] this returns.

pub mod files;
pub mod filesync;
pub mod images;
pub mod receive;
pub mod session;

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::Fail;

/// Requests that are not builds or transfers give up when no response comes this long
/// (unless `SLIPWAY_DAEMON_TIMEOUT` says otherwise): a daemon answers them in milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request that is not a build or a transfer waits for the daemon's response:
/// `SLIPWAY_DAEMON_TIMEOUT` (seconds, at least 1), else [`DEFAULT_TIMEOUT`].
pub fn request_timeout() -> Duration {
    std::env::var("SLIPWAY_DAEMON_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// Whether `text` (an error, a line of a step's log, an exec's output) says that runc's init
/// process died before the command started (`read init-p: connection reset by peer`): seen
/// on a busy host, when many containers start at once or memory runs short. The command never
/// ran, so running it again is safe; a command that is missing or not executable fails in
/// other words ("exec: ...") and is not matched: that failure is the command's.
pub fn runtime_did_not_start(text: &str) -> bool {
    text.contains("unable to start container process")
        && (text.contains("waiting for init preliminary setup") || text.contains("read init-p"))
}

/// Builds and image transfers may take this long.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where the daemon endpoint came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Endpoint {
    /// `unix:///var/run/docker.sock`, `tcp://127.0.0.1:2376`, ...
    pub host: String,
    /// `DOCKER_HOST`, `docker context NAME`, or `default`.
    pub source: String,
}

/// A connected daemon and what it is.
#[derive(Clone)]
pub struct Daemon {
    pub docker: Docker,
    pub endpoint: Endpoint,
    /// Which image store it has, asked once per run ([`Daemon::containerd_store`]).
    store: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl Daemon {
    /// The daemon at `endpoint`, reached with `docker` (see [`connect`], which also pings it).
    pub fn new(docker: Docker, endpoint: Endpoint) -> Self {
        Daemon {
            docker,
            endpoint,
            store: Default::default(),
        }
    }

    /// Whether the daemon keeps images in the containerd image store (Docker Desktop's and
    /// Engine 29's default): there image IDs are manifest digests and exports carry compressed
    /// layers. Asked once (`docker info`); a daemon that does not say counts as classic.
    pub async fn containerd_store(&self) -> bool {
        *self
            .store
            .get_or_init(|| async {
                match self.docker.info().await {
                    Ok(info) => {
                        is_containerd_store(info.driver_status.as_deref().unwrap_or_default())
                    }
                    Err(_) => false,
                }
            })
            .await
    }

    /// A client of the same daemon for builds and image transfers, which may take
    /// [`LONG_TIMEOUT`]: the seam makes it, so no step opens clients of its own.
    pub fn long(&self) -> anyhow::Result<Docker> {
        client(&self.endpoint, LONG_TIMEOUT)
    }
}

/// The hint shown whenever the daemon cannot be reached.
pub fn start_hint(endpoint: &Endpoint) -> String {
    format!(
        "start the Docker daemon (`sudo systemctl start docker` on Linux, or Docker Desktop), \
         or point DOCKER_HOST at a running one; tried {} (from {})",
        endpoint.host, endpoint.source
    )
}

/// Works out which daemon the user means, like the docker CLI does.
pub fn endpoint() -> Endpoint {
    if let Some(host) = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
        return Endpoint {
            host,
            source: "DOCKER_HOST".into(),
        };
    }
    if let Some((name, host)) = context_endpoint() {
        return Endpoint {
            host,
            source: format!("docker context {name}"),
        };
    }
    Endpoint {
        host: "unix:///var/run/docker.sock".into(),
        source: "default".into(),
    }
}

fn docker_config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"))
}

/// The active Docker context's endpoint, when one other than `default` is active.
fn context_endpoint() -> Option<(String, String)> {
    let dir = docker_config_dir()?;
    let name = match std::env::var("DOCKER_CONTEXT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        Some(n) => n,
        None => {
            let cfg = std::fs::read_to_string(dir.join("config.json")).ok()?;
            let cfg: serde_json::Value = serde_json::from_str(&cfg).ok()?;
            cfg.get("currentContext")?.as_str()?.to_string()
        }
    };
    if name == "default" || name.is_empty() {
        return None;
    }
    let id = hex::encode(Sha256::digest(name.as_bytes()));
    let meta =
        std::fs::read_to_string(dir.join("contexts/meta").join(id).join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
    let host = meta
        .pointer("/Endpoints/docker/Host")?
        .as_str()?
        .to_string();
    Some((name, host))
}

/// Opens a client for `endpoint` with the given request timeout. Does not talk to the daemon.
pub fn client(endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let host = endpoint.host.as_str();
    let docker = if let Some(path) = host.strip_prefix("unix://") {
        Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, secs, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(Fail::usage(format!(
            "unsupported Docker endpoint `{host}` (from {})",
            endpoint.source
        ))
        .hint("use unix:///path/to/docker.sock or tcp://HOST:PORT")
        .into());
    };
    docker.map_err(|e| {
        // bollard checks that a unix socket exists before any request: no socket is a daemon
        // that is not running, and deserves the same message and hint as a refused ping.
        anyhow::Error::new(e).context(
            Fail::job(format!("cannot reach the Docker daemon at {host}"))
                .hint(start_hint(endpoint)),
        )
    })
}

/// Connects and checks the daemon answers within `ping_timeout`.
pub async fn connect(ping_timeout: Duration) -> anyhow::Result<Daemon> {
    let endpoint = endpoint();
    let docker = client(&endpoint, request_timeout())?;
    ping(&docker, &endpoint, ping_timeout).await?;
    Ok(Daemon::new(docker, endpoint))
}

/// Connects to a specific endpoint (e.g. the inner daemon of a minikube node).
pub async fn connect_to(endpoint: Endpoint, ping_timeout: Duration) -> anyhow::Result<Daemon> {
    let docker = client(&endpoint, request_timeout())?;
    ping(&docker, &endpoint, ping_timeout).await?;
    Ok(Daemon::new(docker, endpoint))
}

async fn ping(docker: &Docker, endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<()> {
    let fail = || {
        Fail::job(format!(
            "cannot reach the Docker daemon at {}",
            endpoint.host
        ))
        .hint(start_hint(endpoint))
    };
    match tokio::time::timeout(timeout, docker.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(fail())),
        Err(_) => Err(anyhow::anyhow!("no answer within {:?}", timeout).context(fail())),
    }
}

/// `docker info`'s driver status names the containerd snapshotter.
pub fn is_containerd_store(driver_status: &[Vec<String>]) -> bool {
    driver_status.iter().any(|kv| {
        kv.first().is_some_and(|k| k == "driver-type")
            && kv.get(1).is_some_and(|v| v.contains("snapshotter"))
    })
}

/// Whether a daemon of this version builds with BuildKit (built in since 18.09, API 1.39).
pub fn has_buildkit(api_version: &str) -> bool {
    let mut parts = api_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (1, 39)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_runc_could_not_start_is_told_from_the_commands_own_failure() {
        // What dockerd writes on an exec's stream (runc 1.1), and BuildKit 0.8 on a step's log.
        assert!(runtime_did_not_start(
            "OCI runtime exec failed: exec failed: unable to start container process: read \
             init-p: connection reset by peer: unknown"
        ));
        assert!(runtime_did_not_start(
            "runc run failed: unable to start container process: waiting for init preliminary \
             setup: read init-p: connection reset by peer"
        ));
        assert!(!runtime_did_not_start(
            "OCI runtime exec failed: exec failed: unable to start container process: exec: \
             \"ctr\": executable file not found in $PATH: unknown"
        ));
        assert!(!runtime_did_not_start(
            "ctr: content digest sha256:0: not found"
        ));
    }

    #[test]
    fn buildkit_by_api_version() {
        assert!(has_buildkit("1.41"));
        assert!(has_buildkit("1.39"));
        assert!(!has_buildkit("1.38"));
        assert!(has_buildkit("2.0"));
    }

    #[test]
    fn unsupported_scheme_is_a_usage_error() {
        let e = client(
            &Endpoint {
                host: "ssh://box".into(),
                source: "DOCKER_HOST".into(),
            },
            DEFAULT_TIMEOUT,
        )
        .err()
        .unwrap();
        assert_eq!(crate::error::exit_and_hint(&e).0, crate::error::Exit::Usage);
    }
}
