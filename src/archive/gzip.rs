//! Layer blobs compressed the same way every time: gzip at a fixed level, with no file name, a
//! zero mtime and a fixed OS byte, so that a layer's blob digest depends on its tar alone.
//! What slipway pushes is made here ([`crate::push`]): the same image gives the same blobs, so
//! the same manifest digest, whichever daemon built it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

/// The compression level (zlib's default: what docker and containerd use).
const LEVEL: u32 = 6;
/// The header's OS byte: "unknown", as Go's compress/gzip writes it.
const OS_UNKNOWN: u8 = 255;

/// A compressed layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compressed {
    /// `sha256:` of the compressed blob.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:` of the tar (the layer's diff ID).
    pub diff_id: String,
}

/// Hashes (and counts) what passes through.
struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    count: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses the layer tar at `tar` into `out`, streamed; says what it wrote.
pub fn compress(tar: &Path, out: &Path) -> anyhow::Result<Compressed> {
    let input = File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let mut reader = Hashing::new(BufReader::with_capacity(1 << 20, input));
    let output = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let writer = Hashing::new(BufWriter::with_capacity(1 << 20, output));
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(OS_UNKNOWN)
        .write(writer, flate2::Compression::new(LEVEL));
    io::copy(&mut reader, &mut encoder)
        .with_context(|| format!("compressing {}", tar.display()))?;
    let mut writer = encoder.finish()?;
    writer.flush()?;
    Ok(Compressed {
        digest: writer.digest(),
        size: writer.count,
        diff_id: reader.digest(),
    })
}

const MEMO_FILE: &str = "compressed-layers.json";

/// What compressing the layer `diff_id` gave last time on this machine ([`remember`]): the
/// compression is the same every time, so its digest is known without compressing again.
pub fn remembered(cache_dir: &Path, diff_id: &str) -> Option<Compressed> {
    read_memo(cache_dir).remove(&memo_key(diff_id))
}

/// Notes what compressing a layer gave (a cache: a failed write only costs a compression).
pub fn remember(cache_dir: &Path, c: &Compressed) {
    let mut memo = read_memo(cache_dir);
    if memo.insert(memo_key(&c.diff_id), c.clone()).as_ref() == Some(c) {
        return;
    }
    let _ = std::fs::create_dir_all(cache_dir);
    if let Ok(bytes) = serde_json::to_vec_pretty(&memo) {
        let _ = crate::fsutil::write_atomic(&cache_dir.join(MEMO_FILE), &bytes, None);
    }
}

/// The memory's key: the layer and how it is compressed.
fn memo_key(diff_id: &str) -> String {
    format!("{diff_id} level={LEVEL}")
}

fn read_memo(cache_dir: &Path) -> std::collections::BTreeMap<String, Compressed> {
    std::fs::read(cache_dir.join(MEMO_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compression_is_remembered_by_its_layer() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compressed {
            digest: "sha256:gz".into(),
            size: 7,
            diff_id: "sha256:tar".into(),
        };
        assert_eq!(remembered(dir.path(), "sha256:tar"), None);
        remember(dir.path(), &c);
        assert_eq!(remembered(dir.path(), "sha256:tar"), Some(c));
        assert_eq!(remembered(dir.path(), "sha256:other"), None);
    }

    #[test]
    fn the_same_tar_gives_the_same_blob() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("layer.tar");
        std::fs::write(&tar, b"some layer bytes".repeat(1000)).unwrap();
        let a = compress(&tar, &dir.path().join("a.gz")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = compress(&tar, &dir.path().join("b.gz")).unwrap();
        assert_eq!(a, b);
        let bytes = std::fs::read(dir.path().join("a.gz")).unwrap();
        assert_eq!(bytes.len() as u64, a.size);
        // No name, mtime 0, OS unknown.
        assert_eq!(bytes[3], 0, "flags");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "mtime");
        assert_eq!(bytes[9], OS_UNKNOWN);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&plain))),
            a.diff_id
        );
    }
}
