//! The words users read when something is wrong (issue 18, point 3): a corpus of error messages
//! from the binary (bad configs, an unreachable daemon, a wrong cluster) in which no message
//! names this repository's own scripts, a Rust type, or the HTTP client's internals as the
//! cause, and every hint is one a user on any machine can follow.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// What no message may contain: this repository's scripts, Rust type names, transport
/// internals (these only with `-v`).
const NEVER: &[&str] = &[
    "scripts/",
    "RawCluster",
    "RawConfig",
    "RawComponent",
    "struct ",
    "expected i64",
    "expected u16",
    "expected u32",
    "expected usize",
    "expected bool",
    "sequence",
    "hyper",
    "client error (",
    "tcp connect error",
];

fn run(dir: &Path, host: &str, args: &[&str]) -> Output {
    common::slipway()
        .current_dir(dir)
        .env("DOCKER_HOST", host)
        .env_remove("DOCKER_CONTEXT")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_plain(what: &str, text: &str) {
    for word in NEVER {
        assert!(!text.contains(word), "{what}: `{word}` in:\n{text}");
    }
}

const GOOD: &str = "[app]\nname = \"msgs\"\n[components.app]\ncontext = \"app\"\n\
                    dockerfile = \"app/Dockerfile\"\nport = 80\n";

fn project(dir: &Path, config: &str) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(
        dir.join("app/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCMD [\"true\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("slipway.toml"), config).unwrap();
}

#[test]
fn an_unreachable_daemon_gives_one_plain_cause_and_the_rest_with_v() {
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), GOOD);
    let tcp = format!("tcp://127.0.0.1:{}", common::free_port());
    let hosts = [
        format!("unix://{}", dir.path().join("missing.sock").display()),
        tcp.clone(),
    ];
    let commands: [&[&str]; 4] = [
        &["plan"],
        &["build"],
        &["up", "--cluster", "none"],
        &["doctor"],
    ];
    for host in &hosts {
        for cmd in commands {
            let out = run(dir.path(), host, cmd);
            let all = text(&out);
            assert!(!out.status.success(), "{cmd:?}: {all}");
            assert_plain(&format!("{cmd:?} at {host}"), &all);
            let causes = all.lines().filter(|l| l.starts_with("caused by:")).count();
            assert!(causes <= 1, "{cmd:?} at {host}: {all}");
            assert!(
                all.contains("start the Docker daemon") && all.contains(host.as_str()),
                "{cmd:?} at {host}: {all}"
            );
        }
    }
    // The first cause says what happened, in the system's words.
    let out = run(dir.path(), &tcp, &["build"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("caused by: Connection refused"),
        "one plain cause: {err}"
    );
    // -v shows the whole chain.
    let out = run(dir.path(), &tcp, &["-v", "build"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let causes = err.lines().filter(|l| l.starts_with("caused by:")).count();
    assert!(causes > 1, "-v shows every cause: {err}");
}

#[test]
fn bad_configs_are_told_in_the_files_words() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("tcp://127.0.0.1:{}", common::free_port());
    let cases = [
        (
            GOOD.replace("port = 80", "port = \"abc\""),
            "a whole number",
        ),
        (GOOD.replace("port = 80", "port = 8.5"), "a whole number"),
        (format!("cluster = 5\n{GOOD}"), "kind:dev"),
        (
            format!("{GOOD}[cluster]\ntarget = [\"kind:a\"]\n"),
            "an array",
        ),
        (
            format!("cluster = \"uxr\"\n{GOOD}"),
            "did you mean `kind:uxr`",
        ),
        (
            format!("cluster = \"kind:Bad_Name\"\n{GOOD}"),
            "not a valid name",
        ),
        (format!("{GOOD}replicas = \"two\"\n"), "a whole number"),
        (format!("{GOOD}secrets = \"A\"\n"), "an array"),
        (GOOD.replace("[app]\n", "[app]\nname2 = 1\n"), "unknown key"),
        (
            GOOD.replace("port = 80", "prot = 80"),
            "did you mean `port`",
        ),
        // Appended after the last table, the key lands in it: the hint says where it goes.
        (
            format!("{GOOD}cluster = \"kind:uxr\"\n"),
            "goes at the top of the file",
        ),
        ("[app]\n".to_string(), "missing"),
        ("not toml at all".to_string(), "slipway.toml"),
    ];
    for (config, says) in &cases {
        project(dir.path(), config);
        let out = run(dir.path(), &host, &["plan"]);
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{config}\n{all}");
        assert!(all.contains(says), "{config}\nexpected `{says}` in:\n{all}");
        assert_plain(config, &all);
    }

    // The form the hints name is accepted: the run gets past the config to the daemon.
    project(dir.path(), &format!("cluster = \"kind:uxr\"\n{GOOD}"));
    let out = run(dir.path(), &host, &["plan"]);
    let all = text(&out);
    assert!(all.contains("cannot reach the Docker daemon"), "{all}");

    // A cluster name without its kind suggests the kind.
    project(dir.path(), GOOD);
    let out = run(dir.path(), &host, &["up", "--cluster", "uxr"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("did you mean `kind:uxr`"), "{all}");
    assert_plain("--cluster uxr", &all);
}

#[tokio::test]
async fn a_missing_base_image_offline_names_the_pull_not_our_scripts() {
    let Some(_docker) = common::daemon().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), GOOD);
    let missing = format!("{}:1", common::unique("slipway-test/never-made"));
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        format!("FROM {missing}\nCMD [\"true\"]\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .current_dir(dir.path())
        .args(["build", "--no-pull"])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains(&format!("docker pull {missing}")), "{all}");
    assert_plain("build --no-pull", &all);
}
