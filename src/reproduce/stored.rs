//! Which normal layers a daemon holds already, so that loading a normal form back leaves them
//! out.
//!
//! After a one-line change most of an image's layers are rewritten to the same normal form as
//! last time (a dependency layer's mtimes are clamped again, to the same bytes): the daemon
//! holds that layer already, under the image slipway loaded last time. Neither image store has
//! an API to ask for a layer, so slipway remembers, per daemon, the images it loaded (by what
//! the daemon calls them: the manifest digest on the containerd image store, the config digest
//! on the classic one) and their layers. A layer counts as held only while an image that names
//! it still exists on the daemon: the image keeps its layers (the containerd store's blobs, the
//! classic store's chain) from being removed. A memory that is lost costs only a bigger load.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

const CACHE_FILE: &str = "loaded-layers.json";
/// Images remembered per daemon: the newest few are where a rebuilt image's layers are.
const KEEP: usize = 32;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    /// Per daemon endpoint, newest first.
    daemons: std::collections::BTreeMap<String, Vec<Loaded>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Loaded {
    /// What the daemon calls the image (its manifest digest).
    image: String,
    /// The uncompressed layer blobs its manifest names.
    layers: Vec<String>,
}

fn read(cache_dir: &Path) -> Memory {
    std::fs::read(cache_dir.join(CACHE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Notes that the daemon at `host` holds the image `image` (a manifest digest) whose manifest
/// names the uncompressed blobs `layers`.
pub fn remember(cache_dir: &Path, host: &str, image: &str, layers: Vec<String>) {
    let mut memory = read(cache_dir);
    let list = memory.daemons.entry(host.to_string()).or_default();
    list.retain(|l| l.image != image);
    list.insert(
        0,
        Loaded {
            image: image.to_string(),
            layers,
        },
    );
    list.truncate(KEEP);
    let _ = std::fs::create_dir_all(cache_dir);
    // A cache: losing it costs one bigger load, so a failed write is not an error.
    if let Ok(bytes) = serde_json::to_vec_pretty(&memory) {
        let _ = crate::fsutil::write_atomic(&cache_dir.join(CACHE_FILE), &bytes, None);
    }
}

/// Which of `wanted` (uncompressed layer digests) the daemon at `host` holds: those named by a
/// remembered image for which `exists` says the daemon still has it (asked at most once per
/// image, newest first, and only while some of `wanted` is still unaccounted for).
pub async fn held<F, Fut>(
    cache_dir: &Path,
    host: &str,
    wanted: &HashSet<String>,
    exists: F,
) -> HashSet<String>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let memory = read(cache_dir);
    let mut held = HashSet::new();
    for loaded in memory.daemons.get(host).into_iter().flatten() {
        if held.len() == wanted.len() {
            break;
        }
        let useful: Vec<&String> = loaded
            .layers
            .iter()
            .filter(|l| wanted.contains(*l) && !held.contains(*l))
            .collect();
        if useful.is_empty() || !exists(loaded.image.clone()).await {
            continue;
        }
        held.extend(useful.into_iter().cloned());
    }
    held
}

/// How many of `layers` (diff IDs, bottom first) the daemon at `host` holds as one chain: the
/// longest run from the bottom that a remembered image for which `exists` says the daemon
/// still has it shares (the classic image store keeps layers by chain, so a layer counts only
/// with everything below it).
pub async fn held_chain<F, Fut>(cache_dir: &Path, host: &str, layers: &[String], exists: F) -> usize
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let memory = read(cache_dir);
    let mut best = 0;
    for loaded in memory.daemons.get(host).into_iter().flatten() {
        let shared = layers
            .iter()
            .zip(&loaded.layers)
            .take_while(|(a, b)| a == b)
            .count();
        if shared > best && exists(loaded.image.clone()).await {
            best = shared;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_layer_counts_as_held_only_while_an_image_naming_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let layers = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        remember(dir.path(), "tcp://a", "m1", layers(&["l1", "l2"]));
        remember(dir.path(), "tcp://a", "m2", layers(&["l2", "l3"]));
        remember(dir.path(), "tcp://b", "m3", layers(&["l4"]));
        let wanted = set(&["l1", "l2", "l3", "l4"]);
        let all = held(dir.path(), "tcp://a", &wanted, |_| async { true }).await;
        assert_eq!(all, set(&["l1", "l2", "l3"]));
        // m2 is gone: only what m1 names is held.
        let some = held(dir.path(), "tcp://a", &wanted, |m| async move { m == "m1" }).await;
        assert_eq!(some, set(&["l1", "l2"]));
        // Another daemon's memory does not count.
        assert!(held(dir.path(), "tcp://c", &wanted, |_| async { true })
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn a_chain_counts_from_the_bottom_and_only_while_its_image_exists() {
        let dir = tempfile::tempdir().unwrap();
        let layers = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        remember(dir.path(), "h", "i1", layers(&["a", "b", "c"]));
        remember(dir.path(), "h", "i2", layers(&["a", "x", "c"]));
        let want = layers(&["a", "b", "d"]);
        assert_eq!(
            held_chain(dir.path(), "h", &want, |_| async { true }).await,
            2
        );
        let gone = |m: String| async move { m != "i1" };
        assert_eq!(held_chain(dir.path(), "h", &want, gone).await, 1);
        assert_eq!(
            held_chain(dir.path(), "h", &layers(&["z"]), |_| async { true }).await,
            0
        );
    }

    #[tokio::test]
    async fn each_image_is_asked_about_at_most_once_and_only_when_useful() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            remember(dir.path(), "h", &format!("m{i}"), vec![format!("l{i}")]);
        }
        let asked = std::sync::Mutex::new(Vec::new());
        let wanted = set(&["l39", "l38"]);
        let got = held(dir.path(), "h", &wanted, |m| {
            asked.lock().unwrap().push(m);
            async { true }
        })
        .await;
        assert_eq!(got, wanted);
        assert_eq!(*asked.lock().unwrap(), vec!["m39", "m38"]);
        // Only the newest KEEP are remembered.
        let old = held(dir.path(), "h", &set(&["l0"]), |_| async { true }).await;
        assert!(old.is_empty());
    }
}
