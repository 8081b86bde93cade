//! Turning the daemon's build stream into progress events, item by item.
//!
//! A BuildKit build streams `StatusResponse`s: vertexes (one per step, updated as they start,
//! finish, hit the cache or fail) and their log chunks; a legacy build streams text lines
//! (`Step 3/4 : RUN make`, then the command's output). Both end with the image ID in an `aux`
//! item, or with an error item. [`Progress`] keeps just enough per step (its name and the last
//! lines of its log) to report each step once, forward log lines as they arrive, and say on
//! failure which step failed, with its command and the tail of its log.

use std::collections::{HashMap, VecDeque};

use bollard::moby::buildkit::v1::StatusResponse;
use bollard::models::{BuildInfo, BuildInfoAux};

use crate::report::{Event, LOG_TAIL};

/// How many of a step's last stderr lines the failure excerpt keeps when they scrolled out of
/// its tail: the line that says what broke often comes before the output that follows it.
const STDERR_KEPT: usize = 5;

#[derive(Default)]
struct Step {
    name: String,
    reported: bool,
    done: bool,
    error: Option<String>,
    /// Text not yet ended by a newline, per stream (stdout, stderr).
    partial: Vec<u8>,
    partial_err: Vec<u8>,
    /// The last lines, numbered.
    tail: VecDeque<(u64, String)>,
    /// The last stderr lines, numbered.
    stderr: VecDeque<(u64, String)>,
    lines: u64,
}

impl Step {
    fn named(name: String) -> Self {
        Step {
            name,
            ..Step::default()
        }
    }

    fn push_line(&mut self, line: String, stderr: bool) {
        let n = self.lines;
        self.lines += 1;
        if self.tail.len() == LOG_TAIL {
            self.tail.pop_front();
        }
        if stderr {
            if self.stderr.len() == STDERR_KEPT {
                self.stderr.pop_front();
            }
            self.stderr.push_back((n, line.clone()));
        }
        self.tail.push_back((n, line));
    }

    /// The failure excerpt: the stderr lines that scrolled out of the tail (then `...`), and
    /// the tail.
    fn excerpt(&self) -> Vec<String> {
        let first = self.tail.front().map_or(u64::MAX, |(n, _)| *n);
        let mut out: Vec<String> = self
            .stderr
            .iter()
            .filter(|(n, _)| *n < first)
            .map(|(_, l)| l.clone())
            .collect();
        if !out.is_empty() {
            out.push("...".to_string());
        }
        out.extend(self.tail.iter().map(|(_, l)| l.clone()));
        out
    }
}

/// Where a build stands, fed one stream item at a time.
pub struct Progress {
    task: String,
    steps: HashMap<String, Step>,
    /// Keys of `steps` in the order they started.
    order: Vec<String>,
    image_id: Option<String>,
    /// Legacy builder: the text not yet ended by a newline.
    legacy_partial: String,
    /// Values that must never be shown (build secrets): replaced by `***` in every line.
    secrets: Vec<String>,
}

/// The step a failed build stopped at, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStep {
    /// `[build 3/4] RUN make` (BuildKit) or `[3/4] RUN make` (legacy): the step and its command.
    pub step: Option<String>,
    /// The error BuildKit recorded on the step, when it did.
    pub error: Option<String>,
    /// The last lines of the step's log, after the stderr lines that scrolled out of them.
    pub log_tail: Vec<String>,
}

/// The key the legacy builder's steps are kept under.
const LEGACY: &str = "legacy";

impl Progress {
    pub fn new(task: &str) -> Self {
        Progress {
            task: task.to_string(),
            steps: HashMap::new(),
            order: Vec::new(),
            image_id: None,
            legacy_partial: String::new(),
            secrets: Vec::new(),
        }
    }

    /// The same, replacing these values (build secrets) by `***` wherever they appear.
    pub fn hiding(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        self
    }

    /// The image ID the build reported (`sha256:...`), once it has.
    pub fn image_id(&self) -> Option<&str> {
        self.image_id.as_deref()
    }

    /// Takes one stream item and appends the events it means to `out`.
    pub fn on_item(&mut self, info: BuildInfo, out: &mut Vec<Event>) {
        match info.aux {
            Some(BuildInfoAux::BuildKit(status)) => self.on_status(status, out),
            Some(BuildInfoAux::Default(id)) => {
                if let Some(id) = id.id.filter(|i| !i.is_empty()) {
                    self.image_id = Some(id);
                }
            }
            None => {}
        }
        if let Some(text) = info.stream {
            self.on_legacy_text(&text, out);
        }
    }

    /// A BuildKit status update.
    pub fn on_status(&mut self, status: StatusResponse, out: &mut Vec<Event>) {
        for v in status.vertexes {
            let step = self.steps.entry(v.digest.clone()).or_default();
            if step.name.is_empty() {
                step.name = hide(&self.secrets, shown_step(&v.name));
            }
            if !step.reported && (v.started.is_some() || v.cached) {
                step.reported = true;
                self.order.push(v.digest.clone());
                out.push(Event::Step {
                    task: self.task.clone(),
                    step: step.name.clone(),
                    cached: v.cached,
                });
            }
            if !v.error.is_empty() {
                step.error = Some(v.error.clone());
            }
            if v.completed.is_some() && !step.done {
                step.done = true;
                for stderr in [false, true] {
                    let partial = match stderr {
                        false => &mut step.partial,
                        true => &mut step.partial_err,
                    };
                    if !partial.is_empty() {
                        let rest = std::mem::take(partial);
                        emit_line(&self.task, &self.secrets, step, &rest, stderr, out);
                    }
                }
            }
        }
        for log in status.logs {
            let step = self.steps.entry(log.vertex).or_default();
            let stderr = log.stream == 2;
            let mut partial = std::mem::take(match stderr {
                false => &mut step.partial,
                true => &mut step.partial_err,
            });
            partial.extend_from_slice(&log.msg);
            while let Some(i) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=i).collect();
                emit_line(&self.task, &self.secrets, step, &line[..i], stderr, out);
            }
            match stderr {
                false => step.partial = partial,
                true => step.partial_err = partial,
            }
        }
    }

    /// Text from the legacy builder (lines may arrive split over items).
    fn on_legacy_text(&mut self, text: &str, out: &mut Vec<Event>) {
        self.legacy_partial.push_str(text);
        while let Some(i) = self.legacy_partial.find('\n') {
            let line: String = self.legacy_partial.drain(..=i).collect();
            self.on_legacy_line(line.trim_end_matches(['\n', '\r']), out);
        }
    }

    fn on_legacy_line(&mut self, line: &str, out: &mut Vec<Event>) {
        if let Some(step) = legacy_step(line).map(|s| hide(&self.secrets, s)) {
            self.steps
                .insert(LEGACY.to_string(), Step::named(step.clone()));
            self.order.retain(|k| k != LEGACY);
            self.order.push(LEGACY.to_string());
            out.push(Event::Step {
                task: self.task.clone(),
                step,
                cached: false,
            });
            return;
        }
        let trimmed = line.trim();
        if trimmed == "---> Using cache" {
            if let Some(step) = self.steps.get(LEGACY) {
                out.push(Event::Step {
                    task: self.task.clone(),
                    step: step.name.clone(),
                    cached: true,
                });
            }
            return;
        }
        let noise = trimmed.is_empty()
            || trimmed.starts_with("---> Running in ")
            || trimmed.starts_with("Removing intermediate container ")
            || trimmed.starts_with("Successfully built ")
            || trimmed.starts_with("Successfully tagged ")
            || trimmed
                .strip_prefix("---> ")
                .is_some_and(|id| id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()));
        if noise {
            return;
        }
        let step = self
            .steps
            .entry(LEGACY.to_string())
            .or_insert_with(|| Step::named(String::new()));
        emit_line(&self.task, &self.secrets, step, line.as_bytes(), false, out);
    }

    /// The step a failed build stopped at: the one BuildKit marked with an error, else the
    /// last one that started and did not finish, else the last one that started.
    pub fn failed_step(&self) -> FailedStep {
        let key = self
            .order
            .iter()
            .rev()
            .find(|k| self.steps[*k].error.is_some())
            .or_else(|| self.order.iter().rev().find(|k| !self.steps[*k].done))
            .or_else(|| self.order.last());
        match key.and_then(|k| self.steps.get(k)) {
            Some(step) => {
                let mut log_tail = step.excerpt();
                for partial in [&step.partial, &step.partial_err] {
                    if !partial.is_empty() {
                        log_tail.push(hide(&self.secrets, clean(partial)));
                        if log_tail.len() > LOG_TAIL + STDERR_KEPT + 1 {
                            log_tail.remove(0);
                        }
                    }
                }
                FailedStep {
                    step: (!step.name.is_empty()).then(|| step.name.clone()),
                    error: step.error.clone(),
                    log_tail,
                }
            }
            None => FailedStep {
                step: None,
                error: None,
                log_tail: Vec::new(),
            },
        }
    }
}

/// A BuildKit step as people read it: `RUN --mount=type=cache,... --mount=... npm run build`
/// becomes `RUN npm run build` (the stage and step count stay: `[build 2/2] RUN npm run build`).
pub fn shown_step(name: &str) -> String {
    let Some(at) = name.find("RUN ") else {
        return name.to_string();
    };
    let (head, rest) = name.split_at(at + 4);
    let mut rest = rest.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        // A flag runs to the next space (mount options hold no spaces).
        let end = flag.find(' ').map_or(flag.len(), |i| i + 1);
        rest = flag[end..].trim_start();
    }
    format!("{head}{rest}")
}

/// A failed step's error without the command it repeats: BuildKit's `process "/bin/sh -c make"
/// did not complete successfully: exit code: 2` (`executor failed running [/bin/sh -c make]:
/// exit code: 2` in Docker 20.10) and the legacy builder's `The command
/// '/bin/sh -c make' returned a non-zero code: 2` both become `exit code: 2` (the command is
/// shown once, with the step).
pub fn without_command(error: &str) -> String {
    if let Some(rest) = error.strip_prefix("process \"") {
        if let Some(at) = rest.rfind("\" did not complete successfully: ") {
            return rest[at + "\" did not complete successfully: ".len()..].to_string();
        }
    }
    // BuildKit of Docker 20.10.
    if error.starts_with("executor failed running [") {
        if let Some(at) = error.rfind("]: ") {
            return error[at + 3..].to_string();
        }
    }
    if error.starts_with("The command '") {
        if let Some(at) = error.rfind("' returned a non-zero code: ") {
            let code = &error[at + "' returned a non-zero code: ".len()..];
            return format!("exit code: {code}");
        }
    }
    error.to_string()
}

/// The instructions a Dockerfile may use: what an unknown one is compared with.
const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A Dockerfile parse error in a builder's error, as its line and what is wrong there:
/// `... dockerfile parse error line 4: unknown instruction: RUNN` (BuildKit and the legacy
/// builder; newer BuildKit says `on line 4`) gives `(4, "unknown instruction RUNN (did you
/// mean RUN?)")`.
pub fn dockerfile_error(error: &str) -> Option<(usize, String)> {
    let at = error.find("dockerfile parse error ")?;
    let rest = &error[at + "dockerfile parse error ".len()..];
    let rest = rest.strip_prefix("on ").unwrap_or(rest);
    let rest = rest.strip_prefix("line ")?;
    let (line, message) = rest.split_once(':')?;
    let line: usize = line.trim().parse().ok()?;
    let message = message.trim();
    let Some(word) = message.strip_prefix("unknown instruction:") else {
        return Some((line, message.to_string()));
    };
    let word = word.split([' ', '(']).find(|w| !w.is_empty()).unwrap_or("");
    let upper = word.to_ascii_uppercase();
    let guess = INSTRUCTIONS
        .iter()
        .map(|i| (strsim::levenshtein(i, &upper), *i))
        .filter(|(d, _)| *d <= 2)
        .min();
    Some((
        line,
        match guess {
            Some((_, i)) => format!("unknown instruction {word} (did you mean {i}?)"),
            None => format!("unknown instruction {word}"),
        },
    ))
}

/// The step's place without its command: `[build 2/3] RUN make` -> `[build 2/3]`.
pub fn step_label(step: &str) -> &str {
    match step.find("] ") {
        Some(i) if step.starts_with('[') => &step[..=i],
        _ => step,
    }
}

/// `Step 3/4 : RUN make` -> `[3/4] RUN make`.
fn legacy_step(line: &str) -> Option<String> {
    let rest = line.strip_prefix("Step ")?;
    let (count, command) = rest.split_once(" : ")?;
    count
        .chars()
        .all(|c| c.is_ascii_digit() || c == '/')
        .then(|| format!("[{count}] {command}"))
}

/// A log line as text: invalid UTF-8 replaced, a progress bar's `\r` rewrites collapsed to the
/// last one.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\r', '\n']);
    text.rsplit('\r').next().unwrap_or("").to_string()
}

/// `text` with every secret value replaced by `***`.
fn hide(secrets: &[String], text: String) -> String {
    secrets.iter().fold(text, |t, s| {
        if t.contains(s.as_str()) {
            t.replace(s.as_str(), "***")
        } else {
            t
        }
    })
}

fn emit_line(
    task: &str,
    secrets: &[String],
    step: &mut Step,
    bytes: &[u8],
    stderr: bool,
    out: &mut Vec<Event>,
) {
    let line = hide(secrets, clean(bytes));
    step.push_line(line.clone(), stderr);
    out.push(Event::Log {
        task: task.to_string(),
        line,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::moby::buildkit::v1::{Vertex, VertexLog};
    use bollard::models::ImageId;

    fn vertex(digest: &str, name: &str, started: bool, done: bool, cached: bool) -> Vertex {
        Vertex {
            digest: digest.into(),
            name: name.into(),
            cached,
            started: started.then(Default::default),
            completed: done.then(Default::default),
            ..Vertex::default()
        }
    }

    fn status(vertexes: Vec<Vertex>, logs: Vec<(&str, &str)>) -> BuildInfo {
        BuildInfo {
            id: Some("moby.buildkit.trace".into()),
            aux: Some(BuildInfoAux::BuildKit(StatusResponse {
                vertexes,
                logs: logs
                    .into_iter()
                    .map(|(v, m)| VertexLog {
                        vertex: v.into(),
                        msg: m.as_bytes().to_vec(),
                        ..VertexLog::default()
                    })
                    .collect(),
                ..StatusResponse::default()
            })),
            ..BuildInfo::default()
        }
    }

    #[test]
    fn the_excerpt_keeps_the_stderr_line_that_scrolled_out_and_hides_secrets() {
        let mut p = Progress::new("api").hiding(vec!["hunter2".into()]);
        let mut ev = Vec::new();
        let log = |msg: String, stream: i64| VertexLog {
            vertex: "b".into(),
            msg: msg.into_bytes(),
            stream,
            ..VertexLog::default()
        };
        let mut logs = vec![log("ERROR in module 3: token hunter2\n".into(), 2)];
        logs.extend((1..=30).map(|i| log(format!("compiling module {i}\n"), 1)));
        p.on_item(
            BuildInfo {
                aux: Some(BuildInfoAux::BuildKit(StatusResponse {
                    vertexes: vec![vertex("b", "[build 2/2] RUN make", true, false, false)],
                    logs,
                    ..StatusResponse::default()
                })),
                ..BuildInfo::default()
            },
            &mut ev,
        );
        let tail = p.failed_step().log_tail;
        assert_eq!(tail[0], "ERROR in module 3: token ***");
        assert_eq!(tail[1], "...");
        assert_eq!(tail[2], "compiling module 11");
        assert_eq!(tail.last().unwrap(), "compiling module 30");
        assert_eq!(tail.len(), 22);
        assert!(!format!("{ev:?}").contains("hunter2"));
    }

    #[test]
    fn a_dockerfile_typo_is_located_with_a_guess() {
        let e = "failed to solve with frontend dockerfile.v0: failed to create LLB definition: \
                 dockerfile parse error line 4: unknown instruction: RUNN";
        assert_eq!(
            dockerfile_error(e),
            Some((4, "unknown instruction RUNN (did you mean RUN?)".into()))
        );
        let e = "dockerfile parse error on line 2: unknown instruction: cpoy (did you mean copy?)";
        assert_eq!(
            dockerfile_error(e),
            Some((2, "unknown instruction cpoy (did you mean COPY?)".into()))
        );
        assert_eq!(
            dockerfile_error("dockerfile parse error line 9: unknown instruction: XYZZY"),
            Some((9, "unknown instruction XYZZY".into()))
        );
        assert_eq!(dockerfile_error("exit code: 3"), None);
    }

    #[test]
    fn a_failed_step_names_its_command_once() {
        assert_eq!(
            without_command(
                "process \"/bin/sh -c echo \\\"x\\\"; exit 3\" did not complete successfully: exit code: 3"
            ),
            "exit code: 3"
        );
        assert_eq!(
            without_command("The command '/bin/sh -c make' returned a non-zero code: 2"),
            "exit code: 2"
        );
        assert_eq!(
            without_command("executor failed running [/bin/sh -c exit 3]: exit code: 3"),
            "exit code: 3"
        );
        assert_eq!(without_command("no space left"), "no space left");
        assert_eq!(step_label("[build 2/3] RUN make"), "[build 2/3]");
        assert_eq!(step_label("copy /context /"), "copy /context /");
    }

    #[test]
    fn buildkit_steps_logs_and_failure() {
        let mut p = Progress::new("api");
        let mut ev = Vec::new();
        p.on_item(
            status(
                vec![vertex("a", "[1/3] FROM base", true, true, true)],
                vec![],
            ),
            &mut ev,
        );
        p.on_item(
            status(
                vec![
                    vertex("b", "[2/3] RUN make", false, false, false),
                    vertex("b", "[2/3] RUN make", true, false, false),
                ],
                vec![("b", "compiling\nhalf "), ("b", "line\r\nlast")],
            ),
            &mut ev,
        );
        let mut failed = vertex("b", "[2/3] RUN make", true, true, false);
        failed.error = "executor failed running [/bin/sh -c make]: exit code: 2".into();
        p.on_item(status(vec![failed], vec![]), &mut ev);
        let step = |s: &str, cached| Event::Step {
            task: "api".into(),
            step: s.into(),
            cached,
        };
        let log = |l: &str| Event::Log {
            task: "api".into(),
            line: l.into(),
        };
        assert_eq!(
            ev,
            [
                step("[1/3] FROM base", true),
                step("[2/3] RUN make", false),
                log("compiling"),
                log("half line"),
                log("last"),
            ]
        );
        let f = p.failed_step();
        assert_eq!(f.step.as_deref(), Some("[2/3] RUN make"));
        assert_eq!(
            f.error.as_deref(),
            Some("executor failed running [/bin/sh -c make]: exit code: 2")
        );
        assert_eq!(f.log_tail, ["compiling", "half line", "last"]);
        assert_eq!(p.image_id(), None);
    }

    #[test]
    fn mount_flags_are_not_shown() {
        assert_eq!(
            shown_step("[build 2/2] RUN --mount=type=cache,id=x,target=/app/.next/cache,sharing=locked --mount=type=secret,id=NEXT_KEY,required=false npm run build"),
            "[build 2/2] RUN npm run build"
        );
        assert_eq!(
            shown_step("[deps 1/3] RUN --network=none make"),
            "[deps 1/3] RUN make"
        );
        assert_eq!(shown_step("[1/3] COPY . ."), "[1/3] COPY . .");
        assert_eq!(
            shown_step("[internal] load build context"),
            "[internal] load build context"
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let mut p = Progress::new("api");
        let mut ev = Vec::new();
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        p.on_item(
            status(
                vec![vertex("b", "[2/2] RUN seq", true, false, false)],
                vec![("b", &text)],
            ),
            &mut ev,
        );
        let f = p.failed_step();
        assert_eq!(f.log_tail.len(), LOG_TAIL);
        assert_eq!(f.log_tail[0], "line 11");
        assert_eq!(f.log_tail[19], "line 30");
    }

    #[test]
    fn image_id_from_aux() {
        let mut p = Progress::new("api");
        p.on_item(
            BuildInfo {
                id: Some("moby.image.id".into()),
                aux: Some(BuildInfoAux::Default(ImageId {
                    id: Some("sha256:abc".into()),
                })),
                ..BuildInfo::default()
            },
            &mut Vec::new(),
        );
        assert_eq!(p.image_id(), Some("sha256:abc"));
    }

    #[test]
    fn legacy_lines() {
        let mut p = Progress::new("api");
        let mut ev = Vec::new();
        for chunk in [
            "Step 1/3 : FROM base",
            "\n",
            " ---> 27e891cf4d2e\n",
            "Step 2/3 : RUN echo hi\n",
            " ---> Using cache\n ---> 0123456789ab\n",
            "Step 3/3 : RUN false\n",
            " ---> Running in 94b543364cf6\n",
            "out one\nout",
            " two\n",
        ] {
            p.on_item(
                BuildInfo {
                    stream: Some(chunk.into()),
                    ..BuildInfo::default()
                },
                &mut ev,
            );
        }
        let kinds: Vec<String> = ev
            .iter()
            .map(|e| match e {
                Event::Step { step, cached, .. } => format!("step {step} {cached}"),
                Event::Log { line, .. } => format!("log {line}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "step [1/3] FROM base false",
                "step [2/3] RUN echo hi false",
                "step [2/3] RUN echo hi true",
                "step [3/3] RUN false false",
                "log out one",
                "log out two",
            ]
        );
        let f = p.failed_step();
        assert_eq!(f.step.as_deref(), Some("[3/3] RUN false"));
        assert_eq!(f.log_tail, ["out one", "out two"]);
    }
}
