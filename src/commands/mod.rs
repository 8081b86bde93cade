//! The commands: one file per subcommand, the face of slipway.
//!
//! This is the only code that knows the clap types ([`crate::cli`]), the [`Session`] (the
//! global flags, resolved) and the terminal. Each command turns its arguments into the plain
//! inputs of the steps below it (detect, plan, render, pack, build, normalise, load, emit),
//! runs them, and shows their typed reports: progress goes through the session's
//! [`Reporter`] (stderr), a command's result through [`Session::print`] (stdout).

pub mod build;
pub mod chart;
pub mod dockerfiles;
pub mod docs;
pub mod doctor;
pub mod init;
pub mod load;
pub mod lockfile;
pub mod manifests;
pub mod plan;
pub mod prune;
pub mod up;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::{Cli, ColorMode};
use crate::config::{self, Config};
use crate::docker::{self, Daemon};
use crate::error::Fail;
use crate::k8s::{self, Change, OutputFile};
use crate::lock;
use crate::report::{self, Reporter, Verbosity};

/// How long commands that need the daemon wait for it to answer a ping.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What every command gets: the global flags, resolved.
pub struct Session {
    pub reporter: Arc<dyn Reporter>,
    pub verbosity: Verbosity,
    /// `--config`, when given.
    pub config_flag: Option<PathBuf>,
    /// `--allow-outside-root`: contexts and Dockerfiles may resolve outside the project.
    pub outside: config::Outside,
    pub cwd: PathBuf,
    /// `--progress json`: stdout carries the events only; a command's result goes into the
    /// final `summary` event instead of being printed.
    pub json: bool,
    /// The command's result for the `summary` event (`--progress json`).
    pub result: Arc<std::sync::Mutex<Option<serde_json::Value>>>,
}

impl Session {
    pub fn from_cli(cli: &Cli) -> anyhow::Result<Self> {
        let verbosity = match (cli.quiet, cli.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            _ => Verbosity::Verbose,
        };
        let colors = match cli.color {
            ColorMode::Always => true,
            ColorMode::Never => false,
            ColorMode::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        if cli.color != ColorMode::Auto || !colors {
            console::set_colors_enabled(colors);
            console::set_colors_enabled_stderr(colors);
        }
        Ok(Session {
            reporter: report::make(cli.progress.into(), verbosity),
            verbosity,
            config_flag: cli.config.clone(),
            outside: match cli.allow_outside_root {
                true => config::Outside::Allow,
                false => config::Outside::Refuse,
            },
            cwd: std::env::current_dir()?,
            json: cli.progress == crate::cli::ProgressMode::Json,
            result: Arc::default(),
        })
    }

    /// Finds and loads the configuration (errors are usage errors, exit 2).
    pub fn config(&self) -> anyhow::Result<Config> {
        let path = config::find(self.config_flag.as_deref(), &self.cwd)?;
        config::load_with(&path, self.outside)
    }

    /// Takes the project lock of `config`'s project for a command that changes something,
    /// waiting (with a message) while another slipway run holds it. See [`lock`].
    pub async fn lock(&self, config: &Config) -> anyhow::Result<lock::ProjectLock> {
        lock::acquire(&config.root, self.reporter.as_ref()).await
    }

    /// The lock, unless the command only checks (`--check`, `--dry-run`) and writes nothing.
    pub async fn lock_unless(
        &self,
        only_checks: bool,
        config: &Config,
    ) -> anyhow::Result<Option<lock::ProjectLock>> {
        match only_checks {
            true => Ok(None),
            false => self.lock(config).await.map(Some),
        }
    }

    /// The configuration if there is one; a broken one is still an error.
    pub fn config_if_any(&self) -> anyhow::Result<Option<Config>> {
        match config::find(self.config_flag.as_deref(), &self.cwd) {
            Ok(path) => config::load_with(&path, self.outside).map(Some),
            Err(_) if self.config_flag.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The Docker daemon, answering within [`PING_TIMEOUT`].
    pub async fn daemon(&self) -> anyhow::Result<Daemon> {
        docker::connect(PING_TIMEOUT).await
    }

    /// A path given on the command line, taken from the current directory.
    pub fn path(&self, given: Option<PathBuf>) -> Option<PathBuf> {
        given.map(|p| self.cwd.join(p))
    }

    /// The one way a command's result reaches stdout (progress goes to the reporter, on
    /// stderr). Under `--progress json` stdout holds events only: text is not printed, the
    /// command gives its result with [`Session::result`].
    pub fn print(&self, text: &str) {
        if !self.json {
            self.reporter.pause();
            print!("{text}");
        }
    }

    /// The command's result as data: the `result` of the final `summary` event under
    /// `--progress json` (and nothing otherwise: the command prints it for people).
    pub fn result(&self, value: &impl serde::Serialize) {
        if self.json {
            if let Ok(v) = serde_json::to_value(value) {
                *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
            }
        }
    }

    /// Text that explains a failure (a diff) on stderr, before the error itself.
    pub fn print_err(&self, text: &str) {
        self.reporter.pause();
        eprint!("{text}");
    }

    /// A value as pretty JSON on stdout (`--json`); the summary's result under
    /// `--progress json`.
    pub fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        self.result(value);
        self.print(&format!("{}\n", serde_json::to_string_pretty(value)?));
        Ok(())
    }

    /// A path relative to the current directory when it is under it.
    pub fn shown(&self, path: &Path) -> String {
        path.strip_prefix(&self.cwd)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

/// Writes `value` as pretty JSON (with a final newline) to `path`, a `--metadata-file`.
/// The cluster a command works on: `--cluster`, else `cluster` in slipway.toml.
fn cluster_target(
    given: &Option<crate::config::ClusterTarget>,
    config: &Config,
) -> crate::config::ClusterTarget {
    given.clone().unwrap_or_else(|| config.cluster.clone())
}

fn write_metadata(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    crate::fsutil::write_atomic(path, text.as_bytes(), None)
        .with_context(|| format!("writing the metadata file {}", path.display()))?;
    Ok(())
}

/// `--check` of generated manifests or a chart: an error naming the files that differ.
fn check_outputs(
    session: &Session,
    dir: &Path,
    files: &[OutputFile],
    command: &str,
) -> anyhow::Result<()> {
    let stale = k8s::stale_files(dir, files);
    if stale.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = stale.iter().map(|p| session.shown(p)).collect();
    Err(Fail::job(format!("out of date: {}", list.join(", ")))
        .hint(format!("run `{command}` to write them"))
        .into())
}

/// One line per file written, left unchanged or removed (none under `-q`).
fn print_changes(session: &Session, changes: &[(PathBuf, Change)]) {
    if session.verbosity == Verbosity::Quiet {
        return;
    }
    for (path, change) in changes {
        let what = match change {
            Change::Written => "wrote",
            Change::Unchanged => "unchanged",
            Change::Removed => "removed",
        };
        session.print(&format!("{what:<9} {}\n", session.shown(path)));
    }
}
