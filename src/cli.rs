//! Command-line types (clap derive) and nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `0.1.0 (commit 0123456789ab, 2026-12-02)`: the version, and the commit built (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLIPWAY_COMMIT"),
    ", ",
    env!("SLIPWAY_COMMIT_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version = VERSION,
    about = "From source to a loaded local Kubernetes cluster: Dockerfiles, builds, loads, manifests, Helm chart",
    propagate_version = true,
    after_help = "Examples:
  slipway init                      detect the components, write slipway.toml
  slipway up                        Dockerfiles, builds, load into kind/minikube, manifests, chart
  slipway plan                      what would be built, and why
  slipway --progress json build     events for scripts, one JSON object per line on stdout"
)]
pub struct Cli {
    /// Show more (build logs, cache-miss reasons); repeat for more.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Global options")]
    pub verbose: u8,
    /// Show only results and errors.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Global options"
    )]
    pub quiet: bool,
    /// The configuration file [default: slipway.toml, searched upward from the current directory].
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,
    /// Build contexts and Dockerfiles that resolve outside the project root (the git work tree
    /// holding slipway.toml, else its directory); refused without it.
    #[arg(long, global = true, help_heading = "Global options")]
    pub allow_outside_root: bool,
    /// How progress is shown.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto, help_heading = "Global options")]
    pub progress: ProgressMode,
    /// When to use colour (NO_COLOR is honoured under `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorMode::Auto, help_heading = "Global options")]
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
    /// Everything, from source to a loaded cluster: Dockerfiles, builds, load, manifests, chart.
    #[command(after_help = "Examples:
  slipway up                            build what changed, load it, write manifests and chart
  slipway up --dry-run                  print every step's plan, do nothing
  slipway up --locked --cluster none    CI: stale Dockerfiles or missing secrets are errors
  slipway up --env-file .env.local      secret values from a .env file")]
    Up(UpArgs),
    /// Check the Docker daemon, disk, cluster and base images.
    #[command(after_help = "Examples:
  slipway doctor
  slipway doctor --json | jq .ok")]
    Doctor(DoctorArgs),
    /// Detect each component's stack and write slipway.toml.
    #[command(after_help = "Examples:
  slipway init                      components under contexts/, apps/, services/, packages/
  slipway init web api              these directories
  slipway init --force              replace an existing slipway.toml")]
    Init(InitArgs),
    /// Write (or with --check, verify) each component's generated Dockerfile and ignore file.
    #[command(after_help = "Examples:
  slipway dockerfiles               write every generated Dockerfile
  slipway dockerfiles --check       CI: exit 1 with a diff when one is stale")]
    Dockerfiles(DockerfilesArgs),
    /// Show what `build` would do: each component's image tag, and whether it is cached or why not.
    #[command(after_help = "Examples:
  slipway plan                      cached, or which input (and which files) changed
  slipway -v plan backend           every changed file of backend
  slipway plan --json")]
    Plan(PlanArgs),
    /// Build the components' images (those already built from the same inputs are skipped).
    #[command(after_help = "Examples:
  slipway build                     build what changed; prints the image references
  slipway build backend -j 1        one component, one build at a time
  IMAGE=$(slipway build -q backend) the image reference, for a script
  slipway --progress json build     one JSON event per line on stdout (docs/progress-events.md)

A failed build's whole log is in .slipway/logs/COMPONENT.log.")]
    Build(BuildArgs),
    /// Write Kubernetes manifests for the images of the last build.
    #[command(after_help = "Examples:
  slipway manifests --env-file .env     secret values from .env
  slipway manifests --check             CI: fail when k8s/ is out of date
  kubectl apply -f k8s/")]
    Manifests(ManifestsArgs),
    /// Write a Helm chart for the app (secret values are given at install time).
    #[command(after_help = "Examples:
  slipway chart
  slipway chart --image backend=registry.example/backend:1.2   no build record needed
  helm upgrade --install APP charts/APP")]
    Chart(ChartArgs),
    /// Load the last build's images into the local kind or minikube cluster, sending each
    /// node only what it lacks.
    #[command(after_help = "Examples:
  slipway load                      into the cluster of the kube context
  slipway load backend --cluster kind:dev")]
    Load(LoadArgs),
    /// Remove the images slipway built that nothing needs any more (beyond the newest N per
    /// component, never the last build's or one a container uses) from the daemon and from
    /// every node of the local cluster.
    #[command(after_help = "Examples:
  slipway prune --dry-run           what would go, removing nothing
  slipway prune --keep 1            only the newest image per component (and the last build's)
  slipway prune --cluster k3d:dev   from the daemon and every node of that cluster")]
    Prune(PruneArgs),
    /// Pin every base image the Dockerfiles name in slipway.lock (its image ID, registry digest
    /// and platform): adds new bases, drops unused ones, refuses to move one that moved.
    #[command(after_help = "Examples:
  slipway lock                      pin the bases the Dockerfiles name
  slipway lock --update             move the pins to what the registries have now")]
    Lock(LockArgs),
    /// Build a component twice without cache and check both builds give one image ID; name
    /// the first layer and file that differ when they do not.
    #[command(after_help = "Examples:
  slipway verify backend
  slipway verify backend --against tcp://127.0.0.1:23751   the second build on another daemon")]
    Verify(VerifyArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = "Examples:
  slipway completions bash > ~/.local/share/bash-completion/completions/slipway
  slipway completions zsh > ~/.zfunc/_slipway       (with fpath+=~/.zfunc before compinit)
  slipway completions fish > ~/.config/fish/completions/slipway.fish")]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) of slipway, or of one of its commands, on stdout.
    #[command(after_help = "Examples:
  slipway man | man -l -                    read it
  slipway man up > slipway-up.1             the page of `slipway up`
  slipway man > /usr/local/share/man/man1/slipway.1")]
    Man(ManArgs),
    /// Print the JSON Schema of slipway.toml on stdout (for editors: taplo, Even Better TOML).
    #[command(after_help = "Examples:
  slipway schema > slipway.schema.json
  then, as the first line of slipway.toml:  #:schema ./slipway.schema.json")]
    Schema,
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Doctor(_) => "doctor",
            Command::Init(_) => "init",
            Command::Dockerfiles(_) => "dockerfiles",
            Command::Plan(_) => "plan",
            Command::Up(_) => "up",
            Command::Build(_) => "build",
            Command::Manifests(_) => "manifests",
            Command::Chart(_) => "chart",
            Command::Load(_) => "load",
            Command::Prune(_) => "prune",
            Command::Lock(_) => "lock",
            Command::Verify(_) => "verify",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
            Command::Schema => "schema",
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_name = "SHELL", value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (`slipway-COMMAND(1)`) [default: slipway(1), which lists
    /// them all].
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Move the pins: pull each base that came from a registry by its tag again, and pin what
    /// it points at now.
    #[arg(long)]
    pub update: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The component to verify.
    #[arg(value_name = "COMPONENT")]
    pub component: String,
    /// Build the second time on this Docker daemon (`tcp://HOST:PORT`, `unix:///PATH`), e.g.
    /// a minikube node's; base images it lacks are copied to it first. Or compare one build
    /// here with an image in a registry (`REGISTRY/REPO:TAG`, `REPO@sha256:...`), e.g. the one
    /// `build --push` published.
    #[arg(long, value_name = "DOCKER_HOST|IMAGE")]
    pub against: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Component directories [default: the subdirectories of contexts/, apps/, services/,
    /// packages/, else the current directory].
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Replace an existing slipway.toml.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct DockerfilesArgs {
    /// Components to generate for [default: all].
    #[arg(value_name = "COMPONENT")]
    pub components: Vec<String>,
    /// Write nothing; print a diff and exit 1 when a generated file is missing or differs.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Components to plan [default: all].
    #[arg(value_name = "COMPONENT")]
    pub components: Vec<String>,
    /// Print the plan as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Plan as `build --push` would: look each image the daemon lacks up in its registry
    /// (`cached (registry)` when it is there).
    #[arg(long)]
    pub push: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Components to build [default: all].
    #[arg(value_name = "COMPONENT")]
    pub components: Vec<String>,
    /// How many components build at once [default: all].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Stop every other build as soon as one fails.
    #[arg(long)]
    pub fail_fast: bool,
    /// Also write the result (per component: image, tags, image ID, input digest, built or
    /// cached, duration, size) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Rebuild every selected component, without the daemon's build cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Do not pull a missing base image (offline work): fail, naming the `docker pull` to run.
    #[arg(long)]
    pub no_pull: bool,
    /// Fail (exit 2) when slipway.lock is missing or out of date: a base image that moved, a
    /// base with no pin, a pin no Dockerfile uses.
    #[arg(long)]
    pub locked: bool,
    /// Push every image (its input-digest tag and extra tags) to its registry with the
    /// credentials of the Docker config, and record the pushed digests so `manifests` and
    /// `chart` pin `repo@sha256:...`. An image the registry already has under its
    /// input-digest tag is not built (nor pulled): its digest is recorded.
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `--cache-from` / `--cache-to` of `build` and `up` ([`crate::cache`]).
#[derive(Debug, Clone, Default, Args)]
pub struct CacheArgs {
    /// Take build cache from here (repeatable): `type=registry,ref=REPOSITORY` (or just
    /// REPOSITORY) reads the stage images REPOSITORY:COMPONENT-STAGE, `type=local,src=DIR`
    /// reads DIR/COMPONENT.tar [default: `[images] cache_from`].
    #[arg(long = "cache-from", value_name = "SPEC", value_parser = |s: &str| crate::cache::parse(s, crate::cache::Direction::From))]
    pub from: Vec<crate::cache::CacheSpec>,
    /// Write build cache here after each build (repeatable): `type=registry,ref=REPOSITORY`
    /// pushes each Dockerfile stage as an inline-cache image REPOSITORY:COMPONENT-STAGE,
    /// `type=local,dest=DIR` saves them to DIR/COMPONENT.tar [default: `[images] cache_to`].
    #[arg(long = "cache-to", value_name = "SPEC", value_parser = |s: &str| crate::cache::parse(s, crate::cache::Direction::To))]
    pub to: Vec<crate::cache::CacheSpec>,
}

impl CacheArgs {
    /// The run's cache options: these flags (relative directories against `cwd`), else the
    /// config's.
    pub fn options(
        &self,
        cwd: &std::path::Path,
        config: &crate::cache::CacheOptions,
    ) -> crate::cache::CacheOptions {
        crate::cache::CacheOptions {
            from: self.from.clone(),
            to: self.to.clone(),
        }
        .resolved(cwd)
        .or(config)
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// Output directory [default: k8s/ next to slipway.toml].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Read secret values from this .env file (its values win over the environment's).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// Write empty values for secrets that are not set, instead of failing.
    #[arg(long)]
    pub allow_missing_secrets: bool,
    /// The containers' imagePullPolicy (`Never` for images that exist only in the cluster).
    #[arg(long, value_enum, default_value_t = PullPolicy::IfNotPresent)]
    pub pull_policy: PullPolicy,
    /// Also write a Namespace manifest (00-namespace.yaml).
    #[arg(long)]
    pub namespace_manifest: bool,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Write nothing; fail if the files on disk differ from what would be written.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct ChartArgs {
    /// Output directory [default: charts/APP next to slipway.toml].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The imagePullPolicy in values.yaml.
    #[arg(long, value_enum, default_value_t = PullPolicy::IfNotPresent)]
    pub pull_policy: PullPolicy,
    #[command(flatten)]
    pub images: ImageArgs,
    /// Write nothing; fail if the files on disk differ from what would be written.
    #[arg(long)]
    pub check: bool,
    /// Overwrite chart files that were edited by hand (or are not slipway's).
    #[arg(long, conflicts_with = "check")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Deploy REF for COMPONENT instead of the last build's image (repeatable). With one for
    /// every component, no build record is needed.
    #[arg(long = "image", value_name = "COMPONENT=REF")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Components to load [default: every component of the last build].
    #[arg(value_name = "COMPONENT")]
    pub components: Vec<String>,
    /// Which cluster: `auto`, `none`, `kind:NAME`, `minikube:PROFILE`, `k3d:NAME` [default: `cluster` in
    /// slipway.toml, else auto].
    #[arg(long, value_name = "CLUSTER", value_parser = crate::config::ClusterTarget::parse)]
    pub cluster: Option<crate::config::ClusterTarget>,
    /// Write the result per image and node as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many images to keep per component, newest first (the last build's image and any a
    /// container uses are kept besides).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub keep: usize,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Which cluster's nodes to prune too: `auto`, `none`, `kind:NAME`, `minikube:PROFILE`,
    /// `k3d:NAME` [default: `cluster` in slipway.toml, else auto].
    #[arg(long, value_name = "CLUSTER", value_parser = crate::config::ClusterTarget::parse)]
    pub cluster: Option<crate::config::ClusterTarget>,
    /// Write what was removed per place as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// CI mode: a stale generated Dockerfile, a missing secret, or a slipway.lock that is
    /// missing or out of date (a base image moved, a pin missing or stale) is an error (exit 2).
    #[arg(long)]
    pub locked: bool,
    /// Print the plan (Dockerfiles, builds, cluster, outputs) and do nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the whole run (Dockerfiles, builds, loads, outputs) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Which cluster: `auto`, `none`, `kind:NAME`, `minikube:PROFILE`, `k3d:NAME` [default: `cluster` in
    /// slipway.toml, else auto].
    #[arg(long, value_name = "CLUSTER", value_parser = crate::config::ClusterTarget::parse)]
    pub cluster: Option<crate::config::ClusterTarget>,
    /// Push every image to its registry and pin `repo@sha256:...` in manifests and chart. An
    /// image the registry already has under its input-digest tag is not built: it is pulled
    /// for the load (only when a cluster is the target).
    #[arg(long)]
    pub push: bool,
    /// How many components build at once [default: all].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Stop every other build as soon as one fails.
    #[arg(long)]
    pub fail_fast: bool,
    /// Do not pull a missing base image (offline work): fail, naming the `docker pull` to run.
    #[arg(long)]
    pub no_pull: bool,
    /// Rebuild every component, without the daemon's build cache (as `build --no-cache`).
    #[arg(long)]
    pub no_cache: bool,
    /// Write empty values for secrets that are not set, with a warning, even under `--locked`
    /// (as `manifests --allow-missing-secrets`; without `--locked` that is the default).
    #[arg(long)]
    pub allow_missing_secrets: bool,
    /// Read secret values from this .env file (and the environment).
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,
    /// imagePullPolicy of the Deployments.
    #[arg(long, value_enum, default_value_t = PullPolicy::IfNotPresent)]
    pub pull_policy: PullPolicy,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `--pull-policy`: the containers' `imagePullPolicy` ([`crate::k8s::PullPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    #[default]
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    #[value(name = "Never")]
    Never,
}

impl From<PullPolicy> for crate::k8s::PullPolicy {
    fn from(p: PullPolicy) -> Self {
        match p {
            PullPolicy::IfNotPresent => crate::k8s::PullPolicy::IfNotPresent,
            PullPolicy::Never => crate::k8s::PullPolicy::Never,
        }
    }
}

/// `--progress`: how progress is shown ([`crate::report::ProgressMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ProgressMode {
    /// A terminal gets live lines; otherwise, or when `CI` is set, plain lines.
    #[default]
    Auto,
    /// Live lines: each task's step and its latest output (plain lines without a terminal).
    Tty,
    /// One `[task] ...` line per step and output line: for CI logs.
    Plain,
    /// One JSON event per line on stdout, ending with a `summary` (docs/progress-events.md).
    Json,
}

impl From<ProgressMode> for crate::report::ProgressMode {
    fn from(p: ProgressMode) -> Self {
        match p {
            ProgressMode::Auto => crate::report::ProgressMode::Auto,
            ProgressMode::Tty => crate::report::ProgressMode::Tty,
            ProgressMode::Plain => crate::report::ProgressMode::Plain,
            ProgressMode::Json => crate::report::ProgressMode::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_command_has_examples_and_up_comes_first() {
        let mut cli = Cli::command();
        cli.build();
        let names: Vec<String> = cli
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(names.first().map(String::as_str), Some("up"));
        for sub in cli.get_subcommands_mut().filter(|c| c.get_name() != "help") {
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Examples:\n  slipway"), "{help}");
            assert!(help.contains("Global options:"), "{help}");
        }
    }
}
