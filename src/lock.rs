//! One mutating slipway run per project at a time.
//!
//! Two runs in the same project (a developer's `slipway up` and an editor's `slipway build`, or
//! two CI steps sharing a checkout) would otherwise race on what they share: the image tags
//! moved at the end of a build, `.slipway/last-build.json`, the generated Dockerfiles,
//! manifests and chart. Every file write is atomic already ([`crate::fsutil::write_atomic`]),
//! so a reader never sees half a file; the lock makes the runs themselves take turns, so the
//! files and tags one run leaves behind all come from that run.
//!
//! The lock is an advisory `flock(2)` on `.slipway/lock` under the project root (the directory
//! of `slipway.toml`), held by the commands that change something (build, load, up,
//! dockerfiles, manifests, chart) for as long as they run. Read-only commands (plan, doctor,
//! `--check`) never wait. The kernel drops a `flock` when its holder exits, however it exits
//! (crash, `kill -9`), so a stale lock cannot wedge a project; the file itself stays and is
//! harmless. The holder writes its pid into the file so a waiting run can say whom it waits
//! for. Lock files are the one kind of file slipway writes in place rather than through
//! `write_atomic` (this one, and the empty [`cache_lock`] files beside cache indexes): a
//! rename would give later runs a different inode, and so a different lock.
//!
//! Waiting polls with a non-blocking `flock` instead of blocking in the kernel, so Ctrl-C
//! ends a waiting run at once (a thread parked in `flock` would keep the process alive).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::error::Fail;
use crate::report::{Event, Reporter};

/// The lock file, relative to the project root.
pub const LOCK_FILE: &str = ".slipway/lock";

/// How often a waiting run tries the lock again.
const POLL: Duration = Duration::from_millis(100);

/// A held project lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
    path: PathBuf,
}

impl ProjectLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        // Leave no pid behind that names a process that no longer holds the lock. Closing the
        // file releases the lock whether or not this works.
        let _ = self.file.set_len(0);
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// A lock held for a moment on a cache's index while it is read, changed and written back
/// (`flock(2)` on a lock file beside it, which stays, empty): two normalisations finishing at
/// once, in one run or two, would otherwise each write back the index they read and lose the
/// other's entry. Released when dropped.
#[derive(Debug)]
pub struct CacheLock(File);

impl Drop for CacheLock {
    fn drop(&mut self) {
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// Takes the cache lock `path` (made if missing), waiting at most `within`; `None` when it
/// cannot be had (a cache: the caller skips its write, which costs only a later miss).
pub fn cache_lock(path: &Path, within: Duration) -> Option<CacheLock> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    let start = std::time::Instant::now();
    loop {
        match try_flock(&file) {
            Ok(Attempt::Held) => return Some(CacheLock(file)),
            Ok(Attempt::Busy) if start.elapsed() < within => {
                std::thread::sleep(Duration::from_millis(2))
            }
            _ => return None,
        }
    }
}

/// What a non-blocking attempt found.
enum Attempt {
    Held,
    Busy,
}

fn try_flock(file: &File) -> std::io::Result<Attempt> {
    loop {
        // SAFETY: flock on a file descriptor this process owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Attempt::Held);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(Attempt::Busy),
            Some(libc::EINTR) => continue,
            _ => return Err(err),
        }
    }
}

/// Opens (creating) the lock file of the project at `root`.
fn open(root: &Path) -> anyhow::Result<(File, PathBuf)> {
    let path = root.join(LOCK_FILE);
    let fail = |what: &str| {
        Fail::job(format!("cannot {what} the project lock {}", path.display())).hint(format!(
            "slipway keeps its state in {}; make that directory writable",
            root.join(".slipway").display()
        ))
    };
    crate::fsutil::state_dir(root).context(fail("create"))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .context(fail("open"))?;
    Ok((file, path))
}

/// The pid the current holder wrote, if it has written one yet.
fn holder_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Takes the lock of the project at `root` without waiting; `None` when another run holds it.
pub fn try_acquire(root: &Path) -> anyhow::Result<Option<ProjectLock>> {
    let (file, path) = open(root)?;
    match try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
        Attempt::Held => Ok(Some(held(file, path)?)),
        Attempt::Busy => Ok(None),
    }
}

/// Takes the lock of the project at `root`, waiting (and saying so, once, through `reporter`)
/// while another slipway run holds it. Cancel-safe: dropping the future stops the wait.
pub async fn acquire(root: &Path, reporter: &dyn Reporter) -> anyhow::Result<ProjectLock> {
    let (file, path) = open(root)?;
    let mut said = false;
    loop {
        match try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
            Attempt::Held => return held(file, path),
            Attempt::Busy if !said => {
                // The holder writes its pid right after locking: give it a moment.
                let mut pid = holder_pid(&path);
                if pid.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    pid = holder_pid(&path);
                }
                let who = match pid {
                    Some(pid) => format!("pid {pid}"),
                    None => "pid unknown".to_string(),
                };
                reporter.report(Event::Info {
                    message: format!(
                        "waiting for another slipway run ({who}) in this project \
                         (lock {})...",
                        path.display()
                    ),
                });
                said = true;
            }
            Attempt::Busy => {}
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Records this process as the holder.
fn held(mut file: File, path: PathBuf) -> anyhow::Result<ProjectLock> {
    let write = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.flush()
    };
    // The pid is only for messages: a lock we hold but could not annotate is still held.
    let _ = write(&mut file);
    Ok(ProjectLock { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorder;

    #[tokio::test]
    async fn second_taker_waits_says_for_whom_and_gets_it_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), &crate::report::Silent).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        // flock locks belong to the open file description: a second open in the same process
        // conflicts just as another process would.
        assert!(try_acquire(dir.path()).unwrap().is_none());

        let recorder = std::sync::Arc::new(Recorder::default());
        let root = dir.path().to_path_buf();
        let r = recorder.clone();
        let waiter = tokio::spawn(async move { acquire(&root, r.as_ref()).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the second run did not wait");
        let said = recorder.events();
        let expected = format!(
            "waiting for another slipway run (pid {}) in this project",
            std::process::id()
        );
        assert!(
            said.iter()
                .any(|e| matches!(e, Event::Info { message } if message.starts_with(&expected))),
            "{said:?}"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the lock was not handed over")
            .unwrap()
            .unwrap();
        assert_eq!(recorder.events().len(), 1, "the wait is announced once");
        drop(second);
        assert!(try_acquire(dir.path()).unwrap().is_some());
    }

    #[tokio::test]
    async fn waiting_is_cancelled_by_dropping_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let _held = try_acquire(dir.path()).unwrap().unwrap();
        let wait = acquire(dir.path(), &crate::report::Silent);
        assert!(tokio::time::timeout(Duration::from_millis(250), wait)
            .await
            .is_err());
    }

    #[test]
    fn an_unwritable_root_is_an_error_naming_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = try_acquire(&file).unwrap_err();
        assert!(format!("{err:#}").contains(".slipway/lock"), "{err:#}");
    }
}
