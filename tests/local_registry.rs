//! A local registry wired into the cluster (KEP-1755): Debian's docker-registry, kind node
//! stand-ins whose containerd pulls `localhost:PORT` from it (a `certs.d` hosts.toml, as the
//! kind and registry recipe writes), the real daemon. What travels is counted by the registry's
//! own log and the nodes' content stores, never by slipway.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn project(dir: &Path, prefix: &str, cluster: &str, registry: Option<&str>) {
    for (name, body) in [("api", "api v1"), ("web", "web v1")] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("index.html"), format!("{body}\n")).unwrap();
        std::fs::write(
            dir.join(name).join("Dockerfile"),
            "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\nUSER 10001\nCMD [\"httpd\", \"-f\", \"-h\", \"/www\"]\n",
        )
        .unwrap();
    }
    let registry = registry
        .map(|r| format!("registry = \"{r}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("slipway.toml"),
        format!(
            r#"[app]
name = "regapp"
[images]
prefix = "{prefix}"
[cluster]
target = "kind:{cluster}"
{registry}[components.api]
context = "api"
dockerfile = "api/Dockerfile"
port = 80
[components.web]
context = "web"
dockerfile = "web/Dockerfile"
port = 80
"#
        ),
    )
    .unwrap();
}

fn up(dir: &Path, metadata: &str) -> (Output, serde_json::Value) {
    let out = common::slipway()
        .current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .args(["--progress", "plain", "up", "--metadata-file", metadata])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run = serde_json::from_slice(&std::fs::read(dir.join(metadata)).unwrap()).unwrap();
    (out, run)
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ctr(node: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .args(["exec", node, "ctr", "-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap()
}

/// The node pulls `reference` as its CRI would: through containerd's `certs.d`.
fn pull(node: &str, reference: &str) {
    let out = ctr(
        node,
        &[
            "images",
            "pull",
            "--hosts-dir",
            "/etc/containerd/certs.d",
            reference,
        ],
    );
    assert!(
        out.status.success(),
        "pull {reference} in {node}: {}",
        text(&out)
    );
}

/// The blobs in a node's content store, with their sizes.
fn content(node: &str) -> BTreeSet<(String, u64)> {
    let out = Command::new("docker")
        .args(["exec", node, "sh", "-c"])
        .arg("cd /var/lib/containerd/io.containerd.content.v1.content/blobs/sha256 && for f in *; do echo \"$f $(wc -c < $f)\"; done")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (d, n) = l.split_once(' ')?;
            Some((format!("sha256:{d}"), n.trim().parse().ok()?))
        })
        .collect()
}

fn pinned(run: &serde_json::Value, component: &str) -> String {
    run["build"]["components"][component]["pushed"]
        .as_str()
        .unwrap_or_else(|| panic!("{component} not pinned: {run}"))
        .to_string()
}

/// doctor's `registry` and `registry: nodes` checks.
fn doctor(dir: &Path) -> (serde_json::Value, serde_json::Value) {
    let out = common::slipway()
        .current_dir(dir)
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let named = |n: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("no {n} check: {report}"))
            .clone()
    };
    (named("registry"), named("registry: nodes"))
}

/// Removes every image of the test's prefix from the daemon (the local registry's names too),
/// however the test ends.
struct Images(String);

impl Drop for Images {
    fn drop(&mut self) {
        let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        else {
            return;
        };
        let mine: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&format!("{}/", self.0)))
            .map(str::to_string)
            .collect();
        if !mine.is_empty() {
            let _ = Command::new("docker").arg("rmi").args(&mine).output();
        }
    }
}

fn run_in(node: &str, reference: &str, id: &str) -> String {
    let out = ctr(
        node,
        &["run", "--rm", reference, id, "cat", "/www/index.html"],
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn up_pushes_to_the_wired_registry_and_nodes_pull_only_what_they_lack() {
    if common::daemon().await.is_none() {
        return;
    }
    let Some(registry) = common::registry::start_for_nodes() else {
        return;
    };
    let cluster = common::unique("lreg");
    let _kind = common::stand_in("kind-up", &cluster, 1);
    let nodes = [
        format!("{cluster}-control-plane"),
        format!("{cluster}-worker"),
    ];
    let host = registry.host();
    registry.wire(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-lreg");
    let _images = Images(prefix.clone());
    // No registry in slipway.toml: found in the nodes' certs.d.
    project(dir.path(), &prefix, &cluster, None);

    let (first, run) = up(dir.path(), "run.json");
    let said = text(&first);
    assert_eq!(run["load"]["registry"]["host"], host.as_str(), "{run}");
    assert!(
        run["load"]["registry"]["found_in"]
            .as_str()
            .unwrap()
            .contains("certs.d"),
        "{run}"
    );
    let results = run["load"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{run}");
    assert!(results.iter().all(|r| r["status"] == "pushed"), "{run}");
    assert!(said.contains(&format!("registry: {host}")), "{said}");
    // Nothing went into the nodes: they pull.
    for node in &nodes {
        let listed = ctr(node, &["images", "ls", "-q"]);
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains(&prefix),
            "{}",
            text(&listed)
        );
    }
    // The manifests and the chart name the registry by digest.
    let api = pinned(&run, "api");
    let web = pinned(&run, "web");
    assert!(
        api.starts_with(&format!("{host}/{prefix}/api@sha256:")),
        "{api}"
    );
    let manifests: String = std::fs::read_dir(dir.path().join("k8s"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(manifests.contains(&api), "{manifests}");
    let digest = api.split('@').nth(1).unwrap();
    let values = std::fs::read_to_string(dir.path().join("charts/regapp/values.yaml")).unwrap();
    assert!(values.contains(digest), "{values}");
    let base_uploads = registry.uploaded_blobs();
    // Each node pulls both images through certs.d, and runs them.
    for node in &nodes {
        pull(node, &api);
        pull(node, &web);
        assert_eq!(run_in(node, &api, "t-api"), "api v1");
        assert_eq!(run_in(node, &web, "t-web"), "web v1");
    }

    // A one-line change to api: only its changed layer (and its config) travels.
    std::fs::write(dir.path().join("api/index.html"), "api v2\n").unwrap();
    let before = content(&nodes[0]);
    let uploaded = registry.uploaded_blobs().len();
    let (_, run2) = up(dir.path(), "run2.json");
    let by: std::collections::BTreeMap<&str, &str> = run2["load"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["component"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(by["api"], "pushed", "{run2}");
    assert_eq!(by["web"], "already_present", "{run2}");
    let pushed_now = &registry.uploaded_blobs()[uploaded..];
    // The changed layer and the new image config; the base layer (the largest blob of the first
    // push) did not travel again.
    assert_eq!(pushed_now.len(), 2, "{pushed_now:?}");
    let base = base_uploads.iter().max_by_key(|(_, n)| *n).unwrap();
    assert!(
        pushed_now.iter().all(|(d, _)| *d != base.0),
        "{pushed_now:?}"
    );
    let bytes: u64 = pushed_now.iter().map(|(_, n)| n).sum();
    assert!(
        bytes < base.1 / 10,
        "{bytes} bytes pushed, base layer {}",
        base.1
    );

    // The node pulls the new api: only what it lacks comes from the registry.
    let api2 = pinned(&run2, "api");
    assert_ne!(api2, api);
    assert_eq!(pinned(&run2, "web"), web);
    let served = registry.served_blobs().len();
    pull(&nodes[0], &api2);
    assert_eq!(run_in(&nodes[0], &api2, "t-api2"), "api v2");
    let fetched = &registry.served_blobs()[served..];
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    assert!(!fetched.contains(&base.0), "{fetched:?}");
    let grown: Vec<(String, u64)> = content(&nodes[0]).difference(&before).cloned().collect();
    // The manifest, the config and the changed layer: a few kB, not the base layer again.
    assert_eq!(grown.len(), 3, "{grown:?}");
    assert!(
        grown.iter().map(|(_, n)| n).sum::<u64>() < base.1 / 10,
        "{grown:?}"
    );

    // doctor names the registry and says that both nodes resolve it.
    let (registry_check, nodes_check) = doctor(dir.path());
    assert_eq!(registry_check["status"], "ok", "{registry_check}");
    let said = registry_check["message"].as_str().unwrap();
    assert!(said.contains(&host) && said.contains("certs.d"), "{said}");
    assert_eq!(nodes_check["status"], "ok", "{nodes_check}");
    let said = nodes_check["message"].as_str().unwrap();
    assert!(
        said.contains(&nodes[0]) && said.contains(&nodes[1]) && said.contains("resolve"),
        "{said}"
    );

    // Configured in slipway.toml, the registry is used as is and named there.
    project(dir.path(), &prefix, &cluster, Some(&host));
    std::fs::write(dir.path().join("api/index.html"), "api v2\n").unwrap();
    let (_, run3) = up(dir.path(), "run3.json");
    assert!(
        run3["load"]["registry"]["found_in"]
            .as_str()
            .unwrap()
            .contains("slipway.toml"),
        "{run3}"
    );
    assert_eq!(pinned(&run3, "api"), api2);

    // A node that is not wired cannot pull it: doctor says which one, and how to wire it.
    let out = Command::new("docker")
        .args(["exec", &nodes[1], "rm", "-r"])
        .arg(format!("/etc/containerd/certs.d/{host}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (registry_check, nodes_check) = doctor(dir.path());
    assert!(
        registry_check["message"]
            .as_str()
            .unwrap()
            .contains("slipway.toml"),
        "{registry_check}"
    );
    assert_eq!(nodes_check["status"], "fail", "{nodes_check}");
    let said = nodes_check["message"].as_str().unwrap();
    assert!(
        said.contains(&nodes[1]) && !said.contains(&nodes[0]),
        "{said}"
    );
    assert!(
        nodes_check["hint"].as_str().unwrap().contains("hosts.toml"),
        "{nodes_check}"
    );
}
