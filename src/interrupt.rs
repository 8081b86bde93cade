//! Ctrl-C and SIGTERM: who stops the run, and who cleans up.
//!
//! `run` (lib.rs) listens for SIGINT and SIGTERM (what `timeout`, `docker stop` and a cancelled
//! CI job send) before anything else, so neither kills slipway by signal; both end the run the
//! same way, with exit code 130 for SIGINT and 143 for SIGTERM
//! ([`crate::error::Fail::interrupted`]). By default the
//! command's future is simply dropped: that closes its connections to the daemon (which
//! cancels a build whose client went away) and stops its tasks, and nothing is half-done,
//! because tags move only after a build succeeded and files are only ever replaced whole.
//!
//! A step that has something to undo on Ctrl-C (the build engine removes the temporary tags of
//! the builds it stops) listens for Ctrl-C itself and holds a [`Handling`] guard while it does.
//! When the guard is held, `run` lets the command finish its own shutdown (up to [`GRACE`], or
//! until a second Ctrl-C) instead of dropping it mid-cleanup.

use std::future::Future;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;

/// How long a step that handles Ctrl-C itself gets to stop and clean up.
pub const GRACE: Duration = Duration::from_secs(10);

static HANDLERS: AtomicUsize = AtomicUsize::new(0);

/// Held while a step listens for Ctrl-C itself and cleans up on it.
#[must_use = "the guard marks Ctrl-C as handled only while it is held"]
pub struct Handling(());

/// Marks Ctrl-C as handled by the caller until the guard is dropped.
pub fn handling() -> Handling {
    HANDLERS.fetch_add(1, Ordering::SeqCst);
    Handling(())
}

impl Drop for Handling {
    fn drop(&mut self) {
        HANDLERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether some step is handling Ctrl-C itself right now.
pub fn handled() -> bool {
    HANDLERS.load(Ordering::SeqCst) > 0
}

static LAST: AtomicI32 = AtomicI32::new(0);

/// The signal that stopped the run, if any (`libc::SIGINT`, `libc::SIGTERM`).
pub fn last() -> Option<i32> {
    Some(LAST.load(Ordering::SeqCst)).filter(|s| *s != 0)
}

/// Listens for SIGINT and SIGTERM from now on.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// The next SIGINT or SIGTERM; returns which.
    pub async fn recv(&mut self) -> i32 {
        let sig = tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        };
        LAST.store(sig, Ordering::SeqCst);
        sig
    }
}

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `work` to its end even when the caller is dropped (a build task aborted on Ctrl-C):
/// for a request whose effect the daemon completes anyway once it has the whole body (an
/// image load names the image when it finishes, whether or not anyone still listens). A step
/// that cleans up on a signal calls [`settle`] first, so it never cleans before such a
/// request has done what it will do.
pub async fn unabortable<T: Send + 'static>(
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let task = tokio::spawn(async move {
        let _in_flight = InFlight;
        work.await
    });
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("a daemon request was cancelled: {e}")),
    }
}

/// Waits (up to `limit`) until every [`unabortable`] request has ended.
pub async fn settle(limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count() {
        let before = handled();
        let g = handling();
        assert!(handled());
        drop(g);
        assert_eq!(handled(), before);
    }

    #[tokio::test]
    async fn unabortable_work_finishes_after_its_caller_is_dropped() {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let caller = tokio::spawn(unabortable(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        caller.abort();
        let _ = caller.await;
        assert!(!done.load(Ordering::SeqCst));
        settle(Duration::from_secs(5)).await;
        assert!(done.load(Ordering::SeqCst));
    }
}
