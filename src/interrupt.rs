//! Ctrl-C: who stops the run, and who cleans up.
//!
//! `run` (lib.rs) listens for SIGINT before anything else, so Ctrl-C never kills slipway by
//! signal; it ends the run with exit code 130 ([`crate::error::Fail::interrupted`]). By default the
//! command's future is simply dropped: that closes its connections to the daemon (which
//! cancels a build whose client went away) and stops its tasks, and nothing is half-done,
//! because tags move only after a build succeeded and files are only ever replaced whole.
//!
//! A step that has something to undo on Ctrl-C (the build engine removes the temporary tags of
//! the builds it stops) listens for Ctrl-C itself and holds a [`Handling`] guard while it does.
//! When the guard is held, `run` lets the command finish its own shutdown (up to [`GRACE`], or
//! until a second Ctrl-C) instead of dropping it mid-cleanup.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
}
