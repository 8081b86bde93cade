//! TEMPORARY stand-in for the context packer (owned by the `ctx` worktree): same signatures,
//! no ignore-file handling. Deleted when the real module lands on main.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct ContextSpec {
    pub dir: PathBuf,
    pub dockerfile: PathBuf,
    pub ignore_file: Option<PathBuf>,
    pub source_date_epoch: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Packed {
    pub dockerfile_name: String,
    pub sha256: String,
    pub bytes: u64,
    pub files: u64,
    pub warnings: Vec<String>,
}

struct Sink<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        out.push(r.clone());
        if e.file_type()?.is_dir() {
            walk(&e.path(), &r, out)?;
        }
    }
    Ok(())
}

fn pack<W: Write>(spec: &ContextSpec, w: W) -> anyhow::Result<(Packed, W)> {
    let mut sink = Sink {
        inner: w,
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut files = 0;
    let mut paths = Vec::new();
    walk(&spec.dir, Path::new(""), &mut paths)?;
    let inside = spec
        .dockerfile
        .strip_prefix(&spec.dir)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let dockerfile_name = inside
        .clone()
        .unwrap_or_else(|| "Dockerfile.slipway".into());
    {
        let mut tar = tar::Builder::new(&mut sink);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Deterministic);
        for p in &paths {
            tar.append_path_with_name(spec.dir.join(p), p)
                .with_context(|| format!("packing {}", p.display()))?;
            files += 1;
        }
        if inside.is_none() {
            let data = std::fs::read(&spec.dockerfile)
                .with_context(|| format!("reading {}", spec.dockerfile.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_cksum();
            tar.append_data(&mut h, &dockerfile_name, data.as_slice())?;
        }
        tar.finish()?;
    }
    let packed = Packed {
        dockerfile_name,
        sha256: hex::encode(sink.hash.finalize_reset()),
        bytes: sink.bytes,
        files,
        warnings: Vec::new(),
    };
    Ok((packed, sink.inner))
}

pub fn digest(spec: &ContextSpec) -> anyhow::Result<Packed> {
    Ok(pack(spec, std::io::sink())?.0)
}

struct ChanWriter(
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Vec<u8>,
);

impl Write for ChanWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        if self.1.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.1.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.1));
            self.0
                .blocking_send(Ok(chunk))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))?;
        }
        Ok(())
    }
}

pub fn pack_stream(
    spec: ContextSpec,
) -> (
    impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    JoinHandle<anyhow::Result<Packed>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let handle = tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        match pack(&spec, ChanWriter(tx, Vec::new())) {
            Ok((p, mut w)) => {
                w.flush()?;
                Ok(p)
            }
            Err(e) => {
                let _ = err_tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
                Err(e)
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (stream, handle)
}
