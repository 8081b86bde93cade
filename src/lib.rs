//! slipway: from a web app's source to a loaded local Kubernetes cluster.
//!
//! The pipeline, one module a step: configuration ([`config`]) → detection and Dockerfile
//! generation → context packing → build → load → manifests and chart. [`run`] hands each
//! command to its file in [`commands`], which wires the steps; `main.rs` only parses arguments
//! and reports errors.

pub mod archive;
pub mod attest;
pub mod bases;
pub mod builder;
pub mod cli;
pub mod cluster;
pub mod commands;
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
pub mod instructions;
pub mod interrupt;
pub mod k8s;
pub mod kubeconfig;
pub mod leftovers;
pub mod lock;
pub mod pins;
pub mod prune;
pub mod push;
pub mod record;
pub mod report;
pub mod reproduce;
pub mod verify;

pub use error::{Exit, Fail};

use cli::{Cli, Command};
use commands::Session;

/// Runs one command. Ctrl-C (SIGINT) at any point ends it with [`Fail::interrupted`] (exit
/// 130); see [`interrupt`] for how the command is stopped.
///
/// Under `--progress json` the run is told as events on stdout from first to last: a `run`
/// event, the command's events, an `error` event when it fails, and a `summary` with the exit
/// code and the command's result; `main` then prints no error text.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.name();
    let session = match Session::from_cli(&cli) {
        Ok(s) => s,
        Err(e) => {
            if cli.progress == cli::ProgressMode::Json {
                conclude(&report::JsonReporter, command, &Err(&e), None);
            }
            return Err(e);
        }
    };
    let reporter = session.reporter.clone();
    let result = session.result.clone();
    reporter.report(report::Event::Run {
        schema_version: report::SCHEMA_VERSION,
        command: command.to_string(),
        version: cli::VERSION.to_string(),
    });
    let outcome = run_command(session, cli.command).await;
    let value = result.lock().unwrap_or_else(|e| e.into_inner()).take();
    conclude(
        reporter.as_ref(),
        command,
        &outcome.as_ref().map(|_| ()),
        value,
    );
    // `main` prints the error next.
    reporter.pause();
    outcome
}

/// The last events of a run: the error (when it failed) and the summary.
fn conclude(
    reporter: &dyn report::Reporter,
    command: &str,
    outcome: &Result<(), &anyhow::Error>,
    result: Option<serde_json::Value>,
) {
    let exit_code = match outcome {
        Ok(()) => 0,
        Err(err) => {
            let endpoint = docker::endpoint();
            let timeout = docker::request_timeout().as_secs();
            let parts = error::parts(err, Some((&endpoint.host, timeout)), false);
            let exit_code = parts.exit.code();
            reporter.report(report::Event::Error {
                message: parts.message,
                causes: parts.causes,
                hint: parts.hint,
                exit_code,
            });
            exit_code
        }
    };
    reporter.report(report::Event::Summary {
        schema_version: report::SCHEMA_VERSION,
        command: command.to_string(),
        status: if exit_code == 0 { "ok" } else { "failed" }.to_string(),
        exit_code,
        result,
    });
}

/// Runs the command, and stops it on Ctrl-C.
async fn run_command(session: Session, command: Command) -> anyhow::Result<()> {
    // Listen before doing anything, so neither SIGINT nor SIGTERM takes the default action
    // (death by signal, leaving temporary tags and directories).
    let mut sigint = interrupt::Signals::new()?;
    // What runs killed outright left (see `leftovers`); their temporary tags go in `build`.
    leftovers::reap_dirs();
    let mut command = std::pin::pin!(dispatch(session, command));
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
    Err(error::Fail::interrupted().into())
}

/// The command's file in [`commands`] runs it.
async fn dispatch(session: Session, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init(args) => commands::init::run(&session, args),
        Command::Dockerfiles(args) => commands::dockerfiles::run(&session, args).await,
        Command::Plan(args) => commands::plan::run(&session, args).await,
        Command::Build(args) => commands::build::run(&session, args).await,
        Command::Load(args) => commands::load::run(&session, args).await,
        Command::Prune(args) => commands::prune::run(&session, args).await,
        Command::Manifests(args) => commands::manifests::run(&session, args).await,
        Command::Chart(args) => commands::chart::run(&session, args).await,
        Command::Up(args) => commands::up::run(&session, args).await,
        Command::Lock(args) => commands::lockfile::run(&session, args).await,
        Command::Verify(args) => commands::verify::run(&session, args).await,
        Command::Doctor(args) => commands::doctor::run(&session, args).await,
        Command::Completions(args) => commands::docs::completions(&session, args),
        Command::Man(args) => commands::docs::man(&session, args),
        Command::Schema => commands::docs::schema(&session),
    }
}
