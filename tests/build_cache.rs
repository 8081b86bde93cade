//! `--cache-from` / `--cache-to` across CI runners: a fresh daemon (no built image, an empty
//! BuildKit cache) takes the dependency stage of the reference app's backend from a registry
//! after a one-line change, and runs only the steps after it.
//!
//! The daemon is a Docker Engine 26.1 of this test's own (tests/env/daemon-up, container
//! `slipway-docker26-buildcache`, tcp://127.0.0.1:23757), because the test empties it (every
//! image but the base images, and its whole build cache): no other test uses it. Remove it
//! with `tests/env/down slipway-docker26-buildcache`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const NAME: &str = "slipway-docker26-buildcache";
const HOST: &str = "tcp://127.0.0.1:23757";

/// The tests here empty the daemon: one at a time.
static DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Starts (or finds running) the test's own daemon, with the base images, and holds it for
/// the calling test until the guard drops.
fn scratch_daemon() -> Option<(String, std::sync::MutexGuard<'static, ()>)> {
    let guard = DAEMON.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(common::repo().join("tests/env/daemon-up"))
        .args([NAME, "classic", "23757"])
        .env_remove("DOCKER_HOST")
        .output()
        .unwrap();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).to_string();
        if common::in_ci() {
            panic!("CI=true and the build-cache test's daemon did not start: {why}");
        }
        eprintln!("SKIPPED: the build-cache test's daemon did not start: {why}");
        return None;
    }
    Some((HOST.to_string(), guard))
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .env("DOCKER_HOST", HOST)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What a fresh CI runner's daemon has: the base images only, no build cache.
fn empty_daemon() {
    let images = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    for image in images.lines() {
        if !image.starts_with("slipway-test/") && !image.starts_with("<none>") {
            docker(&["image", "rm", "-f", image]);
        }
    }
    for id in docker(&["image", "ls", "-q", "--filter", "dangling=true"]).lines() {
        docker(&["image", "rm", "-f", id]);
    }
    docker(&["builder", "prune", "-af"]);
    let left = docker(&["system", "df", "--format", "{{.Type}} {{.TotalCount}}"]);
    assert!(left.contains("Build Cache 0"), "{left}");
}

/// The reference app's backend, its images under `prefix`.
fn project(dir: &Path, prefix: &str) {
    let repo = common::repo();
    let copy = Command::new("cp")
        .arg("-r")
        .arg(repo.join("contexts"))
        .arg(repo.join("dockerfiles"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(copy.success());
    let toml = std::fs::read_to_string(repo.join("slipway.toml"))
        .unwrap()
        .replace("prefix = \"slipway\"", &format!("prefix = \"{prefix}\""));
    std::fs::write(dir.join("slipway.toml"), toml).unwrap();
}

/// Runs `slipway --progress json ARGS` in `dir` against the test's daemon: the events, all
/// the output, and how long it took.
fn run(dir: &Path, args: &[&str]) -> (Vec<serde_json::Value>, String, f64) {
    let t0 = Instant::now();
    let out = common::slipway()
        .current_dir(dir)
        .env("DOCKER_HOST", HOST)
        .env("DOCKER_CONFIG", dir.join(".docker"))
        .args(["--progress", "json"])
        .args(args)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let all = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "slipway {args:?}:\n{all}");
    let events = all
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    (events, all, secs)
}

/// The steps of `task` as (step, cached).
fn steps(events: &[serde_json::Value], task: &str) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["task"] == task)
        .map(|e| {
            (
                e["step"].as_str().unwrap_or_default().to_string(),
                e["cached"] == true,
            )
        })
        .collect()
}

/// Whether the step whose text contains `needle` came from cache (it must be there).
fn cached(steps: &[(String, bool)], needle: &str) -> bool {
    steps
        .iter()
        .find(|(s, _)| s.contains(needle))
        .unwrap_or_else(|| panic!("no step `{needle}` in {steps:#?}"))
        .1
}

fn outcome(events: &[serde_json::Value], task: &str) -> String {
    events
        .iter()
        .rev()
        .find(|e| e["event"] == "finished" && e["task"] == task)
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn a_fresh_runner_takes_the_dependency_layers_from_the_registry_cache() {
    let Some((host, _daemon)) = scratch_daemon() else {
        return;
    };
    let Some(reg) = common::registry::start_beside(&host) else {
        return;
    };
    let registry = format!("127.0.0.1:{}", reg.port);
    let cache = format!("type=registry,ref={registry}/cache/taskboard");
    let dir = tempfile::tempdir().unwrap();
    project(dir.path(), &format!("{registry}/taskboard"));

    // Runner 1: a cold daemon builds the backend, pushes it and writes the cache.
    empty_daemon();
    let (first, all, cold) = run(
        dir.path(),
        &[
            "build",
            "backend",
            "--push",
            "--cache-from",
            &cache,
            "--cache-to",
            &cache,
        ],
    );
    assert_eq!(outcome(&first, "backend"), "pushed", "{all}");
    // The daemon cannot export a registry cache through the Engine API: said, named, and
    // made up for.
    assert!(
        all.contains(&format!("the Docker daemon at {HOST} (Engine 26.1"))
            && all.contains("exports build cache only inline"),
        "{all}"
    );
    let tags = reg.get_json("cache/taskboard/tags/list");
    let mut tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "backend-base",
            "backend-build",
            "backend-deps",
            "backend-production"
        ]
    );
    // The cache options are no input: the tag is the one `plan` computes without them, and
    // the stage images left no tag on the daemon.
    let built = dir.path().join(".slipway/last-build.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&built).unwrap()).unwrap();
    let tag = record["components"]["backend"]["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, plan, _) = run(dir.path(), &["plan", "backend", "--json"]);
    assert!(plan.contains(&tag), "{tag} not in {plan}");
    let left = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !left.contains("slipway-cache") && !left.contains("/cache/") && !left.contains("<none>"),
        "{left}"
    );

    // Runner 2: a fresh daemon, a one-line change to the backend.
    empty_daemon();
    std::fs::remove_dir_all(dir.path().join(".slipway")).unwrap();
    let main = dir.path().join("contexts/backend/app/main.py");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("# a one-line change\n");
    std::fs::write(&main, text).unwrap();
    let (second, all, warm) = run(
        dir.path(),
        &["build", "backend", "--push", "--cache-from", &cache],
    );
    assert_eq!(outcome(&second, "backend"), "pushed", "{all}");
    let steps = steps(&second, "backend");
    let find = |needle: &str| cached(&steps, needle);
    // The dependencies come from the registry cache: pip does not run.
    assert!(find("install --no-compile"), "pip ran: {steps:#?}");
    assert!(find("COPY requirements.txt"), "{steps:#?}");
    assert!(find("COPY --from=deps /venv-layer/"), "{steps:#?}");
    // Only what the change touches runs.
    assert!(!find("COPY . /app"), "{steps:#?}");
    assert!(
        !second
            .iter()
            .any(|e| e["event"] == "log" && e["line"].as_str().unwrap_or("").contains("Collecting")),
        "pip downloaded packages"
    );
    eprintln!("cold runner {cold:.1}s (build, push, cache), warm registry cache after a one-line change {warm:.1}s");
    empty_daemon();
}

/// docs/ci-workflow.yml is valid YAML (yamllint, lines up to 120) and uses the lock, the
/// registry-aware cache and the build cache with flags `slipway` has.
#[test]
fn the_ci_workflow_uses_the_lock_the_registry_and_the_build_cache() {
    let Some(yamllint) = common::tool("yamllint") else {
        return;
    };
    let file = common::repo().join("docs/ci-workflow.yml");
    let out = Command::new(yamllint)
        .args([
            "-d",
            "{extends: default, rules: {line-length: {max: 120}, truthy: {check-keys: false}, document-start: disable}}",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for used in [
        "--locked",
        "--push",
        "--cache-from \"$CACHE\"",
        "--cache-to $CACHE",
        "type=registry,ref=",
        "--cache-from type=local,src=",
        "--cache-to type=local,dest=",
        "slipway lock",
    ] {
        assert!(text.contains(used), "docs/ci-workflow.yml lacks {used}");
    }
    for command in ["up", "build"] {
        let help = common::slipway()
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in ["--locked", "--push", "--cache-from", "--cache-to"] {
            assert!(help.contains(flag), "slipway {command} has no {flag}");
        }
    }
}

/// `type=local` (a CI service's cache directory, e.g. actions/cache): `[images] cache_to`
/// saves the stage images to DIR/COMPONENT.tar, and a fresh daemon given `--cache-from
/// type=local,src=DIR` runs only the step after the change. `doctor` says what the daemon
/// takes.
#[test]
fn a_local_cache_directory_carries_the_stages_to_a_fresh_daemon() {
    let Some((_, _daemon)) = scratch_daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("deps.txt"), "dependencies\n").unwrap();
    std::fs::write(web.join("app.txt"), "version 1\n").unwrap();
    std::fs::write(
        web.join("Dockerfile"),
        "FROM slipway-test/busybox:1.35 AS deps\nCOPY deps.txt /deps.txt\n\
         RUN cp /deps.txt /installed\n\
         FROM deps AS production\nCOPY app.txt /app.txt\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        "[app]\nname = \"localcache\"\n[images]\nprefix = \"localcache\"\n\
         cache_to = [\"type=local,dest=ci-cache\"]\n\
         [components.web]\ncontext = \"web\"\ndockerfile = \"web/Dockerfile\"\nport = 80\n",
    )
    .unwrap();

    let (doctor, all, _) = run(dir.path(), &["doctor", "--json"]);
    let _ = doctor;
    assert!(
        all.contains("\"build cache\"") && all.contains("exports inline cache only"),
        "{all}"
    );

    empty_daemon();
    let (first, all, _) = run(dir.path(), &["build"]);
    assert_eq!(outcome(&first, "web"), "built", "{all}");
    let archive = dir.path().join("ci-cache/web.tar");
    assert!(archive.is_file(), "{all}");
    let left = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !left.contains("slipway-cache") && !left.contains("<none>"),
        "{left}"
    );

    empty_daemon();
    std::fs::remove_dir_all(dir.path().join(".slipway")).unwrap();
    std::fs::write(web.join("app.txt"), "version 2\n").unwrap();
    let (second, all, _) = run(
        dir.path(),
        &["build", "--cache-from", "type=local,src=ci-cache"],
    );
    assert_eq!(outcome(&second, "web"), "built", "{all}");
    let steps = steps(&second, "web");
    assert!(cached(&steps, "RUN cp /deps.txt /installed"), "{steps:#?}");
    assert!(!cached(&steps, "COPY app.txt"), "{steps:#?}");
    empty_daemon();
}
