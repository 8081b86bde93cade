//! `slipway up`: one command from source to a loaded cluster.
//!
//! It runs the steps the other commands run alone, in order, and passes results along in
//! memory: generated Dockerfiles are checked (missing ones written; a stale one rewritten, or
//! with `--locked` an error), every component is built in parallel (cached ones skipped),
//! images are pushed (`--push`), loaded into the detected cluster (or the load is skipped when
//! there is none), and manifests and the chart are emitted for exactly those images. It ends
//! with one table and the next command to run. The plan of each step is computed before that
//! step does anything; `--dry-run` prints the plans and stops. The cheap checks come first:
//! the config, the secrets and the cluster are resolved before any build starts.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::Session;
use crate::builder::{self as build, BuildOptions};
use crate::cli::UpArgs;
use crate::cluster::{self, LoadReport, NodeLoad};
use crate::config::Config;
use crate::detect::{Stack, Stacks};
use crate::docker::Daemon;
use crate::error::Fail;
use crate::generate::{self, Plan};
use crate::k8s;
use crate::record::{BuildReport, Outcome};
use crate::report::{fmt_bytes, fmt_duration, Event, Reporter};
use crate::reproduce::normalize::Handoff;

/// `slipway up`.
pub async fn run(session: &Session, args: UpArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock_unless(args.dry_run, &config).await?;
    let daemon = session.daemon().await?;
    let opts = UpOptions {
        metadata_file: session.path(args.metadata_file.clone()),
        env_file: session.path(args.env_file.clone()),
        args,
    };
    let Some(report) = pipeline(session, &config, &daemon, &opts).await? else {
        return Ok(());
    };
    session.result(&report);
    // A table wider than the terminal would wrap mid-cell: one block per component then.
    let width = std::io::stdout()
        .is_terminal()
        .then(|| console::Term::stdout().size().1 as usize);
    session.print(&render_for(&report, width));
    let failed = report.load.failed();
    if !failed.is_empty() {
        let nodes: Vec<String> = failed
            .iter()
            .map(|r| format!("{}@{}", r.component, r.node))
            .collect();
        return Err(Fail::job(format!("loading failed for {}", nodes.join(", ")))
            .hint("fix the node (see above) and run `slipway up` again: only what is missing is sent")
            .into());
    }
    Ok(())
}

/// The flags, with the paths they give taken from the current directory.
struct UpOptions {
    args: UpArgs,
    metadata_file: Option<PathBuf>,
    env_file: Option<PathBuf>,
}

/// What happened to one generated file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileState {
    pub path: String,
    pub state: State,
}

/// A generated file's state.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// As it should be.
    Current,
    /// Was missing.
    Written,
    /// Was stale.
    Regenerated,
    /// The user's own Dockerfile: never written.
    Own,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Current => "current",
            State::Written => "written",
            State::Regenerated => "regenerated",
            State::Own => "own",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The whole run: the `--metadata-file` JSON.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub app: String,
    pub dockerfiles: Vec<FileState>,
    pub build: BuildReport,
    pub load: LoadReport,
    pub manifests_dir: String,
    pub chart_dir: String,
    /// Secrets written empty because they were not set.
    pub missing_secrets: Vec<String>,
    /// The values file with the secret values for `helm -f` (when a component has secrets).
    pub secret_values: Option<String>,
    pub next: String,
    pub duration_ms: u64,
}

/// Step 1: make sure each generated Dockerfile (and ignore file) is current. Returns what
/// happened to each file, and the stacks detected to generate them.
fn dockerfiles(
    session: &Session,
    config: &Config,
    locked: bool,
    dry_run: bool,
) -> anyhow::Result<(Vec<FileState>, BTreeMap<String, Stack>)> {
    let mut states = Vec::new();
    let mut stale = Vec::new();
    let mut stacks = BTreeMap::new();
    for component in config.components.values() {
        let cp = generate::plan_component(config, component)?;
        match cp.plan {
            Plan::UserOwn { dockerfile } => states.push(FileState {
                path: dockerfile,
                state: State::Own,
            }),
            Plan::Generate {
                outputs, detection, ..
            } => {
                stacks.insert(cp.name, detection.stack);
                for out in outputs {
                    let state = match generate::check_output(&out)? {
                        None => State::Current,
                        Some(s) if s.diff.is_none() => State::Written,
                        Some(s) if locked => {
                            stale.push(s);
                            continue;
                        }
                        Some(_) => State::Regenerated,
                    };
                    if state != State::Current && !dry_run {
                        crate::fsutil::write_atomic(&out.path, out.text.as_bytes(), None)
                            .with_context(|| format!("writing {}", out.shown))?;
                        let did = match state {
                            State::Written => "wrote",
                            _ => "regenerated stale",
                        };
                        session.reporter.report(Event::Info {
                            message: format!("{did} {}", out.shown),
                        });
                    }
                    states.push(FileState {
                        path: out.shown,
                        state,
                    });
                }
            }
        }
    }
    if !stale.is_empty() {
        for s in &stale {
            if let Some(d) = &s.diff {
                session.print_err(d);
            }
        }
        let names: Vec<&str> = stale.iter().map(|s| s.shown.as_str()).collect();
        return Err(Fail::usage(format!(
            "--locked: generated files are out of date: {}",
            names.join(", ")
        ))
        .hint("run `slipway dockerfiles` and commit the result")
        .into());
    }
    Ok((states, stacks))
}

/// Runs the steps in order; `None` after a dry run, which prints the plans and stops.
async fn pipeline(
    session: &Session,
    config: &Config,
    daemon: &Daemon,
    opts: &UpOptions,
) -> anyhow::Result<Option<UpReport>> {
    let started = Instant::now();
    let reporter = session.reporter.as_ref();
    let args = &opts.args;
    let target = super::cluster_target(&args.cluster, config);

    // The cheap checks first (the config was read before): the secrets, then the cluster, so
    // that a missing secret under --locked or a wrong cluster fails before anything is built.
    let refuse_missing = args.locked && !args.allow_missing_secrets;
    let (secrets, missing) = secrets(config, opts.env_file.as_deref(), refuse_missing, reporter)?;
    let detection = cluster::Cluster::detect(&daemon.docker, &target).await?;
    if let cluster::Detection::Found(c) = &detection {
        reporter.report(Event::Info {
            message: format!("cluster: {}", cluster_found(c)),
        });
    }
    // A local registry wired into the cluster takes the images instead of each node.
    let found = match &detection {
        cluster::Detection::Found(c) => Some(c),
        cluster::Detection::NoCluster(_) => None,
    };
    // The nodes' registry wiring (an archive read per node and path) is asked while the plan
    // is made; a failure of either stops the other.
    let resolving = cluster::registry::resolve(
        &daemon.docker,
        found,
        config.cluster_registry.as_deref(),
        reporter,
    );
    let planning = async {
        // Detection runs once: for the generated Dockerfiles, then for the components that
        // bring their own; the plan and the manifests read the result.
        let (files, detected) = dockerfiles(session, config, args.locked, args.dry_run)?;
        let stacks = Stacks::of(config, detected);
        let plan_opts = build::PlanOptions {
            pull: (!args.no_pull && !args.dry_run).then(|| session.reporter.clone()),
            registry: args.push || config.images.registry,
            locked: args.locked,
            lazy_bases: !args.no_cache,
        };
        let plan = build::plan_pulling(config, daemon, &[], &stacks, plan_opts).await?;
        anyhow::Ok((files, stacks, plan))
    };
    let (local_registry, (files, stacks, plan)) = tokio::try_join!(resolving, planning)?;
    if let Some(r) = &local_registry {
        reporter.report(Event::Info {
            message: format!(
                "registry: {} (found in {}): images are pushed there, the nodes pull them",
                r.host, r.found_in
            ),
        });
    }
    let loads_nodes = found.is_some() && local_registry.is_none();
    let (mdir, cdir) = (manifests_dir(config), chart_dir(config));
    if args.dry_run {
        session.print(&preview(
            &files,
            &plan,
            &detection,
            local_registry.as_ref(),
            &mdir,
            &cdir,
        ));
        return Ok(None);
    }

    // With a cluster to load into node by node, each node is asked what it holds while the
    // builds run, and an image goes to the nodes as soon as its normal form is written, while
    // the daemon loads it back (`cluster::Loading`). The channel closes when the builds end.
    let builds_any = plan
        .components
        .iter()
        .any(|c| args.no_cache || !c.is_cached());
    let early = match (&detection, loads_nodes && builds_any) {
        (cluster::Detection::Found(c), true) => Some(c),
        _ => None,
    };
    let (ready, handed) = match early {
        Some(_) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let build_opts = BuildOptions {
        jobs: args.jobs.map(usize::from),
        fail_fast: args.fail_fast,
        no_cache: args.no_cache,
        metadata_file: None,
        // The images this run builds keep their normalised files until the load is done
        // (with no cluster to load into, nothing is kept).
        keep_normal_forms: loads_nodes,
        ready,
        no_pull: args.no_pull,
        registry: args.push || config.images.registry,
        // An image the registry has is pulled only to be loaded into a cluster found (or
        // pushed to its local registry).
        pull_found: found.is_some() || local_registry.is_some(),
        locked: args.locked,
        attestations: Some(crate::attest::dir(
            &config.root,
            opts.metadata_file.as_deref(),
        )),
        cache: args.cache.options(&session.cwd, &config.images.cache),
    };
    // The options (and with them the channel's sender) end with the builds.
    let plan = &plan;
    let building = async move {
        build::execute(session.reporter.clone(), config, daemon, plan, &build_opts).await
    };
    let loading_early = async {
        let (Some(cluster), Some(rx)) = (early, handed) else {
            return anyhow::Ok(None);
        };
        // Never an error here, which would cut the builds off: without a start the load
        // runs after the builds, as without a cluster found early.
        let Ok(mut loading) = cluster::Loading::start(daemon, cluster).await else {
            return Ok(None);
        };
        load_as_built(&mut loading, rx, plan, reporter).await;
        Ok(Some(loading))
    };
    // A failed or interrupted build ends the run at once: an early load under way is cut
    // off, and a node names no image from a cut-off import.
    let (built, loading) = tokio::try_join!(building, loading_early)?;
    let build::Built {
        report: mut built,
        images,
    } = built;
    if build::write_lock_if_absent(config, plan, true)? {
        reporter.report(Event::Info {
            message: format!("wrote {} (commit it)", crate::pins::FILE),
        });
    }
    if args.push {
        // The last build's record says what was pushed and why what was not was not
        // (`push_error`), as `build --push` leaves it.
        let pushed = crate::push::push_all(daemon, &mut built, reporter).await;
        crate::record::merge_last(config, &built, reporter)?;
        pushed?;
    }

    let load = match (&local_registry, loading) {
        (Some(r), _) => {
            let pushed = cluster::registry::push(daemon, r, found, &mut built, reporter).await?;
            // `manifests` and `chart` run alone name the images as pushed.
            crate::record::merge_last(config, &built, reporter)?;
            pushed
        }
        (None, Some(mut loading)) => {
            // What was not loaded while the builds ran (cached builds, a cluster made anew),
            // overlapped as `slipway load` does.
            let rest: Vec<_> = images.iter().filter(|i| !loading.has(i)).cloned().collect();
            loading.load_all(&rest, reporter).await;
            loading.finish(&images).await
        }
        (None, None) => cluster::load_detected(daemon, detection, &images, reporter).await?,
    };
    // The normal forms' files are removed now that the load is done.
    drop(images);

    let refs = built.deploy_refs();
    let k8s_opts = k8s::Options {
        pull_policy: args.pull_policy.into(),
        allow_missing_secrets: true,
        ..k8s::Options::for_stacks(config, &stacks)
    };
    k8s::emit_manifests(config, &refs, &secrets, &k8s_opts, &mdir)?;
    k8s::emit_chart(config, &refs, &k8s_opts, &cdir)?;
    let secret_values = k8s::emit_secret_values(config, &secrets, &cdir)?;

    let report = UpReport {
        app: config.app.name.clone(),
        dockerfiles: files,
        next: next_command(
            config,
            &load,
            target == crate::config::ClusterTarget::None,
            &mdir,
            &cdir,
            secret_values.as_deref(),
        ),
        secret_values: secret_values.map(|p| shown(config, &p)),
        build: built,
        load,
        manifests_dir: shown(config, &mdir),
        chart_dir: shown(config, &cdir),
        missing_secrets: missing,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    if let Some(path) = &opts.metadata_file {
        super::write_metadata(path, &report)?;
    }
    Ok(Some(report))
}

/// Loads each image the builds hand on ([`Handoff`]) into the nodes, until the builds end: as
/// soon as its normal form is written, or, when its files lack a layer some node lacks, once
/// its build is over (the daemon holds the image then, and its export gives that layer).
async fn load_as_built(
    loading: &mut cluster::Loading<'_>,
    mut handed: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
    plan: &build::BuildPlan,
    reporter: &dyn Reporter,
) {
    let mut waiting: Vec<crate::record::BuiltImage> = Vec::new();
    while let Some(handoff) = handed.recv().await {
        match handoff {
            Handoff::Written { component, ready } => {
                let Some(c) = plan.components.iter().find(|c| c.name == component) else {
                    continue;
                };
                let image = crate::record::BuiltImage {
                    component,
                    reference: c.image.clone(),
                    image_id: ready.image_id,
                    diff_ids: Some(ready.diff_ids),
                    normal_form: Some(ready.files),
                };
                // A later normal form of the same component (normalising took another way
                // after a failed load back) replaces the one waiting.
                waiting.retain(|w| w.component != image.component);
                if !loading.load_early(&image, reporter).await {
                    waiting.push(image);
                }
            }
            Handoff::Built { component } => {
                let at = waiting.iter().position(|w| w.component == component);
                if let Some(image) = at.map(|i| waiting.remove(i)) {
                    if !loading.has(&image) {
                        loading.load(&image, reporter).await;
                    }
                }
            }
        }
    }
}

/// The secret values, and the names (`component.SECRET`) of those not set: an error when
/// `refuse` (`--locked` without `--allow-missing-secrets`), else a warning (their values are
/// written empty).
fn secrets(
    config: &Config,
    env_file: Option<&Path>,
    refuse: bool,
    reporter: &dyn Reporter,
) -> anyhow::Result<(k8s::SecretValues, Vec<String>)> {
    let secrets = k8s::gather_secrets(config, env_file)?;
    let missing_pairs = k8s::manifests::missing_secrets(config, &secrets);
    let missing: Vec<String> = missing_pairs
        .iter()
        .map(|(c, s)| format!("{c}.{s}"))
        .collect();
    if !missing.is_empty() {
        let fail = Fail::usage(format!(
            "secrets not set: {}",
            k8s::manifests::describe_missing(&missing_pairs)
        ))
            .hint("export them, or pass --env-file PATH (a .env file); values are written only to the Secret manifests and the chart's secrets.values.yaml, both git-ignored (or pass --allow-missing-secrets to write them empty)");
        if refuse {
            return Err(fail.into());
        }
        reporter.report(Event::Warn {
            message: format!(
                "secrets not set, their Secret values are written empty: {} (set them or pass --env-file, then run `slipway up` again)",
                k8s::manifests::describe_missing(&missing_pairs)
            ),
        });
    }
    Ok((secrets, missing))
}

/// What `--dry-run` prints: every step's plan.
fn preview(
    files: &[FileState],
    plan: &build::BuildPlan,
    detection: &cluster::Detection,
    registry: Option<&cluster::registry::LocalRegistry>,
    mdir: &Path,
    cdir: &Path,
) -> String {
    let mut out = String::from("Dockerfiles:\n");
    for f in files {
        out.push_str(&format!("  {:<12} {}\n", f.state, f.path));
    }
    out.push('\n');
    out.push_str(&build::render_plan(plan));
    out.push('\n');
    let cluster = match detection {
        cluster::Detection::Found(c) => cluster_found(c),
        cluster::Detection::NoCluster(why) => format!("none ({why})"),
    };
    out.push_str(&format!("cluster: {cluster}\n"));
    if let Some(r) = registry {
        out.push_str(&format!(
            "registry: {} (found in {}): images are pushed there, not loaded node by node\n",
            r.host, r.found_in
        ));
    }
    out.push_str(&format!("manifests: {}\n", mdir.display()));
    out.push_str(&format!("chart: {}\n", cdir.display()));
    out.push_str("(dry run: nothing was built, loaded or written)\n");
    out
}

/// `kind:dev (nodes dev-control-plane, dev-worker)`.
fn cluster_found(c: &cluster::Cluster) -> String {
    let names: Vec<&str> = c.nodes().iter().map(|n| n.name.as_str()).collect();
    format!(
        "{} (node{} {})",
        c.target(),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// Where manifests go: `k8s/` next to slipway.toml.
fn manifests_dir(config: &Config) -> PathBuf {
    config.root.join("k8s")
}

/// Where the chart goes: `charts/APP`.
fn chart_dir(config: &Config) -> PathBuf {
    config.root.join("charts").join(&config.app.name)
}

fn shown(config: &Config, p: &Path) -> String {
    p.strip_prefix(&config.root)
        .ok()
        .filter(|r| !r.as_os_str().is_empty())
        .unwrap_or(p)
        .display()
        .to_string()
}

fn next_command(
    config: &Config,
    load: &LoadReport,
    chose_none: bool,
    mdir: &Path,
    cdir: &Path,
    secret_values: Option<&Path>,
) -> String {
    let ns = &config.app.namespace;
    let values = secret_values
        .map(|p| format!(" -f {}", shown(config, p)))
        .unwrap_or_default();
    let deploy = format!(
        "helm upgrade --install {} {}{values} --namespace {ns} --create-namespace   # or: kubectl create namespace {ns}; kubectl apply -f {}",
        config.app.name,
        shown(config, cdir),
        shown(config, mdir)
    );
    match &load.cluster {
        _ if load.registry.is_some() => deploy,
        Some(_) => deploy,
        None if chose_none => format!(
            "{deploy}   (cluster = none: the images were not loaded; the cluster must get them another way, e.g. `slipway load --cluster kind:NAME` or --push)"
        ),
        None => format!("{deploy}   (no local cluster was found: create one, e.g. `kind create cluster`, then run `slipway up` again to load the images)"),
    }
}

/// The closing table: one row per component, then the next command.
pub fn render(report: &UpReport) -> String {
    render_for(report, None)
}

/// [`render`] for a terminal `width` columns wide: a table that would not fit becomes one
/// block per component (`name  build  size  time`, then its image and its load indented).
pub fn render_for(report: &UpReport, width: Option<usize>) -> String {
    let mut loads: BTreeMap<&str, Vec<&NodeLoad>> = BTreeMap::new();
    for r in &report.load.results {
        loads.entry(r.component.as_str()).or_default().push(r);
    }
    let no_cluster = report
        .load
        .message
        .clone()
        .unwrap_or_else(|| "not loaded".into());
    let rows: Vec<[String; 6]> = report
        .build
        .components
        .iter()
        .map(|(name, r)| {
            let build = match (r.outcome, &r.reason) {
                (Outcome::Cached, _) => "cached".to_string(),
                (Outcome::Registry, _) => "cached (registry)".to_string(),
                (Outcome::Built, Some(why)) if why == "never built" => {
                    "built (first build)".to_string()
                }
                (Outcome::Built, Some(why)) => format!("built ({why})"),
                (o, None) => format!("{o:?}").to_lowercase(),
                (o, Some(why)) => format!("{} ({why})", format!("{o:?}").to_lowercase()),
            };
            let load = match loads.get(name.as_str()) {
                Some(l) => summarize_nodes(l),
                None => no_cluster.clone(),
            };
            [
                name.clone(),
                r.pushed.clone().unwrap_or_else(|| r.image.clone()),
                build,
                load,
                fmt_bytes(r.size),
                fmt_duration(Duration::from_millis(r.duration_ms)),
            ]
        })
        .collect();
    let heads = ["COMPONENT", "IMAGE", "BUILD", "LOAD", "SIZE", "TIME"];
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(heads[i].len())
        })
        .collect();
    let line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let table_width: usize = widths.iter().sum::<usize>() + 2 * 5;
    let mut out = String::new();
    if width.is_some_and(|w| table_width > w) {
        for r in &rows {
            out.push_str(&format!("{}  {}  {}  {}\n", r[0], r[2], r[4], r[5]));
            out.push_str(&format!("  image: {}\n  load:  {}\n", r[1], r[3]));
        }
    } else {
        out.push_str(&line(heads));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        }
    }
    out.push_str(&format!(
        "\nmanifests: {}/   chart: {}/   ({})\n",
        report.manifests_dir,
        report.chart_dir,
        fmt_duration(Duration::from_millis(report.duration_ms))
    ));
    if !report.missing_secrets.is_empty() {
        out.push_str(&format!(
            "warning: secrets not set, deployed empty: {} (set them or pass --env-file, then run `slipway up` again)\n",
            report.missing_secrets.join(", ")
        ));
    }
    if !report.next.is_empty() {
        out.push_str(&format!("next: {}\n", report.next));
    }
    out
}

/// One cell for an image's loads: `2 nodes: already present` when every node says the same,
/// else `node-a: ...; node-b: ...`.
fn summarize_nodes(loads: &[&NodeLoad]) -> String {
    match loads {
        [first, _, ..] if loads.iter().all(|l| l.outcome.alike(&first.outcome)) => {
            format!("{} nodes: {}", loads.len(), first.summary)
        }
        _ => loads
            .iter()
            .map(|l| format!("{}: {}", l.node, l.summary))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Outcome;

    fn node(node: &str, outcome: Outcome, summary: &str) -> NodeLoad {
        NodeLoad {
            component: "backend".into(),
            image: "shop/backend:0123".into(),
            image_id: "sha256:1".into(),
            node: node.into(),
            outcome,
            summary: summary.into(),
            bytes_sent: 0,
            duration_ms: 0,
        }
    }

    #[test]
    fn a_table_too_wide_for_the_terminal_becomes_blocks() {
        let mut build = BuildReport::default();
        build.components.insert(
            "frontend".into(),
            crate::record::ImageRecord {
                image: "registry.example.com/team/shop/frontend:0123456789ab".into(),
                repository: "registry.example.com/team/shop/frontend".into(),
                tag: "0123456789ab".into(),
                tags: vec![],
                image_id: "sha256:1".into(),
                input_digest: "sha256:2".into(),
                outcome: crate::record::Outcome::Built,
                reason: Some("never built".into()),
                duration_ms: 65_000,
                size: 331_700_000,
                pushed: None,
                push_error: None,
                attestations: Vec::new(),
            },
        );
        let report = UpReport {
            app: "shop".into(),
            dockerfiles: vec![],
            build,
            load: LoadReport {
                message: Some("cluster = none: images are not loaded".into()),
                ..Default::default()
            },
            manifests_dir: "k8s".into(),
            chart_dir: "charts/shop".into(),
            secret_values: None,
            missing_secrets: vec![],
            next: String::new(),
            duration_ms: 70_000,
        };
        let wide = render_for(&report, Some(150));
        assert!(wide.starts_with("COMPONENT  IMAGE"), "{wide}");
        assert!(wide.contains("built (first build)"), "{wide}");
        let narrow = render_for(&report, Some(80));
        assert!(narrow.starts_with("frontend  built (first build)  331.7 MB  1m05s\n  image: registry.example.com/team/shop/frontend:0123456789ab\n  load:  cluster = none"), "{narrow}");
        assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
    }

    #[test]
    fn node_cells_collapse_when_alike() {
        let present = || node("a", Outcome::AlreadyPresent, "already present");
        let same = [
            &present(),
            &node("b", Outcome::AlreadyPresent, "already present"),
        ];
        assert_eq!(summarize_nodes(&same), "2 nodes: already present");
        let sent = Outcome::Loaded {
            layers_sent: 1,
            layers_total: 5,
        };
        let loaded = [
            &node("a", sent, "loaded 1 of 5 layers (2 MB, 0.1s)"),
            &node("b", Outcome::AlreadyPresent, "already present"),
        ];
        assert_eq!(
            summarize_nodes(&loaded),
            "a: loaded 1 of 5 layers (2 MB, 0.1s); b: already present"
        );
    }
}
