//! The reference app through `slipway up` on every daemon of the test matrix: Docker 20.10,
//! Docker 26.1 with the classic image store, and Docker 26.1 with the containerd image store
//! (Docker Desktop's and Engine 29's default), where builds must go over the BuildKit session.

mod common;

use std::path::Path;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" || name == ".next" || name == "__pycache__" {
            continue;
        }
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if ft.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// `docker ARGS` against the daemon at `host`.
fn docker_on(host: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .unwrap()
}

/// A command's standard output, then its standard error.
fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The bundled reference app (contexts, Dockerfiles, slipway.toml) in a directory of its own.
fn app_copy() -> tempfile::TempDir {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo.join("contexts"), &dir.path().join("contexts"));
    copy_tree(&repo.join("dockerfiles"), &dir.path().join("dockerfiles"));
    std::fs::copy(repo.join("slipway.toml"), dir.path().join("slipway.toml")).unwrap();
    dir
}

#[test]
fn the_reference_app_comes_up_on_every_daemon() {
    let dir = app_copy();
    let mut configs: Vec<(&str, String, String)> = Vec::new();
    for (label, host) in common::daemon_matrix() {
        // On the containerd image store, also load into a kind stand-in running on that daemon
        // (kind's own `kind load` fails from such daemons: kubernetes-sigs/kind#3795).
        let kind = (label == common::DAEMON_CONTAINERD).then(|| Kind::up(&host));
        let cluster = kind
            .as_ref()
            .map_or("none".to_string(), |k| format!("kind:{}", k.name));
        let out = common::slipway()
            .current_dir(dir.path())
            .env("DOCKER_HOST", &host)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            // Next.js's server-actions key: with it the frontend is reproducible too.
            .env("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY", SERVER_ACTIONS_KEY)
            .args(["--progress", "plain", "up", "--cluster", &cluster])
            .args(["--metadata-file", "run.json"])
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(out.status.success(), "{label} ({host}):\n{text}");
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
        let text_run = run.to_string();
        for component in ["backend", "frontend"] {
            assert!(
                text_run.contains(&format!("slipway/{component}:")),
                "{label}: {component} missing from run.json: {text_run}"
            );
            // The image is on that daemon under its tag, and runs there as the non-root user.
            let id = std::process::Command::new("docker")
                .env("DOCKER_HOST", &host)
                .args(["image", "inspect", "--format", "{{.Config.User}}"])
                .arg(format!("slipway/{component}:latest"))
                .output()
                .unwrap();
            assert!(
                id.status.success(),
                "{label}: slipway/{component}:latest: {}",
                String::from_utf8_lossy(&id.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&id.stdout).trim(),
                "10001:10001",
                "{label}"
            );
            let image = format!("slipway/{component}:latest");
            configs.push((label, component.to_string(), config_digest(&host, &image)));
        }
        assert!(dir.path().join("k8s").is_dir(), "{label}: no manifests");
        if let Some(kind) = &kind {
            for (component, command) in [
                ("backend", "python3 -c print(6*7)"),
                ("frontend", "node -e console.log(6*7)"),
            ] {
                let image = run
                    .pointer(&format!("/build/components/{component}/image"))
                    .and_then(|v| v.as_str())
                    .unwrap();
                let out = kind.ctr_run(&format!("docker.io/{image}"), command);
                assert_eq!(
                    out.trim(),
                    "42",
                    "{label}: {component} in the kind node: {out}"
                );
            }
            // A later `slipway load` (the images cached, exported from the containerd store
            // again) finds them present and sends nothing.
            let again = common::slipway()
                .current_dir(dir.path())
                .env("DOCKER_HOST", &host)
                .args(["--progress", "plain", "load", "--cluster", &cluster])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&again.stdout).to_string()
                + &String::from_utf8_lossy(&again.stderr);
            assert!(again.status.success(), "{text}");
            assert!(text.contains("already present"), "{text}");
            assert!(text.contains(": 0 B sent"), "{text}");
        }
    }
    // One image across daemon versions: each component has one config digest on all three.
    for component in ["backend", "frontend"] {
        let mut seen = configs.iter().filter(|(_, c, _)| c == component);
        let (first_label, _, first) = seen.next().unwrap();
        for (label, _, config) in seen {
            assert_eq!(config, first, "{component}: {label} vs {first_label}");
        }
    }
}

/// A Next.js server-actions key (base64 of 32 bytes), fixed for the tests.
const SERVER_ACTIONS_KEY: &str = "c2xpcHdheS10ZXN0LXNlcnZlci1hY3Rpb25zLWtleSE=";

/// The digest of `image`'s config on the daemon at `host` (on the containerd image store the
/// image ID is its manifest's digest): from the `manifest.json` of its `docker save`.
fn config_digest(host: &str, image: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("docker save \"$1\" | tar -xOf - manifest.json")
        .args(["sh", image])
        .env("DOCKER_HOST", host)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker save {image} on {host}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    let hex = config
        .trim_start_matches("blobs/sha256/")
        .trim_end_matches(".json");
    format!("sha256:{hex}")
}

/// A kind stand-in (one control-plane node) on the daemon at `host`, removed on drop.
struct Kind {
    name: String,
    host: String,
}

impl Kind {
    fn up(host: &str) -> Kind {
        let name = common::unique("mx").to_lowercase();
        let out = std::process::Command::new(common::repo().join("tests/env/kind-up"))
            .env("DOCKER_HOST", host)
            .arg(&name)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kind-up on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Kind {
            name,
            host: host.to_string(),
        }
    }

    /// Runs `command` in `image` inside the node with containerd's `ctr run`; its output.
    fn ctr_run(&self, image: &str, command: &str) -> String {
        let node = format!("{}-control-plane", self.name);
        let out = std::process::Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["exec", &node, "ctr", "-n", "k8s.io", "run", "--rm", image])
            .arg(common::unique("run").to_lowercase())
            .args(command.split(' '))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Kind {
    fn drop(&mut self) {
        let _ = std::process::Command::new(common::repo().join("tests/env/down"))
            .env("DOCKER_HOST", &self.host)
            .arg(&self.name)
            .output();
    }
}

/// One image across daemon versions: the reference backend built with no cache on the host's
/// Docker 20.10 (BuildKit 0.8) and on each Docker 26.1 (BuildKit 0.13, classic and containerd
/// image store) normalises to one image (`slipway verify --against`).
#[test]
fn the_reference_backend_is_one_image_on_every_daemon() {
    let dir = app_copy();
    for (label, host) in common::daemon_matrix() {
        if label == common::DAEMON_HOST {
            continue;
        }
        let out = common::slipway()
            .current_dir(dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--progress", "plain", "verify", "backend", "--json"])
            .args(["--against", &host])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{label}: {e}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(report["identical"], true, "20.10 vs {label}: {report:#}");
    }
}

/// `build --push` of the reference backend from each daemon of the matrix into one registry:
/// slipway pushes the normal form itself, so every daemon's push has the same manifest digest
/// (a daemon's own push gave a classic-store and a containerd-store daemon other digests), and
/// `docker pull` of what another daemon pushed works on Docker 20.10 and on the containerd-store
/// daemon, which then runs it.
#[test]
fn a_push_from_every_daemon_gives_the_same_image() {
    let matrix = common::daemon_matrix();
    let Some(containerd) = matrix
        .iter()
        .find(|(l, _)| *l == common::DAEMON_CONTAINERD)
        .map(|(_, h)| h.clone())
    else {
        return;
    };
    // The registry runs beside the containerd-store daemon, which reaches it on 127.0.0.1:PORT;
    // the host reaches it at the same address through a forwarder.
    let Some(reg) = common::registry::start_beside(&containerd) else {
        return;
    };
    let registry = format!("127.0.0.1:{}", reg.port);
    let app = common::unique("pushmx").to_lowercase();
    let dir = app_copy();
    let toml = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
    let mut pushed: Vec<(&str, String, String)> = Vec::new();
    for (label, host) in &matrix {
        // A repository per daemon: in one, the second daemon would find the image (its
        // input-digest tag) in the registry and build nothing.
        let prefix = format!("{registry}/{app}/{}", label.replace('.', "-"));
        std::fs::write(
            dir.path().join("slipway.toml"),
            toml.replacen("prefix = \"slipway\"", &format!("prefix = \"{prefix}\""), 1),
        )
        .unwrap();
        let out = common::slipway()
            .current_dir(dir.path())
            .env("DOCKER_HOST", host)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--progress", "plain", "build", "--push", "backend"])
            .args(["--metadata-file", "m.json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label} ({host}): {stderr}");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
        let pinned = meta["components"]["backend"]["pushed"]
            .as_str()
            .unwrap_or_else(|| panic!("{label}: no pushed digest: {meta:#}"))
            .to_string();
        pushed.push((label, host.clone(), pinned));
    }
    let digest = |p: &str| p.split_once('@').unwrap().1.to_string();
    let (first_label, _, first) = &pushed[0];
    for (label, _, p) in &pushed[1..] {
        assert_eq!(digest(p), digest(first), "{label} vs {first_label}");
    }
    // The registry's manifest names the image's config, and its config the layers it lists.
    let (repo, d) = first.split_once('@').unwrap();
    let name = repo.split_once('/').unwrap().1;
    let manifest = reg.get_json(&format!("{name}/manifests/{d}"));
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest:#}"
    );
    let config = manifest["config"]["digest"].as_str().unwrap();
    let blob = reg.get_json(&format!("{name}/blobs/{config}"));
    assert_eq!(
        blob["rootfs"]["diff_ids"].as_array().map(Vec::len),
        manifest["layers"].as_array().map(Vec::len),
        "{manifest:#}"
    );

    // Docker 20.10 and the containerd-store daemon each pull what another daemon pushed, and
    // run it.
    for (label, host) in &matrix {
        if *label == common::DAEMON_CLASSIC {
            continue;
        }
        let (other_label, _, other) = pushed.iter().rev().find(|(l, _, _)| l != label).unwrap();
        let docker = |args: &[&str]| docker_on(host, args);
        let pull = docker(&["pull", other]);
        assert!(
            pull.status.success(),
            "{label} pulling what {other_label} pushed ({other}): {}",
            String::from_utf8_lossy(&pull.stderr)
        );
        let run = docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "python3",
            other,
            "-c",
            "print(6*7)",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&run.stdout).trim(),
            "42",
            "{label} running {other}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let _ = docker(&["rmi", other]);
    }
}

/// A TCP proxy in front of the daemon at `target` (`tcp://HOST:PORT` or `unix:///PATH`) that
/// counts the bytes clients send.
async fn counting_proxy(target: &str) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (count, target) = (sent.clone(), target.to_string());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (target, count) = (target.clone(), count.clone());
            tokio::spawn(async move {
                if let Some(path) = target.strip_prefix("unix://") {
                    if let Ok(server) = tokio::net::UnixStream::connect(path).await {
                        pipe(client, server, count).await;
                    }
                } else if let Ok(server) =
                    tokio::net::TcpStream::connect(target.trim_start_matches("tcp://")).await
                {
                    pipe(client, server, count).await;
                }
            });
        }
    });
    (format!("tcp://{addr}"), sent)
}

/// Copies both ways between `client` and `server`, counting what the client sends.
async fn pipe<S>(
    client: tokio::net::TcpStream,
    server: S,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n @ 1..) = cr.read(&mut buf).await {
            count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// On every daemon, normalising after a one-line change loads back only what changed: the
/// bytes slipway sends the daemon (counted by a proxy in front of it, not by slipway) stay far
/// below the size of the image's big layer, which is rewritten to the same normal form every
/// time. Once those images are removed, the layer is sent again.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_small_change_only_the_changed_layer_goes_back_to_the_daemon() {
    for (label, host) in common::daemon_matrix() {
        eprintln!("{label}: {host}");
        only_the_changed_layer_goes_back(&host).await;
    }
}

async fn only_the_changed_layer_goes_back(host: &str) {
    let busybox = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    let prefix = common::unique("slipway-heldback");
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Dockerfile"),
        format!(
            "FROM {busybox}\nRUN head -c 8000000 /dev/urandom > /blob\nCOPY app.txt /app.txt\n\
             LABEL dev.slipway.test-run={prefix}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("slipway.toml"),
        format!(
            "[app]\nname = \"held\"\n[images]\nprefix = \"{prefix}\"\ntags = [\"latest\"]\n\
             [components.web]\ncontext = \".\"\ndockerfile = \"Dockerfile\"\nport = 8080\n"
        ),
    )
    .unwrap();
    let (proxy, sent) = counting_proxy(host).await;
    let docker = |args: &[&str]| docker_on(host, args);
    let image = format!("{prefix}/web:latest");
    let build = |line: &str| {
        std::fs::write(root.join("app.txt"), line).unwrap();
        sent.store(0, std::sync::atomic::Ordering::SeqCst);
        let out = common::slipway()
            .current_dir(root)
            .env("DOCKER_HOST", &proxy)
            .env("SLIPWAY_CACHE_DIR", cache.path())
            .args(["--progress", "plain", "build"])
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        // The image is whole: its files are there and the daemon can export every blob.
        let run = docker(&[
            "run",
            "--rm",
            &image,
            "sh",
            "-c",
            "cat /app.txt; echo; wc -c < /blob",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&run.stdout)
                .split_whitespace()
                .collect::<Vec<_>>(),
            [line, "8000000"],
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let save = docker(&["save", &image]);
        assert!(
            save.status.success(),
            "{}",
            String::from_utf8_lossy(&save.stderr)
        );
        sent.load(std::sync::atomic::Ordering::SeqCst)
    };
    let cleanup = || {
        let refs = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference={prefix}/*"),
        ]);
        for r in String::from_utf8_lossy(&refs.stdout).split_whitespace() {
            docker(&["rmi", r]);
        }
    };

    let first = build("one");
    assert!(
        first > 8_000_000,
        "the first load carries the big layer ({first} bytes)"
    );
    let second = build("two");
    assert!(
        second < 2_000_000,
        "after a one-line change slipway sent the daemon {second} bytes: the rewritten big \
         layer went back although the daemon holds it"
    );

    // The images slipway loaded are gone (a user removed them, and with them their blobs):
    // what slipway remembers no longer counts, and the big layer travels again.
    cleanup();
    let third = build("three");
    assert!(
        third > 8_000_000,
        "the whole load was redone ({third} bytes)"
    );
    cleanup();
}
