//! Generated Dockerfiles built for real with `slipway build` on the local bases.
//!
//! The bundled reference app: each image runs as UID 10001, answers its health routes, stays
//! under 1.5x its base image, and the frontend lists a task it fetched from the backend over a
//! Docker network by service name. The fixtures with real lockfiles (Python: hash-pinned
//! requirements + gunicorn, uv, Poetry; Node: TypeScript, Next.js with pnpm, Next.js with
//! yarn and `next start`): each builds and answers its health route as UID 10001.

mod common;

use common::RunRetrying as _;

use common::ok;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output_retrying()
        .expect("the docker CLI runs")
}

/// Removes what the test made, whatever happens.
struct Cleanup {
    containers: Vec<String>,
    network: Option<String>,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
        let out = docker(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference={}/*", self.prefix),
        ]);
        for image in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = docker(&["rmi", image]);
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if ["node_modules", ".next", "__pycache__", ".venv"]
            .iter()
            .any(|n| name == *n)
        {
            continue;
        }
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// A copy of the bundled app whose images are named `<unique prefix>/...`, and the clean-up
/// that removes them.
fn app_copy(prefix: &str) -> (tempfile::TempDir, Cleanup) {
    let prefix = common::unique(prefix);
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    let toml = std::fs::read_to_string(repo.join("slipway.toml"))
        .unwrap()
        .replace("prefix = \"slipway\"", &format!("prefix = \"{prefix}\""));
    assert!(toml.contains(&prefix));
    std::fs::write(dir.path().join("slipway.toml"), toml).unwrap();
    copy_tree(&repo.join("dockerfiles"), &dir.path().join("dockerfiles"));
    copy_tree(&repo.join("contexts"), &dir.path().join("contexts"));
    let cleanup = Cleanup {
        containers: vec![],
        network: None,
        prefix,
    };
    (dir, cleanup)
}

fn image_size(image: &str) -> u64 {
    ok(
        docker(&["image", "inspect", "--format", "{{.Size}}", image]),
        image,
    )
    .parse()
    .unwrap()
}

/// Runs `cmd` in a container until it succeeds (the server may still be starting).
fn exec_until_ok(container: &str, cmd: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let mut args = vec!["exec", container];
        args.extend_from_slice(cmd);
        let out = docker(&args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        if start.elapsed() > timeout {
            let logs = docker(&["logs", container]);
            panic!(
                "{container}: {cmd:?} kept failing: {}\nlogs:\n{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The daemon and the base images are there (else skip, or fail under CI).
async fn ready(bases: &[&str]) -> bool {
    if common::daemon().await.is_none() {
        return false;
    }
    for base in bases {
        if !docker(&["image", "inspect", base]).status.success() {
            assert!(
                !common::in_ci(),
                "CI=true and base image {base} is missing: run scripts/env/images"
            );
            eprintln!("SKIPPED: base image {base} is missing (run scripts/env/images)");
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_images_build_run_and_talk() {
    if !ready(&["slipway-test/python:3.11", "slipway-test/node:20"]).await {
        return;
    }
    let (dir, mut cleanup) = app_copy("slipway-gen-test");
    let prefix = cleanup.prefix.clone();

    let out = common::slipway()
        .current_dir(dir.path())
        .args(["--progress", "plain", "build"])
        .output()
        .unwrap();
    ok(out, "slipway build");
    let backend = format!("{prefix}/backend:latest");
    let frontend = format!("{prefix}/frontend:latest");

    // Production images stay small next to their bases.
    for (image, base) in [
        (&backend, "slipway-test/python:3.11"),
        (&frontend, "slipway-test/node:20"),
    ] {
        let (size, base_size) = (image_size(image), image_size(base));
        let ratio = size as f64 / base_size as f64;
        eprintln!("{image}: {size} bytes, {ratio:.2}x {base} ({base_size} bytes)");
        assert!(ratio < 1.5, "{image} is {ratio:.2}x its base");
        let user = ok(
            docker(&["image", "inspect", "--format", "{{.Config.User}}", image]),
            "inspect",
        );
        assert_eq!(user, "10001:10001", "{image}");
        // The Dockerfile slipway sends inside the context never reaches the app's directory.
        let listing = ok(
            docker(&["run", "--rm", "--entrypoint", "ls", image, "-a", "/app"]),
            "ls /app",
        );
        assert!(
            !listing.contains("Dockerfile"),
            "{image} carries a Dockerfile in /app:\n{listing}"
        );
        assert!(listing.lines().count() > 2, "{image}: /app is empty");
    }

    let network = common::unique("slipway-gen-net");
    ok(docker(&["network", "create", &network]), "network create");
    cleanup.network = Some(network.clone());
    let secret = format!("{}-jwt-secret-for-tests-only", common::unique("k"));
    let be = common::unique("slipway-gen-backend");
    cleanup.containers.push(be.clone());
    ok(
        docker(&[
            "run",
            "-d",
            "--name",
            &be,
            "--network",
            &network,
            "--network-alias",
            "backend",
            "-e",
            &format!("JWT_SECRET={secret}"),
            &backend,
        ]),
        "run backend",
    );
    let fe = common::unique("slipway-gen-frontend");
    cleanup.containers.push(fe.clone());
    ok(
        docker(&[
            "run",
            "-d",
            "--name",
            &fe,
            "--network",
            &network,
            "-e",
            "BACKEND_URL=http://backend:8000",
            &frontend,
        ]),
        "run frontend",
    );

    let py_get = |path: &str| {
        format!("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000{path}', timeout=4).read().decode())")
    };
    let node_get = |path: &str| {
        format!("fetch('http://127.0.0.1:3000{path}').then(async (r) => {{ if (!r.ok) process.exit(1); console.log(await r.text()); }}, () => process.exit(1))")
    };
    let wait = Duration::from_secs(90);
    assert!(exec_until_ok(&be, &["python3", "-c", &py_get("/healthz")], wait).contains("ok"));
    assert!(exec_until_ok(&be, &["python3", "-c", &py_get("/readyz")], wait).contains("ready"));
    assert!(exec_until_ok(&fe, &["node", "-e", &node_get("/api/healthz")], wait).contains("ok"));
    for c in [&be, &fe] {
        assert_eq!(exec_until_ok(c, &["id", "-u"], wait), "10001", "{c}");
    }

    // A task written to the backend shows on the frontend's page.
    let token = exec_until_ok(
        &be,
        &[
            "python3",
            "-m",
            "app.auth",
            "--sub",
            "slipway-test",
            "--ttl",
            "600",
        ],
        wait,
    );
    let title = common::unique("task from slipway test");
    let create = format!(
        "import json, urllib.request; r = urllib.request.Request('http://127.0.0.1:8000/api/tasks', data=json.dumps({{'title': '{title}'}}).encode(), headers={{'Content-Type': 'application/json', 'Authorization': 'Bearer {token}'}}, method='POST'); print(urllib.request.urlopen(r, timeout=4).status)"
    );
    assert_eq!(exec_until_ok(&be, &["python3", "-c", &create], wait), "201");
    let page = exec_until_ok(&fe, &["node", "-e", &node_get("/")], wait);
    assert!(
        page.contains(&title),
        "the frontend did not list the task from the backend:\n{page}"
    );

    // A one-line change to the page: the traced node_modules (some 45 MB) stay the layer they
    // were; only the server code's layers (about 1 MB) are new, so little has to travel.
    let page_file = dir.path().join("contexts/frontend/app/page.tsx");
    let text = std::fs::read_to_string(&page_file).unwrap();
    std::fs::write(&page_file, text.replacen("<h1>", "<h1>Changed ", 1)).unwrap();
    let layers = |image: &str| -> Vec<String> {
        let json = ok(
            docker(&[
                "image",
                "inspect",
                "--format",
                "{{json .RootFS.Layers}}",
                image,
            ]),
            "inspect layers",
        );
        serde_json::from_str(&json).unwrap()
    };
    let before = layers(&frontend);
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["--progress", "plain", "build", "frontend"])
        .output()
        .unwrap();
    ok(out, "slipway build frontend after a one-line change");
    let after = layers(&frontend);
    assert_ne!(before, after, "the change made no new image");
    // The last four COPYs are those of node_modules, public, the server and the static files
    // (the user and the working directory come between the first two).
    let history = |image: &str| {
        ok(
            docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", image]),
            "history",
        )
    };
    let frontend_history = history(&frontend);
    let copies: Vec<&str> = frontend_history
        .lines()
        .filter(|l| l.contains("COPY"))
        .take(4)
        .collect();
    assert!(
        copies.len() == 4 && copies[3].contains(".next/traced"),
        "the node_modules COPY is not the fourth from the end:\n{frontend_history}"
    );
    let n = after.len();
    assert_eq!(before.len(), n);
    assert_eq!(
        before[..n - 2],
        after[..n - 2],
        "a change to the page changed the node_modules layer or one below it"
    );

    // A build without cache makes the traced node_modules, and the backend's virtualenv, again
    // byte for byte, so a registry or a node that has them keeps them: the plain `docker build`
    // of the generated Dockerfiles, with their cache and then without.
    let plain = |component: &str, base_arg: &str, tag: &str, extra: &[&str]| {
        let tag = format!("{prefix}/plain-{component}:{tag}");
        let dockerfile = format!("dockerfiles/{component}.Dockerfile");
        let context = format!("contexts/{component}");
        let mut args = vec!["build", "-q", "--target", "production", "-t", &tag];
        args.extend_from_slice(extra);
        args.extend(["--build-arg", base_arg, "-f", &dockerfile, &context]);
        let out = Command::new("docker")
            .args(&args)
            .current_dir(dir.path())
            .output_retrying()
            .unwrap();
        ok(
            out,
            &format!("docker build {component} {}", extra.join(" ")),
        );
        let layers = layers(&tag);
        docker(&["rmi", &tag]);
        layers
    };
    let (base, arg) = ("slipway-test/node:20", "NODE_IMAGE=slipway-test/node:20");
    let bottom = layers(base).len();
    let (cached, cold) = (
        plain("frontend", arg, "cached", &[]),
        plain("frontend", arg, "cold", &["--no-cache"]),
    );
    assert_eq!(
        cached[bottom], cold[bottom],
        "the traced node_modules' layer differs from one build to the next"
    );
    // The backend's virtualenv is the layer below the user's and the source's (`COPY . /app`,
    // the last), the second COPY from the end.
    let backend_history = history(&backend);
    assert!(
        backend_history
            .lines()
            .filter(|l| l.contains("COPY"))
            .nth(1)
            .is_some_and(|l| l.contains("/venv-layer/")),
        "the virtualenv's COPY is not the second from the end:\n{backend_history}"
    );
    let arg = "PYTHON_IMAGE=slipway-test/python:3.11";
    let (cached, cold) = (
        plain("backend", arg, "cached", &[]),
        plain("backend", arg, "cold", &["--no-cache"]),
    );
    let n = cached.len();
    assert_eq!(
        cached[n - 3],
        cold[n - 3],
        "the virtualenv's layer differs from one build to the next"
    );
    drop(cleanup);
}

/// Builds fixtures with `slipway build` and checks each answers its health route as 10001.
async fn fixtures_build_and_serve(stack: &str, base: &str, port: u16, fixtures: &[(&str, &str)]) {
    if !ready(&[base]).await {
        return;
    }
    let prefix = common::unique("slipway-gen-fx");
    let mut cleanup = Cleanup {
        containers: vec![],
        network: None,
        prefix: prefix.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "[app]\nname = \"fx\"\n[images]\nprefix = \"{prefix}\"\n[base_images]\n{stack} = \"{base}\"\n"
    );
    for (name, health) in fixtures {
        copy_tree(
            &common::repo().join("tests/fixtures/stacks").join(name),
            &dir.path().join("apps").join(name),
        );
        toml.push_str(&format!(
            "[components.{name}]\ncontext = \"apps/{name}\"\nport = {port}\nhealth = \"{health}\"\n"
        ));
    }
    std::fs::write(dir.path().join("slipway.toml"), toml).unwrap();
    let run = |args: &[&str]| {
        common::slipway()
            .current_dir(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    ok(run(&["dockerfiles"]), "slipway dockerfiles");
    ok(
        run(&["--progress", "plain", "build", "-j", "2"]),
        "slipway build",
    );
    for (name, health) in fixtures {
        let c = common::unique(&format!("slipway-gen-{name}"));
        cleanup.containers.push(c.clone());
        ok(
            docker(&[
                "run",
                "-d",
                "--name",
                &c,
                &format!("{prefix}/{name}:latest"),
            ]),
            "run",
        );
        let url = format!("http://127.0.0.1:{port}{health}");
        let get = if stack == "python" {
            vec![
                "python3".to_string(),
                "-c".to_string(),
                format!("import urllib.request; print(urllib.request.urlopen('{url}', timeout=4).read().decode())"),
            ]
        } else {
            vec![
                "node".to_string(),
                "-e".to_string(),
                format!("fetch('{url}').then(async (r) => {{ if (!r.ok) process.exit(1); console.log(await r.text()); }}, () => process.exit(1))"),
            ]
        };
        let get: Vec<&str> = get.iter().map(String::as_str).collect();
        let body = exec_until_ok(&c, &get, Duration::from_secs(90));
        assert!(body.contains("ok"), "{name}: {body}");
        assert_eq!(
            exec_until_ok(&c, &["id", "-u"], Duration::from_secs(5)),
            "10001",
            "{name}"
        );
    }
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_fixtures_build_and_serve() {
    fixtures_build_and_serve(
        "python",
        "slipway-test/python:3.11",
        8000,
        &[
            ("python-requirements", "/health"),
            ("python-uv", "/healthz"),
            ("python-poetry", "/healthz"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_fixtures_build_and_serve() {
    // nextjs-npm is the reference frontend's path; these cover TypeScript, pnpm and yarn.
    fixtures_build_and_serve(
        "node",
        "slipway-test/node:20",
        3000,
        &[
            ("node-typescript", "/healthz"),
            ("nextjs-pnpm", "/health"),
            ("nextjs-yarn", "/api/health"),
        ],
    )
    .await;
}

/// The bundled reference app is reproducible: `slipway verify` builds each image twice with no
/// cache and gets one image ID. The frontend is given a server-actions key, as
/// docs/ci-workflow.yml does (without one, Next.js makes keys at random on every build).
#[tokio::test(flavor = "multi_thread")]
async fn reference_images_are_reproducible() {
    if !ready(&["slipway-test/python:3.11", "slipway-test/node:20"]).await {
        return;
    }
    let (dir, _cleanup) = app_copy("slipway-repro-test");

    // A day that is not today: the account useradd writes must carry it, not the build's date.
    let sde: i64 = 1_600_000_000;
    for component in ["backend", "frontend"] {
        let out = common::slipway()
            .current_dir(dir.path())
            .args(["--progress", "plain", "verify", component, "--json"])
            .env("SOURCE_DATE_EPOCH", sde.to_string())
            .env(
                "NEXT_SERVER_ACTIONS_ENCRYPTION_KEY",
                "c2xpcHdheS10ZXN0LWtleS1ub3QtYS1yZWFsLW9uZSE=",
            )
            .output()
            .unwrap();
        let report = ok(out, &format!("slipway verify {component}"));
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        assert_eq!(report["identical"], true, "{component}: {report:#}");
        let id = report["first"]["image_id"].as_str().unwrap();
        assert_eq!(Some(id), report["second"]["image_id"].as_str());
        eprintln!("{component}: reproducible, {id}");

        let shadow = ok(
            docker(&[
                "run",
                "--rm",
                "--user",
                "0",
                "--entrypoint",
                "grep",
                id,
                "^app:",
                "/etc/shadow",
            ]),
            "read /etc/shadow",
        );
        let day = shadow.split(':').nth(2).unwrap_or_default().to_string();
        assert_eq!(day, (sde / 86_400).to_string(), "{component}: {shadow}");
    }
}
