//! `slipway dockerfiles [COMPONENT...] [--check]`: the configuration plus detection → each
//! component's Dockerfile and ignore file.
//!
//! Only files that start with slipway's header are ever written or checked: a component whose
//! `dockerfile` is a file without the header is the user's own, and slipway neither detects
//! nor touches anything for it. A generated file that was edited by hand still has the header,
//! so `--check` reports it (with a diff) like any stale file, and a plain run overwrites it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{Component, Config};
use crate::detect::{self, Detection, SourceTree};
use crate::dockerfile::{self, Target};
use crate::error::Fail;
use crate::report::{Event, Reporter};

/// One file slipway owns, with the text it should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Where it is on disk.
    pub path: PathBuf,
    /// How it is named to the user (relative to the config's directory).
    pub shown: String,
    pub text: String,
}

/// What happens for one component.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Generated files (the Dockerfile, and the ignore file unless that is the user's own).
    Generate {
        detection: Box<Detection>,
        outputs: Vec<Output>,
        /// An ignore file without the header, left alone.
        own_ignore: Option<String>,
    },
    /// The Dockerfile is the user's own (no header): nothing is detected, written or checked.
    UserOwn { dockerfile: String },
}

/// A component's plan.
#[derive(Debug, Clone)]
pub struct ComponentPlan {
    pub name: String,
    pub plan: Plan,
}

/// The components named (all when none), checked against the configuration.
pub fn select<'a>(config: &'a Config, names: &[String]) -> anyhow::Result<Vec<&'a Component>> {
    if names.is_empty() {
        return Ok(config.components.values().collect());
    }
    let known: Vec<&str> = config.components.keys().map(String::as_str).collect();
    let mut out = Vec::new();
    for n in names {
        match config.components.get(n) {
            Some(c) => {
                if !out.iter().any(|o: &&Component| o.name == c.name) {
                    out.push(c);
                }
            }
            None => {
                let hint = match crate::config::did_you_mean(n, &known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!(
                        "components in {}: {}",
                        config.path.display(),
                        known.join(", ")
                    ),
                };
                return Err(Fail::usage(format!(
                    "no component `{n}` in {}",
                    config.path.display()
                ))
                .hint(hint)
                .into());
            }
        }
    }
    Ok(out)
}

fn show(path: &Path) -> String {
    path.display().to_string()
}

/// Plans one component: reads its Dockerfile to see whose it is, detects, renders.
pub fn plan_component(config: &Config, component: &Component) -> anyhow::Result<ComponentPlan> {
    let dockerfile_path = config.dockerfile_path(component);
    let shown = show(&component.dockerfile);
    if let Some(existing) = read_if_exists(&dockerfile_path)? {
        if !dockerfile::is_generated(&existing) {
            return Ok(ComponentPlan {
                name: component.name.clone(),
                plan: Plan::UserOwn { dockerfile: shown },
            });
        }
    }
    let tree = SourceTree::new(config.context_dir(component), &component.context);
    let detection = detect::detect(&tree, component.stack.as_deref())
        .with_context(|| format!("detecting the stack of component `{}`", component.name))?;
    let mut target = Target::new(config, component);
    let context_ignore = config.context_dir(component).join(".dockerignore");
    if let Some(text) = read_if_exists(&context_ignore)? {
        let shown = component
            .context
            .join(".dockerignore")
            .display()
            .to_string();
        target.context_ignore = Some((shown, text));
    }
    let generated = dockerfile::render(&target, &detection.plan);
    let mut outputs = vec![Output {
        path: dockerfile_path.clone(),
        shown,
        text: generated.dockerfile,
    }];
    let ignore_path = dockerfile::ignore_path(&dockerfile_path);
    let ignore_shown = show(&dockerfile::ignore_path(&component.dockerfile));
    let mut own_ignore = None;
    match read_if_exists(&ignore_path)? {
        Some(text) if !dockerfile::is_generated(&text) => own_ignore = Some(ignore_shown),
        _ => outputs.push(Output {
            path: ignore_path,
            shown: ignore_shown,
            text: generated.ignore,
        }),
    }
    Ok(ComponentPlan {
        name: component.name.clone(),
        plan: Plan::Generate {
            detection: Box::new(detection),
            outputs,
            own_ignore,
        },
    })
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A generated file that differs from what it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub shown: String,
    /// `None` when the file does not exist.
    pub diff: Option<String>,
}

/// Compares one output with the file on disk.
pub fn check_output(out: &Output) -> anyhow::Result<Option<Stale>> {
    match read_if_exists(&out.path)? {
        None => Ok(Some(Stale {
            shown: out.shown.clone(),
            diff: None,
        })),
        Some(current) if current == out.text => Ok(None),
        Some(current) => Ok(Some(Stale {
            shown: out.shown.clone(),
            diff: Some(unified_diff(&current, &out.text, &out.shown)),
        })),
    }
}

/// A unified diff from the file on disk (`a/`) to what slipway would write (`b/`).
pub fn unified_diff(current: &str, expected: &str, shown: &str) -> String {
    similar::TextDiff::from_lines(current, expected)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{shown}"), &format!("b/{shown}"))
        .to_string()
}

/// Runs the command: writes (or with `check`, compares) every generated file.
pub fn run(
    config: &Config,
    names: &[String],
    check: bool,
    verbose: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let components = select(config, names)?;
    let mut plans = Vec::new();
    for c in components {
        plans.push(plan_component(config, c)?);
    }
    let mut stale: Vec<Stale> = Vec::new();
    for cp in &plans {
        match &cp.plan {
            Plan::UserOwn { dockerfile } => {
                println!(
                    "{}: {dockerfile} is your own (no slipway header): left alone",
                    cp.name
                );
            }
            Plan::Generate {
                detection,
                outputs,
                own_ignore,
            } => {
                println!("{}: stack {}", cp.name, detection.stack);
                if verbose {
                    for r in &detection.notes.reasons {
                        println!("  {}: {}", r.file, r.what);
                    }
                }
                for w in &detection.notes.warnings {
                    reporter.report(Event::Warn {
                        message: format!("{}: {w}", cp.name),
                    });
                }
                if let Some(ignore) = own_ignore {
                    println!("  {ignore} is your own (no slipway header): left alone");
                }
                for out in outputs {
                    if check {
                        match check_output(out)? {
                            None => println!("  up to date  {}", out.shown),
                            Some(s) => {
                                println!(
                                    "  {}  {}",
                                    if s.diff.is_some() { "stale" } else { "missing" },
                                    out.shown
                                );
                                stale.push(s);
                            }
                        }
                    } else {
                        let changed =
                            crate::fsutil::write_atomic(&out.path, out.text.as_bytes(), None)
                                .with_context(|| format!("writing {}", out.shown))?;
                        println!(
                            "  {}  {}",
                            if changed { "wrote    " } else { "unchanged" },
                            out.shown
                        );
                    }
                }
            }
        }
    }
    if !stale.is_empty() {
        for s in &stale {
            match &s.diff {
                Some(d) => print!("\n{d}"),
                None => println!("\n{} does not exist", s.shown),
            }
        }
        let names: Vec<&str> = stale.iter().map(|s| s.shown.as_str()).collect();
        return Err(Fail::job(format!(
            "{} generated file{} out of date: {}",
            stale.len(),
            if stale.len() == 1 { " is" } else { "s are" },
            names.join(", ")
        ))
        .hint("run `slipway dockerfiles` to regenerate them (hand edits to generated files are overwritten; to keep your own Dockerfile, remove its first line, the slipway header)")
        .into());
    }
    Ok(())
}
