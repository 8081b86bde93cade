//! Faults, concurrent runs and secrets, on the real daemon and real node stand-ins.
//!
//! - Faults: a daemon that is not there (or does not answer) before a run; a daemon killed in
//!   the middle of a build (an isolated dockerd: the minikube node stand-in, never the shared
//!   host daemon); Ctrl-C while waiting for the project lock, while hashing a large context,
//!   during a build (BuildKit and legacy builder), during a push to a registry, during a
//!   load into a kind stand-in and at any moment of writing manifests and the chart;
//!   SIGTERM, SIGINT and SIGKILL at offsets while normalising and SIGTERM and SIGKILL during a
//!   load (no temporary tag or directory left, or the next run reaps it); a daemon that holds
//!   `POST /build` (a proxy in front of the real socket). A
//!   node stopped in the middle of a load is `tests/load.rs`
//!   (`kind_node_stopped_mid_load_fails_alone`: that node fails, the other finishes, the next
//!   run loads only the missing node).
//! - Concurrent runs in one project take turns on `.slipway/lock`, say whom they wait for,
//!   both succeed, and leave tags and emitted files that all come from one run.
//! - Every file slipway writes goes through `fsutil::write_atomic` (a source audit).
//! - Secrets: the reference app built and emitted with every secret set to a marker; the
//!   marker is in no image layer, config or history, no output, no report, no file but the
//!   Secret manifest (mode 0600).

mod common;
mod rely;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rely::{docker, image_id, Project};

const LIMIT: Duration = Duration::from_secs(180);

fn busybox_dockerfile(run: &str) -> String {
    format!("FROM slipway-test/busybox:1.35 AS production\nCOPY . /ctx\n{run}\n")
}

/// Every file under `root` (relative path → bytes), `.slipway/lock` left out.
fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                if rel != Path::new(".slipway/lock") {
                    out.insert(rel, std::fs::read(&p).unwrap_or_default());
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The daemon is not there
// ---------------------------------------------------------------------------------------------

/// A local TCP server that accepts connections and never answers: a hung daemon.
fn silent_server() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn a_daemon_that_is_not_there_is_a_clear_error_with_a_hint_at_once() {
    let p = Project::new(&[("app", &busybox_dockerfile(""))]);
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody listens on: what a crashed dockerd leaves.
    let stale = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let hosts = [
        format!("unix://{}", dir.path().join("missing.sock").display()),
        format!("unix://{}", stale.display()),
        format!("tcp://127.0.0.1:{}", rely::free_port()),
    ];
    for host in &hosts {
        for cmd in [&["build"][..], &["plan"], &["up", "--cluster", "none"]] {
            let mut c = p.slipway(cmd);
            c.env("DOCKER_HOST", host);
            let run = rely::run(c, Duration::from_secs(30)).no_panic();
            assert_eq!(run.code(), Some(1), "{cmd:?} {host}: {}", run.text());
            assert!(
                run.stderr
                    .contains(&format!("error: cannot reach the Docker daemon at {host}")),
                "{}",
                run.text()
            );
            assert!(
                run.stderr.contains("hint: start the Docker daemon"),
                "{}",
                run.text()
            );
            assert!(
                run.took < Duration::from_secs(2),
                "not answered in under 2 s: {}",
                run.text()
            );
        }
    }
    assert!(rely::temp_files(p.dir.path()).is_empty());

    // A daemon that accepts and never answers: the ping gives up after 5 s.
    let (_server, port) = silent_server();
    let host = format!("tcp://127.0.0.1:{port}");
    let mut c = p.slipway(&["build"]);
    c.env("DOCKER_HOST", &host);
    let run = rely::run(c, Duration::from_secs(30)).no_panic();
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("cannot reach the Docker daemon")
            && run.stderr.contains("no answer within"),
        "{}",
        run.text()
    );
    assert!(run.took < Duration::from_secs(8), "{}", run.text());
}

// ---------------------------------------------------------------------------------------------
// The daemon killed in the middle of a build (an isolated dockerd)
// ---------------------------------------------------------------------------------------------

/// A minikube node stand-in (dockerd inside), removed on drop.
struct InnerDaemon {
    node: String,
    host: String,
}

impl InnerDaemon {
    fn start() -> InnerDaemon {
        let node = common::unique("rely-mk");
        let port = rely::free_port().to_string();
        let out = Command::new(common::repo().join("tests/env/minikube-up"))
            .args([&node, &port])
            .output()
            .unwrap();
        let me = InnerDaemon {
            node,
            host: format!("tcp://127.0.0.1:{port}"),
        };
        assert!(
            out.status.success(),
            "tests/env/minikube-up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        me
    }

    /// Waits until the inner daemon answers.
    fn wait(&self) {
        let t0 = Instant::now();
        while !docker(Some(&self.host), &["version"]).status.success() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the inner dockerd of {} did not come back",
                self.node
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Copies an image of the host daemon into the node's daemon.
    fn give(&self, image: &str) {
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker save {image} | docker exec -i {} docker load",
                self.node
            ))
            .status()
            .unwrap();
        assert!(st.success(), "loading {image} into {}", self.node);
    }
}

impl Drop for InnerDaemon {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("tests/env/down"))
            .arg(&self.node)
            .output();
    }
}

fn minikube_node_image() -> bool {
    let image = std::env::var("SLIPWAY_TEST_IMAGE_MINIKUBE_NODE")
        .unwrap_or_else(|_| "slipway-test/minikube-node:bookworm".into());
    if image_id(None, &image).is_some() {
        return true;
    }
    if common::in_ci() {
        panic!("CI=true and {image} is missing: run scripts/env/images minikube-node");
    }
    eprintln!("SKIPPED: {image} is missing (scripts/env/images minikube-node)");
    false
}

#[tokio::test]
async fn a_daemon_killed_mid_build_is_named_and_the_next_run_succeeds() {
    if common::daemon().await.is_none() || !minikube_node_image() {
        return;
    }
    rely::require_busybox();
    let inner = InnerDaemon::start();
    inner.give(rely::BUSYBOX);
    let p = Project::new(&[("slow", &busybox_dockerfile("RUN echo first"))]);
    let on_inner = |args: &[&str]| {
        let mut c = p.slipway(args);
        c.env("DOCKER_HOST", &inner.host);
        c
    };
    rely::run(on_inner(&["build"]), LIMIT).ok();
    let latest = p.image("slow", "latest");
    let good = image_id(Some(&inner.host), &latest).expect("no first image");
    let before = rely::tags_under(&p.prefix, Some(&inner.host));

    // A build that takes a while; kill the daemon (SIGKILL to the node's dockerd, PID 1)
    // once its RUN step runs.
    let marker = common::unique("rely-killed");
    p.write(
        "slow/Dockerfile",
        busybox_dockerfile(&format!("RUN echo $((6*7))-{marker}; sleep 8; echo done")),
    );
    let mut child = rely::spawn(on_inner(&["build"]));
    // The step's own output (its command line, also shown, says `$((6*7))`).
    child.wait_for_line(&format!("42-{marker}"), Duration::from_secs(60));
    assert!(docker(None, &["kill", &inner.node]).status.success());
    let run = child.finish(Duration::from_secs(60)).no_panic();
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("lost the Docker daemon") && run.stderr.contains("`slow`"),
        "the error must name the component and say the daemon went away: {}",
        run.text()
    );
    assert!(run.stderr.contains("hint:"), "{}", run.text());
    assert!(run.took < Duration::from_secs(30), "{}", run.text());

    // Back up: no tag moved, none names a half-built image, no temporary tag.
    assert!(docker(None, &["start", &inner.node]).status.success());
    inner.wait();
    assert_eq!(rely::tags_under(&p.prefix, Some(&inner.host)), before);
    assert_eq!(
        image_id(Some(&inner.host), &latest).as_deref(),
        Some(good.as_str())
    );
    assert!(
        rely::containers_running(&marker, Some(&inner.host)).is_empty(),
        "a build container survived"
    );

    // The same build runs to the end now.
    let run = rely::run(on_inner(&["build"]), LIMIT).ok();
    assert!(run.stderr.contains("done"), "{}", run.text());
    let now = image_id(Some(&inner.host), &latest).unwrap();
    assert_ne!(now, good);
    let recorded = p.last_image("slow").unwrap();
    assert_eq!(
        image_id(Some(&inner.host), &recorded).as_deref(),
        Some(now.as_str())
    );
    assert!(rely::tags_under(&p.prefix, Some(&inner.host))
        .iter()
        .all(|t| !t.contains("slipway-build-")));
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C
// ---------------------------------------------------------------------------------------------

/// Sends SIGINT, then expects exit 130 soon after.
fn interrupt(child: rely::Running, within: Duration) -> rely::Run {
    stop(child, libc::SIGINT, within)
}

/// Sends `sig` (SIGINT or SIGTERM), then expects exit 130 or 143 soon after.
fn stop(child: rely::Running, sig: i32, within: Duration) -> rely::Run {
    let t0 = Instant::now();
    child.signal(sig);
    let run = child.finish(within + Duration::from_secs(30)).no_panic();
    let (code, says) = match sig {
        libc::SIGTERM => (143, "error: terminated"),
        _ => (130, "error: interrupted"),
    };
    assert_eq!(run.code(), Some(code), "{}", run.text());
    assert!(
        t0.elapsed() < within,
        "exit took {:?}: {}",
        t0.elapsed(),
        run.text()
    );
    assert!(run.stderr.contains(says), "{}", run.text());
    run
}

#[tokio::test]
async fn ctrl_c_while_waiting_for_the_project_lock_exits_130_and_writes_nothing() {
    // No daemon needed: every mutating command takes the lock before anything else.
    let p = Project::new(&[("app", &busybox_dockerfile(""))]);
    let held = slipway::lock::try_acquire(p.dir.path())
        .unwrap()
        .expect("the lock is free");
    let before = snapshot(p.dir.path());
    let me = std::process::id();
    for args in [
        &["build"][..],
        &["dockerfiles"],
        &[
            "manifests",
            "--image",
            "app=x/app:1",
            "--allow-missing-secrets",
        ],
        &["chart", "--image", "app=x/app:1"],
        &["load", "--cluster", "none"],
        &["up", "--cluster", "none"],
    ] {
        let mut child = rely::spawn(p.slipway(args));
        let line = child.wait_for_line("waiting for another slipway run", Duration::from_secs(20));
        assert!(
            line.contains(&format!("(pid {me}) in this project")),
            "{args:?}: {line}"
        );
        interrupt(child, Duration::from_secs(2));
        assert_eq!(snapshot(p.dir.path()), before, "{args:?} wrote something");
    }
    // Read-only commands never wait.
    let run = p.run(&["dockerfiles", "--check"], Duration::from_secs(20));
    assert!(
        !run.stderr.contains("waiting for another"),
        "{}",
        run.text()
    );
    drop(held);
}

#[tokio::test]
async fn ctrl_c_while_hashing_a_large_context_exits_at_once() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let p = Project::new(&[("app", &busybox_dockerfile(""))]);
    // Hashing 32 GiB of holes takes minutes here; Ctrl-C must not wait for it.
    let f = std::fs::File::create(p.path("app/big.bin")).unwrap();
    f.set_len(32 << 30).unwrap();
    drop(f);
    let mut child = rely::spawn(p.slipway(&["build"]));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.child.try_wait().unwrap().is_none(), "it ended early");
    let run = interrupt(child, Duration::from_secs(3));
    assert!(!run.stderr.contains("build started"), "{}", run.text());
    assert!(p.tags().is_empty());
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

/// Ctrl-C in the middle of a RUN step of `command` (`build` or `up`) with `builder`
/// (`buildkit` or `legacy`).
async fn ctrl_c_during_a_build(builder: &str, command: &[&str]) {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let p = Project::new(&[("app", &busybox_dockerfile("RUN echo one"))]);
    let mut first = p.slipway(&["build"]);
    first.env("SLIPWAY_BUILDER", builder);
    rely::run(first, LIMIT).ok();
    let tags = p.tags();
    let ids: Vec<Option<String>> = tags.iter().map(|t| image_id(None, t)).collect();
    let record = std::fs::read(p.path(".slipway/last-build.json")).unwrap();

    let marker = common::unique("rely-int");
    p.write(
        "app/Dockerfile",
        busybox_dockerfile(&format!("RUN echo $((6*7))-{marker}; sleep 60")),
    );
    let mut args = command.to_vec();
    args.extend(["--metadata-file", "meta.json"]);
    let mut cmd = p.slipway(&args);
    cmd.env("SLIPWAY_BUILDER", builder);
    // Its own temporary directory, to see that nothing is left in it.
    let tmp = tempfile::tempdir().unwrap();
    cmd.env("TMPDIR", tmp.path());
    let mut child = rely::spawn(cmd);
    // The step's own output: its container runs now.
    child.wait_for_line(&format!("42-{marker}"), Duration::from_secs(60));
    interrupt(child, Duration::from_secs(10));

    // Nothing moved, nothing named, nothing written, nothing left running.
    assert_eq!(p.tags(), tags, "{builder}: the tags changed");
    let now: Vec<Option<String>> = tags.iter().map(|t| image_id(None, t)).collect();
    assert_eq!(now, ids, "{builder}: a tag moved");
    assert_eq!(
        std::fs::read(p.path(".slipway/last-build.json")).unwrap(),
        record
    );
    assert!(!p.path("meta.json").exists());
    // `up` emits manifests and the chart only after every build.
    assert!(!p.path("k8s").exists() && !p.path("charts").exists());
    assert!(rely::temp_files(p.dir.path()).is_empty());
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{builder}: left in TMPDIR: {left:?}");
    let t0 = Instant::now();
    loop {
        let left = rely::containers_running(&marker, None);
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{builder}: build containers left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn ctrl_c_during_a_buildkit_build_leaves_nothing_behind() {
    ctrl_c_during_a_build("buildkit", &["build"]).await;
}

#[tokio::test]
async fn ctrl_c_during_a_legacy_build_leaves_nothing_behind() {
    ctrl_c_during_a_build("legacy", &["build"]).await;
}

#[tokio::test]
async fn ctrl_c_during_the_build_step_of_up_leaves_nothing_behind() {
    ctrl_c_during_a_build("buildkit", &["up", "--cluster", "none"]).await;
}

/// On every node: no import still running, no incomplete image of `p`'s.
fn no_import_left(kind: &Kind, p: &Project) {
    for node in &kind.nodes {
        let ps = kind.exec(node, &["ps", "-eo", "args"]);
        assert!(
            !ps.lines()
                .any(|l| l.contains("ctr") && l.contains("import")),
            "an import still runs in {node}:\n{ps}"
        );
        let check = kind.exec(node, &["ctr", "-n", "k8s.io", "images", "check"]);
        for line in check.lines().skip(1) {
            assert!(
                !line.contains(&p.prefix) || line.contains("complete"),
                "an incomplete image is registered in {node}: {line}"
            );
        }
    }
}

fn kind_node_image() -> bool {
    let image = std::env::var("SLIPWAY_TEST_IMAGE_KIND_NODE")
        .unwrap_or_else(|_| "slipway-test/kind-node:bookworm".into());
    if image_id(None, &image).is_some() {
        return true;
    }
    if common::in_ci() {
        panic!("CI=true and {image} is missing: run scripts/env/images kind-node");
    }
    eprintln!("SKIPPED: {image} is missing (scripts/env/images kind-node)");
    false
}

/// kind node stand-ins, removed on drop.
struct Kind {
    name: String,
    nodes: Vec<String>,
}

impl Kind {
    fn start(workers: usize) -> Kind {
        let name = common::unique("rely-kind").to_lowercase();
        let out = Command::new(common::repo().join("tests/env/kind-up"))
            .args([&name, &workers.to_string()])
            .output()
            .unwrap();
        let kind = Kind {
            name,
            nodes: String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
        };
        assert!(
            out.status.success(),
            "tests/env/kind-up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        kind
    }

    fn exec(&self, node: &str, cmd: &[&str]) -> String {
        let mut args = vec!["exec", node];
        args.extend_from_slice(cmd);
        let out = docker(None, &args);
        assert!(
            out.status.success(),
            "{cmd:?} in {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Kind {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("tests/env/down"))
            .arg(&self.name)
            .output();
    }
}

/// Ctrl-C at any moment of `manifests` and `chart`: every file left is whole, byte for byte
/// the old run's or the new one's (the two versions differ in port), no temporary file is
/// left, and the run ends done (0) or interrupted (130, or killed by the signal before
/// slipway listened for it, when nothing was written yet). Rounds alternate the versions with
/// the signal at random moments within the first quarter of a run's length; some must land
/// before the end. (The files are written one after the other without yielding, each to a
/// temporary file renamed over the old: a signal seen is seen after the last; were a write moved
/// to a blocking task or made async, a signal could cut it short, and some round would show a
/// file that is neither version or a temporary file left.)
#[test]
fn ctrl_c_at_any_moment_of_writing_manifests_and_the_chart_leaves_every_file_whole() {
    use std::os::unix::process::ExitStatusExt;
    let p = Project::new(&[("app", &busybox_dockerfile(""))]);
    let commands: [&[&str]; 2] = [
        &[
            "manifests",
            "--image",
            "app=x/app:1",
            "--allow-missing-secrets",
        ],
        &["chart", "--image", "app=x/app:1"],
    ];
    let toml = std::fs::read_to_string(p.path("slipway.toml")).unwrap();
    let set_port = |port: u16| {
        p.write(
            "slipway.toml",
            toml.replace("port = 8080", &format!("port = {port}")),
        )
    };
    let emitted = || {
        let mut files = snapshot(p.dir.path());
        files.retain(|rel, _| rel.starts_with("k8s") || rel.starts_with("charts"));
        files
    };
    // Each version's files, from runs to their end; how long a run takes (the quickest).
    let mut versions = Vec::new();
    let mut quickest = LIMIT;
    for port in [8080, 9090] {
        set_port(port);
        for args in commands {
            quickest = quickest.min(p.run(args, LIMIT).ok().took);
        }
        versions.push(emitted());
    }
    let differ = versions[0]
        .iter()
        .filter(|(rel, bytes)| versions[1].get(*rel) != Some(*bytes))
        .count();
    assert!(
        differ >= 2,
        "the two versions should differ in several files"
    );

    let (mut stopped, mut done) = (0, 0);
    let mut seed = u64::from(std::process::id());
    for round in 0..40 {
        set_port(if round % 2 == 0 { 8080 } else { 9090 });
        for args in commands {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = Duration::from_micros((seed >> 33) % (quickest.as_micros() as u64 / 4 + 1));
            let child = rely::spawn(p.slipway(args));
            std::thread::sleep(at);
            child.signal(libc::SIGINT);
            let run = child.finish(LIMIT);
            let what = format!("round {round}, {args:?}, SIGINT after {at:?}");
            match (run.code(), run.status.signal()) {
                (Some(0), _) => done += 1,
                (Some(130), _) | (None, Some(libc::SIGINT)) => stopped += 1,
                _ => panic!("{what}: {}", run.text()),
            }
            assert!(!run.stderr.contains("panicked"), "{what}: {}", run.text());
            for (rel, bytes) in emitted() {
                assert!(
                    versions.iter().any(|v| v.get(&rel) == Some(&bytes)),
                    "{what}: {} is neither version: {}",
                    rel.display(),
                    String::from_utf8_lossy(&bytes)
                );
            }
            assert!(
                rely::temp_files(p.dir.path()).is_empty(),
                "{what}: {:?}",
                rely::temp_files(p.dir.path())
            );
        }
    }
    assert!(
        stopped > 0 && done > 0,
        "the signals should fall both before and after the end: {stopped} stopped, {done} done"
    );
}

/// Ctrl-C while the daemon pushes a new image to the registry: exit 130 at once, no
/// temporary file, and neither the build record nor the `--metadata-file` claims a push of it
/// (a CI step that reads them sees none; `manifests` pins nothing half-pushed). The next
/// `build --push` pushes it and records the registry's digest.
#[tokio::test]
async fn ctrl_c_during_a_push_exits_130_and_claims_no_push() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let Some(reg) = common::registry::start() else {
        return;
    };
    // A 48 MB layer of random bytes: the daemon compresses and uploads it for a second or so.
    let p = Project::new(&[(
        "app",
        &busybox_dockerfile("RUN head -c 48000000 /dev/urandom > /big"),
    )]);
    let prefix = format!("127.0.0.1:{}/{}", reg.port, p.prefix);
    let toml = std::fs::read_to_string(p.path("slipway.toml")).unwrap();
    p.write(
        "slipway.toml",
        toml.replace(
            &format!("prefix = \"{}\"", p.prefix),
            &format!("prefix = \"{prefix}\""),
        ),
    );
    let pushed = |file: &str| -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(p.path(file)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        Some(v["components"]["app"]["pushed"].clone())
    };

    let args = ["build", "--push", "--metadata-file", "meta.json"];
    let mut child = rely::spawn(p.slipway(&args));
    child.wait_for_line(
        &format!("push to 127.0.0.1:{}", reg.port),
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(200));
    let run = interrupt(child, Duration::from_secs(5));
    assert!(
        !run.stderr.contains("] pushed "),
        "the push ended first: {}",
        run.text()
    );
    for file in [".slipway/last-build.json", "meta.json"] {
        if let Some(claim) = pushed(file) {
            assert!(claim.is_null(), "{file} claims a push: {claim}");
        }
    }
    assert!(rely::temp_files(p.dir.path()).is_empty());

    let run = p.run(&args, LIMIT).ok();
    let digest = pushed(".slipway/last-build.json").unwrap();
    let digest = digest
        .as_str()
        .unwrap_or_else(|| panic!("no push recorded: {}", run.text()));
    assert!(
        digest.starts_with(&format!("{prefix}/app@sha256:")),
        "{digest}"
    );
    assert_eq!(pushed("meta.json").unwrap(), digest);
    rely::remove_tags(&prefix, None);
}

#[tokio::test]
async fn ctrl_c_during_a_load_leaves_no_incomplete_image_and_the_next_load_completes() {
    if common::daemon().await.is_none() || !kind_node_image() {
        return;
    }
    rely::require_busybox();
    let kind = Kind::start(1);
    // Two big layers of noise, so that the transfer takes a moment.
    let marker = common::unique("rely-load");
    let p = Project::new(&[(
        "app",
        &busybox_dockerfile(&format!(
            "RUN echo {marker} && head -c 100000000 /dev/urandom > /one\nRUN head -c 100000000 /dev/urandom > /two"
        )),
    )]);
    rely::run(p.slipway(&["build"]), LIMIT).ok();
    let cluster = format!("kind:{}", kind.name);

    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut child = rely::spawn(p.slipway(&["load", "--cluster", &cluster]));
        child.wait_for_line("sending", Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(300));
        let run = stop(child, sig, Duration::from_secs(5));
        eprintln!("{}", run.stderr);
        assert!(rely::temp_files(p.dir.path()).is_empty());
        no_import_left(&kind, &p);
    }

    // `up` killed outright while it loads the normal form it just made: the files it kept for
    // the load stay behind in the cache directory until the next run removes them.
    let cache = tempfile::tempdir().unwrap();
    p.write(
        "app/Dockerfile",
        busybox_dockerfile(&format!(
            "RUN echo {marker}-2 && head -c 100000000 /dev/urandom > /one\nRUN head -c 100000000 /dev/urandom > /two"
        )),
    );
    let mut up = p.slipway(&["up", "--cluster", &cluster]);
    up.env("SLIPWAY_CACHE_DIR", cache.path());
    let mut child = rely::spawn(up);
    child.wait_for_line("sending", Duration::from_secs(180));
    child.signal(libc::SIGKILL);
    // (The limit counts from the start of the run.)
    child.finish(LIMIT * 2);
    let left = std::fs::read_dir(cache.path().join("tmp")).unwrap().count();
    assert!(left > 0, "the kill left no directory: nothing was tested");
    let mut next = p.slipway(&["manifests", "--allow-missing-secrets"]);
    next.env("SLIPWAY_CACHE_DIR", cache.path());
    rely::run(next, LIMIT).ok();
    let left: Vec<_> = std::fs::read_dir(cache.path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left: {left:?}");

    // The next load finishes the job (whichever image the last build recorded), and the image
    // runs on every node.
    rely::run(p.slipway(&["load", "--cluster", &cluster]), LIMIT).ok();
    let image = p.last_image("app").unwrap();
    for node in &kind.nodes {
        let id = common::unique("run");
        let out = kind.exec(
            node,
            &[
                "ctr",
                "-n",
                "k8s.io",
                "run",
                "--rm",
                &format!("docker.io/{image}"),
                &id,
                "ls",
                "/two",
            ],
        );
        assert_eq!(out.trim(), "/two", "{node}");
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrent runs
// ---------------------------------------------------------------------------------------------

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn two_builds_in_one_project_take_turns_and_agree() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let marker = common::unique("rely-turns");
    let p = Project::new(&[(
        "app",
        &busybox_dockerfile(&format!("RUN echo {marker}; sleep 3")),
    )]);
    let mut a = rely::spawn(p.slipway(&["build", "--metadata-file", "a.json"]));
    a.wait_for_line("build started", Duration::from_secs(60));
    let mut b = rely::spawn(p.slipway(&["build", "--metadata-file", "b.json"]));
    let line = b.wait_for_line("waiting for another slipway run", Duration::from_secs(30));
    assert!(
        line.contains(&format!("(pid {}) in this project", a.pid())),
        "{line}"
    );
    let a = a.finish(LIMIT).ok();
    let b = b.finish(LIMIT).ok();
    assert!(
        b.took > Duration::from_secs(2),
        "b did not wait: {}",
        b.text()
    );

    let (ma, mb) = (json(&p.path("a.json")), json(&p.path("b.json")));
    assert_eq!(ma["components"]["app"]["outcome"], "built", "{}", a.text());
    assert_eq!(mb["components"]["app"]["outcome"], "cached", "{}", b.text());
    let id = ma["components"]["app"]["image_id"].as_str().unwrap();
    assert_eq!(mb["components"]["app"]["image_id"], id);
    for tag in p.tags() {
        assert_eq!(image_id(None, &tag).as_deref(), Some(id), "{tag}");
    }
    let last = json(&p.path(".slipway/last-build.json"));
    assert_eq!(last["components"]["app"]["image_id"], id);
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

#[tokio::test]
async fn two_ups_in_one_project_take_turns_and_leave_one_runs_images_and_files() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    // Two different runs of one project: the same component with another build arg (a
    // second config file in the same directory: the same project, the same lock).
    let marker = common::unique("rely-ups");
    let p = Project::new(&[(
        "app",
        &busybox_dockerfile(&format!("ARG FLAVOR\nRUN echo {marker}-$FLAVOR; sleep 3")),
    )]);
    let toml = std::fs::read_to_string(p.path("slipway.toml")).unwrap();
    p.write(
        "slipway.toml",
        format!("{toml}build_args = {{ FLAVOR = \"a\" }}\n"),
    );
    p.write(
        "slipway-b.toml",
        format!("{toml}build_args = {{ FLAVOR = \"b\" }}\n"),
    );

    let mut a = rely::spawn(p.slipway(&["up", "--cluster", "none", "--metadata-file", "a.json"]));
    a.wait_for_line("build started", Duration::from_secs(60));
    let mut b = rely::spawn(p.slipway(&[
        "--config",
        "slipway-b.toml",
        "up",
        "--cluster",
        "none",
        "--metadata-file",
        "b.json",
    ]));
    let line = b.wait_for_line("waiting for another slipway run", Duration::from_secs(30));
    assert!(
        line.contains(&format!("(pid {}) in this project", a.pid())),
        "{line}"
    );
    let a = a.finish(LIMIT).ok();
    let b = b.finish(LIMIT).ok();
    assert!(a.stderr.contains(&format!("{marker}-a")), "{}", a.text());
    assert!(b.stderr.contains(&format!("{marker}-b")), "{}", b.text());

    let image = |m: &serde_json::Value| {
        m["build"]["components"]["app"]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ia, ib) = (
        image(&json(&p.path("a.json"))),
        image(&json(&p.path("b.json"))),
    );
    assert_ne!(ia, ib);
    // The second run's image everywhere: its tags, the record, every emitted file.
    let id_b = image_id(None, &ib).unwrap();
    assert_eq!(image_id(None, &p.image("app", "latest")), Some(id_b));
    assert_eq!(p.last_image("app").as_deref(), Some(ib.as_str()));
    let mut mentions_b = 0;
    for dir in ["k8s", "charts"] {
        for (rel, bytes) in snapshot(&p.path(dir)) {
            let text = String::from_utf8_lossy(&bytes);
            let tag_a = ia.rsplit(':').next().unwrap();
            assert!(
                !text.contains(tag_a),
                "{dir}/{} names the first run's image",
                rel.display()
            );
            mentions_b += usize::from(text.contains(ib.rsplit(':').next().unwrap()));
        }
    }
    assert!(
        mentions_b >= 2,
        "the manifests and the chart name the second run's image"
    );
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

#[test]
fn concurrent_emits_never_mix_files_from_different_runs() {
    // Six runs at once, each deploying a different image into the same directories; whatever
    // the order, each directory ends up exactly as one run alone writes it.
    let p = Project::new(&[
        ("web", &busybox_dockerfile("")),
        ("api", &busybox_dockerfile("")),
    ]);
    let variants: Vec<String> = (1..=6).map(|n| format!("v{n}")).collect();
    let args = |v: &str, kind: &str, out: &str| -> Vec<String> {
        let mut a = vec![kind.to_string(), "--out".into(), out.into()];
        for c in ["web", "api"] {
            a.push("--image".into());
            a.push(format!("{c}=registry.example/{c}:{v}"));
        }
        if kind == "manifests" {
            a.push("--allow-missing-secrets".into());
        }
        a
    };
    for kind in ["manifests", "chart"] {
        // What each run writes alone.
        let mut alone = Vec::new();
        for v in &variants {
            let out = format!("alone-{kind}-{v}");
            let a = args(v, kind, &out);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            p.run(&a, Duration::from_secs(30)).ok();
            alone.push(snapshot(&p.path(&out)));
        }
        assert_ne!(alone[0], alone[1], "the variants must differ");
        let shared = format!("shared-{kind}");
        let children: Vec<rely::Running> = variants
            .iter()
            .map(|v| {
                let a = args(v, kind, &shared);
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                rely::spawn(p.slipway(&a))
            })
            .collect();
        for c in children {
            c.finish(Duration::from_secs(60)).ok();
        }
        let result = snapshot(&p.path(&shared));
        assert!(
            alone.contains(&result),
            "{kind}: the files are a mix of several runs: {:?}",
            result.keys().collect::<Vec<_>>()
        );
    }
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Atomic writes: a source audit
// ---------------------------------------------------------------------------------------------

#[test]
fn every_file_slipway_writes_goes_through_write_atomic() {
    // Allowed: the implementation itself; the lock file (written in place by design: a
    // rename would give the next run a different inode to lock); and the code whose files are
    // scratch copies of layers inside a temporary directory, never output: image normalisation
    // with the docker-save reader it spools exports with, the push's compressed layers, the
    // registry client's downloaded blobs (verify --against a pushed image), and the blobs a
    // daemon pushes to the receiver normalising serves.
    let allowed = [
        "src/fsutil.rs",
        "src/lock.rs",
        "src/reproduce/normalize.rs",
        "src/archive/save.rs",
        "src/archive/gzip.rs",
        "src/registry/mod.rs",
        "src/docker/receive.rs",
    ];
    let forbidden = [
        "fs::write(",
        "File::create(",
        "OpenOptions::new(",
        "NamedTempFile",
        "fs::copy(",
    ];
    let mut stack = vec![common::repo().join("src")];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = path.strip_prefix(common::repo()).unwrap().to_path_buf();
            if allowed.iter().any(|a| rel == Path::new(a)) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests (the module at the end) may write what they like.
            let code = match text.find("#[cfg(test)]") {
                Some(i) => &text[..i],
                None => &text,
            };
            for (n, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                if forbidden.iter().any(|f| line.contains(f)) {
                    found.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "write these through slipway::fsutil::write_atomic:\n{}",
        found.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// Copies the reference app (slipway.toml, contexts/, dockerfiles/) with its own prefix.
fn reference_app(prefix: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let name = e.file_name();
            if [
                "node_modules",
                ".next",
                "__pycache__",
                ".venv",
                ".pytest_cache",
            ]
            .iter()
            .any(|n| name == *n)
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(&name));
            } else {
                std::fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("slipway-rely-ref-")
        .tempdir()
        .unwrap();
    let repo = common::repo();
    copy(&repo.join("contexts"), &dir.path().join("contexts"));
    copy(&repo.join("dockerfiles"), &dir.path().join("dockerfiles"));
    let toml = std::fs::read_to_string(repo.join("slipway.toml")).unwrap();
    assert!(toml.contains("prefix = \"slipway\""));
    std::fs::write(
        dir.path().join("slipway.toml"),
        toml.replace("prefix = \"slipway\"", &format!("prefix = \"{prefix}\"")),
    )
    .unwrap();
    dir
}

/// What to look for: each value, and its base64 (as in a Secret's `data`), padding left off
/// so that it matches inside longer encoded text too.
fn needles(markers: &[(String, String)]) -> Vec<(String, String)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for (name, value) in markers {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        out.push((name.clone(), value.clone()));
        out.push((format!("{name} (base64)"), b64[..b64.len() - 4].to_string()));
    }
    out
}

fn leaks(bytes: &[u8], needles: &[(String, String)]) -> Vec<String> {
    needles
        .iter()
        .filter(|(_, n)| bytes.windows(n.len()).any(|w| w == n.as_bytes()))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The needles found in the output of a shell pipeline (for whole images: grep -F streams
/// hundreds of MB quickly, and nothing is held in memory).
fn leaks_in_stream(pipeline: &str, needles: &[(String, String)]) -> Vec<String> {
    let patterns = tempfile::NamedTempFile::new().unwrap();
    let list: String = needles.iter().map(|(_, n)| format!("{n}\n")).collect();
    std::fs::write(patterns.path(), list).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {pipeline} | grep -a -o -F -f {}; test $? -le 1",
            patterns.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{pipeline}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8_lossy(&out.stdout);
    needles
        .iter()
        .filter(|(_, n)| found.lines().any(|l| l == n))
        .map(|(name, _)| name.clone())
        .collect()
}

#[tokio::test]
async fn no_secret_value_reaches_an_image_a_report_or_the_output() {
    if common::daemon().await.is_none() {
        return;
    }
    for base in ["slipway-test/python:3.11", "slipway-test/node:20"] {
        if image_id(None, base).is_none() {
            if common::in_ci() {
                panic!("CI=true and {base} is missing: run scripts/env/images");
            }
            eprintln!("SKIPPED: {base} is missing (scripts/env/images)");
            return;
        }
    }
    let prefix = common::unique("slipway-rely-secrets");
    let dir = reference_app(&prefix);
    let _cleanup = Untag(prefix.clone());
    let config = slipway::config::load(&dir.path().join("slipway.toml")).unwrap();
    let mut names: Vec<String> = config
        .components
        .values()
        .flat_map(|c| c.secrets.iter().chain(&c.build_secrets).cloned())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 4, "{names:?}");
    let markers: Vec<(String, String)> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                format!("{}-{n}", common::unique("slipway-marker")),
            )
        })
        .collect();

    let slipway = |args: &[&str]| {
        let mut c = common::slipway();
        c.args(args)
            .arg("--progress=plain")
            .arg("-v")
            .current_dir(dir.path())
            .env_remove("CI");
        for (n, v) in &markers {
            c.env(n, v);
        }
        rely::run(c, Duration::from_secs(600)).ok()
    };
    let runs = [
        slipway(&["build", "--metadata-file", "build.json"]),
        slipway(&["manifests"]),
        slipway(&["chart"]),
        slipway(&["plan", "--json"]),
        slipway(&["up", "--cluster", "none", "--metadata-file", "up.json"]),
    ];

    let mut scanned: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        scanned.push((format!("run {i} stdout"), r.stdout.clone()));
        scanned.push((format!("run {i} stderr"), r.stderr.clone().into_bytes()));
    }
    let needles = needles(&markers);
    let meta = json(&dir.path().join("build.json"));
    let mut images = Vec::new();
    for (component, record) in meta["components"].as_object().unwrap() {
        for tag in record["tags"].as_array().unwrap() {
            images.push((component.clone(), tag.as_str().unwrap().to_string()));
        }
    }
    assert!(images.len() >= 2, "{meta}");
    let mut found: Vec<String> = Vec::new();
    for (component, image) in &images {
        // docker save: every layer (uncompressed tars) and the image config, as bytes.
        for (what, pipeline) in [
            ("docker save", format!("docker save {image}")),
            (
                "docker history --no-trunc",
                format!("docker history --no-trunc {image}"),
            ),
            (
                "docker image inspect",
                format!("docker image inspect {image}"),
            ),
        ] {
            for leak in leaks_in_stream(&pipeline, &needles) {
                found.push(format!("{leak} in {what} of {component} ({image})"));
            }
        }
    }
    let size = docker(None, &["image", "inspect", "-f", "{{.Size}}", &images[0].1]);
    assert!(
        String::from_utf8_lossy(&size.stdout)
            .trim()
            .parse::<u64>()
            .unwrap()
            > 1 << 20
    );

    // Every file in the project: reports, generated files. Only the Secret manifests and the
    // chart's secrets values file (`helm -f`) may hold the values, and only readable by their
    // owner.
    let mut secret_files = Vec::new();
    for (rel, bytes) in snapshot(dir.path()) {
        let leaked = leaks(&bytes, &needles);
        let is_secret = String::from_utf8_lossy(&bytes).contains("kind: Secret");
        let values_file = rel.starts_with("charts")
            && rel.file_name() == Some(std::ffi::OsStr::new("secrets.values.yaml"));
        if !leaked.is_empty() && ((is_secret && rel.starts_with("k8s")) || values_file) {
            secret_files.push(rel);
        } else {
            scanned.push((rel.display().to_string(), bytes));
        }
    }
    for (what, bytes) in &scanned {
        for leak in leaks(bytes, &needles) {
            found.push(format!("{leak} in {what}"));
        }
    }
    assert!(
        found.is_empty(),
        "secret values leaked:\n{}",
        found.join("\n")
    );
    assert!(
        !secret_files.is_empty(),
        "no Secret manifest holds the values"
    );
    for rel in &secret_files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", rel.display());
    }
    // Every secret's value is there (so the scans above looked for something real).
    let all: Vec<u8> = secret_files
        .iter()
        .flat_map(|r| std::fs::read(dir.path().join(r)).unwrap())
        .collect();
    let present = leaks(&all, &needles);
    for (name, _) in &markers {
        assert!(
            present.contains(name) || present.contains(&format!("{name} (base64)")),
            "{name} is in no Secret manifest"
        );
    }
}

/// Untags every image under a prefix when dropped.
struct Untag(String);

impl Drop for Untag {
    fn drop(&mut self) {
        rely::remove_tags(&self.0, None);
    }
}

// ---------------------------------------------------------------------------------------------
// SIGTERM, SIGINT and SIGKILL in the middle of normalising an image
// ---------------------------------------------------------------------------------------------

/// Temporary build tags under the project's prefix.
fn temp_tags(p: &Project) -> Vec<String> {
    p.tags()
        .into_iter()
        .filter(|t| t.contains(":slipway-build-"))
        .collect()
}

/// The temporary tags a daemon pushed an image from while run `pid` normalised it
/// (`HOST/slipway-export/NAME:pPID-N`).
fn export_tags(pid: i32) -> Vec<String> {
    rely::tags_under("*/slipway-export", None)
        .into_iter()
        .filter(|t| t.contains(&format!(":p{pid}-")))
        .collect()
}

/// Temporary directories in the cache directory `cache`.
fn temp_dirs(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn signals_at_any_point_of_normalising_leave_no_temp_tag_or_directory() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    // A 48 MB layer of random bytes: exporting, rewriting and loading it back takes seconds.
    let dockerfile = |n: usize| {
        busybox_dockerfile(&format!(
            "RUN head -c 48000000 /dev/urandom > /big\n# round {n}"
        ))
    };
    let p = Project::new(&[("app", &dockerfile(0))]);
    let cache = tempfile::tempdir().unwrap();
    let slipway = |args: &[&str]| {
        let mut cmd = p.slipway(args);
        cmd.env("SLIPWAY_CACHE_DIR", cache.path());
        cmd
    };
    // (signal, milliseconds after normalising started); the last offsets fall in the load-back.
    let cases: [(i32, u64); 9] = [
        (libc::SIGTERM, 0),
        (libc::SIGTERM, 700),
        (libc::SIGTERM, 1800),
        (libc::SIGINT, 1200),
        (libc::SIGINT, 2600),
        (libc::SIGKILL, 300),
        (libc::SIGKILL, 1500),
        (libc::SIGKILL, 2800),
        (libc::SIGTERM, 3500),
    ];
    let mut seed = std::process::id() as u64;
    let (mut left_by_kill, mut stopped) = (0, 0);
    for (round, (sig, offset)) in cases.into_iter().enumerate() {
        // A little randomness on top of the fixed offsets.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = Duration::from_millis(offset + (seed >> 33) % 400);
        p.write("app/Dockerfile", dockerfile(round + 1));
        let mut child = rely::spawn(slipway(&["build"]));
        let pid = child.pid();
        child.wait_for_line("normalise the image", Duration::from_secs(120));
        std::thread::sleep(offset);
        child.signal(sig);
        let run = child.finish(LIMIT);
        let what = format!("round {round}: signal {sig} {offset:?} into normalising");
        match sig {
            libc::SIGKILL => {
                // Killed outright: the next run reaps what it left. A load-back the daemon
                // had whole when slipway died still names its image a moment later (nothing can
                // stop that): the next run comes after it, as a user's would.
                std::thread::sleep(Duration::from_secs(4));
                left_by_kill +=
                    temp_dirs(cache.path()).len() + temp_tags(&p).len() + export_tags(pid).len();
                let next = rely::run(slipway(&["build"]), LIMIT).ok();
                assert!(
                    temp_tags(&p).is_empty() && export_tags(pid).is_empty(),
                    "{what}: {:?} {:?}\n{}",
                    temp_tags(&p),
                    export_tags(pid),
                    next.text()
                );
            }
            _ => {
                let run = run.no_panic();
                let code = if sig == libc::SIGTERM { 143 } else { 130 };
                // It may have finished before the signal came.
                stopped += usize::from(run.code() == Some(code));
                assert!(
                    run.code() == Some(code) || run.code() == Some(0),
                    "{what}: {}",
                    run.text()
                );
                // An image load the daemon had whole finishes after slipway exits, unless slipway
                // waited for it: give it the time to show.
                std::thread::sleep(Duration::from_secs(4));
                assert!(
                    temp_tags(&p).is_empty() && export_tags(pid).is_empty(),
                    "{what}: {:?} {:?}\n{}",
                    temp_tags(&p),
                    export_tags(pid),
                    run.text()
                );
            }
        }
        assert!(
            temp_dirs(cache.path()).is_empty(),
            "{what}: {:?}",
            temp_dirs(cache.path())
        );
    }
    // The test means something: signals came mid-run, and kills left debris to reap.
    // (How many of the later offsets land before normalising ends depends on the machine's
    // speed: on a quiet machine it takes under two seconds.)
    assert!(stopped >= 1, "no run was stopped by SIGINT/SIGTERM");
    assert!(
        left_by_kill > 0,
        "no SIGKILL left anything: the reaping went untested"
    );
    assert!(rely::temp_files(p.dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// A daemon that stalls: a proxy in front of the real socket that never passes on `POST /build`
// ---------------------------------------------------------------------------------------------

/// The socket of the daemon the tests use (the proxies below stand in front of it).
fn daemon_socket() -> String {
    slipway::docker::endpoint()
        .host
        .strip_prefix("unix://")
        .expect("the host daemon on a unix socket")
        .to_string()
}

/// A unix socket `dir/name` in front of the daemon's: each connection gets its own to the
/// daemon, and `relay(client, daemon)` moves the bytes between them (in threads of its own).
/// Lives as long as the test process; returns its `DOCKER_HOST`.
fn proxy(
    dir: &Path,
    name: &str,
    relay: impl Fn(std::os::unix::net::UnixStream, std::os::unix::net::UnixStream) + Send + 'static,
) -> String {
    use std::os::unix::net::{UnixListener, UnixStream};
    let real = daemon_socket();
    let path = dir.join(name);
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if let Ok(daemon) = UnixStream::connect(&real) {
                relay(client, daemon);
            }
        }
    });
    format!("unix://{}", path.display())
}

/// Copies `from` to `to` in a thread of its own, each chunk only while `pass` (given the chunk
/// as text) says so; after that the chunks are read and dropped, so the other side waits.
fn relay_while(
    mut from: std::os::unix::net::UnixStream,
    mut to: std::os::unix::net::UnixStream,
    mut pass: impl FnMut(&str) -> bool + Send + 'static,
) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if pass(&String::from_utf8_lossy(&buf[..n])) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
}

/// A [`proxy`] that forwards everything, except that a connection on which a request line
/// `held` accepts is seen is held: the request never arrives and nothing is answered, as from
/// a daemon stuck on it.
fn stalling_proxy(dir: &Path, held: fn(&str) -> bool) -> String {
    proxy(dir, "stalling.sock", move |client, daemon| {
        let mut stuck = false;
        relay_while(
            client.try_clone().unwrap(),
            daemon.try_clone().unwrap(),
            move |text| {
                stuck |= text.lines().any(held);
                !stuck
            },
        );
        relay_while(daemon, client, |_| true);
    })
}

/// A [`proxy`] that goes silent a second after the first `POST .../build`: it still accepts
/// connections, but nothing goes through either way, as when a daemon's host or container
/// vanishes without closing the connections.
fn vanishing_proxy(dir: &Path) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let gone = Arc::new(AtomicBool::new(false));
    proxy(dir, "vanishing.sock", move |client, daemon| {
        let (to_daemon, to_client) = (gone.clone(), gone.clone());
        relay_while(
            client.try_clone().unwrap(),
            daemon.try_clone().unwrap(),
            move |text| {
                let build = text
                    .lines()
                    .any(|l| l.starts_with("POST ") && l.contains("/build"));
                if build {
                    let gone = to_daemon.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(1));
                        gone.store(true, Ordering::SeqCst);
                    });
                }
                !to_daemon.load(Ordering::SeqCst)
            },
        );
        relay_while(daemon, client, move |_| !to_client.load(Ordering::SeqCst));
    })
}

/// A daemon that vanishes mid-build without closing the connection (the build's stream just
/// goes silent) is found out by a ping on another connection, in seconds, not after the
/// build's idle bound.
#[tokio::test]
async fn a_daemon_that_vanishes_silently_mid_build_is_named_lost_within_seconds() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let p = Project::new(&[("app", &busybox_dockerfile("RUN sleep 30"))]);
    let dir = tempfile::tempdir().unwrap();
    let host = vanishing_proxy(dir.path());
    let mut cmd = p.slipway(&["build"]);
    cmd.env("DOCKER_HOST", &host);
    let run = rely::run(cmd, Duration::from_secs(60)).no_panic();
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(
        run.stderr.contains(&format!(
            "lost the Docker daemon at {host} while building `app`"
        )) && run.stderr.contains("ping"),
        "{}",
        run.text()
    );
    assert!(run.stderr.contains("hint:"), "{}", run.text());
    assert!(run.took < Duration::from_secs(35), "{}", run.text());
    assert!(p.tags().is_empty(), "{:?}", p.tags());
}

/// `slipway build` of a one-component busybox project through a [`stalling_proxy`] that holds
/// the requests `held` accepts, with the variable `bound` set; it must end with exit 1. The
/// project, the proxy's `DOCKER_HOST` and the run.
fn build_through_stall(
    held: fn(&str) -> bool,
    bound: (&str, &str),
) -> (Project, String, rely::Run) {
    rely::require_busybox();
    let p = Project::new(&[("app", &busybox_dockerfile("RUN echo stalled"))]);
    let dir = tempfile::tempdir().unwrap();
    let host = stalling_proxy(dir.path(), held);
    let mut cmd = p.slipway(&["build"]);
    cmd.env("DOCKER_HOST", &host).env(bound.0, bound.1);
    let run = rely::run(cmd, Duration::from_secs(60)).no_panic();
    assert_eq!(run.code(), Some(1), "{}", run.text());
    (p, host, run)
}

#[tokio::test]
async fn a_daemon_that_stalls_on_a_build_is_an_error_naming_it_and_the_request() {
    if common::daemon().await.is_none() {
        return;
    }
    let (p, host, run) = build_through_stall(
        |l| l.starts_with("POST ") && l.contains("/build"),
        ("SLIPWAY_BUILD_IDLE_TIMEOUT", "4"),
    );
    assert!(
        run.stderr.contains(&format!(
            "the Docker daemon at {host} did not answer `POST /build` of `app` for 4s"
        )),
        "{}",
        run.text()
    );
    assert!(
        run.stderr.contains("hint:")
            && run.stderr.contains("info`")
            && run.stderr.contains("SLIPWAY_BUILD_IDLE_TIMEOUT"),
        "{}",
        run.text()
    );
    assert!(run.took < Duration::from_secs(30), "{}", run.text());
    assert!(p.tags().is_empty(), "{:?}", p.tags());
}

/// Any other request the daemon leaves unanswered (here: inspecting the base image) ends the
/// run after the short request bound, naming the daemon and what to check.
#[tokio::test]
async fn a_daemon_that_stalls_on_any_request_is_an_error_within_the_short_bound() {
    if common::daemon().await.is_none() {
        return;
    }
    let (p, host, run) = build_through_stall(
        |l| l.starts_with("GET ") && l.contains("/images/") && l.contains("/json"),
        ("SLIPWAY_DAEMON_TIMEOUT", "3"),
    );
    assert!(
        run.stderr.contains(&format!(
            "no answer from the Docker daemon at {host} within 3s"
        )),
        "{}",
        run.text()
    );
    assert!(
        run.stderr.contains("slipway-test/busybox"),
        "the request is not named: {}",
        run.text()
    );
    assert!(
        run.stderr.contains("hint:") && run.stderr.contains("SLIPWAY_DAEMON_TIMEOUT"),
        "{}",
        run.text()
    );
    assert!(run.took < Duration::from_secs(20), "{}", run.text());
    assert!(p.tags().is_empty(), "{:?}", p.tags());
}

/// A `last-build.json` that is not valid is kept aside and named, never silently replaced.
#[tokio::test]
async fn a_corrupt_build_record_is_kept_aside_and_named() {
    if common::daemon().await.is_none() {
        return;
    }
    rely::require_busybox();
    let p = Project::new(&[("app", &busybox_dockerfile("RUN echo ok"))]);
    p.write(".slipway/last-build.json", "{\"components\": [trunc");
    let run = p.run(&["build"], Duration::from_secs(300)).no_panic();
    assert_eq!(run.code(), Some(0), "{}", run.text());
    let record = p.path(".slipway/last-build.json");
    assert!(
        run.stderr.contains(&format!(
            "{} was not a valid build record",
            record.display()
        )) && run.stderr.contains("last-build.json.corrupt"),
        "{}",
        run.text()
    );
    assert_eq!(
        std::fs::read_to_string(p.path(".slipway/last-build.json.corrupt")).unwrap(),
        "{\"components\": [trunc"
    );
    let last: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(last["components"]["app"]["image"].is_string(), "{last:#}");
}
