//! The progress seam: core code reports [`Event`]s, and only this module decides how they look.
//!
//! People at a terminal get one indicatif line per task (a component being built, an image
//! being loaded into a node) that expands to the failing step's log on error; CI and pipes get
//! plain prefixed lines; tools get one JSON object per line. Everything goes to stderr so that
//! stdout stays for a command's result (a table, `--json` output).

use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;

/// How many log lines of a failing step are shown.
pub const LOG_TAIL: usize = 20;

/// Something that happened. A `task` names what the event is about: a component
/// (`backend`), or a component on a node (`backend@dev-worker`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A task started; `what` says what it does ("build", "load").
    Started { task: String, what: String },
    /// The task moved to a new step; `cached` when the step was served from cache.
    Step {
        task: String,
        step: String,
        cached: bool,
    },
    /// A line of output of the task's current step.
    Log { task: String, line: String },
    /// The task ended well; `outcome` says how ("built", "cached", "already present").
    Finished { task: String, outcome: String },
    /// The task failed; `log_tail` is the end of its failing step's log.
    Failed {
        task: String,
        error: String,
        log_tail: Vec<String>,
    },
    /// Something worth knowing that is not about one task.
    Info { message: String },
    /// Something that may be wrong.
    Warn { message: String },
}

/// Receives events. Implementations must be cheap: events come from build streams.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);
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

/// One JSON object per line on stderr.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn report(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

/// The event with every text [`escape`]d: one event is one line (plus its log tail, a line
/// each), whatever names and paths it carries.
fn escaped(event: Event) -> Event {
    let e = |s: String| escape(&s);
    match event {
        Event::Started { task, what } => Event::Started {
            task: e(task),
            what: e(what),
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
        Event::Finished { task, outcome } => Event::Finished {
            task: e(task),
            outcome: e(outcome),
        },
        Event::Failed {
            task,
            error,
            log_tail,
        } => Event::Failed {
            task: e(task),
            error: e(error),
            log_tail: log_tail.into_iter().map(e).collect(),
        },
        Event::Info { message } => Event::Info {
            message: escape_lines(&message),
        },
        Event::Warn { message } => Event::Warn {
            message: e(message),
        },
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
}

impl Reporter for PlainReporter {
    fn report(&self, event: Event) {
        let line = match escaped(event) {
            Event::Started { task, what } => {
                self.started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(task.clone(), Instant::now());
                (self.verbosity > Verbosity::Quiet).then(|| format!("[{task}] {what} started"))
            }
            Event::Step { task, step, cached } => (self.verbosity > Verbosity::Quiet)
                .then(|| format!("[{task}] {}{step}", if cached { "CACHED " } else { "" })),
            Event::Log { task, line } => {
                (self.verbosity > Verbosity::Quiet).then(|| format!("[{task}]   {line}"))
            }
            Event::Finished { task, outcome } => {
                Some(format!("[{task}] {outcome}{}", self.elapsed(&task)))
            }
            Event::Failed {
                task,
                error,
                log_tail,
            } => {
                let mut s = format!("[{task}] FAILED: {error}");
                for l in log_tail {
                    s.push_str(&format!("\n[{task}]   | {l}"));
                }
                Some(s)
            }
            Event::Info { message } => (self.verbosity > Verbosity::Quiet).then_some(message),
            Event::Warn { message } => Some(format!("warning: {message}")),
        };
        if let Some(line) = line {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Live lines for people at a terminal.
pub struct TtyReporter {
    verbosity: Verbosity,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, VecDeque<String>)>>,
}

impl TtyReporter {
    pub fn new(verbosity: Verbosity) -> Self {
        TtyReporter {
            verbosity,
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{spinner} {prefix:<12.bold} {wide_msg} {elapsed:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
    }
}

impl Reporter for TtyReporter {
    fn report(&self, event: Event) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        match escaped(event) {
            Event::Started { task, what } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::style());
                bar.set_prefix(task.clone());
                bar.set_message(what);
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(task, (bar, VecDeque::new()));
            }
            Event::Step { task, step, cached } => {
                if let Some((bar, log)) = bars.get_mut(&task) {
                    log.clear();
                    bar.set_message(format!("{}{step}", if cached { "CACHED " } else { "" }));
                }
            }
            Event::Log { task, line } => {
                if let Some((bar, log)) = bars.get_mut(&task) {
                    if self.verbosity == Verbosity::Verbose {
                        bar.println(format!("[{task}] {line}"));
                    }
                    if log.len() == LOG_TAIL {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            }
            Event::Finished { task, outcome } => {
                let done =
                    ProgressStyle::with_template("✓ {prefix:<12.bold} {wide_msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner());
                if let Some((bar, _)) = bars.get(&task) {
                    bar.set_style(done);
                    bar.finish_with_message(outcome);
                } else {
                    // A task that finished without starting (a cached image): a line like
                    // the others.
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(done);
                    bar.set_prefix(task);
                    bar.finish_with_message(outcome);
                }
            }
            Event::Failed {
                task,
                error,
                log_tail,
            } => {
                let mut text = format!("✗ {task}: {error}");
                for l in &log_tail {
                    text.push_str(&format!("\n    | {l}"));
                }
                if let Some((bar, _)) = bars.get(&task) {
                    bar.finish_and_clear();
                }
                let _ = self.multi.println(text);
            }
            Event::Info { message } => {
                if self.verbosity > Verbosity::Quiet {
                    let _ = self.multi.println(message);
                }
            }
            Event::Warn { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
        }
    }
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

    #[test]
    fn json_events_are_tagged() {
        let e = Event::Finished {
            task: "backend".into(),
            outcome: "cached".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"finished","task":"backend","outcome":"cached"}"#
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
