//! `slipway init [DIR...]`: finds the components, detects each one's stack, writes
//! `slipway.toml` and says why it chose what it chose.
//!
//! Components are the directories given, or else the subdirectories of `contexts/`, `apps/`,
//! `services/` and `packages/`, or else (also when every one of those was skipped, as a
//! single app with an unrelated `packages/` folder) the current directory. A directory that was
//! named and cannot be detected is an error; one found by looking around that is empty or
//! holds no known stack is skipped with a warning (monorepos keep libraries there too). The
//! file is validated by the same code that later reads it, then written atomically; an
//! existing one is kept unless `--force`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::detect::declared::{self, Declared};
use crate::detect::{self, Detection, SourceTree, Stack, PROVIDERS};
use crate::error::{Exit, Fail};
use crate::report::{Event, Reporter};

/// Directories whose subdirectories are components.
pub const COMPONENT_PARENTS: &[&str] = &["contexts", "apps", "services", "packages"];

/// A component found by `init`.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    /// The context relative to the config's directory, `/`-separated.
    pub context: String,
    /// The plan, or what stops it: the file is written anyway, with TODO lines.
    pub detection: Result<Detection, Todo>,
    /// The stack, when known (planned, or recognised by a provider though not plannable).
    pub stack: Option<Stack>,
    pub port: u16,
    /// Where the port came from, when the code declares it (else the stack's convention).
    pub port_from: Option<Declared<u16>>,
    pub health: Option<Declared<String>>,
    pub readiness: Option<Declared<String>>,
    /// Environment variables the code reads, proposed as config, secrets or references.
    pub env: Vec<Declared<String>>,
}

/// What stops a component from being planned, and the fix when it is known.
#[derive(Debug, Clone)]
pub struct Todo {
    pub problem: String,
    pub hint: Option<String>,
}

impl Found {
    pub fn todo(&self) -> Option<&Todo> {
        self.detection.as_ref().err()
    }
}

/// A usage error (a missing lockfile, an unknown stack, a server that is not pinned...) as a
/// TODO; any other error stops init.
fn todo_of(err: anyhow::Error) -> anyhow::Result<Todo> {
    let (exit, hint) = crate::error::exit_and_hint(&err);
    if exit != Exit::Usage {
        return Err(err);
    }
    Ok(Todo {
        problem: format!("{err:#}"),
        hint,
    })
}

/// A DNS-1123 label made from a directory name.
pub fn component_name(dir: &str) -> String {
    let mut out = String::new();
    for c in dir.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut s = out.trim_matches('-').to_string();
    s.truncate(40);
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "app".to_string()
    } else {
        s
    }
}

/// Finds and detects the components under `root` (the config's directory).
pub fn discover(
    root: &Path,
    dirs: &[PathBuf],
    cwd: &Path,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Found>> {
    let root_abs = canonical(root)?;
    let mut candidates: Vec<(String, bool)> = Vec::new(); // (relative dir, named by the user)
    if dirs.is_empty() {
        for parent in COMPONENT_PARENTS {
            let p = root.join(parent);
            if !p.is_dir() {
                continue;
            }
            let mut subs: Vec<String> = std::fs::read_dir(&p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect();
            subs.sort();
            candidates.extend(subs.into_iter().map(|s| (format!("{parent}/{s}"), false)));
        }
        if candidates.is_empty() {
            candidates.push((".".to_string(), false));
        }
    } else {
        for d in dirs {
            let abs = cwd.join(d);
            if !abs.is_dir() {
                return Err(Fail::usage(format!("{} is not a directory", d.display()))
                    .hint("pass the directories that hold your components' sources")
                    .into());
            }
            let abs = canonical(&abs)?;
            let rel = abs.strip_prefix(&root_abs).map_err(|_| {
                Fail::usage(format!(
                    "{} is outside {}, where slipway.toml goes",
                    d.display(),
                    root.display()
                ))
                .hint("run `slipway init` from the directory that holds all components")
            })?;
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let rel = if rel.is_empty() { ".".to_string() } else { rel };
            candidates.push((rel, true));
        }
    }

    let looked_around = dirs.is_empty() && candidates.iter().all(|(rel, _)| rel != ".");
    let mut found = detect_candidates(root, &root_abs, candidates, reporter)?;
    if found.is_empty() && looked_around {
        // Every folder under contexts/, apps/, services/, packages/ was skipped: those hold
        // something else (libraries, docs), and the app is the directory itself.
        reporter.report(Event::Info {
            message: format!(
                "every directory under {} was skipped: using the current directory as the one component",
                COMPONENT_PARENTS.join("/, ") + "/"
            ),
        });
        found = detect_candidates(root, &root_abs, vec![(".".to_string(), false)], reporter)?;
    }
    if found.is_empty() {
        return Err(Fail::usage(
            "no components found: every candidate directory was empty or held no known stack",
        )
        .hint("pass the directories that hold your components: `slipway init DIR...`")
        .into());
    }
    Ok(found)
}

/// Detects each candidate (relative dir, named by the user); skips, with a warning, those found
/// by looking around that are empty or hold no known stack.
fn detect_candidates(
    root: &Path,
    root_abs: &Path,
    candidates: Vec<(String, bool)>,
    reporter: &dyn Reporter,
) -> anyhow::Result<Vec<Found>> {
    let mut found: Vec<Found> = Vec::new();
    for (rel, named) in candidates {
        let tree = SourceTree::new(root.join(&rel), &rel);
        // The stacks that recognise the tree; a malformed manifest is a TODO of that stack.
        let mut recognised = None;
        let mut broken = None;
        for p in PROVIDERS {
            match p.detect(&tree) {
                Ok(Some(_)) => {
                    recognised.get_or_insert(p.stack());
                }
                Ok(None) => {}
                Err(e) => {
                    broken.get_or_insert((p.stack(), e));
                }
            }
        }
        if !named && rel != "." && recognised.is_none() && broken.is_none() {
            // Looking around: skip what is clearly not a component.
            let why = if tree.is_empty()? {
                "empty"
            } else {
                "no known stack"
            };
            reporter.report(Event::Warn {
                message: format!("skipped {rel}: {why}"),
            });
            continue;
        }
        let detection = match broken {
            Some((stack, e)) => {
                recognised.get_or_insert(stack);
                Err(todo_of(e)?)
            }
            None => match detect::detect(&tree, None) {
                Ok(d) => Ok(d),
                Err(e) => Err(todo_of(e)?),
            },
        };
        let stack = detection.as_ref().ok().map(|d| d.stack).or(recognised);
        let base = if rel == "." {
            root_abs
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            rel.rsplit('/').next().unwrap_or(&rel).to_string()
        };
        let name = component_name(&base);
        if let Some(other) = found.iter().find(|f| f.name == name) {
            return Err(Fail::usage(format!(
                "{} and {rel} would both be component `{name}`",
                other.context
            ))
            .hint("rename one directory, or run init on one and add the other by hand")
            .into());
        }
        let (mut health, mut readiness, mut port_from, mut env) = (None, None, None, Vec::new());
        if let Some(stack) = stack {
            let scan = || -> anyhow::Result<_> {
                Ok((
                    declared::route(&tree, stack, declared::HEALTH_ROUTES)?,
                    declared::route(&tree, stack, declared::READY_ROUTES)?,
                    declared::port(&tree, stack)?,
                    declared::env_reads(&tree, stack)?,
                ))
            };
            match scan() {
                Ok(found) => (health, readiness, port_from, env) = found,
                // A tree that cannot be planned may not read either (a malformed
                // package.json): its TODO says why.
                Err(_) if detection.is_err() => {}
                Err(e) => return Err(e),
            }
        }
        found.push(Found {
            name,
            context: rel,
            port: port_from
                .as_ref()
                .map(|d| d.value)
                .or(stack.map(Stack::default_port))
                .unwrap_or(8080),
            port_from,
            detection,
            stack,
            health,
            readiness,
            env,
        });
    }
    Ok(found)
}

fn canonical(p: &Path) -> anyhow::Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("resolving {}", p.display()))
}

fn toml_str(s: &str) -> String {
    // TOML basic strings accept JSON's escapes.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The text of `slipway.toml` for what was found.
pub fn render(app: &str, found: &[Found]) -> String {
    let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `slipway init`. Edit freely: `slipway dockerfiles` regenerates the"
    );
    let _ = writeln!(
        s,
        "# Dockerfiles from this file (set `stack` to override detection, or `dockerfile`"
    );
    let _ = writeln!(s, "# to use your own).");
    let _ = writeln!(s);
    let _ = writeln!(s, "[app]");
    let _ = writeln!(s, "name = {}", toml_str(app));
    let _ = writeln!(s, "version = \"0.1.0\"");
    for f in found {
        let _ = writeln!(s);
        let _ = writeln!(s, "[components.{}]", f.name);
        match &f.detection {
            Ok(d) => {
                let _ = writeln!(s, "# Detected stack {}:", d.stack);
                for r in &d.notes.reasons {
                    let _ = writeln!(s, "#   {}: {}", r.file, one_line(&r.what));
                }
            }
            Err(todo) => {
                let _ = writeln!(
                    s,
                    "# TODO: slipway cannot plan this component yet: {}",
                    one_line(&todo.problem)
                );
                if let Some(h) = &todo.hint {
                    let _ = writeln!(s, "# TODO: {}", one_line(h));
                }
                let _ = writeln!(
                    s,
                    "# TODO: or set `stack` ({}) or `dockerfile` (your own Dockerfile)",
                    Stack::ALL.map(|s| s.as_str()).join(", ")
                );
            }
        }
        let _ = writeln!(s, "context = {}", toml_str(&f.context));
        match (&f.port_from, f.stack) {
            (Some(d), _) => {
                let _ = writeln!(s, "port = {}  # {}: {}", f.port, d.at(), d.text);
            }
            (None, Some(stack)) => {
                let _ = writeln!(
                    s,
                    "port = {}  # the usual port of {stack} apps (the code names none): check it",
                    f.port
                );
            }
            (None, None) => {
                let _ = writeln!(s, "port = {}  # TODO: the port the app listens on", f.port);
            }
        }
        match &f.health {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "health = {}  # {}: {}",
                    toml_str(&r.value),
                    r.at(),
                    r.text
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "health = \"/\"  # TODO: no health route found: point this at one that answers 200"
                );
            }
        }
        if let Some(r) = &f.readiness {
            let _ = writeln!(
                s,
                "readiness = {}  # {}: {}",
                toml_str(&r.value),
                r.at(),
                r.text
            );
        }
        render_env(&mut s, f, &names);
    }
    s
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// How an environment variable the code reads is proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proposal {
    /// Its name looks secret: a runtime secret, given at deploy time.
    Secret,
    /// `*_URL` named after another component: `${other.url}`.
    Reference(String),
    /// Plain configuration: left to the user, with its default in the code.
    Config,
}

/// The proposal for `name`, read by component `this`, among `components`.
pub fn propose(name: &str, this: &str, components: &[&str]) -> Proposal {
    let upper = name.to_ascii_uppercase();
    for suffix in ["_URL", "_URI", "_ENDPOINT", "_ORIGIN"] {
        if let Some(prefix) = upper.strip_suffix(suffix) {
            let prefix = component_name(prefix);
            let other = components.iter().find(|c| {
                **c != this
                    && (prefix == **c
                        || prefix.ends_with(&format!("-{c}"))
                        || prefix.starts_with(&format!("{c}-")))
            });
            if let Some(c) = other {
                return Proposal::Reference(c.to_string());
            }
        }
    }
    let secret = [
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PRIVATE",
        "CREDENTIAL",
        "API_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || upper.ends_with("_KEY")
        || upper.ends_with("_DSN")
        || [
            "DATABASE_URL",
            "DB_URL",
            "REDIS_URL",
            "MONGODB_URI",
            "MONGO_URL",
        ]
        .iter()
        .any(|w| upper == *w || upper.ends_with(&format!("_{w}")));
    if secret {
        Proposal::Secret
    } else {
        Proposal::Config
    }
}

/// `secrets`, `config` and TODO lines for the variables the code reads.
fn render_env(s: &mut String, f: &Found, names: &[&str]) {
    if f.env.is_empty() {
        let _ = writeln!(
            s,
            "# secrets = [\"DATABASE_URL\"]  # names of secret environment variables"
        );
        let _ = writeln!(s, "# config = {{ LOG_LEVEL = \"info\" }}  # plain environment; \"${{other.url}}\" refers to a component");
        return;
    }
    let mut secrets = Vec::new();
    let mut refs = Vec::new();
    let mut plain = Vec::new();
    for d in &f.env {
        match propose(&d.value, &f.name, names) {
            Proposal::Secret => secrets.push(d),
            Proposal::Reference(c) => refs.push((d, c)),
            Proposal::Config => plain.push(d),
        }
    }
    if !secrets.is_empty() {
        let _ = writeln!(
            s,
            "# Read by the code and named like secrets (give them at deploy time):"
        );
        for d in &secrets {
            let _ = writeln!(s, "#   {} at {}", d.value, d.at());
        }
        let list: Vec<String> = secrets.iter().map(|d| toml_str(&d.value)).collect();
        let _ = writeln!(s, "secrets = [{}]", list.join(", "));
    }
    if !refs.is_empty() {
        let _ = writeln!(s, "# Read by the code and named after another component:");
        for (d, c) in &refs {
            let _ = writeln!(s, "#   {} at {}: component {c}", d.value, d.at());
        }
        let entries: Vec<String> = refs
            .iter()
            .map(|(d, c)| format!("{} = {}", d.value, toml_str(&format!("${{{c}.url}}"))))
            .collect();
        let _ = writeln!(s, "config = {{ {} }}", entries.join(", "));
    }
    for d in &plain {
        let _ = writeln!(
            s,
            "# TODO: {} is read at {}: add it to `config` if the code's default does not fit",
            d.value,
            d.at()
        );
    }
}

/// What `init` wrote: the file and the components found in it.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub path: PathBuf,
    pub found: Vec<Found>,
}

impl Initialized {
    /// Components that could not be planned (written with TODO lines).
    pub fn todos(&self) -> usize {
        self.found.iter().filter(|f| f.todo().is_some()).count()
    }

    /// The error `init` exits with when components were left to finish.
    pub fn unfinished(&self) -> Option<anyhow::Error> {
        let todos: Vec<&str> = self
            .found
            .iter()
            .filter(|f| f.todo().is_some())
            .map(|f| f.name.as_str())
            .collect();
        if todos.is_empty() {
            return None;
        }
        Some(
            Fail::usage(format!(
                "{} written, but slipway cannot plan {} yet",
                self.path.display(),
                todos.join(", ")
            ))
            .hint("fill in the `# TODO` lines of the file (each says what is missing), then run `slipway up`")
            .into(),
        )
    }
}

/// Finds the components, writes the configuration file (`config_flag`, else `slipway.toml`
/// in `cwd`) and says what it found.
pub fn run(
    cwd: &Path,
    config_flag: Option<&Path>,
    dirs: &[PathBuf],
    force: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<Initialized> {
    let path = match config_flag {
        Some(p) => cwd.join(p),
        None => cwd.join(crate::config::FILE_NAME),
    };
    if path.exists() && !force {
        return Err(Fail::usage(format!("{} already exists", path.display()))
            .hint("pass --force to replace it (its contents are lost), or edit it by hand")
            .into());
    }
    let root = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => cwd.to_path_buf(),
    };
    if !root.is_dir() {
        return Err(Fail::usage(format!("{} is not a directory", root.display())).into());
    }
    let found = discover(&root, dirs, cwd, reporter)?;
    let app_dir = canonical(&root)?;
    let app = component_name(
        &app_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".into()),
    );
    let text = render(&app, &found);
    // The file must read back: the same validation `slipway dockerfiles` applies.
    crate::config::parse(&text, &path)
        .map_err(|e| anyhow::anyhow!("slipway init produced an invalid file (a bug): {e}"))?;
    for f in &found {
        let Ok(d) = &f.detection else { continue };
        for w in &d.notes.warnings {
            reporter.report(Event::Warn {
                message: format!("{}: {w}", f.name),
            });
        }
    }
    crate::fsutil::write_atomic(&path, text.as_bytes(), None)?;
    Ok(Initialized { path, found })
}

/// Each component found with the files that decided its stack, port and routes, the TODOs
/// left and the environment proposed, then the file written and what to run next.
pub fn summary(init: &Initialized, cwd: &Path) -> String {
    let names: Vec<&str> = init.found.iter().map(|f| f.name.as_str()).collect();
    let mut out = String::new();
    for f in &init.found {
        match &f.detection {
            Ok(d) => {
                let _ = writeln!(out, "{} ({}): stack {}", f.name, f.context, d.stack);
                for r in &d.notes.reasons {
                    let _ = writeln!(out, "  {}: {}", r.file, r.what);
                }
            }
            Err(todo) => {
                let _ = writeln!(out, "{} ({}): TODO: {}", f.name, f.context, todo.problem);
                if let Some(h) = &todo.hint {
                    let _ = writeln!(out, "  TODO: {h}");
                }
            }
        }
        let _ = match (&f.port_from, f.stack) {
            (Some(d), _) => writeln!(out, "  port {} ({}: {})", f.port, d.at(), d.text),
            (None, Some(stack)) => writeln!(
                out,
                "  port {} (the usual for {stack}: the code names none)",
                f.port
            ),
            (None, None) => writeln!(
                out,
                "  port {} (TODO: set the port the app listens on)",
                f.port
            ),
        };
        let _ = match &f.health {
            Some(r) => writeln!(out, "  health {} ({}: {})", r.value, r.at(), r.text),
            None => writeln!(out, "  health / (TODO: no health route found: set one)"),
        };
        if let Some(r) = &f.readiness {
            let _ = writeln!(out, "  readiness {} ({}: {})", r.value, r.at(), r.text);
        }
        for d in &f.env {
            let what = match propose(&d.value, &f.name, &names) {
                Proposal::Secret => "secret".to_string(),
                Proposal::Reference(c) => format!("config ${{{c}.url}}"),
                Proposal::Config => "TODO: config, if its default does not fit".to_string(),
            };
            let _ = writeln!(out, "  env {} ({}): {what}", d.value, d.at());
        }
    }
    let todos = init.todos();
    let _ = writeln!(
        out,
        "wrote {} ({} component{}{}); next: {}slipway up",
        init.path.strip_prefix(cwd).unwrap_or(&init.path).display(),
        init.found.len(),
        if init.found.len() == 1 { "" } else { "s" },
        if todos > 0 {
            format!(", {todos} to finish: see the TODO lines")
        } else {
            String::new()
        },
        if todos > 0 {
            "fill in the TODO lines, then "
        } else {
            ""
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_become_labels() {
        assert_eq!(component_name("My_Service"), "my-service");
        assert_eq!(component_name("--x--"), "x");
        assert_eq!(component_name("__"), "app");
    }
}
