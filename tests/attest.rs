//! SBOM and provenance of the bundled reference app, built for real (issue 16.4).
//!
//! `slipway build --metadata-file` writes, beside the metadata file, a CycloneDX 1.5 SBOM and
//! an in-toto SLSA provenance statement per image, and the metadata lists them. The SBOM is
//! judged by CycloneDX's own Python library (its JSON schema validation), lists every package
//! the lockfiles pin with its version and the image's Debian packages, and comes out
//! byte-identical from a cached run and from a `--no-cache` rebuild; neither file carries the
//! value of a secret the build was given.

mod common;

use common::RunRetrying as _;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn run(cmd: &mut Command, what: &str) -> String {
    common::ok(cmd.output_retrying().unwrap(), what)
}

/// The judges' Python (scripts/env/tools installs cyclonedx-python-lib into it).
fn judge_python() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = std::env::var_os("SLIPWAY_TOOLS")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    roots.push(common::repo().join(".tools"));
    let found = roots
        .iter()
        .map(|r| r.join("venv/bin/python"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !common::in_ci(),
            "CI=true and the judges' venv (.tools/venv) is missing: run scripts/env/tools"
        );
        eprintln!("SKIPPED: .tools/venv is missing (run scripts/env/tools)");
    }
    found
}

/// CycloneDX's own validator: `None` when the file is valid against the 1.5 JSON schema,
/// else its complaint.
fn cyclonedx_errors(python: &Path, sbom: &Path) -> Option<String> {
    const SCRIPT: &str = "import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
print(error if error else 'valid')
";
    let out = run(
        Command::new(python).args(["-c", SCRIPT]).arg(sbom),
        "cyclonedx validation",
    );
    (out != "valid").then_some(out)
}

/// `(name with its group, version)` of the SBOM's components of purl type `kind`.
fn components(sbom: &Value, kind: &str) -> BTreeSet<(String, String)> {
    sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["purl"]
                .as_str()
                .unwrap()
                .starts_with(&format!("pkg:{kind}/"))
        })
        .map(|c| {
            let name = c["name"].as_str().unwrap();
            let full = match c["group"].as_str() {
                Some(g) => format!("{g}/{name}"),
                None => name.to_string(),
            };
            (full, c["version"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

/// Every package package-lock.json pins: `node_modules/NAME` entries, read independently.
fn npm_locked(lock: &Path) -> BTreeSet<(String, String)> {
    let lock: Value = serde_json::from_slice(&std::fs::read(lock).unwrap()).unwrap();
    lock["packages"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(path, entry)| {
            let name = path.rsplit_once("node_modules/")?.1;
            Some((name.to_string(), entry["version"].as_str()?.to_string()))
        })
        .collect()
}

/// Every `name==version` of a requirements file, names as PyPI normalises them.
fn pip_locked(requirements: &Path) -> BTreeSet<(String, String)> {
    std::fs::read_to_string(requirements)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("=="))
        .map(|(n, v)| {
            (
                n.trim().to_lowercase().replace('_', "-"),
                v.trim().to_string(),
            )
        })
        .collect()
}

fn read_all(files: &[PathBuf]) -> Vec<Vec<u8>> {
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// `docker` on the daemon at `host` (the host's own when `None`).
fn docker(host: Option<&str>) -> Command {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.env("DOCKER_HOST", h);
    }
    cmd
}

/// Removes the test's images (`PREFIX/*` on the daemon at `host`), whatever happens.
struct Images {
    prefix: String,
    host: Option<String>,
}

impl Drop for Images {
    fn drop(&mut self) {
        let out = docker(self.host.as_deref())
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .args(["--filter", &format!("reference={}/*", self.prefix)])
            .output();
        if let Ok(out) = out {
            for image in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = docker(self.host.as_deref()).args(["rmi", image]).output();
            }
        }
    }
}

/// A copy of the reference app in a new directory, its images named `PREFIX/...`, with
/// `extra` put at the head of the backend's table.
fn app_copy(prefix: &str, backend_extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = common::repo();
    for part in ["contexts", "dockerfiles"] {
        run(
            Command::new("cp")
                .arg("-r")
                .arg(repo.join(part))
                .arg(dir.path()),
            "copying the reference app",
        );
    }
    let toml = std::fs::read_to_string(repo.join("slipway.toml"))
        .unwrap()
        .replace("prefix = \"slipway\"", &format!("prefix = \"{prefix}\""))
        .replace(
            "[components.backend]\n",
            &format!("[components.backend]\n{backend_extra}"),
        );
    std::fs::write(dir.path().join("slipway.toml"), toml).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_app_sbom_and_provenance() {
    if common::daemon().await.is_none() {
        return;
    }
    let Some(python) = judge_python() else {
        return;
    };
    let prefix = common::unique("slipway-attest");
    let _images = Images {
        prefix: prefix.clone(),
        host: None,
    };
    // The backend takes a build secret (mounted by its regenerated Dockerfile); the frontend's
    // Dockerfile mounts Next.js's optional server-actions key when it is set.
    let dir = app_copy(&prefix, "build_secrets = [\"PIP_TOKEN\"]\n");
    let root = dir.path();
    run(
        common::slipway().current_dir(root).arg("dockerfiles"),
        "slipway dockerfiles",
    );
    let pip_token = common::unique("pip-token-value");
    let actions_key = common::unique("actions-key-value");
    let out_dir = root.join("ci-out");
    let build = |extra: &[&str]| {
        let mut cmd = common::slipway();
        cmd.current_dir(root)
            .env("PIP_TOKEN", &pip_token)
            .env("NEXT_SERVER_ACTIONS_ENCRYPTION_KEY", &actions_key)
            .args(["--progress", "plain", "build", "--metadata-file"])
            .arg(out_dir.join("build.json"))
            .args(extra);
        run(&mut cmd, &format!("slipway build {extra:?}"));
        let record: Value =
            serde_json::from_slice(&std::fs::read(out_dir.join("build.json")).unwrap()).unwrap();
        record
    };

    let record = build(&[]);
    let mut files = Vec::new();
    for component in ["backend", "frontend"] {
        let r = &record["components"][component];
        let listed: Vec<(String, String)> = r["attestations"]
            .as_array()
            .unwrap_or_else(|| panic!("{component}: no attestations in the record: {r}"))
            .iter()
            .map(|a| {
                let path = a["path"].as_str().unwrap().to_string();
                (path, a["media_type"].as_str().unwrap().to_string())
            })
            .collect();
        let sbom = out_dir
            .join("attestations")
            .join(component)
            .join("sbom.cdx.json");
        let provenance = out_dir
            .join("attestations")
            .join(component)
            .join("provenance.intoto.json");
        assert_eq!(
            listed,
            [
                (
                    sbom.display().to_string(),
                    "application/vnd.cyclonedx+json".to_string()
                ),
                (
                    provenance.display().to_string(),
                    "application/vnd.in-toto+json".to_string()
                ),
            ]
        );
        if let Some(complaint) = cyclonedx_errors(&python, &sbom) {
            panic!("{}: not valid CycloneDX 1.5: {complaint}", sbom.display());
        }
        let bom: Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
        assert_eq!(bom["specVersion"], "1.5");

        // Every locked dependency, with its version.
        let (listed, locked) = match component {
            "backend" => (
                components(&bom, "pypi"),
                pip_locked(&root.join("contexts/backend/requirements.txt")),
            ),
            _ => (
                components(&bom, "npm"),
                npm_locked(&root.join("contexts/frontend/package-lock.json")),
            ),
        };
        assert!(locked.len() > 10, "{component}: {locked:?}");
        assert_eq!(
            listed, locked,
            "{component}: the SBOM's packages are not the lockfile's"
        );

        // The OS packages of the final image, as its own dpkg says.
        let debs = components(&bom, "deb");
        assert!(
            debs.len() > 50,
            "{component}: {} Debian packages",
            debs.len()
        );
        let image = r["image"].as_str().unwrap();
        let libc = run(
            Command::new("docker").args([
                "run",
                "--rm",
                "--entrypoint",
                "dpkg-query",
                image,
                "-W",
                "-f",
                "${Version}",
                "libc6",
            ]),
            "dpkg-query in the image",
        );
        assert!(
            debs.contains(&("libc6".to_string(), libc.clone())),
            "{component}: libc6 {libc} is not in the SBOM"
        );

        // The provenance: the image's config digest as subject, the run's inputs.
        let statement: Value =
            serde_json::from_slice(&std::fs::read(&provenance).unwrap()).unwrap();
        assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
        assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
        let config_digest = run(
            Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image]),
            "docker image inspect",
        );
        assert_eq!(
            statement["subject"][0]["digest"]["sha256"],
            config_digest.trim_start_matches("sha256:")
        );
        let build = &statement["predicate"]["buildDefinition"];
        assert_eq!(
            build["internalParameters"]["inputDigest"],
            r["input_digest"]
        );
        assert!(build["internalParameters"]["SOURCE_DATE_EPOCH"].is_i64());
        let deps = build["resolvedDependencies"].as_array().unwrap();
        let lock = std::fs::read_to_string(root.join("slipway.lock")).unwrap();
        let base = deps
            .iter()
            .find(|d| d["name"].as_str().unwrap().starts_with("slipway-test/"))
            .unwrap_or_else(|| panic!("{component}: no base image in {deps:?}"));
        let base_id = base["annotations"]["imageId"].as_str().unwrap();
        assert!(
            lock.contains(base_id),
            "{base_id} is not pinned in:\n{lock}"
        );
        assert!(deps.iter().any(|d| d["name"] == "Dockerfile"));
        files.extend([sbom, provenance]);
    }
    let backend_secrets = &serde_json::from_slice::<Value>(&std::fs::read(&files[1]).unwrap())
        .unwrap()["predicate"]["buildDefinition"]["externalParameters"]["buildSecrets"];
    assert_eq!(backend_secrets, &serde_json::json!(["PIP_TOKEN"]));

    // No secret value in any of them (nor anywhere in the record).
    let first = read_all(&files);
    let mut everything = first.concat();
    everything.extend(std::fs::read(out_dir.join("build.json")).unwrap());
    for secret in [&pip_token, &actions_key] {
        assert!(
            !String::from_utf8_lossy(&everything).contains(secret.as_str()),
            "a secret value leaked into the attestations"
        );
    }

    // Same inputs, same bytes: a cached run (frontend) and a rebuild from scratch (backend).
    let again = build(&["--no-cache", "backend"]);
    assert_eq!(again["components"]["backend"]["outcome"], "built");
    let second = read_all(&files);
    for (i, f) in files.iter().enumerate() {
        assert!(
            first[i] == second[i],
            "{} changed between two builds of the same inputs",
            f.display()
        );
    }
    let again = build(&[]);
    assert_eq!(again["components"]["frontend"]["outcome"], "cached");
    assert_eq!(read_all(&files), first);
}

/// On the containerd image store the daemon names images by manifest digest: the subject is
/// still the config digest (the one the image's own manifest names), for the image the run
/// built and for the same image found cached, with the same bytes both times.
#[tokio::test(flavor = "multi_thread")]
async fn containerd_store_subject_is_the_config_digest() {
    let Some((_, host)) = common::daemon_matrix()
        .into_iter()
        .find(|(label, _)| *label == common::DAEMON_CONTAINERD)
    else {
        return;
    };
    let prefix = common::unique("slipway-attest-ctrd");
    let _images = Images {
        prefix: prefix.clone(),
        host: Some(host.clone()),
    };
    let dir = app_copy(&prefix, "");
    let root = dir.path();
    let build = || {
        let mut cmd = common::slipway();
        cmd.current_dir(root).env("DOCKER_HOST", &host).args([
            "--progress",
            "plain",
            "build",
            "backend",
        ]);
        run(&mut cmd, "slipway build backend");
        let record: Value =
            serde_json::from_slice(&std::fs::read(root.join(".slipway/last-build.json")).unwrap())
                .unwrap();
        record["components"]["backend"].clone()
    };
    let built = build();
    assert_eq!(built["outcome"], "built");
    let provenance = root.join(".slipway/attestations/backend/provenance.intoto.json");
    let first = std::fs::read(&provenance).unwrap();
    let statement: Value = serde_json::from_slice(&first).unwrap();

    // The config digest, as the image's manifest in `docker save` names it.
    let image = built["image"].as_str().unwrap();
    let saved = root.join("saved.tar");
    run(
        docker(Some(&host))
            .args(["save", "-o"])
            .arg(&saved)
            .arg(image),
        "docker save",
    );
    let manifest = run(
        Command::new("tar")
            .arg("-xOf")
            .arg(&saved)
            .arg("manifest.json"),
        "reading manifest.json",
    );
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    let config_hex = config.rsplit('/').next().unwrap().trim_end_matches(".json");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], config_hex);
    assert_ne!(
        built["image_id"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
        config_hex,
        "the daemon names the image by its manifest digest here"
    );

    let cached = build();
    assert_eq!(cached["outcome"], "cached");
    assert!(
        std::fs::read(&provenance).unwrap() == first,
        "the cached image's provenance differs from the built one's"
    );
}

/// A container made to read an image's files that a killed run left (its pid no longer runs)
/// is removed by the next run; one of a live run is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn readers_left_by_dead_runs_are_reaped() {
    if common::daemon().await.is_none() {
        return;
    }
    let daemon = slipway::docker::connect(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    if !daemon.endpoint.host.starts_with("unix://") {
        assert!(
            !common::in_ci(),
            "CI=true and the daemon is not on a unix socket"
        );
        return;
    }
    let busybox = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".into());
    let label = slipway::docker::files::READER_LABEL;
    let create = |name: &str, pid: u32| {
        run(
            docker(None)
                .args(["create", "--name", name, "--label"])
                .arg(format!("{label}={pid}"))
                .args([busybox.as_str(), "true"]),
            "docker create",
        )
    };
    let (dead, live) = (
        common::unique("slipway-reader-dead"),
        common::unique("slipway-reader-live"),
    );
    create(&dead, u32::MAX);
    create(&live, std::process::id());
    slipway::leftovers::reap_readers(&daemon).await;
    let exists = |name: &str| {
        docker(None)
            .args(["container", "inspect", name])
            .output()
            .unwrap()
            .status
            .success()
    };
    let (dead_left, live_left) = (exists(&dead), exists(&live));
    let _ = docker(None).args(["rm", "-f", &dead, &live]).output();
    assert!(!dead_left, "the dead run's reader is still there");
    assert!(live_left, "a live run's reader was removed");
}

/// The lockfile fixtures, read as the SBOM reads them: the same Next.js app locked by npm,
/// pnpm and yarn (without its development dependencies) pins the same packages (npm and pnpm
/// with the same scopes for what runs); every Python lock's packages carry versions; and
/// each fixture's list is kept in a snapshot.
#[test]
fn lockfile_fixtures() {
    use slipway::attest::{lockfiles, package};
    use slipway::detect::SourceTree;
    let stacks = common::repo().join("tests/fixtures/stacks");
    let read = |name: &str| -> Vec<(String, String, String)> {
        let tree = SourceTree::new(stacks.join(name), name);
        package::dedup(lockfiles::read(&tree).unwrap())
            .into_iter()
            .map(|(purl, p)| {
                let version = p.version.clone().unwrap_or_default();
                (
                    p.full_name(),
                    version,
                    format!("{purl} {}", p.scope.as_str()),
                )
            })
            .collect()
    };
    let names = |list: &[(String, String, String)]| -> BTreeSet<(String, String)> {
        list.iter()
            .map(|(n, v, _)| (n.clone(), v.clone()))
            .collect()
    };
    let npm = read("nextjs-npm");
    let pnpm = read("nextjs-pnpm");
    assert_eq!(names(&pnpm), names(&npm), "pnpm vs npm");
    // pnpm says what is optional and what runs as npm does (what npm has for development only,
    // pnpm may count as run: a development package that meets a runtime one's peer dependency).
    for (p, n) in pnpm.iter().zip(&npm) {
        assert!(
            p == n || n.2.ends_with(" excluded"),
            "pnpm {p:?} vs npm {n:?}"
        );
    }
    assert!(pnpm.iter().any(|p| p.2.ends_with(" excluded")));
    // The yarn fixture has no development dependencies.
    let runtime: Vec<_> = npm
        .iter()
        .filter(|(_, _, line)| !line.ends_with(" excluded"))
        .cloned()
        .collect();
    assert_eq!(names(&read("nextjs-yarn")), names(&runtime), "yarn vs npm");
    let mut shown = String::new();
    for fixture in [
        "go",
        "nextjs-npm",
        "nextjs-pnpm",
        "nextjs-yarn",
        "node-typescript",
        "python-poetry",
        "python-requirements",
        "python-uv",
        "rust",
    ] {
        let list = read(fixture);
        // The Rust fixture depends on nothing: its Cargo.lock holds only itself.
        assert_eq!(list.is_empty(), fixture == "rust", "{fixture}: {list:?}");
        assert!(
            list.iter().all(|(_, v, _)| !v.is_empty()),
            "{fixture}: {list:?}"
        );
        shown.push_str(&format!("{fixture}:\n"));
        for (_, _, line) in &list {
            shown.push_str(&format!("  {line}\n"));
        }
    }
    insta::assert_snapshot!(shown);
}
