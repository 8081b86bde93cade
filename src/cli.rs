//! Command-line types (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::ProgressMode;

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "From source to a loaded local Kubernetes cluster: Dockerfiles, builds, loads, manifests, Helm chart",
    propagate_version = true
)]
pub struct Cli {
    /// Show more (build logs, cache-miss reasons); repeat for more.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Show only results and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// The configuration file [default: slipway.toml, searched upward from the current directory].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How progress is shown.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// When to use colour (NO_COLOR is honoured under `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the Docker daemon, disk, cluster and base images.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}
