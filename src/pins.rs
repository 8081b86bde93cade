//! `slipway.lock`: the base images pinned, so one commit gives one set of image tags on every
//! machine and every day.
//!
//! A `FROM python:3.11` names whatever the tag points at today; the input digest follows the
//! base image's ID, so a moved tag (or a fresh runner that pulls a newer one) means other tags
//! and a rebuild. The lock records, per base image reference, the image ID (config digest) it
//! resolved to, the registry's manifest digest when the image came from a registry, and its
//! platform. A daemon that lacks a base pulls the pinned digest (not the tag); a daemon whose
//! tag moved is named (`--locked` refuses it; `slipway lock --update` moves the lock).
//!
//! The file is TOML, written atomically, entries in name order: the same pins give the same
//! bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Fail;

/// The lock file's name, next to `slipway.toml`.
pub const FILE: &str = "slipway.lock";

const HEADER: &str = "# slipway.lock: the base images' pinned digests, written by slipway.\n\
# Commit it. `slipway lock --update` moves the pins; `--locked` refuses a base that moved.\n\n";

/// One base image, as it resolved when it was locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The image ID (`sha256:...`, the config digest): what the input digest uses.
    pub id: String,
    /// `REPO@sha256:...`, the registry's manifest digest, when the image came from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: String,
}

/// The whole file: pins by base image reference (as the Dockerfiles name them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    #[serde(default, rename = "base")]
    pub bases: BTreeMap<String, Pin>,
}

impl LockFile {
    pub fn new(bases: BTreeMap<String, Pin>) -> Self {
        LockFile { version: 1, bases }
    }

    /// The file's text: the header, then the pins in name order.
    pub fn to_text(&self) -> anyhow::Result<String> {
        let body = toml::to_string(self).context("writing slipway.lock")?;
        Ok(format!("{HEADER}{body}"))
    }
}

/// Where the project's lock file is.
pub fn path(config: &Config) -> PathBuf {
    config.root.join(FILE)
}

/// Reads the lock file; `None` when there is none. A broken one is a usage error naming it.
pub fn read(path: &Path) -> anyhow::Result<Option<LockFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    };
    let lock: LockFile = toml::from_str(&text).map_err(|e| {
        Fail::usage(format!("{} is not a valid lock file: {e}", path.display()))
            .hint("rewrite it: `slipway lock --update`")
    })?;
    if lock.version != 1 {
        return Err(Fail::usage(format!(
            "{} has version {}; this slipway reads version 1",
            path.display(),
            lock.version
        ))
        .hint("rewrite it: `slipway lock --update`")
        .into());
    }
    Ok(Some(lock))
}

/// Writes the lock file atomically; returns whether its bytes changed.
pub fn write(path: &Path, lock: &LockFile) -> anyhow::Result<bool> {
    crate::fsutil::write_atomic(path, lock.to_text()?.as_bytes(), None)
        .with_context(|| format!("writing {}", path.display()))
}

/// The repository part of an image reference (`host:5000/a/b:tag` -> `host:5000/a/b`).
pub fn repository_of(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => no_digest,
    }
}

/// How the pins of a lock differ from what the plan resolved: bases that moved
/// (`reference: locked ID -> now ID`), bases with no pin, pins no Dockerfile uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub moved: Vec<String>,
    pub missing: Vec<String>,
    pub stale: Vec<String>,
}

impl Drift {
    /// `resolved` is every base the planned components use; `all` says whether every component
    /// was planned (only then is an unused pin stale).
    pub fn between(lock: &LockFile, resolved: &BTreeMap<String, Pin>, all: bool) -> Drift {
        let mut drift = Drift::default();
        for (reference, pin) in resolved {
            match lock.bases.get(reference) {
                Some(locked) if locked.id != pin.id => drift.moved.push(format!(
                    "{reference} (locked {}, the daemon has {})",
                    short(&locked.id),
                    short(&pin.id)
                )),
                Some(_) => {}
                None => drift.missing.push(reference.clone()),
            }
        }
        if all {
            drift.stale = lock
                .bases
                .keys()
                .filter(|k| !resolved.contains_key(*k))
                .cloned()
                .collect();
        }
        drift
    }

    pub fn is_empty(&self) -> bool {
        self.moved.is_empty() && self.missing.is_empty() && self.stale.is_empty()
    }

    /// One sentence per kind of difference.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.moved.is_empty() {
            parts.push(format!("base image moved: {}", self.moved.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!("no pin for: {}", self.missing.join(", ")));
        }
        if !self.stale.is_empty() {
            parts.push(format!(
                "stale pin (no Dockerfile uses it): {}",
                self.stale.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// `sha256:` and 12 hex digits.
fn short(id: &str) -> &str {
    id.get(..19).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(n: char) -> Pin {
        Pin {
            id: format!("sha256:{}", n.to_string().repeat(64)),
            digest: None,
            platform: "linux/amd64".into(),
        }
    }

    #[test]
    fn text_is_deterministic_and_reads_back() {
        let mut a = pin('1');
        a.digest = Some(format!(
            "127.0.0.1:5000/base/python@sha256:{}",
            "9".repeat(64)
        ));
        let lock = LockFile::new(BTreeMap::from([
            ("slipway-test/python:3.11".to_string(), a),
            ("debian:12".to_string(), pin('2')),
        ]));
        let text = lock.to_text().unwrap();
        assert_eq!(text, lock.clone().to_text().unwrap());
        assert!(text.starts_with("# slipway.lock"), "{text}");
        assert!(
            text.find("debian:12").unwrap() < text.find("slipway-test/python").unwrap(),
            "{text}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE);
        assert!(write(&p, &lock).unwrap());
        assert!(!write(&p, &lock).unwrap());
        assert_eq!(read(&p).unwrap(), Some(lock));
        assert_eq!(read(&dir.path().join("none")).unwrap(), None);
        std::fs::write(&p, "version = 1\n[base.x]\nid = 3\n").unwrap();
        let e = read(&p).unwrap_err();
        assert!(format!("{e:#}").contains("not a valid lock file"), "{e:#}");
    }

    #[test]
    fn drift_names_moved_missing_and_stale() {
        let lock = LockFile::new(BTreeMap::from([
            ("a:1".to_string(), pin('1')),
            ("b:1".to_string(), pin('2')),
            ("old:1".to_string(), pin('3')),
        ]));
        let now = BTreeMap::from([
            ("a:1".to_string(), pin('1')),
            ("b:1".to_string(), pin('4')),
            ("new:1".to_string(), pin('5')),
        ]);
        let d = Drift::between(&lock, &now, true);
        assert_eq!(d.missing, ["new:1"]);
        assert_eq!(d.stale, ["old:1"]);
        assert_eq!(d.moved.len(), 1);
        assert!(
            d.describe()
                .contains("b:1 (locked sha256:222222222222, the daemon has sha256:444444444444)"),
            "{}",
            d.describe()
        );
        assert!(Drift::between(&lock, &now, false).stale.is_empty());
    }

    #[test]
    fn repositories() {
        assert_eq!(repository_of("python:3.11"), "python");
        assert_eq!(
            repository_of("127.0.0.1:5000/base/bb:1"),
            "127.0.0.1:5000/base/bb"
        );
        assert_eq!(
            repository_of("127.0.0.1:5000/base/bb"),
            "127.0.0.1:5000/base/bb"
        );
        assert_eq!(repository_of("bb@sha256:00"), "bb");
    }
}
