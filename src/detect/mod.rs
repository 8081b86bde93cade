//! Detection: which stack a component's source tree holds, and the plan to containerize it.
//!
//! Each stack is a [`Provider`] in its own file; [`PROVIDERS`] lists them in the order they
//! are asked (Next.js before plain Node, because every Next.js app is also a Node app).
//! Adding a stack touches one new file and that list. Providers only read the tree through a
//! [`SourceTree`], which hands out paths relative to the context and puts the file's name into
//! every error, so a user is always told which file decided something or is wrong.
//!
//! Detection is pure: it reads files and returns plain data ([`Detection`]). Rendering the
//! Dockerfile from that data is [`crate::dockerfile`]'s job.

pub mod declared;
pub mod go;
pub mod nextjs;
pub mod node;
pub mod python;
pub mod rust;
pub mod toolchain;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component as PathComponent, Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::config::Config;
use crate::error::Fail;

/// The stacks slipway knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    Nextjs,
    Node,
    Python,
    Go,
    Rust,
}

impl Stack {
    pub const ALL: [Stack; 5] = [
        Stack::Nextjs,
        Stack::Node,
        Stack::Python,
        Stack::Go,
        Stack::Rust,
    ];

    /// The name used in `slipway.toml` (`stack = "..."`) and in generated headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Stack::Nextjs => "nextjs",
            Stack::Node => "node",
            Stack::Python => "python",
            Stack::Go => "go",
            Stack::Rust => "rust",
        }
    }

    /// The stack of a name as `slipway.toml` spells it.
    pub fn named(name: &str) -> Option<Stack> {
        Stack::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The port such apps listen on by convention (a default for `slipway init`).
    pub fn default_port(self) -> u16 {
        match self {
            Stack::Nextjs | Stack::Node => 3000,
            Stack::Python => 8000,
            Stack::Go | Stack::Rust => 8080,
        }
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fact that decided something, and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Path relative to the context.
    pub file: String,
    pub what: String,
}

impl Reason {
    pub fn new(file: impl Into<String>, what: impl Into<String>) -> Self {
        Reason {
            file: file.into(),
            what: what.into(),
        }
    }
}

/// What a provider found while planning: the reasons for each choice and anything that looks
/// wrong but does not stop generation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Notes {
    pub reasons: Vec<Reason>,
    pub warnings: Vec<String>,
}

impl Notes {
    pub fn because(&mut self, file: impl Into<String>, what: impl Into<String>) {
        self.reasons.push(Reason::new(file, what));
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}

/// The result of detection: the stack, how to build it, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub stack: Stack,
    pub plan: StackPlan,
    pub notes: Notes,
}

/// Everything the Dockerfile renderer needs to know about a stack's source tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "stack", rename_all = "lowercase")]
pub enum StackPlan {
    Nextjs(nextjs::NextPlan),
    Node(node::NodePlan),
    Python(python::PythonPlan),
    Go(go::GoPlan),
    Rust(rust::RustPlan),
}

impl StackPlan {
    pub fn stack(&self) -> Stack {
        match self {
            StackPlan::Nextjs(_) => Stack::Nextjs,
            StackPlan::Node(_) => Stack::Node,
            StackPlan::Python(_) => Stack::Python,
            StackPlan::Go(_) => Stack::Go,
            StackPlan::Rust(_) => Stack::Rust,
        }
    }
}

/// A stack: whether a tree holds it, and the plan to build it.
pub trait Provider: Sync {
    fn stack(&self) -> Stack;

    /// Whether this tree holds this stack, and the file that says so. Errors are for trees
    /// that look like this stack but are broken (a malformed manifest, conflicting lockfiles).
    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>>;

    /// The plan for this tree. Called after [`Provider::detect`] said yes, or when the
    /// configuration names the stack; it must then explain what is missing.
    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan>;
}

/// Every provider, in the order they are asked.
pub static PROVIDERS: &[&dyn Provider] = &[
    &nextjs::NextJs,
    &node::Node,
    &python::Python,
    &go::Go,
    &rust::Rust,
];

/// Each component's stack, detected once per run and handed to every step that asks (the build
/// plan shows it; the manifests give a Next.js app its cache directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stacks(BTreeMap<String, Option<Stack>>);

impl Stacks {
    /// The stacks of every component of `config`: those in `known` (detected already, e.g. to
    /// generate the Dockerfile), the others detected now. A component whose tree cannot be
    /// detected has the stack `slipway.toml` names, if it is one slipway knows.
    pub fn of(config: &Config, mut known: BTreeMap<String, Stack>) -> Stacks {
        let stacks = config
            .components
            .values()
            .map(|c| {
                let stack = known.remove(&c.name).or_else(|| {
                    let tree = SourceTree::new(config.context_dir(c), &c.context);
                    match detect(&tree, c.stack.as_deref()) {
                        Ok(d) => Some(d.stack),
                        Err(_) => c.stack.as_deref().and_then(Stack::named),
                    }
                });
                (c.name.clone(), stack)
            })
            .collect();
        Stacks(stacks)
    }

    /// Every component's stack, detected now.
    pub fn detect(config: &Config) -> Stacks {
        Stacks::of(config, BTreeMap::new())
    }

    /// The stack of `component`, when it has one slipway knows.
    pub fn get(&self, component: &str) -> Option<Stack> {
        self.0.get(component).copied().flatten()
    }
}

/// The provider of a stack named in `slipway.toml`.
pub fn provider(name: &str) -> anyhow::Result<&'static dyn Provider> {
    if let Some(p) = PROVIDERS.iter().find(|p| p.stack().as_str() == name) {
        return Ok(*p);
    }
    let names: Vec<&str> = Stack::ALL.iter().map(|s| s.as_str()).collect();
    let mut fail = Fail::usage(format!(
        "unknown stack `{name}`: slipway knows {}",
        names.join(", ")
    ));
    fail = match crate::config::did_you_mean(name, &names) {
        Some(s) => fail.hint(format!("did you mean `{s}`?")),
        None => {
            fail.hint("remove `stack` to detect it, or point `dockerfile` at your own Dockerfile")
        }
    };
    Err(fail.into())
}

/// Detects the stack of a tree (or takes the one `stack` names) and plans it.
pub fn detect(tree: &SourceTree, stack: Option<&str>) -> anyhow::Result<Detection> {
    if let Some(name) = stack {
        let p = provider(name)?;
        let mut notes = Notes::default();
        notes.because("slipway.toml", format!("`stack = \"{name}\"` is set"));
        let plan = p
            .plan(tree, &mut notes)
            .with_context(|| format!("planning {} as stack {name}", tree.label().display()))?;
        return Ok(Detection {
            stack: p.stack(),
            plan,
            notes,
        });
    }
    if tree.is_empty()? {
        return Err(Fail::usage(format!(
            "{} is empty: there is nothing to detect",
            tree.label().display()
        ))
        .hint("put the component's source there, or remove it from the list")
        .into());
    }
    let mut found: Option<(&dyn Provider, Reason)> = None;
    let mut also = Vec::new();
    for p in PROVIDERS {
        if let Some(reason) = p.detect(tree)? {
            match &found {
                None => found = Some((*p, reason)),
                // Next.js apps are Node apps too: that is no ambiguity.
                Some((first, _)) if first.stack() == Stack::Nextjs && p.stack() == Stack::Node => {}
                Some(_) => also.push((p.stack(), reason)),
            }
        }
    }
    let Some((p, reason)) = found else {
        return Err(Fail::usage(format!(
            "no known stack in {}: found no package.json with next or a start script, requirements.txt, pyproject.toml, go.mod or Cargo.toml",
            tree.label().display()
        ))
        .hint(format!(
            "set `stack` to one of {} in slipway.toml, or point `dockerfile` at your own Dockerfile",
            Stack::ALL.map(|s| s.as_str()).join(", ")
        ))
        .into());
    };
    let mut notes = Notes::default();
    notes.reasons.push(reason);
    for (stack, r) in also {
        notes.warn(format!(
            "{} also looks like {stack} ({}: {}); set `stack` in slipway.toml to choose",
            tree.label().display(),
            r.file,
            r.what
        ));
    }
    let plan = p.plan(tree, &mut notes)?;
    Ok(Detection {
        stack: p.stack(),
        plan,
        notes,
    })
}

/// Directories a walk of the tree never enters: dependencies, build output, VCS, caches.
const SKIP_DIRS: &[&str] = &[
    ".git",
    "node_modules",
    ".next",
    ".venv",
    "venv",
    "__pycache__",
    "target",
    "dist",
    "build",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
];

/// A read-only view of a component's source tree.
///
/// Paths going in and out are relative to the context root, `/`-separated. Every error names
/// the file as the user knows it (`label/relative`), e.g. `contexts/web/package.json`.
#[derive(Debug, Clone)]
pub struct SourceTree {
    root: PathBuf,
    label: PathBuf,
}

impl SourceTree {
    /// `root` is where the files are; `label` is how to name it to the user (usually the
    /// context as written in `slipway.toml`).
    pub fn new(root: impl Into<PathBuf>, label: impl Into<PathBuf>) -> Self {
        SourceTree {
            root: root.into(),
            label: label.into(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn label(&self) -> &Path {
        &self.label
    }

    /// How a relative path is shown to the user.
    pub fn show(&self, rel: &str) -> String {
        if self.label.as_os_str().is_empty() || self.label == Path::new(".") {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.label.display())
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        debug_assert!(
            Path::new(rel)
                .components()
                .all(|c| matches!(c, PathComponent::Normal(_))),
            "not a plain relative path: {rel}"
        );
        self.root.join(rel)
    }

    pub fn is_file(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    pub fn is_dir(&self, rel: &str) -> bool {
        self.path(rel).is_dir()
    }

    /// The first of `names` that is a file.
    pub fn first_file<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.is_file(n))
    }

    /// True when the root holds nothing (or is not a directory, which is an error).
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        if !self.root.is_dir() {
            return Err(Fail::usage(format!(
                "{} is not a directory",
                self.label.display()
            ))
            .hint("check the path (relative paths in slipway.toml are relative to its directory)")
            .into());
        }
        let mut entries = std::fs::read_dir(&self.root)
            .with_context(|| format!("listing {}", self.label.display()))?;
        Ok(entries.next().is_none())
    }

    /// A file's text.
    pub fn read(&self, rel: &str) -> anyhow::Result<String> {
        std::fs::read_to_string(self.path(rel))
            .with_context(|| format!("reading {}", self.show(rel)))
    }

    /// A file's text, or `None` when it does not exist.
    pub fn read_opt(&self, rel: &str) -> anyhow::Result<Option<String>> {
        if self.is_file(rel) {
            self.read(rel).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A JSON file; malformed JSON is a usage error naming the file, line and column.
    pub fn read_json(&self, rel: &str) -> anyhow::Result<serde_json::Value> {
        let text = self.read(rel)?;
        serde_json::from_str(&text).map_err(|e| {
            Fail::usage(format!(
                "{}:{}:{}: not valid JSON: {e}",
                self.show(rel),
                e.line(),
                e.column()
            ))
            .hint(format!("fix {} (it must parse as JSON)", self.show(rel)))
            .into()
        })
    }

    /// A TOML file; malformed TOML is a usage error naming the file and line.
    pub fn read_toml(&self, rel: &str) -> anyhow::Result<toml::Table> {
        let text = self.read(rel)?;
        text.parse::<toml::Table>().map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            Fail::usage(format!(
                "{}:{line}: not valid TOML: {}",
                self.show(rel),
                e.message().trim()
            ))
            .hint(format!("fix {} (it must parse as TOML)", self.show(rel)))
            .into()
        })
    }

    /// Names in a directory (files and directories), sorted; empty when it does not exist.
    pub fn list(&self, rel_dir: &str) -> anyhow::Result<Vec<String>> {
        let dir = if rel_dir.is_empty() || rel_dir == "." {
            self.root.clone()
        } else {
            self.path(rel_dir)
        };
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", self.show(rel_dir)))?
        {
            let entry = entry.with_context(|| format!("listing {}", self.show(rel_dir)))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Files with extension `ext` down to `max_depth` directories, shallowest first then by
    /// path, skipping dependency, build and hidden directories.
    pub fn files_with_ext(&self, ext: &str, max_depth: usize) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = vec![(String::new(), 0usize)];
        while let Some((dir, depth)) = dirs.pop() {
            for name in self.list(&dir)? {
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let path = self.path(&rel);
                if path.is_dir() {
                    if depth < max_depth
                        && !name.starts_with('.')
                        && !SKIP_DIRS.contains(&name.as_str())
                    {
                        dirs.push((rel, depth + 1));
                    }
                } else if name.ends_with(&format!(".{ext}")) {
                    out.push(rel);
                }
            }
        }
        out.sort_by(|a, b| {
            a.matches('/')
                .count()
                .cmp(&b.matches('/').count())
                .then(a.cmp(b))
        });
        Ok(out)
    }

    /// A usage error about one file.
    pub fn fail(&self, rel: &str, message: impl fmt::Display) -> Fail {
        Fail::usage(format!("{}: {message}", self.show(rel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(files: &[(&str, &str)]) -> (tempfile::TempDir, SourceTree) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let tree = SourceTree::new(dir.path(), "ctx");
        (dir, tree)
    }

    #[test]
    fn errors_name_the_file() {
        let (_d, tree) = tree_with(&[("package.json", "{ \"name\": ")]);
        let err = tree.read_json("package.json").unwrap_err();
        assert!(err.to_string().starts_with("ctx/package.json:1:"), "{err}");
        let err = tree.read("missing.txt").unwrap_err();
        assert_eq!(err.to_string(), "reading ctx/missing.txt");
    }

    #[test]
    fn walks_shallow_first_and_skips_dependencies() {
        let (_d, tree) = tree_with(&[
            ("a/b/deep.py", ""),
            ("main.py", ""),
            ("a/mid.py", ""),
            ("node_modules/x.py", ""),
            (".venv/y.py", ""),
        ]);
        assert_eq!(
            tree.files_with_ext("py", 3).unwrap(),
            ["main.py", "a/mid.py", "a/b/deep.py"]
        );
    }

    #[test]
    fn unknown_stack_name_suggests() {
        let err = provider("pyhton").err().unwrap();
        let (_, hint) = crate::error::exit_and_hint(&err);
        assert_eq!(hint.as_deref(), Some("did you mean `python`?"));
    }
}
