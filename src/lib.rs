//! slipway: from a web app's source to a loaded local Kubernetes cluster.
//!
//! The pipeline, one module a step: configuration ([`config`]) → detection and Dockerfile
//! generation → context packing → build → load → manifests and chart. [`run`] hands each
//! command to its file in [`commands`], which wires the steps; `main.rs` only parses arguments
//! and reports errors.

pub mod archive;
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
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let session = Session::from_cli(&cli)?;
    // Listen before doing anything, so neither SIGINT nor SIGTERM takes the default action
    // (death by signal, leaving temporary tags and directories).
    let mut sigint = interrupt::Signals::new()?;
    // What runs killed outright left (see `leftovers`); their temporary tags go in `build`.
    leftovers::reap_dirs();
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
    }
}
