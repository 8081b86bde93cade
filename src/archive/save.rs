//! `docker save` archives: what `GET /images/{name}/get` gives and `POST /images/load` takes.
//!
//! An archive holds one file per layer, the image config, and `manifest.json` naming them
//! (older daemons put each layer in a legacy "v1 ID" directory, newer ones under
//! `blobs/sha256/`; either may link one path to another). Reading spools every file to disk
//! ([`spool`], [`Saved`]); writing streams from files on disk ([`write`], [`stream`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde_json::Value;

use super::oci::blob_path;

/// `manifest.json` of a `docker save` archive for one image, tagged `repo_tags`.
pub fn manifest(config_path: &str, repo_tags: &[String], layer_paths: &[String]) -> Bytes {
    let m = serde_json::json!([{
        "Config": config_path,
        "RepoTags": repo_tags,
        "Layers": layer_paths,
    }]);
    Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

/// The files of a docker-save tar, spooled.
#[derive(Debug)]
pub struct Saved {
    /// Path in the tar → spool file.
    files: HashMap<String, PathBuf>,
    /// Path in the tar → where a symlink entry points (resolved against its directory).
    links: HashMap<String, String>,
}

impl Saved {
    /// The spool file of `path`, following symlinks inside the tar.
    pub fn resolve(&self, path: &str) -> anyhow::Result<(String, &Path)> {
        let mut p = path.trim_start_matches("./").to_string();
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Ok((p, f));
            }
            match self.links.get(&p) {
                Some(target) => p = target.clone(),
                None => bail!("the exported image has no `{path}`"),
            }
        }
        bail!("`{path}` in the exported image is a symlink loop")
    }

    pub fn read_json(&self, path: &str) -> anyhow::Result<Value> {
        let (_, file) = self.resolve(path)?;
        let meta = std::fs::metadata(file)?;
        if meta.len() > 64 << 20 {
            bail!(
                "`{path}` in the exported image is {} bytes, too big for JSON",
                meta.len()
            );
        }
        let bytes = std::fs::read(file)?;
        serde_json::from_slice(&bytes).with_context(|| format!("`{path}` in the exported image"))
    }
}

/// Reads a docker-save tar, writing each regular file to its own spool file in `dir`.
pub fn spool<R: Read>(input: R, dir: &Path) -> anyhow::Result<Saved> {
    let mut archive = tar::Archive::new(input);
    let mut files = HashMap::new();
    let mut links = HashMap::new();
    for (n, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let spool = dir.join(format!("in-{n}"));
                let mut out = BufWriter::with_capacity(1 << 20, File::create(&spool)?);
                io::copy(&mut entry, &mut out)
                    .with_context(|| format!("reading `{path}` of the exported image"))?;
                out.into_inner()
                    .map_err(|e| e.into_error())?
                    .sync_data()
                    .ok();
                files.insert(path, spool);
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = entry.link_name()? else {
                    continue;
                };
                let target = target.to_string_lossy().to_string();
                let resolved = if entry.header().entry_type() == tar::EntryType::Link
                    || target.starts_with('/')
                {
                    target.trim_start_matches('/').to_string()
                } else {
                    join_relative(&path, &target)
                };
                links.insert(path, resolved);
            }
            _ => {}
        }
    }
    Ok(Saved { files, links })
}

/// `a/b/layer.tar` + `../c/layer.tar` → `c/layer.tar`.
fn join_relative(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

impl Saved {
    /// The image's config and its layers' spool files (with their keys in the tar), in order.
    pub fn image(&self) -> anyhow::Result<(Value, Vec<(String, PathBuf)>)> {
        let manifest = self.read_json("manifest.json")?;
        let images = manifest
            .as_array()
            .filter(|a| a.len() == 1)
            .context("manifest.json of the exported image does not describe exactly one image")?;
        let entry = &images[0];
        let config_path = entry
            .get("Config")
            .and_then(Value::as_str)
            .context("manifest.json has no Config")?;
        let layers = entry
            .get("Layers")
            .and_then(Value::as_array)
            .context("manifest.json has no Layers")?
            .iter()
            .map(|v| {
                let p = v
                    .as_str()
                    .context("a layer path in manifest.json is not text")?;
                let (key, file) = self.resolve(p)?;
                Ok((key, file.to_path_buf()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let config = self.read_json(config_path)?;
        Ok((config, layers))
    }
}

/// The diff IDs an image config names.
pub fn diff_ids(config: &Value) -> anyhow::Result<Vec<String>> {
    Ok(config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .context("the image config has no rootfs.diff_ids")?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect())
}

/// Writes a docker-save archive of one image: each layer once (as `<diff ID hex>/layer.tar`)
/// except those in `held`, the config as `config_name`, then `manifest` ([`manifest`]).
///
/// `held`: layers the manifest names but the archive leaves out, for a classic-store daemon
/// that has them with everything below them (it looks a layer up by chain ID and opens its
/// file only when it lacks it; the containerd image store wants every file).
pub fn write<W: Write>(
    out: W,
    config_name: &str,
    config: &[u8],
    manifest: &[u8],
    layers: &[(String, PathBuf)],
    held: &std::collections::HashSet<String>,
) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(out);
    let header = super::blocks::regular;
    let mut written = held.clone();
    for (diff_id, file) in layers {
        if !written.insert(diff_id.clone()) {
            continue;
        }
        let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        let size = f.metadata()?.len();
        let name = format!("{}/layer.tar", diff_id.trim_start_matches("sha256:"));
        b.append_data(
            &mut header(size),
            &name,
            BufReader::with_capacity(1 << 20, f),
        )?;
    }
    b.append_data(&mut header(config.len() as u64), config_name, config)?;
    b.append_data(
        &mut header(manifest.len() as u64),
        "manifest.json",
        manifest,
    )?;
    let mut out = b.into_inner()?;
    out.flush()?;
    Ok(())
}

/// An image as files on disk: its config and each layer's tar, in a temporary directory that
/// goes with it (dropping the last holder removes them). Normalising leaves one (the normal
/// form) so that a load in the same run reads it ([`ImageFiles::stream`]) instead of having
/// the daemon export the image again (for an image of a few hundred MB, a second or two).
#[derive(Debug)]
pub struct ImageFiles {
    pub image_id: String,
    config: Vec<u8>,
    /// `(diff ID, file)` per layer, in order. A layer the daemon holds may have no file (see
    /// [`ImageFiles::lacks`]).
    layers: Vec<(String, PathBuf)>,
    /// Each layer's size, by diff ID, when known without its file.
    sizes: std::collections::HashMap<String, u64>,
    _dir: tempfile::TempDir,
}

impl ImageFiles {
    /// The image `image_id` whose config is `config` and whose layers are the files `layers`
    /// (`(diff ID, file)`, bottom first), all under `dir`.
    pub fn new(
        image_id: String,
        config: Vec<u8>,
        layers: Vec<(String, PathBuf)>,
        dir: tempfile::TempDir,
    ) -> Self {
        ImageFiles {
            image_id,
            config,
            layers,
            sizes: Default::default(),
            _dir: dir,
        }
    }

    /// The same, knowing each layer's size (diff ID -> bytes).
    pub fn with_sizes(mut self, sizes: std::collections::HashMap<String, u64>) -> Self {
        self.sizes = sizes;
        self
    }

    /// The sizes known without the files.
    pub fn sizes(&self) -> &std::collections::HashMap<String, u64> {
        &self.sizes
    }

    /// Whether one of `wanted` (diff IDs) has no file here.
    pub fn lacks(&self, wanted: &std::collections::HashSet<String>) -> bool {
        self.layers
            .iter()
            .any(|(d, path)| wanted.contains(d) && !path.exists())
    }

    /// Its config's bytes.
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// `(diff ID, tar file)` per layer, bottom first.
    pub fn layers(&self) -> &[(String, PathBuf)] {
        &self.layers
    }

    /// Its layers' diff IDs, bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|(d, _)| d.clone()).collect()
    }
}

/// The image in `files` as the daemon's export would give it (an archive with its config and
/// every layer as `blobs/sha256/<digest>`), streamed from disk.
pub fn stream(
    files: Arc<ImageFiles>,
) -> impl futures_util::Stream<Item = Result<Bytes, bollard::errors::Error>> + Send + Unpin {
    let (stream, _handle) = super::blocks::streamed(move |w| {
        let mut tar = tar::Builder::new(w);
        let blob = blob_path;
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(files.config.len() as u64);
        tar.append_data(&mut header, blob(&files.image_id), files.config.as_slice())?;
        let mut sent = std::collections::HashSet::new();
        for (digest, path) in &files.layers {
            // A layer without a file is one the daemon holds ([`ImageFiles::lacks`]): no node
            // that is sent this stream needs it.
            if path.exists() && sent.insert(digest.clone()) {
                let mut file = File::open(path)
                    .with_context(|| format!("reading the kept layer {}", path.display()))?;
                tar.append_file(blob(digest), &mut file)?;
            }
        }
        tar.finish()?;
        Ok(())
    });
    stream.map_err(bollard::errors::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_tar_symlinks_resolve() {
        assert_eq!(
            join_relative("b/layer.tar", "../a/layer.tar"),
            "a/layer.tar"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "a/layer.tar", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "b/layer.tar", "../a/layer.tar")
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let saved = spool(&bytes[..], dir.path()).unwrap();
        let (key, file) = saved.resolve("b/layer.tar").unwrap();
        assert_eq!(key, "a/layer.tar");
        assert_eq!(std::fs::read(file).unwrap(), b"abc");
        assert!(saved.resolve("c/layer.tar").is_err());
    }
}
