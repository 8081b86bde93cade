//! The locked dependencies of a component, from the lockfiles in its context: the files
//! detection installs from (npm, pnpm, yarn; uv, Poetry, pip requirements; Go; Cargo), each
//! read for every package it pins with its version.
//!
//! The lockfile is found the way detection finds it: Node's first of package-lock.json,
//! npm-shrinkwrap.json, pnpm-lock.yaml, yarn.lock; Python's uv.lock, else poetry.lock, else
//! the first requirements file (with the files it includes); Go's go.sum; Rust's Cargo.lock.
//! Each is parsed here in full (detection reads only what it decides by). A lockfile that does
//! not parse is an error naming it: an SBOM that silently left packages out would be worse
//! than none.

use std::collections::BTreeSet;

use serde_json::Value;

use super::package::{Package, Scope};
use crate::detect::{node, python, SourceTree};
use crate::error::Fail;

/// Every package the context's lockfiles pin (unsorted; [`super::package::dedup`] sorts).
pub fn read(tree: &SourceTree) -> anyhow::Result<Vec<Package>> {
    let mut out = Vec::new();
    let node: Vec<&str> = node::LOCKFILES.iter().map(|(f, _)| *f).collect();
    if let Some(file) = tree.first_file(&node) {
        let text = tree.read(file)?;
        let parsed = match file {
            "pnpm-lock.yaml" => pnpm(&text, file),
            "yarn.lock" => Ok(yarn(&text, file)),
            _ => npm(&text, file),
        };
        out.extend(parsed.map_err(|e| unreadable(tree, file, e))?);
    }
    if let Some(file) = tree.first_file(&["uv.lock", "poetry.lock"]) {
        let text = tree.read(file)?;
        let parsed = match file {
            "uv.lock" => uv(&text, file),
            _ => poetry(&text, file),
        };
        out.extend(parsed.map_err(|e| unreadable(tree, file, e))?);
    } else if let Some(file) = tree.first_file(python::REQUIREMENTS) {
        let mut seen = BTreeSet::new();
        requirements_file(tree, file, &mut seen, &mut out)?;
    }
    if tree.is_file("go.sum") {
        out.extend(go_sum(&tree.read("go.sum")?, "go.sum"));
    }
    if tree.is_file("Cargo.lock") {
        let text = tree.read("Cargo.lock")?;
        out.extend(cargo(&text, "Cargo.lock").map_err(|e| unreadable(tree, "Cargo.lock", e))?);
    }
    Ok(out)
}

fn unreadable(tree: &SourceTree, file: &str, e: anyhow::Error) -> anyhow::Error {
    Fail::usage(format!(
        "{}: cannot read the locked packages for the SBOM: {e:#}",
        tree.show(file)
    ))
    .hint(format!(
        "regenerate {} with its package manager",
        tree.show(file)
    ))
    .into()
}

/// npm's package-lock.json / npm-shrinkwrap.json: `packages` (lockfile v2 and v3), else the
/// nested `dependencies` (v1).
pub fn npm(text: &str, source: &str) -> anyhow::Result<Vec<Package>> {
    let lock: Value = serde_json::from_str(text)?;
    let mut out = Vec::new();
    if let Some(packages) = lock.get("packages").and_then(Value::as_object) {
        for (path, entry) in packages {
            // "" is the project itself; links point at workspace members (their own source).
            let Some((_, name)) = path.rsplit_once("node_modules/") else {
                continue;
            };
            if entry.get("link").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let name = entry.get("name").and_then(Value::as_str).unwrap_or(name);
            let version = entry.get("version").and_then(Value::as_str);
            let mut p = Package::locked("npm", name, version, source);
            p.scope = npm_scope(entry);
            out.push(p);
        }
        return Ok(out);
    }
    fn nested(deps: &serde_json::Map<String, Value>, source: &str, out: &mut Vec<Package>) {
        for (name, entry) in deps {
            let version = entry.get("version").and_then(Value::as_str);
            let mut p = Package::locked("npm", name, version, source);
            p.scope = npm_scope(entry);
            out.push(p);
            if let Some(inner) = entry.get("dependencies").and_then(Value::as_object) {
                nested(inner, source, out);
            }
        }
    }
    if let Some(deps) = lock.get("dependencies").and_then(Value::as_object) {
        nested(deps, source, &mut out);
    }
    Ok(out)
}

fn npm_scope(entry: &Value) -> Scope {
    let flag = |k: &str| entry.get(k).and_then(Value::as_bool) == Some(true);
    if flag("dev") {
        Scope::Excluded
    } else if flag("optional") || flag("devOptional") {
        Scope::Optional
    } else {
        Scope::Required
    }
}

/// pnpm-lock.yaml: the keys of `packages` (`/name@1.0.0` in v6, `name@1.0.0` in v9,
/// `/name/1.0.0` in v5), peer suffixes `(react@19.0.0)` dropped; the scope from each entry's
/// `dev` and `optional` flags (v5, v6) or from the graph in `snapshots` (v9).
pub fn pnpm(text: &str, source: &str) -> anyhow::Result<Vec<Package>> {
    let lock: serde_norway::Value = serde_norway::from_str(text)?;
    let mut out = Vec::new();
    let Some(packages) = lock.get("packages").and_then(|p| p.as_mapping()) else {
        return Ok(out);
    };
    let pnpm_v9 = PnpmGraph::of(&lock);
    for (key, entry) in packages {
        let Some(key) = key.as_str() else { continue };
        let key = key.strip_prefix('/').unwrap_or(key);
        let key = key.split('(').next().unwrap_or(key);
        let (name, version) = match key.get(1..).and_then(|rest| rest.rfind('@')) {
            Some(i) => (&key[..=i], &key[i + 2..]),
            // v5: `name/version`, `@scope/name/version`.
            None => match key.rsplit_once('/') {
                Some((n, v)) => (n, v),
                None => continue,
            },
        };
        // Tarball or git sources name a URL, not a registry version.
        if version.contains(':') {
            continue;
        }
        let flag = |k: &str| entry.get(k).and_then(|v| v.as_bool()) == Some(true);
        let mut p = Package::locked("npm", name, Some(version), source);
        p.scope = match pnpm_v9
            .as_ref()
            .map(|g| g.scope(&format!("{name}@{version}")))
        {
            Some(scope) => scope,
            None if flag("dev") => Scope::Excluded,
            None if flag("optional") => Scope::Optional,
            None => Scope::Required,
        };
        out.push(p);
    }
    Ok(out)
}

/// pnpm 9's dependency graph (`importers` and `snapshots`; its `packages` carry no `dev`
/// flag): what the importers' runtime dependencies reach, and which of it is optional.
struct PnpmGraph {
    /// `name@version` of every package the runtime dependencies reach.
    reached: BTreeSet<String>,
    /// `name@version` of the snapshots marked `optional`.
    optional: BTreeSet<String>,
}

impl PnpmGraph {
    fn of(lock: &serde_norway::Value) -> Option<PnpmGraph> {
        let snapshots = lock.get("snapshots")?.as_mapping()?;
        // `name` and a version as pnpm writes it (peers in parentheses) → the snapshot key.
        let key = |name: &serde_norway::Value, version: &serde_norway::Value| {
            let v = version.get("version").unwrap_or(version);
            Some(format!("{}@{}", name.as_str()?, v.as_str()?))
        };
        let deps = |node: &serde_norway::Value| -> Vec<String> {
            ["dependencies", "optionalDependencies"]
                .iter()
                .filter_map(|k| node.get(*k)?.as_mapping())
                .flatten()
                .filter_map(|(n, v)| key(n, v))
                .collect()
        };
        let mut todo: Vec<String> = lock
            .get("importers")
            .and_then(|i| i.as_mapping())
            .into_iter()
            .flatten()
            .flat_map(|(_, importer)| deps(importer))
            .collect();
        let base = |k: &str| k.split('(').next().unwrap_or(k).to_string();
        let mut seen = BTreeSet::new();
        while let Some(k) = todo.pop() {
            if !seen.insert(k.clone()) {
                continue;
            }
            if let Some(node) = snapshots.get(k.as_str()) {
                todo.extend(deps(node));
            }
        }
        let optional = snapshots
            .iter()
            .filter(|(_, n)| n.get("optional").and_then(|o| o.as_bool()) == Some(true))
            .filter_map(|(k, _)| k.as_str().map(base))
            .collect();
        Some(PnpmGraph {
            reached: seen.iter().map(|k| base(k)).collect(),
            optional,
        })
    }

    fn scope(&self, key: &str) -> Scope {
        if !self.reached.contains(key) {
            Scope::Excluded
        } else if self.optional.contains(key) {
            Scope::Optional
        } else {
            Scope::Required
        }
    }
}

/// yarn.lock, classic (`version "1.0.0"`) and Berry (`version: 1.0.0`): each entry's first
/// specifier names the package.
pub fn yarn(text: &str, source: &str) -> Vec<Package> {
    let mut out = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with('#') {
            let first = line.trim_end_matches(':').split(',').next().unwrap_or("");
            let spec = first.trim().trim_matches('"');
            name = spec
                .get(1..)
                .and_then(|rest| rest.find('@'))
                .map(|i| spec[..=i].to_string())
                // Berry's own entries: the workspace and its packages.
                .filter(|_| !spec.contains("@workspace:") && spec != "__metadata");
            continue;
        }
        let t = line.trim();
        let version = t
            .strip_prefix("version ")
            .or_else(|| t.strip_prefix("version: "))
            .map(|v| v.trim().trim_matches('"'));
        if let (Some(v), Some(n)) = (version, name.take()) {
            out.push(Package::locked("npm", &n, Some(v), source));
        }
    }
    out
}

/// uv.lock: every `[[package]]` but the project's own (an editable, virtual or directory
/// source).
pub fn uv(text: &str, source: &str) -> anyhow::Result<Vec<Package>> {
    let lock: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for p in toml_packages(&lock) {
        let local = p.get("source").and_then(|s| s.as_table()).is_some_and(|s| {
            ["editable", "virtual", "directory"]
                .iter()
                .any(|k| s.contains_key(*k))
        });
        if local {
            continue;
        }
        if let Some(pkg) = toml_package("pypi", p, source) {
            out.push(pkg);
        }
    }
    Ok(out)
}

/// poetry.lock: every `[[package]]`; those only in other groups than `main` (or of the old
/// `category = "dev"`) are for development.
pub fn poetry(text: &str, source: &str) -> anyhow::Result<Vec<Package>> {
    let lock: toml::Table = text.parse()?;
    let mut out = Vec::new();
    for p in toml_packages(&lock) {
        let Some(mut pkg) = toml_package("pypi", p, source) else {
            continue;
        };
        let groups: Option<Vec<&str>> = p
            .get("groups")
            .and_then(|g| g.as_array())
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect());
        let dev = match groups {
            Some(g) => !g.contains(&"main"),
            None => p.get("category").and_then(|c| c.as_str()) == Some("dev"),
        };
        if dev {
            pkg.scope = Scope::Excluded;
        } else if p.get("optional").and_then(|o| o.as_bool()) == Some(true) {
            pkg.scope = Scope::Optional;
        }
        out.push(pkg);
    }
    Ok(out)
}

/// Cargo.lock: every `[[package]]` from a registry or git (the workspace's own have no
/// `source`).
pub fn cargo(text: &str, source: &str) -> anyhow::Result<Vec<Package>> {
    let lock: toml::Table = text.parse()?;
    Ok(toml_packages(&lock)
        .filter(|p| p.contains_key("source"))
        .filter_map(|p| toml_package("cargo", p, source))
        .collect())
}

fn toml_packages(lock: &toml::Table) -> impl Iterator<Item = &toml::Table> {
    lock.get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_table())
}

fn toml_package(kind: &'static str, p: &toml::Table, source: &str) -> Option<Package> {
    let name = p.get("name")?.as_str()?;
    let version = p.get("version").and_then(|v| v.as_str());
    Some(Package::locked(kind, name, version, source))
}

/// go.sum: each module whose content is summed (`MODULE VERSION h1:...`; the lines of a
/// `VERSION/go.mod` only sum a module's go.mod, read for the module graph, not built).
pub fn go_sum(text: &str, source: &str) -> Vec<Package> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let (module, version) = (parts.next()?, parts.next()?);
            (!version.ends_with("/go.mod"))
                .then(|| Package::locked("golang", module, Some(version), source))
        })
        .collect()
}

/// A requirements file and those it includes (`-r`): each `name==version` (a requirement
/// that is not pinned has no version; constraints files `-c` name none).
fn requirements_file(
    tree: &SourceTree,
    file: &str,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Package>,
) -> anyhow::Result<()> {
    if !seen.insert(file.to_string()) {
        return Ok(());
    }
    let text = tree.read(file)?;
    let (packages, includes) = requirements(&text, file);
    out.extend(packages);
    let dir = file.rsplit_once('/').map(|(d, _)| d);
    for inc in includes {
        let joined = match dir {
            Some(d) => format!("{d}/{inc}"),
            None => inc,
        };
        // Detection has checked the includes stay inside the context and exist.
        if !joined.split('/').any(|p| p == "..") && tree.is_file(&joined) {
            requirements_file(tree, &joined, seen, out)?;
        }
    }
    Ok(())
}

/// The requirements one file pins, and the files it includes with `-r`.
pub fn requirements(text: &str, source: &str) -> (Vec<Package>, Vec<String>) {
    let mut packages = Vec::new();
    let mut includes = Vec::new();
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("--requirement")
            .or_else(|| line.strip_prefix("-r"))
        {
            includes.push(rest.trim_start_matches('=').trim().to_string());
            continue;
        }
        if line.starts_with('-') {
            continue;
        }
        let spec = line.split(" --hash").next().unwrap_or(line);
        let spec = spec.split(';').next().unwrap_or(spec).trim();
        let name: String = spec
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        if name.is_empty() {
            continue;
        }
        let version = spec
            .split_once("==")
            .map(|(_, v)| v.split([',', ' ']).next().unwrap_or("").trim())
            .filter(|v| !v.contains('*'));
        packages.push(Package::locked("pypi", &name, version, source));
    }
    (packages, includes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(packages: &[Package]) -> Vec<String> {
        packages
            .iter()
            .map(|p| {
                format!(
                    "{}@{} {}",
                    p.full_name(),
                    p.version.as_deref().unwrap_or("-"),
                    p.scope.as_str()
                )
            })
            .collect()
    }

    #[test]
    fn npm_v3_and_v1() {
        let v3 = r#"{"lockfileVersion": 3, "packages": {
            "": {"name": "app", "version": "1.0.0"},
            "node_modules/@types/node": {"version": "20.19.43", "dev": true},
            "node_modules/next": {"version": "16.4.6"},
            "node_modules/next/node_modules/tslib": {"version": "2.8.1", "optional": true},
            "node_modules/shared": {"resolved": "packages/shared", "link": true},
            "node_modules/alias": {"name": "real-name", "version": "1.2.3"}
        }}"#;
        insta::assert_debug_snapshot!(names(&npm(v3, "package-lock.json").unwrap()), @r#"
        [
            "@types/node@20.19.43 excluded",
            "real-name@1.2.3 required",
            "next@16.4.6 required",
            "tslib@2.8.1 optional",
        ]
        "#);
        let v1 = r#"{"lockfileVersion": 1, "dependencies": {
            "a": {"version": "1.0.0", "dependencies": {"b": {"version": "2.0.0", "dev": true}}}
        }}"#;
        assert_eq!(
            names(&npm(v1, "package-lock.json").unwrap()),
            ["a@1.0.0 required", "b@2.0.0 excluded"]
        );
    }

    #[test]
    fn pnpm_v5_v6_v9() {
        let v6 = "lockfileVersion: '6.0'\npackages:\n  /@types/react@19.0.0:\n    dev: true\n  /next@15.0.0(react@19.0.0):\n    dev: false\n  /a/1.0.0:\n    optional: true\n  /t@https://x/t.tgz:\n    dev: false\n";
        assert_eq!(
            names(&pnpm(v6, "pnpm-lock.yaml").unwrap()),
            [
                "@types/react@19.0.0 excluded",
                "next@15.0.0 required",
                "a@1.0.0 optional"
            ]
        );
        let v9 = "lockfileVersion: '9.0'\npackages:\n  '@scope/x@1.2.3':\n    resolution: {integrity: sha512-x}\n  y@4.5.6:\n    resolution: {integrity: sha512-y}\n";
        assert_eq!(
            names(&pnpm(v9, "pnpm-lock.yaml").unwrap()),
            ["@scope/x@1.2.3 required", "y@4.5.6 required"]
        );
        assert!(pnpm("packages: [", "pnpm-lock.yaml").is_err());
    }

    #[test]
    fn yarn_classic_and_berry() {
        let classic = "# yarn lockfile v1\n\n\"@babel/code@^7.0.0\", \"@babel/code@^7.1.0\":\n  version \"7.2.0\"\n  resolved \"https://x\"\n\nleft-pad@^1.3.0:\n  version \"1.3.0\"\n";
        assert_eq!(
            names(&yarn(classic, "yarn.lock")),
            ["@babel/code@7.2.0 required", "left-pad@1.3.0 required"]
        );
        let berry = "__metadata:\n  version: 8\n\n\"app@workspace:.\":\n  version: 0.0.0-use.local\n\n\"react@npm:^19.0.0\":\n  version: 19.0.0\n  resolution: \"react@npm:19.0.0\"\n";
        assert_eq!(names(&yarn(berry, "yarn.lock")), ["react@19.0.0 required"]);
    }

    #[test]
    fn python_lockfiles() {
        let uv_lock = "version = 1\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = { editable = \".\" }\n\n[[package]]\nname = \"FastAPI\"\nversion = \"0.115.0\"\nsource = { registry = \"https://pypi.org/simple\" }\n";
        assert_eq!(
            names(&uv(uv_lock, "uv.lock").unwrap()),
            ["fastapi@0.115.0 required"]
        );
        let poetry_lock = "[[package]]\nname = \"flask\"\nversion = \"3.0.0\"\ngroups = [\"main\"]\n\n[[package]]\nname = \"pytest\"\nversion = \"8.0.0\"\ngroups = [\"dev\"]\n\n[[package]]\nname = \"old\"\nversion = \"1.0\"\ncategory = \"dev\"\n";
        assert_eq!(
            names(&poetry(poetry_lock, "poetry.lock").unwrap()),
            [
                "flask@3.0.0 required",
                "pytest@8.0.0 excluded",
                "old@1.0 excluded"
            ]
        );
        let reqs = "# pinned\n-r base.txt\n--index-url https://x\nPyJWT==2.15.1 \\\n    --hash=sha256:abc\nuvicorn[standard]==0.54.0 ; python_version >= '3.8'\nloose>=1.0\n";
        let (packages, includes) = requirements(reqs, "requirements.txt");
        assert_eq!(
            names(&packages),
            [
                "pyjwt@2.15.1 required",
                "uvicorn@0.54.0 required",
                "loose@- required"
            ]
        );
        assert_eq!(includes, ["base.txt"]);
    }

    #[test]
    fn go_and_cargo() {
        let sum = "github.com/pkg/errors v0.9.1 h1:abc=\ngithub.com/pkg/errors v0.9.1/go.mod h1:def=\ngolang.org/x/mod v0.1.0/go.mod h1:x=\n";
        assert_eq!(
            names(&go_sum(sum, "go.sum")),
            ["github.com/pkg/errors@v0.9.1 required"]
        );
        let lock = "version = 4\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"serde\"\nversion = \"1.0.200\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        assert_eq!(
            names(&cargo(lock, "Cargo.lock").unwrap()),
            ["serde@1.0.200 required"]
        );
    }

    #[test]
    fn a_broken_lockfile_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("package.json"), "{}").unwrap();
        std::fs::write(dir.path().join("package-lock.json"), "{ nope").unwrap();
        let tree = SourceTree::new(dir.path(), "contexts/web");
        let err = format!("{:#}", read(&tree).unwrap_err());
        assert!(err.contains("contexts/web/package-lock.json"), "{err}");
    }
}
