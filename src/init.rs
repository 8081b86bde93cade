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
use crate::detect::{self, Detection, SourceTree, PROVIDERS};
use crate::error::Fail;
use crate::report::{Event, Reporter};

/// Directories whose subdirectories are components.
pub const COMPONENT_PARENTS: &[&str] = &["contexts", "apps", "services", "packages"];

/// A component found by `init`.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    /// The context relative to the config's directory, `/`-separated.
    pub context: String,
    pub detection: Detection,
    pub port: u16,
    /// Where the port came from, when the code declares it (else the stack's convention).
    pub port_from: Option<Declared<u16>>,
    pub health: Option<Declared<String>>,
    pub readiness: Option<Declared<String>>,
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
        if !named {
            // Looking around: skip what is clearly not a component, fail on what is broken.
            if tree.is_empty()? {
                reporter.report(Event::Warn {
                    message: format!("skipped {rel}: empty"),
                });
                continue;
            }
            let mut any = false;
            for p in PROVIDERS {
                any |= p.detect(&tree)?.is_some();
            }
            if !any {
                if rel == "." {
                    return Err(Fail::usage(format!(
                        "no components found: none under {}, and {} holds no known stack",
                        COMPONENT_PARENTS.join("/, ") + "/",
                        root.display()
                    ))
                    .hint("pass the directories that hold your components: `slipway init DIR...`")
                    .into());
                }
                reporter.report(Event::Warn {
                    message: format!("skipped {rel}: no known stack"),
                });
                continue;
            }
        }
        let detection =
            detect::detect(&tree, None).with_context(|| format!("detecting the stack of {rel}"))?;
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
        let health = declared::route(&tree, detection.stack, declared::HEALTH_ROUTES)?;
        let readiness = declared::route(&tree, detection.stack, declared::READY_ROUTES)?;
        let port_from = declared::port(&tree, detection.stack)?;
        found.push(Found {
            name,
            context: rel,
            port: port_from
                .as_ref()
                .map_or(detection.stack.default_port(), |d| d.value),
            port_from,
            detection,
            health,
            readiness,
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
        let _ = writeln!(s, "# Detected stack {}:", f.detection.stack);
        for r in &f.detection.notes.reasons {
            let _ = writeln!(s, "#   {}: {}", r.file, r.what.replace('\n', " "));
        }
        let _ = writeln!(s, "context = {}", toml_str(&f.context));
        match &f.port_from {
            Some(d) => {
                let _ = writeln!(s, "port = {}  # {}: {}", f.port, d.at(), d.text);
            }
            None => {
                let _ = writeln!(
                    s,
                    "port = {}  # the usual port of {} apps (the code names none): check it",
                    f.port, f.detection.stack
                );
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
                    "health = \"/\"  # no health route found: point this at one that answers 200"
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
        let _ = writeln!(
            s,
            "# secrets = [\"DATABASE_URL\"]  # names of secret environment variables"
        );
        let _ = writeln!(s, "# config = {{ LOG_LEVEL = \"info\" }}  # plain environment; \"${{other.url}}\" refers to a component");
    }
    s
}

/// What `init` wrote: the file and the components found in it.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub path: PathBuf,
    pub found: Vec<Found>,
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
        for w in &f.detection.notes.warnings {
            reporter.report(Event::Warn {
                message: format!("{}: {w}", f.name),
            });
        }
    }
    crate::fsutil::write_atomic(&path, text.as_bytes(), None)?;
    Ok(Initialized { path, found })
}

/// Each component found with the files that decided its stack, port and routes, then the file
/// written and what to run next.
pub fn summary(init: &Initialized, cwd: &Path) -> String {
    let mut out = String::new();
    for f in &init.found {
        let _ = writeln!(
            out,
            "{} ({}): stack {}",
            f.name, f.context, f.detection.stack
        );
        for r in &f.detection.notes.reasons {
            let _ = writeln!(out, "  {}: {}", r.file, r.what);
        }
        let _ = match &f.port_from {
            Some(d) => writeln!(out, "  port {} ({}: {})", f.port, d.at(), d.text),
            None => writeln!(
                out,
                "  port {} (the usual for {}: the code names none)",
                f.port, f.detection.stack
            ),
        };
        let _ = match &f.health {
            Some(r) => writeln!(out, "  health {} ({}: {})", r.value, r.at(), r.text),
            None => writeln!(out, "  health / (no health route found: set one)"),
        };
        if let Some(r) = &f.readiness {
            let _ = writeln!(out, "  readiness {} ({}: {})", r.value, r.at(), r.text);
        }
    }
    let _ = writeln!(
        out,
        "wrote {} ({} component{}); next: `slipway dockerfiles`",
        init.path.strip_prefix(cwd).unwrap_or(&init.path).display(),
        init.found.len(),
        if init.found.len() == 1 { "" } else { "s" }
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
