//! One `docker save` stream from the daemon, read once, fanned out to every node that needs
//! part of it: each node gets its own archive with exactly the blobs it lacks.
//!
//! The stream is parsed as it arrives (no temporary file, no second read): a layer's identity
//! is known from its directory's `json` before its `layer.tar` goes by (see
//! [`super::image::v1_layer_index`]; newer daemons name layers by digest, which is simpler).
//! Each layer that some node needs is copied, chunk by chunk and without copying the bytes,
//! into the channels of the nodes that need it, and hashed on the way to prove it is the layer
//! it was taken for. When a layer cannot be identified up front (an unknown daemon version),
//! it goes to every node that still lacks something and is identified by its hash afterwards:
//! more bytes, same result. The manifest, index and trailer follow at the end, when every
//! layer's size is known.
//!
//! A node that stops reading (stopped container, failed import) is dropped from the fan-out;
//! the others go on.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::exec::Chunk;
use super::image::{sha256_digest, v1_layer_index, ImageMeta};
use crate::archive::blocks::{self, Extended};
use crate::archive::{oci, save};
use crate::report::{fmt_bytes, Event, Reporter};

/// What kind of archive a node reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout for `ctr images import`; `name` is containerd's image name. With
    /// `ahead`, the stream is framed (read by [`super::kind::import_command`]): each layer of
    /// [`AHEAD_MIN`] bytes or more whose digest is known goes into the content store by
    /// itself, as a line `L SIZE DIGEST` and its bytes; the archive's entries come as a line
    /// `T SIZE` and their bytes; a line `E` ends the stream.
    Oci { name: String, ahead: bool },
    /// A `docker save` archive for `docker load`; `repo_tag` is the tag to set.
    DockerSave { repo_tag: String },
}

/// One node's share of the stream.
pub struct Sink {
    /// The progress task (`backend@dev-worker`).
    pub task: String,
    pub format: Format,
    /// Diff IDs of the layers this node needs.
    pub layers: HashSet<String>,
    pub tx: mpsc::Sender<Chunk>,
}

/// How a sink's share went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkResult {
    /// Distinct layer blobs put into the node's archive.
    pub layers_sent: usize,
    /// Why the fan-out gave up on this node (the node's own error usually says more).
    pub error: Option<String>,
}

/// The result of one fan-out.
#[derive(Debug, Clone, Default)]
pub struct Transfer {
    /// The manifest digest containerd gives the image (known once every layer's size is).
    pub manifest_digest: Option<String>,
    /// In the order of the sinks given.
    pub sinks: Vec<SinkResult>,
    /// Bytes read from the daemon.
    pub bytes_read: u64,
}

/// The smallest layer sent ahead of the archive: below it, the `ctr` calls that take it in
/// cost more than the hashing they save.
pub const AHEAD_MIN: u64 = 16 << 20;

/// Chunks smaller than this are merged before they are handed to nodes.
const CHUNK: usize = 256 * 1024;
/// Small metadata entries larger than this are not believed.
const MAX_SMALL: u64 = 64 << 20;

struct State {
    task: String,
    format: Format,
    need: HashSet<String>,
    tx: mpsc::Sender<Chunk>,
    alive: bool,
    error: Option<String>,
    sent: HashSet<String>,
    /// Where each sent layer is in the node's archive (for `manifest.json`).
    paths: HashMap<String, String>,
    placeholder: usize,
}

impl State {
    /// Whether the node's stream is framed ([`Format::Oci`]'s `ahead`).
    fn framed(&self) -> bool {
        matches!(self.format, Format::Oci { ahead: true, .. })
    }

    /// Sends whole entries of the node's archive (framed as `T SIZE` when the stream is).
    async fn send_archive(&mut self, parts: &[Bytes]) {
        if self.framed() {
            let size: usize = parts.iter().map(Bytes::len).sum();
            self.send(&[Bytes::from(format!("T {size}\n"))]).await;
        }
        self.send(parts).await;
    }

    /// Whether a layer of `size` bytes whose digest is known goes ahead of the archive (see
    /// [`Format::Oci`]).
    fn goes_ahead(&self, size: u64) -> bool {
        self.framed() && size >= AHEAD_MIN
    }

    async fn send(&mut self, parts: &[Bytes]) {
        if !self.alive {
            return;
        }
        for p in parts {
            if p.is_empty() {
                continue;
            }
            if self.tx.send(Chunk::Data(p.clone())).await.is_err() {
                self.alive = false;
                self.error
                    .get_or_insert_with(|| "the node stopped reading the stream".to_string());
                return;
            }
        }
    }

    async fn abort(&mut self, reason: &str) {
        if self.alive {
            let _ = self.tx.send(Chunk::Abort(reason.to_string())).await;
            self.alive = false;
        }
        self.error.get_or_insert_with(|| reason.to_string());
    }

    fn unresolved(&self) -> bool {
        self.need.iter().any(|d| !self.sent.contains(d))
    }

    fn layer_path(&mut self, digest: Option<&str>, original: &str) -> String {
        match (&self.format, digest) {
            (Format::Oci { .. }, Some(d)) => oci::blob_path(d),
            (Format::Oci { .. }, None) => {
                // containerd names blobs by their content's digest, not by the path.
                self.placeholder += 1;
                format!("blobs/sha256/unidentified-{}", self.placeholder)
            }
            (Format::DockerSave { .. }, Some(d)) => {
                format!("{}/layer.tar", d.trim_start_matches("sha256:"))
            }
            (Format::DockerSave { .. }, None) => original.to_string(),
        }
    }
}

/// Reads the `docker save` stream of `image` and writes each sink's archive into its channel.
/// Never fails as a whole: a sink that could not be served gets an `error` (and an
/// [`Chunk::Abort`] so its node does not import a partial archive).
pub async fn fan_out<S>(
    stream: S,
    image: &ImageMeta,
    sinks: Vec<Sink>,
    reporter: &dyn Reporter,
) -> Transfer
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Unpin,
{
    let mut states: Vec<State> = sinks
        .into_iter()
        .map(|s| State {
            task: s.task,
            format: s.format,
            need: s.layers,
            tx: s.tx,
            alive: true,
            error: None,
            sent: HashSet::new(),
            paths: HashMap::new(),
            placeholder: 0,
        })
        .collect();
    let mut src = Source {
        stream,
        buf: Bytes::new(),
        read: 0,
    };
    let result = parse(&mut src, image, &mut states, reporter).await;
    let manifest_digest = match result {
        Ok(digest) => digest,
        Err(e) => {
            let reason = format!("reading the image from the daemon: {e:#}");
            for s in states.iter_mut() {
                s.abort(&reason).await;
            }
            None
        }
    };
    Transfer {
        manifest_digest,
        bytes_read: src.read,
        sinks: states
            .into_iter()
            .map(|s| SinkResult {
                layers_sent: s.sent.len(),
                error: s.error,
            })
            .collect(),
    }
}

async fn parse<S>(
    src: &mut Source<S>,
    image: &ImageMeta,
    states: &mut [State],
    reporter: &dyn Reporter,
) -> anyhow::Result<Option<String>>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Unpin,
{
    let id_hex = image.id.trim_start_matches("sha256:").to_string();
    let mut dirs: HashMap<String, usize> = HashMap::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut config: Option<Bytes> = None;

    while let Some((path, kind, size)) = next_entry(src).await? {
        if !kind.is_file() {
            src.skip_entry(size).await?;
            continue;
        }
        match classify(&path, &id_hex, image) {
            Entry::V1Json(dir) => {
                if size > MAX_SMALL {
                    src.skip_entry(size).await?;
                    continue;
                }
                let data = src.read_entry(size).await?;
                if let Some(i) = v1_layer_index(&data, &image.chain_ids) {
                    dirs.insert(dir, i);
                }
            }
            Entry::Config => {
                if size > MAX_SMALL {
                    bail!("the image config is {size} bytes, more than believable");
                }
                let data = src.read_entry(size).await?;
                if sha256_digest(&data) != image.id {
                    bail!(
                        "the image config in the stream does not hash to {} (the image changed during the load?)",
                        image.id
                    );
                }
                for s in states.iter_mut() {
                    let p = match &s.format {
                        Format::Oci { .. } => oci::blob_path(&image.id),
                        Format::DockerSave { .. } => format!("{id_hex}.json"),
                    };
                    let parts = blocks::small_entry(&p, &data);
                    s.send_archive(&parts).await;
                }
                config = Some(data);
            }
            Entry::Layer(known) => {
                let digest = known.or_else(|| {
                    let dir = path.strip_suffix("/layer.tar")?;
                    dirs.get(dir).map(|i| image.diff_ids[*i].clone())
                });
                let got = copy_layer(src, &path, digest.as_deref(), size, image, states, reporter)
                    .await?;
                if let Some(d) = got {
                    sizes.insert(d, size);
                }
            }
            Entry::Other => src.skip_entry(size).await?,
        }
    }

    let Some(config) = config else {
        bail!("the image stream had no config for {}", image.id);
    };
    Ok(close_archives(image, &config, &sizes, states).await)
}

/// The next entry's path, kind and size, the extension headers before it applied; `None`
/// at the end of the archive (EOF on a block boundary too: a missing trailer is accepted).
async fn next_entry<S>(src: &mut Source<S>) -> anyhow::Result<Option<(String, tar::EntryType, u64)>>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Unpin,
{
    let mut extended = Extended::default();
    loop {
        let Some(block) = src.read_exact(512).await? else {
            return Ok(None);
        };
        if block.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let header = tar::Header::from_byte_slice(&block);
        let size = header
            .entry_size()
            .map_err(|e| anyhow!("bad tar header in the image stream: {e}"))?;
        let kind = header.entry_type();
        if Extended::is_extension(kind) {
            if size > MAX_SMALL {
                bail!("oversized tar extension header ({size} bytes)");
            }
            extended.apply(kind, &src.read_entry(size).await?);
            continue;
        }
        let path = match extended.path.take() {
            Some(p) => p,
            None => header.path()?.to_string_lossy().into_owned(),
        };
        let size = extended.size.take().unwrap_or(size);
        return Ok(Some((
            path.trim_start_matches("./").to_string(),
            kind,
            size,
        )));
    }
}

/// Ends every node's archive once all layers went by: the OCI manifest, index and layout (or
/// the docker-save `manifest.json`), then the trailer. A node still missing a layer it needs
/// is aborted. Returns the manifest's digest, when every layer's size is known.
async fn close_archives(
    image: &ImageMeta,
    config: &Bytes,
    sizes: &HashMap<String, u64>,
    states: &mut [State],
) -> Option<String> {
    let id_hex = image.id.trim_start_matches("sha256:");
    let layers: Option<Vec<(String, u64)>> = image
        .diff_ids
        .iter()
        .map(|d| sizes.get(d).or(image.sizes.get(d)).map(|s| (d.clone(), *s)))
        .collect();
    let manifest = layers.map(|l| oci::docker_manifest(&image.id, config.len() as u64, &l));
    for s in states.iter_mut() {
        if !s.alive {
            continue;
        }
        if let Some(missing) = s.need.iter().find(|d| !s.sent.contains(*d)) {
            let reason = format!("the daemon's export did not contain layer {missing}");
            s.abort(&reason).await;
            continue;
        }
        let mut parts = Vec::new();
        match &s.format {
            Format::Oci { name, .. } => {
                let Some(m) = &manifest else {
                    s.abort("the daemon's export did not contain every layer, so no manifest can be written")
                        .await;
                    continue;
                };
                parts.extend(blocks::small_entry(&oci::blob_path(&sha256_digest(m)), m));
                parts.extend(blocks::small_entry("index.json", &oci::oci_index(m, name)));
                parts.extend(blocks::small_entry("oci-layout", oci::OCI_LAYOUT));
            }
            Format::DockerSave { repo_tag } => {
                let paths: Vec<String> = image
                    .diff_ids
                    .iter()
                    .map(|d| {
                        s.paths.get(d).cloned().unwrap_or_else(|| {
                            format!("{}/layer.tar", d.trim_start_matches("sha256:"))
                        })
                    })
                    .collect();
                let m = save::manifest(
                    &format!("{id_hex}.json"),
                    std::slice::from_ref(repo_tag),
                    &paths,
                );
                parts.extend(blocks::small_entry("manifest.json", &m));
            }
        }
        parts.push(blocks::trailer());
        s.send_archive(&parts).await;
        if s.framed() {
            s.send(&[Bytes::from_static(b"E\n")]).await;
        }
    }
    manifest.map(|m| sha256_digest(&m))
}

/// Streams one layer entry to the sinks that need it. Returns its diff ID when known.
async fn copy_layer<S>(
    src: &mut Source<S>,
    original: &str,
    digest: Option<&str>,
    size: u64,
    image: &ImageMeta,
    states: &mut [State],
    reporter: &dyn Reporter,
) -> anyhow::Result<Option<String>>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Unpin,
{
    let targets: Vec<usize> = states
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.alive
                && match digest {
                    Some(d) => s.need.contains(d) && !s.sent.contains(d),
                    None => s.unresolved(),
                }
        })
        .map(|(i, _)| i)
        .collect();
    if targets.is_empty() && digest.is_some() {
        src.skip_entry(size).await?;
        return Ok(digest.map(str::to_string));
    }
    let mut paths = HashMap::new();
    // The targets this layer goes ahead of the archive to, and the others.
    let mut ahead = HashSet::new();
    for &i in &targets {
        let s = &mut states[i];
        let p = s.layer_path(digest, original);
        let n = s.sent.len() + 1;
        let of = s.need.len();
        reporter.report(Event::Step {
            task: s.task.clone(),
            step: format!("sending layer {n} of {of} ({})", fmt_bytes(size)),
            cached: false,
        });
        match digest {
            Some(d) if s.goes_ahead(size) => {
                ahead.insert(i);
                s.send(&[Bytes::from(format!("L {size} {d}\n"))]).await;
            }
            _ => {
                // The entry as a whole: header, data and padding.
                if s.framed() {
                    let entry = 512 + size + pad(size);
                    s.send(&[Bytes::from(format!("T {entry}\n"))]).await;
                }
                s.send(&[blocks::file_header(&p, size)]).await;
            }
        }
        paths.insert(i, p);
    }
    let mut hasher = Sha256::new();
    let mut left = size;
    let mut pending = BytesMut::new();
    let started = std::time::Instant::now();
    let mut told = started;
    while left > 0 {
        let chunk = src
            .next_chunk(left)
            .await?
            .ok_or_else(|| anyhow!("the image stream ended inside a layer"))?;
        left -= chunk.len() as u64;
        hasher.update(&chunk);
        // How far a large layer has got, and how fast: about once a second.
        if !targets.is_empty() && told.elapsed() >= std::time::Duration::from_secs(1) {
            told = std::time::Instant::now();
            let done = size - left;
            let per_second = (done as f64 / started.elapsed().as_secs_f64().max(0.001)) as u64;
            for &i in &targets {
                reporter.report(Event::Transfer {
                    task: states[i].task.clone(),
                    bytes_done: done,
                    bytes_total: size,
                    bytes_per_second: per_second,
                });
            }
        }
        if targets.is_empty() {
            continue;
        }
        // Merge small frames so each node gets few, large writes.
        let out = if pending.is_empty() && chunk.len() >= CHUNK {
            Some(chunk)
        } else {
            pending.extend_from_slice(&chunk);
            (pending.len() >= CHUNK || left == 0).then(|| pending.split().freeze())
        };
        if let Some(out) = out {
            for &i in &targets {
                states[i].send(std::slice::from_ref(&out)).await;
            }
        }
    }
    src.skip(pad(size)).await?;
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    let padding = blocks::padding(size);
    for &i in targets.iter().filter(|i| !ahead.contains(i)) {
        states[i].send(std::slice::from_ref(&padding)).await;
    }
    match digest {
        Some(d) if d != actual => {
            let reason = format!(
                "layer {original} hashed to {actual}, not {d}: the image changed during the load"
            );
            for &i in &targets {
                states[i].abort(&reason).await;
            }
            bail!(reason);
        }
        Some(d) => {
            for &i in &targets {
                states[i].sent.insert(d.to_string());
                if let Some(p) = paths.remove(&i) {
                    states[i].paths.insert(d.to_string(), p);
                }
            }
            Ok(Some(d.to_string()))
        }
        None if image.diff_ids.contains(&actual) => {
            for &i in &targets {
                if states[i].need.contains(&actual) {
                    states[i].sent.insert(actual.clone());
                    if let Some(p) = paths.remove(&i) {
                        states[i].paths.insert(actual.clone(), p);
                    }
                }
            }
            Ok(Some(actual))
        }
        None => Ok(None),
    }
}

fn pad(size: u64) -> u64 {
    (512 - size % 512) % 512
}

enum Entry {
    /// `<v1 id>/json` of a legacy `docker save` directory.
    V1Json(String),
    Config,
    /// A layer tar, with its diff ID when the path says it.
    Layer(Option<String>),
    Other,
}

fn classify(path: &str, id_hex: &str, image: &ImageMeta) -> Entry {
    let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        if hex == id_hex {
            return Entry::Config;
        }
        let digest = format!("sha256:{hex}");
        if image.diff_ids.contains(&digest) {
            return Entry::Layer(Some(digest));
        }
        // Manifests and indexes are small; anything else may be a layer in a form we did
        // not expect (compressed): hash it.
        return Entry::Layer(None);
    }
    if let Some(hex) = path.strip_suffix(".json") {
        if hex == id_hex {
            return Entry::Config;
        }
    }
    if let Some((dir, file)) = path.split_once('/') {
        if is_hex(dir) {
            match file {
                "json" => return Entry::V1Json(dir.to_string()),
                "layer.tar" => return Entry::Layer(None),
                _ => {}
            }
        }
    }
    Entry::Other
}

/// The daemon's byte stream, read in tar-sized pieces without copying where possible.
struct Source<S> {
    stream: S,
    buf: Bytes,
    read: u64,
}

impl<S> Source<S>
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>> + Unpin,
{
    /// Makes `buf` non-empty; false at the end of the stream.
    async fn fill(&mut self) -> anyhow::Result<bool> {
        while self.buf.is_empty() {
            match self.stream.next().await {
                Some(Ok(b)) => {
                    self.read += b.len() as u64;
                    self.buf = b;
                }
                Some(Err(e)) => return Err(anyhow::Error::new(e)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Exactly `n` bytes, or `None` at a clean end of stream.
    async fn read_exact(&mut self, n: usize) -> anyhow::Result<Option<Bytes>> {
        if !self.fill().await? {
            return Ok(None);
        }
        if self.buf.len() >= n {
            return Ok(Some(self.buf.split_to(n)));
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            if !self.fill().await? {
                bail!("the image stream ended early");
            }
            let take = (n - out.len()).min(self.buf.len());
            out.extend_from_slice(&self.buf.split_to(take));
        }
        Ok(Some(out.freeze()))
    }

    /// Up to `max` bytes of what is there.
    async fn next_chunk(&mut self, max: u64) -> anyhow::Result<Option<Bytes>> {
        if !self.fill().await? {
            return Ok(None);
        }
        let take = (self.buf.len() as u64).min(max) as usize;
        Ok(Some(self.buf.split_to(take)))
    }

    async fn skip(&mut self, mut n: u64) -> anyhow::Result<()> {
        while n > 0 {
            let c = self
                .next_chunk(n)
                .await?
                .ok_or_else(|| anyhow!("the image stream ended early"))?;
            n -= c.len() as u64;
        }
        Ok(())
    }

    /// An entry's data (and its padding).
    async fn read_entry(&mut self, size: u64) -> anyhow::Result<Bytes> {
        let data = if size == 0 {
            Bytes::new()
        } else {
            self.read_exact(size as usize)
                .await?
                .ok_or_else(|| anyhow!("the image stream ended early"))?
        };
        self.skip(pad(size)).await?;
        Ok(data)
    }

    async fn skip_entry(&mut self, size: u64) -> anyhow::Result<()> {
        self.skip(size + pad(size)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;

    /// A `docker save`-like archive with the v1 layout, built in memory.
    fn save_archive(
        image: &ImageMeta,
        layers: &[Vec<u8>],
        config: &[u8],
        dirs: &[&str],
    ) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        for (i, l) in layers.iter().enumerate() {
            add(&format!("{}/VERSION", dirs[i]), b"1.0");
            add(&format!("{}/layer.tar", dirs[i]), l);
        }
        add(
            &format!("{}.json", image.id.trim_start_matches("sha256:")),
            config,
        );
        add("manifest.json", b"[]");
        b.into_inner().unwrap()
    }

    fn fixture() -> (ImageMeta, Vec<Vec<u8>>, Vec<u8>) {
        let layers: Vec<Vec<u8>> = vec![vec![1u8; 3000], vec![2u8; 700_000], vec![3u8; 10]];
        let config = br#"{"rootfs":{}}"#.to_vec();
        let diff_ids = layers.iter().map(|l| sha256_digest(l)).collect();
        let image = ImageMeta::new("web", "app/web:1", &sha256_digest(&config), diff_ids);
        (image, layers, config)
    }

    async fn collect(mut rx: mpsc::Receiver<Chunk>) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut aborted = false;
        while let Some(c) = rx.recv().await {
            match c {
                Chunk::Data(b) => out.extend_from_slice(&b),
                Chunk::Abort(_) => aborted = true,
            }
        }
        (out, aborted)
    }

    fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut ar = tar::Archive::new(archive);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().display().to_string();
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut d).unwrap();
                (p, d)
            })
            .collect()
    }

    /// Without `json` files the layers are unidentified up front: they go to every node that
    /// still lacks something, are identified by hash, and the archives are still right.
    #[tokio::test]
    async fn unidentified_layers_fall_back_to_hashing() {
        let (image, layers, config) = fixture();
        let dirs = ["a".repeat(64), "b".repeat(64), "c".repeat(64)];
        let dirs: Vec<&str> = dirs.iter().map(|s| s.as_str()).collect();
        let archive = save_archive(&image, &layers, &config, &dirs);
        let chunks: Vec<Result<Bytes, bollard::errors::Error>> = archive
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let (tx1, rx1) = mpsc::channel(1024);
        let (tx2, rx2) = mpsc::channel(1024);
        let (tx3, rx3) = mpsc::channel(1024);
        let sinks = vec![
            Sink {
                task: "web@a".into(),
                format: Format::Oci {
                    name: "docker.io/app/web:1".into(),
                    ahead: false,
                },
                layers: [image.diff_ids[2].clone()].into(),
                tx: tx1,
            },
            Sink {
                task: "web@b".into(),
                format: Format::DockerSave {
                    repo_tag: "app/web:1".into(),
                },
                layers: image.diff_ids[1..].iter().cloned().collect(),
                tx: tx2,
            },
            Sink {
                task: "web@c".into(),
                format: Format::Oci {
                    name: "docker.io/app/web:1".into(),
                    ahead: false,
                },
                layers: HashSet::new(),
                tx: tx3,
            },
        ];
        let stream = futures_util::stream::iter(chunks);
        let (t, a, b, c) = tokio::join!(
            fan_out(stream, &image, sinks, &Silent),
            collect(rx1),
            collect(rx2),
            collect(rx3)
        );
        assert!(t.sinks.iter().all(|s| s.error.is_none()), "{:?}", t.sinks);
        let want = oci::docker_manifest(
            &image.id,
            config.len() as u64,
            &image
                .diff_ids
                .iter()
                .zip(&layers)
                .map(|(d, l)| (d.clone(), l.len() as u64))
                .collect::<Vec<_>>(),
        );
        assert_eq!(t.manifest_digest, Some(sha256_digest(&want)));
        assert!(!a.1 && !b.1 && !c.1);

        // Node c needs nothing but the manifest: config, manifest, index, layout.
        let names: Vec<String> = entries(&c.0).into_iter().map(|e| e.0).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        // Node a got every layer up to the one it needed (it could not be known earlier).
        let ea = entries(&a.0);
        let blobs: Vec<String> = ea
            .iter()
            .filter(|(p, _)| p.starts_with("blobs/sha256/unidentified"))
            .map(|(_, d)| sha256_digest(d))
            .collect();
        assert_eq!(blobs, image.diff_ids);
        // Node b's manifest.json points at the layers by their paths in its archive.
        let eb = entries(&b.0);
        let m = eb.iter().find(|(p, _)| p == "manifest.json").unwrap();
        let m: serde_json::Value = serde_json::from_slice(&m.1).unwrap();
        assert_eq!(m[0]["RepoTags"][0], "app/web:1");
        let l2 = m[0]["Layers"][2].as_str().unwrap();
        let data = &eb.iter().find(|(p, _)| p == l2).unwrap().1;
        assert_eq!(data, &layers[2]);
    }

    #[tokio::test]
    async fn a_cut_stream_aborts_every_node() {
        let (image, layers, config) = fixture();
        let dirs = ["a".repeat(64), "b".repeat(64), "c".repeat(64)];
        let dirs: Vec<&str> = dirs.iter().map(|s| s.as_str()).collect();
        let archive = save_archive(&image, &layers, &config, &dirs);
        let cut = Bytes::copy_from_slice(&archive[..100_000]);
        let stream = futures_util::stream::iter(vec![Ok(cut)]);
        let (tx, rx) = mpsc::channel(1024);
        let sinks = vec![Sink {
            task: "web@a".into(),
            format: Format::Oci {
                name: "docker.io/app/web:1".into(),
                ahead: false,
            },
            layers: image.diff_ids.iter().cloned().collect(),
            tx,
        }];
        let (t, (_, aborted)) = tokio::join!(fan_out(stream, &image, sinks, &Silent), collect(rx));
        assert!(aborted);
        assert!(
            t.sinks[0].error.as_deref().unwrap().contains("ended"),
            "{:?}",
            t.sinks
        );
        assert_eq!(t.manifest_digest, None);
    }

    /// To a node that takes layers ahead, a layer of [`AHEAD_MIN`] bytes or more goes by
    /// itself (`L SIZE DIGEST`); the archive's entries come framed (`T SIZE`), in order, and
    /// make an archive complete but for that layer; `E` ends the stream.
    #[tokio::test]
    async fn large_layers_go_ahead_of_the_archive() {
        let layers: Vec<Vec<u8>> = vec![vec![1u8; 3000], vec![2u8; 17 << 20], vec![3u8; 10]];
        let config = br#"{"rootfs":{}}"#.to_vec();
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256_digest(l)).collect();
        let image = ImageMeta::new("web", "app/web:1", &sha256_digest(&config), diff_ids);
        // A daemon that names layers by digest (Docker 25 and later).
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |p: &str, d: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, p, d).unwrap();
        };
        for (d, l) in image.diff_ids.iter().zip(&layers) {
            add(&oci::blob_path(d), l);
        }
        add(&oci::blob_path(&image.id), &config);
        let archive = b.into_inner().unwrap();
        let stream = futures_util::stream::iter(
            archive
                .chunks(100_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (tx, rx) = mpsc::channel(1024);
        let sinks = vec![Sink {
            task: "web@a".into(),
            format: Format::Oci {
                name: "docker.io/app/web:1".into(),
                ahead: true,
            },
            layers: image.diff_ids.iter().cloned().collect(),
            tx,
        }];
        let (t, (out, aborted)) =
            tokio::join!(fan_out(stream, &image, sinks, &Silent), collect(rx));
        assert!(!aborted && t.sinks[0].error.is_none(), "{:?}", t.sinks);
        assert_eq!(t.sinks[0].layers_sent, 3);
        let (mut alone, mut tar, mut rest) = (Vec::new(), Vec::new(), &out[..]);
        loop {
            let line = rest.iter().position(|b| *b == b'\n').unwrap();
            let words = String::from_utf8(rest[..line].to_vec()).unwrap();
            rest = &rest[line + 1..];
            let words: Vec<&str> = words.split(' ').collect();
            match words[..] {
                ["L", size, digest] => {
                    let size: usize = size.parse().unwrap();
                    alone.push((digest.to_string(), rest[..size].to_vec()));
                    rest = &rest[size..];
                }
                ["T", size] => {
                    let size: usize = size.parse().unwrap();
                    tar.extend_from_slice(&rest[..size]);
                    rest = &rest[size..];
                }
                ["E"] => break,
                _ => panic!("unexpected frame {words:?}"),
            }
        }
        assert!(rest.is_empty());
        assert_eq!(alone, vec![(image.diff_ids[1].clone(), layers[1].clone())]);
        let names: Vec<String> = entries(&tar).into_iter().map(|e| e.0).collect();
        for small in [&image.diff_ids[0], &image.diff_ids[2], &image.id] {
            assert!(names.contains(&oci::blob_path(small)), "{names:?}");
        }
        assert!(!names.contains(&oci::blob_path(&image.diff_ids[1])));
        assert!(names.contains(&"index.json".to_string()), "{names:?}");
    }
}
