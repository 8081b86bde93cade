//! Rust apps: `Cargo.toml` and `Cargo.lock`, built with `cargo build --release --locked`.
//! Dependencies are fetched in the `deps` stage against a stub `main.rs`, so a source edit
//! reuses them.

use serde::Serialize;

use super::{Notes, Provider, Reason, SourceTree, Stack, StackPlan};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RustPlan {
    /// The base image (the toolchain release the project asks for, else the default).
    pub image: String,
    /// The binary target built and shipped.
    pub binary: String,
    /// Source files stubbed with `fn main() {}` in the `deps` stage so Cargo can read the
    /// manifest before the sources are copied.
    pub stubs: Vec<String>,
}

pub struct Rust;

impl Provider for Rust {
    fn stack(&self) -> Stack {
        Stack::Rust
    }

    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>> {
        Ok(tree
            .is_file("Cargo.toml")
            .then(|| Reason::new("Cargo.toml", "a Rust package")))
    }

    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan> {
        if !tree.is_file("Cargo.toml") {
            return Err(tree
                .fail("Cargo.toml", "does not exist")
                .hint("a Rust component needs Cargo.toml at the context's root")
                .into());
        }
        let manifest = tree.read_toml("Cargo.toml")?;
        if !tree.is_file("Cargo.lock") {
            return Err(tree
                .fail(
                    "Cargo.toml",
                    "has no Cargo.lock next to it: builds would not be reproducible",
                )
                .hint("run `cargo generate-lockfile` and commit Cargo.lock")
                .into());
        }
        let Some(package) = manifest.get("package").and_then(|p| p.as_table()) else {
            return Err(tree
                .fail("Cargo.toml", "has no [package]: workspaces without a root package are not supported")
                .hint("give each binary its own component context, or point `dockerfile` at your own Dockerfile")
                .into());
        };
        if manifest.get("workspace").is_some() {
            return Err(tree
                .fail(
                    "Cargo.toml",
                    "declares a [workspace]: only single-package crates are supported",
                )
                .hint("point `dockerfile` at your own Dockerfile for workspaces")
                .into());
        }
        let name = package
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| tree.fail("Cargo.toml", "[package] has no `name`"))?;
        let bins: Vec<String> = manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.get("name").and_then(|n| n.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let default_run = package.get("default-run").and_then(|d| d.as_str());
        let binary = if let Some(d) = default_run {
            notes.because("Cargo.toml", format!("`default-run = \"{d}\"`"));
            d.to_string()
        } else if bins.is_empty() {
            if !tree.is_file("src/main.rs") {
                return Err(tree
                    .fail(
                        "Cargo.toml",
                        "builds no binary (no src/main.rs and no [[bin]])",
                    )
                    .hint("a component runs a binary: add src/main.rs")
                    .into());
            }
            notes.because("src/main.rs", format!("binary `{name}`"));
            name.to_string()
        } else if bins.len() == 1 {
            notes.because("Cargo.toml", format!("the only [[bin]] `{}`", bins[0]));
            bins[0].clone()
        } else if bins.iter().any(|b| b == name) {
            notes.because(
                "Cargo.toml",
                format!("the [[bin]] named like the package, `{name}`"),
            );
            name.to_string()
        } else {
            return Err(tree
                .fail(
                    "Cargo.toml",
                    format!(
                        "has several binaries ({}) and no `default-run`",
                        bins.join(", ")
                    ),
                )
                .hint("set `default-run` in [package] to the one the component runs")
                .into());
        };
        let mut stubs = vec!["src/main.rs".to_string()];
        for b in manifest
            .get("bin")
            .and_then(|b| b.as_array())
            .into_iter()
            .flatten()
        {
            let path = match (
                b.get("path").and_then(|p| p.as_str()),
                b.get("name").and_then(|n| n.as_str()),
            ) {
                (Some(p), _) => p.trim_start_matches("./").to_string(),
                (None, Some(n)) if n != name => format!("src/bin/{n}.rs"),
                _ => continue,
            };
            let plain = path.split('/').all(|p| !p.is_empty() && p != "..")
                && path
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
            if !plain {
                return Err(tree
                    .fail(
                        "Cargo.toml",
                        format!("[[bin]] path `{path}` is not a plain relative path"),
                    )
                    .into());
            }
            if !stubs.contains(&path) {
                stubs.push(path);
            }
        }
        let image = super::toolchain::rust(tree, package, notes)?;
        Ok(StackPlan::Rust(RustPlan {
            image,
            binary: super::go::sanitize_binary(&binary),
            stubs,
        }))
    }
}
