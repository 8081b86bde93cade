//! Debian's `docker-registry`, started for one test on a free port and stopped on drop.

use std::process::{Child, Command};

pub struct Registry {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Where the test itself reaches it (`127.0.0.1:PORT`, or the daemon container's address
    /// for [`start_beside`]).
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<&'static str> {
    let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if bin.is_none() {
        if super::in_ci() {
            panic!("CI=true and docker-registry is not installed: run scripts/env/setup");
        }
        eprintln!("SKIPPED: docker-registry not installed");
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the registry on a free loopback port (the daemon treats 127.0.0.0/8 as insecure,
/// so plain HTTP works there as it does for a local registry).
pub fn start() -> Option<Registry> {
    let bin = binary()?;
    let port = free_port();
    run(
        Command::new(bin),
        "127.0.0.1",
        port,
        format!("127.0.0.1:{port}"),
    )
}

/// [`start`], listening on every address: the host's daemon pushes to `localhost:PORT` and node
/// stand-ins reach it through their network's gateway (see [`Registry::wire`]).
/// It logs each request ([`Registry::uploaded_blobs`] reads the log).
pub fn start_for_nodes() -> Option<Registry> {
    let bin = binary()?;
    let port = free_port();
    run_with(
        Command::new(bin),
        "0.0.0.0",
        port,
        format!("127.0.0.1:{port}"),
        Some(Options {
            log: true,
            ..Options::default()
        }),
    )
}

/// [`start`], read-only (the registry's maintenance mode): it answers lookups, and refuses
/// every upload with `405 Method Not Allowed`.
pub fn start_read_only() -> Option<Registry> {
    start_on_loopback(Options {
        read_only: true,
        ..Options::default()
    })
}

/// [`start`], with htpasswd authentication: `htpasswd` is the file's text (`USER:BCRYPT`).
pub fn start_with_htpasswd(htpasswd: &str) -> Option<Registry> {
    start_on_loopback(Options {
        htpasswd: Some(htpasswd),
        ..Options::default()
    })
}

/// [`start`], with `options`.
fn start_on_loopback(options: Options<'_>) -> Option<Registry> {
    let bin = binary()?;
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    run_with(Command::new(bin), "127.0.0.1", port, address, Some(options))
}

/// Starts the registry in the network namespace of the daemon at `host` (one of the test
/// matrix's Docker 26.1 daemons, each in a container): that daemon reaches it on
/// `127.0.0.1:PORT`, as the host's daemon reaches [`start`]'s, and the test on the container's
/// address; the host's `127.0.0.1:PORT` is forwarded there ([`forward`]), so slipway, which
/// talks to registries itself, reaches it at the same address as the daemon.
pub fn start_beside(host: &str) -> Option<Registry> {
    let bin = binary()?;
    let port_of_host = host.rsplit(':').next().unwrap_or_default();
    let ps = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args(["ps", "-q", "--filter", &format!("publish={port_of_host}")])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&ps.stdout).trim().to_string();
    assert!(
        !id.is_empty(),
        "no container publishes the daemon at {host}"
    );
    let inspect = Command::new("docker")
        .env_remove("DOCKER_HOST")
        .args([
            "inspect",
            "-f",
            "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
            &id,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspect.stdout).to_string();
    let (pid, ip) = text
        .trim()
        .split_once(' ')
        .expect("the daemon container's pid and address");
    let port = free_port();
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", pid, "-n", bin]);
    let reg = run(cmd, "0.0.0.0", port, format!("{ip}:{port}"))?;
    forward(reg.port, &reg.address);
    Some(reg)
}

fn run(cmd: Command, listen: &str, port: u16, address: String) -> Option<Registry> {
    run_with(cmd, listen, port, address, None)
}

/// What [`run_with`] turns on besides the defaults.
#[derive(Default)]
struct Options<'a> {
    /// An htpasswd file's text: basic auth.
    htpasswd: Option<&'a str>,
    /// Log every request (level info) to `registry.log` in the registry's directory.
    log: bool,
    /// Refuse every upload (`storage.maintenance.readonly`).
    read_only: bool,
}

/// [`run`], with [`Options`].
fn run_with(
    mut cmd: Command,
    listen: &str,
    port: u16,
    address: String,
    options: Option<Options>,
) -> Option<Registry> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yml");
    let htpasswd = options.as_ref().and_then(|o| o.htpasswd);
    let log = options.as_ref().is_some_and(|o| o.log);
    let maintenance = match options.as_ref().is_some_and(|o| o.read_only) {
        true => "  maintenance:\n    readonly:\n      enabled: true\n",
        false => "",
    };
    let auth = match htpasswd {
        Some(text) => {
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{text}\n")).unwrap();
            format!(
                "auth:\n  htpasswd:\n    realm: slipway-test\n    path: {}\n",
                file.display()
            )
        }
        None => String::new(),
    };
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n{maintenance}http:\n  addr: {listen}:{port}\n{auth}",
            if log { "info" } else { "error" },
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // Its application log (at `info` with `log`: a line per request with its status and
    // digest) goes to registry.log; its access log (one line a request, on stdout) to
    // access.log: [`Registry::requests`].
    let stderr = match log {
        true => std::fs::File::create(dir.path().join("registry.log"))
            .unwrap()
            .into(),
        false => std::process::Stdio::null(),
    };
    let access = std::fs::File::create(dir.path().join("access.log")).unwrap();
    let child = cmd
        .arg("serve")
        .arg(&cfg)
        .stdout(access)
        .stderr(stderr)
        .spawn()
        .unwrap();
    // Dropping the guard stops the registry, on every path out of here.
    let reg = Registry {
        child,
        port,
        address,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&reg.address).is_ok() {
            return Some(reg);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("docker-registry did not start on {}", reg.address);
}

impl Registry {
    /// `localhost:PORT`: the name images are pushed under, as in the kind + registry recipe.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// Wires this registry into every node of the kind or k3d stand-in cluster `cluster` as
    /// [`Registry::host`] (tests/env/registry-wire: a containerd `certs.d` hosts.toml); returns
    /// the upstream the nodes pull from.
    pub fn wire(&self, cluster: &str) -> String {
        let out = Command::new(super::repo().join("tests/env/registry-wire"))
            .args([cluster, &self.host(), &self.port.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "registry-wire: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Every blob upload the registry completed, as its log says (`PUT .../blobs/uploads/...
    /// ?digest=...` answered 201), in order: `(digest, bytes it stores for it)`. Needs
    /// [`start_for_nodes`].
    pub fn uploaded_blobs(&self) -> Vec<(String, u64)> {
        let log = std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap();
        log.lines()
            .filter(|l| {
                l.contains("http.request.method=PUT")
                    && l.contains("/blobs/uploads/")
                    && l.contains("http.response.status=201")
            })
            .filter_map(|l| {
                let hex = l.split("digest=sha256%3A").nth(1)?.get(..64)?;
                let data = self
                    ._dir
                    .path()
                    .join("data/docker/registry/v2/blobs/sha256")
                    .join(&hex[..2])
                    .join(hex)
                    .join("data");
                let size = std::fs::metadata(data).map(|m| m.len()).unwrap_or(0);
                Some((format!("sha256:{hex}"), size))
            })
            .collect()
    }

    /// Every blob the registry served (`GET /v2/NAME/blobs/sha256:...` answered 200), as its
    /// log says, in order. Needs [`start_for_nodes`].
    pub fn served_blobs(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap();
        log.lines()
            .filter(|l| {
                l.contains("http.request.method=GET") && l.contains("http.response.status=200")
            })
            .filter_map(|l| {
                let hex = l.split("/blobs/sha256:").nth(1)?.get(..64)?;
                Some(format!("sha256:{hex}"))
            })
            .collect()
    }

    /// The bytes of the blobs the registry stores (its own storage, not what a client says it
    /// sent).
    pub fn stored_bytes(&self) -> u64 {
        fn walk(p: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self._dir.path().join("data/docker/registry/v2/blobs"))
    }

    /// How many requests the registry has answered whose request line (`POST
    /// /v2/app/web/blobs/uploads/ HTTP/1.1`) starts with `method` and contains `path`.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let log = std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(path))
            .count()
    }

    /// Blob uploads started so far (`POST .../blobs/uploads/`).
    pub fn uploads(&self) -> usize {
        self.requests("POST", "/blobs/uploads/")
    }

    /// GET of `path` (under `/v2/`) as JSON, asking for image manifests.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        serde_json::from_slice(&self.get_bytes(path)).unwrap()
    }

    /// GET of `path` (under `/v2/`): the bytes the registry serves (image manifests asked for).
    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-fsSL", "-H"])
            .arg("Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
            .arg(format!("http://{}/v2/{path}", self.address))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "GET {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Forwards the host's `127.0.0.1:port` to `to` for as long as the test runs: with
/// [`start_beside`], the host reaches that registry at the same address its daemon does.
pub fn forward(port: u16, to: &str) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let to = to.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let Ok(server) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}
