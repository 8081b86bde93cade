//! `slipway up` end to end: a small two-component app, a kind node stand-in, the real daemon.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{kind, stand_in};

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

    remove_images(&docker, &[&run, &run3]).await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.to_string_lossy().ends_with(".secret.yaml")
            && !p.ends_with("charts/upapp/secrets.values.yaml")
        {
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

    // doctor names the cluster and its two nodes.
    let doctor = common::slipway()
        .current_dir(dir.path())
        .env("KUBECONFIG", &kubeconfig)
        .arg("doctor")
        .output()
        .unwrap();
    let said = text(&doctor);
    assert!(
        said.contains(&format!("k3d:{cluster}")) && said.contains("2 of 2 node"),
        "{said}"
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

#[tokio::test]
async fn up_in_json_mode_writes_only_events_on_stdout() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &common::unique("slipway-up"));
    let json_up = |args: &[&str], token: Option<&str>| {
        let mut cmd = common::slipway();
        cmd.current_dir(dir.path())
            .args(["--progress", "json", "up", "--cluster", "none"])
            .args(args);
        match token {
            Some(t) => cmd.env("API_TOKEN", t),
            None => cmd.env_remove("API_TOKEN"),
        };
        cmd.output().unwrap()
    };
    let events = |out: &Output| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };

    // A CI run without its secret: an error event with the hint, exit 2, nothing else.
    let out = json_up(&["--locked"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let ev = events(&out);
    let error = ev
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error event");
    assert!(
        error["message"].as_str().unwrap().contains("API_TOKEN"),
        "{error}"
    );
    assert!(
        error["hint"].as_str().unwrap().contains("--env-file"),
        "{error}"
    );
    assert_eq!(ev.last().unwrap()["event"], "summary");
    assert_eq!(ev.last().unwrap()["exit_code"], 2);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // A run: events only (no table), the summary carries the whole run.
    let out = json_up(&[], Some("upapp-token-marker"));
    assert!(out.status.success(), "{}", text(&out));
    let ev = events(&out);
    assert_eq!(ev[0]["event"], "run");
    let summary = ev.last().unwrap();
    assert_eq!(
        (&summary["event"], &summary["status"]),
        (&"summary".into(), &"ok".into())
    );
    let run = summary["result"].clone();
    assert_eq!(
        run["build"]["components"]["api"]["outcome"], "built",
        "{run}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("COMPONENT"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("upapp-token-marker"));

    remove_images(&docker, &[&run]).await;
}

/// `up --progress json` into `target`: its events, in the order they came.
fn up_events(dir: &Path, target: &str) -> Vec<serde_json::Value> {
    let out = common::slipway()
        .current_dir(dir)
        .env("API_TOKEN", "upapp-token-marker")
        .args(["--progress", "json", "up", "--cluster", target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Where the first event of `kind` for `task` is.
fn event_at(events: &[serde_json::Value], kind: &str, task: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == kind && e["task"] == task)
        .unwrap_or_else(|| panic!("no `{kind}` event for {task} in {events:#?}"))
}

#[tokio::test]
async fn up_sends_each_image_to_the_nodes_while_the_daemon_loads_it_back() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let cluster = common::unique("up-early");
    let _kind = stand_in("kind-up", &cluster, 1);
    let nodes = [
        format!("{cluster}-control-plane"),
        format!("{cluster}-worker"),
    ];
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &common::unique("slipway-up"));
    // Pages no other test builds: two runs that build the same image at once share it on the
    // daemon (the other tests here build `project`'s pages as they are).
    for c in ["api", "web"] {
        let page = format!("{c} {}\n", common::unique("v1"));
        std::fs::write(dir.path().join(c).join("index.html"), page).unwrap();
    }
    // A build step after the changed one that takes a while: the nodes have been asked what
    // they hold (a few execs each) well before the build ends, however busy the machine.
    std::fs::write(
        dir.path().join("web/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\nRUN sleep 2\nUSER 10001\nCMD [\"httpd\", \"-f\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let target = format!("kind:{cluster}");

    // Both built, into nodes that lack the base image too: the normal forms' files hold only
    // the layers the builds made, so the loads wait for the images to be on the daemon.
    let first = up_events(dir.path(), &target);
    for c in ["api", "web"] {
        let built = event_at(&first, "finished", c);
        assert_eq!(first[built]["outcome"], "built", "{:#}", first[built]);
    }
    // The report keeps the run's order whatever the order the loads ended in.
    let run = &first.last().unwrap()["result"];
    let order: Vec<(String, String, String)> = run["load"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_string();
            (s("component"), s("node"), s("status"))
        })
        .collect();
    let loaded = |c: &str, n: &str| (c.to_string(), n.to_string(), "loaded".to_string());
    assert_eq!(
        order,
        vec![
            loaded("api", &nodes[0]),
            loaded("api", &nodes[1]),
            loaded("web", &nodes[0]),
            loaded("web", &nodes[1]),
        ],
        "{run}"
    );
    // Each node holds both images under the names the manifests use.
    for n in &nodes {
        let ls = Command::new("docker")
            .args(["exec", n, "ctr", "-n", "k8s.io", "images", "ls", "-q"])
            .output()
            .unwrap();
        let ls = String::from_utf8_lossy(&ls.stdout);
        for c in ["api", "web"] {
            let image = run["build"]["components"][c]["image"].as_str().unwrap();
            assert!(ls.contains(image), "{n} lacks {image}: {ls}");
        }
    }

    // A one-line change: the new layer goes to both nodes while the daemon loads the normal
    // form back (before the build is over: that is when its tags are set).
    // (Content no run made before: an image the daemon has already is only tagged.)
    let page = format!("web {}\n", common::unique("v2"));
    std::fs::write(dir.path().join("web/index.html"), page).unwrap();
    let second = up_events(dir.path(), &target);
    let built = event_at(&second, "finished", "web");
    for n in &nodes {
        assert!(
            event_at(&second, "started", &format!("web@{n}")) < built,
            "{second:#?}"
        );
        let done = &second[event_at(&second, "finished", &format!("web@{n}"))];
        assert_eq!(done["outcome"], "loaded", "{done}");
        let api = &second[event_at(&second, "finished", &format!("api@{n}"))];
        assert_eq!(api["outcome"], "already_present", "{api}");
    }
    let run2 = &second.last().unwrap()["result"];
    let web: Vec<&serde_json::Value> = run2["load"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["component"] == "web")
        .collect();
    // Not the layers the nodes have (the base's, and an unchanged step's).
    assert!(
        web.iter()
            .all(|l| l["layers_sent"].as_u64().unwrap() < l["layers_total"].as_u64().unwrap()),
        "{run2}"
    );

    remove_images(&docker, &[run, run2]).await;
}

/// A cluster made anew while the images stay built: `up` builds nothing and loads both, the
/// second streaming while the node still imports the first (its imports slowed here).
#[tokio::test]
async fn up_into_a_new_cluster_streams_one_image_while_the_nodes_import_the_other() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &common::unique("slipway-up"));
    let out = up(dir.path(), &["--cluster", "none"]);
    assert!(out.status.success(), "{}", text(&out));

    let cluster = common::unique("up-anew");
    let _kind = common::kind(&cluster);
    let node = format!("{cluster}-control-plane");
    // The node has the base already (as after any earlier load), so neither image needs a
    // layer the other brings.
    let base = "docker save slipway-test/busybox:1.35 | docker exec -i \"$0\" \
                ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs -";
    let loaded = Command::new("sh")
        .args(["-c", base, &node])
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", text(&loaded));
    common::slow_imports(&node, 3);

    let events = up_events(dir.path(), &format!("kind:{cluster}"));
    for c in ["api", "web"] {
        let built = &events[event_at(&events, "finished", c)];
        assert_eq!(built["outcome"], "cached", "{built}");
        let done = &events[event_at(&events, "finished", &format!("{c}@{node}"))];
        assert_eq!(done["outcome"], "loaded", "{done}");
    }
    let at = |kind: &str, c: &str| event_at(&events, kind, &format!("{c}@{node}"));
    let (first, second) = match at("started", "api") < at("started", "web") {
        true => ("api", "web"),
        false => ("web", "api"),
    };
    assert!(at("started", second) < at("finished", first), "{events:#?}");
    remove_images(&docker, &[&events.last().unwrap()["result"]]).await;
}

/// Removes every tag of every component a run's metadata names.
async fn remove_images(docker: &bollard::Docker, runs: &[&serde_json::Value]) {
    for r in runs {
        let Some(components) = r["build"]["components"].as_object() else {
            continue;
        };
        for c in components.values() {
            for t in c["tags"].as_array().into_iter().flatten() {
                let _ = docker
                    .remove_image(
                        t.as_str().unwrap_or_default(),
                        None::<bollard::query_parameters::RemoveImageOptions>,
                        None,
                    )
                    .await;
            }
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("git")
}

#[tokio::test]
async fn secrets_from_the_env_file_reach_helm_through_a_git_ignored_values_file() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    project(root, &common::unique("slipway-up"));
    assert!(git(root, &["init", "-q"]).status.success());
    let marker = "env-file-token-marker";
    std::fs::write(root.join(".env"), format!("API_TOKEN=\"{marker}\"\n")).unwrap();
    let out = common::slipway()
        .current_dir(root)
        .env_remove("API_TOKEN")
        .args(["--progress", "plain", "up", "--cluster", "none"])
        .args(["--env-file", ".env", "--metadata-file", "run.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "next: helm upgrade --install upapp charts/upapp -f charts/upapp/secrets.values.yaml"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("secrets not set"), "{stdout}");
    // The hint after it is true for the cluster chosen.
    assert!(
        stdout.contains("cluster = none: the images were not loaded")
            && !stdout.contains("no local cluster was found"),
        "{stdout}"
    );
    assert!(!text(&out).contains(marker), "{}", text(&out));
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run.json")).unwrap()).unwrap();

    // The values file: 0600, ignored by git, and the only file besides the Secret manifest
    // that holds the value.
    let values = root.join("charts/upapp/secrets.values.yaml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&values).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode of {}", values.display());
    let ignored = git(
        root,
        &["check-ignore", "-q", "charts/upapp/secrets.values.yaml"],
    );
    assert!(ignored.status.success(), "git does not ignore it");
    let status = git(root, &["status", "--porcelain", "--untracked-files=all"]);
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(!listed.contains("secrets.values.yaml"), "{listed}");
    assert!(!listed.contains(".secret.yaml"), "{listed}");
    for entry in walk(root) {
        let rel = entry
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel == ".env" {
            continue;
        }
        let has = String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).contains(marker);
        assert!(!has, "secret value in {rel}");
    }

    // helm renders the value with -f, and an empty one without it.
    let template = |extra: &[&str]| -> String {
        let out = Command::new(&helm)
            .current_dir(root)
            .args(["template", "upapp", "charts/upapp", "--namespace", "upapp"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "helm: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(marker);
    let with = template(&["-f", "charts/upapp/secrets.values.yaml"]);
    assert!(
        with.contains(&format!("\"API_TOKEN\": \"{encoded}\"")),
        "{with}"
    );
    let without = template(&[]);
    assert!(!without.contains(&encoded), "{without}");
    // A Secret managed elsewhere: the chart makes none and the pods read that one.
    let existing = template(&[
        "-f",
        "charts/upapp/secrets.values.yaml",
        "--set",
        "components.api.existingSecret=managed-elsewhere",
    ]);
    assert!(!existing.contains("kind: Secret"), "{existing}");
    assert!(existing.contains("name: managed-elsewhere"), "{existing}");

    // Without the values: the warning is repeated next to `next:`, and the file says what
    // is not set.
    let out = common::slipway()
        .current_dir(root)
        .env_remove("API_TOKEN")
        .args(["--progress", "plain", "up", "--cluster", "none"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tail: Vec<&str> = stdout.lines().rev().take(2).collect();
    assert!(tail[0].starts_with("next: "), "{stdout}");
    assert!(
        tail[1].starts_with("warning: secrets not set") && tail[1].contains("api.API_TOKEN"),
        "{stdout}"
    );
    let now = std::fs::read_to_string(&values).unwrap();
    assert!(
        now.contains("# api: not set: API_TOKEN") && !now.contains(marker),
        "{now}"
    );
    remove_images(&docker, &[&run]).await;
}

/// `doctor --json`'s check called `name`.
fn doctor_check(dir: &Path, name: &str) -> (serde_json::Value, Output) {
    let out = common::slipway()
        .current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("doctor --json");
    let check = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check: {report}"))
        .clone();
    (check, out)
}

#[tokio::test]
async fn a_wrong_cluster_fails_before_any_build_and_doctor_finds_clusters_as_up_does() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let cluster = common::unique("found");
    let _kind = kind(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-up-early");
    project(dir.path(), &prefix);
    let toml = dir.path().join("slipway.toml");
    let config = std::fs::read_to_string(&toml).unwrap();

    // doctor, with the cluster named in slipway.toml (the string form): found, nodes counted,
    // and every local cluster listed.
    std::fs::write(&toml, format!("cluster = \"kind:{cluster}\"\n{config}")).unwrap();
    let (check, _) = doctor_check(dir.path(), "cluster");
    assert_eq!(check["status"], "ok", "{check}");
    let msg = check["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("kind:{cluster}")) && msg.contains("1 of 1 node"),
        "{msg}"
    );
    let (listed, _) = doctor_check(dir.path(), "local clusters");
    let listed = listed["message"].as_str().unwrap().to_string();
    assert!(
        listed.contains(&format!("kind:{cluster} (1 node)")),
        "{listed}"
    );

    // auto without a kube context: doctor looks at the node containers as up does (it no
    // longer says "no local cluster" while one runs).
    std::fs::write(&toml, &config).unwrap();
    let (check, _) = doctor_check(dir.path(), "cluster");
    let msg = check["message"].as_str().unwrap();
    assert!(!msg.contains("skips the load"), "{check}");
    assert!(
        msg.contains(&format!("kind:{cluster}")) || msg.contains("several local clusters"),
        "{check}"
    );

    // A cluster that is not there: doctor fails, and up fails the same way before it builds
    // or pulls anything.
    let nope = common::unique("nope");
    std::fs::write(&toml, format!("cluster = \"kind:{nope}\"\n{config}")).unwrap();
    let (check, out) = doctor_check(dir.path(), "cluster");
    assert_eq!(check["status"], "fail", "{check}");
    assert!(!out.status.success());
    let not_running = format!("kind cluster `{nope}` is not running");
    assert!(
        check["message"].as_str().unwrap().contains(&not_running),
        "{check}"
    );
    let hint = check["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains(&format!("kind create cluster --name {nope}"))
            && hint.contains(&format!("kind:{cluster}")),
        "the hint names what was found: {check}"
    );
    let out = up(dir.path(), &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(&not_running), "{all}");
    assert!(!all.contains("built"), "{all}");
    assert!(!dir.path().join(".slipway/last-build.json").exists());
    let filters =
        std::collections::HashMap::from([("reference".to_string(), vec![format!("{prefix}/*")])]);
    let images = docker
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert!(images.is_empty(), "the daemon built {images:?}");
    assert!(!dir.path().join("k8s").exists());
}

#[tokio::test]
async fn state_stays_out_of_git_and_plan_says_where_the_date_came_from() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    project(root, &common::unique("slipway-up-state"));
    assert!(git(root, &["init", "-q"]).status.success());
    let slipway = |args: &[&str]| {
        common::slipway()
            .current_dir(root)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(args)
            .output()
            .unwrap()
    };

    // No commit and no SOURCE_DATE_EPOCH: plan says the images are dated 1970, and why.
    let out = slipway(&["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1970-01-01T00:00:00Z  the Unix epoch: no SOURCE_DATE_EPOCH set and no git commit touches the context"),
        "{stdout}"
    );
    assert!(
        stdout.contains("note: api, web dated 1970-01-01"),
        "{stdout}"
    );
    let out = slipway(&["plan", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["components"][0]["date"]["source"], "zero", "{json}");

    // A run leaves .slipway/ with its own .gitignore: git sees nothing of it, though the
    // project's own ignore rules do not name it.
    let out = common::slipway()
        .current_dir(root)
        .args(["up", "--cluster", "none", "--metadata-file", "run.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join(".slipway/last-build.json").is_file());
    assert!(!root.join(".gitignore").exists());
    let status = git(root, &["status", "--porcelain", "--untracked-files=all"]);
    let listed = String::from_utf8_lossy(&status.stdout);
    assert!(!listed.contains(".slipway"), "{listed}");
    assert!(listed.contains("slipway.toml"), "{listed}");

    // After a commit the date is the commit's.
    assert!(git(root, &["add", "-A"]).status.success());
    let commit = git(
        root,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "first",
        ],
    );
    assert!(commit.status.success(), "{}", text(&commit));
    let out = slipway(&["plan"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("from the last git commit touching the context")
            && !stdout.contains("note:"),
        "{stdout}"
    );
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run.json")).unwrap()).unwrap();
    remove_images(&docker, &[&run]).await;
}

#[tokio::test]
async fn up_takes_no_cache_and_allow_missing_secrets_as_build_and_manifests_do() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &common::unique("slipway-up"));
    // The first run builds both and pins the bases in slipway.lock (for --locked below).
    let first = up(
        dir.path(),
        &["--cluster", "none", "--metadata-file", "run.json"],
    );
    assert!(first.status.success(), "{}", text(&first));

    // Cached, but --no-cache rebuilds both; --allow-missing-secrets lets --locked write the
    // unset secret empty, with a warning, instead of failing.
    let again = common::slipway()
        .current_dir(dir.path())
        .env_remove("API_TOKEN")
        .args(["--progress", "plain", "up", "--locked", "--no-cache"])
        .args(["--allow-missing-secrets", "--cluster", "none"])
        .args(["--metadata-file", "run2.json"])
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("secrets not set, their Secret values are written empty"),
        "{}",
        text(&again)
    );
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(f)).unwrap()).unwrap()
    };
    let (run, run2) = (read("run.json"), read("run2.json"));
    for c in ["api", "web"] {
        assert_eq!(run2["build"]["components"][c]["outcome"], "built", "{run2}");
    }
    assert_eq!(run2["missing_secrets"][0], "api.API_TOKEN", "{run2}");
    remove_images(&docker, &[&run, &run2]).await;
}
