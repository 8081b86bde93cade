//! Loading images into a local cluster's nodes, sending only what each node lacks.
//!
//! kind, k3d and minikube nodes are containers on the same daemon, so slipway needs neither tool:
//! it finds the node containers by label, asks each node in one exec what it has, plans the
//! least work per image and node (nothing, a tag, or the missing layers), and then streams the
//! image once from the daemon into every node that needs part of it ([`transfer`]). Each
//! node's import is checked afterwards; a node that fails (stopped, vanished, import error)
//! fails alone, its incomplete image references are removed, and the next run sends only what
//! is still missing.

pub mod exec;
pub mod image;
pub mod kind;
pub mod minikube;
pub mod registry;
pub mod transfer;
mod unchanged;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bollard::Docker;
use futures_util::future::join_all;
use futures_util::StreamExt as _;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::archive::{self, ImageFiles};
use crate::config::ClusterTarget;
use crate::docker::{self, Daemon};
use crate::error::Fail;
use crate::record::BuiltImage;
use crate::report::{fmt_bytes, fmt_duration, Event, Reporter};

pub use image::ImageMeta;
pub use minikube::{minikube_docker_endpoint, DockerEnv};

pub const KIND_LABEL: &str = "io.x-k8s.kind.cluster";
pub const KIND_ROLE_LABEL: &str = "io.x-k8s.kind.role";
pub const MINIKUBE_LABEL: &str = "name.minikube.sigs.k8s.io";
pub const K3D_LABEL: &str = "k3d.cluster";
pub const K3D_ROLE_LABEL: &str = "k3d.role";

/// The image store inside a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Docker,
}

/// A node container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    /// The container's ID (a node made again has a new one).
    #[serde(skip)]
    pub id: String,
    /// `control-plane`, `worker` (kind's role label), `server`, `agent` (k3d's), or empty.
    pub role: String,
    pub running: bool,
    /// The container's state (`running`, `exited`, ...).
    pub state: String,
}

/// A local cluster and its nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Cluster {
    Kind {
        name: String,
        nodes: Vec<Node>,
    },
    Minikube {
        profile: String,
        nodes: Vec<Node>,
        runtime: Runtime,
    },
    K3d {
        name: String,
        nodes: Vec<Node>,
    },
}

impl Cluster {
    pub fn target(&self) -> ClusterTarget {
        match self {
            Cluster::Kind { name, .. } => ClusterTarget::Kind(name.clone()),
            Cluster::Minikube { profile, .. } => ClusterTarget::Minikube(profile.clone()),
            Cluster::K3d { name, .. } => ClusterTarget::K3d(name.clone()),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        match self {
            Cluster::Kind { nodes, .. }
            | Cluster::Minikube { nodes, .. }
            | Cluster::K3d { nodes, .. } => nodes,
        }
    }

    pub fn runtime(&self) -> Runtime {
        match self {
            Cluster::Kind { .. } | Cluster::K3d { .. } => Runtime::Containerd,
            Cluster::Minikube { runtime, .. } => *runtime,
        }
    }

    /// The socket of the nodes' containerd (when they run one).
    pub fn containerd_address(&self) -> &'static str {
        match self {
            Cluster::K3d { .. } => kind::K3S_ADDRESS,
            _ => kind::CONTAINERD_ADDRESS,
        }
    }

    /// Finds the cluster `target` names. `auto` reads the kube context, else looks for node
    /// containers; finding none is not an error.
    pub async fn detect(docker: &Docker, target: &ClusterTarget) -> anyhow::Result<Detection> {
        detect(docker, target).await
    }

    /// Loads `images` into every node of this cluster.
    pub async fn load(
        &self,
        daemon: &Daemon,
        images: &[BuiltImage],
        reporter: &dyn Reporter,
    ) -> anyhow::Result<LoadReport> {
        load_into(daemon, self, images, reporter).await
    }
}

/// What cluster detection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
    Found(Cluster),
    /// No local cluster to load into, and why (not an error: `up` goes on without a load).
    NoCluster(String),
}

/// The node containers carrying `label` (with value `value`, or any), control plane first.
pub async fn list_nodes(
    docker: &Docker,
    label: &str,
    value: Option<&str>,
) -> anyhow::Result<Vec<Node>> {
    Ok(list_labelled(docker, label, value)
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

/// `(label value, node)` for every container carrying `label`.
async fn list_labelled(
    docker: &Docker,
    label: &str,
    value: Option<&str>,
) -> anyhow::Result<Vec<(String, Node)>> {
    let filter = match value {
        Some(v) => format!("{label}={v}"),
        None => label.to_string(),
    };
    let filters = HashMap::from([("label".to_string(), vec![filter])]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .with_context(|| format!("listing node containers (label {label})"))?;
    let mut out: Vec<(String, Node)> = list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let cluster = labels.get(label)?.clone();
            let role = labels
                .get(KIND_ROLE_LABEL)
                .or_else(|| labels.get(K3D_ROLE_LABEL))
                .cloned()
                .unwrap_or_default();
            if !is_node(label, &role) {
                return None;
            }
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            let state = c.state.map(|s| s.to_string()).unwrap_or_default();
            Some((
                cluster,
                Node {
                    name,
                    id: c.id.unwrap_or_default(),
                    role,
                    running: state == "running",
                    state,
                },
            ))
        })
        .collect();
    let secondary = |n: &Node| n.role != "control-plane" && n.role != "server";
    out.sort_by(|(ca, a), (cb, b)| (ca, secondary(a), &a.name).cmp(&(cb, secondary(b), &b.name)));
    Ok(out)
}

/// Whether a container of a cluster is one of its nodes: kind's HA load balancer is not, nor
/// are k3d's load balancer, registry and tools containers (only `server` and `agent` are).
fn is_node(label: &str, role: &str) -> bool {
    match label {
        K3D_LABEL => role == "server" || role == "agent",
        _ => role != "external-load-balancer",
    }
}

/// Every local cluster whose node containers are on the daemon (kind's, minikube's, k3d's),
/// running or not, with its nodes.
pub async fn found(docker: &Docker) -> anyhow::Result<Vec<(ClusterTarget, Vec<Node>)>> {
    let mut found: Vec<(ClusterTarget, Vec<Node>)> = Vec::new();
    for (label, make) in [
        (
            KIND_LABEL,
            ClusterTarget::Kind as fn(String) -> ClusterTarget,
        ),
        (MINIKUBE_LABEL, ClusterTarget::Minikube),
        (K3D_LABEL, ClusterTarget::K3d),
    ] {
        for (value, node) in list_labelled(docker, label, None).await? {
            let t = make(value);
            match found.iter_mut().find(|(f, _)| *f == t) {
                Some((_, nodes)) => nodes.push(node),
                None => found.push((t, vec![node])),
            }
        }
    }
    Ok(found)
}

/// `kind:a (2 nodes), minikube:b (1 node, stopped)`.
pub fn describe_found(found: &[(ClusterTarget, Vec<Node>)]) -> String {
    let each: Vec<String> = found
        .iter()
        .map(|(t, nodes)| {
            let running = nodes.iter().filter(|n| n.running).count();
            let n = nodes.len();
            let state = match running {
                r if r == n => String::new(),
                0 => ", stopped".to_string(),
                r => format!(", {r} running"),
            };
            format!("{t} ({n} node{}{state})", if n == 1 { "" } else { "s" })
        })
        .collect();
    each.join(", ")
}

fn not_running_hint(
    target: &ClusterTarget,
    nodes: &[Node],
    others: &[(ClusterTarget, Vec<Node>)],
) -> String {
    if nodes.is_empty() {
        let pick = if others.is_empty() {
            "or pick another with --cluster (or `cluster = \"kind:NAME\"` at the top of slipway.toml)"
                .to_string()
        } else {
            format!(
                "or pick one of those found with --cluster (or `cluster = \"{}\"` at the top of slipway.toml): {}",
                others[0].0,
                describe_found(others)
            )
        };
        return match target {
            ClusterTarget::Kind(n) => {
                format!("create it with `kind create cluster --name {n}`, {pick}")
            }
            ClusterTarget::Minikube(p) => format!("start it with `minikube start -p {p}`, {pick}"),
            ClusterTarget::K3d(n) => format!(
                "create it with `k3d cluster create {n}` (or start it: `k3d cluster start {n}`), {pick}"
            ),
            _ => String::new(),
        };
    }
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    format!(
        "start its node containers: `docker start {}`; or build and write the manifests without loading: `slipway up --cluster none`",
        names.join(" ")
    )
}

async fn detect(docker: &Docker, target: &ClusterTarget) -> anyhow::Result<Detection> {
    match target {
        ClusterTarget::None => Ok(Detection::NoCluster(
            "cluster = none: images are not loaded".into(),
        )),
        ClusterTarget::Kind(name) | ClusterTarget::K3d(name) => {
            let (label, tool) = match target {
                ClusterTarget::K3d(_) => (K3D_LABEL, "k3d"),
                _ => (KIND_LABEL, "kind"),
            };
            let nodes = list_nodes(docker, label, Some(name)).await?;
            if !nodes.iter().any(|n| n.running) {
                let others = if nodes.is_empty() {
                    found(docker).await?
                } else {
                    Vec::new()
                };
                return Err(Fail::job(format!(
                    "{tool} cluster `{name}` is not running ({})",
                    describe_nodes(&nodes, label, name)
                ))
                .hint(not_running_hint(target, &nodes, &others))
                .into());
            }
            let name = name.clone();
            Ok(Detection::Found(match target {
                ClusterTarget::K3d(_) => Cluster::K3d { name, nodes },
                _ => Cluster::Kind { name, nodes },
            }))
        }
        ClusterTarget::Minikube(profile) => {
            let nodes = list_nodes(docker, MINIKUBE_LABEL, Some(profile)).await?;
            let Some(first) = nodes.iter().find(|n| n.running) else {
                let others = if nodes.is_empty() {
                    found(docker).await?
                } else {
                    Vec::new()
                };
                return Err(Fail::job(format!(
                    "minikube profile `{profile}` is not running ({})",
                    describe_nodes(&nodes, MINIKUBE_LABEL, profile)
                ))
                .hint(not_running_hint(target, &nodes, &others))
                .into());
            };
            let runtime = minikube::runtime(docker, profile, first).await?;
            Ok(Detection::Found(Cluster::Minikube {
                profile: profile.clone(),
                nodes,
                runtime,
            }))
        }
        ClusterTarget::Auto => {
            if let Some(ctx) = crate::kubeconfig::current() {
                return match &ctx.cluster {
                    t @ (ClusterTarget::Kind(_)
                    | ClusterTarget::Minikube(_)
                    | ClusterTarget::K3d(_)) => {
                        Box::pin(detect(docker, t)).await.with_context(|| {
                            format!(
                                "the current kube context `{}` ({}) names {t}",
                                ctx.name,
                                ctx.file.display()
                            )
                        })
                    }
                    _ => Ok(Detection::NoCluster(format!(
                        "the current kube context `{}` is not a kind, k3d or minikube cluster: images are not loaded",
                        ctx.name
                    ))),
                };
            }
            let found = found(docker).await?;
            match found.as_slice() {
                [] => Ok(Detection::NoCluster(
                    "no kube context and no kind, k3d or minikube node containers: images are not loaded"
                        .into(),
                )),
                [(one, _)] => Box::pin(detect(docker, one)).await,
                [(first, _), ..] => Err(Fail::usage(format!(
                    "several local clusters found ({}) and no kube context says which",
                    describe_found(&found)
                ))
                .hint(format!(
                    "pass --cluster {first} (or `cluster = \"{first}\"` at the top of slipway.toml)"
                ))
                .into()),
            }
        }
    }
}

fn describe_nodes(nodes: &[Node], label: &str, value: &str) -> String {
    if nodes.is_empty() {
        format!("no containers labelled {label}={value}")
    } else {
        let states: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} {}", n.name, n.state))
            .collect();
        states.join(", ")
    }
}

/// How a load of one image into one node ended.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    AlreadyPresent,
    Retagged {
        from: String,
    },
    Loaded {
        layers_sent: usize,
        layers_total: usize,
    },
    Failed {
        reason: String,
    },
    /// Pushed to the local registry the nodes pull from (only the blobs it lacked).
    Pushed,
}

impl Outcome {
    /// The outcome in words, without figures: `loaded 1 of 5 layers`, `already present`.
    pub fn words(&self) -> String {
        match self {
            Outcome::AlreadyPresent => "already present".to_string(),
            Outcome::Retagged { from } => format!("retagged (the image was there as {from})"),
            Outcome::Loaded {
                layers_sent,
                layers_total,
            } => format!("loaded {layers_sent} of {layers_total} layers"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
            Outcome::Pushed => "pushed, the nodes pull it".to_string(),
        }
    }

    /// The outcome as one word for scripts (`--progress json`): `already_present`,
    /// `retagged`, `loaded`, `failed`.
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::AlreadyPresent => "already_present",
            Outcome::Retagged { .. } => "retagged",
            Outcome::Loaded { .. } => "loaded",
            Outcome::Failed { .. } => "failed",
            Outcome::Pushed => "pushed",
        }
    }

    /// Whether two nodes' outcomes read the same in a table cell (a retag from any name is
    /// a retag).
    pub fn alike(&self, other: &Outcome) -> bool {
        match (self, other) {
            (Outcome::Retagged { .. }, Outcome::Retagged { .. }) => true,
            (a, b) => a == b,
        }
    }
}

/// One image on one node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeLoad {
    pub component: String,
    pub image: String,
    pub image_id: String,
    pub node: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The outcome in words: `loaded 1 of 5 layers (2.1 MB, 0.4s)`.
    pub summary: String,
    /// Bytes written into the node (archive framing included).
    pub bytes_sent: u64,
    pub duration_ms: u64,
}

/// What `load` did: the `--metadata-file` JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct LoadReport {
    /// `kind:NAME` / `minikube:PROFILE` / `k3d:NAME`, or `None` when there was no cluster.
    pub cluster: Option<String>,
    pub runtime: Option<Runtime>,
    /// Why nothing was loaded, when there was no cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The local registry pushed to instead of loading node by node (then `results` has one
    /// entry per image, its `node` the registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<registry::LocalRegistry>,
    pub results: Vec<NodeLoad>,
    pub bytes_sent: u64,
    pub duration_ms: u64,
}

impl LoadReport {
    pub fn ok(&self) -> bool {
        self.failed().is_empty()
    }

    pub fn failed(&self) -> Vec<&NodeLoad> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .collect()
    }
}

/// Loads `images` into the cluster `target` names. Node failures are in the report; errors are
/// for a cluster that cannot be found or used.
pub async fn load(
    daemon: &Daemon,
    target: &ClusterTarget,
    images: &[BuiltImage],
    reporter: &dyn Reporter,
) -> anyhow::Result<LoadReport> {
    let detection = detect(&daemon.docker, target).await?;
    load_detected(daemon, detection, images, reporter).await
}

/// Loads `images` into the cluster found before ([`Cluster::detect`]): `up` looks for it before
/// it builds anything, so a wrong cluster fails in a second, not after the builds.
pub async fn load_detected(
    daemon: &Daemon,
    detection: Detection,
    images: &[BuiltImage],
    reporter: &dyn Reporter,
) -> anyhow::Result<LoadReport> {
    match detection {
        Detection::NoCluster(message) => {
            reporter.report(Event::Info {
                message: format!("no cluster: {message}"),
            });
            Ok(LoadReport {
                message: Some(message),
                ..Default::default()
            })
        }
        Detection::Found(cluster) => load_into(daemon, &cluster, images, reporter).await,
    }
}

/// What slipway knows about one node during a run.
struct Slot {
    node: Node,
    runtime: Runtime,
    /// The socket of the node's containerd.
    address: &'static str,
    state: Result<NodeState, String>,
    /// Asked once per run, by the first import (see [`ready_to_import`]).
    snapshotter: tokio::sync::OnceCell<String>,
    /// An import command started while the builds run, waiting for its image
    /// ([`Loading::start`]); the first import into the node takes it.
    waiting: std::sync::Mutex<Option<exec::Started>>,
    /// Whether large layers go into the content store ahead of the archive
    /// ([`kind::import_command`]): a kind node's. (k3s' nodes run `ctr` as a multi-call
    /// binary beside busybox tools; they take the archive alone.)
    ahead: bool,
}

enum NodeState {
    Containerd(kind::State),
    Docker(minikube::State),
}

/// How long a node may take to list what it has.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

impl Slot {
    fn ctr(&self) -> kind::Ctr<'_> {
        kind::Ctr {
            node: &self.node.name,
            address: self.address,
        }
    }

    /// The command that reads an archive into this node: `ctr images import` or `docker
    /// load`, each taking the image's name as its first line ([`exec::name_line`]).
    fn import_command(&self) -> Vec<String> {
        match self.runtime {
            Runtime::Containerd => kind::import_command(
                self.ctr(),
                self.snapshotter.get().map_or("overlayfs", String::as_str),
                self.ahead,
            ),
            Runtime::Docker => minikube::load_command(),
        }
    }

    /// Starts the node's import command ahead of its image (see [`Slot::waiting`]); a node
    /// that cannot start it now gets a command of its own at its import.
    async fn start_waiting(&self, docker: &Docker) {
        if self.state.is_err() {
            return;
        }
        let cmd = self.import_command();
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        if let Ok(started) = exec::start(docker, &self.node.name, &cmd, true).await {
            *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        }
    }

    /// The import command started ahead, if it is still waiting for its input.
    fn take_waiting(&self) -> Option<exec::Started> {
        let started = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        started.filter(exec::Started::waits)
    }
}

async fn query(
    docker: &Docker,
    node: &Node,
    runtime: Runtime,
    address: &str,
) -> Result<NodeState, String> {
    if !node.running {
        return Err(format!(
            "node container {} is not running ({}); start it with `docker start {}`",
            node.name, node.state, node.name
        ));
    }
    let asked = async {
        match runtime {
            Runtime::Containerd => kind::query(
                docker,
                kind::Ctr {
                    node: &node.name,
                    address,
                },
            )
            .await
            .map(NodeState::Containerd),
            Runtime::Docker => minikube::query(docker, &node.name)
                .await
                .map(NodeState::Docker),
        }
    };
    match tokio::time::timeout(QUERY_TIMEOUT, asked).await {
        Ok(r) => r.map_err(|e| format!("{e:#}")),
        Err(_) => Err(format!(
            "node {} did not say what it has within {}s (is its {} stuck?)",
            node.name,
            QUERY_TIMEOUT.as_secs(),
            match runtime {
                Runtime::Containerd => "containerd",
                Runtime::Docker => "Docker daemon",
            }
        )),
    }
}

async fn load_into(
    daemon: &Daemon,
    cluster: &Cluster,
    images: &[BuiltImage],
    reporter: &dyn Reporter,
) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let docker = daemon.long()?;
    // A node whose image store did not change since it last held every image asked for is
    // not asked again (see `unchanged`); when that is every node, there is nothing to do.
    let (cache, host) = (crate::leftovers::cache_dir(), daemon.endpoint.host.as_str());
    let wanted = wanted(images);
    let prints = fingerprints(
        &docker,
        cluster.nodes(),
        cluster.runtime(),
        cluster.containerd_address(),
    )
    .await;
    let unchanged = !images.is_empty()
        && cluster.nodes().iter().zip(&prints).all(|(n, p)| {
            p.as_deref()
                .is_some_and(|p| unchanged::holds(&cache, host, &n.name, p, &wanted))
        });
    if unchanged {
        return Ok(all_present(cluster, images, reporter, started));
    }
    let mut loading = Loading::asking(daemon, cluster, docker, prints, started).await;
    loading.load_all(images, reporter).await;
    Ok(loading.finish(images).await)
}

/// The `name@config digest` of each image, as [`unchanged`] remembers what nodes hold.
fn wanted(images: &[BuiltImage]) -> BTreeSet<String> {
    images
        .iter()
        .map(|i| format!("{}@{}", image::normalize_ref(&i.reference), i.image_id))
        .collect()
}

/// A load into a cluster's nodes under way: each node asked once what it holds, then the
/// images in turn (overlapped by [`Loading::load_all`]), then the report. `up` starts one
/// while it builds and hands each image in as soon as its normal form is written
/// ([`Loading::load_early`]), so that the nodes load it while the daemon loads it back.
pub struct Loading<'a> {
    daemon: &'a Daemon,
    cluster: &'a Cluster,
    docker: Docker,
    containerd_store: bool,
    /// Each node's store as it was before the load ([`unchanged::fingerprint`]).
    prints: Vec<Option<String>>,
    slots: Vec<Slot>,
    results: Vec<NodeLoad>,
    started: Instant,
}

impl<'a> Loading<'a> {
    /// Asks every node what it holds (no image is sent yet), and makes the nodes ready to
    /// import, an import command started in each: for a load that starts while images are
    /// still being built.
    pub async fn start(daemon: &'a Daemon, cluster: &'a Cluster) -> anyhow::Result<Self> {
        let started = Instant::now();
        let docker = daemon.long()?;
        let (runtime, address) = (cluster.runtime(), cluster.containerd_address());
        let prints = fingerprints(&docker, cluster.nodes(), runtime, address).await;
        let loading = Loading::asking(daemon, cluster, docker, prints, started).await;
        join_all(loading.slots.iter().map(|s| async {
            ready_to_import(&loading.docker, s).await;
            s.start_waiting(&loading.docker).await;
        }))
        .await;
        Ok(loading)
    }

    async fn asking(
        daemon: &'a Daemon,
        cluster: &'a Cluster,
        docker: Docker,
        prints: Vec<Option<String>>,
        started: Instant,
    ) -> Self {
        let (runtime, address) = (cluster.runtime(), cluster.containerd_address());
        let (cache, host) = (crate::leftovers::cache_dir(), daemon.endpoint.host.as_str());
        // A Docker node whose store did not change since slipway last saw it is not asked what
        // it holds: the list from then stands (`unchanged::docker_images`).
        let states = join_all(cluster.nodes().iter().zip(&prints).map(|(n, print)| {
            let remembered = match (runtime, print) {
                (Runtime::Docker, Some(p)) if n.running => {
                    unchanged::docker_images(&cache, host, &n.name, p)
                }
                _ => None,
            };
            let docker = &docker;
            async move {
                match remembered {
                    Some(images) => Ok(NodeState::Docker(minikube::State::new(images))),
                    None => query(docker, n, runtime, address).await,
                }
            }
        }))
        .await;
        let slots = cluster
            .nodes()
            .iter()
            .cloned()
            .zip(states)
            .map(|(node, state)| Slot {
                node,
                runtime,
                address,
                state,
                snapshotter: Default::default(),
                waiting: Default::default(),
                ahead: matches!(cluster, Cluster::Kind { .. }),
            })
            .collect();
        Loading {
            daemon,
            cluster,
            containerd_store: daemon.containerd_store().await,
            docker,
            prints,
            slots,
            results: Vec::new(),
            started,
        }
    }

    /// Whether `image` (its ID and reference) was loaded already in this run.
    pub fn has(&self, image: &BuiltImage) -> bool {
        self.results
            .iter()
            .any(|r| r.image_id == image.image_id && r.image == image.reference)
    }

    /// Loads `image` now if its normal form's files hold every layer a node lacks (the daemon
    /// may not hold the image yet, so nothing can come from it); returns whether it did. An
    /// image it did not load is loaded by [`Loading::load`] once the daemon has it.
    pub async fn load_early(&mut self, image: &BuiltImage, reporter: &dyn Reporter) -> bool {
        if self.has(image) {
            return true;
        }
        let (Some(files), Some(diff_ids)) = (&image.normal_form, &image.diff_ids) else {
            return false;
        };
        let meta = ImageMeta::new(
            &image.component,
            &image.reference,
            &image.image_id,
            diff_ids.clone(),
        );
        let needed: std::collections::HashSet<String> =
            self.slots.iter().flat_map(|s| lacking(&meta, s)).collect();
        if files.lacks(&needed) {
            return false;
        }
        self.load(image, reporter).await;
        true
    }

    /// Loads `image` into every node, sending each only what it lacks.
    pub async fn load(&mut self, image: &BuiltImage, reporter: &dyn Reporter) {
        let (meta, source) = match self.prepare(image, reporter).await {
            Ok(prepared) => prepared,
            Err(failed) => return self.results.extend(failed),
        };
        let sent = send(&self.docker, meta, source, &self.slots, reporter).await;
        let settled = settle(&self.docker, sent, &self.slots, reporter).await;
        self.results.extend(settled.apply(&mut self.slots));
    }

    /// Loads `images` into every node in turn, as [`Loading::load`] does one, but overlapped:
    /// the daemon prepares the next image's export while the nodes read the current one
    /// (Docker 20.10 writes a whole `docker save` to its own disk before the first byte), and
    /// the next image streams while the nodes still unpack the last. An image that needs
    /// something the last one is still bringing waits for that import to end.
    pub async fn load_all(&mut self, images: &[BuiltImage], reporter: &dyn Reporter) {
        let mut queue = std::collections::VecDeque::new();
        for image in images {
            match self.prepare(image, reporter).await {
                Ok(prepared) => queue.push_back(prepared),
                Err(failed) => self.results.extend(failed),
            }
        }
        let docker = self.docker.clone();
        let mut pending: Option<Sent> = None;
        let mut prefetched: Option<Prefetched> = None;
        while let Some((meta, mut source)) = queue.pop_front() {
            if let Some(sent) = pending.take_if(|p| p.shares(&meta, &self.slots)) {
                let settled = settle(&docker, sent, &self.slots, reporter).await;
                self.results.extend(settled.apply(&mut self.slots));
            }
            // (A prefetched export of another image is dropped by `Source::stream`.)
            source.prefetched = prefetched.take();
            prefetched = queue.front().and_then(|(next, next_source)| {
                let sent_now: BTreeSet<&String> = meta.diff_ids.iter().collect();
                let needed = self
                    .slots
                    .iter()
                    .flat_map(|s| lacking(next, s))
                    .filter(|d| !sent_now.contains(d))
                    .collect();
                next_source
                    .exports_whole(&needed)
                    .then(|| Prefetched::start(docker.clone(), next.id.clone()))
            });
            let last = pending.take();
            let (sent, settled) =
                tokio::join!(send(&docker, meta, source, &self.slots, reporter), async {
                    match last {
                        Some(sent) => Some(settle(&docker, sent, &self.slots, reporter).await),
                        None => None,
                    }
                });
            if let Some(settled) = settled {
                self.results.extend(settled.apply(&mut self.slots));
            }
            pending = Some(sent);
        }
        if let Some(sent) = pending {
            let settled = settle(&docker, sent, &self.slots, reporter).await;
            self.results.extend(settled.apply(&mut self.slots));
        }
    }

    /// What is known of `image` and where its bytes come from; a failure is every node's.
    async fn prepare(
        &self,
        image: &BuiltImage,
        reporter: &dyn Reporter,
    ) -> Result<(ImageMeta, Source<'a>), Vec<NodeLoad>> {
        let (daemon, docker) = (self.daemon, &self.docker);
        let (component, reference, id) = (&image.component, &image.reference, &image.image_id);
        let known = image
            .diff_ids
            .clone()
            .map(|d| ImageMeta::new(component, reference, id, d));
        let normal_form = image.normal_form.clone();
        // The containerd image store names the image by its manifest digest and exports
        // compressed layers: unless this run normalised it, nodes know it by its config
        // digest, and get plain layers from an export if one of them lacks something.
        let export = (normal_form.is_none() && self.containerd_store).then(|| id.clone());
        let meta = match known {
            _ if export.is_some() => {
                containerd_meta(daemon, docker, component, reference, id).await
            }
            Some(meta) => Ok(meta),
            None => inspect(docker, component, reference, id).await,
        };
        let mut meta = match meta {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("{e:#}");
                let failed = self.slots.iter().map(|s| {
                    let task = format!("{component}@{}", s.node.name);
                    reporter.report(Event::failed(task, reason.clone()));
                    let reason = reason.clone();
                    let outcome = Outcome::Failed { reason };
                    node_load(
                        component,
                        reference,
                        id,
                        &s.node.name,
                        outcome,
                        0,
                        Duration::ZERO,
                    )
                });
                return Err(failed.collect());
            }
        };
        if let Some(files) = &normal_form {
            meta.sizes = files.sizes().clone();
        }
        let source = Source {
            daemon,
            normal_form,
            export,
            prefetched: None,
        };
        Ok((meta, source))
    }

    /// The report, in the order of `images` (every image of the run, those loaded early
    /// included); remembers what each node holds now for the next run.
    pub async fn finish(self, images: &[BuiltImage]) -> LoadReport {
        let Loading {
            daemon,
            cluster,
            docker,
            prints,
            slots,
            mut results,
            started,
            ..
        } = self;
        let (runtime, address) = (cluster.runtime(), cluster.containerd_address());
        let (cache, host) = (crate::leftovers::cache_dir(), daemon.endpoint.host.as_str());
        let wanted = wanted(images);
        let after = fingerprints(&docker, cluster.nodes(), runtime, address).await;
        for ((node, before), after) in cluster.nodes().iter().zip(&prints).zip(after) {
            let ended = results
                .iter()
                .filter(|r| r.node == node.name)
                .all(|r| !matches!(r.outcome, Outcome::Failed { .. }));
            let seen = after.filter(|_| ended).map(|a| (a, wanted.clone()));
            let print = seen.as_ref().map(|(a, _)| a.clone());
            unchanged::remember(&cache, host, &node.name, before.as_deref(), seen);
            let slot = slots.iter().find(|s| s.node.name == node.name);
            if let (Some(print), Some(Ok(NodeState::Docker(state)))) =
                (print, slot.map(|s| &s.state))
            {
                unchanged::remember_docker(&cache, host, &node.name, &print, state.images.clone());
            }
        }
        // Images in the run's order, nodes in the cluster's (a sort that keeps ties in order).
        let rank = |r: &NodeLoad| {
            let i = images.iter().position(|i| i.component == r.component);
            let n = cluster.nodes().iter().position(|n| n.name == r.node);
            (i.unwrap_or(usize::MAX), n.unwrap_or(usize::MAX))
        };
        results.sort_by_key(rank);
        let bytes_sent = results.iter().map(|r| r.bytes_sent).sum();
        LoadReport {
            cluster: Some(cluster.target().to_string()),
            runtime: Some(runtime),
            message: None,
            registry: None,
            results,
            bytes_sent,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// The layers (diff IDs) of `image` that the node of `slot` lacks, as far as what it said it
/// holds tells (none for a node that could not say: it fails alone).
fn lacking(image: &ImageMeta, slot: &Slot) -> Vec<String> {
    plan(image, slot)
        .map(|p| p.layers(image))
        .unwrap_or_default()
}

/// The least work for one node, from what it said it holds (nothing is asked of it here).
enum Plan {
    Containerd(kind::Action),
    Docker(minikube::Action),
}

fn plan(image: &ImageMeta, slot: &Slot) -> Result<Plan, String> {
    match &slot.state {
        Err(e) => Err(e.clone()),
        Ok(NodeState::Containerd(state)) => Ok(Plan::Containerd(kind::plan(image, state))),
        Ok(NodeState::Docker(state)) => Ok(Plan::Docker(minikube::plan(image, state))),
    }
}

impl Plan {
    /// The layers it sends, each once.
    fn layers(&self, image: &ImageMeta) -> Vec<String> {
        match self {
            Plan::Containerd(kind::Action::Import { missing }) => missing.clone(),
            Plan::Docker(minikube::Action::Load { skip }) => {
                let mut seen = std::collections::HashSet::new();
                image.diff_ids[*skip..]
                    .iter()
                    .filter(|d| seen.insert(*d))
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Makes a containerd node ready for imports (once per node and run): releases what an import
/// cut off by a node stop left (leases holding its blobs for 24 h, labels holding layers sent
/// ahead) and asks the snapshotter.
async fn ready_to_import(docker: &Docker, s: &Slot) {
    if s.runtime == Runtime::Containerd && s.state.is_ok() {
        s.snapshotter
            .get_or_init(|| async {
                let _ = kind::release_orphans(docker, s.ctr()).await;
                kind::snapshotter(docker, s.ctr())
                    .await
                    .unwrap_or_else(|_| "overlayfs".into())
            })
            .await;
    }
}

/// The stat of each running node's image store ([`unchanged::fingerprint`]).
async fn fingerprints(
    docker: &Docker,
    nodes: &[Node],
    runtime: Runtime,
    address: &str,
) -> Vec<Option<String>> {
    join_all(nodes.iter().map(|n| async move {
        match n.running {
            true => unchanged::fingerprint(docker, &n.name, runtime, address).await,
            false => None,
        }
    }))
    .await
}

/// The report of a load that found every image on every node without asking them.
fn all_present(
    cluster: &Cluster,
    images: &[BuiltImage],
    reporter: &dyn Reporter,
    started: Instant,
) -> LoadReport {
    let mut results = Vec::new();
    for image in images {
        for node in cluster.nodes() {
            let task = format!("{}@{}", image.component, node.name);
            reporter.report(Event::Started {
                estimate_ms: None,
                task: task.clone(),
                what: "load".into(),
            });
            let r = node_load(
                &image.component,
                &image.reference,
                &image.image_id,
                &node.name,
                Outcome::AlreadyPresent,
                0,
                Duration::ZERO,
            );
            report_outcome(reporter, &task, &r);
            results.push(r);
        }
    }
    LoadReport {
        cluster: Some(cluster.target().to_string()),
        runtime: Some(cluster.runtime()),
        message: None,
        registry: None,
        results,
        bytes_sent: 0,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// An image on a containerd-store daemon (`id`: its manifest digest) as nodes will know it:
/// by its config digest (kept in slipway's cache, else read from an export).
async fn containerd_meta(
    daemon: &crate::docker::Daemon,
    docker: &Docker,
    component: &str,
    reference: &str,
    id: &str,
) -> anyhow::Result<ImageMeta> {
    let daemon_view = inspect(docker, component, reference, id).await?;
    let cache = crate::leftovers::cache_dir();
    let config =
        docker::images::config_digest(daemon, reference, id, &daemon_view.diff_ids, &cache)
            .await
            .with_context(|| format!("component `{component}`: {reference}"))?;
    Ok(ImageMeta::new(
        component,
        reference,
        &config,
        daemon_view.diff_ids,
    ))
}

/// Where an image's bytes come from for the nodes that lack some.
struct Source<'a> {
    daemon: &'a crate::docker::Daemon,
    /// The files this run's normalising left.
    normal_form: Option<Arc<ImageFiles>>,
    /// On the containerd image store without them: the daemon's ID of the image, to export
    /// plain layers from (see [`crate::reproduce::normalize::export_plain`]).
    export: Option<String>,
    /// The daemon's `docker save` of it, asked for ahead of its turn ([`Loading::load_all`]).
    prefetched: Option<Prefetched>,
}

type ImageStream<'a> =
    futures_util::stream::BoxStream<'a, Result<bytes::Bytes, bollard::errors::Error>>;

impl<'a> Source<'a> {
    /// Whether the nodes' lacking `needed` (diff IDs) takes the daemon's `docker save`.
    fn exports_whole(&self, needed: &std::collections::HashSet<String>) -> bool {
        !needed.is_empty()
            && self.export.is_none()
            && self.normal_form.as_ref().is_none_or(|f| f.lacks(needed))
    }

    /// The image as an archive stream: the normal form's files (exported as plain layers
    /// first on the containerd store), else the daemon's `docker save`.
    /// `needed`: the layers some node lacks; normalising may have left files for only some
    /// layers (those above the ones an earlier image shares), and then the daemon's export
    /// is used when a node lacks another.
    async fn stream(
        self,
        image: &ImageMeta,
        needed: &std::collections::HashSet<String>,
    ) -> Result<ImageStream<'a>, String> {
        if let Some(files) = self.normal_form.filter(|f| !f.lacks(needed)) {
            return Ok(archive::save::stream(files).boxed());
        }
        let Some(id) = self.export else {
            if let Some(prefetched) = self.prefetched.filter(|p| p.id == image.id) {
                return Ok(prefetched.stream().boxed());
            }
            // The long bound on a response: a daemon may write the whole export to its own
            // disk before it sends the first byte (Docker 20.10's `docker save` does). Asked
            // for now, so that the daemon prepares it while the nodes are made ready.
            let docker = self.daemon.long().map_err(|e| format!("{e:#}"))?;
            return Ok(Prefetched::start(docker, image.id.clone()).stream().boxed());
        };
        let files = crate::reproduce::normalize::export_plain(self.daemon, &id)
            .await
            .map_err(|e| {
                format!(
                    "component `{}`: exporting {}: {e:#}",
                    image.component, image.reference
                )
            })?;
        if files.image_id != image.id {
            return Err(format!(
                "{} exported with config {}, not {}: run `slipway load` again",
                image.reference, files.image_id, image.id
            ));
        }
        Ok(archive::save::stream(Arc::new(files)).boxed())
    }
}

/// The daemon's `docker save` of an image, asked for before the image's turn: the request
/// runs in a task that holds the first chunks until the stream is read (the daemon's writes
/// wait meanwhile). Dropping it ends the request.
struct Prefetched {
    id: String,
    rx: mpsc::Receiver<Result<bytes::Bytes, bollard::errors::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prefetched {
    /// Asks `docker` (a client with the long bound on responses) for the export of `id`.
    fn start(docker: Docker, id: String) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let image = id.clone();
        let task = tokio::spawn(async move {
            let mut export = docker.export_image(&image);
            while let Some(chunk) = export.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Prefetched { id, rx, task }
    }

    fn stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> {
        futures_util::stream::unfold(self, |mut p| async move {
            p.rx.recv().await.map(|chunk| (chunk, p))
        })
    }
}

impl Drop for Prefetched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sent {
    /// Whether `next` needs something this send is still bringing to a node (or is the
    /// same image): then its import has to end first.
    fn shares(&self, next: &ImageMeta, slots: &[Slot]) -> bool {
        next.id == self.image.id
            || self.imports.iter().any(|(i, layers)| {
                let lacked = lacking(next, &slots[*i]);
                layers.iter().any(|l| lacked.contains(l))
            })
    }
}

/// What the daemon says about the image the build recorded.
async fn inspect(
    docker: &Docker,
    component: &str,
    reference: &str,
    id: &str,
) -> anyhow::Result<ImageMeta> {
    // Gone (removed or pruned since the build): said in full in each node's result, the fix
    // included, without the daemon's own 404 words.
    let info = docker.inspect_image(id).await.map_err(|e| match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } => anyhow!(
            "image {} ({reference}) of component `{component}` is no longer in the Docker \
             daemon (removed or pruned since the build): run `slipway build {component}` again",
            crate::docker::images::short_id(id)
        ),
        e => anyhow!(e).context(format!(
            "asking the Docker daemon for image {id} ({reference}) of component `{component}`"
        )),
    })?;
    let diff_ids = info
        .root_fs
        .and_then(|r| r.layers)
        .ok_or_else(|| anyhow!("the daemon lists no layers for {reference}"))?;
    Ok(ImageMeta::new(component, reference, id, diff_ids))
}

fn node_load(
    component: &str,
    reference: &str,
    id: &str,
    node: &str,
    outcome: Outcome,
    bytes_sent: u64,
    took: Duration,
) -> NodeLoad {
    let summary = match &outcome {
        Outcome::Loaded { .. } => format!(
            "{} ({}, {})",
            outcome.words(),
            fmt_bytes(bytes_sent),
            fmt_duration(took)
        ),
        _ => outcome.words(),
    };
    NodeLoad {
        component: component.to_string(),
        image: reference.to_string(),
        image_id: id.to_string(),
        node: node.to_string(),
        outcome,
        summary,
        bytes_sent,
        duration_ms: took.as_millis() as u64,
    }
}

/// What one node does for one image.
enum Step {
    Done(Outcome),
    Import {
        /// Diff IDs to send.
        layers: Vec<String>,
    },
}

async fn decide(docker: &Docker, image: &ImageMeta, slot: &Slot) -> Result<Step, String> {
    let name = image.containerd_name();
    match plan(image, slot)? {
        Plan::Containerd(kind::Action::Verify { digest }) => {
            match kind::manifest_is(docker, slot.ctr(), &digest, image).await {
                Ok(true) => Ok(Step::Done(Outcome::AlreadyPresent)),
                Ok(false) => Ok(Step::Import { layers: vec![] }),
                Err(e) => Err(format!("{e:#}")),
            }
        }
        Plan::Containerd(kind::Action::Present) | Plan::Docker(minikube::Action::Present) => {
            Ok(Step::Done(Outcome::AlreadyPresent))
        }
        Plan::Containerd(kind::Action::Retag { from }) => {
            kind::retag(docker, slot.ctr(), &from, &name)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done(Outcome::Retagged { from }))
        }
        Plan::Docker(minikube::Action::Retag { from }) => {
            minikube::retag(docker, &slot.node.name, &from, &image.reference)
                .await
                .map_err(|e| format!("{e:#}"))?;
            Ok(Step::Done(Outcome::Retagged { from }))
        }
        plan => Ok(Step::Import {
            layers: plan.layers(image),
        }),
    }
}

/// How many chunks may wait for a slow node before the stream waits for it.
const NODE_QUEUE: usize = 16;

/// What each node ended with (by slot), and the bytes written into it.
type Outcomes = BTreeMap<usize, (Outcome, u64)>;

/// A node's import that is under way: the command reading the archive, and the bytes it got.
type Importing = (
    Arc<AtomicU64>,
    // The check's output (see [`exec::after_check`]).
    tokio::task::JoinHandle<anyhow::Result<String>>,
);

/// An image whose archive went out to the nodes that lacked something; their imports may
/// still be running ([`settle`] waits for them and checks what they made).
struct Sent {
    image: ImageMeta,
    started: Instant,
    /// The nodes that needed nothing sent, or failed before anything was.
    outcomes: Outcomes,
    /// Each node sent the archive (slot) and the layers it lacked.
    imports: Vec<(usize, Vec<String>)>,
    /// Their imports, in the same order.
    running: Vec<Importing>,
    transfer: transfer::Transfer,
}

/// What the nodes ended with for one image ([`settle`]).
struct Settled {
    image: ImageMeta,
    results: Vec<NodeLoad>,
    /// The slots whose store now holds the image.
    changed: Vec<usize>,
    manifest_digest: Option<String>,
}

impl Settled {
    /// Remembers what the nodes hold now, for the next image of this run.
    fn apply(self, slots: &mut [Slot]) -> Vec<NodeLoad> {
        for i in &self.changed {
            remember(&mut slots[*i], &self.image, self.manifest_digest.as_deref());
        }
        self.results
    }
}

/// Decides what each node needs of `image` and streams it once into every node that lacks
/// something; returns when the stream has ended, with the nodes' imports still running.
async fn send(
    docker: &Docker,
    image: ImageMeta,
    source: Source<'_>,
    slots: &[Slot],
    reporter: &dyn Reporter,
) -> Sent {
    let started = Instant::now();
    for s in slots {
        reporter.report(Event::Started {
            estimate_ms: None,
            task: task(&image, s),
            what: "load".into(),
        });
    }
    let steps = join_all(slots.iter().map(|s| decide(docker, &image, s))).await;
    let mut outcomes = Outcomes::new();
    let mut imports: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Ok(Step::Done(o)) => {
                outcomes.insert(i, (o, 0));
            }
            Ok(Step::Import { layers }) => imports.push((i, layers)),
            Err(reason) => {
                outcomes.insert(i, (Outcome::Failed { reason }, 0));
            }
        }
    }
    let (mut running, mut transfer) = (Vec::new(), transfer::Transfer::default());
    if !imports.is_empty() {
        let needed = imports
            .iter()
            .flat_map(|(_, l)| l.iter().cloned())
            .collect();
        match source.stream(&image, &needed).await {
            Ok(stream) => {
                // The snapshotter is only needed for an import; asked once per node and run.
                join_all(
                    imports
                        .iter()
                        .map(|(i, _)| ready_to_import(docker, &slots[*i])),
                )
                .await;
                let sinks;
                (sinks, running) = imports
                    .iter()
                    .map(|(i, layers)| start_import(docker, &image, &slots[*i], layers, reporter))
                    .unzip();
                transfer = transfer::fan_out(stream, &image, sinks, reporter).await;
            }
            Err(reason) => {
                for (i, _) in imports.drain(..) {
                    let reason = reason.clone();
                    outcomes.insert(i, (Outcome::Failed { reason }, 0));
                }
            }
        }
    }
    Sent {
        image,
        started,
        outcomes,
        imports,
        running,
        transfer,
    }
}

/// Waits for the imports of a [`send`], checks each, and reports every node's outcome.
async fn settle(docker: &Docker, sent: Sent, slots: &[Slot], reporter: &dyn Reporter) -> Settled {
    let Sent {
        image,
        started,
        mut outcomes,
        imports,
        running,
        transfer,
    } = sent;
    let finished = join_all(running.into_iter().map(|(w, h)| async move {
        let r = h
            .await
            .unwrap_or_else(|e| Err(anyhow!("node task died: {e}")));
        (r, w.load(Ordering::Relaxed))
    }))
    .await;
    let digest = transfer.manifest_digest.as_deref();
    let image_ref = &image;
    let checks = imports.iter().zip(finished).zip(transfer.sinks.iter()).map(
        |(((i, _), (result, written)), sink)| async move {
            let outcome = finish(docker, image_ref, &slots[*i], result, sink, digest).await;
            let outcome = outcome.map(|()| Outcome::Loaded {
                layers_sent: sink.layers_sent,
                layers_total: image_ref.diff_ids.len(),
            });
            (*i, outcome, written)
        },
    );
    for (i, outcome, written) in join_all(checks).await {
        let outcome = outcome.unwrap_or_else(|reason| Outcome::Failed { reason });
        outcomes.insert(i, (outcome, written));
    }
    let changed = outcomes
        .iter()
        .filter(|(_, (outcome, _))| {
            matches!(outcome, Outcome::Retagged { .. } | Outcome::Loaded { .. })
        })
        .map(|(i, _)| *i)
        .collect();
    let took = started.elapsed();
    let results = outcomes
        .into_iter()
        .map(|(i, (outcome, written))| {
            let s = &slots[i];
            let r = node_load(
                &image.component,
                &image.reference,
                &image.id,
                &s.node.name,
                outcome,
                written,
                took,
            );
            report_outcome(reporter, &task(&image, s), &r);
            r
        })
        .collect();
    Settled {
        manifest_digest: transfer.manifest_digest,
        image,
        results,
        changed,
    }
}

/// The task of one image on one node: `backend@dev-worker`.
fn task(image: &ImageMeta, s: &Slot) -> String {
    format!("{}@{}", image.component, s.node.name)
}

fn report_outcome(reporter: &dyn Reporter, task: &str, r: &NodeLoad) {
    let task = task.to_string();
    match &r.outcome {
        Outcome::Failed { reason } => reporter.report(Event::failed(task, reason.clone())),
        // Reporters add the task's duration themselves.
        outcome => reporter.report(Event::Finished {
            task,
            outcome: outcome.code().into(),
            reason: None,
            detail: Some(match outcome {
                Outcome::Loaded { .. } => outcome.words(),
                _ => r.summary.clone(),
            }),
            changed_files: Vec::new(),
            bytes_sent: matches!(outcome, Outcome::Loaded { .. }).then_some(r.bytes_sent),
        }),
    }
}

/// Starts the command that reads one node's archive (`ctr images import` or `docker load`);
/// returns the sink the stream writes that archive into, and the running import.
fn start_import(
    docker: &Docker,
    image: &ImageMeta,
    s: &Slot,
    layers: &[String],
    reporter: &dyn Reporter,
) -> (transfer::Sink, Importing) {
    let (tx, rx) = mpsc::channel(NODE_QUEUE);
    let (format, name, what, check) = match s.runtime {
        Runtime::Containerd => (
            transfer::Format::Oci {
                name: image.containerd_name(),
                ahead: s.ahead,
            },
            image.containerd_name(),
            "the import (ctr images import)",
            "checking the image (ctr images check)",
        ),
        Runtime::Docker => (
            transfer::Format::DockerSave {
                repo_tag: image.reference.clone(),
            },
            image.reference.clone(),
            "the load (docker load)",
            "checking the loaded image (docker image inspect)",
        ),
    };
    // The command's first line; the channel is new, so there is room for it.
    let first = exec::name_line(&name).and_then(|line| {
        tx.try_send(exec::Chunk::Data(line))
            .map_err(|e| anyhow!("queueing the image's name: {e}"))
    });
    reporter.report(Event::Step {
        task: task(image, s),
        step: format!(
            "sending {} of {} layers",
            layers.len(),
            image.diff_ids.len()
        ),
        cached: false,
    });
    let sink = transfer::Sink {
        task: task(image, s),
        format,
        layers: layers.iter().cloned().collect(),
        tx,
    };
    let written = Arc::new(AtomicU64::new(0));
    let (d, node, w) = (docker.clone(), s.node.name.clone(), written.clone());
    let (waiting, cmd) = (s.take_waiting(), s.import_command());
    let handle = tokio::spawn(async move {
        first?;
        let started = match waiting {
            Some(started) => started,
            None => {
                let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
                exec::start(&d, &node, &cmd, true).await?
            }
        };
        started
            .feed(Some((rx, &w)))
            .await
            .and_then(|o| exec::after_check(o, what, check))
    });
    (sink, (written, handle))
}

/// Checks one node's import; on failure removes what it left and says why.
async fn finish(
    docker: &Docker,
    image: &ImageMeta,
    slot: &Slot,
    result: anyhow::Result<String>,
    sink: &transfer::SinkResult,
    manifest_digest: Option<&str>,
) -> Result<(), String> {
    let node = &slot.node.name;
    // The node's script checked what it made right after making it.
    let checked = result.and_then(|checked| match slot.runtime {
        Runtime::Containerd => {
            kind::check_import(&checked, &image.containerd_name(), manifest_digest)
        }
        Runtime::Docker => minikube::check_load(&checked, &image.reference, &image.id),
    });
    let Err(e) = checked else {
        return Ok(());
    };
    let mut reason = match &sink.error {
        // The stream's own reason is the root cause when it gave up on the node.
        Some(s) if s != "the node stopped reading the stream" => format!("{s} ({e:#})"),
        _ => format!("{e:#}"),
    };
    if let Some(state) = stopped(docker, node).await {
        reason = format!("node container {node} stopped during the load ({state}): {reason}");
    }
    if slot.runtime == Runtime::Containerd {
        match kind::cleanup(docker, slot.ctr(), image, manifest_digest).await {
            Ok(removed) if !removed.is_empty() => {
                reason.push_str(&format!(
                    "; removed the incomplete image ({})",
                    removed.join(", ")
                ));
            }
            Ok(_) => {}
            Err(_) if stopped(docker, node).await.is_some() => {}
            Err(c) => reason.push_str(&format!("; cleaning up also failed: {c:#}")),
        }
    }
    Err(reason)
}

/// The state of a node container that is no longer running.
async fn stopped(docker: &Docker, node: &str) -> Option<String> {
    match docker
        .inspect_container(
            node,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(info) => {
            let st = info.state?;
            if st.running == Some(true) {
                None
            } else {
                Some(
                    st.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "stopped".into()),
                )
            }
        }
        Err(_) => Some("removed".into()),
    }
}

fn remember(slot: &mut Slot, image: &ImageMeta, manifest_digest: Option<&str>) {
    match &mut slot.state {
        Ok(NodeState::Containerd(s)) => {
            s.blobs.extend(image.diff_ids.iter().cloned());
            s.blobs.insert(image.id.clone());
            let digest = manifest_digest.map(str::to_string).or_else(|| {
                s.refs
                    .iter()
                    .find(|(n, _)| *n == image.id)
                    .map(|(_, d)| d.clone())
            });
            if let Some(d) = digest {
                s.blobs.insert(d.clone());
                s.refs.push((image.containerd_name(), d.clone()));
                s.refs.push((image.id.clone(), d));
            }
        }
        Ok(NodeState::Docker(s)) => s.add(image),
        Err(_) => {}
    }
}

/// The report as a table for people.
pub fn render(report: &LoadReport) -> String {
    let Some(cluster) = &report.cluster else {
        return format!(
            "nothing loaded: {}\n",
            report.message.as_deref().unwrap_or("no cluster")
        );
    };
    let rows: Vec<[String; 3]> = report
        .results
        .iter()
        .map(|r| [r.component.clone(), r.node.clone(), r.summary.clone()])
        .collect();
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(9);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<w0$}  {:<w1$}  RESULT\n", "COMPONENT", "NODE");
    for r in &rows {
        out.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]));
    }
    let failed = report.failed().len();
    out.push_str(&format!(
        "{cluster}: {} sent in {}{}\n",
        fmt_bytes(report.bytes_sent),
        fmt_duration(Duration::from_millis(report.duration_ms)),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_and_agent_are_k3d_nodes() {
        assert!(is_node(K3D_LABEL, "server") && is_node(K3D_LABEL, "agent"));
        assert!(!is_node(K3D_LABEL, "loadbalancer") && !is_node(K3D_LABEL, "registry"));
        assert!(is_node(KIND_LABEL, "worker") && !is_node(KIND_LABEL, "external-load-balancer"));
    }

    #[test]
    fn renders_outcomes() {
        let report = LoadReport {
            cluster: Some("kind:dev".into()),
            runtime: Some(Runtime::Containerd),
            message: None,
            registry: None,
            results: vec![
                node_load(
                    "backend",
                    "shop/backend:0123",
                    "sha256:1",
                    "dev-control-plane",
                    Outcome::Loaded {
                        layers_sent: 1,
                        layers_total: 5,
                    },
                    2_100_000,
                    Duration::from_millis(400),
                ),
                node_load(
                    "backend",
                    "shop/backend:0123",
                    "sha256:1",
                    "dev-worker",
                    Outcome::Failed {
                        reason: "node container dev-worker is not running (exited)".into(),
                    },
                    0,
                    Duration::ZERO,
                ),
            ],
            bytes_sent: 2_100_000,
            duration_ms: 500,
        };
        let text = render(&report);
        assert_eq!(
            text,
            "COMPONENT  NODE               RESULT\n\
             backend    dev-control-plane  loaded 1 of 5 layers (2.1 MB, 400ms)\n\
             backend    dev-worker         failed: node container dev-worker is not running (exited)\n\
             kind:dev: 2.1 MB sent in 500ms, 1 failed\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["results"][0]["status"], "loaded");
        assert_eq!(json["results"][0]["layers_sent"], 1);
        assert_eq!(json["results"][1]["status"], "failed");
        assert!(!report.ok());
        assert_eq!(
            render(&LoadReport {
                message: Some("no kube context".into()),
                ..Default::default()
            }),
            "nothing loaded: no kube context\n"
        );
    }
}
