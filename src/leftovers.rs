//! What a run leaves while it works, and how a later run finds what a dead one left.
//!
//! A run that ends normally, fails, or is stopped by SIGINT or SIGTERM cleans up after itself.
//! One killed outright (`kill -9`, the OOM killer, a power cut) cannot, so everything temporary
//! carries its owner's pid: directories are `CACHE/tmp/KIND-PID-XXXXXX` (never the system's
//! temp directory, where nothing would ever look for them) and build tags are
//! `REPO:slipway-build-slipway-COMPONENT-PID-NANOS` (`builder::image::temp_tag`), and the tags
//! a daemon pushes an image from while normalising are `HOST/slipway-export/NAME:pPID-N`
//! (`docker::receive::push_to`). Each run
//! reaps, at its start, the directories and the temporary tags (on a local daemon) whose owner
//! is no longer alive; the containers made to read an image's files (`dev.slipway.reader-pid`)
//! are reaped before the next run reads any. Tags are looked for only when a run that built in
//! the project died ([`RunMarker`]): listing them costs a daemon with many images tens of ms.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// slipway's cache directory: `SLIPWAY_CACHE_DIR`, else `$XDG_CACHE_HOME/slipway`, else
/// `~/.cache/slipway`. It does not depend on the daemon or the project.
pub fn cache_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("SLIPWAY_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("slipway");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".cache/slipway");
    }
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("slipway-cache-{uid}"))
}

/// Where temporary directories go.
fn tmp_root() -> PathBuf {
    cache_dir().join("tmp")
}

/// A new temporary directory `CACHE/tmp/KIND-PID-XXXXXX`, removed when dropped.
pub fn temp_dir(kind: &str) -> anyhow::Result<tempfile::TempDir> {
    let root = tmp_root();
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating the temporary directory {}", root.display()))?;
    tempfile::Builder::new()
        .prefix(&format!("{kind}-{}-", std::process::id()))
        .tempdir_in(&root)
        .with_context(|| format!("creating a temporary directory in {}", root.display()))
}

/// Whether a process `pid` exists (one of another user counts as alive).
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The owner of a temporary directory named `KIND-PID-XXXXXX`.
fn dir_owner(name: &str) -> Option<u32> {
    let mut parts = name.rsplitn(3, '-');
    let _random = parts.next()?;
    parts.next()?.parse().ok()
}

/// Removes the temporary directories whose owner is dead; returns how many.
pub fn reap_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(tmp_root()) else {
        return 0;
    };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(dir_owner) else {
            continue;
        };
        if !alive(owner) && std::fs::remove_dir_all(entry.path()).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

/// Removes this process's own temporary directories: called as the process ends, after an
/// interrupted run whose blocking tasks (a layer being spooled) may still have been writing
/// into one while it was dropped.
pub fn remove_own_dirs() {
    let Ok(entries) = std::fs::read_dir(tmp_root()) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        if entry.file_name().to_str().and_then(dir_owner) == Some(me) {
            // A file created while the tree was being removed: once more.
            for _ in 0..3 {
                if std::fs::remove_dir_all(entry.path()).is_ok() {
                    break;
                }
            }
        }
    }
}

/// The marker of a temporary build tag (`builder::image::temp_tag`).
pub const TEMP_TAG: &str = ":slipway-build-slipway-";

/// The owner of a temporary build tag `REPO:slipway-build-slipway-COMPONENT-PID-NANOS`.
pub fn tag_owner(reference: &str) -> Option<u32> {
    let (_, rest) = reference.rsplit_once(TEMP_TAG)?;
    let mut parts = rest.rsplitn(3, '-');
    let nanos = parts.next()?;
    u128::from_str_radix(nanos, 16).ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next().filter(|c| !c.is_empty())?;
    Some(pid)
}

/// The repository path of the temporary tags an image is pushed from while normalising
/// (`HOST/slipway-export/NAME:pPID-N`, `docker::receive::push_to`).
pub const EXPORT_REPO: &str = "slipway-export";

/// The owner of a temporary export tag `HOST/slipway-export/NAME:pPID-N`.
pub fn export_tag_owner(reference: &str) -> Option<u32> {
    let (repo, tag) = reference.rsplit_once(':')?;
    let mut path = repo.rsplitn(3, '/');
    let (_name, parent) = (path.next()?, path.next()?);
    if parent != EXPORT_REPO {
        return None;
    }
    let (pid, n) = tag.strip_prefix('p')?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// The owner of either kind of temporary tag slipway makes.
fn any_tag_owner(reference: &str) -> Option<u32> {
    tag_owner(reference).or_else(|| export_tag_owner(reference))
}

/// A run's mark in the project's state directory (`.slipway/runs/PID`) while its builds may
/// hold temporary tags; removed when they end. One left by a dead run tells the next run to
/// look for its tags ([`dead_runs`]).
pub struct RunMarker(PathBuf);

impl RunMarker {
    pub fn new(state_dir: &Path) -> RunMarker {
        let path = state_dir.join("runs").join(std::process::id().to_string());
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Without the mark a kill leaves its tags to `slipway prune`: not worth failing for.
        let _ = crate::fsutil::write_atomic(&path, b"", None);
        RunMarker(path)
    }
}

impl Drop for RunMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The marks of runs that died while their builds held temporary tags ([`RunMarker`]).
pub fn dead_runs(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state_dir.join("runs")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| !alive(pid))
        })
        .map(|e| e.path())
        .collect()
}

/// Untags the temporary build tags of dead runs under `repositories` (this project's), and the
/// export tags of dead runs (whichever project they normalised for), on a local daemon (a unix
/// socket: its pids are this machine's; on a daemon shared over TCP, a pid says nothing about
/// another machine's runs). Returns the tags removed, `None` when the daemon could not list
/// them.
pub async fn reap_tags(
    daemon: &crate::docker::Daemon,
    repositories: &[String],
) -> Option<Vec<String>> {
    let dead = dead_tags(daemon, repositories).await.ok()?;
    Some(untag(daemon, dead).await)
}

/// The temporary tags [`reap_tags`] removes, without removing them.
pub async fn dead_tags(
    daemon: &crate::docker::Daemon,
    repositories: &[String],
) -> anyhow::Result<Vec<String>> {
    if !daemon.endpoint.host.starts_with("unix://") || repositories.is_empty() {
        return Ok(Vec::new());
    }
    let patterns: Vec<String> = repositories
        .iter()
        .map(|r| format!("{r}:slipway-build-*"))
        .chain([format!("*/{EXPORT_REPO}/*:p*")])
        .collect();
    let filters = std::collections::HashMap::from([(
        "reference".to_string(),
        patterns.iter().map(String::as_str).collect::<Vec<_>>(),
    )]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = daemon
        .docker
        .list_images(Some(options))
        .await
        .context("listing the temporary tags of killed runs (docker image ls)")?;
    Ok(images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .filter(|tag| any_tag_owner(tag).is_some_and(|pid| !alive(pid)))
        .collect())
}

/// Removes `tags` (never the images: `noprune`, and another tag may name them); returns those
/// removed.
pub async fn untag(daemon: &crate::docker::Daemon, tags: Vec<String>) -> Vec<String> {
    let mut removed = Vec::new();
    for tag in tags {
        if crate::docker::images::untag(&daemon.docker, &tag)
            .await
            .is_ok()
        {
            removed.push(tag);
        }
    }
    removed
}

/// Removes the containers (created to read an image's files, never started) that dead runs
/// left on a local daemon ([`crate::docker::files::READER_LABEL`]; on a daemon shared over
/// TCP a pid says nothing). Returns how many it removed.
pub async fn reap_readers(daemon: &crate::docker::Daemon) -> usize {
    use crate::docker::files::READER_LABEL;
    if !daemon.endpoint.host.starts_with("unix://") {
        return 0;
    }
    let filters = std::collections::HashMap::from([("label", vec![READER_LABEL])]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(containers) = daemon.docker.list_containers(Some(options)).await else {
        return 0;
    };
    let mut reaped = 0;
    for c in containers {
        let pid = c.labels.as_ref().and_then(|l| l.get(READER_LABEL));
        let dead = pid.and_then(|p| p.parse().ok()).is_some_and(|p| !alive(p));
        let (true, Some(id)) = (dead, c.id) else {
            continue;
        };
        let force = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if daemon
            .docker
            .remove_container(&id, Some(force))
            .await
            .is_ok()
        {
            reaped += 1;
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_names() {
        assert_eq!(dir_owner("normalize-1234-AbC12x"), Some(1234));
        assert_eq!(dir_owner("export-1-a-b"), None);
        assert_eq!(dir_owner("junk"), None);
        assert_eq!(
            tag_owner("reg:5000/p/web-app:slipway-build-slipway-web-app-4321-17f0a9c"),
            Some(4321)
        );
        assert_eq!(tag_owner("p/web:latest"), None);
        assert_eq!(tag_owner("p/web:slipway-build-slipway-web-x-17f0"), None);
        assert_eq!(
            export_tag_owner("127.0.0.1:39835/slipway-export/image:p14617-1"),
            Some(14617)
        );
        assert_eq!(
            export_tag_owner("127.0.0.1:5000/slipway-export/web:latest"),
            None
        );
        assert_eq!(export_tag_owner("127.0.0.1:5000/other/web:p1-2"), None);
        assert_eq!(export_tag_owner("slipway-export:p1-2"), None);
        assert_eq!(
            any_tag_owner("p/web:slipway-build-slipway-web-4321-17f0a9c"),
            Some(4321)
        );
    }

    #[test]
    fn a_run_marks_the_project_while_it_builds_and_a_dead_runs_mark_is_found() {
        let state = tempfile::tempdir().unwrap();
        assert!(dead_runs(state.path()).is_empty(), "no runs directory yet");
        let mine = state
            .path()
            .join("runs")
            .join(std::process::id().to_string());
        let marker = RunMarker::new(state.path());
        assert!(mine.exists());
        // A live run's mark is not a dead run's.
        assert!(dead_runs(state.path()).is_empty());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let theirs = state.path().join("runs").join(dead.to_string());
        std::fs::write(&theirs, b"").unwrap();
        std::fs::write(state.path().join("runs/not-a-pid"), b"").unwrap();
        assert_eq!(dead_runs(state.path()), vec![theirs]);
        drop(marker);
        assert!(!mine.exists(), "the mark goes when the builds end");
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
    }
}
