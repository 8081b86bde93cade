//! Errors that know how to end the program.
//!
//! Everything returns `anyhow::Result`; where the caller (or `main`) needs more than a message,
//! a [`Fail`] is put into the chain, either as the root error or as a context layer. `main`
//! finds it with `downcast_ref`, which looks through every context layer, and takes the exit
//! code and the hint from it. This keeps one error type for the whole program while still
//! letting a failure say "exit 2" or "here is how to fix it".

use std::fmt;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A job failed (a build, a load, an emit). Exit code 1.
    Job,
    /// Bad usage or bad configuration. Exit code 2.
    Usage,
    /// Interrupted by Ctrl-C. Exit code 130.
    Interrupted,
    /// Stopped by SIGTERM, cleaned up as after Ctrl-C. Exit code 143.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Job => 1,
            Exit::Usage => 2,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

/// A failure with an exit code and, where the fix is known, a hint.
#[derive(Debug, Clone)]
pub struct Fail {
    pub message: String,
    pub hint: Option<String>,
    pub exit: Exit,
}

impl Fail {
    /// A failed job (exit 1).
    pub fn job(message: impl Into<String>) -> Self {
        Fail {
            message: message.into(),
            hint: None,
            exit: Exit::Job,
        }
    }

    /// Bad usage or configuration (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Fail {
            message: message.into(),
            hint: None,
            exit: Exit::Usage,
        }
    }

    /// Interrupted by the user (exit 130), or stopped by SIGTERM (exit 143).
    pub fn interrupted() -> Self {
        let term = crate::interrupt::last() == Some(libc::SIGTERM);
        Fail {
            message: if term { "terminated" } else { "interrupted" }.into(),
            hint: None,
            exit: if term {
                Exit::Terminated
            } else {
                Exit::Interrupted
            },
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

/// The exit code and hint carried anywhere in an error's chain.
pub fn exit_and_hint(err: &anyhow::Error) -> (Exit, Option<String>) {
    match err.downcast_ref::<Fail>() {
        Some(fail) => (fail.exit, fail.hint.clone()),
        None => (Exit::Job, None),
    }
}

/// Renders an error as `error: ...`, `caused by: ...` lines and a `hint: ...`. Control
/// characters in the messages (a path or a name from outside) are escaped, and a message's own
/// further lines are indented, so nothing in it can pass for a line of its own.
pub fn render(err: &anyhow::Error) -> String {
    render_for(err, None, false)
}

/// Whether a cause is the HTTP client's own layer (`Error in the hyper legacy client: client
/// error (Connect)`, `client error (Connect)`, `tcp connect error`): it names the library, not
/// the problem. The cause at the bottom of the chain (`Connection refused`) says what happened.
fn is_transport(cause: &(dyn std::error::Error + 'static)) -> bool {
    use bollard::errors::Error as B;
    matches!(
        cause.downcast_ref::<B>(),
        Some(
            B::HyperLegacyError { .. }
                | B::HyperResponseError { .. }
                | B::HttpClientError { .. }
                | B::IOError { .. }
        )
    )
}

/// The causes below an error's first message, each once: all of them when `verbose`, else the
/// transport's layers are left out and only the cause at the bottom of the chain is kept in
/// their place. `daemon` as in [`render_for`]; the flag says a request timed out.
fn causes(err: &anyhow::Error, daemon: Option<(&str, u64)>, verbose: bool) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut last = err.to_string();
    let mut timed_out = false;
    let mut chain = err.chain().skip(1);
    while let Some(cause) = chain.next() {
        let mut text = cause.to_string();
        if let Some(bollard::errors::Error::RequestTimeoutError) = cause.downcast_ref() {
            // bollard says only "Timeout error": say who did not answer.
            timed_out = true;
            text = match daemon {
                Some((host, secs)) => {
                    format!("no answer from the Docker daemon at {host} within {secs}s")
                }
                None => "no answer from the Docker daemon within the request timeout".into(),
            };
        } else if !verbose && is_transport(cause) {
            text = chain.last().map_or(text, |root| root.to_string());
            if text != last {
                out.push(text);
            }
            break;
        }
        // A context layer over a Fail repeats the Fail's message; show each line once.
        if text != last {
            out.push(text.clone());
        }
        last = text;
    }
    (out, timed_out)
}

/// The error in one line, for a report that has no room for a chain (`doctor`): the messages
/// joined by `: `, the transport's layers left out as in [`render`].
pub fn plain(err: &anyhow::Error) -> String {
    let mut parts = vec![err.to_string()];
    parts.extend(causes(err, None, false).0);
    parts.join(": ")
}

/// [`render`], naming the daemon (`(host, request timeout in seconds)`) a timed-out request
/// went to: the caller knows it; this module stays below the daemon seam. `verbose` (`-v`)
/// shows every cause, the HTTP client's own layers included.
pub fn render_for(err: &anyhow::Error, daemon: Option<(&str, u64)>, verbose: bool) -> String {
    use crate::report::escape_lines;
    let mut out = format!("error: {}\n", escape_lines(&err.to_string()));
    let (causes, timed_out) = causes(err, daemon, verbose);
    for text in causes {
        out.push_str(&format!("caused by: {}\n", escape_lines(&text)));
    }
    match exit_and_hint(err) {
        (_, Some(hint)) => out.push_str(&format!("hint: {}\n", escape_lines(&hint))),
        (_, None) if timed_out => out.push_str(
            "hint: the request above got no answer: check that the daemon answers \
             (`docker info`), its free disk and its log (`journalctl -u docker`); a daemon \
             that is only slow needs SLIPWAY_DAEMON_TIMEOUT=SECONDS\n",
        ),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn hint_and_exit_found_through_context_layers() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("connection refused"))
            .context(Fail::usage("cannot reach the daemon").hint("start dockerd"))
            .context("running doctor");
        let err = err.unwrap_err();
        let (exit, hint) = exit_and_hint(&err);
        assert_eq!(exit, Exit::Usage);
        assert_eq!(hint.as_deref(), Some("start dockerd"));
        let text = render(&err);
        assert_eq!(
            text,
            "error: running doctor\ncaused by: cannot reach the daemon\ncaused by: connection refused\nhint: start dockerd\n"
        );
    }

    #[test]
    fn a_name_in_a_message_cannot_forge_a_line() {
        let err = anyhow::anyhow!("cannot read ev\u{1b}[31mil\nerror: fake line");
        assert_eq!(
            render(&err),
            "error: cannot read ev\\u{1b}[31mil\n  error: fake line\n"
        );
    }

    #[test]
    fn a_request_timeout_names_the_daemon() {
        let err = anyhow::Error::new(bollard::errors::Error::RequestTimeoutError)
            .context("component `web`: inspecting its image sha256:abc");
        let text = render_for(&err, Some(("unix:///run/docker.sock", 120)), false);
        assert!(
            text.contains(
                "caused by: no answer from the Docker daemon at unix:///run/docker.sock within 120s"
            ),
            "{text}"
        );
        assert!(
            text.contains("hint: the request above got no answer"),
            "{text}"
        );
    }

    #[test]
    fn plain_errors_are_job_failures_without_hint() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(exit_and_hint(&err), (Exit::Job, None));
        assert_eq!(render(&err), "error: boom\n");
    }
}
