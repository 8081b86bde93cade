//! Whether a node's image store changed since slipway last saw every image it wants there.
//!
//! Asking a node what it holds takes a process in the node (`docker exec`: 0.1-1 s). When
//! nothing changed since the last run (the common case of a no-op `up`), a stat of the file its
//! image store writes on every change says so in a few milliseconds, through the daemon's
//! archive API (`HEAD /containers/{id}/archive`): containerd's metadata database
//! (`meta.db`: images, content and leases all live there), or the Docker daemon's tag file and
//! image directory on a minikube node. slipway remembers, per daemon and node, that stat as it
//! was right after a run in which every image ended on the node, with those images; a later run
//! that wants only those images and finds the same stat asks the node nothing. Any write to the
//! store (an image removed by hand or by the kubelet's image garbage collector, a pod started)
//! changes the stat, and the node is asked again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bollard::query_parameters::ContainerArchiveInfoOptions;
use bollard::Docker;
use serde::{Deserialize, Serialize};

use super::minikube::DockerImage;
use super::{kind, Runtime};

const CACHE_FILE: &str = "node-images.json";

/// The files a node's image store writes when its images change.
fn watched(runtime: Runtime, address: &str) -> Vec<&'static str> {
    match runtime {
        Runtime::Containerd if address == kind::K3S_ADDRESS => {
            vec!["/var/lib/rancher/k3s/agent/containerd/io.containerd.metadata.v1.bolt/meta.db"]
        }
        Runtime::Containerd => vec!["/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"],
        Runtime::Docker => vec![
            "/var/lib/docker/image/overlay2/repositories.json",
            "/var/lib/docker/image/overlay2/imagedb/content/sha256",
        ],
    }
}

/// The stat of the node's watched files (size, mode and mtime of each, as the daemon reports
/// them), or `None` when the daemon cannot say.
pub async fn fingerprint(
    docker: &Docker,
    node: &str,
    runtime: Runtime,
    address: &str,
) -> Option<String> {
    let mut parts = Vec::new();
    for path in watched(runtime, address) {
        let options = ContainerArchiveInfoOptions {
            path: path.to_string(),
        };
        let stat = docker
            .get_container_archive_info(node, Some(options))
            .await
            .ok()?;
        let mtime = stat.modification_time?;
        parts.push(format!("{path}:{}:{}:{mtime}", stat.size, stat.file_mode));
    }
    Some(parts.join(" "))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    /// `<daemon host> <node>` → what it held, and the stat it had then.
    nodes: BTreeMap<String, Seen>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Seen {
    fingerprint: String,
    /// `<name>@<image ID>` of each image the node held.
    images: BTreeSet<String>,
    /// On a Docker node: every image its daemon held then, with its layers (what a load
    /// plans from), so that a run that finds the same stat need not list them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    docker: Option<Vec<DockerImage>>,
}

fn key(host: &str, node: &str) -> String {
    format!("{host} {node}")
}

fn read(cache_dir: &Path) -> Memory {
    std::fs::read(cache_dir.join(CACHE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Whether the node held every one of `images` when its store last had `fingerprint`.
pub fn holds(
    cache_dir: &Path,
    host: &str,
    node: &str,
    fingerprint: &str,
    images: &BTreeSet<String>,
) -> bool {
    read(cache_dir)
        .nodes
        .get(&key(host, node))
        .is_some_and(|seen| seen.fingerprint == fingerprint && images.is_subset(&seen.images))
}

/// Notes what the node holds after a run (`seen`: the stat of its store after the run and the
/// images the run asked for; `None` when some failed: forget the node). The images it held
/// before the run count too when its store had not changed before the run began (`before`
/// equals what was remembered): a load adds images, it does not remove any.
pub fn remember(
    cache_dir: &Path,
    host: &str,
    node: &str,
    before: Option<&str>,
    seen: Option<(String, BTreeSet<String>)>,
) {
    let mut memory = read(cache_dir);
    let k = key(host, node);
    let changed = match seen {
        Some((fingerprint, mut images)) => {
            if let Some(old) = memory.nodes.get(&k) {
                if before == Some(old.fingerprint.as_str()) {
                    images.extend(old.images.iter().cloned());
                }
            }
            let seen = Seen {
                fingerprint,
                images,
                docker: None,
            };
            memory.nodes.insert(k, seen.clone()) != Some(seen)
        }
        None => memory.nodes.remove(&k).is_some(),
    };
    if !changed {
        return;
    }
    let _ = std::fs::create_dir_all(cache_dir);
    // A cache: losing it costs one question per node, so a failed write is not an error.
    if let Ok(bytes) = serde_json::to_vec_pretty(&memory) {
        let _ = crate::fsutil::write_atomic(&cache_dir.join(CACHE_FILE), &bytes, None);
    }
}

/// What a Docker node's daemon held when its store last had `fingerprint`, if slipway saw it
/// then ([`remember_docker`]).
pub fn docker_images(
    cache_dir: &Path,
    host: &str,
    node: &str,
    fingerprint: &str,
) -> Option<Vec<DockerImage>> {
    read(cache_dir)
        .nodes
        .remove(&key(host, node))
        .filter(|seen| seen.fingerprint == fingerprint)
        .and_then(|seen| seen.docker)
}

/// Adds to what [`remember`] noted for a Docker node the images its daemon holds (the list the
/// run started from, with what it loaded), while the note is for `fingerprint`.
pub fn remember_docker(
    cache_dir: &Path,
    host: &str,
    node: &str,
    fingerprint: &str,
    images: Vec<DockerImage>,
) {
    let mut memory = read(cache_dir);
    let Some(seen) = memory.nodes.get_mut(&key(host, node)) else {
        return;
    };
    if seen.fingerprint != fingerprint || seen.docker.as_ref() == Some(&images) {
        return;
    }
    seen.docker = Some(images);
    if let Ok(bytes) = serde_json::to_vec_pretty(&memory) {
        let _ = crate::fsutil::write_atomic(&cache_dir.join(CACHE_FILE), &bytes, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_what_it_held_only_while_its_store_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        remember(
            dir.path(),
            "h",
            "n1",
            None,
            Some(("f1".into(), set(&["a@1", "b@2"]))),
        );
        assert!(holds(dir.path(), "h", "n1", "f1", &set(&["a@1"])));
        assert!(holds(dir.path(), "h", "n1", "f1", &set(&["a@1", "b@2"])));
        // Another image, another stat, another node, another daemon: ask the node.
        assert!(!holds(dir.path(), "h", "n1", "f1", &set(&["a@3"])));
        assert!(!holds(dir.path(), "h", "n1", "f2", &set(&["a@1"])));
        assert!(!holds(dir.path(), "h", "n2", "f1", &set(&["a@1"])));
        assert!(!holds(dir.path(), "g", "n1", "f1", &set(&["a@1"])));
        // A run that began on the remembered store adds to what it held; one that did not
        // replaces it.
        remember(
            dir.path(),
            "h",
            "n1",
            Some("f1"),
            Some(("f2".into(), set(&["c@4"]))),
        );
        assert!(holds(dir.path(), "h", "n1", "f2", &set(&["a@1", "c@4"])));
        remember(
            dir.path(),
            "h",
            "n1",
            Some("f9"),
            Some(("f3".into(), set(&["d@5"]))),
        );
        assert!(!holds(dir.path(), "h", "n1", "f3", &set(&["a@1"])));
        assert!(holds(dir.path(), "h", "n1", "f3", &set(&["d@5"])));
        remember(dir.path(), "h", "n1", Some("f3"), None);
        assert!(!holds(dir.path(), "h", "n1", "f3", &set(&["d@5"])));
    }

    #[test]
    fn a_docker_nodes_images_stand_only_while_its_store_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let images = vec![DockerImage {
            id: "sha256:a".into(),
            tags: vec!["docker.io/app/web:1".into()],
            diff_ids: vec!["sha256:l0".into()],
        }];
        let seen = |f: &str| Some((f.to_string(), BTreeSet::from(["web@sha256:a".to_string()])));
        // Nothing noted for the node yet: nothing to add the images to.
        remember_docker(dir.path(), "h", "n", "f1", images.clone());
        assert_eq!(docker_images(dir.path(), "h", "n", "f1"), None);
        remember(dir.path(), "h", "n", None, seen("f1"));
        remember_docker(dir.path(), "h", "n", "f1", images.clone());
        assert_eq!(
            docker_images(dir.path(), "h", "n", "f1"),
            Some(images.clone())
        );
        assert_eq!(docker_images(dir.path(), "h", "n", "f2"), None);
        assert_eq!(docker_images(dir.path(), "h", "m", "f1"), None);
        // A new stat noted without a list forgets the old list.
        remember(dir.path(), "h", "n", Some("f1"), seen("f2"));
        assert_eq!(docker_images(dir.path(), "h", "n", "f2"), None);
    }
}
