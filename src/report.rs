//! The progress seam: core code reports [`Event`]s, and only this module decides how they look.
//!
//! People at a terminal get one indicatif line per task (a component being built, an image
//! being loaded into a node) that expands to the failing step's log on error; CI and pipes get
//! plain prefixed lines; both go to stderr so that stdout stays for a command's result (a
//! table, `--json` output, image references). Tools (`--progress json`) get one JSON object per
//! line on stdout and nothing else there: the events, an `error` event when the run fails and
//! a final `summary` with the exit code and the command's result (docs/progress-events.md).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// How many log lines of a failing step are shown.
pub const LOG_TAIL: usize = 20;

/// The version of the `--progress json` event format (docs/progress-events.md). It changes
/// when an event loses a field or a field changes its meaning; new events and new optional
/// fields keep it.
pub const SCHEMA_VERSION: u32 = 1;

/// Something that happened. A `task` names what the event is about: a component
/// (`backend`), or a component on a node (`backend@dev-worker`).
///
/// Under `--progress json` each event is one line on stdout, tagged with `event`; the fields
/// are documented in docs/progress-events.md (and docs/progress-events.schema.json).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first event of a run: which command, under which version of the event format.
    Run {
        schema_version: u32,
        command: String,
        version: String,
    },
    /// A task started; `what` says what it does ("build", "load"); `estimate_ms` how long
    /// the last build of the same component took, when known.
    Started {
        task: String,
        what: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimate_ms: Option<u64>,
    },
    /// The task moved to a new step; `cached` when the step was served from cache.
    Step {
        task: String,
        step: String,
        cached: bool,
    },
    /// A line of output of the task's current step.
    Log { task: String, line: String },
    /// Bytes of the task's current step sent so far (a layer into a node), at most about
    /// once a second.
    Transfer {
        task: String,
        bytes_done: u64,
        bytes_total: u64,
        bytes_per_second: u64,
    },
    /// The task ended well. `outcome` is a word for scripts (`built`, `cached`, `pulled`,
    /// `pushed`, `loaded`, `already_present`, `retagged`); `reason` a word for why it was
    /// built (`context_changed`, `never_built`, ...); `detail` the same for people.
    Finished {
        task: String,
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// The paths that changed in the context since the last build (the first few).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changed_files: Vec<String>,
        /// Bytes sent (a load into a node, a context).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_sent: Option<u64>,
    },
    /// The task failed: `step` is the step (and command) that failed, `log_tail` the end of
    /// its log, `log_file` where the task's whole log is kept.
    Failed {
        task: String,
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        log_tail: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_file: Option<String>,
    },
    /// Something worth knowing that is not about one task.
    Info { message: String },
    /// Something that may be wrong.
    Warn { message: String },
    /// The run failed: the error, what caused it (outermost first), the fix when known, and
    /// the exit code. Shown by `main` as `error:`/`caused by:`/`hint:` lines, except in JSON.
    Error {
        message: String,
        causes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
        exit_code: u8,
    },
    /// The last event of a run: `status` `ok` or `failed`, the exit code, and the command's
    /// result (`build`: the images; `plan`: the plan; `up`: the whole run), when it has one.
    Summary {
        schema_version: u32,
        command: String,
        status: String,
        exit_code: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
}

impl Event {
    /// A task that ended with `outcome` and nothing more to say.
    pub fn finished(task: impl Into<String>, outcome: &str) -> Event {
        Event::Finished {
            task: task.into(),
            outcome: outcome.to_string(),
            reason: None,
            detail: None,
            changed_files: Vec::new(),
            bytes_sent: None,
        }
    }

    /// A task that failed with `error` and no log to show.
    pub fn failed(task: impl Into<String>, error: impl Into<String>) -> Event {
        Event::Failed {
            task: task.into(),
            error: error.into(),
            step: None,
            log_tail: Vec::new(),
            log_file: None,
        }
    }
}

/// Receives events. Implementations must be cheap: events come from build streams.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);

    /// Called before other text reaches the terminal (a command's result on stdout, the
    /// error): live lines end their last line.
    fn pause(&self) {}
}

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A terminal gets live lines; otherwise, or when `CI` is set, plain lines.
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
}

/// How much is shown (`-q`, `-v`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Makes the reporter the flags ask for.
pub fn make(mode: ProgressMode, verbosity: Verbosity) -> Arc<dyn Reporter> {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let mode = match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() && !ci => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        // Live lines need a terminal; `-q` shows only results and errors, which plain lines do.
        ProgressMode::Tty if !std::io::stderr().is_terminal() => ProgressMode::Plain,
        ProgressMode::Tty if verbosity == Verbosity::Quiet => ProgressMode::Plain,
        m => m,
    };
    match mode {
        ProgressMode::Json => Arc::new(JsonReporter),
        ProgressMode::Tty => Arc::new(TtyReporter::new(verbosity)),
        _ => Arc::new(PlainReporter::new(verbosity)),
    }
}

/// A reporter that keeps nothing and shows nothing.
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event) {}
}

/// Collects events, for tests.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Reporter for Recorder {
    fn report(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One JSON object per line on stdout, and nothing else there: the stream a script reads.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn report(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// The event with every text [`escape`]d: one event is one line (plus its log tail, a line
/// each), whatever names and paths it carries.
fn escaped(event: Event) -> Event {
    let e = |s: String| escape(&s);
    let o = |s: Option<String>| s.map(|s| escape(&s));
    match event {
        Event::Started {
            task,
            what,
            estimate_ms,
        } => Event::Started {
            task: e(task),
            what: e(what),
            estimate_ms,
        },
        Event::Step { task, step, cached } => Event::Step {
            task: e(task),
            step: e(step),
            cached,
        },
        Event::Log { task, line } => Event::Log {
            task: e(task),
            line: e(line),
        },
        Event::Transfer {
            task,
            bytes_done,
            bytes_total,
            bytes_per_second,
        } => Event::Transfer {
            task: e(task),
            bytes_done,
            bytes_total,
            bytes_per_second,
        },
        Event::Finished {
            task,
            outcome,
            reason,
            detail,
            changed_files,
            bytes_sent,
        } => Event::Finished {
            task: e(task),
            outcome: e(outcome),
            reason: o(reason),
            detail: o(detail),
            changed_files: changed_files.into_iter().map(e).collect(),
            bytes_sent,
        },
        Event::Failed {
            task,
            error,
            step,
            log_tail,
            log_file,
        } => Event::Failed {
            task: e(task),
            error: escape_lines(&error),
            step: o(step),
            log_tail: log_tail.into_iter().map(e).collect(),
            log_file: o(log_file),
        },
        Event::Info { message } => Event::Info {
            message: escape_lines(&message),
        },
        Event::Warn { message } => Event::Warn {
            message: e(message),
        },
        other => other,
    }
}

/// How a task's end reads for people: `built (Dockerfile changed)`, `built (first build)`,
/// `cached`, `loaded 1 of 5 layers (2.0 MB)`, then the changed files (all of them with `-v`).
pub fn finished_text(event: &Event, verbosity: Verbosity) -> String {
    let Event::Finished {
        outcome,
        reason,
        detail,
        changed_files,
        bytes_sent,
        ..
    } = event
    else {
        return String::new();
    };
    let mut text = match (outcome.as_str(), reason.as_deref(), detail) {
        ("built", Some("never_built"), _) => "built (first build)".to_string(),
        ("built", _, Some(d)) => format!("built ({d})"),
        (_, _, Some(d)) => d.clone(),
        (o, _, None) => o.replace('_', " "),
    };
    if let Some(n) = bytes_sent {
        text.push_str(&format!(" ({})", fmt_bytes(*n)));
    }
    if !changed_files.is_empty() {
        text.push_str(": ");
        text.push_str(&shown_files(changed_files, verbosity));
    }
    text
}

/// A label people scan for, coloured on a terminal that takes colour (`--color`, `NO_COLOR`):
/// `error:` and `✗` red, `warning:` yellow, `hint:` cyan, `✓` green.
pub fn label(text: &'static str) -> String {
    let style = console::style(text).for_stderr().bold();
    match text {
        "error:" | "✗" => style.red(),
        "warning:" => style.yellow(),
        "hint:" => style.cyan(),
        "✓" => style.green(),
        _ => style,
    }
    .to_string()
}

/// How many changed files are named without `-v`.
pub const CHANGED_SHOWN: usize = 3;

/// `a.txt, src/b.rs, c.md and 4 more` (every one with `-v`).
pub fn shown_files(files: &[String], verbosity: Verbosity) -> String {
    let shown = match verbosity {
        Verbosity::Verbose => files.len(),
        _ => CHANGED_SHOWN.min(files.len()),
    };
    let mut text = files[..shown].join(", ");
    if files.len() > shown {
        text.push_str(&format!(" and {} more", files.len() - shown));
    }
    text
}

/// How a failed task reads for people: the failing step (its command) once, the error, the
/// end of its log, and where the whole log is. `prefix` starts every line after the first.
fn failed_text(event: &Event, prefix: &str) -> String {
    let Event::Failed {
        task,
        error,
        step,
        log_tail,
        log_file,
    } = event
    else {
        return String::new();
    };
    let mut s = match step {
        Some(step) => format!("{task} failed at {step}: {error}"),
        None => format!("{task} failed: {error}"),
    };
    for l in log_tail {
        s.push_str(&format!("\n{prefix}| {l}"));
    }
    if let Some(path) = log_file {
        s.push_str(&format!("\n{prefix}full log: {path}"));
    }
    s
}

/// How an event of a build reads in its log file (`.slipway/logs/COMPONENT.log`): steps as
/// `#STEP`, output lines as they are; nothing for other events.
pub fn log_file_line(event: &Event) -> Option<String> {
    match event {
        Event::Step { step, cached, .. } => {
            Some(format!("#{} {step}", if *cached { " CACHED" } else { "" }))
        }
        Event::Log { line, .. } => Some(line.clone()),
        _ => None,
    }
}

/// Plain `[task] message` lines on stderr: for CI logs and pipes.
pub struct PlainReporter {
    verbosity: Verbosity,
    started: Mutex<HashMap<String, Instant>>,
}

impl PlainReporter {
    pub fn new(verbosity: Verbosity) -> Self {
        PlainReporter {
            verbosity,
            started: Mutex::new(HashMap::new()),
        }
    }

    fn elapsed(&self, task: &str) -> String {
        let started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started
            .get(task)
            .map(|t| format!(" ({})", fmt_duration(t.elapsed())))
            .unwrap_or_default()
    }

    /// The text `event` shows as (several lines for a failure), if any.
    pub fn render(&self, event: Event) -> Option<String> {
        let loud = self.verbosity > Verbosity::Quiet;
        match escaped(event) {
            Event::Started { task, what, .. } => {
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(task.clone(), Instant::now());
                loud.then(|| format!("[{task}] {what} started"))
            }
            Event::Step { task, step, cached } => {
                loud.then(|| format!("[{task}] {}{step}", if cached { "CACHED " } else { "" }))
            }
            Event::Log { task, line } => loud.then(|| format!("[{task}]   {line}")),
            e @ Event::Finished { .. } => {
                let Event::Finished { task, .. } = &e else {
                    return None;
                };
                Some(format!(
                    "[{task}] {}{}",
                    finished_text(&e, self.verbosity),
                    self.elapsed(task)
                ))
            }
            e @ Event::Failed { .. } => {
                let Event::Failed { task, .. } = &e else {
                    return None;
                };
                let prefix = format!("[{task}]   ");
                // `[beta] FAILED at [build 2/2] RUN make: exit code: 2`
                let text = failed_text(&e, &prefix);
                let rest = text.strip_prefix(task.as_str()).unwrap_or(&text);
                let rest = rest.strip_prefix(" failed").unwrap_or(rest);
                Some(format!("[{task}] FAILED{rest}"))
            }
            Event::Info { message } => loud.then_some(message),
            Event::Warn { message } => Some(format!("{} {message}", label("warning:"))),
            // A line a second would drown a CI log: the step says the layer and its size.
            Event::Run { .. }
            | Event::Error { .. }
            | Event::Summary { .. }
            | Event::Transfer { .. } => None,
        }
    }
}

impl Reporter for PlainReporter {
    fn report(&self, event: Event) {
        if let Some(line) = self.render(event) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Live lines for people at a terminal: per task, a line with its step (the stage, the step
/// count and the command: `[build 2/3] RUN npm run build`) and a line under it with the
/// step's latest output or the bytes sent so far and the rate; each fitted to the terminal's
/// width so that nothing wraps. A finished task keeps one line (`✓`); a failed one prints its
/// failure ([`failed_text`]).
pub struct TtyReporter {
    verbosity: Verbosity,
    multi: MultiProgress,
    tasks: Mutex<HashMap<String, Live>>,
    /// The terminal's width, when it is not the real stderr's (tests).
    width: Option<usize>,
    ticking: bool,
    /// Whether anything was drawn: indicatif leaves the cursor at the end of its last line,
    /// so the end of the run adds the line break.
    drawn: std::sync::atomic::AtomicBool,
}

/// A task's live line.
struct Live {
    bar: ProgressBar,
    /// `/1m05s`: how long the last build took, shown after the elapsed time.
    estimate: String,
    step: String,
    below: Option<String>,
}

/// The columns a live line spends before its message: spinner, task, elapsed time.
fn head_width(task: &str) -> usize {
    2 + task.chars().count().max(12) + 1 + 4 + 1
}

/// A live task's message: the estimate (`/1m05s`, after the elapsed time), its step fitted to
/// what is left of the first line, and `below` (the latest log line, or the bytes sent) on a
/// line of its own, fitted to `width`.
pub fn live_message(
    task: &str,
    estimate: &str,
    step: &str,
    below: Option<&str>,
    width: usize,
) -> String {
    let room = width
        .saturating_sub(head_width(task) + estimate.chars().count() + 1)
        .max(10);
    let mut text = format!("{estimate} {}", console::truncate_str(step, room, "…"));
    if let Some(line) = below.filter(|l| !l.trim().is_empty()) {
        let room = width.saturating_sub(7).max(10);
        text.push_str(&format!(
            "\n    › {}",
            console::truncate_str(line.trim_end(), room, "…")
        ));
    }
    text
}

impl TtyReporter {
    pub fn new(verbosity: Verbosity) -> Self {
        TtyReporter {
            verbosity,
            multi: MultiProgress::new(),
            tasks: Mutex::new(HashMap::new()),
            width: None,
            ticking: true,
            drawn: Default::default(),
        }
    }

    /// A reporter drawing on `target`, `width` columns wide, without the spinner's ticks (its
    /// frames stay put): for tests on an emulated terminal.
    pub fn drawing_on(
        verbosity: Verbosity,
        target: indicatif::ProgressDrawTarget,
        width: usize,
    ) -> Self {
        TtyReporter {
            verbosity,
            multi: MultiProgress::with_draw_target(target),
            tasks: Mutex::new(HashMap::new()),
            width: Some(width),
            ticking: false,
            drawn: Default::default(),
        }
    }

    fn width(&self) -> usize {
        self.width
            .unwrap_or_else(|| console::Term::stderr().size().1 as usize)
            .max(20)
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix:<12.bold} {elapsed:>4}{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }

    fn show(&self, task: &str, live: &Live) {
        live.bar.set_message(live_message(
            task,
            &live.estimate,
            &live.step,
            live.below.as_deref(),
            self.width(),
        ));
    }

    /// A one-line end of a task: `✓ backend      built (Dockerfile changed)  12s`.
    fn finish(&self, task: &str, bar: Option<ProgressBar>, text: String) {
        let elapsed = bar
            .as_ref()
            .map(|b| format!("  {}", fmt_duration(b.elapsed())))
            .unwrap_or_default();
        let room = self
            .width()
            .saturating_sub(2 + task.chars().count().max(12) + 1 + elapsed.len() + 1);
        let text = console::truncate_str(&text, room.max(10), "…").into_owned();
        let done =
            ProgressStyle::with_template(&format!("{} {{prefix:<12.bold}} {{msg}}", label("✓")))
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = bar.unwrap_or_else(|| self.multi.add(ProgressBar::new_spinner()));
        bar.set_style(done);
        bar.set_prefix(task.to_string());
        bar.finish_with_message(format!("{text}{elapsed}"));
    }
}

impl Reporter for TtyReporter {
    fn pause(&self) {
        // indicatif leaves the cursor at the end of its last line.
        if self.drawn.swap(false, std::sync::atomic::Ordering::Relaxed) && self.width.is_none() {
            let _ = writeln!(std::io::stderr());
        }
    }

    fn report(&self, event: Event) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(
            event,
            Event::Run { .. } | Event::Error { .. } | Event::Summary { .. }
        ) {
            self.drawn.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match escaped(event) {
            Event::Started {
                task,
                what,
                estimate_ms,
            } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::style());
                bar.set_prefix(task.clone());
                if self.ticking {
                    bar.enable_steady_tick(Duration::from_millis(120));
                }
                let estimate = estimate_ms
                    .map(|ms| format!("/{}", fmt_duration(Duration::from_millis(ms))))
                    .unwrap_or_default();
                let live = Live {
                    bar,
                    estimate,
                    step: what,
                    below: None,
                };
                self.show(&task, &live);
                tasks.insert(task, live);
            }
            Event::Step { task, step, cached } => {
                if let Some(live) = tasks.get_mut(&task) {
                    live.step = format!("{}{step}", if cached { "CACHED " } else { "" });
                    live.below = None;
                    self.show(&task, live);
                }
            }
            Event::Log { task, line } => {
                if let Some(live) = tasks.get_mut(&task) {
                    if self.verbosity == Verbosity::Verbose {
                        live.bar.println(format!("[{task}] {line}"));
                    }
                    live.below = Some(line);
                    self.show(&task, live);
                }
            }
            Event::Transfer {
                task,
                bytes_done,
                bytes_total,
                bytes_per_second,
            } => {
                if let Some(live) = tasks.get_mut(&task) {
                    live.below = Some(transfer_text(bytes_done, bytes_total, bytes_per_second));
                    self.show(&task, live);
                }
            }
            e @ Event::Finished { .. } => {
                let Event::Finished { task, .. } = &e else {
                    return;
                };
                let text = finished_text(&e, self.verbosity);
                let bar = tasks.remove(task).map(|l| l.bar);
                self.finish(task, bar, text);
            }
            e @ Event::Failed { .. } => {
                let Event::Failed { task, .. } = &e else {
                    return;
                };
                if let Some(live) = tasks.remove(task) {
                    live.bar.finish_and_clear();
                }
                let _ = self
                    .multi
                    .println(format!("{} {}", label("✗"), failed_text(&e, "    ")));
            }
            Event::Info { message } => {
                if self.verbosity > Verbosity::Quiet {
                    let _ = self.multi.println(message);
                }
            }
            Event::Warn { message } => {
                let _ = self
                    .multi
                    .println(format!("{} {message}", label("warning:")));
            }
            Event::Run { .. } | Event::Error { .. } | Event::Summary { .. } => {}
        }
    }
}

/// `120.4 MB of 331.7 MB, 45.2 MB/s`.
pub fn transfer_text(done: u64, total: u64, per_second: u64) -> String {
    format!(
        "{} of {}, {}/s",
        fmt_bytes(done),
        fmt_bytes(total),
        fmt_bytes(per_second)
    )
}

/// `s` with every control character escaped (`\n`, `\t`, `\u{1b}`, ...): a name or path from
/// outside (a file in a context, a tag) printed on a terminal or in a CI log can neither
/// start a line of its own nor send escape sequences. JSON output escapes by itself.
pub fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// A path as it may be printed: see [`escape`].
pub fn shown_path(path: &std::path::Path) -> String {
    escape(&path.to_string_lossy())
}

/// [`shown_path`], relative to the current directory when the path is under it (the files a
/// run writes in its project: `.slipway/logs/web.log`).
pub fn shown_relative(path: &std::path::Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    shown_path(path.strip_prefix(&cwd).unwrap_or(path))
}

/// A message of several lines as it may be printed: control characters escaped but the line
/// breaks, and every line after the first indented when it is not, so that no text inside a
/// message can pass for a line of its own (`error: ...`).
pub fn escape_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if !line.starts_with([' ', '\t']) {
                out.push_str("  ");
            }
        }
        out.push_str(&escape(line));
    }
    out
}

/// `1.2s`, `340ms`, `2m05s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// `1.5 MB`, `230 kB`, `12 B` (decimal units, as Docker prints sizes).
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an emulated terminal `cols` wide shows after `events`, timings masked.
    fn screen(cols: u16, verbosity: Verbosity, events: Vec<Event>) -> String {
        let term = indicatif::InMemoryTerm::new(30, cols);
        let target = indicatif::ProgressDrawTarget::term_like(Box::new(term.clone()));
        let r = TtyReporter::drawing_on(verbosity, target, cols as usize);
        for e in events {
            r.report(e);
        }
        let masked: Vec<String> = term
            .contents()
            .lines()
            .map(|l| {
                l.split(' ')
                    .map(|w| {
                        // `12s/1m05s`: the elapsed time varies, the estimate does not.
                        if let Some((elapsed, estimate)) = w.split_once("s/") {
                            if !elapsed.is_empty() && elapsed.chars().all(|c| c.is_ascii_digit()) {
                                return format!("T/{estimate}");
                            }
                        }
                        let digits = w.trim_end_matches("ms").trim_end_matches('s');
                        let timing = w.ends_with('s')
                            && !digits.is_empty()
                            && digits
                                .chars()
                                .all(|c| c.is_ascii_digit() || c == '.' || c == 'm');
                        if timing {
                            "T".to_string()
                        } else {
                            w.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        for l in &masked {
            assert!(l.chars().count() <= cols as usize, "wider than {cols}: {l}");
        }
        masked.join("\n")
    }

    /// Snapshots of what `events` show at 80 and 150 columns (`tty_NAME_COLS`).
    fn snapshots(name: &str, events: Vec<Event>) {
        for cols in [80u16, 150] {
            let shown = screen(cols, Verbosity::Normal, events.clone());
            insta::assert_snapshot!(format!("tty_{name}_{cols}"), shown);
        }
    }

    fn start(task: &str, what: &str) -> Event {
        Event::Started {
            task: task.into(),
            what: what.into(),
            estimate_ms: None,
        }
    }

    fn step(task: &str, step: &str) -> Event {
        Event::Step {
            task: task.into(),
            step: step.into(),
            cached: false,
        }
    }

    fn log(task: &str, line: &str) -> Event {
        Event::Log {
            task: task.into(),
            line: line.into(),
        }
    }

    fn built(task: &str, reason: &str, detail: &str, files: &[&str]) -> Event {
        Event::Finished {
            task: task.into(),
            outcome: "built".into(),
            reason: Some(reason.into()),
            detail: Some(detail.into()),
            changed_files: files.iter().map(|f| f.to_string()).collect(),
            bytes_sent: None,
        }
    }

    const RUN: &str =
        "[build 2/2] RUN npm run build && node scripts/postbuild.js --out .next/standalone";

    #[test]
    fn tty_a_running_build_shows_its_step_and_latest_line() {
        snapshots("running", vec![
            Event::Started {
                task: "frontend".into(),
                what: "build".into(),
                estimate_ms: Some(65_000),
            },
            step("frontend", RUN),
            log("frontend", "compiling module 21 of 40: src/components/very/long/path/to/a/component/Widget.tsx"),
            start("backend", "build"),
            step("backend", "[deps 3/5] RUN pip install -r requirements.txt"),
        ]);
    }

    #[test]
    fn tty_a_cached_run_and_a_build_say_why() {
        snapshots(
            "cached",
            vec![
                Event::finished("backend", "cached"),
                start("frontend", "build"),
                built(
                    "frontend",
                    "context_changed",
                    "context changed (28.2 kB)",
                    &[
                        "app/page.tsx",
                        "app/layout.tsx",
                        "lib/a.ts",
                        "lib/b.ts",
                        "lib/c.ts",
                    ],
                ),
                start("worker", "build"),
                built("worker", "never_built", "never built", &[]),
            ],
        );
    }

    #[test]
    fn tty_a_failure_shows_its_step_once_its_tail_and_its_log() {
        snapshots(
            "failed",
            vec![
                start("worker", "build"),
                step("worker", "[build 3/3] RUN make"),
                log("worker", "error: the cause, on stderr"),
                Event::Failed {
                    task: "worker".into(),
                    error: "exit code: 2".into(),
                    step: Some("[build 3/3] RUN make".into()),
                    log_tail: vec![
                        "error: the cause, on stderr".into(),
                        "...".into(),
                        "make: *** [all] Error 1".into(),
                    ],
                    log_file: Some(".slipway/logs/worker.log".into()),
                },
            ],
        );
    }

    #[test]
    fn tty_a_load_shows_bytes_and_rate() {
        snapshots(
            "load",
            vec![
                start("frontend@dev-worker", "load"),
                step("frontend@dev-worker", "sending layer 5 of 5 (331.7 MB)"),
                Event::Transfer {
                    task: "frontend@dev-worker".into(),
                    bytes_done: 120_400_000,
                    bytes_total: 331_700_000,
                    bytes_per_second: 45_200_000,
                },
            ],
        );
    }

    #[test]
    fn finished_wording() {
        let e = built("w", "never_built", "never built", &[]);
        assert_eq!(finished_text(&e, Verbosity::Normal), "built (first build)");
        let files = ["a", "b", "c", "d", "e"];
        let e = built("w", "context_changed", "context changed (1 kB)", &files);
        assert_eq!(
            finished_text(&e, Verbosity::Normal),
            "built (context changed (1 kB)): a, b, c and 2 more"
        );
        assert_eq!(
            finished_text(&e, Verbosity::Verbose),
            "built (context changed (1 kB)): a, b, c, d, e"
        );
    }

    #[test]
    fn json_events_are_tagged() {
        let e = Event::finished("backend", "cached");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"finished","task":"backend","outcome":"cached"}"#
        );
        let e = Event::Finished {
            task: "backend".into(),
            outcome: "built".into(),
            reason: Some("context_changed".into()),
            detail: Some("context changed (28.2 kB)".into()),
            changed_files: vec!["src/app.py".into()],
            bytes_sent: None,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"finished","task":"backend","outcome":"built","reason":"context_changed","detail":"context changed (28.2 kB)","changed_files":["src/app.py"]}"#
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let name = "ev\u{1b}[31mil\nerror: fake line";
        assert_eq!(escape(name), "ev\\u{1b}[31mil\\nerror: fake line");
        assert_eq!(escape("plain/path é"), "plain/path é");
        assert_eq!(
            escape_lines("error: a\nerror: b\n  kept"),
            "error: a\n  error: b\n  kept"
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(fmt_bytes(12), "12 B");
        assert_eq!(fmt_bytes(1_500_000), "1.5 MB");
        assert_eq!(fmt_duration(Duration::from_millis(340)), "340ms");
        assert_eq!(fmt_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }
}
