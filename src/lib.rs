//! slipway: from a web app's source to a loaded local Kubernetes cluster.
//!
//! The pipeline, one module a step: configuration ([`config`]) → detection and Dockerfile
//! generation → context packing → build → load → manifests and chart. [`run`] wires the steps
//! for each command; `main.rs` only parses arguments and reports errors.

pub mod bases;
pub mod builder;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod context;
pub mod detect;
pub mod docker;
pub mod dockerfile;
pub mod doctor;
pub mod error;
pub mod fsutil;
pub mod generate;
pub mod init;
pub mod interrupt;
pub mod k8s;
pub mod kubeconfig;
pub mod lock;
pub mod push;
pub mod record;
pub mod report;
pub mod reproduce;
pub mod up;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

pub use error::{Exit, Fail};

use cli::{Cli, ColorMode, Command};
use report::{Reporter, Verbosity};

/// How long commands that need the daemon wait for it to answer a ping.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What every command gets: the global flags, resolved.
pub struct Session {
    pub reporter: Arc<dyn Reporter>,
    pub verbosity: Verbosity,
    /// `--config`, when given.
    pub config_flag: Option<PathBuf>,
    pub cwd: PathBuf,
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
            reporter: report::make(cli.progress, verbosity),
            verbosity,
            config_flag: cli.config.clone(),
            cwd: std::env::current_dir()?,
        })
    }

    /// Finds and loads the configuration (errors are usage errors, exit 2).
    pub fn config(&self) -> anyhow::Result<config::Config> {
        let path = config::find(self.config_flag.as_deref(), &self.cwd)?;
        config::load(&path)
    }

    /// Takes the project lock of `config`'s project for a command that changes something,
    /// waiting (with a message) while another slipway run holds it. See [`lock`].
    pub async fn lock(&self, config: &config::Config) -> anyhow::Result<lock::ProjectLock> {
        lock::acquire(&config.root, self.reporter.as_ref()).await
    }

    /// The configuration if there is one; a broken one is still an error.
    pub fn config_if_any(&self) -> anyhow::Result<Option<config::Config>> {
        match config::find(self.config_flag.as_deref(), &self.cwd) {
            Ok(path) => config::load(&path).map(Some),
            Err(_) if self.config_flag.is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Runs one command. Ctrl-C (SIGINT) at any point ends it with [`Fail::interrupted`] (exit
/// 130); see [`interrupt`] for how the command is stopped.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let session = Session::from_cli(&cli)?;
    // Listen before doing anything, so SIGINT never takes the default action (death by signal).
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("listening for Ctrl-C")?;
    let mut command = std::pin::pin!(dispatch(session, cli.command));
    tokio::select! {
        biased;
        result = &mut command => return result,
        _ = sigint.recv() => {}
    }
    if interrupt::handled() {
        // The running step stops and cleans up on its own: let it, unless asked twice.
        tokio::select! {
            biased;
            result = tokio::time::timeout(interrupt::GRACE, &mut command) => {
                if let Ok(result) = result {
                    return result;
                }
            }
            _ = sigint.recv() => {}
        }
    }
    Err(Fail::interrupted().into())
}

async fn dispatch(session: Session, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Load(args) => {
            let _lock = session.lock(&session.config()?).await?;
            cluster::command(&session, &args).await
        }
        Command::Doctor(args) => {
            let config = session.config_if_any()?;
            let report = doctor::run(config.as_ref()).await;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", doctor::render(&report));
            }
            if !report.ok {
                return Err(Fail::job("doctor found problems that stop the main job").into());
            }
            Ok(())
        }
        Command::Init(args) => init::run(
            &session.cwd,
            session.config_flag.as_deref(),
            &args.dirs,
            args.force,
            session.reporter.as_ref(),
        ),
        Command::Dockerfiles(args) => {
            let config = session.config()?;
            let _lock = match args.check {
                true => None,
                false => Some(session.lock(&config).await?),
            };
            generate::run(
                &config,
                &args.components,
                args.check,
                session.verbosity == Verbosity::Verbose,
                session.reporter.as_ref(),
            )
        }
        Command::Plan(args) => {
            let config = session.config()?;
            let daemon = docker::connect(PING_TIMEOUT).await?;
            let plan = builder::plan(&config, &daemon, &args.components).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", builder::render_plan(&plan));
            }
            Ok(())
        }
        Command::Build(args) => {
            let config = session.config()?;
            let _lock = session.lock(&config).await?;
            let daemon = docker::connect(PING_TIMEOUT).await?;
            let opts = builder::BuildOptions {
                jobs: args.jobs.map(usize::from),
                fail_fast: args.fail_fast,
                no_cache: args.no_cache,
                metadata_file: args.metadata_file.map(|p| session.cwd.join(p)),
            };
            let mut report = builder::run_build(
                session.reporter.clone(),
                &config,
                &daemon,
                &args.components,
                &opts,
            )
            .await?;
            if args.push {
                push::push_all(&daemon, &mut report, session.reporter.as_ref()).await?;
                record::write(&record::last_build_path(&config), &report)?;
                if let Some(p) = &opts.metadata_file {
                    record::write(p, &report)?;
                }
            }
            Ok(())
        }
        Command::Verify(args) => {
            let config = session.config()?;
            let _lock = session.lock(&config).await?;
            let daemon = docker::connect(PING_TIMEOUT).await?;
            let report = reproduce::verify::run(
                session.reporter.clone(),
                &config,
                &daemon,
                &args.component,
                args.against.as_deref(),
            )
            .await?;
            reproduce::verify::finish(&report, args.json)
        }
        Command::Manifests(args) => {
            let _lock = match args.check {
                true => None,
                false => Some(session.lock(&session.config()?).await?),
            };
            k8s::cmd_manifests(&session, &args)
        }
        Command::Chart(args) => {
            let _lock = match args.check {
                true => None,
                false => Some(session.lock(&session.config()?).await?),
            };
            k8s::cmd_chart(&session, &args)
        }
        Command::Up(args) => {
            let config = session.config()?;
            let _lock = match args.dry_run {
                true => None,
                false => Some(session.lock(&config).await?),
            };
            let daemon = docker::connect(PING_TIMEOUT).await?;
            let opts = up::UpOptions {
                locked: args.locked,
                dry_run: args.dry_run,
                metadata_file: args.metadata_file.map(|p| session.cwd.join(p)),
                cluster: args.cluster,
                push: args.push,
                jobs: args.jobs.map(usize::from),
                fail_fast: args.fail_fast,
                env_file: args.env_file.map(|p| session.cwd.join(p)),
                pull_policy: args.pull_policy,
                manifests_dir: None,
                chart_dir: None,
            };
            let report = up::run(session.reporter.clone(), &config, &daemon, &opts).await?;
            if !opts.dry_run {
                print!("{}", up::render(&report));
            }
            Ok(())
        }
    }
}
