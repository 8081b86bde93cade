//! `slipway prune`: five generations of an image on the real daemon and in a two-node kind
//! stand-in; prune keeps the newest N, the last build's and one a container uses, frees what
//! it says, and never touches an image slipway did not build.

mod common;

use common::RunRetrying as _;

use std::path::Path;
use std::process::{Command, Output};

struct Down(Vec<String>);

impl Drop for Down {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        let _ = Command::new(common::repo().join("tests/env/down"))
            .args(&self.0)
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output_retrying().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn slipway(dir: &Path, args: &[&str]) -> String {
    run(common::slipway()
        .current_dir(dir)
        .args(["--progress", "plain"])
        .args(args))
}

fn json(dir: &Path, file: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap()
}

fn node_refs(node: &str) -> String {
    run(Command::new("docker").args(["exec", node, "ctr", "-n", "k8s.io", "images", "ls", "-q"]))
}

fn on_daemon(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn prune_keeps_the_newest_the_last_and_the_used_and_nothing_else_is_touched() {
    let Some(_docker) = common::daemon().await else {
        return;
    };
    let cluster = common::unique("prune");
    let prefix = common::unique("slipway-prune");
    let user = format!("{cluster}-user");
    let _down = Down(vec![cluster.clone(), user.clone()]);
    run(Command::new(common::repo().join("tests/env/kind-up")).args([&cluster, "1"]));
    let nodes = [
        format!("{cluster}-control-plane"),
        format!("{cluster}-worker"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("api")).unwrap();
    std::fs::write(
        d.join("api/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\nUSER 10001\nCMD [\"httpd\", \"-f\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("slipway.toml"),
        format!(
            "[app]\nname = \"pruneapp\"\n[images]\nprefix = \"{prefix}\"\n[cluster]\ntarget = \"kind:{cluster}\"\n[components.api]\ncontext = \"api\"\ndockerfile = \"api/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();

    // Five generations, each built and loaded into both nodes.
    let mut gens = Vec::new();
    for g in 1..=5 {
        // Each generation a layer of its own size, so freed bytes show.
        let body = format!("api v{g}\n{}", "x".repeat(200_000 * g));
        std::fs::write(d.join("api/index.html"), body).unwrap();
        slipway(d, &["up", "--metadata-file", "run.json"]);
        let image = json(d, "run.json")["build"]["components"]["api"]["image"]
            .as_str()
            .unwrap()
            .to_string();
        gens.push(image);
    }
    // Not slipway's: a tag that looks like one, on the daemon and in a node.
    let foreign = format!("{prefix}/api:0000deadbeef");
    run(Command::new("docker").args(["tag", "slipway-test/busybox:1.35", &foreign]));
    run(Command::new("sh").args([
        "-c",
        &format!(
            "docker save {foreign} | docker exec -i {} ctr -n k8s.io images import -",
            nodes[0]
        ),
    ]));
    // A container uses the first generation.
    run(Command::new("docker").args(["create", "--name", &user, &gens[0]]));

    let dry = slipway(
        d,
        &[
            "prune",
            "--keep",
            "2",
            "--dry-run",
            "--metadata-file",
            "dry.json",
        ],
    );
    let dry_json = json(d, "dry.json");
    let daemon_dry: Vec<&str> = dry_json["places"][0]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(daemon_dry, [gens[2].as_str(), gens[1].as_str()], "{dry}");
    assert!(
        gens.iter().all(|g| on_daemon(g)),
        "a dry run removed something"
    );

    let said = slipway(
        d,
        &["prune", "--keep", "2", "--metadata-file", "prune.json"],
    );
    let report = json(d, "prune.json");
    // The daemon: generations 1 (a container's), 4 and 5 (the newest two) stay.
    for (i, g) in gens.iter().enumerate() {
        assert_eq!(on_daemon(g), [0, 3, 4].contains(&i), "{g}: {said}");
    }
    assert!(on_daemon(&foreign), "{said}");
    assert!(
        report["places"][0]["freed_bytes"].as_u64().unwrap() >= 400_000,
        "{report}"
    );
    // Each node: 4 and 5 stay (node containers use none), and the foreign image.
    for (n, node) in nodes.iter().enumerate() {
        let place = report["places"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["place"] == *node.as_str())
            .unwrap_or_else(|| panic!("{node} not in {report}"));
        assert!(place["freed_bytes"].as_u64().unwrap() > 0, "{report}");
        let refs = node_refs(node);
        for (i, g) in gens.iter().enumerate() {
            assert_eq!(
                refs.contains(&format!("docker.io/{g}\n")),
                i >= 3,
                "{g} in {node}: {refs}"
            );
        }
        if n == 0 {
            assert!(refs.contains(&foreign), "{refs}");
        }
    }
    // The newest still runs.
    let out = run(Command::new("docker").args([
        "exec",
        &nodes[1],
        "ctr",
        "-n",
        "k8s.io",
        "run",
        "--rm",
        &format!("docker.io/{}", gens[4]),
        "t5",
        "head",
        "-c",
        "6",
        "/www/index.html",
    ]));
    assert_eq!(out, "api v5");

    // Nothing more to do the second time.
    slipway(
        d,
        &["prune", "--keep", "2", "--metadata-file", "again.json"],
    );
    let again = json(d, "again.json");
    assert!(
        again["places"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["removed"].as_array().unwrap().is_empty()),
        "{again}"
    );

    let _ = Command::new("docker").args(["rm", "-f", &user]).output();
    for g in gens.iter().chain([&foreign]) {
        let _ = Command::new("docker").args(["rmi", g]).output();
    }
}

/// The temporary tags of runs killed outright (SIGKILL: nothing of theirs ran after) are
/// removed by `prune`, not only by the next build of the project that made them: a build tag of
/// this project and a normalisation's export tag of any. A live run's tags stay.
#[tokio::test]
async fn prune_removes_the_temporary_tags_of_killed_runs() {
    if common::daemon().await.is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = common::unique("slipway-prune-tags");
    std::fs::create_dir_all(d.join("api")).unwrap();
    std::fs::write(d.join("api/Dockerfile"), "FROM slipway-test/busybox:1.35\n").unwrap();
    std::fs::write(
        d.join("slipway.toml"),
        format!(
            "[app]\nname = \"tagapp\"\n[images]\nprefix = \"{prefix}\"\n[cluster]\ntarget = \"none\"\n[components.api]\ncontext = \"api\"\ndockerfile = \"api/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
    // A pid no process has any more, and this test's own (alive).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let live = std::process::id();
    let name = common::unique("x");
    let tags = [
        format!("{prefix}/api:slipway-build-slipway-api-{dead}-1a2b"),
        format!("127.0.0.1:9/slipway-export/{name}:p{dead}-1"),
        format!("127.0.0.1:9/slipway-export/{name}:p{live}-2"),
    ];
    for t in &tags {
        run(Command::new("docker").args(["tag", "slipway-test/busybox:1.35", t]));
    }

    slipway(d, &["prune", "--dry-run", "--metadata-file", "dry.json"]);
    let removed = |file: &str| -> Vec<String> {
        let report = json(d, file);
        let daemon = report["places"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["place"] == "daemon")
            .unwrap()
            .clone();
        let mut r: Vec<String> = daemon["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    let mut expected = vec![tags[0].clone(), tags[1].clone()];
    expected.sort();
    assert_eq!(removed("dry.json"), expected);
    assert!(tags.iter().all(|t| on_daemon(t)), "a dry run removed a tag");

    slipway(d, &["prune", "--metadata-file", "real.json"]);
    assert_eq!(removed("real.json"), expected);
    assert!(!on_daemon(&tags[0]) && !on_daemon(&tags[1]));
    assert!(on_daemon(&tags[2]), "a live run's export tag was removed");
    // Only the tags: the image they named is still there.
    assert!(on_daemon("slipway-test/busybox:1.35"));
    run(Command::new("docker").args(["rmi", &tags[2]]));
}
