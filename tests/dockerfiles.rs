//! Detection and Dockerfile generation: snapshots per fixture, the judges (hadolint, checkov),
//! the rules every generated Dockerfile follows, detection errors, `slipway init`, and
//! `slipway dockerfiles [--check]` on the repo and on temp copies.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use slipway::detect::{self, SourceTree, Stack};
use slipway::dockerfile::{self, Target};

/// The fixtures that must generate, in tests/fixtures/stacks/.
const FIXTURES: &[&str] = &[
    "nextjs-npm",
    "nextjs-pnpm",
    "nextjs-yarn",
    "node-typescript",
    "python-requirements",
    "python-uv",
    "python-poetry",
    "go",
    "rust",
];

fn fixtures_dir() -> PathBuf {
    common::repo().join("tests/fixtures/stacks")
}

fn target_for(name: &str, stack: Stack) -> Target {
    let mut t = Target {
        app: "fixtures".into(),
        version: "1.0.0".into(),
        component: name.into(),
        port: stack.default_port(),
        health: "/healthz".into(),
        user: 10001,
        build_args: vec![],
        build_secrets: vec![],
        context_ignore: None,
    };
    // Exercise build args and a private-registry token on one fixture each.
    if name == "nextjs-npm" {
        t.build_args = vec!["NEXT_PUBLIC_API_URL".into()];
        t.build_secrets = vec!["NPM_TOKEN".into()];
    }
    if name == "python-requirements" {
        t.build_secrets = vec!["PIP_INDEX_URL".into()];
    }
    t
}

fn generate(name: &str) -> (detect::Detection, dockerfile::Generated) {
    let tree = SourceTree::new(fixtures_dir().join(name), name);
    let d = detect::detect(&tree, None).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let t = target_for(name, d.stack);
    let g = dockerfile::render(&t, &d.plan);
    (d, g)
}

#[test]
fn fixture_dockerfiles_match_snapshots() {
    for name in FIXTURES {
        let (d, g) = generate(name);
        insta::assert_snapshot!(format!("{name}.Dockerfile"), g.dockerfile);
        let mut why = String::new();
        for r in &d.notes.reasons {
            why.push_str(&format!("{}: {}\n", r.file, r.what));
        }
        for w in &d.notes.warnings {
            why.push_str(&format!("warning: {w}\n"));
        }
        insta::assert_snapshot!(format!("{name}.detection"), why);
    }
}

#[test]
fn ignore_files_match_snapshots() {
    for name in ["nextjs-npm", "node-typescript", "python-uv", "go", "rust"] {
        let (_, g) = generate(name);
        insta::assert_snapshot!(format!("{name}.dockerignore"), g.ignore);
    }
}

#[test]
fn detected_stacks() {
    let expect = [
        ("nextjs-npm", Stack::Nextjs),
        ("nextjs-pnpm", Stack::Nextjs),
        ("nextjs-yarn", Stack::Nextjs),
        ("node-typescript", Stack::Node),
        ("python-requirements", Stack::Python),
        ("python-uv", Stack::Python),
        ("python-poetry", Stack::Python),
        ("go", Stack::Go),
        ("rust", Stack::Rust),
    ];
    for (name, stack) in expect {
        assert_eq!(generate(name).0.stack, stack, "{name}");
    }
}

/// Every generated Dockerfile: the repo's and each fixture's.
fn all_generated() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = FIXTURES
        .iter()
        .map(|n| (format!("{n}.Dockerfile"), generate(n).1.dockerfile))
        .collect();
    for n in ["backend", "frontend"] {
        let p = common::repo().join(format!("dockerfiles/{n}.Dockerfile"));
        out.push((
            format!("{n}.Dockerfile"),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    out
}

/// Instructions of a Dockerfile (continuations joined, comments dropped).
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(body) => {
                cur.push_str(body);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

#[test]
fn every_dockerfile_follows_the_rules() {
    for (name, text) in all_generated() {
        assert!(dockerfile::is_generated(&text), "{name}: header");
        assert!(!text.contains("# syntax"), "{name}: no syntax line");
        let ins = instructions(&text);
        let first_from = ins.iter().position(|i| i.starts_with("FROM ")).unwrap();
        for i in &ins[..first_from] {
            assert!(i.starts_with("ARG "), "{name}: only ARGs before FROM: {i}");
            assert!(i.contains('='), "{name}: base image ARG has a default: {i}");
            let (arg, default) = i[4..].split_once('=').unwrap();
            assert!(arg.ends_with("_IMAGE"), "{name}: {arg}");
            let tag = default.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                tag.chars().any(|c| c.is_ascii_digit()) && tag != "latest",
                "{name}: pinned default tag: {default}"
            );
        }
        let stages: Vec<&str> = ins
            .iter()
            .filter(|i| i.starts_with("FROM "))
            .map(|i| i.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(stages, ["base", "deps", "build", "production"], "{name}");
        let production = &ins[ins
            .iter()
            .position(|i| i.starts_with("FROM ") && i.ends_with(" AS production"))
            .unwrap()..];
        let user = production
            .iter()
            .rev()
            .find(|i| i.starts_with("USER "))
            .unwrap_or_else(|| panic!("{name}: USER in production"));
        assert_eq!(user, "USER 10001:10001", "{name}");
        assert!(
            production.iter().any(|i| i.starts_with("EXPOSE ")),
            "{name}"
        );
        assert!(
            production.iter().any(|i| i.starts_with("HEALTHCHECK ")),
            "{name}"
        );
        assert!(
            production
                .iter()
                .any(|i| i.contains("org.opencontainers.image.title=")),
            "{name}"
        );
        assert!(production.iter().any(|i| i.starts_with("CMD [")), "{name}");
        for i in &ins {
            if i.starts_with("RUN ") {
                // No tool the minimal bases lack, no package caches in layers.
                for bad in ["curl ", "wget ", "apk ", "apt-get "] {
                    assert!(!i.contains(bad), "{name}: {i}");
                }
            }
            if i.starts_with("ARG ") || i.starts_with("ENV ") {
                for secret in ["NPM_TOKEN", "PIP_INDEX_URL", "SECRET", "PASSWORD"] {
                    assert!(!i.contains(secret), "{name}: secret in {i}");
                }
            }
        }
    }
}

#[test]
fn stack_production_env() {
    let (_, g) = generate("python-uv");
    assert!(g.dockerfile.contains("PYTHONUNBUFFERED=1"));
    assert!(g.dockerfile.contains("PYTHONDONTWRITEBYTECODE=1"));
    let (_, g) = generate("nextjs-npm");
    assert!(g.dockerfile.contains("NODE_ENV=production"));
    assert!(g.dockerfile.contains("NEXT_TELEMETRY_DISABLED=1"));
    assert!(g.dockerfile.contains("HOSTNAME=0.0.0.0"));
    // The secret is mounted for the step, never declared.
    assert!(g.dockerfile.contains("--mount=type=secret,id=NPM_TOKEN"));
    assert!(!g.dockerfile.contains("ARG NPM_TOKEN"));
}

fn run(cmd: &mut std::process::Command) -> Output {
    cmd.output().expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes every generated Dockerfile into a temp dir, for the judges.
fn judged_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in all_generated() {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn hadolint_reports_nothing() {
    let Some(hadolint) = common::tool("hadolint") else {
        return;
    };
    let dir = judged_dir();
    let mut failures = Vec::new();
    for (name, _) in all_generated() {
        let out = run(std::process::Command::new(&hadolint)
            .args(["--no-color", "-f", "tty"])
            .arg(dir.path().join(&name)));
        if !out.status.success() || !out.stdout.is_empty() {
            failures.push(format!(
                "{name}:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "hadolint:\n{}", failures.join("\n"));
}

#[test]
fn checkov_passes() {
    let Some(checkov) = common::tool("checkov") else {
        return;
    };
    let dir = judged_dir();
    let out = run(std::process::Command::new(&checkov)
        .args([
            "--framework",
            "dockerfile",
            "--skip-download",
            "--compact",
            "-o",
            "json",
            "-d",
        ])
        .arg(dir.path()));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov JSON: {e}\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    let summary = &json["summary"];
    assert_eq!(summary["failed"], 0, "{}", text(&out.stdout));
    assert!(
        summary["passed"].as_u64().unwrap() >= 11 * all_generated().len() as u64,
        "checkov ran its checks on every file: {summary}"
    );
    assert_eq!(summary["skipped"], 0, "nothing skipped: {summary}");
}

// ---------------------------------------------------------------------------------------------
// Detection errors: each names the file and is a usage error (exit 2).

fn detect_error(dir: &Path, label: &str) -> (String, Option<String>) {
    let tree = SourceTree::new(dir, label);
    let err = detect::detect(&tree, None).expect_err("must fail");
    let (exit, hint) = slipway::error::exit_and_hint(&err);
    assert_eq!(exit, slipway::Exit::Usage, "{err:#}");
    (format!("{err:#}"), hint)
}

fn error_fixture(name: &str) -> (String, Option<String>) {
    detect_error(
        &fixtures_dir().join("errors").join(name),
        &format!("errors/{name}"),
    )
}

#[test]
fn empty_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (msg, hint) = detect_error(dir.path(), "contexts/web");
    assert!(msg.contains("contexts/web is empty"), "{msg}");
    assert!(hint.is_some());
}

#[test]
fn unknown_stack_is_explained() {
    let (msg, hint) = error_fixture("unknown");
    assert!(msg.contains("no known stack in errors/unknown"), "{msg}");
    assert!(hint.unwrap().contains("stack"));
}

#[test]
fn conflicting_lockfiles_name_both() {
    let (msg, hint) = error_fixture("conflicting-lockfiles");
    assert!(
        msg.contains("errors/conflicting-lockfiles/package-lock.json")
            && msg.contains("errors/conflicting-lockfiles/yarn.lock"),
        "{msg}"
    );
    assert!(hint.unwrap().contains("delete the others"));
}

#[test]
fn malformed_package_json_is_located() {
    let (msg, _) = error_fixture("malformed-package-json");
    assert!(
        msg.contains("errors/malformed-package-json/package.json:3:"),
        "{msg}"
    );
}

#[test]
fn malformed_pyproject_is_located() {
    let (msg, _) = error_fixture("malformed-pyproject");
    assert!(
        msg.contains("errors/malformed-pyproject/pyproject.toml:4: not valid TOML: invalid array"),
        "{msg}"
    );
}

#[test]
fn python_without_a_lock_is_refused() {
    let (msg, hint) = error_fixture("python-lockless");
    assert!(
        msg.contains("errors/python-lockless/pyproject.toml"),
        "{msg}"
    );
    assert!(hint.unwrap().contains("uv lock"));
}

#[test]
fn asgi_app_without_a_server_is_refused() {
    let (msg, hint) = error_fixture("asgi-without-server");
    assert!(msg.contains("uvicorn"), "{msg}");
    assert!(hint.unwrap().contains("uvicorn"));
}

#[test]
fn unknown_configured_stack_suggests() {
    let tree = SourceTree::new(fixtures_dir().join("go"), "go");
    let err = detect::detect(&tree, Some("golang")).unwrap_err();
    assert!(err.to_string().contains("unknown stack `golang`"), "{err}");
}

#[test]
fn configured_stack_overrides_detection() {
    // The Next.js fixture planned as plain Node: its `start` script is used.
    let tree = SourceTree::new(fixtures_dir().join("nextjs-npm"), "nextjs-npm");
    let d = detect::detect(&tree, Some("node")).unwrap();
    assert_eq!(d.stack, Stack::Node);
    assert_eq!(d.notes.reasons[0].file, "slipway.toml");
}

// ---------------------------------------------------------------------------------------------
// The commands, on the repo and on temp copies.

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
        let src = e.path();
        let dst = to.join(&name);
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A temp copy of the repo's app: slipway.toml, dockerfiles/, contexts/.
fn repo_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    std::fs::copy(repo.join("slipway.toml"), dir.path().join("slipway.toml")).unwrap();
    copy_tree(&repo.join("dockerfiles"), &dir.path().join("dockerfiles"));
    copy_tree(&repo.join("contexts"), &dir.path().join("contexts"));
    dir
}

fn slipway_in(dir: &Path, args: &[&str]) -> Output {
    run(common::slipway().current_dir(dir).args(args))
}

#[test]
fn check_passes_on_the_repo() {
    let out = slipway_in(&common::repo(), &["dockerfiles", "--check"]);
    assert!(
        out.status.success(),
        "the committed Dockerfiles are stale: run `slipway dockerfiles`\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("up to date  dockerfiles/backend.Dockerfile"));
}

#[test]
fn check_fails_with_a_diff_after_a_hand_edit() {
    let dir = repo_copy();
    let path = dir.path().join("dockerfiles/backend.Dockerfile");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("EXPOSE 8000", "EXPOSE 8000\nRUN echo hand-edited");
    std::fs::write(&path, &edited).unwrap();
    std::fs::remove_file(
        dir.path()
            .join("dockerfiles/frontend.Dockerfile.dockerignore"),
    )
    .unwrap();

    let out = slipway_in(dir.path(), &["dockerfiles", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("--- a/dockerfiles/backend.Dockerfile"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+++ b/dockerfiles/backend.Dockerfile"),
        "{stdout}"
    );
    assert!(stdout.contains("-RUN echo hand-edited"), "{stdout}");
    assert!(
        stdout.contains("missing  dockerfiles/frontend.Dockerfile.dockerignore"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("2 generated files are out of date: dockerfiles/backend.Dockerfile, dockerfiles/frontend.Dockerfile.dockerignore"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: run `slipway dockerfiles`"),
        "{stderr}"
    );
    // --check wrote nothing.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
    assert!(!dir
        .path()
        .join("dockerfiles/frontend.Dockerfile.dockerignore")
        .exists());

    // A plain run restores both; then --check passes.
    let out = slipway_in(dir.path(), &["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let repo = common::repo();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(repo.join("dockerfiles/backend.Dockerfile")).unwrap()
    );
    assert!(slipway_in(dir.path(), &["dockerfiles", "--check"])
        .status
        .success());
}

#[test]
fn a_users_own_dockerfile_is_never_touched() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &fixtures_dir().join("python-uv"),
        &dir.path().join("services/api"),
    );
    copy_tree(
        &fixtures_dir().join("go"),
        &dir.path().join("services/worker"),
    );
    let own = "FROM python:3.12\nCOPY . /app\nCMD [\"python\", \"-m\", \"shop\"]\n";
    std::fs::write(dir.path().join("services/api/Dockerfile"), own).unwrap();
    // At the default location too: no header means it is the user's.
    std::fs::create_dir_all(dir.path().join("dockerfiles")).unwrap();
    let own_default = "FROM golang:1.23\n";
    std::fs::write(
        dir.path().join("dockerfiles/worker.Dockerfile"),
        own_default,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        "[app]\nname = \"own\"\n\n[components.api]\ncontext = \"services/api\"\ndockerfile = \"services/api/Dockerfile\"\nport = 8000\n\n[components.worker]\ncontext = \"services/worker\"\nport = 8080\n",
    )
    .unwrap();

    for args in [&["dockerfiles"][..], &["dockerfiles", "--check"][..]] {
        let out = slipway_in(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(
                "api: services/api/Dockerfile is your own (no slipway header): left alone"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains("worker: dockerfiles/worker.Dockerfile is your own"),
            "{stdout}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("services/api/Dockerfile")).unwrap(),
        own
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dockerfiles/worker.Dockerfile")).unwrap(),
        own_default
    );
    assert!(!dir
        .path()
        .join("services/api/Dockerfile.dockerignore")
        .exists());
    assert!(!dir
        .path()
        .join("dockerfiles/worker.Dockerfile.dockerignore")
        .exists());
}

#[test]
fn generation_is_deterministic_and_idempotent() {
    let dir = repo_copy();
    std::fs::remove_dir_all(dir.path().join("dockerfiles")).unwrap();
    let out = slipway_in(dir.path(), &["dockerfiles", "backend"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("wrote      dockerfiles/backend.Dockerfile"));
    assert!(!dir.path().join("dockerfiles/frontend.Dockerfile").exists());
    let out = slipway_in(dir.path(), &["dockerfiles", "backend"]);
    assert!(text(&out.stdout).contains("unchanged  dockerfiles/backend.Dockerfile"));
    let repo = common::repo();
    for f in ["backend.Dockerfile", "backend.Dockerfile.dockerignore"] {
        assert_eq!(
            std::fs::read(dir.path().join("dockerfiles").join(f)).unwrap(),
            std::fs::read(repo.join("dockerfiles").join(f)).unwrap(),
            "{f}"
        );
    }
    let out = slipway_in(dir.path(), &["dockerfiles", "backnd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `backend`?"));
}

#[test]
fn init_finds_the_reference_app_and_explains() {
    let dir = repo_copy();
    std::fs::remove_file(dir.path().join("slipway.toml")).unwrap();
    let out = slipway_in(dir.path(), &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("backend (contexts/backend): stack python"),
        "{stdout}"
    );
    assert!(
        stdout.contains("app/main.py: ASGI app `app.main:app`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("frontend (contexts/frontend): stack nextjs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("health /api/healthz (app/api/healthz/route.ts:4: export function GET"),
        "{stdout}"
    );
    assert!(
        stdout.contains("readiness /readyz (app/main.py:112: @app.get(\"/readyz\""),
        "{stdout}"
    );
    let written = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
    let config = slipway::config::parse(&written, &dir.path().join("slipway.toml")).unwrap();
    assert_eq!(config.components["backend"].port, 8000);
    assert_eq!(config.components["backend"].health, "/healthz");
    assert_eq!(config.components["frontend"].port, 3000);

    // Never overwritten without --force.
    let out = slipway_in(dir.path(), &["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--force"));
    let out = slipway_in(dir.path(), &["init", "--force", "contexts/backend"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
    assert!(written.contains("[components.backend]") && !written.contains("frontend"));
}

/// What stops a component from being planned leaves a usable file all the same: the reason
/// and its fix as `# TODO` lines, and a non-zero exit that says so.
#[test]
fn init_writes_todo_lines_for_what_it_cannot_plan() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures_dir().join("errors"), dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (args, needle) in [
        (
            vec!["init", "--force", "conflicting-lockfiles"],
            "conflicting-lockfiles/yarn.lock",
        ),
        (
            vec!["init", "--force", "malformed-package-json"],
            "malformed-package-json/package.json:3:",
        ),
        (
            vec!["init", "--force", "malformed-pyproject"],
            "malformed-pyproject/pyproject.toml:4:",
        ),
        (
            vec!["init", "--force", "python-lockless"],
            "has no lockfile next to it",
        ),
        (
            vec!["init", "--force", "asgi-without-server"],
            "asgi-without-server",
        ),
        (
            vec!["init", "--force", "unknown"],
            "no known stack in unknown",
        ),
        (vec!["init", "--force", "empty"], "empty is empty"),
    ] {
        let out = slipway_in(dir.path(), &args);
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains(needle), "{args:?}: {stdout}");
        assert!(
            stdout.contains("next: fill in the TODO lines, then slipway up"),
            "{args:?}: {stdout}"
        );
        assert!(stderr.contains("cannot plan"), "{args:?}: {stderr}");
        assert!(stderr.contains("hint:"), "{args:?}: {stderr}");
        let written = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
        assert!(written.contains("# TODO: slipway cannot plan"), "{written}");
        assert!(written.contains(needle), "{args:?}: {written}");
        slipway::config::parse(&written, &dir.path().join("slipway.toml")).unwrap();
    }
}

#[test]
fn init_then_dockerfiles_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        copy_tree(
            &fixtures_dir().join(name),
            &dir.path().join("apps").join(name),
        );
    }
    let out = slipway_in(dir.path(), &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = slipway_in(dir.path(), &["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in FIXTURES {
        let df = dir.path().join(format!("dockerfiles/{name}.Dockerfile"));
        assert!(
            dockerfile::is_generated(&std::fs::read_to_string(&df).unwrap()),
            "{name}"
        );
    }
    assert!(slipway_in(dir.path(), &["dockerfiles", "--check"])
        .status
        .success());
}

#[test]
fn init_falls_back_to_the_current_directory_when_every_folder_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures_dir().join("python-requirements"), dir.path());
    // An unrelated packages/ folder (a library, no stack) and an empty apps/.
    std::fs::create_dir_all(dir.path().join("packages/shared-docs")).unwrap();
    std::fs::write(dir.path().join("packages/shared-docs/README.md"), "docs").unwrap();
    std::fs::create_dir_all(dir.path().join("apps/empty")).unwrap();
    let out = slipway_in(dir.path(), &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("skipped packages/shared-docs: no known stack"),
        "{stderr}"
    );
    assert!(
        stderr.contains("using the current directory as the one component"),
        "{stderr}"
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("(.): stack python"), "{stdout}");
    let written = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
    assert!(written.contains("context = \".\""), "{written}");
}

/// Apps shaped like real ones (tests/fixtures/apps): init reads the port and the health and
/// readiness routes from their code and names the file and line of each.
#[test]
fn init_reads_port_and_health_from_the_code() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(
        &common::repo().join("tests/fixtures/apps"),
        &dir.path().join("apps"),
    );
    let out = slipway_in(dir.path(), &["init"]);
    let stdout = text(&out.stdout);
    insta::assert_snapshot!("init_real_apps", stdout);
    let written = std::fs::read_to_string(dir.path().join("slipway.toml")).unwrap();
    let config = slipway::config::parse(&written, &dir.path().join("slipway.toml")).unwrap();
    let c = &config.components;
    for (name, port, health) in [
        ("node-plain", 8080, "/healthz"),
        ("django", 8000, "/healthz"),
        ("flask", 5000, "/health"),
        ("go-stdlib", 8081, "/healthz"),
        ("rust-2024", 9090, "/healthz"),
        ("nextjs-pages", 4000, "/api/health"),
        ("fastapi-src", 8000, "/healthz"),
    ] {
        assert_eq!(c[name].port, port, "{name}: {written}");
        assert_eq!(c[name].health, health, "{name}: {written}");
    }
    assert_eq!(c["fastapi-src"].readiness, "/readyz");
    // Environment reads: secrets by their names, references to another component's URL.
    assert_eq!(c["flask"].secrets, ["API_TOKEN"]);
    assert_eq!(
        c["fastapi-src"].secrets,
        ["DATABASE_URL", "STRIPE_SECRET_KEY"]
    );
    assert!(
        written.contains("config = { FLASK_URL = \"${flask.url}\" }"),
        "{written}"
    );
    assert!(
        written.contains("# TODO: BACKEND_URL is read at main.go:13"),
        "{written}"
    );
    assert!(stdout.ends_with("next: slipway up\n"), "{stdout}");
    assert!(out.status.success());

    // The base image follows the toolchain each project declares.
    let out = slipway_in(dir.path(), &["dockerfiles"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (name, arg) in [
        ("rust-2024", "ARG RUST_IMAGE=rust:1.100.0-slim-bookworm"),
        ("go-stdlib", "ARG GO_IMAGE=golang:1.24.4-bookworm"),
        ("nextjs-pages", "ARG NODE_IMAGE=node:22.12.0-bookworm-slim"),
        (
            "fastapi-src",
            "ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm",
        ),
        ("node-plain", "ARG NODE_IMAGE=node:22.12.0-bookworm-slim"),
        ("flask", "ARG PYTHON_IMAGE=python:3.13.1-slim-bookworm"),
    ] {
        let df = std::fs::read_to_string(dir.path().join(format!("dockerfiles/{name}.Dockerfile")))
            .unwrap();
        assert!(df.contains(arg), "{name}: {df}");
    }
}
