//! Real apps as users lay them out: the app's own `.dockerignore` always applies, and with
//! `context = "."` slipway's own files stay out of the image and out of the digest.

mod common;

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
        .output()
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
