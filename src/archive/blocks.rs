//! Tar, a block at a time: for archives that are written (and read) as streams, where an
//! entry's header goes out before its data is at hand, and a reader must apply the extension
//! headers (PAX records, GNU long names) that come before an entry itself.

use std::io::{self, Write};

use bytes::Bytes;

/// A ustar header for a regular file of `size` bytes (mode 0644, mtime 0, root-owned), its
/// path and checksum still to set (`tar::Builder::append_data` sets both).
pub fn regular(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// The header block of a regular file at `path` ([`regular`]).
pub fn file_header(path: &str, size: u64) -> Bytes {
    let mut h = regular(size);
    // Paths here are ASCII and under 100 bytes (`blobs/sha256/<64 hex>` is 77).
    let _ = h.set_path(path);
    h.set_cksum();
    Bytes::copy_from_slice(h.as_bytes())
}

/// Zero bytes that pad an entry of `size` bytes to a 512-byte block.
pub fn padding(size: u64) -> Bytes {
    let rem = (size % 512) as usize;
    if rem == 0 {
        Bytes::new()
    } else {
        Bytes::from(vec![0u8; 512 - rem])
    }
}

/// The end-of-archive marker: two zero blocks.
pub fn trailer() -> Bytes {
    Bytes::from(vec![0u8; 1024])
}

/// A whole small entry: header, data, padding.
pub fn small_entry(path: &str, data: &[u8]) -> Vec<Bytes> {
    vec![
        file_header(path, data.len() as u64),
        Bytes::copy_from_slice(data),
        padding(data.len() as u64),
    ]
}

/// What the extension headers before an entry say about it: a PAX `path` or `size`, or a GNU
/// long name. Taken (and so reset) by the entry that follows.
#[derive(Debug, Default)]
pub struct Extended {
    pub path: Option<String>,
    pub size: Option<u64>,
}

impl Extended {
    /// Whether an entry of `kind` is an extension header, whose data is to be [`Self::apply`]d.
    pub fn is_extension(kind: tar::EntryType) -> bool {
        matches!(kind, tar::EntryType::XHeader | tar::EntryType::GNULongName)
    }

    /// Takes in an extension header's data.
    pub fn apply(&mut self, kind: tar::EntryType, data: &[u8]) {
        if kind == tar::EntryType::GNULongName {
            let name = data.split(|b| *b == 0).next().unwrap_or(&[]);
            self.path = Some(String::from_utf8_lossy(name).into_owned());
            return;
        }
        for ext in tar::PaxExtensions::new(data).flatten() {
            match ext.key() {
                Ok("path") => self.path = ext.value().ok().map(str::to_string),
                Ok("size") => self.size = ext.value().ok().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
    }
}

/// How many bytes a chunk of a [`streamed`] archive holds.
const CHUNK: usize = 256 << 10;

/// What a blocking `write` writes (an archive written with the `tar` crate, say), as a stream
/// of chunks for a request body. An error of `write` ends the stream with that error; the
/// handle gives `write`'s own result. Dropping the stream stops `write` at its next chunk.
pub fn streamed(
    write: impl FnOnce(&mut ChannelWriter) -> anyhow::Result<()> + Send + 'static,
) -> (
    impl futures_util::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(&mut w).and_then(|()| Ok(w.flush()?));
        if let Err(e) = &result {
            // Best effort: the reader may be gone already.
            let _ = tx.blocking_send(Err(io::Error::other(format!("{e:#}"))));
        }
        result
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (stream, handle)
}

/// A blocking writer that hands chunks to an async stream ([`streamed`]).
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped reading"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
