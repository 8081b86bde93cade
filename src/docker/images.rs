//! What an image is, the same way on every daemon.
//!
//! On the classic image store an image's ID is the digest of its config. On the containerd
//! image store (Docker Desktop's and Engine 29's default) it is the digest of its manifest,
//! which also covers how the layers were compressed; and Docker 26's inspect does not show the
//! config digest. slipway names base images by config digest everywhere, so that the same
//! base gives the same input digest on every daemon: on the containerd store it is read from
//! the image's export (the first small blob that is a config with the image's layers; the
//! export stops there) and kept in a file, since a manifest digest always names one config.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::Context as _;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

use super::Daemon;

/// Largest blob read to see whether it is the config.
const MAX_CONFIG: u64 = 4 << 20;

/// The config digest of `image` (known to the daemon as `id`, with layers `diff_ids`) on a
/// containerd-store daemon; `cache` is a JSON file of manifest digest -> config digest.
pub async fn config_digest(
    daemon: &Daemon,
    image: &str,
    id: &str,
    diff_ids: &[String],
    cache: &Path,
) -> anyhow::Result<String> {
    let mut known: BTreeMap<String, String> = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(d) = known.get(id) {
        return Ok(d.clone());
    }
    let export = daemon
        .docker
        .export_image(id)
        .map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(export);
    let want = diff_ids.to_vec();
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<String>> {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let mut archive = tar::Archive::new(bridge);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            if !path.starts_with("blobs/sha256/") || entry.size() > MAX_CONFIG {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let layers: Option<Vec<String>> = value
                .pointer("/rootfs/diff_ids")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            if layers.as_deref() == Some(want.as_slice()) {
                return Ok(Some(format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(&bytes))
                )));
            }
        }
        Ok(None)
    })
    .await
    .context("the export task stopped")?
    .with_context(|| {
        format!(
            "reading the config of {image} from {}",
            daemon.endpoint.host
        )
    })?;
    let digest = found.with_context(|| {
        format!(
            "the export of {image} from {} holds no config with its layers",
            daemon.endpoint.host
        )
    })?;
    known.insert(id.to_string(), digest.clone());
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A cache: losing it costs one export, so a failed write is not an error.
    if let Ok(bytes) = serde_json::to_vec_pretty(&known) {
        let _ = crate::fsutil::write_atomic(cache, &bytes, None);
    }
    Ok(digest)
}
