//! `slipway doctor` against the real daemon and against one that is not there.

mod common;

use std::time::{Duration, Instant};

#[tokio::test]
async fn reports_version_and_buildkit_of_the_real_daemon() {
    if common::daemon().await.is_none() {
        return;
    }
    // A project that names its cluster (none) and a base image the daemon holds: what doctor
    // says of it depends on the daemon alone, not on the clusters this machine happens to have
    // (a stopped kind cluster elsewhere fails an `auto` project's check, as it fails its `up`).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("web")).unwrap();
    std::fs::write(
        dir.path().join("web/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        "[app]\nname = \"doc\"\n[cluster]\ntarget = \"none\"\n\
         [components.web]\ncontext = \"web\"\ndockerfile = \"web/Dockerfile\"\nport = 80\n",
    )
    .unwrap();
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert_eq!(report["daemon"]["reachable"], true);
    assert!(report["daemon"]["server_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert!(report["daemon"]["api_version"]
        .as_str()
        .is_some_and(|v| v.starts_with("1.")));
    assert_eq!(
        report["daemon"]["buildkit"], true,
        "daemon 18.09+ has BuildKit: {report}"
    );
    assert!(
        out.status.success(),
        "{report:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreachable_daemon_fails_fast_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = common::slipway()
        .current_dir(dir.path())
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let daemon = &report["checks"][0];
    assert_eq!(daemon["status"], "fail");
    assert!(daemon["hint"]
        .as_str()
        .unwrap()
        .contains("start the Docker daemon"));
}

#[test]
fn unanswering_tcp_daemon_fails_within_two_seconds() {
    // A listener that accepts and never answers: the ping budget must cut it off.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = common::slipway()
        .current_dir(dir.path())
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .arg("doctor")
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  docker daemon"), "{text}");
    assert!(text.contains("hint: start the Docker daemon"), "{text}");
    drop(listener);
}

#[test]
fn bad_config_is_exit_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        "[app]\nname = \"x\"\n[components.web]\ncontext = \".\"\nprot = 80\n",
    )
    .unwrap();
    let sub = dir.path().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    let out = common::slipway()
        .current_dir(&sub)
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("slipway.toml:5:1: unknown key `prot`"),
        "{err}"
    );
    assert!(err.contains("hint: did you mean `port`?"), "{err}");
}
