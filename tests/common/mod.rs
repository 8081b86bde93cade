//! Shared helpers for integration tests: the real daemon, the judges, unique names.
#![allow(dead_code)]

pub mod registry;

use std::path::PathBuf;
use std::process::Command;

/// True when running in CI, where a missing daemon or judge must fail a test, not skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// The real Docker daemon, or `None` (with a printed reason) outside CI when none answers.
/// Under `CI=true` a missing daemon panics: daemon tests never pass by skipping there.
pub async fn daemon() -> Option<bollard::Docker> {
    let endpoint = slipway::docker::endpoint();
    let docker = slipway::docker::client(&endpoint, slipway::docker::LONG_TIMEOUT).ok();
    let ok = match &docker {
        Some(d) => tokio::time::timeout(std::time::Duration::from_secs(5), d.ping())
            .await
            .is_ok_and(|r| r.is_ok()),
        None => false,
    };
    if ok {
        return docker;
    }
    if in_ci() {
        panic!(
            "CI=true and no Docker daemon answers at {}: daemon tests must run in CI",
            endpoint.host
        );
    }
    eprintln!(
        "SKIPPED: no Docker daemon at {} (set CI=true to make this a failure)",
        endpoint.host
    );
    None
}

/// Path to an external judge (hadolint, helm, kubernetes-validate, yamllint, checkov), from
/// `$SLIPWAY_TOOLS/bin`, the repo's `.tools/bin`, or PATH. Panics under CI when missing.
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("SLIPWAY_TOOLS") {
        dirs.push(PathBuf::from(t).join("bin"));
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(found);
    }
    if in_ci() {
        panic!("CI=true and the judge `{name}` is not installed: run scripts/env/tools");
    }
    eprintln!("SKIPPED: `{name}` not found (run scripts/env/tools)");
    None
}

/// A name no other test (or engineer) uses at the same time.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on (a daemon that is not there).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A command's stdout (trimmed), after asserting it succeeded (else its output and `what`).
pub fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The slipway binary built for these tests.
pub fn slipway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Label of the host's daemon in [`daemon_matrix`]: Docker Engine 20.10 (Debian 12's docker.io,
/// scripts/env/docker), reached as slipway finds it (`DOCKER_HOST`, docker context, the socket).
pub const DAEMON_HOST: &str = "20.10";
/// Label of Docker Engine 26.1 with the classic image store (overlay2), at
/// `$SLIPWAY_TEST_DAEMON_CLASSIC` (scripts/env/daemons: tcp://127.0.0.1:23751).
pub const DAEMON_CLASSIC: &str = "26.1-classic";
/// Label of Docker Engine 26.1 with the containerd image store (image IDs are manifest digests),
/// at `$SLIPWAY_TEST_DAEMON_CONTAINERD` (scripts/env/daemons: tcp://127.0.0.1:23752).
pub const DAEMON_CONTAINERD: &str = "26.1-containerd";

/// Every daemon of the test matrix that answers, as `(label, DOCKER_HOST)`: [`DAEMON_HOST`],
/// [`DAEMON_CLASSIC`], [`DAEMON_CONTAINERD`], in that order. The 26.1 daemons come from
/// `$SLIPWAY_TEST_DAEMON_CLASSIC` and `$SLIPWAY_TEST_DAEMON_CONTAINERD` (exported by scripts/test;
/// started by scripts/env/daemons, which scripts/env/setup runs).
///
/// A daemon whose variable is unset or that does not answer `GET /_ping` within 5 s is left out
/// with a printed SKIPPED; under `CI=true` it panics instead: matrix tests never pass by
/// skipping there. Each daemon holds the base images (`$SLIPWAY_TEST_IMAGE_PYTHON`, `_NODE`,
/// `_BUSYBOX`). Run a command against one with `DOCKER_HOST=<host>`, or connect with
/// [`daemon_matrix_clients`].
pub fn daemon_matrix() -> Vec<(&'static str, String)> {
    let mut daemons = Vec::new();
    let host = slipway::docker::endpoint().host;
    if let Some(h) = matrix_daemon(
        DAEMON_HOST,
        "the host's daemon (DOCKER_HOST or the socket)",
        Some(host),
    ) {
        daemons.push((DAEMON_HOST, h));
    }
    for (label, var) in [
        (DAEMON_CLASSIC, "SLIPWAY_TEST_DAEMON_CLASSIC"),
        (DAEMON_CONTAINERD, "SLIPWAY_TEST_DAEMON_CONTAINERD"),
    ] {
        let host = std::env::var(var).ok().filter(|h| !h.is_empty());
        if let Some(h) = matrix_daemon(label, var, host) {
            daemons.push((label, h));
        }
    }
    daemons
}

/// [`daemon_matrix`] with a bollard client for each daemon (request timeout: an hour, for builds).
pub fn daemon_matrix_clients() -> Vec<(&'static str, bollard::Docker)> {
    daemon_matrix()
        .into_iter()
        .map(|(label, host)| {
            let secs = slipway::docker::LONG_TIMEOUT.as_secs();
            let docker = match host.strip_prefix("unix://") {
                Some(path) => {
                    bollard::Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
                }
                None => {
                    bollard::Docker::connect_with_http(&host, secs, bollard::API_DEFAULT_VERSION)
                }
            };
            let docker = docker.unwrap_or_else(|e| panic!("daemon {label} at {host}: {e}"));
            (label, docker)
        })
        .collect()
}

/// One daemon of the matrix: its host when it answers; otherwise SKIPPED, or a panic under CI.
fn matrix_daemon(label: &str, from: &str, host: Option<String>) -> Option<String> {
    let problem = match &host {
        None => format!("{from} is not set (run scripts/env/daemons; scripts/test exports it)"),
        Some(h) => match ping_host(h) {
            Ok(()) => return host,
            Err(e) => {
                format!("{from}={h} does not answer GET /_ping: {e} (run scripts/env/daemons)")
            }
        },
    };
    if in_ci() {
        panic!("CI=true and the Docker {label} daemon of the test matrix is missing: {problem}");
    }
    eprintln!("SKIPPED: Docker {label}: {problem} (set CI=true to make this a failure)");
    None
}

/// `GET /_ping` over a unix socket or plain TCP, without an async runtime: Ok when it says OK.
pub fn ping_host(host: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    const TIMEOUT: Duration = Duration::from_secs(5);
    fn exchange(mut s: impl Read + Write) -> std::io::Result<Vec<u8>> {
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut response = Vec::new();
        s.read_to_end(&mut response)?;
        Ok(response)
    }
    let response = if let Some(path) = host.strip_prefix("unix://") {
        let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        exchange(s)
    } else if let Some(addr) = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
    {
        use std::net::ToSocketAddrs;
        let addr = addr.trim_end_matches('/');
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| format!("{addr} resolves to nothing"))?;
        let s = std::net::TcpStream::connect_timeout(&sock, TIMEOUT).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        exchange(s)
    } else {
        return Err(format!(
            "cannot ping `{host}` (only unix:// and tcp:// are supported here)"
        ));
    }
    .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status_ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    if status_ok && text.ends_with("OK") {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer: {}",
            text.lines().next().unwrap_or("")
        ))
    }
}

/// kind node stand-ins (tests/env/kind-up), removed however the test ends.
pub struct Kind(pub String);

impl Drop for Kind {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/env/down"))
            .arg(&self.0)
            .output();
    }
}

/// Starts the stand-in control-plane node of a kind cluster named `name`.
pub fn kind(name: &str) -> Kind {
    stand_in("kind-up", name, 0)
}

/// Makes every `ctr images import` in the kind stand-in `node` end `seconds` after containerd
/// has the image (a `ctr` in front of the real one), so that a test sees what happens while a
/// node is still importing.
#[allow(dead_code)]
pub fn slow_imports(node: &str, seconds: u32) {
    use std::io::Write as _;
    let wrapper = format!(
        "#!/bin/sh\n/usr/bin/ctr.real \"$@\"; rc=$?\n\
         case \" $* \" in *\" images import \"*) sleep {seconds} ;; esac\nexit $rc\n"
    );
    let install =
        "mv /usr/bin/ctr /usr/bin/ctr.real && cat > /usr/bin/ctr && chmod +x /usr/bin/ctr";
    let mut child = Command::new("docker")
        .args(["exec", "-i", node, "sh", "-c", install])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(wrapper.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "installing a slow ctr in {node}"
    );
}

/// Node stand-ins from `tests/env/SCRIPT NAME WORKERS` (kind-up, k3d-up), removed on drop.
pub fn stand_in(script: &str, name: &str, workers: usize) -> Kind {
    let out = Command::new(repo().join("tests/env").join(script))
        .args([name, &workers.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Kind(name.to_string())
}

/// `docker run` that tries again when the runtime failed to start the container before anything
/// in it ran (runc's `read init-p: connection reset by peer`, seen once on this host's Docker
/// 20.10 under load): a failure of the machine, not of what a test checks. Any other failure,
/// and a third runtime failure, is returned as it is.
pub trait RunRetrying {
    fn output_retrying(&mut self) -> std::io::Result<std::process::Output>;
}

impl RunRetrying for Command {
    fn output_retrying(&mut self) -> std::io::Result<std::process::Output> {
        let args: Vec<String> = self
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let name = args
            .iter()
            .position(|a| a == "--name")
            .and_then(|i| args.get(i + 1));
        let mut tries = 0;
        loop {
            let out = self.output()?;
            tries += 1;
            let runtime =
                String::from_utf8_lossy(&out.stderr).contains("OCI runtime create failed");
            if out.status.success() || !runtime || tries == 3 {
                return Ok(out);
            }
            if let Some(name) = name {
                let mut rm = Command::new("docker");
                for (k, v) in self.get_envs() {
                    if let Some(v) = v {
                        rm.env(k, v);
                    }
                }
                let _ = rm.args(["rm", "-f", name]).output();
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
