//! Node.js apps: a `package.json` with a `start` script; a `build` script and TypeScript
//! when present. Also the parts every Node-based stack shares (Next.js uses them): reading
//! `package.json` and choosing the package manager from the lockfile.

use serde::Serialize;
use serde_json::Value;

use super::{Notes, Provider, Reason, SourceTree, Stack, StackPlan};

/// Pinned versions of the package managers that are installed into the `deps` stage when
/// `package.json` has no `packageManager` field naming one.
pub const PNPM_9: &str = "9.15.9";
pub const PNPM_8: &str = "8.15.9";
pub const YARN_CLASSIC: &str = "1.22.22";
pub const YARN_BERRY: &str = "4.18.1";

/// The package manager and the lockfile that chose it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum PackageManager {
    Npm,
    Pnpm {
        version: String,
    },
    /// Yarn 1.
    Yarn {
        version: String,
    },
    /// Yarn 2+ (with the `node-modules` linker).
    YarnBerry {
        version: String,
    },
}

impl PackageManager {
    pub fn name(&self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm { .. } => "pnpm",
            PackageManager::Yarn { .. } | PackageManager::YarnBerry { .. } => "yarn",
        }
    }
}

/// How dependencies are installed: shared by the Node and Next.js plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDeps {
    pub package_manager: PackageManager,
    /// Files copied before `install`, so a source edit reuses the dependency layer.
    pub manifests: Vec<String>,
}

/// How a Node app is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "argv", rename_all = "lowercase")]
pub enum Start {
    /// `node ARGS...`, taken from a simple `start` script: run directly as PID 1's child.
    Node(Vec<String>),
    /// Anything else: `npm start`.
    Script,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    /// The base image (the toolchain release the project asks for, else the default).
    pub image: String,
    pub deps: NodeDeps,
    /// `package.json` has a `build` script.
    pub build_script: bool,
    pub typescript: bool,
    /// The compiled output directory (TypeScript `outDir`), when known: production then
    /// holds only it, `package.json` and the production `node_modules`.
    pub out_dir: Option<String>,
    pub start: Start,
}

pub struct Node;

impl Provider for Node {
    fn stack(&self) -> Stack {
        Stack::Node
    }

    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>> {
        let Some(pkg) = package_json(tree)? else {
            return Ok(None);
        };
        if script(&pkg, "start").is_some() {
            return Ok(Some(Reason::new(
                "package.json",
                "has a `start` script: a Node app",
            )));
        }
        Ok(None)
    }

    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan> {
        let pkg = require_package_json(tree)?;
        let deps = deps(tree, &pkg, notes)?;
        let Some(start) = script(&pkg, "start") else {
            return Err(tree
                .fail(
                    "package.json",
                    "has no `start` script: slipway runs a Node app with it",
                )
                .hint("add `\"scripts\": { \"start\": \"node server.js\" }` to package.json")
                .into());
        };
        let build_script = script(&pkg, "build").is_some();
        if build_script {
            notes.because(
                "package.json",
                "has a `build` script: run in the build stage",
            );
        }
        let typescript = tree.is_file("tsconfig.json") || has_dep(&pkg, "typescript");
        let mut out_dir = None;
        if typescript {
            let file = if tree.is_file("tsconfig.json") {
                "tsconfig.json"
            } else {
                "package.json"
            };
            notes.because(file, "TypeScript");
            if tree.is_file("tsconfig.json") {
                out_dir = ts_out_dir(&tree.read("tsconfig.json")?);
                if let Some(dir) = &out_dir {
                    notes.because(
                        "tsconfig.json",
                        format!("compilerOptions.outDir `{dir}`: production holds only it"),
                    );
                }
            }
            if !build_script {
                notes.warn(format!(
                    "{} has TypeScript but no `build` script: nothing compiles it in the image",
                    tree.show("package.json")
                ));
            }
        }
        let start = match node_argv(start) {
            Some(argv) => {
                notes.because(
                    "package.json",
                    format!("`start` is `{start}`: run as `node` directly"),
                );
                Start::Node(argv)
            }
            None => {
                notes.because(
                    "package.json",
                    format!("`start` is `{start}`: run with `npm start`"),
                );
                Start::Script
            }
        };
        let image = super::toolchain::node(tree, &pkg, notes)?;
        Ok(StackPlan::Node(NodePlan {
            image,
            deps,
            build_script,
            typescript,
            out_dir,
            start,
        }))
    }
}

/// `package.json`, parsed, when it exists. Malformed JSON or a non-object is an error.
pub fn package_json(tree: &SourceTree) -> anyhow::Result<Option<Value>> {
    if !tree.is_file("package.json") {
        return Ok(None);
    }
    let v = tree.read_json("package.json")?;
    if !v.is_object() {
        return Err(tree
            .fail("package.json", "must be a JSON object")
            .hint("package.json holds one object with `name`, `scripts`, `dependencies`...")
            .into());
    }
    Ok(Some(v))
}

pub fn require_package_json(tree: &SourceTree) -> anyhow::Result<Value> {
    package_json(tree)?.ok_or_else(|| {
        tree.fail("package.json", "does not exist")
            .hint("a Node or Next.js component needs a package.json at the context's root")
            .into()
    })
}

/// A script's command line.
pub fn script<'a>(pkg: &'a Value, name: &str) -> Option<&'a str> {
    pkg.get("scripts")?.get(name)?.as_str()
}

/// Whether `name` is a dependency or dev dependency.
pub fn has_dep(pkg: &Value, name: &str) -> bool {
    ["dependencies", "devDependencies"]
        .iter()
        .any(|k| pkg.get(k).and_then(|d| d.get(name)).is_some())
}

/// Lockfiles and the package manager each means.
pub const LOCKFILES: &[(&str, &str)] = &[
    ("package-lock.json", "npm"),
    ("npm-shrinkwrap.json", "npm"),
    ("pnpm-lock.yaml", "pnpm"),
    ("yarn.lock", "yarn"),
];

/// The package manager (from the lockfile) and the files to copy before installing.
pub fn deps(tree: &SourceTree, pkg: &Value, notes: &mut Notes) -> anyhow::Result<NodeDeps> {
    let present: Vec<(&str, &str)> = LOCKFILES
        .iter()
        .copied()
        .filter(|(f, _)| tree.is_file(f))
        .collect();
    let managers: Vec<&str> = {
        let mut m: Vec<&str> = present.iter().map(|(_, pm)| *pm).collect();
        m.dedup();
        m
    };
    if managers.len() > 1 {
        let files: Vec<String> = present.iter().map(|(f, _)| tree.show(f)).collect();
        return Err(crate::error::Fail::usage(format!(
            "conflicting lockfiles in {}: {} (package managers {})",
            tree.label().display(),
            files.join(", "),
            managers.join(", ")
        ))
        .hint("keep the lockfile of the package manager you use and delete the others")
        .into());
    }
    let Some((lockfile, manager)) = present.first().copied() else {
        return Err(tree
            .fail(
                "package.json",
                "has no lockfile next to it (package-lock.json, pnpm-lock.yaml or yarn.lock): installs would not be reproducible",
            )
            .hint("run `npm install` (or pnpm/yarn) and commit the lockfile")
            .into());
    };
    // `packageManager: "pnpm@9.1.0+sha512..."` pins the version (corepack's field).
    let declared = pkg
        .get("packageManager")
        .and_then(Value::as_str)
        .and_then(|s| s.split_once('@'))
        .map(|(n, v)| (n.to_string(), v.split('+').next().unwrap_or(v).to_string()));
    let declared_version = |name: &str| -> Option<String> {
        declared
            .as_ref()
            .filter(|(n, v)| n == name && valid_version(v))
            .map(|(_, v)| v.clone())
    };
    if let Some((n, _)) = &declared {
        if n != manager {
            notes.warn(format!(
                "{} says packageManager `{n}` but the lockfile is {}: using {manager}",
                tree.show("package.json"),
                tree.show(lockfile)
            ));
        }
    }
    let mut manifests = vec!["package.json".to_string(), lockfile.to_string()];
    let package_manager = match manager {
        "npm" => PackageManager::Npm,
        "pnpm" => {
            let version = match declared_version("pnpm") {
                Some(v) => v,
                None => {
                    let lock = tree.read(lockfile)?;
                    if lock.starts_with("lockfileVersion: 5")
                        || lock.contains("lockfileVersion: '6")
                    {
                        PNPM_8.to_string()
                    } else {
                        PNPM_9.to_string()
                    }
                }
            };
            PackageManager::Pnpm { version }
        }
        _ => {
            let lock = tree.read(lockfile)?;
            let berry = lock.contains("__metadata:");
            if berry {
                let yarnrc = tree.read_opt(".yarnrc.yml")?.unwrap_or_default();
                let linker = yarnrc
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("nodeLinker:"))
                    .map(|v| v.trim().trim_matches(['"', '\'']).to_string());
                if linker.as_deref() != Some("node-modules") {
                    return Err(tree
                        .fail(
                            ".yarnrc.yml",
                            "Yarn Plug'n'Play (the default of Yarn 2+) is not supported: slipway's images ship node_modules",
                        )
                        .hint("add `nodeLinker: node-modules` to .yarnrc.yml and run `yarn install`")
                        .into());
                }
                manifests.push(".yarnrc.yml".to_string());
                PackageManager::YarnBerry {
                    version: declared_version("yarn")
                        .filter(|v| !v.starts_with("1."))
                        .unwrap_or_else(|| YARN_BERRY.to_string()),
                }
            } else {
                PackageManager::Yarn {
                    version: declared_version("yarn")
                        .filter(|v| v.starts_with("1."))
                        .unwrap_or_else(|| YARN_CLASSIC.to_string()),
                }
            }
        }
    };
    for extra in [".npmrc", "pnpm-workspace.yaml", ".yarnrc"] {
        if tree.is_file(extra) {
            manifests.push(extra.to_string());
        }
    }
    if matches!(package_manager, PackageManager::YarnBerry { .. }) {
        // A committed Yarn release (`yarnPath` in .yarnrc.yml) is what `yarn` runs.
        for f in tree.list(".yarn/releases")? {
            manifests.push(format!(".yarn/releases/{f}"));
        }
    }
    let version_note = match &package_manager {
        PackageManager::Npm => String::new(),
        PackageManager::Pnpm { version }
        | PackageManager::Yarn { version }
        | PackageManager::YarnBerry { version } => format!(" {version}"),
    };
    notes.because(
        lockfile,
        format!("{}{version_note}", package_manager.name()),
    );
    Ok(NodeDeps {
        package_manager,
        manifests,
    })
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
}

/// `node server.js --flag` as argv, when the script is that simple (no shell syntax).
pub fn node_argv(script: &str) -> Option<Vec<String>> {
    if script.contains(|c: char| "&|;<>$`'\"()*?\\".contains(c)) {
        return None;
    }
    let words: Vec<String> = script.split_whitespace().map(str::to_string).collect();
    (words.first().map(String::as_str) == Some("node") && words.len() >= 2).then_some(words)
}

/// `compilerOptions.outDir` from a tsconfig (JSON with comments and trailing commas).
pub fn ts_out_dir(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(&strip_jsonc(text)).ok()?;
    let dir = v.get("compilerOptions")?.get("outDir")?.as_str()?;
    let dir = dir.trim_start_matches("./").trim_end_matches('/');
    let plain = !dir.is_empty()
        && dir
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    plain.then(|| dir.to_string())
}

/// Removes `//` and `/* */` comments and trailing commas, outside strings.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            (',', _) => {
                // Drop the comma when the next non-space is a closing bracket.
                let rest: String = chars.clone().collect();
                let next = rest.trim_start().chars().next();
                if !matches!(next, Some('}') | Some(']')) {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_start_scripts_run_node_directly() {
        assert_eq!(
            node_argv("node dist/index.js --port 3000"),
            Some(vec![
                "node".into(),
                "dist/index.js".into(),
                "--port".into(),
                "3000".into()
            ])
        );
        assert_eq!(node_argv("NODE_ENV=x node a.js"), None);
        assert_eq!(node_argv("node a.js && echo"), None);
        assert_eq!(node_argv("ts-node src/index.ts"), None);
    }

    #[test]
    fn tsconfig_with_comments() {
        let text = "{\n // comment\n \"compilerOptions\": { /* x */ \"outDir\": \"./dist/\", \"rootDir\": \"src\", },\n}";
        assert_eq!(ts_out_dir(text).as_deref(), Some("dist"));
        assert_eq!(
            ts_out_dir("{\"compilerOptions\":{\"outDir\":\"../x\"}}"),
            None
        );
        assert_eq!(
            ts_out_dir("{\"compilerOptions\":{\"url\":\"http://x\"}}"),
            None
        );
    }
}
