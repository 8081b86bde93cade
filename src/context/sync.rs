//! The context and the Dockerfile as BuildKit session locals ([`crate::docker::filesync`]):
//! the same walk, ignore rules and file set as the tar, listed as fsutil stats.
//!
//! mtimes: the tar gives every entry SOURCE_DATE_EPOCH, so that the digest does not depend on
//! them. Over a session that would be wrong: BuildKit keeps the last transfer of a local and
//! asks again only for files whose size or mtime changed, so an edit that keeps a file's size
//! would be missed. Each entry is sent with its real mtime raised to SOURCE_DATE_EPOCH when
//! older: an edit shows (a file edited now is newer than the last commit), and after
//! normalising (which lowers every mtime the build wrote to SOURCE_DATE_EPOCH) the image holds
//! exactly the mtimes the tar gave.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::pack::{self, Entry, Plan, Sink};
use crate::docker::filesync::{go_mode, Local, Source, Stat};

/// A context directory, walked as the packer walks it.
pub struct ContextDir {
    plan: Plan,
}

impl ContextDir {
    pub(crate) fn new(plan: Plan) -> ContextDir {
        ContextDir { plan }
    }
}

impl Local for ContextDir {
    fn walk(
        &self,
        emit: &mut dyn FnMut(Stat, Option<Source>) -> Result<()>,
    ) -> Result<Option<String>> {
        let floor = self
            .plan
            .mtime
            .map(|t| (t.min(i64::MAX as u64 / 1_000_000_000) as i64) * 1_000_000_000);
        let mut sink = StatSink { emit, floor };
        let stats = pack::walk(&self.plan, &mut sink)?;
        Ok(Some(stats.fingerprint))
    }
}

struct StatSink<'a> {
    emit: &'a mut dyn FnMut(Stat, Option<Source>) -> Result<()>,
    /// SOURCE_DATE_EPOCH in nanoseconds: no mtime is sent below it.
    floor: Option<i64>,
}

impl StatSink<'_> {
    fn stat(&self, rel: &[u8], meta: &std::fs::Metadata) -> Stat {
        let real = pack::mtime_ns(meta);
        Stat {
            path: rel.to_vec(),
            mode: go_mode(meta.mode()),
            mod_time: self.floor.map_or(real, |f| real.max(f)),
            ..Stat::default()
        }
    }
}

impl Sink for StatSink<'_> {
    fn entry(&mut self, plan: &Plan, entry: Entry<'_>) -> Result<()> {
        let (stat, source) = match entry {
            Entry::Dir { rel, meta } => (self.stat(rel, meta), None),
            Entry::Symlink { rel, meta, target } => {
                let mut s = self.stat(rel, meta);
                s.linkname = target.to_vec();
                s.size = target.len() as i64;
                (s, None)
            }
            Entry::HardLink { rel, meta, first } => {
                let mut s = self.stat(rel, meta);
                s.linkname = first.to_vec();
                (s, None)
            }
            Entry::File { abs, rel, meta } => {
                let mut s = self.stat(rel, meta);
                s.size = meta.len() as i64;
                (s, Some(Source::File(abs.to_path_buf())))
            }
            Entry::Virtual(v) => {
                let t = plan.mtime.unwrap_or(v.mtime) as i64 * 1_000_000_000;
                let s = Stat {
                    path: v.name.clone(),
                    mode: go_mode(0o100000 | v.mode),
                    size: v.content.len() as i64,
                    mod_time: t,
                    ..Stat::default()
                };
                (s, Some(Source::Bytes(Arc::new(v.content.clone()))))
            }
        };
        (self.emit)(stat, source)
    }
}

/// The `dockerfile` local: one file, the Dockerfile, under the name the build asks for.
pub struct DockerfileDir {
    name: Vec<u8>,
    content: Arc<Vec<u8>>,
    mtime_ns: i64,
}

impl DockerfileDir {
    /// Reads the Dockerfile at `path` (it travels alone: nothing else of its directory).
    /// Its mtime is taken from its content: BuildKit reuses its last copy when size and mtime
    /// match, and the Dockerfile never reaches an image.
    pub fn read(path: &Path, name: &str) -> Result<DockerfileDir> {
        use anyhow::Context as _;
        use sha2::{Digest, Sha256};
        let content = std::fs::read(path)
            .with_context(|| format!("cannot read Dockerfile {}", path.display()))?;
        let hash = Sha256::digest(&content);
        let n = u64::from_le_bytes(hash[..8].try_into().unwrap_or_default());
        Ok(DockerfileDir {
            name: name.as_bytes().to_vec(),
            content: Arc::new(content),
            mtime_ns: (n % 4_000_000_000_000_000_000) as i64,
        })
    }
}

impl Local for DockerfileDir {
    fn walk(
        &self,
        emit: &mut dyn FnMut(Stat, Option<Source>) -> Result<()>,
    ) -> Result<Option<String>> {
        let stat = Stat {
            path: self.name.clone(),
            mode: 0o644,
            size: self.content.len() as i64,
            mod_time: self.mtime_ns,
            ..Stat::default()
        };
        emit(stat, Some(Source::Bytes(self.content.clone())))?;
        Ok(None)
    }
}
