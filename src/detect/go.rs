//! Go apps: `go.mod`. Built as one static binary (`CGO_ENABLED=0`, `-trimpath`, no build ID)
//! from the main package at the root or the single one under `cmd/`.

use serde::Serialize;

use super::{Notes, Provider, Reason, SourceTree, Stack, StackPlan};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GoPlan {
    /// The base image (the toolchain release the project asks for, else the default).
    pub image: String,
    /// The main package to build, e.g. `.` or `./cmd/server`.
    pub package: String,
    /// The binary's name.
    pub binary: String,
    /// `go.sum` exists (copied with `go.mod` before `go mod download`).
    pub go_sum: bool,
    /// A `vendor/` directory is used instead of downloads.
    pub vendor: bool,
}

pub struct Go;

impl Provider for Go {
    fn stack(&self) -> Stack {
        Stack::Go
    }

    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>> {
        Ok(tree
            .is_file("go.mod")
            .then(|| Reason::new("go.mod", "a Go module")))
    }

    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan> {
        if !tree.is_file("go.mod") {
            return Err(tree
                .fail("go.mod", "does not exist")
                .hint("a Go component needs go.mod at the context's root (`go mod init`)")
                .into());
        }
        let gomod = tree.read("go.mod")?;
        let module = gomod
            .lines()
            .find_map(|l| l.trim().strip_prefix("module "))
            .map(|m| m.trim().trim_matches('"').to_string())
            .ok_or_else(|| {
                tree.fail("go.mod", "has no `module` line")
                    .hint("start go.mod with `module example.com/NAME`")
            })?;
        let go_sum = tree.is_file("go.sum");
        let vendor = tree.is_file("vendor/modules.txt");
        if vendor {
            notes.because(
                "vendor/modules.txt",
                "vendored modules: built with -mod=vendor",
            );
        }
        let is_main = |rel: &str| -> anyhow::Result<bool> {
            for f in tree.list(rel)? {
                let path = if rel.is_empty() {
                    f.clone()
                } else {
                    format!("{rel}/{f}")
                };
                if f.ends_with(".go") && !f.ends_with("_test.go") && tree.is_file(&path) {
                    let text = tree.read(&path)?;
                    if text.lines().any(|l| l.trim() == "package main") {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        };
        let last = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
        let (package, binary) = if is_main("")? {
            notes.because(
                "go.mod",
                format!("main package at the root of module {module}"),
            );
            (".".to_string(), last(&module))
        } else {
            let mut mains = Vec::new();
            for d in tree.list("cmd")? {
                let rel = format!("cmd/{d}");
                if tree.is_dir(&rel) && is_main(&rel)? {
                    mains.push(d);
                }
            }
            match mains.as_slice() {
                [one] => {
                    notes.because(format!("cmd/{one}"), "the only main package under cmd/");
                    (format!("./cmd/{one}"), one.clone())
                }
                [] => {
                    return Err(tree
                        .fail("go.mod", "no main package: none at the root and none under cmd/")
                        .hint("put `package main` at the module root or in cmd/NAME/")
                        .into())
                }
                many => {
                    return Err(crate::error::Fail::usage(format!(
                        "{} has several main packages ({}): slipway builds one binary per component",
                        tree.show("cmd"),
                        many.join(", ")
                    ))
                    .hint("make one component per binary with its own context, or point `dockerfile` at your own Dockerfile")
                    .into())
                }
            }
        };
        let binary = sanitize_binary(&binary);
        let image = super::toolchain::go(&gomod, notes);
        Ok(StackPlan::Go(GoPlan {
            image,
            package,
            binary,
            go_sum,
            vendor,
        }))
    }
}

/// A file name safe to put unquoted in a Dockerfile.
pub fn sanitize_binary(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        "app".to_string()
    } else {
        s
    }
}
