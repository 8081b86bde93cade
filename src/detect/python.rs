//! Python apps: requirements files, or `pyproject.toml` with `uv.lock` or `poetry.lock`.
//! ASGI apps (FastAPI, Starlette, Litestar, Quart) are served by uvicorn, WSGI apps (Flask,
//! Django) by gunicorn; the app object is found by reading the source, and the file that
//! holds it is named.
//!
//! Installs are lockfile-exact: hash-checked when the requirements carry hashes, `--no-deps`
//! (followed by `pip check`) when every requirement is pinned, `uv sync --frozen` for uv, and a
//! hash-pinned export installed with pip for Poetry (`poetry install` needs PyPI's JSON API,
//! which some networks do not serve).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Notes, Provider, Reason, SourceTree, Stack, StackPlan};

/// Pinned tool versions installed into the `deps` stage only (never shipped).
pub const UV_VERSION: &str = "0.13.9";
pub const POETRY_VERSION: &str = "2.5.1";
pub const POETRY_EXPORT_VERSION: &str = "1.10.1";

/// Requirements files tried, in order.
pub const REQUIREMENTS: &[&str] = &[
    "requirements.txt",
    "requirements/prod.txt",
    "requirements/production.txt",
    "requirements/base.txt",
];

/// Files whose presence makes a tree a Python project.
const MARKERS: &[&str] = &[
    "requirements.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "Pipfile",
    "setup.py",
    "manage.py",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Installer {
    /// `pip install -r FILE`.
    Requirements {
        file: String,
        /// The file and every file it includes (`-r`, `-c`), copied before sources.
        files: Vec<String>,
        /// Every requirement carries `--hash`: install with `--require-hashes`.
        hashes: bool,
        /// Every requirement is pinned with `==`: install with `--no-deps`, then `pip check`.
        pinned: bool,
    },
    /// `uv sync --frozen` from `uv.lock`.
    Uv { files: Vec<String> },
    /// `poetry export` of `poetry.lock`, installed with pip.
    Poetry { files: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Server {
    /// `uvicorn MODULE:OBJECT`.
    Uvicorn {
        app: String,
        /// `--app-dir` for a `src/` layout.
        app_dir: Option<String>,
    },
    /// `gunicorn MODULE:OBJECT`.
    Gunicorn {
        app: String,
        /// `--chdir` for a `src/` layout.
        chdir: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonPlan {
    /// The base image (the toolchain release the project asks for, else the default).
    pub image: String,
    pub installer: Installer,
    pub server: Server,
}

pub struct Python;

impl Provider for Python {
    fn stack(&self) -> Stack {
        Stack::Python
    }

    fn detect(&self, tree: &SourceTree) -> anyhow::Result<Option<Reason>> {
        Ok(tree
            .first_file(MARKERS)
            .map(|f| Reason::new(f, "a Python project")))
    }

    fn plan(&self, tree: &SourceTree, notes: &mut Notes) -> anyhow::Result<StackPlan> {
        let (installer, deps) = installer(tree, notes)?;
        let server = server(tree, &deps, notes)?;
        let pyproject = match tree.is_file("pyproject.toml") {
            true => Some(tree.read_toml("pyproject.toml")?),
            false => None,
        };
        let image = super::toolchain::python(tree, pyproject.as_ref(), notes)?;
        Ok(StackPlan::Python(PythonPlan {
            installer,
            server,
            image,
        }))
    }
}

/// The installer and the (normalized) names of the project's dependencies.
fn installer(
    tree: &SourceTree,
    notes: &mut Notes,
) -> anyhow::Result<(Installer, BTreeSet<String>)> {
    let pyproject = if tree.is_file("pyproject.toml") {
        Some(tree.read_toml("pyproject.toml")?)
    } else {
        None
    };
    let uv = tree.is_file("uv.lock");
    let poetry = tree.is_file("poetry.lock");
    if uv && poetry {
        return Err(crate::error::Fail::usage(format!(
            "conflicting lockfiles in {}: {} and {}",
            tree.label().display(),
            tree.show("uv.lock"),
            tree.show("poetry.lock")
        ))
        .hint("keep the lockfile of the tool you use and delete the other")
        .into());
    }
    if (uv || poetry) && pyproject.is_none() {
        let lock = if uv { "uv.lock" } else { "poetry.lock" };
        return Err(tree
            .fail(lock, "has no pyproject.toml next to it")
            .hint("commit pyproject.toml with the lockfile")
            .into());
    }
    let requirements = tree.first_file(REQUIREMENTS);
    if uv || poetry {
        let lock = if uv { "uv.lock" } else { "poetry.lock" };
        if let Some(r) = requirements {
            notes.warn(format!(
                "{} is ignored: {} decides the dependencies",
                tree.show(r),
                tree.show(lock)
            ));
        }
        let mut files = vec!["pyproject.toml".to_string(), lock.to_string()];
        if uv && tree.is_file(".python-version") {
            files.push(".python-version".to_string());
        }
        let deps = lock_names(&tree.read(lock)?);
        let installer = if uv {
            notes.because(
                "uv.lock",
                format!("uv {UV_VERSION}: `uv sync --frozen --no-dev`"),
            );
            Installer::Uv { files }
        } else {
            notes.because(
                "poetry.lock",
                "Poetry: exported with poetry-plugin-export, installed with pip --require-hashes",
            );
            Installer::Poetry { files }
        };
        return Ok((installer, deps));
    }
    if let Some(file) = requirements {
        let mut files = Vec::new();
        let mut reqs = Vec::new();
        read_requirements(tree, file, &mut files, &mut reqs)?;
        let hashes = !reqs.is_empty() && reqs.iter().all(|r| r.hashed);
        let pinned = !reqs.is_empty() && reqs.iter().all(|r| r.pinned);
        let how = if hashes {
            "every requirement has a hash: pip install --require-hashes"
        } else if pinned {
            "every requirement is pinned: pip install --no-deps, then pip check"
        } else {
            "not every requirement is pinned with ==: pip resolves the rest"
        };
        notes.because(file, how);
        if !pinned {
            notes.warn(format!(
                "{}: not every requirement is pinned with `==`, so builds may install different versions over time (pip-compile or `pip freeze` gives a full pin)",
                tree.show(file)
            ));
        }
        let deps = reqs.into_iter().map(|r| r.name).collect();
        return Ok((
            Installer::Requirements {
                file: file.to_string(),
                files,
                hashes,
                pinned,
            },
            deps,
        ));
    }
    if let Some(pp) = &pyproject {
        let tool = if pp.get("tool").and_then(|t| t.get("poetry")).is_some() {
            "run `poetry lock` and commit poetry.lock"
        } else {
            "run `uv lock` and commit uv.lock (or write a pinned requirements.txt)"
        };
        return Err(tree
            .fail("pyproject.toml", "has no lockfile next to it (uv.lock or poetry.lock) and there is no requirements.txt: installs would not be reproducible")
            .hint(tool)
            .into());
    }
    let found = tree.first_file(MARKERS).unwrap_or("setup.py");
    Err(tree
        .fail(
            found,
            "slipway installs Python dependencies from requirements.txt, uv.lock or poetry.lock, and none is here",
        )
        .hint("write a pinned requirements.txt (`pip freeze > requirements.txt`)")
        .into())
}

struct Requirement {
    name: String,
    pinned: bool,
    hashed: bool,
}

/// Reads a requirements file and the files it includes.
fn read_requirements(
    tree: &SourceTree,
    file: &str,
    files: &mut Vec<String>,
    reqs: &mut Vec<Requirement>,
) -> anyhow::Result<()> {
    if files.iter().any(|f| f == file) {
        return Ok(());
    }
    files.push(file.to_string());
    let text = tree.read(file)?;
    let dir = file.rsplit_once('/').map(|(d, _)| d);
    for (n, line) in logical_lines(&text) {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let included = [
            "-r ",
            "--requirement ",
            "-c ",
            "--constraint ",
            "--requirement=",
            "--constraint=",
            "-r",
            "-c",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p).map(str::trim));
        if let Some(inc) = included.filter(|_| line.starts_with('-') && !line.starts_with("--hash"))
        {
            let joined = match dir {
                Some(d) => format!("{d}/{inc}"),
                None => inc.to_string(),
            };
            let normal = normalize_path(&joined).ok_or_else(|| {
                tree.fail(
                    file,
                    format!("line {n}: includes `{inc}`, outside the build context"),
                )
                .hint("keep included requirement files inside the context")
            })?;
            if !tree.is_file(&normal) {
                return Err(tree
                    .fail(
                        file,
                        format!("line {n}: includes `{inc}`, which does not exist"),
                    )
                    .into());
            }
            if line.starts_with("-c") || line.starts_with("--constraint") {
                // Constraints are copied, but name no requirement.
                let mut ignored = Vec::new();
                read_requirements(tree, &normal, files, &mut ignored)?;
            } else {
                read_requirements(tree, &normal, files, reqs)?;
            }
            continue;
        }
        if line.starts_with("-e")
            || line.starts_with("--editable")
            || line.starts_with('.')
            || line.starts_with('/')
            || line.starts_with("file:")
        {
            return Err(tree
                .fail(file, format!("line {n}: `{line}` installs local source, which is not there before the sources are copied"))
                .hint("list only published packages in the requirements file; the app's own code is copied into the image as source")
                .into());
        }
        if line.starts_with('-') {
            // Options such as --index-url, --extra-index-url, --find-links.
            continue;
        }
        let spec = line.split(" --hash").next().unwrap_or(line);
        let name: String = spec
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
            .collect();
        if name.is_empty() {
            continue;
        }
        let pinned = (spec.contains("==") && !spec.contains('*')) || spec.contains(" @ ");
        reqs.push(Requirement {
            name: normalize_name(&name),
            pinned,
            hashed: line.contains("--hash="),
        });
    }
    Ok(())
}

/// Lines with `\` continuations joined, numbered from 1 by their first line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        if cur.is_empty() {
            start = i + 1;
        }
        match raw.trim_end().strip_suffix('\\') {
            Some(body) => {
                cur.push_str(body);
                cur.push(' ');
            }
            None => {
                cur.push_str(raw);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    if !cur.is_empty() {
        out.push((start, cur));
    }
    out
}

/// `a/../b` → `b`; `None` when it leaves the root.
fn normalize_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            x => parts.push(x),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// PEP 503 normalization: lowercase, runs of `-_.` become `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Package names in a uv.lock or poetry.lock (`name = "..."` in `[[package]]`).
fn lock_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_package = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[[package]]";
            continue;
        }
        if in_package {
            if let Some(v) = t.strip_prefix("name = ") {
                names.insert(normalize_name(v.trim_matches('"')));
            }
        }
    }
    names
}

const ASGI: &[(&str, &str)] = &[
    ("fastapi", "FastAPI"),
    ("starlette", "Starlette"),
    ("litestar", "Litestar"),
    ("quart", "Quart"),
];
const WSGI: &[(&str, &str)] = &[("flask", "Flask")];

/// How the app is served: which object, and by which server.
fn server(tree: &SourceTree, deps: &BTreeSet<String>, notes: &mut Notes) -> anyhow::Result<Server> {
    // Django: manage.py plus PROJECT/wsgi.py.
    if tree.is_file("manage.py") || deps.contains("django") {
        for dir in tree.list("")? {
            let wsgi = format!("{dir}/wsgi.py");
            if tree.is_file(&wsgi) && tree.read(&wsgi)?.contains("get_wsgi_application") {
                notes.because(
                    &wsgi,
                    format!("Django WSGI application `{dir}.wsgi:application`"),
                );
                require(tree, deps, "gunicorn", "Django")?;
                notes.because(&wsgi, "served by gunicorn");
                return Ok(Server::Gunicorn {
                    app: format!("{dir}.wsgi:application"),
                    chdir: None,
                });
            }
        }
        if deps.contains("django") {
            return Err(crate::error::Fail::usage(format!(
                "{} uses Django but has no PROJECT/wsgi.py with get_wsgi_application()",
                tree.label().display()
            ))
            .hint("slipway serves Django through PROJECT/wsgi.py with gunicorn")
            .into());
        }
    }
    let framework_deps: Vec<&str> = ASGI
        .iter()
        .chain(WSGI)
        .map(|(d, _)| *d)
        .filter(|d| deps.contains(*d))
        .collect();
    let files: Vec<String> = tree
        .files_with_ext("py", 3)?
        .into_iter()
        .filter(|f| !is_test_file(f))
        .collect();
    let mut best: Option<(u8, String, String, bool)> = None; // (rank, file, object, asgi)
    for file in &files {
        let text = tree.read(file)?;
        for (object, callee) in module_assignments(&text) {
            let short = callee.rsplit('.').next().unwrap_or(&callee);
            let found = ASGI
                .iter()
                .map(|(_, c)| (c, true))
                .chain(WSGI.iter().map(|(_, c)| (c, false)))
                .find(|(c, _)| **c == short);
            let (rank, asgi) = match found {
                Some((_, asgi)) => (0, asgi),
                None => {
                    if !short.to_ascii_lowercase().contains("app") {
                        continue;
                    }
                    // A factory (`app = create_app()`): the framework the file imports,
                    // else the one among the dependencies.
                    let frameworks = || {
                        ASGI.iter()
                            .map(|(d, _)| (*d, true))
                            .chain(WSGI.iter().map(|(d, _)| (*d, false)))
                    };
                    let imported = frameworks().find(|(d, _)| {
                        text.contains(&format!("import {d}")) || text.contains(&format!("from {d}"))
                    });
                    let Some((_, asgi)) =
                        imported.or_else(|| frameworks().find(|(d, _)| framework_deps.contains(d)))
                    else {
                        continue;
                    };
                    (1, asgi)
                }
            };
            if best.as_ref().is_none_or(|b| rank < b.0) {
                best = Some((rank, file.clone(), object, asgi));
            }
        }
    }
    let Some((_, file, object, asgi)) = best else {
        let what = if framework_deps.is_empty() {
            "no ASGI or WSGI framework among the dependencies (fastapi, starlette, litestar, quart, flask, django)".to_string()
        } else {
            format!(
                "depends on {} but no module-level `app = ...` object was found in its .py files",
                framework_deps.join(", ")
            )
        };
        return Err(crate::error::Fail::usage(format!(
            "{}: cannot tell how to serve this Python app: {what}",
            tree.label().display()
        ))
        .hint("create the app object at module level, e.g. `app = FastAPI()` in main.py, or point `dockerfile` at your own Dockerfile")
        .into());
    };
    let (module, dir) = module_of(tree, &file);
    let target = format!("{module}:{object}");
    if asgi {
        notes.because(&file, format!("ASGI app `{target}`: served by uvicorn"));
        require(tree, deps, "uvicorn", "an ASGI app")?;
        Ok(Server::Uvicorn {
            app: target,
            app_dir: dir,
        })
    } else {
        notes.because(&file, format!("WSGI app `{target}`: served by gunicorn"));
        require(tree, deps, "gunicorn", "a WSGI app")?;
        Ok(Server::Gunicorn {
            app: target,
            chdir: dir,
        })
    }
}

fn require(
    tree: &SourceTree,
    deps: &BTreeSet<String>,
    server: &str,
    what: &str,
) -> anyhow::Result<()> {
    if deps.contains(server) {
        return Ok(());
    }
    Err(crate::error::Fail::usage(format!(
        "{} is {what}, served by {server}, but {server} is not among its pinned dependencies",
        tree.label().display()
    ))
    .hint(format!(
        "add a pinned `{server}` to the requirements or lockfile"
    ))
    .into())
}

fn is_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    rel.split('/').any(|p| p == "tests" || p == "test")
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name == "conftest.py"
        || name == "setup.py"
}

/// Module-level `NAME = CALLEE(` assignments (`NAME: T = CALLEE(` too).
fn module_assignments(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some((lhs, rhs)) = line.split_once('=') else {
            continue;
        };
        let name = lhs.split(':').next().unwrap_or("").trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
            || rhs.starts_with('=')
        {
            continue;
        }
        let rhs = rhs.trim();
        let Some(callee) = rhs.split_once('(').map(|(c, _)| c.trim()) else {
            continue;
        };
        if !callee.is_empty()
            && callee
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            out.push((name.to_string(), callee.to_string()));
        }
    }
    out
}

/// `app/main.py` → (`app.main`, None); `src/pkg/main.py` → (`pkg.main`, Some("src")) when
/// `src` is not itself a package.
fn module_of(tree: &SourceTree, file: &str) -> (String, Option<String>) {
    let stem = file.trim_end_matches(".py");
    let stem = stem.strip_suffix("/__init__").unwrap_or(stem);
    if let Some(rest) = stem.strip_prefix("src/") {
        if !tree.is_file("src/__init__.py") {
            return (rest.replace('/', "."), Some("src".to_string()));
        }
    }
    (stem.replace('/', "."), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_module_level_assignments_only() {
        let src = "from fastapi import FastAPI\n\ndef make():\n    app = FastAPI()\n\napp = create_app()\napi: FastAPI = FastAPI(title='x')\nif x == y(1):\n    pass\n";
        assert_eq!(
            module_assignments(src),
            [
                ("app".to_string(), "create_app".to_string()),
                ("api".to_string(), "FastAPI".to_string())
            ]
        );
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("Typing_Extensions"), "typing-extensions");
        assert_eq!(normalize_name("zope.interface"), "zope-interface");
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(
            normalize_path("req/../base.txt").as_deref(),
            Some("base.txt")
        );
        assert_eq!(normalize_path("../x.txt"), None);
    }
}
