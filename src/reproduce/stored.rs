//! Which normal layers a containerd-store daemon holds already, so that loading a normal form
//! back leaves them out.
//!
//! After a one-line change most of an image's layers are rewritten to the same normal form as
//! last time (a dependency layer's mtimes are clamped again, to the same bytes): the daemon
//! holds that blob already, under the image slipway loaded last time. The containerd image
//! store has no API to ask for a blob, so slipway remembers, per daemon, the images it loaded
//! (by manifest digest, what that store calls an image) and their uncompressed layer blobs. A
//! blob counts as held only while an image that names it still exists on the daemon: the image
//! keeps its blobs from the store's garbage collector. A memory that is lost or wrong costs
//! only a bigger load.

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
