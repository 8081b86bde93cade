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

/// Apps shaped like real ones, one per stack with a local base image: `init` → `dockerfiles`
/// → `build`; each container answers its own HEALTHCHECK, runs as UID 10001, prints no
/// warning at start, and `docker stop` returns in under 3 s although neither app handles
/// SIGTERM (a plain `node server.js`; gunicorn does, behind the same init). A second build is
/// cached.
#[tokio::test(flavor = "multi_thread")]
async fn generated_images_answer_run_as_non_root_and_stop_promptly() {
    let Some(docker_api) = common::daemon().await else {
        return;
    };
    let apps = [
        ("node-plain", "node", "slipway-test/node:20"),
        ("flask", "python", "slipway-test/python:3.11"),
    ];
    for (_, _, base) in apps {
        if docker_api.inspect_image(base).await.is_err() {
            assert!(!common::in_ci(), "CI=true and {base} is missing");
            eprintln!("SKIPPED: {base} missing (scripts/env/images)");
            return;
        }
    }
    let prefix = common::unique("slipway-stop");
    let _images = Images(prefix.clone());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("apps")).unwrap();
    for (name, _, _) in apps {
        let out = Command::new("cp")
            .arg("-r")
            .arg(common::repo().join("tests/fixtures/apps").join(name))
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
    for (_, stack, base) in apps {
        toml.push_str(&format!("{stack} = \"{base}\"\n"));
    }
    std::fs::write(root.join("slipway.toml"), toml).unwrap();
    let out = slipway(&["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = slipway(&["build"]);
    let build_log = text(&out);
    assert!(out.status.success(), "{build_log}");
    assert!(!build_log.contains("SYS_UID_MAX"), "{build_log}");

    for (name, _, _) in apps {
        let image = format!("{prefix}/{name}:latest");
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
        for bad in ["warning", "Warning", "Permission denied", "nonexistent"] {
            assert!(!logs.contains(bad), "{name}: `{bad}` at start:\n{logs}");
        }
    }
    let out = slipway(&["build"]);
    let again = text(&out);
    assert!(out.status.success(), "{again}");
    for (name, _, _) in apps {
        assert!(
            again.contains(&format!("[{name}] cached")),
            "{name} not cached:\n{again}"
        );
    }
}
