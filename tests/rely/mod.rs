//! Helpers shared by tests/reliability.rs and tests/hostile.rs: a throw-away project on the
//! busybox test base, the slipway binary run with a deadline, and the leftovers check.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;

/// The base every project here builds on (built by scripts/env/images).
pub const BUSYBOX: &str = "slipway-test/busybox:1.35";

/// A project in a temporary directory whose images live under a prefix no one else uses;
/// removing it untags every image under that prefix.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub prefix: String,
}

impl Project {
    /// A project with one component per `(name, Dockerfile text)`, each with its own context
    /// directory `NAME/` holding its `Dockerfile`.
    pub fn new(components: &[(&str, &str)]) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("slipway-rely-")
            .tempdir()
            .unwrap();
        let prefix = common::unique("slipway-rely");
        let mut toml = format!(
            "[app]\nname = \"rely\"\nversion = \"0.1.0\"\n\n[images]\nprefix = \"{prefix}\"\ntags = [\"latest\"]\n"
        );
        for (i, (name, dockerfile)) in components.iter().enumerate() {
            toml.push_str(&format!(
                "\n[components.{name}]\ncontext = \"{name}\"\ndockerfile = \"{name}/Dockerfile\"\nport = {}\n",
                8080 + i
            ));
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            // The prefix in a comment: the input digest (a label of the image) differs from
            // every other test's, so no two tests share an image ID and one test's clean-up
            // never removes an image another test is about to tag.
            std::fs::write(
                dir.path().join(name).join("Dockerfile"),
                format!("# {prefix}\n{dockerfile}"),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("slipway.toml"), toml).unwrap();
        Project { dir, prefix }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// The slipway binary, in the project, with plain progress and outside CI mode.
    pub fn slipway(&self, args: &[&str]) -> Command {
        let mut cmd = common::slipway();
        cmd.args(args)
            .arg("--progress=plain")
            .current_dir(self.dir.path())
            .env_remove("CI");
        cmd
    }

    /// Runs slipway to the end, failing the test if it takes longer than `limit`.
    pub fn run(&self, args: &[&str], limit: Duration) -> Run {
        run(self.slipway(args), limit)
    }

    /// `PREFIX/NAME:TAG`.
    pub fn image(&self, component: &str, tag: &str) -> String {
        format!("{}/{component}:{tag}", self.prefix)
    }

    /// Every `REPO:TAG` under the prefix.
    pub fn tags(&self) -> Vec<String> {
        tags_under(&self.prefix, None)
    }

    /// The image of `component` the last build recorded (`.slipway/last-build.json`).
    pub fn last_image(&self, component: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path(".slipway/last-build.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.pointer(&format!("/components/{component}/image"))?
            .as_str()
            .map(str::to_string)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        remove_tags(&self.prefix, None);
    }
}

/// `REPO:TAG` of every image under `prefix/` on the daemon `host` (the default one if `None`).
pub fn tags_under(prefix: &str, host: Option<&str>) -> Vec<String> {
    // An empty answer from a docker CLI that failed would pass for "no tags".
    list_tags(prefix, host).unwrap_or_else(|e| panic!("docker image ls: {e}"))
}

/// [`tags_under`], or why the docker CLI could not say (for cleanups, which must not panic).
fn list_tags(prefix: &str, host: Option<&str>) -> Result<Vec<String>, String> {
    let out = docker(
        host,
        &[
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            &format!("reference={prefix}/*"),
        ],
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    tags.sort();
    Ok(tags)
}

/// Untags every image under `prefix/` (an image goes when its last tag does; images of
/// others that share an ID keep their own tags).
pub fn remove_tags(prefix: &str, host: Option<&str>) {
    let tags = list_tags(prefix, host).unwrap_or_default();
    if !tags.is_empty() {
        let mut args = vec!["rmi"];
        args.extend(tags.iter().map(String::as_str));
        docker(host, &args);
    }
}

/// Runs the docker CLI (against `host` when given).
pub fn docker(host: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    if let Some(h) = host {
        cmd.env("DOCKER_HOST", h);
    }
    // A runtime that failed to start a container is tried again (`common::RunRetrying`).
    common::RunRetrying::output_retrying(cmd.args(args)).expect("running the docker CLI")
}

/// The image ID `reference` names, if any.
pub fn image_id(host: Option<&str>, reference: &str) -> Option<String> {
    let out = docker(host, &["image", "inspect", "-f", "{{.Id}}", reference]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A finished slipway run.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub took: Duration,
    /// Peak resident memory of the process, in KiB.
    pub max_rss_kib: u64,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Both streams, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.took,
            self.stdout(),
            self.stderr
        )
    }

    /// Asserts the run succeeded.
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "{}", self.text());
        self.no_panic()
    }

    /// Asserts nothing crashed: no panic, no abort, no death by signal.
    pub fn no_panic(self) -> Run {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("overflowed its stack"),
            "{}",
            self.text()
        );
        assert!(
            self.status.code().is_some(),
            "killed by a signal: {}",
            self.text()
        );
        self
    }
}

/// A child with its output collected on threads.
pub struct Running {
    pub child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    /// stderr lines as they come.
    pub lines: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    started: Instant,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until a stderr line contains `needle`; returns it. Panics after `limit`.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr_seen.iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.stderr_seen.push(l),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with `{needle}` within {limit:?}; stderr so far:\n{}",
                        self.stderr_seen.join("\n")
                    );
                }
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Waits for the end (killing the process and failing after `limit`).
    pub fn finish(mut self, limit: Duration) -> Run {
        let waited = wait_rusage(&mut self.child, self.started, limit);
        let stdout = self.stdout.join().unwrap_or_default();
        // The reader thread ends when the pipe closes.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr_seen.push(l);
        }
        let Some((status, max_rss_kib)) = waited else {
            panic!(
                "slipway did not finish within {limit:?} (a hang): killed it; stderr:\n{}\nstdout:\n{}",
                self.stderr_seen.join("\n"),
                String::from_utf8_lossy(&stdout)
            );
        };
        Run {
            status,
            stdout,
            stderr: self.stderr_seen.join("\n"),
            took: self.started.elapsed(),
            max_rss_kib,
        }
    }
}

/// Starts `cmd` with piped output.
pub fn spawn(mut cmd: Command) -> Running {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting slipway");
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(err);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            buf.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        stdout,
        lines,
        stderr_seen: Vec::new(),
        started,
    }
}

/// Runs `cmd` to the end within `limit`.
pub fn run(cmd: Command, limit: Duration) -> Run {
    spawn(cmd).finish(limit)
}

/// Reaps `child` with wait4(2) to get its own peak RSS: its exit status and peak RSS, or
/// `None` when it ran past `limit` (then it is killed).
fn wait_rusage(child: &mut Child, started: Instant, limit: Duration) -> Option<(ExitStatus, u64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as i32;
    loop {
        let mut status = 0;
        // SAFETY: plain syscall on our own child; rusage is written by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            return Some((
                ExitStatus::from_raw(status),
                u64::try_from(usage.ru_maxrss).unwrap_or(0),
            ));
        }
        assert!(rc == 0, "wait4 failed: {}", std::io::Error::last_os_error());
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files slipway's atomic writes would leave behind if interrupted mid-write.
pub fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if name.starts_with(".slipway-") && name.ends_with(".tmp") {
                found.push(e.path());
            }
        }
    }
    found
}

/// Containers (running or not) on the daemon whose command line contains `needle`: the
/// intermediate containers a build of a RUN step with that text would leave.
pub fn containers_running(needle: &str, host: Option<&str>) -> Vec<String> {
    let out = docker(
        host,
        &[
            "ps",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Image}} {{.Command}}",
        ],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether the busybox base is on the daemon (a missing one fails with the fix).
pub fn require_busybox() {
    assert!(
        image_id(None, BUSYBOX).is_some(),
        "the test base image {BUSYBOX} is missing: run scripts/env/images busybox"
    );
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
