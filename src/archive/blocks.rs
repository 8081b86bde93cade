//! Tar, a block at a time: for archives that are written (and read) as streams, where an
//! entry's header goes out before its data is at hand, and a reader must apply the extension
//! headers (PAX records, GNU long names) that come before an entry itself.

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
