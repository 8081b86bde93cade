//! Reproducible images on the real daemon: normalisation gives two no-cache builds one image
//! ID, the build keeps its base image's layers as they are, and the comparison names the
//! step and file of a build that is not reproducible.

mod common;

use common::RunRetrying as _;

use std::process::Command;

use slipway::docker::Daemon;
use slipway::reproduce::{normalize, normalize_image};
use slipway::verify::{self, Difference};

/// SOURCE_DATE_EPOCH for the tests: before the base images were made, so their layers are
/// rewritten too.
const SDE: i64 = 1_700_000_000;

fn fixture(name: &str) -> std::path::PathBuf {
    common::repo().join("tests/fixtures/reproduce").join(name)
}

/// The busybox base the harness built (1.36 is asked for; Debian bookworm ships 1.35).
fn busybox() -> String {
    if let Ok(b) = std::env::var("SLIPWAY_TEST_BUSYBOX") {
        return b;
    }
    for tag in ["slipway-test/busybox:1.36", "slipway-test/busybox:1.35"] {
        let ok = Command::new("docker")
            .args(["image", "inspect", tag])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return tag.to_string();
        }
    }
    panic!("no slipway-test/busybox image: run scripts/env/images busybox");
}

/// Images and tags a test made, removed when it ends (whatever way it ends).
#[derive(Default)]
struct Cleanup {
    refs: Vec<(Option<String>, String)>,
}

impl Cleanup {
    fn add(&mut self, host: Option<&str>, r: &str) {
        self.refs.push((host.map(String::from), r.to_string()));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (host, r) in self.refs.iter().rev() {
            let mut c = Command::new("docker");
            if let Some(h) = host {
                c.args(["-H", h]);
            }
            let _ = c.args(["rmi", "-f", r]).output();
        }
    }
}

/// `DOCKER_BUILDKIT=0 docker build --no-cache` (the legacy builder, which stamps every layer
/// and the config with the time), returning the image ID.
fn legacy_build(host: Option<&str>, dir: &std::path::Path, tag: &str, base: &str) -> String {
    let mut c = Command::new("docker");
    if let Some(h) = host {
        c.args(["-H", h]);
    }
    let out = c
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--no-cache", "--build-arg"])
        .arg(format!("RUNTIME_IMAGE={base}"))
        // Normal forms are the same for everyone: a label of this run keeps its image IDs its own
        // (another test's clean-up cannot delete them).
        .arg("--label")
        .arg(format!(
            "dev.slipway.test-run={}",
            tag.rsplit_once(':').map_or(tag, |t| t.0)
        ))
        .args(["-t", tag])
        .arg(dir)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker build {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn local(docker: bollard::Docker) -> Daemon {
    Daemon::new(docker, slipway::docker::endpoint())
}

fn run(image: &str) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", image])
        .output_retrying()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn two_no_cache_builds_normalise_to_one_image_id() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let daemon = local(docker.clone());
    let base = busybox();
    let repo = common::unique("slipway-test-repro");
    let mut cleanup = Cleanup::default();
    let mut built = Vec::new();
    let mut normal = Vec::new();
    for n in 1..=2 {
        let tag = format!("{repo}:{n}");
        cleanup.add(None, &tag);
        let id = legacy_build(None, &fixture("files"), &tag, &base);
        cleanup.add(None, &id);
        built.push(id);
        let result = normalize_image(&daemon, &tag, SDE, std::slice::from_ref(&tag))
            .await
            .unwrap();
        cleanup.add(None, &result.image_id);
        assert!(result.layers.iter().any(|l| l.rewritten));
        normal.push(result.image_id);
    }
    assert_ne!(built[0], built[1], "the legacy builder stamps each build");
    assert_eq!(
        normal[0], normal[1],
        "normalised no-cache builds share an ID"
    );

    // The tags moved to the normal form, which runs, keeps its labels and has SDE as its time.
    let inspect = docker.inspect_image(&format!("{repo}:1")).await.unwrap();
    assert_eq!(inspect.id.as_deref(), Some(normal[0].as_str()));
    let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
    assert!(
        labels.contains_key("dev.slipway.input-digest"),
        "{labels:?}"
    );
    assert_eq!(inspect.created.map(|c| c.timestamp()), Some(SDE));
    assert_eq!(run(&format!("{repo}:2")), "new\n");
    let ls = Command::new("docker")
        .args(["run", "--rm", &format!("{repo}:1"), "sh", "-c"])
        .arg("ls -la /app /app/data /app/data/old; ls /app/gone 2>&1; stat -c '%h %Y %a' /app/data/hello /app/app.txt; readlink /app/data/symlink")
        .output_retrying()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("No such file"), "whiteout of /app/gone: {ls}");
    assert!(
        ls.contains(&format!("2 {SDE} 644")),
        "hard link count and clamped mtime: {ls}"
    );
    assert!(ls.contains(&format!("1 {SDE} 600")), "chmod kept: {ls}");
    assert!(ls.trim_end().ends_with("hello"), "symlink target: {ls}");

    // Idempotent: the normal form normalises to itself, without a load.
    let again = normalize_image(&daemon, &normal[0], SDE, &[])
        .await
        .unwrap();
    assert_eq!(again.image_id, normal[0]);
    assert!(again.already_present);
    assert!(again
        .layers
        .iter()
        .all(|l| !l.rewritten && l.before == l.after));

    // Another SOURCE_DATE_EPOCH is another image.
    let other = normalize(&daemon, &normal[0], SDE - 1, &[]).await.unwrap();
    cleanup.add(None, &other);
    assert_ne!(other, normal[0]);
}

#[tokio::test]
async fn a_step_that_writes_the_time_is_named_with_its_file() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let daemon = local(docker);
    let base = busybox();
    let repo = common::unique("slipway-test-stamp");
    let mut cleanup = Cleanup::default();
    let mut ids = Vec::new();
    for n in 1..=2 {
        let tag = format!("{repo}:{n}");
        cleanup.add(None, &tag);
        let built = legacy_build(None, &fixture("stamp"), &tag, &base);
        cleanup.add(None, &built);
        let id = normalize(&daemon, &tag, SDE, std::slice::from_ref(&tag))
            .await
            .unwrap();
        cleanup.add(None, &id);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    let diff = verify::compare(&daemon, &ids[0], &daemon, &ids[1])
        .await
        .unwrap()
        .expect("a difference");
    let text = verify::render_difference(&diff);
    let Difference::Layer {
        index, step, file, ..
    } = diff
    else {
        panic!("expected a layer difference: {text}");
    };
    // busybox has 2 layers; `RUN echo same` is layer 2, `RUN date` layer 3.
    let base_layers = docker_layers(&base);
    assert_eq!(index, base_layers + 1, "{text}");
    assert_eq!(step, "RUN date +%s%N > /stamp");
    let file = file.expect("a file");
    assert_eq!(file.path, "/stamp");
    assert!(file.differs.contains(&"content".to_string()), "{text}");
    let (a, b) = (file.first.unwrap(), file.second.unwrap());
    assert_eq!((a.mtime, b.mtime), (SDE, SDE));
    assert!(a.size > 10 && b.size > 10, "{text}");
    assert!(text.contains("/stamp: content differs"), "{text}");
    assert!(text.contains("made by `RUN date +%s%N > /stamp`"), "{text}");
    // The same image compares equal.
    assert_eq!(
        verify::compare(&daemon, &ids[0], &daemon, &ids[0])
            .await
            .unwrap(),
        None
    );
}

/// The production path (`slipway build`) leaves the base image's layers as they are, even
/// with a SOURCE_DATE_EPOCH older than every file in them, where normalising told of no bases
/// rewrites them (shown on the same image); only the layer the build made gets the epoch's
/// time.
#[tokio::test]
async fn the_build_keeps_the_base_images_layers_as_they_are() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let base = busybox();
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-test/keepbase");
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        format!("# {prefix}\nFROM {base}\nRUN echo made > /made.txt\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        format!(
            "[app]\nname = \"keepbase\"\n[images]\nprefix = \"{prefix}\"\n\
             [components.app]\ncontext = \"app\"\ndockerfile = \"app/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
    let out = common::slipway()
        .current_dir(dir.path())
        .env("SOURCE_DATE_EPOCH", "1")
        .args(["--progress", "plain", "build"])
        .output()
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".slipway/last-build.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    let mut cleanup = Cleanup::default();
    for tag in record["components"]["app"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
    {
        cleanup.add(None, tag.as_str().unwrap());
    }
    assert!(out.status.success(), "{}", text(&out));
    let image = record["components"]["app"]["image"].as_str().unwrap();
    let layers = |image: &str| -> Vec<String> {
        let out = Command::new("docker")
            .args(["image", "inspect", "-f", "{{json .RootFS.Layers}}", image])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (theirs, ours) = (layers(&base), layers(image));
    assert_eq!(ours.len(), theirs.len() + 1, "{ours:?}");
    assert_eq!(
        ours[..theirs.len()],
        theirs[..],
        "the base's layers were rewritten"
    );
    // Told of no bases, normalising would have rewritten them at this epoch.
    let other = format!("{prefix}/app:nobases");
    cleanup.add(None, &other);
    normalize_image(&local(docker), image, 1, std::slice::from_ref(&other))
        .await
        .unwrap();
    assert_ne!(layers(&other)[..theirs.len()], theirs[..]);
    let made = Command::new("docker")
        .args(["run", "--rm", image, "stat", "-c", "%Y", "/made.txt"])
        .output_retrying()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&made.stdout).trim(),
        "1",
        "the build's own layer was not normalised: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}

fn docker_layers(image: &str) -> usize {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{len .RootFS.Layers}}", image])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A benchmark, not a test: normalising the python base image (about 225 MB), cold and then
/// already normal. `cargo test --test reproduce -- --ignored --nocapture normalise_speed`.
#[tokio::test]
#[ignore]
async fn normalise_speed() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let daemon = local(docker);
    let image = std::env::var("SLIPWAY_BENCH_IMAGE").unwrap_or("slipway-test/python:3.11".into());
    let mut cleanup = Cleanup::default();
    let size = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Size}}", &image])
        .output()
        .unwrap();
    let size: f64 = String::from_utf8_lossy(&size.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    for sde in [0, i64::from(u32::MAX)] {
        let t = std::time::Instant::now();
        let first = normalize_image(&daemon, &image, sde, &[]).await.unwrap();
        let cold = t.elapsed();
        cleanup.add(None, &first.image_id);
        let t = std::time::Instant::now();
        let again = normalize_image(&daemon, &first.image_id, sde, &[])
            .await
            .unwrap();
        let warm = t.elapsed();
        assert_eq!(again.image_id, first.image_id);
        println!(
            "{image} ({:.0} MB), SOURCE_DATE_EPOCH={sde}: {} of {} layers rewritten, {:.2} s (export {} ms, rewrite {} ms, load {} ms); normal form again: {:.2} s (already present: {})",
            size / 1e6,
            first.layers.iter().filter(|l| l.rewritten).count(),
            first.layers.len(),
            cold.as_secs_f64(),
            first.export_ms,
            first.rewrite_ms,
            first.load_ms,
            warm.as_secs_f64(),
            again.already_present
        );
    }
}

/// The fixture project (tests/fixtures/reproduce) in a temporary directory, outside git (so
/// SOURCE_DATE_EPOCH is 0), with its images removed on drop.
struct Project {
    dir: tempfile::TempDir,
    prefix: String,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let src = common::repo().join("tests/fixtures/reproduce");
        for sub in ["files", "stamp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            for f in std::fs::read_dir(src.join(sub)).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), dir.path().join(sub).join(f.file_name())).unwrap();
            }
        }
        let prefix = common::unique("slipway-test-verify");
        // Normal forms are the same for everyone: a label of this run keeps its image IDs its
        // own (another test's clean-up cannot delete them).
        for sub in ["files", "stamp"] {
            let path = dir.path().join(sub).join("Dockerfile");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(
                &path,
                format!("{text}LABEL dev.slipway.test-run={prefix}\n"),
            )
            .unwrap();
        }
        let template = std::fs::read_to_string(src.join("slipway.toml.in")).unwrap();
        std::fs::write(
            dir.path().join("slipway.toml"),
            template
                .replace("@PREFIX@", &prefix)
                .replace("@BUSYBOX@", &busybox()),
        )
        .unwrap();
        Project { dir, prefix }
    }

    fn slipway(&self, args: &[&str]) -> std::process::Output {
        common::slipway()
            .args(args)
            .arg("--progress=plain")
            .current_dir(self.dir.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    }

    fn last_build(&self) -> serde_json::Value {
        let text =
            std::fs::read_to_string(self.dir.path().join(".slipway/last-build.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // By tag, not by ID: an image goes when its last tag does.
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}", "--filter"])
            .arg(format!("reference={}/*", self.prefix))
            .output();
        if let Ok(out) = out {
            let refs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !refs.is_empty() {
                let _ = Command::new("docker").arg("rmi").args(&refs).output();
            }
        }
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn verify_passes_a_reproducible_component_and_names_the_step_of_one_that_is_not() {
    let Some(_docker) = common::daemon().await else {
        return;
    };
    let p = Project::new();

    let out = p.slipway(&["verify", "files", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["identical"], true, "{}", text(&out));
    assert_eq!(report["first"]["image_id"], report["second"]["image_id"]);
    assert_eq!(report["source_date_epoch"]["source"], "zero");
    // The build record carries the normalised image ID and the input digest.
    let record = &p.last_build()["components"]["files"];
    assert_eq!(record["image_id"], report["first"]["image_id"]);
    assert_eq!(record["input_digest"], report["first"]["input_digest"]);
    assert!(record["input_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("normalise the image (SOURCE_DATE_EPOCH=0)"),
        "{}",
        text(&out)
    );

    let out = p.slipway(&["verify", "stamp"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let base_layers = docker_layers(&busybox());
    assert!(stdout.contains("stamp: NOT reproducible"), "{}", text(&out));
    assert!(
        stdout.contains(&format!(
            "first difference: layer {} (0-based; {} layers), made by `RUN date +%s%N > /stamp`",
            base_layers + 1,
            base_layers + 3
        )),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("/stamp: content differs"), "{}", text(&out));
    assert!(
        stdout.contains("mtime 0 (1970-01-01T00:00:00Z)"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("error: `stamp` is not reproducible: layer"),
        "{}",
        text(&out)
    );
    assert!(stderr.contains("hint: "), "{}", text(&out));
}

/// Starts a minikube node stand-in (dockerd inside) and removes it on drop.
struct MinikubeNode {
    profile: String,
    host: String,
}

impl MinikubeNode {
    fn start() -> Option<MinikubeNode> {
        let image = "slipway-test/minikube-node:bookworm";
        let present = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            if common::in_ci() {
                panic!("CI=true and {image} is missing: run scripts/env/images minikube-node");
            }
            eprintln!("SKIPPED: {image} is missing (scripts/env/images minikube-node)");
            return None;
        }
        let profile = common::unique("repro-mk");
        // Dropped (node removed) on every path out of here.
        let mut node = MinikubeNode {
            profile,
            host: String::new(),
        };
        let out = Command::new(common::repo().join("tests/env/minikube-up"))
            .arg(&node.profile)
            .output()
            .unwrap();
        assert!(out.status.success(), "minikube-up: {}", text(&out));
        let env = String::from_utf8_lossy(&out.stdout);
        node.host = env
            .lines()
            .find_map(|l| l.trim().strip_prefix("export DOCKER_HOST="))
            .unwrap_or_else(|| panic!("no DOCKER_HOST in minikube-up's output: {env}"))
            .trim_matches('"')
            .to_string();
        Some(node)
    }
}

impl Drop for MinikubeNode {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("tests/env/down"))
            .arg(&self.profile)
            .output();
    }
}

#[tokio::test]
async fn verify_against_a_minikube_nodes_daemon_gives_the_same_image_id() {
    let Some(_docker) = common::daemon().await else {
        return;
    };
    let Some(node) = MinikubeNode::start() else {
        return;
    };
    let p = Project::new();
    let out = p.slipway(&["verify", "files", "--against", &node.host]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("files: reproducible"), "{}", text(&out));
    assert!(stdout.contains(&node.host), "{}", text(&out));
    assert!(
        stderr.contains("copying base image") && stderr.contains(&node.host),
        "the node starts empty: {}",
        text(&out)
    );
    // The record still describes this machine's daemon: its image exists here.
    let id = p.last_build()["components"]["files"]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let here = Command::new("docker")
        .args(["image", "inspect", &id])
        .output()
        .unwrap();
    assert!(here.status.success(), "{id} is not on the local daemon");
    // And the node has the same image ID.
    let there = Command::new("docker")
        .args(["-H", &node.host, "image", "inspect", &id])
        .output()
        .unwrap();
    assert!(
        there.status.success(),
        "{id} is not on the node: {}",
        text(&there)
    );
}
