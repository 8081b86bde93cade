//! The promise (docs/internals.md) "No daemon: an error with the address tried and how to start one, in under
//! 2 s", for every command that talks to the daemon (issue 14, item 4), not only `doctor`.
//!
//! Three kinds of "no daemon": a socket path nothing is at, a socket file nobody listens on
//! (what a crashed dockerd leaves) and a TCP port nothing listens on. Each command runs three
//! times per address and the median must be under 2 s (the machine is shared: one slow start
//! of the process is not the answer's speed); every run must exit 1 with the address and the
//! hint. Needs no daemon, so it runs everywhere. (`load` is not among them: without a build
//! record it answers "run `slipway build` first", exit 2, before it needs the daemon.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("slipway.toml"),
        "[app]\nname = \"nodaemon\"\n[images]\nprefix = \"slipway-test-nodaemon\"\n\
         [components.app]\ncontext = \"app\"\ndockerfile = \"app/Dockerfile\"\nport = 80\n",
    )
    .unwrap();
}

#[test]
fn every_command_that_needs_the_daemon_says_so_in_under_two_seconds() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path());
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let hosts = [
        format!("unix://{}", dir.path().join("missing.sock").display()),
        format!("unix://{}", stale.display()),
        format!("tcp://127.0.0.1:{}", common::free_port()),
    ];
    let commands: [&[&str]; 5] = [
        &["plan"],
        &["build"],
        &["up", "--cluster", "none"],
        &["verify", "app"],
        &["doctor"],
    ];
    let mut slow = Vec::new();
    for host in &hosts {
        for cmd in commands {
            let mut took = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
                    .current_dir(dir.path())
                    .env("DOCKER_HOST", host)
                    .env_remove("DOCKER_CONTEXT")
                    .args(cmd)
                    .output()
                    .unwrap();
                took.push(start.elapsed());
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.status.code(), Some(1), "{cmd:?} {host}:\n{text}");
                assert!(
                    text.contains(host.as_str()),
                    "{cmd:?} {host}: the address tried is not named:\n{text}"
                );
                assert!(
                    text.contains("start the Docker daemon"),
                    "{cmd:?} {host}: no hint:\n{text}"
                );
            }
            took.sort();
            if took[1] >= Duration::from_secs(2) {
                slow.push(format!("{cmd:?} {host}: median {:?} ({took:?})", took[1]));
            }
        }
    }
    assert!(
        slow.is_empty(),
        "not answered in under 2 s:\n{}",
        slow.join("\n")
    );
    assert!(
        !dir.path().join(".slipway/last-build.json").exists(),
        "a failed run wrote a build record"
    );
}
