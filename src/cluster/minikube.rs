//! minikube nodes: which runtime a profile uses, the node's own Docker daemon (what
//! `minikube docker-env` points at), and loading into that daemon through `docker load`.
//!
//! `docker load` looks a layer up by its chain ID before it opens the layer's file, so the
//! archive may leave out the leading layers whose chain the node's daemon already has. It works
//! per chain, not per layer: once one chain is missing, every layer above it must be sent, even
//! one the daemon has in another image.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::anyhow;
use bollard::Docker;
use serde::Serialize;

use super::exec;
use super::image::{normalize_ref, ImageMeta};
use super::Runtime;

/// One image in the node's daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DockerImage {
    pub id: String,
    /// Normalised (`docker.io/app/web:1`).
    pub tags: Vec<String>,
    pub diff_ids: Vec<String>,
}

/// What a node's Docker daemon holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub images: Vec<DockerImage>,
    /// Every chain ID the daemon has a layer for.
    pub chains: HashSet<String>,
}

impl State {
    pub fn new(images: Vec<DockerImage>) -> Self {
        let chains = images
            .iter()
            .flat_map(|i| super::image::chain_ids(&i.diff_ids))
            .collect();
        State { images, chains }
    }

    /// Records a successful load.
    pub fn add(&mut self, image: &ImageMeta) {
        self.chains.extend(image.chain_ids.iter().cloned());
        self.images.push(DockerImage {
            id: image.id.clone(),
            tags: vec![image.containerd_name()],
            diff_ids: image.diff_ids.clone(),
        });
    }
}

/// What to do for one image on a Docker node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Present,
    Retag {
        from: String,
    },
    /// Send every layer from index `skip` up (the ones below are there, chain and all).
    Load {
        skip: usize,
    },
}

// `join` fails on these fields in Docker 20.10's CLI (`expected []string`): range instead.
const FORMAT: &str =
    "{{.Id}}|{{range .RepoTags}}{{.}},{{end}}|{{range .RootFS.Layers}}{{.}},{{end}}";

/// One exec: every image's ID, tags and layers.
pub fn state_command() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "ids=$(docker image ls -aq --no-trunc | sort -u) && {{ [ -z \"$ids\" ] || docker image inspect --format '{FORMAT}' $ids; }}"
        ),
    ]
}

pub async fn query(docker: &Docker, node: &str) -> anyhow::Result<State> {
    let cmd = state_command();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = exec::run(docker, node, &cmd)
        .await?
        .check("listing the node's Docker images (docker image inspect)")?;
    Ok(parse_state(&out.stdout))
}

pub fn parse_state(stdout: &str) -> State {
    let images = stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(3, '|');
            let id = parts.next()?.to_string();
            if !id.starts_with("sha256:") {
                return None;
            }
            let split = |s: Option<&str>| -> Vec<String> {
                s.unwrap_or("")
                    .split(',')
                    .filter(|t| !t.is_empty() && *t != "<none>:<none>")
                    .map(str::to_string)
                    .collect()
            };
            let tags = split(parts.next())
                .iter()
                .map(|t| normalize_ref(t))
                .collect();
            let diff_ids = split(parts.next());
            Some(DockerImage { id, tags, diff_ids })
        })
        .collect();
    State::new(images)
}

pub fn plan(image: &ImageMeta, state: &State) -> Action {
    let name = image.containerd_name();
    let same: Vec<&DockerImage> = state.images.iter().filter(|i| i.id == image.id).collect();
    if same.iter().any(|i| i.tags.contains(&name)) {
        return Action::Present;
    }
    if !same.is_empty() {
        return Action::Retag {
            from: image.id.clone(),
        };
    }
    let skip = image
        .chain_ids
        .iter()
        .take_while(|c| state.chains.contains(*c))
        .count();
    Action::Load { skip }
}

pub async fn retag(docker: &Docker, node: &str, from: &str, to: &str) -> anyhow::Result<()> {
    exec::run(docker, node, &["docker", "tag", from, to])
        .await?
        .check("tagging the image (docker tag)")?;
    Ok(())
}

/// `docker load` of the archive on stdin and, once it succeeded, the ID the image's reference
/// names, in one exec: the ID follows [`exec::CHECK_FOLLOWS`]; [`check_load`] reads it. The
/// reference comes first on stdin, on a line of its own ([`exec::name_line`]), so the command
/// can start before the image is known; without a line it does nothing.
pub fn load_command() -> Vec<String> {
    let script = format!(
        "read -r reference || exit 0; docker load && echo '{}' && docker image inspect --format '{{{{.Id}}}}' \"$reference\"",
        exec::CHECK_FOLLOWS,
    );
    vec!["sh".into(), "-c".into(), script]
}

/// Reads the ID `docker image inspect` printed for `reference`: it must be `id`.
pub fn check_load(stdout: &str, reference: &str, id: &str) -> anyhow::Result<()> {
    let got = stdout.trim();
    if got != id {
        return Err(anyhow!("after the load, {reference} is {got}, not {id}"));
    }
    Ok(())
}

/// The `.minikube` directory: `MINIKUBE_HOME` (itself or its `.minikube`), else `~/.minikube`.
pub fn minikube_home() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("MINIKUBE_HOME").filter(|h| !h.is_empty()) {
        let h = PathBuf::from(h);
        return Some(if h.file_name().is_some_and(|n| n == ".minikube") {
            h
        } else {
            h.join(".minikube")
        });
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".minikube"))
}

/// The runtime the profile's configuration names, when minikube wrote one.
pub fn configured_runtime(profile: &str) -> Option<Runtime> {
    let path = minikube_home()?
        .join("profiles")
        .join(profile)
        .join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v.pointer("/KubernetesConfig/ContainerRuntime")?.as_str()? {
        "docker" => Some(Runtime::Docker),
        "containerd" => Some(Runtime::Containerd),
        _ => None,
    }
}

/// The node's runtime: minikube's profile configuration, else whatever answers in the node
/// (asked once per node container: the answer is remembered under its ID in the cache).
pub async fn runtime(
    docker: &Docker,
    profile: &str,
    node: &super::Node,
) -> anyhow::Result<Runtime> {
    if let Some(r) = configured_runtime(profile) {
        return Ok(r);
    }
    let cache = crate::leftovers::cache_dir().join("minikube-runtimes.json");
    let mut known: Vec<(String, Runtime)> = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some((_, r)) = known
        .iter()
        .find(|(id, _)| !node.id.is_empty() && *id == node.id)
    {
        return Ok(*r);
    }
    let r = probe_runtime(docker, &node.name).await?;
    if !node.id.is_empty() {
        known.insert(0, (node.id.clone(), r));
        known.truncate(32);
        if let Ok(bytes) = serde_json::to_vec(&known) {
            // A cache: a failure to write it costs the next run one exec.
            let _ = crate::fsutil::write_atomic(&cache, &bytes, None);
        }
    }
    Ok(r)
}

/// Asks the node which runtime answers in it.
async fn probe_runtime(docker: &Docker, node: &str) -> anyhow::Result<Runtime> {
    let out = exec::run(
        docker,
        node,
        &[
            "sh",
            "-c",
            "if docker version >/dev/null 2>&1; then echo docker; elif ctr -n k8s.io version >/dev/null 2>&1; then echo containerd; else echo none; fi",
        ],
    )
    .await?;
    match out.stdout.trim() {
        "docker" => Ok(Runtime::Docker),
        "containerd" => Ok(Runtime::Containerd),
        _ => Err(anyhow!(
            "neither a Docker daemon nor containerd answers in node {node} (CRI-O is not supported)"
        )),
    }
}

/// How to reach a minikube node's Docker daemon from here: what `minikube docker-env` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DockerEnv {
    /// `tcp://127.0.0.1:PORT` (the node's 2376 as published on the host).
    pub host: String,
    /// The profile's client certificates (`ca.pem`, `cert.pem`, `key.pem`), when present;
    /// real minikube serves TLS there.
    pub cert_path: Option<PathBuf>,
    pub tls_verify: bool,
}

/// The Docker endpoint of minikube profile `profile`'s node, if it runs the Docker runtime
/// and publishes the daemon's port. Building against it needs no load at all.
pub async fn minikube_docker_endpoint(
    docker: &Docker,
    profile: &str,
) -> anyhow::Result<Option<DockerEnv>> {
    let nodes = super::list_nodes(docker, super::MINIKUBE_LABEL, Some(profile)).await?;
    let Some(node) = nodes.iter().find(|n| n.name == profile).or(nodes.first()) else {
        return Ok(None);
    };
    if !node.running {
        return Ok(None);
    }
    if runtime(docker, profile, node).await? != Runtime::Docker {
        return Ok(None);
    }
    let info = docker
        .inspect_container(
            &node.name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let binding = info
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("2376/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().next());
    let Some(b) = binding else {
        return Ok(None);
    };
    let Some(port) = b.host_port.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let ip = match b.host_ip.as_deref() {
        None | Some("") | Some("0.0.0.0") | Some("::") => "127.0.0.1".to_string(),
        Some(ip) => ip.to_string(),
    };
    let cert_path = minikube_home()
        .map(|h| h.join("certs"))
        .filter(|c| c.join("ca.pem").is_file() && c.join("cert.pem").is_file());
    Ok(Some(DockerEnv {
        host: format!("tcp://{ip}:{port}"),
        tls_verify: cert_path.is_some(),
        cert_path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(layers: &[&str]) -> ImageMeta {
        ImageMeta::new(
            "web",
            "app/web:2",
            "sha256:new",
            layers.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn parses_images() {
        let s = parse_state(
            "sha256:aa|app/web:1,busybox:1.36,|sha256:l0,sha256:l1,\nsha256:bb||sha256:l0,\n",
        );
        assert_eq!(s.images.len(), 2);
        assert_eq!(
            s.images[0].tags,
            ["docker.io/app/web:1", "docker.io/library/busybox:1.36"]
        );
        assert!(s.images[1].tags.is_empty());
        assert!(s.chains.contains("sha256:l0"));
        assert_eq!(s.chains.len(), 2);
    }

    #[test]
    fn skips_only_the_leading_chains() {
        let s = parse_state("sha256:aa|app/web:1|sha256:l0,sha256:l1,sha256:l2\n");
        assert_eq!(
            plan(&img(&["sha256:l0", "sha256:l1", "sha256:x"]), &s),
            Action::Load { skip: 2 }
        );
        // l1 is there, but on top of l0, not of x: everything from x up goes.
        assert_eq!(
            plan(&img(&["sha256:x", "sha256:l1"]), &s),
            Action::Load { skip: 0 }
        );
        let mut s2 = s.clone();
        s2.add(&img(&["sha256:l0", "sha256:q"]));
        assert_eq!(plan(&img(&["sha256:l0", "sha256:q"]), &s2), Action::Present);
        let mut other = img(&["sha256:l0", "sha256:q"]);
        other.reference = "app/web:3".into();
        assert_eq!(
            plan(&other, &s2),
            Action::Retag {
                from: "sha256:new".into()
            }
        );
    }

    #[test]
    fn reads_the_profile_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".minikube/profiles/dev");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("config.json"),
            r#"{"KubernetesConfig":{"ContainerRuntime":"containerd"}}"#,
        )
        .unwrap();
        // MINIKUBE_HOME is read by one test only.
        std::env::set_var("MINIKUBE_HOME", dir.path());
        assert_eq!(configured_runtime("dev"), Some(Runtime::Containerd));
        assert_eq!(configured_runtime("other"), None);
        std::env::remove_var("MINIKUBE_HOME");
    }
}
