//! Next.js apps: `next` in `package.json`. With `output: "standalone"` in `next.config.*` the
//! production stage holds only the traced server (`.next/standalone`), the static assets and
//! `public/`; otherwise it holds the production `node_modules` and runs `next start`.
//!
//! Build IDs: Next.js derives one per build unless `generateBuildId` in `next.config.*`
//! returns a fixed value; byte-for-byte reproducible images need that in the app's config.

use serde::Serialize;

use super::node::{self, NodeDeps};
use super::{Notes, Provider, Reason, SourceTree, Stack, StackPlan};

/// Config file names Next.js reads, in its order.
pub const CONFIG_FILES: &[&str] = &[
    "next.config.js",
    "next.config.mjs",
    "next.config.cjs",
    "next.config.ts",
    "next.config.mts",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextPlan {
    /// The base image (the toolchain release the project asks for, else the default).
    pub image: String,
    pub deps: NodeDeps,
    /// `output: "standalone"` is set: ship `.next/standalone` and run `node server.js`.
    pub standalone: bool,
    /// `package.json` has a `build` script (else `next build` is run).
    pub build_script: bool,
    /// The `next.config.*` file, copied into a non-standalone production stage.
    pub config_file: Option<String>,
}

pub struct NextJs;

impl Provider for NextJs {
    fn stack(&self) -> Stack {
        Stack::Nextjs
    }

    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>> {
        let Some(pkg) = node::package_json(tree)? else {
            return Ok(None);
        };
        Ok(node::has_dep(&pkg, "next")
            .then(|| Reason::new("package.json", "depends on `next`: a Next.js app")))
    }

    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan> {
        let pkg = node::require_package_json(tree)?;
        if !node::has_dep(&pkg, "next") {
            notes.warn(format!(
                "{} does not list `next` as a dependency",
                tree.show("package.json")
            ));
        }
        let deps = node::deps(tree, &pkg, notes)?;
        let build_script = node::script(&pkg, "build").is_some();
        if !build_script {
            notes.because("package.json", "no `build` script: running `next build`");
        }
        let config_file = tree.first_file(CONFIG_FILES).map(str::to_string);
        let standalone = match tree.first_file(CONFIG_FILES) {
            Some(file) => {
                let text = tree.read(file)?;
                let standalone = sets_standalone(&text);
                if standalone {
                    notes.because(
                        file,
                        "sets `output: \"standalone\"`: production holds the traced server only",
                    );
                } else {
                    notes.because(file, "no `output: \"standalone\"`: production runs `next start` with production node_modules");
                }
                standalone
            }
            None => {
                notes.because(
                    "package.json",
                    "no next.config.*: production runs `next start` with production node_modules",
                );
                false
            }
        };
        if !standalone {
            notes.warn(format!(
                "{}: set `output: \"standalone\"` in next.config for a much smaller image",
                tree.label().display()
            ));
        }
        let image = super::toolchain::node(tree, &pkg, notes)?;
        Ok(StackPlan::Nextjs(NextPlan {
            image,
            deps,
            standalone,
            build_script,
            config_file,
        }))
    }
}

/// Whether a next.config sets `output: "standalone"` (outside comments).
pub fn sets_standalone(text: &str) -> bool {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .any(|l| {
            let compact: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            [
                "output:\"standalone\"",
                "output:'standalone'",
                "output:`standalone`",
            ]
            .iter()
            .any(|p| compact.contains(p))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_output_is_found_outside_comments() {
        assert!(sets_standalone(
            "const c = {\n  output: \"standalone\",\n};"
        ));
        assert!(sets_standalone("module.exports = { output:'standalone' }"));
        assert!(!sets_standalone(
            "// output: \"standalone\",\nexport default {}"
        ));
        assert!(!sets_standalone("export default { output: \"export\" }"));
    }
}
