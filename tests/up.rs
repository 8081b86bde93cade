//! `slipway up` end to end: a small two-component app, a kind node stand-in, the real daemon.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// Removes the stand-in cluster however the test ends.
struct Kind(String);

impl Drop for Kind {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("tests/env/down"))
            .arg(&self.0)
            .output();
    }
}

fn kind(name: &str) -> Kind {
    stand_in("kind-up", name, 0)
}

/// Node stand-ins from `tests/env/SCRIPT NAME WORKERS` (kind-up, k3d-up).
fn stand_in(script: &str, name: &str, workers: usize) -> Kind {
    let out = Command::new(common::repo().join("tests/env").join(script))
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

fn project(dir: &Path, prefix: &str) {
    for (name, body) in [("api", "api v1"), ("web", "web v1")] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("index.html"), format!("{body}\n")).unwrap();
        std::fs::write(
            dir.join(name).join("Dockerfile"),
            "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\nUSER 10001\nCMD [\"httpd\", \"-f\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("slipway.toml"),
        format!(
            r#"[app]
name = "upapp"
[images]
prefix = "{prefix}"
[components.api]
context = "api"
dockerfile = "api/Dockerfile"
port = 80
secrets = ["API_TOKEN"]
[components.web]
context = "web"
dockerfile = "web/Dockerfile"
port = 80
config = {{ API_URL = "${{api.url}}" }}
service = {{ type = "NodePort" }}
"#
        ),
    )
    .unwrap();
}

fn up(dir: &Path, args: &[&str]) -> Output {
    common::slipway()
        .current_dir(dir)
        .env("API_TOKEN", "upapp-token-marker")
        .args(["--progress", "plain", "up"])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn up_builds_loads_and_emits_then_does_nothing_the_second_time() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let cluster = common::unique("up");
    let _kind = kind(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-up");
    project(dir.path(), &prefix);
    let target = format!("kind:{cluster}");

    let first = up(
        dir.path(),
        &["--cluster", &target, "--metadata-file", "run.json"],
    );
    assert!(first.status.success(), "{}", text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains("COMPONENT") && stdout.contains("built"),
        "{stdout}"
    );
    assert!(
        stdout.contains("next: helm upgrade --install upapp"),
        "{stdout}"
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    for c in ["api", "web"] {
        assert_eq!(run["build"]["components"][c]["outcome"], "built", "{run}");
    }
    let loads = run["load"]["results"].as_array().unwrap();
    assert_eq!(loads.len(), 2, "{run}");
    assert!(loads.iter().all(|l| l["status"] == "loaded"), "{run}");

    // The image is in the node under the name the manifests use.
    let api_image = run["build"]["components"]["api"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    let node = format!("{cluster}-control-plane");
    let ls = Command::new("docker")
        .args(["exec", &node, "ctr", "-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(&api_image),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    let deploy = std::fs::read_to_string(dir.path().join("k8s/api.yaml")).unwrap();
    assert!(deploy.contains(&format!("image: {api_image}")), "{deploy}");
    let web = std::fs::read_to_string(dir.path().join("k8s/web.yaml")).unwrap();
    assert!(web.contains("http://upapp-api.upapp.svc:80"), "{web}");
    assert!(dir.path().join("charts/upapp/Chart.yaml").is_file());
    // The secret value is only in the Secret manifest.
    for entry in walk(dir.path()) {
        let name = entry.to_string_lossy().to_string();
        let bytes = std::fs::read(&entry).unwrap();
        let has = String::from_utf8_lossy(&bytes).contains("upapp-token-marker");
        assert!(!has, "secret value in {name}");
    }
    assert!(!text(&first).contains("upapp-token-marker"));

    // Second run: nothing to build, nothing to send.
    let second = up(
        dir.path(),
        &["--cluster", &target, "--metadata-file", "run2.json"],
    );
    assert!(second.status.success(), "{}", text(&second));
    let run2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run2.json")).unwrap()).unwrap();
    for c in ["api", "web"] {
        assert_eq!(
            run2["build"]["components"][c]["outcome"], "cached",
            "{run2}"
        );
    }
    assert_eq!(run2["load"]["bytes_sent"], 0, "{run2}");
    assert!(
        run2["load"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "already_present"),
        "{run2}"
    );

    // A one-line change rebuilds only that component and sends only its new layer.
    std::fs::write(dir.path().join("web/index.html"), "web v2\n").unwrap();
    let third = up(
        dir.path(),
        &["--cluster", &target, "--metadata-file", "run3.json"],
    );
    assert!(third.status.success(), "{}", text(&third));
    let run3: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run3.json")).unwrap()).unwrap();
    assert_eq!(run3["build"]["components"]["api"]["outcome"], "cached");
    assert_eq!(run3["build"]["components"]["web"]["outcome"], "built");
    let web_load = run3["load"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["component"] == "web")
        .unwrap()
        .clone();
    assert_eq!(web_load["layers_sent"], 1, "{web_load}");

    for c in ["api", "web"] {
        for r in [&run, &run3] {
            for t in r["build"]["components"][c]["tags"].as_array().unwrap() {
                let _ = docker
                    .remove_image(
                        t.as_str().unwrap(),
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.to_string_lossy().ends_with(".secret.yaml") {
            out.push(p);
        }
    }
    out
}

/// `ctr` against k3s's containerd in a k3d node (stand-in).
fn k3s_ctr(node: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .args(["exec", node, "ctr", "--address"])
        .arg("/run/k3s/containerd/containerd.sock")
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn up_into_k3d_loads_every_node_and_then_sends_nothing() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let cluster = common::unique("k3d");
    let _k3d = stand_in("k3d-up", &cluster, 1);
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-k3d");
    project(dir.path(), &prefix);

    let first = up(
        dir.path(),
        &[
            "--cluster",
            &format!("k3d:{cluster}"),
            "--metadata-file",
            "run.json",
        ],
    );
    assert!(first.status.success(), "{}", text(&first));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(run["load"]["cluster"], format!("k3d:{cluster}"), "{run}");
    let nodes = [
        format!("k3d-{cluster}-server-0"),
        format!("k3d-{cluster}-agent-0"),
    ];
    // Both images into both nodes; the load balancer is not a node.
    let loads = run["load"]["results"].as_array().unwrap();
    assert_eq!(loads.len(), 4, "{run}");
    assert!(loads.iter().all(|l| l["status"] == "loaded"), "{run}");
    for node in &nodes {
        assert!(loads.iter().any(|l| l["node"] == *node.as_str()), "{run}");
    }

    // Each image runs in each node, from k3s's containerd.
    for (c, body) in [("api", "api v1"), ("web", "web v1")] {
        let image = run["build"]["components"][c]["image"].as_str().unwrap();
        for node in &nodes {
            let out = k3s_ctr(
                node,
                &[
                    "run",
                    "--rm",
                    &format!("docker.io/{image}"),
                    &format!("t-{c}"),
                    "cat",
                    "/www/index.html",
                ],
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                body,
                "{c} in {node}: {}",
                text(&out)
            );
        }
    }

    // Found again from the kube context k3d writes (`k3d-NAME`): nothing sent.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\ncurrent-context: k3d-{cluster}\ncontexts:\n- name: k3d-{cluster}\n  context: {{cluster: k3d-{cluster}}}\n"),
    )
    .unwrap();
    let second = common::slipway()
        .current_dir(dir.path())
        .env("API_TOKEN", "upapp-token-marker")
        .env("KUBECONFIG", &kubeconfig)
        .args(["--progress", "plain", "up", "--metadata-file", "run2.json"])
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", text(&second));
    let run2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run2.json")).unwrap()).unwrap();
    assert_eq!(run2["load"]["cluster"], format!("k3d:{cluster}"), "{run2}");
    assert_eq!(run2["load"]["bytes_sent"], 0, "{run2}");
    let loads = run2["load"]["results"].as_array().unwrap();
    assert_eq!(loads.len(), 4, "{run2}");
    assert!(
        loads.iter().all(|l| l["status"] == "already_present"),
        "{run2}"
    );

    for c in ["api", "web"] {
        for t in run["build"]["components"][c]["tags"].as_array().unwrap() {
            let _ = docker
                .remove_image(
                    t.as_str().unwrap(),
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
}

#[tokio::test]
async fn dry_run_writes_nothing_and_locked_refuses_missing_secrets() {
    if common::daemon().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &common::unique("slipway-up"));
    let out = up(dir.path(), &["--dry-run", "--cluster", "none"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("never built") || stdout.contains("build"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run"), "{stdout}");
    assert!(!dir.path().join("k8s").exists());
    assert!(!dir.path().join(".slipway/last-build.json").exists());

    let out = common::slipway()
        .current_dir(dir.path())
        .env_remove("API_TOKEN")
        .args(["up", "--locked", "--cluster", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("secrets not set: API_TOKEN (api)"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test]
async fn locked_refuses_a_stale_generated_dockerfile() {
    if common::daemon().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    // The reference backend with its generated Dockerfile, then a hand edit.
    let copy = |rel: &str| {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo.join(rel), &to).unwrap();
    };
    for f in [
        "contexts/backend/requirements.txt",
        "contexts/backend/app/main.py",
        "contexts/backend/app/__init__.py",
        "dockerfiles/backend.Dockerfile",
        "dockerfiles/backend.Dockerfile.dockerignore",
    ] {
        copy(f);
    }
    std::fs::write(
        dir.path().join("slipway.toml"),
        "[app]\nname = \"lockapp\"\n[components.backend]\ncontext = \"contexts/backend\"\nport = 8000\nhealth = \"/healthz\"\nreadiness = \"/readyz\"\n",
    )
    .unwrap();
    let df = dir.path().join("dockerfiles/backend.Dockerfile");
    let edited = std::fs::read_to_string(&df).unwrap() + "# hand edit\n";
    std::fs::write(&df, &edited).unwrap();
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["up", "--locked", "--cluster", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out of date: dockerfiles/backend.Dockerfile"),
        "{err}"
    );
    assert!(err.contains("-# hand edit"), "diff shown: {err}");
    assert_eq!(
        std::fs::read_to_string(&df).unwrap(),
        edited,
        "--locked writes nothing"
    );
}
