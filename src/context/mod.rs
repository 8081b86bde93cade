//! Build contexts: what `docker build` would send, as a deterministic tar, streamed.
//!
//! slipway packs each context itself instead of letting a client library do it, for two
//! reasons: the input digest of a component is the sha256 of these exact bytes, so they must
//! not change unless the context does; and the set of files must be exactly Docker's, so that
//! an image built by slipway is the image `docker build` would build.
//!
//! - Which files: `.dockerignore` with Docker's semantics ([`ignore`]), walked the way
//!   BuildKit's fsutil walks (where the classic builder differs — an exception under a
//!   wildcard directory such as `vendor` + `!vendor/*/LICENSE` — BuildKit's documented
//!   behaviour wins). Excluded directories that no exception can reach are not opened.
//! - The Dockerfile and the ignore file depend on who receives the tar ([`Builder`]):
//!   - [`Builder::Classic`] does what the docker CLI does for the classic builder: both are
//!     always sent, even when ignored, and the daemon removes the ignored ones before any
//!     `COPY` (it reads the tar's `.dockerignore`). A Dockerfile from outside the context is
//!     added as [`OUTSIDE_DOCKERFILE`] and that name is appended to the tar's `.dockerignore`
//!     (created if absent), as the CLI does with its random `.dockerfile.<id>` name.
//!   - [`Builder::BuildKit`] (the default): the daemon's BuildKit copies an uploaded tar as it
//!     is — it neither reads its `.dockerignore` nor removes the Dockerfile (checked against
//!     Docker 20.10 in `tests/context.rs`). So the tar is exactly the filtered set, like the
//!     context `docker buildx build` sends; the ignore file is not forced in. The one file
//!     that must be there anyway is the Dockerfile the frontend reads: when it is ignored, or
//!     lives outside the context (as [`OUTSIDE_DOCKERFILE`], mode 0600), a `COPY .` will
//!     see it. That is the only difference from buildx, which sends the Dockerfile apart.
//!
//!   [`Packed::dockerfile_name`] is the name to pass as the build's `dockerfile` parameter.
//! - Which bytes ([`pack`](mod@pack)): depth-first, names sorted bytewise, uid/gid 0, no owner names,
//!   permission bits kept, symlinks stored (never followed), hard links as links to the first
//!   path sent, sockets/FIFOs/devices skipped with a warning, unreadable files an error.
//! - mtimes: with `source_date_epoch` set, *every* entry gets that mtime. That is stronger than
//!   clamping (which would keep older mtimes), so the digest does not depend on mtimes at all —
//!   a `touch` or a fresh checkout does not rebuild. The caller (the build engine) sets it by
//!   default (last commit time, else 0). With `None` real mtimes are kept, as docker does,
//!   and the digest then changes when an mtime does.
//!
//! Usage: [`digest`] to hash only, [`pack`] into any writer, [`pack_stream`] for a request
//! body (`bollard::body_try_stream`): a blocking thread packs into a bounded channel of 64 KiB
//! chunks, so memory stays flat whatever the context size; a packing error ends the stream
//! with an error item (the daemon never gets a truncated tar that looks complete).

pub mod goregex;
pub mod ignore;
pub mod pack;
pub mod sync;

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::error::Fail;
use ignore::{Matcher, Pattern};
use pack::{Plan, Virtual};

/// The name a Dockerfile from outside the context directory gets inside the tar.
pub const OUTSIDE_DOCKERFILE: &str = ".slipway.Dockerfile";

/// Who receives the tar (see the module docs: it decides how the Dockerfile and the ignore
/// file are sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Builder {
    /// The daemon's BuildKit (`version=2`): the tar is the context, as is.
    #[default]
    BuildKit,
    /// The classic builder (`version=1`): the daemon drops an ignored Dockerfile/.dockerignore.
    Classic,
}

/// One build context to pack.
#[derive(Debug, Clone, Default)]
pub struct ContextSpec {
    /// The context directory.
    pub dir: PathBuf,
    /// The Dockerfile on disk (may be outside `dir`).
    pub dockerfile: PathBuf,
    /// The ignore file. `None`: `<dockerfile>.dockerignore` if it exists (BuildKit's rule),
    /// else `<dir>/.dockerignore` if it exists, else nothing is ignored.
    pub ignore_file: Option<PathBuf>,
    /// When set, every entry's mtime is this (negative counts as 0). See the module docs.
    pub source_date_epoch: Option<i64>,
    /// Who receives the tar.
    pub builder: Builder,
    /// slipway's own files and directories (its state, its config, the files it generated,
    /// its output): those inside the context are left out after every ignore rule, so they
    /// never enter a build, change a digest or ship in an image.
    pub leave_out: Vec<PathBuf>,
}

/// The result of packing a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The Dockerfile's name inside the tar: the build's `dockerfile` parameter.
    pub dockerfile_name: String,
    /// Hex sha256 of the exact tar bytes.
    pub sha256: String,
    /// Size of the tar.
    pub bytes: u64,
    /// Of the entries' metadata (see [`pack::walk`]): unchanged when no file changed.
    pub fingerprint: String,
    /// Non-directory entries (regular files, symlinks, hard links).
    pub files: u64,
    /// Directory entries.
    pub dirs: u64,
    /// Directories listed while walking (pruned ones are not; useful to see pruning work).
    pub dirs_read: u64,
    /// The ignore file that was applied, if any.
    pub ignore_file: Option<PathBuf>,
    /// Things left out on purpose, each naming its path (sockets, FIFOs, devices).
    pub warnings: Vec<String>,
    /// Each non-directory entry's path and short hash ([`pack::Stats::entries`]).
    pub entries: Vec<(String, String)>,
}

/// Stack of the packing thread: enough for a walk down to the deepest path the kernel accepts
/// (4,096 bytes, so at most 2,048 levels) even in a debug build.
const WALK_STACK: usize = 64 << 20;

/// Streams the deterministic tar of `spec` into `w` and returns what was sent. Never holds
/// more than one 1 MiB read buffer of file data in memory.
pub fn pack(spec: &ContextSpec, w: impl Write + Send) -> Result<Packed> {
    let (plan, dockerfile_name, ignore_file) = plan(spec)?;
    let out = io::BufWriter::with_capacity(128 * 1024, w);
    // The walk recurses once per directory level, as deep as the tree goes (until a path
    // passes PATH_MAX and the kernel refuses it, about 2,000 levels): more than the 2 MiB stack
    // of a tokio blocking thread holds. It runs on a thread of its own with a stack for that
    // depth (reserved address space; only the pages a walk touches are ever used).
    let stats = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("slipway-pack".into())
            .stack_size(WALK_STACK)
            .spawn_scoped(scope, || pack::write_tar(&plan, out))
            .context("starting the context packer thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the context packer thread panicked"))?
    })
    .with_context(|| format!("packing the build context {}", spec.dir.display()))?;
    Ok(Packed {
        dockerfile_name,
        sha256: stats.sha256,
        bytes: stats.bytes,
        fingerprint: stats.fingerprint,
        files: stats.files,
        dirs: stats.dirs,
        dirs_read: stats.dirs_read,
        ignore_file,
        warnings: stats.warnings,
        entries: stats.entries,
    })
}

/// The context and its Dockerfile as BuildKit session locals (`context` and `dockerfile`,
/// [`sync`]), with the Dockerfile's name for the build's `dockerfile` parameter.
pub fn locals(spec: &ContextSpec) -> Result<(sync::ContextDir, sync::DockerfileDir, String)> {
    let (plan, name, _) = plan(spec)?;
    let dockerfile = sync::DockerfileDir::read(&spec.dockerfile, &name)?;
    Ok((sync::ContextDir::new(plan), dockerfile, name))
}

/// Hashes the context without keeping the tar.
pub fn digest(spec: &ContextSpec) -> Result<Packed> {
    pack(spec, io::sink())
}

/// Size of the chunks [`pack_stream`] yields.
pub const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the packing thread and the consumer (1 MiB).
const CHANNEL_DEPTH: usize = 16;

/// Packs on a blocking thread into a bounded channel. The stream yields the tar in
/// [`CHUNK`]-sized pieces and ends with an error item if packing fails; the handle resolves
/// to the same result as [`pack`]. Must be called inside a tokio runtime. Dropping the stream
/// stops the packing (the handle then returns an error).
pub fn pack_stream(
    spec: ContextSpec,
) -> (
    impl futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + Unpin + 'static,
    tokio::task::JoinHandle<Result<Packed>>,
) {
    writer_stream(move |w| pack(&spec, w))
}

/// Runs `write` on a blocking thread and streams what it writes, in [`CHUNK`]-sized pieces
/// through a bounded channel (memory stays flat whatever the size); a failure ends the stream
/// with an error item. Dropping the stream makes the writer's next write fail.
pub fn writer_stream<T: Send + 'static>(
    write: impl FnOnce(&mut (dyn Write + Send)) -> Result<T> + Send + 'static,
) -> (
    impl futures_util::Stream<Item = Result<bytes::Bytes, io::Error>> + Send + Unpin + 'static,
    tokio::task::JoinHandle<Result<T>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, io::Error>>(CHANNEL_DEPTH);
    let handle = tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write(&mut w).and_then(|t| {
            w.flush()?;
            Ok(t)
        });
        if let Err(e) = &result {
            // Best effort: the consumer may already be gone.
            let _ = tx.blocking_send(Err(io::Error::other(format!("{e:#}"))));
        }
        result
    });
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (stream, handle)
}

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(bytes::Bytes::from(chunk)))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the build stopped reading the context",
                )
            })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Sends what is buffered (the writer's end flushes once more: an empty send is nothing).
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Resolves paths, reads the ignore file and decides the extra entries.
fn plan(spec: &ContextSpec) -> Result<(Plan, String, Option<PathBuf>)> {
    let root = fs::canonicalize(&spec.dir)
        .with_context(|| format!("build context directory {} not found", spec.dir.display()))?;
    if !root.is_dir() {
        bail!(Fail::usage(format!(
            "build context {} is not a directory",
            spec.dir.display()
        )));
    }
    let dockerfile = fs::canonicalize(&spec.dockerfile)
        .with_context(|| format!("Dockerfile {} not found", spec.dockerfile.display()))?;
    let dockerfile_rel = match relative(&root, &dockerfile) {
        Some(rel) => Some(String::from_utf8(rel).map_err(|_| {
            Fail::usage(format!(
                "the Dockerfile path {} is not valid UTF-8",
                dockerfile.display()
            ))
        })?),
        None => None,
    };

    let ignore_path = match &spec.ignore_file {
        Some(p) => Some(p.clone()),
        None => {
            let mut beside = spec.dockerfile.clone().into_os_string();
            beside.push(".dockerignore");
            let beside = PathBuf::from(beside);
            let in_root = spec.dir.join(".dockerignore");
            if beside.is_file() {
                Some(beside)
            } else if in_root.is_file() {
                Some(in_root)
            } else {
                None
            }
        }
    };
    let mut matcher = Matcher::default();
    let mut ignore_rel = None;
    if let Some(path) = &ignore_path {
        let content = fs::read(path)
            .with_context(|| format!("cannot read ignore file {}", path.display()))?;
        let lines =
            ignore::read_patterns(&content, path).and_then(|lines| Matcher::new(&lines, path));
        matcher = match lines {
            Ok(m) => m,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(
                    Fail::usage(format!("bad ignore file {}", path.display())).hint(
                        "fix or remove the pattern on the line shown (Docker rejects it too)",
                    ),
                ))
            }
        };
        if let Ok(canon) = fs::canonicalize(path) {
            ignore_rel = relative(&root, &canon);
        }
        // A generated ignore file carries the context's own rules, but may be stale: the
        // context's `.dockerignore` as it is now applies after it, so what the user excludes
        // never reaches a build whatever slipway generated (the same rules twice, in the same
        // order, give the same result).
        let own = spec.dir.join(".dockerignore");
        let generated = crate::instructions::is_generated(&String::from_utf8_lossy(&content));
        if generated && own.is_file() {
            let text = fs::read(&own).with_context(|| format!("cannot read {}", own.display()))?;
            let extra = ignore::read_patterns(&text, &own)
                .and_then(|lines| Matcher::new(&lines, &own))
                .map_err(|e| {
                    anyhow::Error::new(e).context(
                        Fail::usage(format!("bad ignore file {}", own.display())).hint(
                            "fix or remove the pattern on the line shown (Docker rejects it too)",
                        ),
                    )
                })?;
            for p in extra.patterns {
                matcher.push(p);
            }
        }
    }
    // Always sent (the CLI appends `!<name>` exceptions): the classic daemon drops them again.
    let classic = spec.builder == Builder::Classic;
    if let (true, Some(rel)) = (classic, &ignore_rel) {
        matcher.push(Pattern::literal_exception(rel));
    }
    let dockerfile_is = |p: &Path| fs::canonicalize(p).is_ok_and(|c| c == dockerfile);
    for own in &spec.leave_out {
        // The classic builder needs the Dockerfile in the tar (it drops it again itself).
        if classic && dockerfile_is(own) {
            continue;
        }
        if let Some(rel) = fs::canonicalize(own).ok().and_then(|c| relative(&root, &c)) {
            matcher.push(Pattern::literal_exclusion(&rel));
        }
    }
    let mtime = spec.source_date_epoch.map(|t| t.max(0) as u64);
    let mut virtuals = Vec::new();
    let dockerfile_name = if !classic {
        // Over a BuildKit session the Dockerfile travels alone (the `dockerfile` local), as
        // buildx sends it: the context is exactly the filtered set.
        dockerfile
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into())
    } else {
        if let Some(rel) = &dockerfile_rel {
            matcher.push(Pattern::literal_exception(rel.as_bytes()));
        }
        match &dockerfile_rel {
            Some(rel) => rel.clone(),
            None => {
                let content = fs::read(&dockerfile)
                    .with_context(|| format!("cannot read Dockerfile {}", dockerfile.display()))?;
                let df_mtime = fs::metadata(&dockerfile)
                    .map(|m| m.mtime().max(0) as u64)
                    .unwrap_or(0);
                let top_level = |name: &str| -> Result<Option<fs::Metadata>> {
                    let path = root.join(name);
                    match fs::symlink_metadata(&path) {
                        Ok(m) if !matcher.matches_using_parent_results(name.as_bytes(), &[]).0 => {
                            Ok(Some(m))
                        }
                        Ok(_) => Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
                    }
                };
                if top_level(OUTSIDE_DOCKERFILE)?.is_some() {
                    bail!(Fail::usage(format!(
                        "the context {} contains {OUTSIDE_DOCKERFILE}, a name slipway uses for a \
                     Dockerfile outside the context",
                        spec.dir.display()
                    ))
                    .hint(format!(
                        "rename it, or add {OUTSIDE_DOCKERFILE} to the .dockerignore"
                    )));
                }
                if classic {
                    virtuals.push(classic_dockerignore(
                        &root,
                        &spec.dir,
                        top_level(".dockerignore")?,
                    )?);
                }
                virtuals.push(Virtual {
                    name: OUTSIDE_DOCKERFILE.as_bytes().to_vec(),
                    content,
                    mode: 0o600,
                    mtime: df_mtime,
                });
                OUTSIDE_DOCKERFILE.to_string()
            }
        }
    };
    let plan = Plan {
        root,
        matcher,
        mtime,
        virtuals,
        prune: true,
    };
    Ok((plan, dockerfile_name, ignore_path))
}

/// The tar's `.dockerignore` for the classic builder when the Dockerfile is added from outside:
/// the context's own one (if sent) plus [`OUTSIDE_DOCKERFILE`], so the daemon removes it.
fn classic_dockerignore(root: &Path, dir: &Path, sent: Option<fs::Metadata>) -> Result<Virtual> {
    Ok(match sent {
        Some(m) if m.is_file() => {
            let path = root.join(".dockerignore");
            let mut content =
                fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            content.extend_from_slice(format!("\n{OUTSIDE_DOCKERFILE}\n").as_bytes());
            Virtual {
                name: b".dockerignore".to_vec(),
                content,
                mode: m.mode() & 0o7777,
                mtime: m.mtime().max(0) as u64,
            }
        }
        Some(_) => bail!(Fail::usage(format!(
            "{}/.dockerignore is not a regular file",
            dir.display()
        ))),
        None => Virtual {
            name: b".dockerignore".to_vec(),
            content: format!(".dockerignore\n{OUTSIDE_DOCKERFILE}\n").into_bytes(),
            mode: 0o600,
            mtime: 0,
        },
    })
}

/// `path` relative to `root`, when it is inside (both canonical).
fn relative(root: &Path, path: &Path) -> Option<Vec<u8>> {
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() {
        return None;
    }
    Some(rel.as_os_str().as_bytes().to_vec())
}
