//! Running commands inside node containers through the Engine API (`docker exec`), with or
//! without a byte stream on stdin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How much of a command's stdout is kept (a node's content listing fits easily).
const MAX_STDOUT: usize = 64 << 20;
/// How much of stderr is kept (the end of it).
const MAX_STDERR: usize = 64 << 10;
/// A node that takes no bytes for this long is considered gone.
const WRITE_STALL: Duration = Duration::from_secs(300);

/// What a finished command printed and how it ended.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    /// The last non-empty lines of stderr (or stdout), for error messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        // containerd's tools log progress as `time=... level=info msg=...`: not the reason.
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !(l.starts_with("time=") && l.contains("level=info")))
            .collect();
        let start = lines.len().saturating_sub(3);
        lines[start..].join(" / ")
    }

    /// Turns a non-zero exit into an error that names the command.
    pub fn check(self, what: &str) -> anyhow::Result<Self> {
        if self.code == 0 {
            Ok(self)
        } else {
            Err(anyhow!("{what} exited with {}: {}", self.code, self.tail()))
        }
    }
}

/// The line a node's script prints between a command that took an archive and the check of
/// what it made (see [`after_check`]).
pub const CHECK_FOLLOWS: &str = "--- slipway: the check follows ---";

/// Splits the output of `COMMAND && echo CHECK_FOLLOWS && CHECK`: the check's stdout when both
/// succeeded; else an error naming whichever failed (`what` or `check`).
pub fn after_check(out: ExecOutput, what: &str, check: &str) -> anyhow::Result<String> {
    let Some((_, rest)) = out.stdout.split_once(&format!("{CHECK_FOLLOWS}\n")) else {
        let out = out.check(what)?;
        return Err(anyhow!(
            "{what} ended without running its check: {}",
            out.tail()
        ));
    };
    let rest = rest.to_string();
    if out.code != 0 {
        let tail = ExecOutput {
            stdout: rest,
            ..out
        };
        return Err(anyhow!(
            "{check} exited with {}: {}",
            tail.code,
            tail.tail()
        ));
    }
    Ok(rest)
}

/// `s` as one word for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The first line on the stdin of an import that starts before its image is known
/// ([`super::kind::import_command`], [`super::minikube::load_command`]): the image's name.
pub fn name_line(name: &str) -> anyhow::Result<Bytes> {
    if name.contains(['\n', '\r', '\0']) {
        return Err(anyhow!("image name {name:?} holds a line break"));
    }
    Ok(Bytes::from(format!("{name}\n")))
}

/// What the stdin stream of [`Started::feed`] carries.
#[derive(Debug, Clone)]
pub enum Chunk {
    Data(Bytes),
    /// The producer gave up: stop without closing stdin cleanly, so the command sees a
    /// truncated stream and fails rather than importing half an image.
    Abort(String),
}

/// Runs `cmd` in `container` and collects its output. When runc could not start the command
/// (a busy host: [`crate::docker::runtime_did_not_start`]) it runs once more: it never ran.
pub async fn run(docker: &Docker, container: &str, cmd: &[&str]) -> anyhow::Result<ExecOutput> {
    let out = exec(docker, container, cmd).await?;
    if out.code != 0
        && crate::docker::runtime_did_not_start(&format!("{}{}", out.stdout, out.stderr))
    {
        return exec(docker, container, cmd).await;
    }
    Ok(out)
}

/// Runs `cmd` in `container` without input and collects its output.
async fn exec(docker: &Docker, container: &str, cmd: &[&str]) -> anyhow::Result<ExecOutput> {
    start(docker, container, cmd, false).await?.feed(None).await
}

/// A command running in a node, its stdin open and nothing written to it yet: started ahead
/// of its input, it takes the exec's round trip (some 40 ms on Docker 20.10) out of the time
/// between an image being ready and the node holding it. Dropped unfed, its stdin closes and
/// the command sees an empty input.
pub struct Started {
    docker: Docker,
    id: String,
    what: String,
    stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    reader: tokio::task::JoinHandle<(ExecOutput, Option<String>)>,
}

/// Starts `cmd` in `container`, with its stdin attached when `stdin` ([`Started::feed`]
/// writes to it).
pub async fn start(
    docker: &Docker,
    container: &str,
    cmd: &[&str],
    stdin: bool,
) -> anyhow::Result<Started> {
    let what = format!("`{}` in node {container}", cmd.join(" "));
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdin: Some(stdin),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(node_error)
        .with_context(|| format!("starting {what}"))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: Some(64 * 1024),
            }),
        )
        .await
        .map_err(node_error)
        .with_context(|| format!("starting {what}"))?;
    let StartExecResults::Attached {
        mut output,
        input: stdin,
    } = started
    else {
        return Err(anyhow!("{what} started detached"));
    };

    let reader = tokio::spawn(async move {
        let mut out = ExecOutput::default();
        let mut err: Option<String> = None;
        while let Some(item) = output.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    if out.stdout.len() < MAX_STDOUT {
                        out.stdout.push_str(&String::from_utf8_lossy(&message));
                    }
                }
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message));
                    if out.stderr.len() > 2 * MAX_STDERR {
                        let cut = out.stderr.len() - MAX_STDERR;
                        let cut = (cut..out.stderr.len())
                            .find(|i| out.stderr.is_char_boundary(*i))
                            .unwrap_or(out.stderr.len());
                        out.stderr.drain(..cut);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    err = Some(e.to_string());
                    break;
                }
            }
        }
        (out, err)
    });
    Ok(Started {
        docker: docker.clone(),
        id: created.id,
        what,
        stdin,
        reader,
    })
}

impl Started {
    /// Whether the command still waits for its input (it has not ended on its own: a node
    /// stopped since, or a daemon that hung up).
    pub fn waits(&self) -> bool {
        !self.reader.is_finished()
    }

    /// Writes `input` (nothing when `None`) to the command's stdin, closes it, and collects
    /// the command's output and exit code. `written` counts the bytes the command took, also
    /// when it fails.
    pub async fn feed(
        self,
        input: Option<(mpsc::Receiver<Chunk>, &AtomicU64)>,
    ) -> anyhow::Result<ExecOutput> {
        let Started {
            docker,
            id,
            what,
            mut stdin,
            reader,
        } = self;
        let what = || what.clone();
        let mut write_error: Option<anyhow::Error> = None;
        if let Some((mut rx, written)) = input {
            loop {
                let Some(chunk) = rx.recv().await else {
                    // The producer finished: end of stdin.
                    if let Err(e) = stdin.shutdown().await {
                        write_error = Some(anyhow!("closing stdin: {e}"));
                    }
                    break;
                };
                match chunk {
                    Chunk::Data(bytes) => {
                        match tokio::time::timeout(WRITE_STALL, stdin.write_all(&bytes)).await {
                            Ok(Ok(())) => {
                                written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            }
                            Ok(Err(e)) => {
                                write_error = Some(anyhow!("the node stopped taking data: {e}"));
                                break;
                            }
                            Err(_) => {
                                write_error = Some(anyhow!(
                                    "the node took no data for {}s",
                                    WRITE_STALL.as_secs()
                                ));
                                break;
                            }
                        }
                    }
                    Chunk::Abort(reason) => {
                        write_error = Some(anyhow!("transfer aborted: {reason}"));
                        break;
                    }
                }
            }
            if write_error.is_some() {
                // Dropping the connection without a clean EOF makes the command fail on a
                // truncated archive instead of registering half an image.
                drop(stdin);
                reader.abort();
                return Err(write_error.unwrap_or_else(|| anyhow!("write failed")))
                    .with_context(what);
            }
        } else {
            drop(stdin);
        }

        let (mut out, read_error) = reader
            .await
            .map_err(|e| anyhow!("reading the output of {}: {e}", what()))?;
        if let Some(e) = read_error {
            return Err(anyhow!("reading the output of {}: {e}", what()));
        }
        // The output ends when the process does; the exit code may lag a moment behind.
        for attempt in 0..50 {
            let info = docker
                .inspect_exec(&id)
                .await
                .map_err(node_error)
                .with_context(|| format!("inspecting {}", what()))?;
            if info.running != Some(true) {
                out.code = info.exit_code.unwrap_or(-1);
                return Ok(out);
            }
            tokio::time::sleep(Duration::from_millis(if attempt < 10 { 5 } else { 50 })).await;
        }
        Err(anyhow!("{} did not exit", what()))
    }
}

/// Daemon errors about a node, in words: a stopped node is the common case.
fn node_error(e: bollard::errors::Error) -> anyhow::Error {
    match &e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } if *status_code == 409 || *status_code == 404 => anyhow!("{message}"),
        _ => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_check_names_the_step_that_failed() {
        let out = |code, stdout: &str, stderr: &str| ExecOutput {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        };
        let follows = format!("unpacking x...done\n{CHECK_FOLLOWS}\nREF TYPE\nx y\n");
        assert_eq!(
            after_check(out(0, &follows, ""), "the import", "the check").unwrap(),
            "REF TYPE\nx y\n"
        );
        let e = after_check(out(1, "", "ctr: short read\n"), "the import", "the check");
        assert_eq!(
            e.unwrap_err().to_string(),
            "the import exited with 1: ctr: short read"
        );
        let e = after_check(
            out(1, &follows, "no such image\n"),
            "the import",
            "the check",
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "the check exited with 1: no such image"
        );
        // A script that exits 0 without the line did not run the check: not a success.
        let e = after_check(out(0, "done\n", ""), "the import", "the check");
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("without running its check"));
    }

    #[test]
    fn sh_quote_keeps_one_word() {
        assert_eq!(sh_quote("name==docker.io/a/b:c"), "'name==docker.io/a/b:c'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn tail_prefers_stderr_and_keeps_the_end() {
        let o = ExecOutput {
            code: 1,
            stdout: "a\n".into(),
            stderr: "one\n\ntwo\nthree\nfour\n".into(),
        };
        assert_eq!(o.tail(), "two / three / four");
        let e = o.check("ctr import").unwrap_err().to_string();
        assert!(e.starts_with("ctr import exited with 1: two"), "{e}");
        let ctr = ExecOutput {
            code: 1,
            stdout: String::new(),
            stderr: "time=\"2026\" level=info msg=\"apply failure, attempting cleanup\"\nctr: failed to extract layer sha256:68: not found\n".into(),
        };
        assert_eq!(
            ctr.tail(),
            "ctr: failed to extract layer sha256:68: not found"
        );
    }
}
