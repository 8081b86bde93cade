//! Manifests and chart: snapshots of the reference app, the independent judges
//! (kubernetes-validate, helm, checkov, yamllint), `helm template` against `slipway manifests`
//! object by object, and secret handling through the real binary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slipway::config::{self, Config};
use slipway::k8s::{self, Options, OutputFile, PullPolicy, SecretValues};

/// The reference app's configuration: the repository's root slipway.toml.
const REFERENCE: &str = include_str!("../slipway.toml");

/// A configuration that exercises what the reference app does not: a registry prefix,
/// digests, LoadBalancer, explicit resources and user, writable paths, `${x.host}` and
/// `${x.port}`, values that YAML or Go templates could misread, a secret named `ON`.
const TRICKY: &str = include_str!("fixtures/k8s/tricky.toml");

/// The reference config (its frontend context, contexts/frontend, is detected as Next.js).
fn reference() -> Config {
    config::load(&common::repo().join("slipway.toml")).unwrap()
}

fn tricky() -> Config {
    config::parse(
        TRICKY,
        &common::repo().join("tests/fixtures/k8s/tricky.toml"),
    )
    .unwrap()
}

fn reference_images() -> BTreeMap<String, String> {
    [
        ("backend", "slipway/backend:0123456789ab"),
        ("frontend", "slipway/frontend:fedcba987654"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn tricky_images() -> BTreeMap<String, String> {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    [
        ("api", format!("localhost:5000/team/api@{digest}")),
        (
            "web",
            format!("localhost:5000/team/web:abc123def456@{digest}"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Fake secret values (the snapshot shows them base64-encoded; they are not real secrets).
fn reference_secrets() -> BTreeMap<String, String> {
    [
        (
            "DATABASE_URL",
            "postgresql://taskboard:example@db:5432/taskboard",
        ),
        ("JWT_SECRET", "example-jwt-secret"),
        ("OPENAI_API_KEY", "sk-example"),
        ("BETTER_AUTH_SECRET", "example-auth-secret"),
        ("BACKEND_TOKEN", "example-backend-token"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn tricky_secrets() -> BTreeMap<String, String> {
    [
        ("TOKEN", "p@ss:w/ord\nline two <&> \"q\" {{ x }} é"),
        ("ON", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn render_all(
    config: &Config,
    images: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    opts: &Options,
) -> (Vec<OutputFile>, Vec<OutputFile>) {
    let values = SecretValues::new(secrets.clone());
    let manifests = k8s::render_manifests(config, images, &values, opts).unwrap();
    let chart = k8s::render_chart(config, images, opts).unwrap();
    (manifests, chart)
}

fn listing(files: &[OutputFile]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "=== {} (mode {:o})\n{}",
                f.path.display(),
                f.mode,
                f.content
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn reference_opts() -> Options {
    Options {
        namespace_manifest: true,
        ..Options::for_config(&reference())
    }
}

#[test]
fn snapshot_of_the_reference_manifests() {
    let (manifests, _) = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    insta::assert_snapshot!("reference_manifests", listing(&manifests));
}

#[test]
fn snapshot_of_the_reference_chart() {
    let (_, chart) = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    insta::assert_snapshot!("reference_chart", listing(&chart));
}

#[test]
fn same_inputs_same_bytes() {
    let a = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    let b = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    assert_eq!(a, b);
    let opts = Options {
        pull_policy: PullPolicy::Never,
        ..Options::for_config(&tricky())
    };
    let a = render_all(&tricky(), &tricky_images(), &tricky_secrets(), &opts);
    let b = render_all(&tricky(), &tricky_images(), &tricky_secrets(), &opts);
    assert_eq!(a, b);
}

#[test]
fn every_component_gets_the_hardened_pod_it_asks_for() {
    let (manifests, _) = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    let objects = parse_files(&manifests);
    let fe = &objects[&key("Deployment", "taskboard-frontend")];
    let pod = &fe["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "slipway/frontend:fedcba987654");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    let mounts = mount_paths(c);
    assert_eq!(mounts, ["/tmp", "/app/.next/cache"]);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert!(
        fe["spec"].get("replicas").is_none(),
        "the autoscaler owns the replica count"
    );
    let cm = &objects[&key("ConfigMap", "taskboard-frontend")];
    assert_eq!(
        cm["data"]["BACKEND_URL"],
        "http://taskboard-backend.taskboard.svc:8000"
    );
    let svc = &objects[&key("Service", "taskboard-frontend")];
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    let be = &objects[&key("Deployment", "taskboard-backend")];
    let probe = &be["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(probe["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(probe["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(probe["startupProbe"]["httpGet"]["path"], "/healthz");
    assert!(objects.contains_key(&key("HorizontalPodAutoscaler", "taskboard-frontend")));
    assert!(!objects.contains_key(&key("HorizontalPodAutoscaler", "taskboard-backend")));
    assert!(objects.contains_key(&key("Namespace", "taskboard")));
    // The Secret manifest is the only 0600 file.
    for f in &manifests {
        let secret = f.path.to_string_lossy().ends_with(".secret.yaml");
        assert_eq!(
            f.mode,
            if secret { 0o600 } else { 0o644 },
            "{}",
            f.path.display()
        );
    }
}

#[test]
fn a_config_change_changes_the_pod_template_checksum() {
    let before = render_all(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    )
    .0;
    let mut secrets = reference_secrets();
    secrets.insert("JWT_SECRET".into(), "rotated".into());
    let after = render_all(
        &reference(),
        &reference_images(),
        &secrets,
        &reference_opts(),
    )
    .0;
    let annotations = |files: &[OutputFile]| {
        parse_files(files)[&key("Deployment", "taskboard-backend")]["spec"]["template"]["metadata"]
            ["annotations"]
            .clone()
    };
    assert_ne!(annotations(&before), annotations(&after));
}

// ---------------------------------------------------------------------------------------------
// Judges.

fn write_out(dir: &Path, files: &[OutputFile]) {
    k8s::write_files(dir, files).unwrap();
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn must_succeed(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `helm template APP DIR --namespace NS -f values.json`, the secret values given as a
/// values file the way a user gives them at install time.
fn helm_template(
    helm: &Path,
    config: &Config,
    chart_dir: &Path,
    secrets: &BTreeMap<String, String>,
    extra: &[&str],
) -> String {
    let mut components = serde_json::Map::new();
    for (name, c) in &config.components {
        let values: serde_json::Map<String, serde_json::Value> = c
            .secrets
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    secrets.get(s).cloned().unwrap_or_default().into(),
                )
            })
            .collect();
        components.insert(name.clone(), serde_json::json!({ "secrets": values }));
    }
    let values = chart_dir.with_extension("values.json");
    std::fs::write(
        &values,
        serde_json::json!({ "components": components }).to_string(),
    )
    .unwrap();
    let out = run(Command::new(helm)
        .arg("template")
        .arg(&config.app.name)
        .arg(chart_dir)
        .args(["--namespace", &config.app.namespace])
        .args(["-f"])
        .arg(&values)
        .args(extra));
    must_succeed("helm template", &out);
    String::from_utf8(out.stdout).unwrap()
}

fn key(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

/// Objects of a YAML stream by (kind, name).
fn parse_stream(text: &str) -> BTreeMap<(String, String), serde_json::Value> {
    let mut out = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        let k = key(
            v["kind"].as_str().unwrap(),
            v["metadata"]["name"].as_str().unwrap(),
        );
        assert!(out.insert(k.clone(), v).is_none(), "{k:?} twice");
    }
    out
}

fn parse_files(files: &[OutputFile]) -> BTreeMap<(String, String), serde_json::Value> {
    files
        .iter()
        .filter(|f| f.path.extension().is_some_and(|e| e == "yaml"))
        .flat_map(|f| parse_stream(&f.content))
        .collect()
}

/// The only differences allowed between the chart's objects and the manifests: the chart's
/// `app.kubernetes.io/managed-by` is `Helm` (slipway's is `slipway`) and it adds the
/// `helm.sh/chart` label, on the object and on the pod template.
fn normalise_helm(mut v: serde_json::Value) -> serde_json::Value {
    for pointer in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(labels) = v.pointer_mut(pointer) {
            fix_labels(labels);
        }
    }
    v
}

fn fix_labels(labels: &mut serde_json::Value) {
    let map = labels.as_object_mut().unwrap();
    assert!(
        map.remove("helm.sh/chart").is_some(),
        "no helm.sh/chart label"
    );
    assert_eq!(map["app.kubernetes.io/managed-by"], "Helm");
    map.insert("app.kubernetes.io/managed-by".into(), "slipway".into());
}

fn compare(
    config: &Config,
    images: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
    opts: &Options,
) {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let (manifests, chart) = render_all(config, images, secrets, opts);
    let dir = tempfile::tempdir().unwrap();
    let chart_dir = dir.path().join("chart");
    write_out(&chart_dir, &chart);
    // The `helm test` pods are hooks, not part of the release: compared without them.
    let rendered = helm_template(&helm, config, &chart_dir, secrets, &["--skip-tests"]);
    let from_helm: BTreeMap<_, _> = parse_stream(&rendered)
        .into_iter()
        .map(|(k, v)| (k, normalise_helm(v)))
        .collect();
    let mut from_slipway = parse_files(&manifests);
    from_slipway.retain(|(kind, _), _| kind != "Namespace");
    assert_eq!(
        from_helm.keys().collect::<Vec<_>>(),
        from_slipway.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (k, v) in &from_slipway {
        assert_eq!(
            &from_helm[k], v,
            "{k:?} differs:\nhelm:     {}\nslipway:  {}",
            from_helm[k], v
        );
    }
}

#[test]
fn helm_template_yields_the_same_objects_as_manifests() {
    compare(
        &reference(),
        &reference_images(),
        &reference_secrets(),
        &reference_opts(),
    );
    // Secrets not given: empty values on both sides.
    let opts = Options {
        allow_missing_secrets: true,
        ..reference_opts()
    };
    compare(&reference(), &reference_images(), &BTreeMap::new(), &opts);
    let opts = Options {
        pull_policy: PullPolicy::Never,
        ..Options::for_config(&tricky())
    };
    compare(&tricky(), &tricky_images(), &tricky_secrets(), &opts);
}

/// Manifests, chart and `helm template` output of both configs, written to one directory.
struct Rendered {
    _dir: tempfile::TempDir,
    manifests: Vec<PathBuf>,
    chart_dirs: Vec<PathBuf>,
    helm_outputs: Vec<PathBuf>,
}

fn render_to_disk(helm: Option<&Path>) -> Rendered {
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rendered {
        manifests: Vec::new(),
        chart_dirs: Vec::new(),
        helm_outputs: Vec::new(),
        _dir: tempfile::tempdir().unwrap(),
    };
    let cases = [
        (
            "reference",
            reference(),
            reference_images(),
            reference_secrets(),
            reference_opts(),
        ),
        (
            "tricky",
            tricky(),
            tricky_images(),
            tricky_secrets(),
            Options {
                pull_policy: PullPolicy::Never,
                namespace_manifest: true,
                ..Options::for_config(&tricky())
            },
        ),
    ];
    for (name, config, images, secrets, opts) in cases {
        let (manifests, chart) = render_all(&config, &images, &secrets, &opts);
        let mdir = dir.path().join(name).join("k8s");
        write_out(&mdir, &manifests);
        r.manifests.extend(
            manifests
                .iter()
                .filter(|f| f.path.extension().is_some_and(|e| e == "yaml"))
                .map(|f| mdir.join(&f.path)),
        );
        let cdir = dir.path().join(name).join("chart");
        write_out(&cdir, &chart);
        if let Some(helm) = helm {
            let out = dir.path().join(name).join("helm-template.yaml");
            std::fs::write(&out, helm_template(helm, &config, &cdir, &secrets, &[])).unwrap();
            r.helm_outputs.push(out);
        }
        r.chart_dirs.push(cdir);
    }
    r._dir = dir;
    r
}

#[test]
fn kubernetes_validate_strict_on_1_29_and_1_33() {
    let Some(kv) = common::tool("kubernetes-validate") else {
        return;
    };
    let helm = common::tool("helm");
    let r = render_to_disk(helm.as_deref());
    for version in ["1.29.0", "1.33.0"] {
        let out = run(Command::new(&kv)
            .args(["--strict", "-k", version])
            .args(&r.manifests)
            .args(&r.helm_outputs));
        must_succeed(&format!("kubernetes-validate -k {version}"), &out);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // Every object was checked: one "passed" line per object.
        let objects: usize = r
            .manifests
            .iter()
            .chain(&r.helm_outputs)
            .map(|p| parse_stream(&std::fs::read_to_string(p).unwrap()).len())
            .sum();
        assert_eq!(
            text.matches(" passed for resource ").count(),
            objects,
            "{text}"
        );
    }
}

#[test]
fn helm_lint_strict_passes() {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let r = render_to_disk(None);
    for chart in &r.chart_dirs {
        let out = run(Command::new(&helm).args(["lint", "--strict"]).arg(chart));
        must_succeed("helm lint --strict", &out);
    }
}

/// checkov checks that do not apply to a local cluster; docs/k8s.md says why for each.
const CHECKOV_SKIPS: &[&str] = &["CKV_K8S_15", "CKV_K8S_35", "CKV_K8S_43", "CKV2_K8S_6"];

#[test]
fn checkov_passes_apart_from_the_documented_skips() {
    let Some(checkov) = common::tool("checkov") else {
        return;
    };
    let docs = std::fs::read_to_string(common::repo().join("docs/k8s.md")).unwrap();
    for check in CHECKOV_SKIPS {
        assert!(docs.contains(check), "docs/k8s.md does not explain {check}");
    }
    let helm = common::tool("helm");
    let r = render_to_disk(helm.as_deref());
    let mut files: Vec<&PathBuf> = r.manifests.iter().collect();
    files.extend(&r.helm_outputs);
    let mut cmd = Command::new(&checkov);
    cmd.args([
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "--quiet",
    ])
    .args(["--skip-check", &CHECKOV_SKIPS.join(",")]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = run(&mut cmd);
    must_succeed("checkov", &out);
}

#[test]
fn yamllint_reports_nothing() {
    let Some(yamllint) = common::tool("yamllint") else {
        return;
    };
    let helm = common::tool("helm");
    let r = render_to_disk(helm.as_deref());
    let mut files: Vec<PathBuf> = r.manifests.clone();
    // The reference app's `helm template` output; the tricky one's below.
    files.extend(r.helm_outputs.first().cloned());
    for c in &r.chart_dirs {
        files.push(c.join("Chart.yaml"));
        files.push(c.join("values.yaml"));
    }
    // The default rules, warnings included (-s makes them fail too).
    let out = run(Command::new(&yamllint)
        .args(["-s", "-f", "parsable", "-d", "default"])
        .args(&files));
    must_succeed("yamllint", &out);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The chart moves long one-word values (base64, digests, checksums) to their own line,
    // but does not fold a long config sentence as slipway's own writer does: for the tricky
    // config's LONG value only line length is relaxed (see docs/k8s.md).
    if let Some(tricky) = r.helm_outputs.get(1) {
        let out = run(Command::new(&yamllint)
            .args([
                "-s",
                "-f",
                "parsable",
                "-d",
                "{extends: default, rules: {line-length: disable}}",
            ])
            .arg(tricky));
        must_succeed("yamllint (tricky helm output)", &out);
        let text = std::fs::read_to_string(tricky).unwrap();
        let long: Vec<&str> = text
            .lines()
            .filter(|l| l.chars().count() > 80 && l.trim().contains(' '))
            .map(str::trim)
            .collect();
        assert!(
            long.iter().all(|l| l.contains("a long sentence")),
            "{long:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The binary: secrets, build record, --check.

const SECRET_NAMES: &[&str] = &[
    "DATABASE_URL",
    "JWT_SECRET",
    "OPENAI_API_KEY",
    "BETTER_AUTH_SECRET",
    "BACKEND_TOKEN",
];

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("slipway.toml"), REFERENCE).unwrap();
    dir
}

fn slipway_in(dir: &Path) -> Command {
    let mut cmd = common::slipway();
    cmd.current_dir(dir).arg("--progress=plain");
    for name in SECRET_NAMES {
        cmd.env_remove(name);
    }
    cmd
}

fn image_args() -> Vec<String> {
    reference_images()
        .iter()
        .flat_map(|(c, r)| ["--image".to_string(), format!("{c}={r}")])
        .collect()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn secret_values_reach_only_the_secret_manifest() {
    use base64::Engine as _;
    let dir = project();
    let unique = common::unique("secret");
    let values: Vec<(String, String)> = SECRET_NAMES
        .iter()
        .map(|n| (n.to_string(), format!("{n}-{unique}-value")))
        .collect();
    // Half from the environment, half from an .env file.
    let env_file = dir.path().join(".env.local");
    std::fs::write(
        &env_file,
        values[2..]
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\"\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut cmd = slipway_in(dir.path());
    cmd.arg("manifests")
        .args(image_args())
        .args(["--env-file", ".env.local"]);
    for (k, v) in &values[..2] {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    must_succeed("slipway manifests", &out);
    let out_chart = run(slipway_in(dir.path()).arg("chart").args(image_args()));
    must_succeed("slipway chart", &out_chart);

    let b64 = base64::engine::general_purpose::STANDARD;
    let is_secret_file = |p: &Path| p.to_string_lossy().ends_with(".secret.yaml");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for path in all_files(dir.path()) {
        if path == env_file {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, value) in &values {
            assert!(
                !text.contains(value.as_str()),
                "{name}'s value in {}",
                path.display()
            );
            if text.contains(&b64.encode(value)) {
                assert!(
                    is_secret_file(&path),
                    "{name}'s base64 value in {}",
                    path.display()
                );
                *seen.entry(name).or_default() += 1;
            }
        }
    }
    // Each value is in the Secret of every component that lists it.
    let expected: BTreeMap<&str, usize> = SECRET_NAMES
        .iter()
        .map(|n| (*n, if *n == "BETTER_AUTH_SECRET" { 2 } else { 1 }))
        .collect();
    assert_eq!(seen, expected);
    for stream in [
        &out.stdout,
        &out.stderr,
        &out_chart.stdout,
        &out_chart.stderr,
    ] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(&unique), "a value was printed: {text}");
    }
    use std::os::unix::fs::PermissionsExt;
    for component in ["backend", "frontend"] {
        let path = dir.path().join(format!("k8s/{component}.secret.yaml"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let ignore = std::fs::read_to_string(dir.path().join("k8s/.gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*.secret.yaml"), "{ignore}");
    // The chart's values hold the names with empty values.
    let values_yaml =
        std::fs::read_to_string(dir.path().join("charts/taskboard/values.yaml")).unwrap();
    for name in SECRET_NAMES {
        assert!(
            values_yaml.contains(&format!("{name}: ''")),
            "{values_yaml}"
        );
    }
}

#[test]
fn missing_secrets_are_named_without_values_and_nothing_is_written() {
    let dir = project();
    let known = common::unique("known-value");
    let out = run(slipway_in(dir.path())
        .arg("manifests")
        .args(image_args())
        .env("DATABASE_URL", &known));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "JWT_SECRET",
        "OPENAI_API_KEY",
        "BETTER_AUTH_SECRET",
        "BACKEND_TOKEN",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(
        !stderr.contains("DATABASE_URL"),
        "only missing names: {stderr}"
    );
    assert!(!stderr.contains(&known), "{stderr}");
    assert!(
        stderr.contains("hint:") && stderr.contains("--allow-missing-secrets"),
        "{stderr}"
    );
    assert!(!dir.path().join("k8s").exists());
    let out = run(slipway_in(dir.path())
        .arg("manifests")
        .args(image_args())
        .args(["--env-file", "no-such.env"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read env file"));

    // Allowed: empty values, and a warning that names them.
    let out = run(slipway_in(dir.path())
        .arg("manifests")
        .args(image_args())
        .arg("--allow-missing-secrets")
        .env("DATABASE_URL", &known));
    must_succeed("manifests --allow-missing-secrets", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JWT_SECRET") && !stderr.contains(&known),
        "{stderr}"
    );
    let secret = std::fs::read_to_string(dir.path().join("k8s/backend.secret.yaml")).unwrap();
    assert!(secret.contains("JWT_SECRET: ''"), "{secret}");
}

#[test]
fn without_a_build_record_the_commands_say_how_to_get_one() {
    let dir = project();
    for command in [
        ["manifests", "--allow-missing-secrets"],
        ["chart", "--quiet"],
    ] {
        let out = run(slipway_in(dir.path()).args(command));
        assert_eq!(out.status.code(), Some(2), "{command:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("no build record"), "{stderr}");
        assert!(stderr.contains("hint: run `slipway build`"), "{stderr}");
    }
}

#[test]
fn the_build_record_decides_the_images_and_image_flags_override_it() {
    let dir = project();
    let config = config::load(&dir.path().join("slipway.toml")).unwrap();
    let record = |image: &str, pushed: Option<String>| slipway::record::ImageRecord {
        image: image.to_string(),
        repository: image.split(':').next().unwrap().to_string(),
        tag: image.rsplit(':').next().unwrap().to_string(),
        tags: vec![],
        image_id: "sha256:00".into(),
        input_digest: "sha256:00".into(),
        outcome: slipway::record::Outcome::Built,
        reason: None,
        duration_ms: 1,
        size: 1,
        pushed,
        push_error: None,
        attestations: Vec::new(),
    };
    let pushed = format!(
        "registry.local/taskboard/backend@sha256:{}",
        "ab".repeat(32)
    );
    let report = slipway::record::BuildReport {
        components: [
            (
                "backend".to_string(),
                record("taskboard/backend:111111111111", Some(pushed.clone())),
            ),
            (
                "frontend".to_string(),
                record("taskboard/frontend:222222222222", None),
            ),
        ]
        .into(),
    };
    slipway::record::write(&slipway::record::last_build_path(&config), &report).unwrap();
    let out = run(slipway_in(dir.path()).args([
        "manifests",
        "--allow-missing-secrets",
        "--pull-policy",
        "Never",
    ]));
    must_succeed("manifests", &out);
    let images = |file: &str| {
        let objects =
            parse_stream(&std::fs::read_to_string(dir.path().join("k8s").join(file)).unwrap());
        let d = objects
            .values()
            .find(|o| o["kind"] == "Deployment")
            .unwrap()
            .clone();
        let c = d["spec"]["template"]["spec"]["containers"][0].clone();
        (
            c["image"].as_str().unwrap().to_string(),
            c["imagePullPolicy"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(
        images("backend.yaml"),
        (pushed.clone(), "Never".to_string())
    );
    assert_eq!(images("frontend.yaml").0, "taskboard/frontend:222222222222");

    let out = run(slipway_in(dir.path()).args([
        "manifests",
        "--allow-missing-secrets",
        "--image",
        "frontend=taskboard/frontend:333333333333",
    ]));
    must_succeed("manifests --image", &out);
    assert_eq!(images("backend.yaml").0, pushed);
    assert_eq!(images("frontend.yaml").0, "taskboard/frontend:333333333333");

    let out = run(slipway_in(dir.path()).args(["chart", "--image", "nope=x:y"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("component `nope`"));
}

#[test]
fn check_reports_stale_files_and_rewrites_remove_what_is_gone() {
    let dir = project();
    let write = run(slipway_in(dir.path()).arg("chart").args(image_args()));
    must_succeed("chart", &write);
    let check = run(slipway_in(dir.path())
        .args(["chart", "--check"])
        .args(image_args()));
    must_succeed("chart --check", &check);
    let other = run(slipway_in(dir.path())
        .args([
            "chart",
            "--check",
            "--image",
            "backend=taskboard/backend:999999999999",
        ])
        .args(["--image", "frontend=slipway/frontend:fedcba987654"]));
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains("values.yaml"));

    // A secret manifest for secrets that no longer exist is removed; a user's file is kept.
    let out = run(slipway_in(dir.path())
        .args(["manifests", "--allow-missing-secrets"])
        .args(image_args()));
    must_succeed("manifests", &out);
    std::fs::write(dir.path().join("k8s/mine.yaml"), "---\nkind: Mine\n").unwrap();
    let text = REFERENCE.replace(
        "secrets = [\"DATABASE_URL\", \"JWT_SECRET\", \"OPENAI_API_KEY\", \"BETTER_AUTH_SECRET\"]",
        "",
    );
    std::fs::write(dir.path().join("slipway.toml"), text).unwrap();
    let out = run(slipway_in(dir.path())
        .args(["manifests", "--allow-missing-secrets"])
        .args(image_args()));
    must_succeed("manifests", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed"));
    assert!(!dir.path().join("k8s/backend.secret.yaml").exists());
    assert!(dir.path().join("k8s/mine.yaml").exists());
}

/// `helm template` leaves NOTES.txt out, and `helm install --dry-run` wants an API server:
/// render it through `tpl` from a copy of the chart instead.
#[test]
fn notes_say_how_to_reach_the_node_port_and_which_secrets_are_empty() {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let chart = k8s::render_chart(&reference(), &reference_images(), &reference_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chart_dir = dir.path().join("chart");
    write_out(&chart_dir, &chart);
    let notes = chart
        .iter()
        .find(|f| f.path.ends_with("NOTES.txt"))
        .unwrap();
    std::fs::write(chart_dir.join("notes.txt"), &notes.content).unwrap();
    std::fs::write(
        chart_dir.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}\n",
    )
    .unwrap();
    let out = run(Command::new(&helm)
        .args(["template", "taskboard"])
        .arg(&chart_dir)
        .args([
            "--namespace",
            "taskboard",
            "--show-only",
            "templates/zz-notes.yaml",
        ])
        .args(["--set-string", "components.backend.secrets.JWT_SECRET=x"]));
    must_succeed("helm template (notes)", &out);
    let objects = parse_stream(&String::from_utf8(out.stdout).unwrap());
    let text = objects[&key("ConfigMap", "notes")]["data"]["notes"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.contains("NodePort Service taskboard-frontend"),
        "{text}"
    );
    assert!(text.contains("fixed at 30080"), "{text}");
    assert!(
        text.contains("service/taskboard-frontend 8080:3000"),
        "{text}"
    );
    assert!(
        text.contains("empty secrets BETTER_AUTH_SECRET, DATABASE_URL, OPENAI_API_KEY:"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// The chart as a Helm user meets it: values files of their own, the schema, helm test.

/// What a user puts in `values-prod.yaml`: chart-wide defaults and per-component keys in
/// helm-create's names.
const VALUES_PROD: &str = r#"
imagePullSecrets:
  - name: regcred
nodeSelector:
  disktype: ssd
tolerations:
  - key: dedicated
    operator: Equal
    value: web
    effect: NoSchedule
podAnnotations:
  team: shop
components:
  backend:
    replicaCount: 3
    existingSecret: backend-secrets
    nodeSelector:
      zone: a
    affinity:
      podAntiAffinity:
        preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  app.kubernetes.io/component: backend
    podLabels:
      tier: api
    serviceAccount:
      annotations:
        example.com/role: backend
    env:
      - name: EXTRA
        value: "1"
    volumes:
      - name: certs
        configMap:
          name: certs
    volumeMounts:
      - name: certs
        mountPath: /etc/certs
        readOnly: true
    livenessProbe:
      initialDelaySeconds: 5
    ingress:
      enabled: true
      className: nginx
      hosts:
        - host: taskboard.example.com
          paths:
            - path: /
              pathType: Prefix
      tls:
        - secretName: taskboard-tls
          hosts:
            - taskboard.example.com
"#;

/// The reference chart written to a temporary directory.
fn reference_chart_dir() -> (tempfile::TempDir, PathBuf) {
    let chart = k8s::render_chart(&reference(), &reference_images(), &reference_opts()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chart_dir = dir.path().join("taskboard");
    write_out(&chart_dir, &chart);
    (dir, chart_dir)
}

fn helm_with_values(helm: &Path, chart_dir: &Path, args: &[&str], values: &str) -> Output {
    let file = chart_dir.with_extension("user-values.yaml");
    std::fs::write(&file, values).unwrap();
    run(Command::new(helm)
        .args(args)
        .arg(chart_dir)
        .args(["--namespace", "taskboard", "-f"])
        .arg(&file))
}

#[test]
fn a_users_values_file_reaches_helm_template() {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let (_dir, chart_dir) = reference_chart_dir();
    let out = helm_with_values(
        &helm,
        &chart_dir,
        &["template", "taskboard", "--skip-tests"],
        VALUES_PROD,
    );
    must_succeed("helm template -f values-prod.yaml", &out);
    let text = String::from_utf8(out.stdout).unwrap();
    let objects = parse_stream(&text);
    let be = &objects[&key("Deployment", "taskboard-backend")];
    assert_eq!(be["spec"]["replicas"], 3);
    let pod = &be["spec"]["template"];
    assert_eq!(
        pod["spec"]["nodeSelector"],
        serde_json::json!({"disktype": "ssd", "zone": "a"})
    );
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(
        pod["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        100
    );
    assert_eq!(pod["metadata"]["annotations"]["team"], "shop");
    assert_eq!(pod["metadata"]["labels"]["tier"], "api");
    assert!(
        pod["metadata"]["annotations"]
            .get("checksum/secret")
            .is_none(),
        "no checksum of a Secret the chart does not make"
    );
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["env"][0]["name"], "EXTRA");
    assert_eq!(c["envFrom"][0]["secretRef"]["name"], "backend-secrets");
    assert_eq!(c["livenessProbe"]["initialDelaySeconds"], 5);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let mounts = mount_paths(c);
    assert_eq!(mounts, ["/tmp", "/etc/certs"]);
    assert!(!objects.contains_key(&key("Secret", "taskboard-backend")));
    assert!(objects.contains_key(&key("Secret", "taskboard-frontend")));
    let sa = &objects[&key("ServiceAccount", "taskboard-backend")];
    assert_eq!(sa["metadata"]["annotations"]["example.com/role"], "backend");
    let ing = &objects[&key("Ingress", "taskboard-backend")];
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(ing["spec"]["rules"][0]["host"], "taskboard.example.com");
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "taskboard-backend"
    );
    assert_eq!(ing["spec"]["tls"][0]["secretName"], "taskboard-tls");
    assert!(!objects.contains_key(&key("Ingress", "taskboard-frontend")));
    // The chart-wide defaults reach the other component too.
    let fe = &objects[&key("Deployment", "taskboard-frontend")]["spec"]["template"]["spec"];
    assert_eq!(fe["nodeSelector"], serde_json::json!({"disktype": "ssd"}));
    assert_eq!(fe["imagePullSecrets"][0]["name"], "regcred");

    // The judges accept the result.
    let out = helm_with_values(&helm, &chart_dir, &["lint", "--strict"], VALUES_PROD);
    must_succeed("helm lint --strict -f values-prod.yaml", &out);
    if let Some(kv) = common::tool("kubernetes-validate") {
        let rendered = chart_dir.with_extension("prod.yaml");
        std::fs::write(&rendered, &text).unwrap();
        for version in ["1.29.0", "1.33.0"] {
            let out = run(Command::new(&kv)
                .args(["--strict", "-k", version])
                .arg(&rendered));
            must_succeed(&format!("kubernetes-validate -k {version}"), &out);
        }
    }
}

#[test]
fn the_schema_rejects_a_typo_and_a_wrong_type_with_helms_message() {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let (_dir, chart_dir) = reference_chart_dir();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir.join("values.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    // The values slipway writes, and a user's full set of overrides, pass.
    must_succeed(
        "helm lint --strict -f values-prod.yaml",
        &helm_with_values(&helm, &chart_dir, &["lint", "--strict"], VALUES_PROD),
    );
    for (values, message) in [
        (
            "components:\n  backend:\n    replicaCont: 3\n",
            "Additional property replicaCont is not allowed",
        ),
        (
            "components:\n  backend:\n    replicaCount: \"3\"\n",
            "replicaCount: Invalid type. Expected: integer, given: string",
        ),
        (
            "nodeSelectr:\n  disktype: ssd\n",
            "Additional property nodeSelectr is not allowed",
        ),
        (
            "components:\n  backend:\n    secrets:\n      JWT_SECRT: x\n",
            "Additional property JWT_SECRT is not allowed",
        ),
        (
            "components:\n  backend:\n    ingress:\n      enabled: \"yes\"\n",
            "enabled: Invalid type. Expected: boolean, given: string",
        ),
    ] {
        for args in [&["template", "taskboard"][..], &["lint", "--strict"][..]] {
            let out = helm_with_values(&helm, &chart_dir, args, values);
            let stderr = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(!out.status.success(), "helm {args:?} accepted {values}");
            assert!(
                stderr.contains("values don't meet the specifications of the schema")
                    && stderr.contains(message),
                "helm {args:?} with {values}: {stderr}"
            );
        }
    }
}

#[test]
fn a_hand_edited_chart_file_stops_slipway_chart_and_force_overwrites_it() {
    let dir = project();
    let chart = dir.path().join("charts/taskboard");
    must_succeed(
        "chart",
        &run(slipway_in(dir.path()).arg("chart").args(image_args())),
    );
    // The user's own files next to the generated ones.
    let own_values = chart.join("values-prod.yaml");
    std::fs::write(&own_values, VALUES_PROD).unwrap();
    let own_template = chart.join("templates/extra.yaml");
    std::fs::write(&own_template, "---\n{{- /* mine */}}\n").unwrap();
    // A regenerated chart with a user's files in it rewrites nothing of theirs.
    let out = run(slipway_in(dir.path()).arg("chart").args(image_args()));
    must_succeed("chart again", &out);

    let values = chart.join("values.yaml");
    let generated = std::fs::read_to_string(&values).unwrap();
    let edited = generated.replace("replicaCount: 1", "replicaCount: 2");
    assert_ne!(generated, edited);
    std::fs::write(&values, &edited).unwrap();
    let out = run(slipway_in(dir.path()).arg("chart").args(image_args()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("values.yaml (edited by hand)") && stderr.contains("values-ENV.yaml"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("--- a/values.yaml") && stdout.contains("-    replicaCount: 2"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&values).unwrap(), edited, "kept");

    // --force overwrites; the user's own files stay.
    let out = run(slipway_in(dir.path())
        .args(["chart", "--force"])
        .args(image_args()));
    must_succeed("chart --force", &out);
    assert_eq!(std::fs::read_to_string(&values).unwrap(), generated);
    assert_eq!(std::fs::read_to_string(&own_values).unwrap(), VALUES_PROD);
    assert!(own_template.exists());

    // A file of the user's own where slipway writes a template is not overwritten either.
    let ingress = chart.join("templates/ingress.yaml");
    std::fs::write(&ingress, "---\n# my own ingress\n").unwrap();
    let out = run(slipway_in(dir.path()).arg("chart").args(image_args()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingress.yaml (not written by slipway)"));
}

#[test]
fn helm_test_has_a_pod_per_component_that_calls_its_health_path_through_its_service() {
    let Some(helm) = common::tool("helm") else {
        return;
    };
    let (_dir, chart_dir) = reference_chart_dir();
    let out = run(Command::new(&helm)
        .args(["template", "taskboard"])
        .arg(&chart_dir)
        .args([
            "--namespace",
            "taskboard",
            "--show-only",
            "templates/tests/test-http.yaml",
        ]));
    must_succeed("helm template (tests)", &out);
    let objects = parse_stream(&String::from_utf8(out.stdout).unwrap());
    for (component, url) in [
        (
            "backend",
            "http://taskboard-backend.taskboard.svc:8000/healthz",
        ),
        (
            "frontend",
            "http://taskboard-frontend.taskboard.svc:3000/api/healthz",
        ),
    ] {
        let pod = &objects[&key("Pod", &format!("taskboard-{component}-test"))];
        assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
        let args = pod["spec"]["containers"][0]["args"].as_array().unwrap();
        assert_eq!(args.last().unwrap(), url);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        // Not one of the pods the component's Service selects.
        assert_ne!(
            pod["metadata"]["labels"]["app.kubernetes.io/component"],
            component
        );
    }
    assert_eq!(objects.len(), 2);
    // Off with tests.enabled=false.
    let out = run(Command::new(&helm)
        .args(["template", "taskboard"])
        .arg(&chart_dir)
        .args(["--namespace", "taskboard", "--set", "tests.enabled=false"]));
    must_succeed("helm template (tests off)", &out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("helm.sh/hook: test"));
}

/// The `mountPath` of each of a container's `volumeMounts`, in order.
fn mount_paths(c: &serde_json::Value) -> Vec<&str> {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect()
}
