//! A local registry wired into the cluster (KEP-1755, "local registry hosting"): the kind +
//! registry recipe, ctlptl, k3d's `--registry-create`. With one, `up` pushes each image there
//! (the registry says which blobs it has, so only the missing ones travel) instead of loading it
//! node by node, and the manifests and chart name it by digest; every node pulls what it lacks
//! when a pod needs it, in parallel.
//!
//! Which registry: `[cluster] registry` in slipway.toml; else the cluster's
//! `kube-public/local-registry-hosting` ConfigMap (read with kubectl when the current kube
//! context names the cluster and its API answers); else the nodes' containerd `certs.d`: a
//! `hosts.toml` for a local host (`localhost:5001`) on every node is the recipe's wiring, read
//! with one `docker exec` per node. Nothing found: the load goes node by node as before.
//!
//! The ConfigMap may say that the nodes know the registry by another name
//! (`hostFromContainerRuntime`): slipway pushes to `host` and writes that name into the
//! manifests. (`hostFromClusterNetwork` is for pods that talk to the registry themselves; no
//! manifest slipway writes does.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

use super::{exec, kind, Cluster, LoadReport, NodeLoad, Outcome, Runtime};
use crate::docker::Daemon;
use crate::error::Fail;
use crate::record::BuildReport;
use crate::report::{fmt_duration, Event, Reporter};

/// The ConfigMap KEP-1755 defines, in `kube-public`.
pub const HOSTING_CONFIGMAP: &str = "local-registry-hosting";
/// Its key holding the `LocalRegistryHostingV1` document.
pub const HOSTING_KEY: &str = "localRegistryHosting.v1";
/// Where containerd reads per-registry `hosts.toml` files in kind nodes (the recipe's
/// `config_path`), and where k3s writes them (from `registries.yaml`).
pub const CERTS_D: [&str; 2] = [
    "/etc/containerd/certs.d",
    "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
];

/// The registry `up` pushes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalRegistry {
    /// Where the Docker daemon pushes: `localhost:5001`.
    pub host: String,
    /// The name the manifests use, which the nodes' container runtime resolves (KEP-1755
    /// `hostFromContainerRuntime`; the same as `host` when the nodes map it in `certs.d`).
    pub from_nodes: String,
    /// Where slipway found it, in words.
    pub found_in: String,
}

impl LocalRegistry {
    /// The configured one (`[cluster] registry`).
    pub fn configured(host: &str) -> Self {
        LocalRegistry {
            host: host.to_string(),
            from_nodes: host.to_string(),
            found_in: "slipway.toml ([cluster] registry)".into(),
        }
    }

    /// The repository an image of `repository` (`PREFIX/NAME`, maybe with a registry host of
    /// its own) gets in this registry: `HOST/PREFIX/NAME`, the prefix's own host left out.
    pub fn repository(&self, repository: &str) -> String {
        let path = match repository.split_once('/') {
            Some((first, rest)) if crate::push::registry_of(repository) == first => rest,
            _ => repository,
        };
        format!("{}/{path}", self.host)
    }

    /// `HOST/PREFIX/NAME@sha256:...` as the nodes name it.
    fn for_nodes(&self, pushed: &str) -> String {
        match pushed.strip_prefix(&self.host) {
            Some(rest) => format!("{}{rest}", self.from_nodes),
            None => pushed.to_string(),
        }
    }
}

/// KEP-1755's `LocalRegistryHostingV1`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct HostingV1 {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    host_from_container_runtime: Option<String>,
}

#[derive(Deserialize)]
struct ConfigMap {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The registry the `local-registry-hosting` ConfigMap (as `kubectl get -o yaml` prints it)
/// describes; `None` when it names no host.
pub fn from_configmap(yaml: &str) -> anyhow::Result<Option<LocalRegistry>> {
    let cm: ConfigMap = serde_norway::from_str(yaml)
        .context("the local-registry-hosting ConfigMap is not a ConfigMap")?;
    let Some(doc) = cm.data.get(HOSTING_KEY) else {
        return Ok(None);
    };
    let hosting: HostingV1 = serde_norway::from_str(doc)
        .with_context(|| format!("the ConfigMap's {HOSTING_KEY} is not LocalRegistryHostingV1"))?;
    let Some(host) = hosting.host.filter(|h| crate::config::is_registry_host(h)) else {
        return Ok(None);
    };
    Ok(Some(LocalRegistry {
        from_nodes: hosting
            .host_from_container_runtime
            .filter(|h| crate::config::is_registry_host(h))
            .unwrap_or_else(|| host.clone()),
        host,
        found_in: format!("ConfigMap kube-public/{HOSTING_CONFIGMAP}"),
    }))
}

/// How long kubectl may take to answer for the ConfigMap (an API server that is down must not
/// hold `up` up).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(5);

/// The ConfigMap's YAML from the cluster of kube context `context`, read with kubectl; an error
/// says why not (no kubectl, no API server, no such ConfigMap).
pub async fn read_configmap(context: &str) -> Result<String, String> {
    let run = tokio::process::Command::new("kubectl")
        .args([
            "--context",
            context,
            "--request-timeout",
            "3s",
            "--namespace",
            "kube-public",
            "get",
            "configmap",
            HOSTING_CONFIGMAP,
            "--output",
            "yaml",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(KUBECTL_TIMEOUT, run).await {
        Err(_) => Err(format!(
            "kubectl did not answer within {}s",
            KUBECTL_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("kubectl cannot run: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("kubectl failed")
            .to_string()),
    }
}

/// One `hosts.toml` of a node: the registry host it is for and the servers it sends pulls to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsFile {
    /// The `certs.d` directory it is in.
    pub dir: String,
    /// The registry host (the file's directory name): `localhost:5001`.
    pub host: String,
    /// `server = ...` and each `[host."..."]`, in order.
    pub upstreams: Vec<String>,
}

/// Reads a listing of `hosts.toml` files: each file's text after a `==> PATH` line.
pub fn parse_listing(stdout: &str) -> Vec<HostsFile> {
    let mut out: Vec<HostsFile> = Vec::new();
    for line in stdout.lines() {
        if let Some(path) = line.strip_prefix("==> ") {
            let path = path.trim().trim_end_matches("/hosts.toml");
            if let Some((dir, host)) = path.rsplit_once('/') {
                out.push(HostsFile {
                    dir: dir.to_string(),
                    host: host.to_string(),
                    upstreams: Vec::new(),
                });
            }
            continue;
        }
        let Some(file) = out.last_mut() else { continue };
        let line = line.trim();
        let quoted = |s: &str| s.split('"').nth(1).map(str::to_string);
        let upstream = if let Some(rest) = line.strip_prefix("server") {
            rest.trim_start()
                .starts_with('=')
                .then(|| quoted(rest))
                .flatten()
        } else if line.starts_with("[host.") {
            quoted(line)
        } else {
            None
        };
        file.upstreams.extend(upstream);
    }
    out
}

/// Whether a registry host is one on this machine, as the recipe's are: `localhost:PORT`,
/// `NAME.localhost`, a loopback address.
pub fn is_local(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name.starts_with("127.")
        || name == "[::1]"
}

/// Each running node's `hosts.toml` files (or why they could not be read), through the
/// daemon's archive API (`GET /containers/NODE/archive`): no process runs in the nodes, so a
/// no-op `up` stays a few requests.
pub async fn node_hosts(
    docker: &Docker,
    cluster: &Cluster,
) -> Vec<(String, Result<Vec<HostsFile>, String>)> {
    on_running_nodes(cluster, |node| async move {
        let mut listing = String::new();
        for dir in CERTS_D {
            listing.push_str(&hosts_files(docker, &node, dir).await?);
        }
        Ok(parse_listing(&listing))
    })
    .await
}

/// The `hosts.toml` files under `dir` in `node`, as [`parse_listing`] reads them; nothing
/// when the node has no such directory.
async fn hosts_files(docker: &Docker, node: &str, dir: &str) -> Result<String, String> {
    use futures_util::TryStreamExt;
    let options = bollard::query_parameters::DownloadFromContainerOptions {
        path: dir.to_string(),
    };
    let tar: Vec<u8> = match docker
        .download_from_container(node, Some(options))
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
    {
        Ok(tar) => tar,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(String::new()),
        Err(e) => return Err(format!("reading {dir} in node {node}: {e}")),
    };
    // The archive names entries from the directory's own name: `certs.d/HOST/hosts.toml`.
    let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
    let mut listing = String::new();
    let mut archive = tar::Archive::new(&tar[..]);
    let entries = archive
        .entries()
        .map_err(|e| format!("reading {dir} in node {node}: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading {dir} in node {node}: {e}"))?;
        let path = entry.path().map(|p| p.to_string_lossy().to_string());
        let Ok(path) = path else { continue };
        if !entry.header().entry_type().is_file() || !path.ends_with("/hosts.toml") {
            continue;
        }
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut entry, &mut text).is_ok() {
            listing.push_str(&format!("==> {parent}/{path}\n{text}\n"));
        }
    }
    Ok(listing)
}

/// `ask` of every running node of `cluster`, all at once: `(node, answer)`, control plane first.
async fn on_running_nodes<T, F, Fut>(cluster: &Cluster, ask: F) -> Vec<(String, T)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let running: Vec<String> = cluster
        .nodes()
        .iter()
        .filter(|n| n.running)
        .map(|n| n.name.clone())
        .collect();
    let answers = join_all(running.iter().cloned().map(ask)).await;
    running.into_iter().zip(answers).collect()
}

/// The local registry `up` pushes to, if any: the configured one, else the ConfigMap's, else
/// the one every running node maps in `certs.d`. Several candidates in `certs.d` are an error
/// (which one is for slipway?); one on some nodes only is a warning, and the load goes node by
/// node.
pub async fn resolve(
    docker: &Docker,
    cluster: Option<&Cluster>,
    configured: Option<&str>,
    reporter: &dyn Reporter,
) -> anyhow::Result<Option<LocalRegistry>> {
    if let Some(host) = configured {
        return Ok(Some(LocalRegistry::configured(host)));
    }
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    if let Some(ctx) = crate::kubeconfig::current().filter(|c| c.cluster == cluster.target()) {
        if let Ok(yaml) = read_configmap(&ctx.name).await {
            if let Some(found) = from_configmap(&yaml)? {
                return Ok(Some(found));
            }
        }
    }
    if cluster.runtime() != Runtime::Containerd {
        return Ok(None);
    }
    from_certs_d(&node_hosts(docker, cluster).await, reporter)
}

/// The registry the nodes' `certs.d` files agree on (see [`resolve`]).
fn from_certs_d(
    nodes: &[(String, Result<Vec<HostsFile>, String>)],
    reporter: &dyn Reporter,
) -> anyhow::Result<Option<LocalRegistry>> {
    let mut on: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, files) in nodes {
        for f in files.as_ref().map(Vec::as_slice).unwrap_or_default() {
            if is_local(&f.host) {
                on.entry(f.host.as_str()).or_default().push(node);
            }
        }
    }
    let (everywhere, some): (Vec<_>, Vec<_>) = on.iter().partition(|(_, n)| n.len() == nodes.len());
    for (host, wired) in &some {
        reporter.report(Event::Warn {
            message: format!(
                "the local registry {host} is wired into node(s) {} only (containerd certs.d): loading node by node (set `registry = \"{host}\"` under [cluster] in slipway.toml to push to it anyway)",
                wired.join(", ")
            ),
        });
    }
    match everywhere.as_slice() {
        [] => Ok(None),
        [(host, _)] => Ok(Some(LocalRegistry {
            host: host.to_string(),
            from_nodes: host.to_string(),
            found_in: format!("the nodes' containerd certs.d ({host}/hosts.toml)"),
        })),
        several => {
            let hosts: Vec<&str> = several.iter().map(|(h, _)| **h).collect();
            Err(Fail::usage(format!(
                "the nodes' containerd certs.d wires several local registries ({})",
                hosts.join(", ")
            ))
            .hint(format!(
                "say which one slipway pushes to: `registry = \"{}\"` under [cluster] in slipway.toml",
                hosts[0]
            ))
            .into())
        }
    }
}

/// Pushes each component's image of `report` to `registry` and pins it there
/// (`pushed = HOST/PREFIX/NAME@sha256:...`, the name the nodes resolve). An image the registry
/// already has under its input-digest tag is not pushed again. A failed push fails the run: the
/// manifests would name an image nobody can pull.
pub async fn push(
    daemon: &Daemon,
    registry: &LocalRegistry,
    cluster: Option<&Cluster>,
    report: &mut BuildReport,
    reporter: &dyn Reporter,
) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, rec) in report.components.iter_mut() {
        let t0 = Instant::now();
        let task = format!("{name}@{}", registry.host);
        reporter.report(Event::Started {
            estimate_ms: None,
            task: task.clone(),
            what: "push".into(),
        });
        let repo = registry.repository(&rec.repository);
        let fail = |e: anyhow::Error| {
            reporter.report(Event::failed(&task, format!("{e:#}")));
            e.context(format!(
                "pushing component `{name}` to the local registry {} (found in {})",
                registry.host, registry.found_in
            ))
        };
        let (pinned, outcome) = match crate::push::lookup(daemon, &repo, &rec.tag).await {
            Ok(Some(digest)) => (format!("{repo}@{digest}"), Outcome::AlreadyPresent),
            Ok(None) => {
                let pinned = send(daemon, &rec.image_id, &repo, &rec.tag, &task, reporter)
                    .await
                    .map_err(fail)?;
                (pinned, Outcome::Pushed)
            }
            Err(e) => return Err(fail(e)),
        };
        let pinned = registry.for_nodes(&pinned);
        let took = t0.elapsed();
        let summary = match outcome {
            Outcome::Pushed => format!("{} ({})", outcome.words(), fmt_duration(took)),
            _ => "already in the registry".to_string(),
        };
        if outcome == Outcome::AlreadyPresent {
            // (The push reported its own end.)
            reporter.report(Event::Finished {
                task,
                outcome: outcome.code().into(),
                reason: None,
                detail: Some(format!("{summary}: {pinned}")),
                changed_files: Vec::new(),
                bytes_sent: None,
            });
        }
        results.push(NodeLoad {
            component: name.clone(),
            image: pinned.clone(),
            image_id: rec.image_id.clone(),
            node: registry.host.clone(),
            outcome,
            summary,
            bytes_sent: 0,
            duration_ms: took.as_millis() as u64,
        });
        rec.pushed = Some(pinned);
    }
    Ok(LoadReport {
        cluster: cluster.map(|c| c.target().to_string()),
        runtime: cluster.map(Cluster::runtime),
        message: None,
        registry: Some(registry.clone()),
        results,
        bytes_sent: 0,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The one place an image goes to the local registry: slipway's own push of the normal form
/// `local` (only the blobs the registry lacks travel); returns `REPO@sha256:...`.
async fn send(
    daemon: &Daemon,
    local: &str,
    repository: &str,
    tag: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<String> {
    let tags = [tag.to_string()];
    crate::push::push_image(daemon, local, repository, &tags, &[], task, reporter).await
}

/// Whether one node pulls from the registry: `Ok(what answered)` or `Err(why not)`.
pub type NodeResolves = (String, Result<String, String>);

/// Asks each running containerd node to resolve a tag that does not exist in the registry, as
/// the nodes would resolve `HOST/...` for a pod (through `certs.d`): the registry answering
/// "not found" means the node reaches it.
pub async fn probe(
    docker: &Docker,
    cluster: &Cluster,
    registry: &LocalRegistry,
) -> Vec<NodeResolves> {
    let reference = format!("{}/slipway-doctor/probe:absent", registry.from_nodes);
    let address = cluster.containerd_address();
    let dir = match cluster {
        Cluster::K3d { .. } => CERTS_D[1],
        _ => CERTS_D[0],
    };
    on_running_nodes(cluster, |node| {
        let cmd = kind::Ctr {
            node: &node,
            address,
        }
        .command(&["images", "pull", "--hosts-dir", dir, &reference]);
        async move {
            let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
            match exec::run(docker, &node, &cmd).await {
                Err(e) => Err(format!("{e:#}")),
                Ok(out) => {
                    let text = format!("{}\n{}", out.stdout, out.stderr);
                    if text.contains("not found") || text.contains("404") {
                        Ok(format!("resolves {}", registry.from_nodes))
                    } else {
                        Err(out.tail())
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorder;

    #[test]
    fn reads_the_hosting_configmap() {
        let yaml = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/k8s/local-registry-hosting.yaml"
        ))
        .unwrap();
        let r = from_configmap(&yaml).unwrap().unwrap();
        assert_eq!(r.host, "localhost:5001");
        assert_eq!(r.from_nodes, "kind-registry:5000");
        assert_eq!(
            r.for_nodes("localhost:5001/shop/api@sha256:ab"),
            "kind-registry:5000/shop/api@sha256:ab"
        );
        let plain = "data:\n  localRegistryHosting.v1: |\n    host: \"localhost:5001\"\n";
        let r = from_configmap(plain).unwrap().unwrap();
        assert_eq!(
            (r.host.as_str(), r.from_nodes.as_str()),
            ("localhost:5001", "localhost:5001")
        );
        assert_eq!(from_configmap("data: {}\n").unwrap(), None);
        assert!(from_configmap("data: [1]").is_err());
    }

    #[test]
    fn repositories_in_the_registry() {
        let r = LocalRegistry::configured("localhost:5001");
        assert_eq!(r.repository("shop/api"), "localhost:5001/shop/api");
        assert_eq!(r.repository("ghcr.io/org/api"), "localhost:5001/org/api");
        assert_eq!(r.repository("api"), "localhost:5001/api");
    }

    #[test]
    fn reads_certs_d_and_picks_the_local_registry() {
        let listing = "==> /etc/containerd/certs.d/localhost:5001/hosts.toml\n[host.\"http://kind-registry:5000\"]\n\n==> /etc/containerd/certs.d/docker.io/hosts.toml\nserver = \"https://registry-1.docker.io\"\n[host.\"https://mirror.example\"]\n  capabilities = [\"pull\"]\n";
        let files = parse_listing(listing);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].host, "localhost:5001");
        assert_eq!(files[0].dir, "/etc/containerd/certs.d");
        assert_eq!(files[0].upstreams, ["http://kind-registry:5000"]);
        assert_eq!(
            files[1].upstreams,
            ["https://registry-1.docker.io", "https://mirror.example"]
        );
        assert!(is_local("localhost:5001") && is_local("k3d-reg.localhost:5000"));
        assert!(is_local("127.0.0.1:5000") && !is_local("docker.io"));

        let rec = Recorder::default();
        let both = vec![
            ("a".to_string(), Ok(files.clone())),
            ("b".to_string(), Ok(files.clone())),
        ];
        let found = from_certs_d(&both, &rec).unwrap().unwrap();
        assert_eq!(found.host, "localhost:5001");
        assert!(found.found_in.contains("certs.d"));
        let one = vec![
            ("a".to_string(), Ok(files.clone())),
            ("b".to_string(), Ok(vec![])),
        ];
        assert_eq!(from_certs_d(&one, &rec).unwrap(), None);
        let warned = format!("{:?}", rec.events());
        assert!(warned.contains("node(s) a only"), "{warned}");
        let mut two = files.clone();
        two.push(HostsFile {
            dir: CERTS_D[0].into(),
            host: "localhost:5002".into(),
            upstreams: vec![],
        });
        let e = from_certs_d(&[("a".into(), Ok(two))], &rec).unwrap_err();
        assert!(
            format!("{e:#}").contains("several local registries"),
            "{e:#}"
        );
    }
}
