//! `slipway load` against the real daemon and node stand-ins: kind nodes (containerd inside)
//! and minikube nodes (dockerd, or containerd, inside), started here through bollard with the
//! names, labels and flags kind and minikube give their nodes.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bollard::Docker;
use slipway::cluster::{self, LoadReport, NodeLoad, Outcome};
use slipway::config::ClusterTarget;
use slipway::docker::Daemon;
use slipway::record::BuiltImage;
use slipway::report::{Event, Reporter};

// ---------------------------------------------------------------------------------------------
// The environment: node stand-ins, test images, cleanup.
// ---------------------------------------------------------------------------------------------

fn image_name(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn image_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A harness image (built by scripts/env/images), built now when missing.
fn harness_image(var: &str, default: &str, recipe: &str) -> Option<String> {
    let name = image_name(var, default);
    if !image_exists(&name) {
        let script = common::repo().join("scripts/env/images");
        if script.is_file() {
            let _ = Command::new(&script).arg(recipe).status();
        }
    }
    if image_exists(&name) {
        return Some(name);
    }
    if common::in_ci() {
        panic!("CI=true and the test image {name} is missing (scripts/env/images {recipe})");
    }
    eprintln!("SKIPPED: test image {name} is missing (run scripts/env/images {recipe})");
    None
}

/// Containers and images a test made; removed when it ends, also on failure.
struct Env {
    docker: Docker,
    daemon: Daemon,
    kind_node: String,
    minikube_node: String,
    busybox: String,
    containers: Mutex<Vec<String>>,
    images: Mutex<Vec<String>>,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        let containers = self.containers.lock().unwrap().clone();
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let images = self.images.lock().unwrap().clone();
        if !images.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&images)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

async fn env() -> Option<Env> {
    let docker = common::daemon().await?;
    let kind_node = harness_image(
        "SLIPWAY_TEST_IMAGE_KIND_NODE",
        "slipway-test/kind-node:bookworm",
        "kind-node",
    )?;
    let minikube_node = harness_image(
        "SLIPWAY_TEST_IMAGE_MINIKUBE_NODE",
        "slipway-test/minikube-node:bookworm",
        "minikube-node",
    )?;
    let busybox = harness_image(
        "SLIPWAY_TEST_IMAGE_BUSYBOX",
        "slipway-test/busybox:1.35",
        "busybox",
    )?;
    let daemon = slipway::docker::connect(Duration::from_secs(5))
        .await
        .expect("daemon");
    Some(Env {
        docker,
        daemon,
        kind_node,
        minikube_node,
        busybox,
        containers: Mutex::new(vec![]),
        images: Mutex::new(vec![]),
        dirs: Mutex::new(vec![]),
    })
}

/// The flags node stand-ins run with (`--privileged` fails on these hosts).
fn node_host_config(publish: bool) -> HostConfig {
    HostConfig {
        cap_add: Some(vec!["ALL".into()]),
        cap_drop: Some(vec!["SYS_RESOURCE".into()]),
        security_opt: Some(vec![
            "seccomp=unconfined".into(),
            "apparmor=unconfined".into(),
        ]),
        // What the CLI's `--security-opt systempaths=unconfined` turns into.
        masked_paths: Some(vec![]),
        readonly_paths: Some(vec![]),
        device_cgroup_rules: Some(vec!["a *:* rwm".into()]),
        tmpfs: Some(HashMap::from([
            ("/tmp".to_string(), String::new()),
            ("/run".to_string(), String::new()),
        ])),
        port_bindings: publish.then(|| {
            HashMap::from([(
                "2376/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])
        }),
        ..Default::default()
    }
}

impl Env {
    async fn start_container(
        &self,
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
        volume: &str,
        publish: bool,
    ) {
        self.containers.lock().unwrap().push(name.to_string());
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            hostname: Some(name.to_string()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            // An anonymous volume: overlayfs cannot sit on the node's own overlayfs.
            volumes: Some(vec![volume.to_string()]),
            exposed_ports: publish.then(|| vec!["2376/tcp".to_string()]),
            host_config: Some(node_host_config(publish)),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(opts), body)
            .await
            .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
        self.docker
            .start_container(
                name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .unwrap_or_else(|e| panic!("starting node {name}: {e}"));
    }

    /// Waits until `cmd` succeeds in `node`.
    async fn wait_ready(&self, node: &str, cmd: &[&str]) {
        let t0 = Instant::now();
        loop {
            if let Ok(o) = cluster::exec::run(&self.docker, node, cmd).await {
                if o.code == 0 {
                    return;
                }
            }
            if t0.elapsed() > Duration::from_secs(60) {
                panic!("node {node} did not come up: {}", cmd.join(" "));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A kind cluster stand-in: `NAME-control-plane`, `NAME-worker`, ...
    async fn kind(&self, name: &str, workers: usize) -> Vec<String> {
        let mut nodes = vec![format!("{name}-control-plane")];
        for i in 1..=workers {
            nodes.push(if i == 1 {
                format!("{name}-worker")
            } else {
                format!("{name}-worker{i}")
            });
        }
        for n in &nodes {
            let role = if n.ends_with("control-plane") {
                "control-plane"
            } else {
                "worker"
            };
            self.start_container(
                n,
                &self.kind_node,
                &[
                    ("io.x-k8s.kind.cluster", name),
                    ("io.x-k8s.kind.role", role),
                ],
                "/var/lib/containerd",
                false,
            )
            .await;
        }
        for n in &nodes {
            self.wait_ready(n, &["ctr", "version"]).await;
        }
        nodes
    }

    /// A minikube node stand-in with dockerd inside (the Docker runtime).
    async fn minikube(&self, profile: &str) -> String {
        self.start_container(
            profile,
            &self.minikube_node,
            &[
                ("name.minikube.sigs.k8s.io", profile),
                ("created_by.minikube.sigs.k8s.io", "true"),
            ],
            "/var/lib/docker",
            true,
        )
        .await;
        self.wait_ready(profile, &["docker", "info"]).await;
        profile.to_string()
    }

    /// Builds an image with the legacy builder from `dockerfile` and `files`.
    fn build(&self, tag: &str, dockerfile: &str, files: &[(&str, Vec<u8>)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        for (name, data) in files {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        self.images.lock().unwrap().push(tag.to_string());
        let out = Command::new("docker")
            .args(["build", "-q", "-t", tag, "."])
            .env("DOCKER_BUILDKIT", "0")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build {tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.dirs.lock().unwrap().push(dir);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn tag(&self, from: &str, to: &str) {
        self.images.lock().unwrap().push(to.to_string());
        assert!(docker(&["tag", from, to]).0);
    }

    async fn load(
        &self,
        target: &ClusterTarget,
        images: &[(&str, &str, &str)],
        reporter: &dyn Reporter,
    ) -> LoadReport {
        let images: Vec<BuiltImage> = images
            .iter()
            .map(|(c, r, i)| BuiltImage::recorded(c, r, i))
            .collect();
        cluster::load(&self.daemon, target, &images, reporter)
            .await
            .expect("load")
    }
}

fn docker(args: &[&str]) -> (bool, String) {
    let out = Command::new("docker").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn random(n: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    // Incompressible and unique per call (a counter plus the time seeds it).
    static SEED: AtomicUsize = AtomicUsize::new(0);
    let seed = format!(
        "{}-{:?}",
        SEED.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
    );
    let mut out = Vec::with_capacity(n + 32);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < n {
        block = Sha256::digest(block);
        out.extend_from_slice(&block);
    }
    out.truncate(n);
    out
}

/// Runs `cmd` in a container made from `image` inside a containerd node.
/// Runs `cmd` in a container of `image` in `node` and returns what it printed. `ctr run` can
/// lose the whole output of a process that exits at once while exiting 0 itself
/// (containerd/containerd#770; seen here once, on a busy CI machine, for a `cat` that prints
/// a line): a run that printed nothing runs again, up to three times. Every command given
/// here prints something.
fn ctr_run(node: &str, image: &str, cmd: &[&str]) -> String {
    let mut out = String::new();
    for _ in 0..3 {
        let id = common::unique("run");
        let mut args = vec![
            "exec", node, "ctr", "-n", "k8s.io", "run", "--rm", image, &id,
        ];
        args.extend_from_slice(cmd);
        let ok;
        (ok, out) = docker(&args);
        assert!(ok, "ctr run {image} in {node}: {out}");
        if !out.trim().is_empty() {
            break;
        }
    }
    out
}

/// Bytes in the node's containerd content store (every blob it holds), as the node sees it,
/// once the store is quiet: containerd's garbage collection may still be removing blobs after
/// an earlier import (du then fails on a file that vanished under it, or counts a moment's
/// state), so two readings in a row must agree.
fn content_bytes(node: &str) -> u64 {
    let mut last: Option<u64> = None;
    let mut out = String::new();
    for _ in 0..20 {
        let (ok, text) = docker(&[
            "exec",
            node,
            "du",
            "-sb",
            "/var/lib/containerd/io.containerd.content.v1.content/blobs",
        ]);
        let now = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|_| ok);
        if let (Some(n), true) = (now, now == last) {
            return n;
        }
        (last, out) = (now, text);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    panic!("du in {node} never gave the same size twice: {out}");
}

fn containerd_refs(node: &str) -> Vec<(String, String, String)> {
    let (ok, out) = docker(&["exec", node, "ctr", "-n", "k8s.io", "images", "check"]);
    assert!(ok, "{out}");
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c.len() > 3).then(|| (c[0].to_string(), c[2].to_string(), c[3].to_string()))
        })
        .collect()
}

/// The size of an image's top layer tar, from a `docker save`.
fn top_layer_size(image: &str) -> u64 {
    let out = Command::new("docker")
        .args(["save", image])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut sizes = HashMap::new();
    let mut manifest = Vec::new();
    let mut ar = tar::Archive::new(&out.stdout[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "manifest.json" {
            std::io::Read::read_to_end(&mut e, &mut manifest).unwrap();
        } else {
            sizes.insert(p, e.size());
        }
    }
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layers = m[0]["Layers"].as_array().unwrap();
    sizes[layers.last().unwrap().as_str().unwrap()]
}

fn result<'a>(report: &'a LoadReport, component: &str, node: &str) -> &'a NodeLoad {
    report
        .results
        .iter()
        .find(|r| r.component == component && r.node == node)
        .unwrap_or_else(|| panic!("no result for {component}@{node}: {report:#?}"))
}

/// Records events; runs a hook on each (to stop a node mid-load).
#[derive(Default)]
struct Hooked {
    events: Mutex<Vec<Event>>,
    #[allow(clippy::type_complexity)]
    hook: Option<Box<dyn Fn(&Event) + Send + Sync>>,
}

impl Reporter for Hooked {
    fn report(&self, event: Event) {
        if let Some(h) = &self.hook {
            h(&event);
        }
        self.events.lock().unwrap().push(event);
    }
}

fn silent() -> Hooked {
    Hooked::default()
}

// ---------------------------------------------------------------------------------------------
// kind
// ---------------------------------------------------------------------------------------------

/// Full load into two nodes (one of which got the image the way `kind load` does), a no-op
/// second load, and a one-line change that sends only the changed layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_loads_only_what_each_node_lacks() {
    let Some(env) = env().await else { return };
    let name = common::unique("lk");
    let nodes = env.kind(&name, 1).await;
    let (cp, worker) = (nodes[0].as_str(), nodes[1].as_str());
    let target = ClusterTarget::Kind(name.clone());

    let repo = common::unique("slipway-load-test/app");
    let a = format!("{repo}:a");
    let big = 20 << 20;
    let a_id = env.build(
        &a,
        &format!("FROM {}\nCOPY data.bin /data.bin\nRUN echo one > /one.txt\nCMD [\"cat\", \"/one.txt\"]\n", env.busybox),
        &[("data.bin", random(big))],
    );
    let a_full = format!("docker.io/{a}");

    // The control plane gets the image the way `kind load docker-image` does it.
    let kind_way = format!(
        "docker save {a} | docker exec -i {cp} ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -"
    );
    assert!(Command::new("sh")
        .args(["-c", &kind_way])
        .status()
        .unwrap()
        .success());

    let r = env.load(&target, &[("web", &a, &a_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.cluster.as_deref(), Some(format!("kind:{name}").as_str()));
    let on_cp = result(&r, "web", cp);
    assert_eq!(on_cp.outcome, Outcome::AlreadyPresent, "{r:#?}");
    assert_eq!(on_cp.bytes_sent, 0);
    let on_worker = result(&r, "web", worker);
    assert_eq!(
        on_worker.outcome,
        Outcome::Loaded {
            layers_sent: 4,
            layers_total: 4
        },
        "{r:#?}"
    );
    assert!(on_worker.bytes_sent > big as u64);
    assert!(
        on_worker.summary.starts_with("loaded 4 of 4 layers ("),
        "{}",
        on_worker.summary
    );
    for n in [cp, worker] {
        assert_eq!(ctr_run(n, &a_full, &["cat", "/one.txt"]).trim(), "one");
    }

    // A second load transfers nothing.
    let t0 = Instant::now();
    let r = env.load(&target, &[("web", &a, &a_id)], &silent()).await;
    let noop = t0.elapsed();
    assert!(r.ok(), "{r:#?}");
    for n in [cp, worker] {
        let x = result(&r, "web", n);
        assert_eq!(x.outcome, Outcome::AlreadyPresent, "{r:#?}");
        assert_eq!(x.bytes_sent, 0);
    }
    assert_eq!(r.bytes_sent, 0);
    eprintln!("no-op load into 2 nodes: {noop:?}");

    // A one-line change: only the new layer crosses, to both nodes.
    let b = format!("{repo}:b");
    let b_id = env.build(&b, &format!("FROM {a}\nRUN echo two > /two.txt\n"), &[]);
    let layer = top_layer_size(&b);
    let stored_before = [cp, worker].map(content_bytes);
    let r = env.load(&target, &[("web", &b, &b_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    for (n, before) in [cp, worker].into_iter().zip(stored_before) {
        // Measured on the node, not by slipway's counter: its content store grew by the
        // layer, the config and the manifests.
        let grew = content_bytes(n) - before;
        assert!(
            grew >= layer && grew <= layer + 16 * 1024,
            "{n}: the content store grew by {grew} for a layer of {layer}"
        );
        let x = result(&r, "web", n);
        assert_eq!(
            x.outcome,
            Outcome::Loaded {
                layers_sent: 1,
                layers_total: 5
            },
            "{r:#?}"
        );
        // The layer plus config, manifest, index and tar framing: a few kB, not 20 MB.
        assert!(
            x.bytes_sent >= layer && x.bytes_sent <= layer + 16 * 1024,
            "{n}: sent {} for a layer of {layer}",
            x.bytes_sent
        );
        assert_eq!(
            ctr_run(
                n,
                &format!("docker.io/{b}"),
                &["cat", "/two.txt", "/one.txt"]
            ),
            "two\none\n"
        );
    }

    // The partial import gave the image the manifest a full import gives: a `kind load` now
    // leaves the reference where it is.
    let digest_of = |node: &str| {
        containerd_refs(node)
            .into_iter()
            .find(|(n, _, _)| *n == format!("docker.io/{b}"))
            .map(|(_, d, _)| d)
            .unwrap()
    };
    let before = digest_of(worker);
    let kind_way = format!(
        "docker save {b} | docker exec -i {worker} ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -"
    );
    assert!(Command::new("sh")
        .args(["-c", &kind_way])
        .status()
        .unwrap()
        .success());
    assert_eq!(digest_of(worker), before);
    assert_eq!(digest_of(cp), before);

    // The same image under another name: a tag, no transfer.
    let c = format!("{repo}:c");
    env.tag(&b, &c);
    let r = env.load(&target, &[("web", &c, &b_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    for n in [cp, worker] {
        let x = result(&r, "web", n);
        assert!(matches!(x.outcome, Outcome::Retagged { .. }), "{r:#?}");
        assert_eq!(x.bytes_sent, 0);
        assert_eq!(
            ctr_run(n, &format!("docker.io/{c}"), &["cat", "/two.txt"]),
            "two\n"
        );
    }
}

/// Several images into fresh nodes: the next image streams while the nodes still unpack the
/// last (its import slowed here by a `ctr` that waits after each import), unless it needs a
/// layer the last one is still bringing: then it waits, and that layer is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_streams_the_next_image_while_the_nodes_import_the_last() {
    let Some(env) = env().await else { return };
    let name = common::unique("lkp");
    let nodes = env.kind(&name, 0).await;
    let node = nodes[0].as_str();
    let target = ClusterTarget::Kind(name.clone());
    let bb = env.busybox.clone();
    let bb_id = docker(&["image", "inspect", "-f", "{{.Id}}", &bb]).1;
    let r = env
        .load(&target, &[("base", &bb, bb_id.trim())], &silent())
        .await;
    assert!(r.ok(), "{r:#?}");
    // Every import now ends 3 s after containerd has the image.
    common::slow_imports(node, 3);
    let base_layers = docker(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", &bb]).1;
    let base_layers: usize = base_layers.trim().parse().unwrap();

    let repo = common::unique("slipway-load-test/pipe");
    let image = |tag: &str, from: &str| {
        let reference = format!("{repo}:{tag}");
        let dockerfile = format!("FROM {from}\nCOPY {tag}.bin /{tag}.bin\n");
        let id = env.build(
            &reference,
            &dockerfile,
            &[(&format!("{tag}.bin"), random(1 << 20))],
        );
        (reference, id)
    };
    let (b, b_id) = image("b", &bb);
    let (c, c_id) = image("c", &bb);
    let (d, d_id) = image("d", &bb);
    let (e, e_id) = image("e", &d);
    let events = Hooked::default();
    let r = env
        .load(
            &target,
            &[
                ("b", &b, &b_id),
                ("c", &c, &c_id),
                ("d", &d, &d_id),
                ("e", &e, &e_id),
            ],
            &events,
        )
        .await;
    assert!(r.ok(), "{r:#?}");
    let events = events.events.into_inner().unwrap();
    let at = |want: &dyn Fn(&Event) -> bool, what: &str| {
        events
            .iter()
            .position(want)
            .unwrap_or_else(|| panic!("no event {what}: {events:#?}"))
    };
    let started = |c: &str| {
        let task = format!("{c}@{node}");
        at(
            &move |e| matches!(e, Event::Started { task: t, .. } if *t == task),
            c,
        )
    };
    let finished = |c: &str| {
        let task = format!("{c}@{node}");
        at(
            &move |e| matches!(e, Event::Finished { task: t, .. } if *t == task),
            c,
        )
    };
    // c shares nothing b is bringing: it went out while b's import still ran.
    assert!(started("c") < finished("b"), "{events:#?}");
    // e is d plus a layer: it waited for d's import, and did not send d's layer again.
    assert!(finished("d") < started("e"), "{events:#?}");
    let one_more = base_layers + 1;
    for (component, total) in [
        ("b", one_more),
        ("c", one_more),
        ("d", one_more),
        ("e", one_more + 1),
    ] {
        assert_eq!(
            result(&r, component, node).outcome,
            Outcome::Loaded {
                layers_sent: 1,
                layers_total: total
            },
            "{component}: {r:#?}"
        );
    }
    for (reference, file) in [
        (&b, "/b.bin"),
        (&c, "/c.bin"),
        (&e, "/d.bin"),
        (&e, "/e.bin"),
    ] {
        let out = ctr_run(node, &format!("docker.io/{reference}"), &["wc", "-c", file]);
        assert!(out.starts_with("1048576 "), "{reference}: {out}");
    }
}

/// A node stopped in the middle of a load fails alone; the other ends consistent; after a
/// restart the next load sends to the restarted node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_node_stopped_mid_load_fails_alone() {
    let Some(env) = env().await else { return };
    let name = common::unique("lks");
    let nodes = env.kind(&name, 1).await;
    let (cp, worker) = (nodes[0].clone(), nodes[1].clone());
    let target = ClusterTarget::Kind(name.clone());
    let img = format!("{}:a", common::unique("slipway-load-test/stop"));
    let id = env.build(
        &img,
        &format!(
            "FROM {}\nCOPY one.bin /one.bin\nCOPY two.bin /two.bin\n",
            env.busybox
        ),
        &[("one.bin", random(8 << 20)), ("two.bin", random(8 << 20))],
    );

    // Stop the worker when its last layer starts: the 8 MB before it has gone through the
    // stream's buffers (a few MB) by then, so the node's `ctr` is reading and holds a lease.
    // (An earlier layer can start while the export is still in the buffers, before `ctr` runs.)
    let reporter = killing_at_last_layer(&worker);
    let r = env.load(&target, &[("web", &img, &id)], &reporter).await;
    assert!(!r.ok());
    let w = result(&r, "web", &worker);
    let Outcome::Failed { reason } = &w.outcome else {
        panic!("{r:#?}")
    };
    eprintln!("the stopped node says: {reason}");
    assert!(
        reason.contains(&format!("node container {worker} stopped during the load")),
        "{reason}"
    );
    let c = result(&r, "web", &cp);
    assert!(
        matches!(
            c.outcome,
            Outcome::Loaded {
                layers_sent: 4,
                layers_total: 4
            }
        ),
        "{r:#?}"
    );
    assert_eq!(
        ctr_run(&cp, &format!("docker.io/{img}"), &["ls", "/two.bin"]).trim(),
        "/two.bin"
    );
    assert!(reporter
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Failed { task, .. } if *task == format!("web@{worker}"))));

    // Restart the worker: no incomplete image of ours is registered there. The cut-off import's
    // lease (24 h, holding the blobs it got) outlived the stop.
    // `ctr leases ls` gives a lease's creation to the second: a lease counts as orphaned when
    // it is from a second before the new containerd started. A node back within the same
    // second as the cut-off import began (as a bare container can be) would keep it a day.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(docker(&["start", &worker]).0);
    env.wait_ready(&worker, &["ctr", "version"]).await;
    let leases = |node: &str| -> Vec<String> {
        let (ok, text) = docker(&["exec", node, "ctr", "-n", "k8s.io", "leases", "ls", "-q"]);
        assert!(ok, "{text}");
        text.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    };
    let orphans = leases(&worker);
    let refs = containerd_refs(&worker);
    assert!(
        refs.iter()
            .all(|(n, _, status)| status == "complete" || (!n.contains(&img) && *n != id)),
        "{refs:?}"
    );

    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    let c = result(&r, "web", &cp);
    assert_eq!(c.outcome, Outcome::AlreadyPresent);
    assert_eq!(c.bytes_sent, 0);
    let w = result(&r, "web", &worker);
    assert!(matches!(w.outcome, Outcome::Loaded { .. }), "{r:#?}");
    assert_eq!(
        ctr_run(&worker, &format!("docker.io/{img}"), &["ls", "/one.bin"]).trim(),
        "/one.bin"
    );
    // The next load released it (its own import's lease ends with the import).
    assert!(
        !orphans.is_empty(),
        "the stop left no lease: nothing was tested"
    );
    let now = leases(&worker);
    assert!(
        orphans.iter().all(|l| !now.contains(l)),
        "left: {now:?} (of {orphans:?})"
    );
}

/// A reporter that kills the node container `node` when the stream starts the last layer it
/// sends there (component `web`).
fn killing_at_last_layer(node: &str) -> Hooked {
    let seen = Arc::new(AtomicUsize::new(0));
    let task = format!("web@{node}");
    let victim = node.to_string();
    Hooked {
        events: Mutex::new(vec![]),
        hook: Some(Box::new(move |e| {
            if let Event::Step { task: t, step, .. } = e {
                let last = step
                    .strip_prefix("sending layer ")
                    .and_then(|s| s.split_once(" of "))
                    .and_then(|(n, rest)| Some((n, rest.split_whitespace().next()?)))
                    .is_some_and(|(n, of)| n == of);
                if *t == task && last && seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    assert!(docker(&["kill", &victim]).0);
                }
            }
        })),
    }
}

/// Layers of 16 MB and more go into a kind node's content store ahead of the archive, held
/// there by a small labelled blob of the import's own until the import names them. A node
/// stopped after one went in keeps that hold (containerd would never collect the layers); the
/// next load releases it, and a load that ends leaves no hold behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_node_stopped_after_a_layer_went_ahead_keeps_no_hold() {
    let Some(env) = env().await else { return };
    let name = common::unique("lkh");
    let nodes = env.kind(&name, 1).await;
    let (cp, worker) = (nodes[0].clone(), nodes[1].clone());
    let target = ClusterTarget::Kind(name.clone());
    let img = format!("{}:a", common::unique("slipway-load-test/ahead"));
    let files: Vec<(&str, Vec<u8>)> = ["one.bin", "two.bin", "three.bin"]
        .into_iter()
        .map(|f| (f, random(20 << 20)))
        .collect();
    let id = env.build(
        &img,
        &format!(
            "FROM {}\nCOPY one.bin /one.bin\nCOPY two.bin /two.bin\nCOPY three.bin /three.bin\n",
            env.busybox
        ),
        &files,
    );
    // The blobs holding layers sent ahead.
    let held = |node: &str| -> Vec<String> {
        let (ok, text) = docker(&["exec", node, "ctr", "-n", "k8s.io", "content", "ls"]);
        assert!(ok, "{text}");
        text.lines()
            .filter(|l| l.contains("containerd.io/gc.root=slipway-load."))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };

    // Stop the worker when its last layer starts: the first 20 MB layer went in and was
    // labelled while the second one streamed.
    let reporter = killing_at_last_layer(&worker);
    let r = env.load(&target, &[("web", &img, &id)], &reporter).await;
    let w = result(&r, "web", &worker);
    assert!(matches!(w.outcome, Outcome::Failed { .. }), "{r:#?}");
    let c = result(&r, "web", &cp);
    assert!(matches!(c.outcome, Outcome::Loaded { .. }), "{r:#?}");
    assert!(held(&cp).is_empty(), "{:?}", held(&cp));
    assert_eq!(
        ctr_run(&cp, &format!("docker.io/{img}"), &["ls", "/three.bin"]).trim(),
        "/three.bin"
    );

    assert!(spools(&cp).is_empty(), "{:?}", spools(&cp));

    // A label's second must come before the new containerd's start (see the lease test).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(docker(&["start", &worker]).0);
    env.wait_ready(&worker, &["ctr", "version"]).await;
    let orphans = held(&worker);
    assert!(
        !orphans.is_empty(),
        "the stop left no hold: nothing was tested"
    );
    // A layer's file the stop may have cut off is older than the new containerd; one made
    // since (another load's, arriving now) is not, and stays.
    let (stale, live) = (
        format!("{STORE}/slipway-spool.stale1"),
        format!("{STORE}/slipway-spool.live1"),
    );
    node_sh(
        &worker,
        &format!("touch -d '1 hour ago' {stale} && touch {live}"),
    );
    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(
        ctr_run(&worker, &format!("docker.io/{img}"), &["ls", "/one.bin"]).trim(),
        "/one.bin"
    );
    assert!(held(&worker).is_empty(), "{:?}", held(&worker));
    assert_eq!(spools(&worker), vec![live.clone()]);
}

/// Where a kind node's containerd keeps its blobs (the stand-ins' and kind's).
const STORE: &str = "/var/lib/containerd/io.containerd.content.v1.content";

/// Runs a shell script in `node`; returns its output.
fn node_sh(node: &str, script: &str) -> String {
    let (ok, out) = docker(&["exec", node, "sh", "-c", script]);
    assert!(ok, "{script}: {out}");
    out
}

/// The files of layers arriving in a node's content store directory.
fn spools(node: &str) -> Vec<String> {
    node_sh(
        node,
        &format!("ls -d {STORE}/slipway-spool.* 2>/dev/null; true"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Builds `img`: busybox and one 20 MB layer of random bytes (large enough to go ahead of
/// the archive). Returns the image ID and the bytes.
fn build_large_layer(env: &Env, img: &str) -> (String, Vec<u8>) {
    let data = random(20 << 20);
    let id = env.build(
        img,
        &format!("FROM {}\nCOPY data.bin /data.bin\n", env.busybox),
        &[("data.bin", data.clone())],
    );
    (id, data)
}

/// Asserts that a container of `image` on `node` reads `data` in /data.bin.
fn assert_holds_data(node: &str, image: &str, data: &[u8]) {
    use sha2::{Digest, Sha256};
    let want = format!("{:x}", Sha256::digest(data));
    let got = ctr_run(node, image, &["sha256sum", "/data.bin"]);
    assert_eq!(got.split_whitespace().next(), Some(want.as_str()), "{got}");
}

/// A large layer's bytes are written to a kind node's content store directory and committed
/// without containerd reading them; the import's unpacking checks them against the layer's
/// digest. Wrong bytes under the layer's name (here put there before the load) fail the
/// import, leave no image and no blob named, and the next load sends the layer again and
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_layer_with_wrong_bytes_never_becomes_an_image() {
    let Some(env) = env().await else { return };
    let name = common::unique("lkw");
    let cp = env.kind(&name, 0).await.remove(0);
    let target = ClusterTarget::Kind(name.clone());
    let img = format!("{}:a", common::unique("slipway-load-test/wrong"));
    let (id, data) = build_large_layer(&env, &img);
    let top = {
        let (ok, out) = docker(&[
            "image",
            "inspect",
            "-f",
            "{{range .RootFS.Layers}}{{.}} {{end}}",
            &img,
        ]);
        assert!(ok, "{out}");
        out.split_whitespace().last().unwrap().to_string()
    };
    let size = top_layer_size(&img);
    assert!(size >= 16 << 20, "the layer would not go ahead: {size}");
    let blob = format!("{STORE}/blobs/sha256/{}", top.trim_start_matches("sha256:"));
    node_sh(&cp, &format!("mkdir -p {STORE}/blobs/sha256 && head -c {size} /dev/zero > {blob} && chmod 0444 {blob}"));

    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    let Outcome::Failed { reason } = &result(&r, "web", &cp).outcome else {
        panic!("wrong bytes were loaded: {r:#?}")
    };
    eprintln!("the failed import says: {reason}");
    assert!(reason.contains("wrong diff id"), "{reason}");
    let full = format!("docker.io/{img}");
    let refs = containerd_refs(&cp);
    assert!(!refs.iter().any(|(n, _, _)| *n == full), "{refs:?}");
    let (ok, out) = docker(&["exec", &cp, "ctr", "-n", "k8s.io", "content", "ls", "-q"]);
    assert!(ok, "{out}");
    assert!(
        !out.lines().any(|l| l.trim() == top),
        "the wrong blob is still named: {out}"
    );

    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_holds_data(&cp, &full, &data);
    assert!(spools(&cp).is_empty(), "{:?}", spools(&cp));
}

/// A kind node whose containerd keeps each namespace's content apart (`content_sharing_policy
/// = "isolated"`) would read a blob placed in its directory again: its large layers go
/// through `ctr content ingest`, and the image runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_node_isolating_namespaces_gets_layers_through_ingest() {
    let Some(env) = env().await else { return };
    let name = common::unique("lki");
    let cp = env.kind(&name, 0).await.remove(0);
    let config = "version = 2\n[plugins.\"io.containerd.metadata.v1.bolt\"]\n  content_sharing_policy = \"isolated\"\n";
    node_sh(
        &cp,
        &format!("mkdir -p /etc/containerd && printf '{config}' > /etc/containerd/config.toml"),
    );
    assert!(docker(&["restart", &cp]).0);
    env.wait_ready(&cp, &["ctr", "version"]).await;
    let (ok, out) = docker(&["exec", &cp, "ctr", "plugins", "ls", "-d", "id==bolt"]);
    assert!(
        ok && out.contains("isolated"),
        "the node does not isolate: {out}"
    );

    let target = ClusterTarget::Kind(name.clone());
    let img = format!("{}:a", common::unique("slipway-load-test/isolated"));
    let (id, data) = build_large_layer(&env, &img);
    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_holds_data(&cp, &format!("docker.io/{img}"), &data);
    assert!(spools(&cp).is_empty(), "{:?}", spools(&cp));
}

/// An import that fails on a live node (a blob it was thought to have is gone) leaves no
/// reference to the incomplete image, and the next load repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_failed_import_is_cleaned_up_and_repaired() {
    let Some(env) = env().await else { return };
    let name = common::unique("lkf");
    let nodes = env.kind(&name, 0).await;
    let cp = nodes[0].clone();
    let target = ClusterTarget::Kind(name.clone());
    let repo = common::unique("slipway-load-test/fail");
    let a = format!("{repo}:a");
    let a_id = env.build(
        &a,
        &format!("FROM {}\nRUN echo a > /a.txt\n", env.busybox),
        &[],
    );
    let r = env.load(&target, &[("web", &a, &a_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");

    let b = format!("{repo}:b");
    let b_id = env.build(&b, &format!("FROM {a}\nRUN echo b > /b.txt\n"), &[]);
    // The node loses the bottom layer between the check and the import.
    let bottom = {
        let out = Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{index .RootFS.Layers 0}}",
                &b,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (node, blob) = (cp.clone(), bottom.clone());
    let reporter = Hooked {
        events: Mutex::new(vec![]),
        hook: Some(Box::new(move |e| {
            if let Event::Step { step, .. } = e {
                if step.starts_with("sending 1 of") {
                    let (ok, out) =
                        docker(&["exec", &node, "ctr", "-n", "k8s.io", "content", "rm", &blob]);
                    assert!(ok, "{out}");
                }
            }
        })),
    };
    let r = env.load(&target, &[("web", &b, &b_id)], &reporter).await;
    let x = result(&r, "web", &cp);
    let Outcome::Failed { reason } = &x.outcome else {
        panic!("{r:#?}")
    };
    eprintln!("the failed import says: {reason}");
    assert!(reason.contains("removed the incomplete image"), "{reason}");
    let b_full = format!("docker.io/{b}");
    let refs = containerd_refs(&cp);
    assert!(
        !refs.iter().any(|(n, _, _)| *n == b_full || *n == b_id),
        "{refs:?}"
    );

    let r = env.load(&target, &[("web", &b, &b_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(
        result(&r, "web", &cp).outcome,
        Outcome::Loaded {
            layers_sent: 2,
            layers_total: 4
        }
    );
    assert_eq!(
        ctr_run(&cp, &b_full, &["cat", "/a.txt", "/b.txt"]),
        "a\nb\n"
    );
}

// ---------------------------------------------------------------------------------------------
// minikube
// ---------------------------------------------------------------------------------------------

/// The Docker runtime: `docker load` of only the chains the node's daemon lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minikube_docker_loads_only_missing_chains() {
    let Some(env) = env().await else { return };
    let profile = common::unique("lm");
    let node = env.minikube(&profile).await;
    let target = ClusterTarget::Minikube(profile.clone());
    let repo = common::unique("slipway-load-test/mk");
    let a = format!("{repo}:a");
    let a_id = env.build(
        &a,
        &format!(
            "FROM {}\nCOPY data.bin /data.bin\nRUN echo one > /one.txt\n",
            env.busybox
        ),
        &[("data.bin", random(20 << 20))],
    );
    let r = env.load(&target, &[("web", &a, &a_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.runtime, Some(cluster::Runtime::Docker));
    let x = result(&r, "web", &node);
    assert!(
        matches!(
            x.outcome,
            Outcome::Loaded {
                layers_sent: 4,
                layers_total: 4
            }
        ),
        "{r:#?}"
    );
    let (ok, out) = docker(&[
        "exec", &node, "docker", "run", "--rm", &a, "cat", "/one.txt",
    ]);
    assert!(ok && out.trim() == "one", "{out}");

    let r = env.load(&target, &[("web", &a, &a_id)], &silent()).await;
    assert_eq!(result(&r, "web", &node).outcome, Outcome::AlreadyPresent);
    assert_eq!(r.bytes_sent, 0);

    let b = format!("{repo}:b");
    let b_id = env.build(&b, &format!("FROM {a}\nRUN echo two > /two.txt\n"), &[]);
    let layer = top_layer_size(&b);
    let now = || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
    };
    let since = now();
    let r = env.load(&target, &[("web", &b, &b_id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    // The node's store is as slipway left it: it is not asked again what it holds (only the
    // load and its check run in it).
    let (_, execs) = docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &now(),
        "--filter",
        "event=exec_create",
        "--filter",
        &format!("container={node}"),
    ]);
    assert!(
        execs.contains("docker load") && !execs.contains("image ls"),
        "execs in the node during the load:\n{execs}"
    );
    let x = result(&r, "web", &node);
    assert_eq!(
        x.outcome,
        Outcome::Loaded {
            layers_sent: 1,
            layers_total: 5
        },
        "{r:#?}"
    );
    assert!(
        x.bytes_sent >= layer && x.bytes_sent <= layer + 16 * 1024,
        "sent {} for a layer of {layer}",
        x.bytes_sent
    );
    let (ok, out) = docker(&[
        "exec", &node, "docker", "run", "--rm", &b, "cat", "/two.txt", "/one.txt",
    ]);
    assert!(ok && out == "two\none\n", "{out}");

    // Another name for a present image: a tag.
    let c = format!("{repo}:c");
    env.tag(&b, &c);
    let r = env.load(&target, &[("web", &c, &b_id)], &silent()).await;
    assert!(
        matches!(result(&r, "web", &node).outcome, Outcome::Retagged { .. }),
        "{r:#?}"
    );
    let (ok, out) = docker(&[
        "exec", &node, "docker", "image", "inspect", "--format", "{{.Id}}", &c,
    ]);
    assert!(ok && out.trim() == b_id, "{out}");

    // What `minikube docker-env` would give: the published port of the node's daemon.
    let env_ = cluster::minikube_docker_endpoint(&env.docker, &profile)
        .await
        .unwrap()
        .expect("docker endpoint");
    assert!(env_.host.starts_with("tcp://127.0.0.1:"), "{env_:?}");
    let inner = slipway::docker::connect_to(
        slipway::docker::Endpoint {
            host: env_.host.clone(),
            source: "test".into(),
        },
        Duration::from_secs(5),
    )
    .await
    .expect("the node's daemon answers");
    assert_eq!(
        inner.docker.inspect_image(&b).await.unwrap().id.as_deref(),
        Some(b_id.as_str())
    );
}

/// A minikube profile with the containerd runtime is loaded like kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minikube_containerd_is_loaded_like_kind() {
    let Some(env) = env().await else { return };
    let profile = common::unique("lmc");
    env.start_container(
        &profile,
        &env.kind_node,
        &[
            ("name.minikube.sigs.k8s.io", &profile),
            ("created_by.minikube.sigs.k8s.io", "true"),
        ],
        "/var/lib/containerd",
        false,
    )
    .await;
    env.wait_ready(&profile, &["ctr", "version"]).await;
    let img = format!("{}:a", common::unique("slipway-load-test/mkc"));
    let id = env.build(
        &img,
        &format!("FROM {}\nRUN echo c > /c.txt\n", env.busybox),
        &[],
    );
    let target = ClusterTarget::Minikube(profile.clone());
    let r = env.load(&target, &[("web", &img, &id)], &silent()).await;
    assert!(r.ok(), "{r:#?}");
    assert_eq!(r.runtime, Some(cluster::Runtime::Containerd));
    assert_eq!(
        ctr_run(&profile, &format!("docker.io/{img}"), &["cat", "/c.txt"]),
        "c\n"
    );
    assert_eq!(
        cluster::minikube_docker_endpoint(&env.docker, &profile)
            .await
            .unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Detection and the command
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_named_cluster_that_is_not_running_is_an_error_with_a_hint() {
    let Some(env) = env().await else { return };
    // What a load into `target` says when it fails.
    let refused = |target: ClusterTarget| {
        let daemon = &env.daemon;
        async move {
            let err = cluster::load(daemon, &target, &[], &silent())
                .await
                .unwrap_err();
            slipway::error::render(&err)
        }
    };
    let name = common::unique("absent");
    let text = refused(ClusterTarget::Kind(name.clone())).await;
    assert!(
        text.contains(&format!("kind cluster `{name}` is not running")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hint: create it with `kind create cluster --name {name}`"
        )),
        "{text}"
    );

    let text = refused(ClusterTarget::Minikube(name.clone())).await;
    assert!(text.contains("minikube start -p"), "{text}");

    let r = cluster::load(&env.daemon, &ClusterTarget::None, &[], &silent())
        .await
        .unwrap();
    assert_eq!(r.cluster, None);
    assert!(r.ok());

    // A cluster whose nodes are stopped (a daemon restart leaves kind's nodes so): the hint
    // names the command that starts them, and the way to go on without loading.
    let stopped = common::unique("stopped");
    let nodes = env.kind(&stopped, 0).await;
    let out = std::process::Command::new("docker")
        .args(["stop", "-t", "1", &nodes[0]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = refused(ClusterTarget::Kind(stopped.clone())).await;
    assert!(
        text.contains(&format!("kind cluster `{stopped}` is not running"))
            && text.contains(&format!("`docker start {}`", nodes[0]))
            && text.contains("--cluster none"),
        "{text}"
    );
}

/// Two clusters and no kube context: `auto` refuses to guess (through the binary, so the
/// kube context can be set for it alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_loads_reports_and_refuses_to_guess() {
    let Some(env) = env().await else { return };
    let name = common::unique("lcli");
    let nodes = env.kind(&name, 0).await;
    let other = common::unique("lcli-other");
    env.start_container(
        &other,
        &env.busybox,
        &[("name.minikube.sigs.k8s.io", &other)],
        "/data",
        false,
    )
    .await;

    let img = format!("{}:0123456789ab", common::unique("slipway-load-test/cli"));
    let id = env.build(
        &img,
        &format!("FROM {}\nRUN echo cli > /cli.txt\n", env.busybox),
        &[],
    );
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join("web")).unwrap();
    std::fs::write(
        p.join("slipway.toml"),
        "[app]\nname = \"demo\"\n\n[components.web]\ncontext = \"web\"\nport = 8080\n",
    )
    .unwrap();
    let (repo, tag) = img.rsplit_once(':').unwrap();
    let record = serde_json::json!({"components": {"web": {
        "image": img, "repository": repo, "tag": tag, "tags": [tag], "image_id": id,
        "input_digest": "sha256:00", "outcome": "built", "duration_ms": 1, "size": 1
    }}});
    std::fs::create_dir_all(p.join(".slipway")).unwrap();
    std::fs::write(p.join(".slipway/last-build.json"), record.to_string()).unwrap();
    let kubeconfig = p.join("no-kubeconfig");

    let out = common::slipway()
        .args([
            "load",
            "--progress",
            "plain",
            "--cluster",
            &format!("kind:{name}"),
            "--metadata-file",
            "load.json",
        ])
        .current_dir(p)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("web        {}  loaded 3 of 3 layers", nodes[0])),
        "{stdout}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("load.json")).unwrap()).unwrap();
    assert_eq!(meta["cluster"], format!("kind:{name}"));
    assert_eq!(meta["results"][0]["status"], "loaded");
    assert_eq!(meta["results"][0]["node"], nodes[0]);
    assert_eq!(
        ctr_run(&nodes[0], &format!("docker.io/{img}"), &["cat", "/cli.txt"]),
        "cli\n"
    );

    // auto with a kube context that names the kind cluster: that cluster, nothing to send.
    let ctx = p.join("kubeconfig");
    std::fs::write(
        &ctx,
        format!("apiVersion: v1\ncurrent-context: kind-{name}\ncontexts:\n- name: kind-{name}\n  context: {{cluster: kind-{name}}}\n"),
    )
    .unwrap();
    let out = common::slipway()
        .args(["load", "--cluster", "auto"])
        .current_dir(p)
        .env("KUBECONFIG", &ctx)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("already present") && stdout.contains(&format!("kind:{name}: 0 B sent")),
        "{stdout}"
    );

    // auto, no kube context, two clusters (at least): an error that lists them.
    let out = common::slipway()
        .args(["load", "--cluster", "auto"])
        .current_dir(p)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("several local clusters found"), "{stderr}");
    assert!(
        stderr.contains(&format!("kind:{name}")) && stderr.contains(&format!("minikube:{other}")),
        "{stderr}"
    );
    assert!(stderr.contains("hint: pass --cluster"), "{stderr}");

    // none: nothing to do, exit 0.
    let out = common::slipway()
        .args(["load", "--cluster", "none"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing loaded"));

    // An unknown component is a usage error.
    let out = common::slipway()
        .args(["load", "nope", "--cluster", &format!("kind:{name}")])
        .current_dir(p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no component `nope`"));

    // The image removed from the daemon since the build: the node holds it, so nothing is
    // missing; once the node lacks it too, each node's result names the image and the build
    // that brings it back, without the daemon's 404.
    let (removed, said) = docker(&["rmi", "-f", &img]);
    assert!(removed, "{said}");
    let load = || {
        common::slipway()
            .args(["load", "--cluster", &format!("kind:{name}")])
            .current_dir(p)
            .output()
            .unwrap()
    };
    let out = load();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("already present"));
    let refs = containerd_refs(&nodes[0]);
    let names: Vec<&str> = refs.iter().map(|(n, _, _)| n.as_str()).collect();
    let (ok, said) = docker(
        &[
            &["exec", &nodes[0], "ctr", "-n", "k8s.io", "images", "rm"][..],
            &names[..],
        ]
        .concat(),
    );
    assert!(ok, "{said}");
    let out = load();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let reason = format!(
        "failed: image {} ({img}) of component `web` is no longer in the Docker daemon (removed or pruned since the build): run `slipway build web` again\n",
        slipway::docker::images::short_id(&id)
    );
    assert!(stdout.contains(&reason), "{stdout}");
    assert!(
        !stdout.contains("404") && !stderr.contains("404"),
        "{stdout}{stderr}"
    );
}

/// A no-op `up` asks the nodes nothing: slipway remembers what each node held and a stat of
/// its image store, and the daemon runs no `exec` in any node (its own event stream says so).
/// (For a while after a load containerd still writes its store, so the first no-op runs may
/// still ask.)
/// Once an image is removed from one node by hand, the next `up` finds out and loads it there
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_up_asks_no_node_until_its_store_changes() {
    if common::daemon().await.is_none() {
        return;
    }
    let busybox = image_name("SLIPWAY_TEST_IMAGE_BUSYBOX", "slipway-test/busybox:1.35");
    let name = common::unique("noop");
    let _kind = common::stand_in("kind-up", &name, 1);
    let nodes = [format!("{name}-control-plane"), format!("{name}-worker")];
    let prefix = common::unique("slipway-noop");
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {busybox}\nRUN echo {prefix} > /made\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        format!(
            "[app]\nname = \"noop\"\n[images]\nprefix = \"{prefix}\"\n\
             [components.web]\ncontext = \".\"\ndockerfile = \"Dockerfile\"\nport = 8080\n"
        ),
    )
    .unwrap();
    let up = || {
        let since = docker(&["system", "info", "--format", "{{.SystemTime}}"]).1;
        let out = common::slipway()
            .current_dir(dir.path())
            .env("SLIPWAY_CACHE_DIR", cache.path())
            .args([
                "--progress",
                "plain",
                "up",
                "--cluster",
                &format!("kind:{name}"),
            ])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        let until = docker(&["system", "info", "--format", "{{.SystemTime}}"]).1;
        let (ok, events) = docker(&[
            "events",
            "--since",
            since.trim(),
            "--until",
            until.trim(),
            "--filter",
            "event=exec_create",
            "--format",
            "{{.Actor.Attributes.name}}",
        ]);
        assert!(ok, "{events}");
        let execs = events
            .lines()
            .filter(|l| nodes.iter().any(|n| l == n))
            .count();
        (text, execs)
    };
    let (first, execs) = up();
    assert!(first.contains("loaded"), "{first}");
    assert!(execs > 0, "the first up must ask the nodes:\n{first}");
    // containerd writes its store for a while after an import (garbage collection, the CRI
    // plugin labelling the new image; a collection can come seconds later, when the machine
    // is busy), so a no-op run may still ask; once the store is quiet, a no-op run asks
    // nothing, and neither does the next one: two runs in a row ask nothing.
    let mut quiet = Vec::new();
    let mut asked = Vec::new();
    for _ in 0..8 {
        let (text, execs) = up();
        if execs == 0 {
            assert!(text.contains("already present"), "{text}");
            quiet.push(text);
        } else {
            asked.push(format!("{execs} execs:\n{text}"));
            quiet.clear();
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        if quiet.len() == 2 {
            break;
        }
    }
    assert_eq!(
        quiet.len(),
        2,
        "no two no-op ups in a row asked the nodes nothing; the runs that asked: {asked:#?}"
    );

    // An image removed from a node by hand: the next up sees the store changed and loads it.
    let reference = format!("docker.io/{prefix}/web");
    let (ok, list) = docker(&[
        "exec", &nodes[1], "ctr", "-n", "k8s.io", "images", "ls", "-q",
    ]);
    assert!(ok, "{list}");
    let names: Vec<&str> = list
        .lines()
        .filter(|l| l.starts_with(&reference) || l.starts_with("sha256:"))
        .collect();
    let tagged = names
        .iter()
        .find(|l| l.starts_with(&reference))
        .expect("the image in the node")
        .to_string();
    for image in &names {
        docker(&[
            "exec", &nodes[1], "ctr", "-n", "k8s.io", "images", "rm", image,
        ]);
    }
    let (third, execs) = up();
    assert!(execs > 0, "{third}");
    let made = ctr_run(&nodes[1], &tagged, &["cat", "/made"]);
    assert_eq!(made.trim(), prefix, "{third}");
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep '^{prefix}/' | xargs -r docker rmi"
        ))
        .output();
}
