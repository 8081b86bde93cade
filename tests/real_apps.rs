//! Real apps as users lay them out: the app's own `.dockerignore` always applies, and with
//! `context = "."` slipway's own files stay out of the image and out of the digest.

mod common;

use common::RunRetrying as _;

use std::path::Path;
use std::process::{Command, Output};

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, body) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Removes the test's images however it ends.
struct Images(String);

impl Drop for Images {
    fn drop(&mut self) {
        let list = Command::new("docker")
            .args(["image", "ls", "-q", "--filter"])
            .arg(format!("reference={}/*", self.0))
            .output();
        if let Ok(list) = list {
            for id in String::from_utf8_lossy(&list.stdout).lines() {
                let _ = Command::new("docker").args(["rmi", "-f", id]).output();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apps_dockerignore_applies_and_slipways_files_stay_out() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let base = "slipway-test/python:3.11";
    if docker.inspect_image(base).await.is_err() {
        assert!(!common::in_ci(), "CI=true and {base} is missing");
        eprintln!("SKIPPED: {base} missing (scripts/env/images python)");
        return;
    }
    let prefix = common::unique("slipway-realapp");
    let _images = Images(prefix.clone());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fixture = common::repo().join("tests/fixtures/stacks/python-requirements");
    for f in ["app.py", "requirements.txt"] {
        std::fs::copy(fixture.join(f), root.join(f)).unwrap();
    }
    write(
        root,
        &[
            (
                ".dockerignore",
                "secret.txt\nsecrets/\nlogs\n!logs/important.log\n",
            ),
            ("secret.txt", "the-secret-marker"),
            ("secrets/api-key.txt", "the-secret-marker"),
            ("logs/debug.log", "noise"),
            ("logs/important.log", "keep me"),
            (
                "slipway.toml",
                &format!(
                    "[app]\nname = \"realapp\"\n[images]\nprefix = \"{prefix}\"\n[base_images]\npython = \"{base}\"\n\
                     [components.web]\ncontext = \".\"\nport = 8000\nhealth = \"/health\"\nsecrets = [\"JWT_SECRET\"]\nreplicas = 1\n"
                ),
            ),
        ],
    );
    let slipway = |args: &[&str]| {
        common::slipway()
            .current_dir(root)
            .env("JWT_SECRET", "the-secret-marker")
            .args(["--progress", "plain"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = slipway(&["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out));
    let ignore =
        std::fs::read_to_string(root.join("dockerfiles/web.Dockerfile.dockerignore")).unwrap();
    assert!(ignore.contains("!logs/important.log"), "{ignore}");

    let out = slipway(&["build"]);
    assert!(out.status.success(), "{}", text(&out));
    // A Secret manifest with the value now sits inside the context: the next build is
    // cached, and one without the cache does not take it in either.
    let out = slipway(&["manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join("k8s").is_dir());
    let out = slipway(&["build"]);
    assert!(text(&out).contains("cached"), "{}", text(&out));
    let out = slipway(&["build", "--no-cache"]);
    assert!(out.status.success(), "{}", text(&out));

    let image = format!("{prefix}/web:latest");
    let listing = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "sh", &image, "-c"])
        .arg("cd /app && find . | sort && grep -rl the-secret-marker / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true")
        .output_retrying()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(listing.contains("./logs/important.log"), "{listing}");
    for absent in [
        "./secret.txt",
        "./secrets",
        "./logs/debug.log",
        "./slipway.toml",
        "./.slipway",
        "./dockerfiles",
        "./k8s",
    ] {
        assert!(
            !listing
                .lines()
                .any(|l| l == absent || l.starts_with(&format!("{absent}/"))),
            "{absent} is in the image:\n{listing}"
        );
    }
    assert!(!listing.contains("the-secret-marker"), "{listing}");
    assert!(
        !listing.lines().any(|l| l.starts_with('/')),
        "a file in the image holds the secret:\n{listing}"
    );

    // Nothing of slipway's own changes the digest: a second build and a config change that
    // does not touch the image (replicas) are cached.
    let out = slipway(&["build"]);
    assert!(text(&out).contains("cached"), "{}", text(&out));
    let toml = std::fs::read_to_string(root.join("slipway.toml")).unwrap();
    std::fs::write(
        root.join("slipway.toml"),
        toml.replace("replicas = 1", "replicas = 3"),
    )
    .unwrap();
    let out = slipway(&["build"]);
    assert!(
        out.status.success() && text(&out).contains("cached"),
        "{}",
        text(&out)
    );

    // The app's .dockerignore changes: `dockerfiles --check` says the generated file is stale.
    std::fs::write(root.join(".dockerignore"), "secret.txt\nsecrets/\nlogs\n").unwrap();
    let out = slipway(&["dockerfiles", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Removes a container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

/// One app of each stack slipway detects, as `tests/fixtures/<dir>` holds it: (name, dir,
/// `[base_images]` key). Their bases are the local test images (scripts/env/images).
const APPS: &[(&str, &str, &str)] = &[
    ("node-plain", "apps/node-plain", "node"),
    ("express-ts", "stacks/node-typescript", "node"),
    ("nextjs-yarn", "stacks/nextjs-yarn", "node"),
    ("nextjs-pnpm", "stacks/nextjs-pnpm", "node"),
    ("flask", "apps/flask", "python"),
    ("django", "apps/django", "python"),
    ("fastapi-uv", "stacks/python-uv", "python"),
    ("starlette-poetry", "stacks/python-poetry", "python"),
    ("go-stdlib", "apps/go-stdlib", "go"),
    ("rust-2024", "apps/rust-2024", "rust"),
];

/// The local test image standing in for a `[base_images]` key.
fn test_base(key: &str) -> &'static str {
    match key {
        "node" => "slipway-test/node:22",
        "python" => "slipway-test/python:3.11",
        "go" => "slipway-test/go:1.27",
        "rust" => "slipway-test/rust:1.85",
        "runtime" => "slipway-test/debian:trixie",
        _ => unreachable!("{key}"),
    }
}

/// The image the production stage starts from: compiled stacks ship on the runtime image.
fn shipped_base(key: &str) -> &'static str {
    match key {
        "go" | "rust" => test_base("runtime"),
        other => test_base(other),
    }
}

fn image_size(image: &str) -> u64 {
    let out = docker(&["image", "inspect", "-f", "{{.Size}}", image]);
    assert!(out.status.success(), "{image}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Every generated Dockerfile in `dir` passes hadolint and checkov.
fn judges_pass(dir: &Path) {
    let hadolint = common::tool("hadolint");
    let checkov = common::tool("checkov");
    if let Some(hadolint) = hadolint {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "Dockerfile") {
                let out = Command::new(&hadolint)
                    .args(["--no-color", "-f", "tty"])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success() && out.stdout.is_empty(),
                    "hadolint {}:\n{}",
                    path.display(),
                    text(&out)
                );
            }
        }
    }
    if let Some(checkov) = checkov {
        let out = Command::new(&checkov)
            .args(["--framework", "dockerfile", "--skip-download", "--compact"])
            .args(["-o", "json", "-d"])
            .arg(dir)
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("checkov JSON: {e}\n{}", text(&out)));
        assert_eq!(json["summary"]["failed"], 0, "{}", text(&out));
        assert_eq!(json["summary"]["skipped"], 0, "{}", text(&out));
    }
}

/// Apps shaped like real ones, one of every stack slipway detects, each on a local base
/// image (Next.js both standalone and served by `next start`): `init` → `dockerfiles` →
/// `build`. hadolint and checkov find nothing in the Dockerfiles; each container answers its
/// own HEALTHCHECK, runs as UID 10001, prints no warning at start, and `docker stop` returns
/// in under 3 s although most apps do not handle SIGTERM (a plain `node server.js`, a Rust
/// binary); each image is at most 1.6x the base it ships on (production dependencies only);
/// a second build is cached.
#[tokio::test(flavor = "multi_thread")]
async fn every_stack_builds_answers_runs_as_non_root_stops_promptly_and_stays_small() {
    let Some(docker_api) = common::daemon().await else {
        return;
    };
    for key in ["node", "python", "go", "rust", "runtime"] {
        let base = test_base(key);
        if docker_api.inspect_image(base).await.is_err() {
            assert!(!common::in_ci(), "CI=true and {base} is missing");
            eprintln!("SKIPPED: {base} missing (scripts/env/images)");
            return;
        }
    }
    let prefix = common::unique("slipway-stacks");
    let _images = Images(prefix.clone());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("apps")).unwrap();
    for (name, fixture, _) in APPS {
        let out = Command::new("cp")
            .arg("-r")
            .arg(common::repo().join("tests/fixtures").join(fixture))
            .arg(root.join("apps").join(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let slipway = |args: &[&str]| {
        common::slipway()
            .current_dir(root)
            .args(["--progress", "plain"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = slipway(&["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut toml = std::fs::read_to_string(root.join("slipway.toml")).unwrap();
    toml.push_str(&format!(
        "\n[images]\nprefix = \"{prefix}\"\n\n[base_images]\n"
    ));
    for key in ["node", "python", "go", "rust", "runtime"] {
        toml.push_str(&format!("{key} = \"{}\"\n", test_base(key)));
    }
    std::fs::write(root.join("slipway.toml"), toml).unwrap();
    let out = slipway(&["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out));
    judges_pass(&root.join("dockerfiles"));
    let out = slipway(&["build"]);
    let build_log = text(&out);
    assert!(out.status.success(), "{build_log}");
    assert!(!build_log.contains("SYS_UID_MAX"), "{build_log}");

    for (name, _, key) in APPS {
        let image = format!("{prefix}/{name}:latest");
        let (size, base) = (image_size(&image), image_size(shipped_base(key)));
        eprintln!(
            "{name}: {} MB on a {} MB base ({:.2}x)",
            size / 1_000_000,
            base / 1_000_000,
            size as f64 / base as f64
        );
        assert!(
            size * 10 <= base * 16,
            "{name}: {size} bytes on a {base}-byte base ({:.2}x, at most 1.6x)",
            size as f64 / base as f64
        );
        let cname = common::unique(&format!("slipway-stop-{name}"));
        let out = docker(&[
            "run",
            "-d",
            "--name",
            &cname,
            "--health-interval",
            "1s",
            "--health-start-period",
            "0s",
            // The secret the Django app reads at start (the others ignore it).
            "--env",
            "DJANGO_SECRET_KEY=not-a-real-secret",
            &image,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let _container = Container(cname.clone());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = docker(&["inspect", "-f", "{{.State.Health.Status}}", &cname]);
            let status = String::from_utf8_lossy(&status.stdout).trim().to_string();
            if status == "healthy" {
                break;
            }
            let logs = text(&docker(&["logs", &cname]));
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: not healthy ({status}):\n{logs}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let uid = docker(&["exec", &cname, "id", "-u"]);
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "10001",
            "{name}"
        );
        let started = std::time::Instant::now();
        let out = docker(&["stop", &cname]);
        let took = started.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            took < std::time::Duration::from_secs(3),
            "{name}: docker stop took {took:?}"
        );
        let logs = text(&docker(&["logs", &cname]));
        for bad in [
            "warning",
            "Warning",
            "WARN",
            "Permission denied",
            "nonexistent",
        ] {
            assert!(!logs.contains(bad), "{name}: `{bad}` at start:\n{logs}");
        }
    }
    let out = slipway(&["build"]);
    let again = text(&out);
    assert!(out.status.success(), "{again}");
    for (name, _, _) in APPS {
        assert!(
            again.contains(&format!("[{name}] cached")),
            "{name} not cached:\n{again}"
        );
    }
}
