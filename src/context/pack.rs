//! The walk and the tar: BuildKit's fsutil filter semantics, deterministic GNU tar bytes.
//!
//! Walk order is depth-first with the entries of each directory sorted by the bytes of their
//! names — the order Go's `filepath.WalkDir` (and so Docker) produces, and one that needs only
//! the current directory listings in memory. Which entries appear follows BuildKit's filter:
//! an excluded directory is left out unless something below it is re-included by an exception,
//! in which case it is emitted (with its own metadata) just before that first entry. An
//! excluded directory that no later exception can match below is never opened.
//!
//! Every header is written here, not by `tar::Builder`: uid/gid 0, no user or group names,
//! permission bits as on disk (including setuid/setgid/sticky), GNU `L`/`K` records for names
//! and link targets over 100 bytes (any bytes, not only UTF-8), and file data copied in 1 MiB
//! reads. Nothing else varies between runs.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::ignore::Matcher;

/// A file slipway adds at the top of the context (not read from the context directory).
#[derive(Debug, Clone)]
pub struct Virtual {
    pub name: Vec<u8>,
    pub content: Vec<u8>,
    pub mode: u32,
    pub mtime: u64,
}

/// Everything the walk needs, decided before it starts.
#[derive(Debug)]
pub struct Plan {
    /// The context directory, symlinks resolved.
    pub root: PathBuf,
    pub matcher: Matcher,
    /// `Some(t)`: every entry gets mtime `t`. `None`: real mtimes.
    pub mtime: Option<u64>,
    /// Extra top-level entries, merged into the sorted listing of the root; a disk entry of
    /// the same name is replaced (the planner makes sure that loses nothing).
    pub virtuals: Vec<Virtual>,
    /// Skip excluded directories no exception can reach (always on; off only to test that
    /// pruning never changes the result).
    pub prune: bool,
}

/// What a walk produced.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub bytes: u64,
    pub sha256: String,
    /// See [`walk`]: changes when any entry's metadata does.
    pub fingerprint: String,
    pub files: u64,
    pub dirs: u64,
    pub dirs_read: u64,
    pub warnings: Vec<String>,
    /// Every non-directory entry of the tar: its path and a short hash of its header and
    /// data (so `plan` can name the files that changed since the last build).
    pub entries: Vec<(String, String)>,
}

const READ_BUF: usize = 1 << 20;

/// One entry of the walk, in walk order, as a [`Sink`] receives it.
pub enum Entry<'a> {
    /// A directory (an excluded one too, when something below it is re-included).
    Dir {
        rel: &'a [u8],
        meta: &'a Metadata,
    },
    Symlink {
        rel: &'a [u8],
        meta: &'a Metadata,
        target: &'a [u8],
    },
    /// A regular file with several links whose first path was already sent.
    HardLink {
        rel: &'a [u8],
        meta: &'a Metadata,
        first: &'a [u8],
    },
    File {
        abs: &'a Path,
        rel: &'a [u8],
        meta: &'a Metadata,
    },
    Virtual(&'a Virtual),
}

/// What consumes the walk: the tar writer, or the BuildKit session's file sync.
pub trait Sink {
    fn entry(&mut self, plan: &Plan, entry: Entry<'_>) -> Result<()>;
}

/// Walks `plan` in order, handing every entry to `sink`; returns the counts and the walk's
/// fingerprint (`bytes` and `sha256` stay empty: they belong to the tar).
pub fn walk(plan: &Plan, sink: &mut impl Sink) -> Result<Stats> {
    let mut w = Walker {
        plan,
        sink,
        pending: Vec::new(),
        links: HashMap::new(),
        stats: Stats::default(),
        fingerprint: Sha256::new(),
    };
    let root_info: Vec<bool> = Vec::new();
    w.walk_dir(&plan.root, b"", &root_info, false)?;
    let mut stats = w.stats;
    stats.fingerprint = hex::encode(w.fingerprint.finalize());
    Ok(stats)
}

/// Writes the tar for `plan` into `out`; returns its size, sha256 and counts.
pub fn write_tar(plan: &Plan, out: impl Write) -> Result<Stats> {
    let mut tar = TarSink {
        out: HashingWriter {
            inner: out,
            hasher: Sha256::new(),
            bytes: 0,
            entry: None,
        },
        buf: vec![0; READ_BUF],
        entries: Vec::new(),
    };
    let mut stats = walk(plan, &mut tar)?;
    stats.entries = std::mem::take(&mut tar.entries);
    tar.out
        .write_all(&[0u8; 1024])
        .context("writing the end of the tar")?;
    tar.out.inner.flush().context("writing the context tar")?;
    stats.bytes = tar.out.bytes;
    stats.sha256 = hex::encode(tar.out.hasher.finalize());
    Ok(stats)
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
    /// The entry being written, hashed on its own.
    entry: Option<Sha256>,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(h) = &mut self.entry {
            h.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Pending {
    rel: Vec<u8>,
    meta: Metadata,
    emitted: bool,
}

struct Walker<'a, S> {
    plan: &'a Plan,
    sink: &'a mut S,
    /// Excluded directories being walked because an exception may re-include something.
    pending: Vec<Pending>,
    /// (dev, ino) of regular files with several links → the first path sent.
    links: HashMap<(u64, u64), Vec<u8>>,
    stats: Stats,
    /// Over every entry's name, type, mode, size, mtime (ns) and inode: equal fingerprints
    /// mean the same files unchanged (by the test make and git use), without reading them.
    fingerprint: Sha256,
}

enum Listed {
    Disk { name: Vec<u8>, ft: FileType },
    Virtual(usize),
}

impl Listed {
    fn name<'p>(&'p self, plan: &'p Plan) -> &'p [u8] {
        match self {
            Listed::Disk { name, .. } => name,
            Listed::Virtual(i) => &plan.virtuals[*i].name,
        }
    }
}

fn show(rel: &[u8]) -> String {
    crate::report::escape(&String::from_utf8_lossy(rel))
}

/// An entry's mtime in nanoseconds.
pub fn mtime_ns(meta: &Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

impl<S: Sink> Walker<'_, S> {
    fn walk_dir(&mut self, abs: &Path, rel: &[u8], info: &[bool], excluded: bool) -> Result<()> {
        let plan = self.plan;
        let read = match fs::read_dir(abs) {
            Ok(r) => r,
            // BuildKit: an excluded directory it cannot read is simply left out.
            Err(e) if excluded && e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
            // Removed while we walk: gone, like in BuildKit.
            Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read directory {}", crate::report::shown_path(abs))
                })
            }
        };
        self.stats.dirs_read += 1;
        let mut entries = Vec::new();
        for entry in read {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if excluded && e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot read directory {}", crate::report::shown_path(abs))
                    })
                }
            };
            let ft = match entry.file_type() {
                Ok(ft) => ft,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot stat {}", crate::report::shown_path(&entry.path()))
                    })
                }
            };
            entries.push(Listed::Disk {
                name: entry.file_name().as_bytes().to_vec(),
                ft,
            });
        }
        if rel.is_empty() {
            for i in 0..plan.virtuals.len() {
                let name = &plan.virtuals[i].name;
                entries.retain(|e| e.name(plan) != name.as_slice());
                entries.push(Listed::Virtual(i));
            }
        }
        entries.sort_unstable_by(|a, b| a.name(plan).cmp(b.name(plan)));

        let mut child_rel = Vec::with_capacity(rel.len() + 64);
        for entry in &entries {
            child_rel.clear();
            if !rel.is_empty() {
                child_rel.extend_from_slice(rel);
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(entry.name(plan));
            let (name, ft) = match entry {
                Listed::Virtual(i) => {
                    let v = &plan.virtuals[*i];
                    self.fingerprint.update(&v.name);
                    self.fingerprint.update(&v.content);
                    self.sink.entry(plan, Entry::Virtual(v))?;
                    self.stats.files += 1;
                    continue;
                }
                Listed::Disk { name, ft } => (name, ft),
            };
            let child_abs = abs.join(OsStr::from_bytes(name));
            let (excluded_here, child_info) = if plan.matcher.is_empty() {
                (false, Vec::new())
            } else {
                plan.matcher.matches_using_parent_results(&child_rel, info)
            };
            if excluded_here {
                if ft.is_dir()
                    && (!plan.prune || plan.matcher.may_include_below(&child_rel, &child_info))
                {
                    let meta = match fs::symlink_metadata(&child_abs) {
                        Ok(m) => m,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot stat {}", crate::report::shown_path(&child_abs))
                            })
                        }
                    };
                    self.pending.push(Pending {
                        rel: child_rel.clone(),
                        meta,
                        emitted: false,
                    });
                    let r = self.walk_dir(&child_abs, &child_rel.clone(), &child_info, true);
                    self.pending.pop();
                    r?;
                }
                continue;
            }
            let meta = match fs::symlink_metadata(&child_abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot stat {}", crate::report::shown_path(&child_abs))
                    })
                }
            };
            let rel_now = child_rel.clone();
            if self.emit(&child_abs, &rel_now, &meta)? && meta.is_dir() {
                self.walk_dir(&child_abs, &rel_now, &child_info, false)?;
            }
        }
        Ok(())
    }

    /// Emits the excluded ancestors that an included entry needs.
    fn flush_pending(&mut self) -> Result<()> {
        for i in 0..self.pending.len() {
            if self.pending[i].emitted {
                continue;
            }
            let p = &self.pending[i];
            fingerprint(&mut self.fingerprint, &p.rel, &p.meta, b"");
            self.sink.entry(
                self.plan,
                Entry::Dir {
                    rel: &p.rel,
                    meta: &p.meta,
                },
            )?;
            self.stats.dirs += 1;
            self.pending[i].emitted = true;
        }
        Ok(())
    }

    /// Emits one included entry; false when it was skipped (sockets, FIFOs, devices).
    fn emit(&mut self, abs: &Path, rel: &[u8], meta: &Metadata) -> Result<bool> {
        let ft = meta.file_type();
        let special = if ft.is_socket() {
            Some("socket")
        } else if ft.is_fifo() {
            Some("FIFO")
        } else if ft.is_block_device() {
            Some("block device")
        } else if ft.is_char_device() {
            Some("character device")
        } else {
            None
        };
        if let Some(kind) = special {
            self.stats.warnings.push(format!(
                "skipped {kind} {} (not sent to the daemon)",
                show(rel)
            ));
            return Ok(false);
        }
        self.flush_pending()?;
        let plan = self.plan;
        if ft.is_dir() {
            fingerprint(&mut self.fingerprint, rel, meta, b"");
            self.sink.entry(plan, Entry::Dir { rel, meta })?;
            self.stats.dirs += 1;
            return Ok(true);
        }
        if ft.is_symlink() {
            let target = fs::read_link(abs).with_context(|| {
                format!("cannot read symlink {}", crate::report::shown_path(abs))
            })?;
            let target = target.as_os_str().as_bytes();
            fingerprint(&mut self.fingerprint, rel, meta, target);
            self.sink
                .entry(plan, Entry::Symlink { rel, meta, target })?;
        } else {
            let mut first = None;
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                match self.links.get(&key) {
                    Some(f) => first = Some(f.clone()),
                    None => {
                        self.links.insert(key, rel.to_vec());
                    }
                }
            }
            match first {
                Some(first) => {
                    fingerprint(&mut self.fingerprint, rel, meta, &first);
                    let e = Entry::HardLink {
                        rel,
                        meta,
                        first: &first,
                    };
                    self.sink.entry(plan, e)?;
                }
                None => {
                    fingerprint(&mut self.fingerprint, rel, meta, b"");
                    self.sink.entry(plan, Entry::File { abs, rel, meta })?;
                }
            }
        }
        self.stats.files += 1;
        Ok(true)
    }
}

fn fingerprint(h: &mut Sha256, rel: &[u8], meta: &Metadata, link: &[u8]) {
    h.update((rel.len() as u64).to_le_bytes());
    h.update(rel);
    h.update(meta.mode().to_le_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime_ns(meta).to_le_bytes());
    h.update(meta.ino().to_le_bytes());
    h.update((link.len() as u64).to_le_bytes());
    h.update(link);
}

/// The tar writer: one GNU header per entry, file data in 1 MiB reads.
struct TarSink<W> {
    out: HashingWriter<W>,
    buf: Vec<u8>,
    entries: Vec<(String, String)>,
}

impl<W: Write> Sink for TarSink<W> {
    fn entry(&mut self, plan: &Plan, entry: Entry<'_>) -> Result<()> {
        let name = match &entry {
            Entry::Dir { .. } => None,
            Entry::Symlink { rel, .. } | Entry::HardLink { rel, .. } | Entry::File { rel, .. } => {
                Some(String::from_utf8_lossy(rel).into_owned())
            }
            Entry::Virtual(v) => Some(String::from_utf8_lossy(&v.name).into_owned()),
        };
        self.out.entry = name.is_some().then(Sha256::new);
        self.write_entry(plan, entry)?;
        if let (Some(name), Some(h)) = (name, self.out.entry.take()) {
            self.entries.push((name, hex::encode(&h.finalize()[..8])));
        }
        Ok(())
    }
}

impl<W: Write> TarSink<W> {
    fn write_entry(&mut self, plan: &Plan, entry: Entry<'_>) -> Result<()> {
        let mtime = |meta: &Metadata| match plan.mtime {
            Some(t) => t,
            None => meta.mtime().max(0) as u64,
        };
        let mode = |meta: &Metadata| meta.mode() & 0o7777;
        match entry {
            Entry::Dir { rel, meta } => {
                let mut name = rel.to_vec();
                name.push(b'/');
                let (m, t) = (mode(meta), mtime(meta));
                write_header(&mut self.out, &name, EntryType::Directory, m, 0, t, None)
            }
            Entry::Symlink { rel, meta, target } => {
                let (m, t) = (mode(meta), mtime(meta));
                let link = Some(target);
                write_header(&mut self.out, rel, EntryType::Symlink, m, 0, t, link)
            }
            Entry::HardLink { rel, meta, first } => {
                let (m, t) = (mode(meta), mtime(meta));
                write_header(&mut self.out, rel, EntryType::Link, m, 0, t, Some(first))
            }
            Entry::File { abs, rel, meta } => {
                return self.regular(abs, rel, meta.len(), mode(meta), mtime(meta))
            }
            Entry::Virtual(v) => {
                let t = plan.mtime.unwrap_or(v.mtime);
                let size = v.content.len() as u64;
                write_header(
                    &mut self.out,
                    &v.name,
                    EntryType::Regular,
                    v.mode,
                    size,
                    t,
                    None,
                )
                .and_then(|_| self.out.write_all(&v.content))
                .and_then(|_| pad(&mut self.out, size))
            }
        }
        .context("writing the context tar")
    }

    fn regular(&mut self, abs: &Path, rel: &[u8], size: u64, mode: u32, mtime: u64) -> Result<()> {
        let mut file = File::open(abs)
            .with_context(|| format!("cannot read {}", crate::report::shown_path(abs)))?;
        write_header(
            &mut self.out,
            rel,
            EntryType::Regular,
            mode,
            size,
            mtime,
            None,
        )
        .context("writing the context tar")?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => bail!(
                    "{} shrank while it was being packed (expected {size} bytes); retry the build",
                    crate::report::shown_path(abs)
                ),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read {}", crate::report::shown_path(abs)))
                }
            };
            self.out
                .write_all(&self.buf[..n])
                .context("writing the context tar")?;
            left -= n as u64;
        }
        pad(&mut self.out, size).context("writing the context tar")?;
        Ok(())
    }
}

fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])?;
    }
    Ok(())
}

/// One header (preceded by GNU long-name/long-link records when needed).
fn write_header(
    out: &mut impl Write,
    name: &[u8],
    kind: EntryType,
    mode: u32,
    size: u64,
    mtime: u64,
    link: Option<&[u8]>,
) -> io::Result<()> {
    if name.len() > 100 {
        long_record(out, b'L', name)?;
    }
    if let Some(link) = link.filter(|l| l.len() > 100) {
        long_record(out, b'K', link)?;
    }
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        if let Some(link) = link {
            let n = link.len().min(100);
            old.linkname[..n].copy_from_slice(&link[..n]);
        }
    }
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_entry_type(kind);
    h.set_cksum();
    out.write_all(h.as_bytes())
}

fn long_record(out: &mut impl Write, kind: u8, data: &[u8]) -> io::Result<()> {
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64 + 1);
    h.set_mtime(0);
    h.set_entry_type(EntryType::new(kind));
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    out.write_all(data)?;
    out.write_all(&[0])?;
    pad(out, data.len() as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ignore::Matcher;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Pruning is an optimisation only: for random trees and random tricky pattern sets the
    /// tar is byte for byte the one a full walk (BuildKit's, which never prunes these) gives.
    #[test]
    fn pruning_never_changes_the_result() {
        const PATTERNS: &[&str] = &[
            "node_modules",
            "*.log",
            "!keep.log",
            "build/",
            "**/*.tmp",
            "!**/keep",
            "a/*/c",
            "!a/*/c/d",
            "vendor",
            "!vendor/*/LICENSE",
            "x?",
            "[ab]*",
            "!b*",
            "**",
            "!a/**",
            "a/b",
            "!a/b/c",
            "*/*",
            "!*/keep",
            "docs/**",
            "!docs/x/**",
            "a",
            "!a/b",
            "**/c",
            "!**/c/d*",
            "b/**/d",
            "![a-c]/keep",
            "*",
            "!vendor",
            "a**",
            "!**/LICENSE",
        ];
        const NAMES: &[&str] = &[
            "a",
            "b",
            "c",
            "d",
            "keep",
            "keep.log",
            "x1",
            "LICENSE",
            "vendor",
            "node_modules",
            "docs",
            "build",
            "f.tmp",
            "x",
        ];
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut pruned_rounds = 0;
        // Many small trees: in memory when the machine has a tmpfs.
        let base = Path::new("/dev/shm");
        for round in 0..150 {
            let dir = if base.is_dir() {
                tempfile::tempdir_in(base).unwrap()
            } else {
                tempfile::tempdir().unwrap()
            };
            for _ in 0..(5 + rng.next(25)) {
                let depth = 1 + rng.next(4);
                let mut p = dir.path().to_path_buf();
                for _ in 0..depth {
                    p.push(NAMES[rng.next(NAMES.len())]);
                }
                if p.exists() {
                    continue;
                }
                // Fails when an ancestor is a file: skip that path.
                if fs::create_dir_all(p.parent().unwrap()).is_err() {
                    continue;
                }
                if rng.next(5) == 0 {
                    fs::create_dir_all(&p).unwrap();
                } else {
                    fs::write(&p, b"x").unwrap();
                }
            }
            let mut text = String::new();
            for _ in 0..(1 + rng.next(5)) {
                text.push_str(PATTERNS[rng.next(PATTERNS.len())]);
                text.push('\n');
            }
            let matcher = Matcher::parse(&text).unwrap();
            let tar = |prune: bool| {
                let plan = Plan {
                    root: dir.path().to_path_buf(),
                    matcher: matcher.clone(),
                    mtime: Some(0),
                    virtuals: Vec::new(),
                    prune,
                };
                let mut out = Vec::new();
                let stats = write_tar(&plan, &mut out).unwrap();
                (out, stats.dirs_read)
            };
            let (pruned, read_pruned) = tar(true);
            let (full, read_full) = tar(false);
            assert!(pruned == full, "round {round}: patterns {text:?} differ");
            assert!(read_pruned <= read_full);
            pruned_rounds += usize::from(read_pruned < read_full);
        }
        assert!(
            pruned_rounds > 30,
            "only {pruned_rounds} rounds pruned anything"
        );
        eprintln!("{pruned_rounds} of 150 rounds pruned something");
    }
}
