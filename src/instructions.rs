//! A Dockerfile read as Docker reads it, and the build args slipway passes one.
//!
//! Every reader of Dockerfiles in slipway (the build plan: stages, declared ARGs, optional
//! secret mounts; [`crate::bases`]: the base images) goes through [`instructions`], which
//! follows Docker's parser (moby/buildkit `frontend/dockerfile/parser`): a line whose first
//! non-blank character is `#` is a comment wherever it stands, also between the lines of an
//! instruction continued with `\`, and so is a blank line inside a continued instruction;
//! the continued lines are joined as they are. (The `# escape=` directive is not read: `\`
//! is the escape character.)
//!
//! The contract: a Dockerfile that declares one of these `ARG`s gets its value from slipway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A build ID derived from the input digest (12 hex digits), for tools that would otherwise
/// make a random one (the generated Next.js Dockerfiles hand it to `generateBuildId`).
pub const BUILD_ID_ARG: &str = "SLIPWAY_BUILD_ID";

/// The time the build may write (what BuildKit 0.11+ passes too): the generated Dockerfiles
/// date the user account in `/etc/shadow` by it.
pub const SOURCE_DATE_EPOCH_ARG: &str = "SOURCE_DATE_EPOCH";

/// The Dockerfile's instructions, each on one line: comments and blank lines dropped, `\`
/// continuations joined (see the module's notes for where this follows Docker).
pub fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = dockerfile.lines();
    while let Some(raw) = lines.next() {
        let first = raw.trim_start();
        if first.starts_with('#') {
            continue;
        }
        let (mut line, mut open) = continued(first);
        if !open && line.trim().is_empty() {
            continue;
        }
        while open {
            let Some(next) = lines.next() else { break };
            let t = next.trim_start();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            let (part, more) = continued(next);
            line.push_str(&part);
            open = more;
        }
        out.push(line.trim().to_string());
    }
    out
}

/// A line without its continuation `\` (and the blanks after it), and whether it had one.
fn continued(line: &str) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix('\\') {
        Some(body) => (body.to_string(), true),
        None => (line.to_string(), false),
    }
}

/// The names of a Dockerfile's stages (`FROM image AS name`), lowercased, in order.
pub fn stage_names(dockerfile: &str) -> Vec<String> {
    instructions(dockerfile)
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            match words.as_slice() {
                [from, _, as_, name, ..]
                    if from.eq_ignore_ascii_case("FROM") && as_.eq_ignore_ascii_case("AS") =>
                {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            }
        })
        .collect()
}

/// The names every `ARG` instruction of a Dockerfile declares (in any stage).
pub fn declared_args(dockerfile: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in instructions(dockerfile) {
        let mut words = line.split_whitespace();
        if words.next().is_some_and(|w| w.eq_ignore_ascii_case("ARG")) {
            for decl in words {
                let name = decl.split_once('=').map_or(decl, |(n, _)| n);
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

/// IDs of the secrets a Dockerfile mounts with `required=false` in a `RUN --mount=type=secret`:
/// the build may go without them, so slipway passes each one only when it is set.
pub fn optional_secrets(dockerfile: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in instructions(dockerfile) {
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("RUN")) {
            continue;
        }
        for word in words.take_while(|w| w.starts_with("--")) {
            let Some(spec) = word.strip_prefix("--mount=") else {
                continue;
            };
            let fields: BTreeMap<&str, &str> = spec
                .split(',')
                .map(|f| f.split_once('=').unwrap_or((f, "")))
                .collect();
            let optional = fields
                .get("required")
                .is_some_and(|v| v.eq_ignore_ascii_case("false"));
            if fields.get("type") == Some(&"secret") && optional {
                if let Some(id) = fields.get("id").filter(|id| !id.is_empty()) {
                    out.insert(id.to_string());
                }
            }
        }
    }
    out
}

/// How every file slipway generates begins.
pub const HEADER_PREFIX: &str = "# Generated by slipway";

/// Whether a file's text is slipway's (it starts with the header).
pub fn is_generated(text: &str) -> bool {
    text.starts_with(HEADER_PREFIX)
}

/// Whether `text` reads as a Dockerfile: its first instruction (after blank lines, comments
/// and parser directives) is `FROM` or `ARG`. What does not is never sent to the daemon, whose
/// parse error would quote the file's first line (`dockerfile = "/etc/passwd"`).
pub fn looks_like_dockerfile(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let Some(first) = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
    else {
        return false;
    };
    let word: String = first
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    (word == "FROM" || word == "ARG") && first.len() > word.len()
}

/// The ignore file next to a Dockerfile (BuildKit's per-Dockerfile convention): the
/// context packer reads `<dockerfile>.dockerignore` first, else `<context>/.dockerignore`.
pub fn ignore_path(dockerfile: &Path) -> PathBuf {
    let mut name = dockerfile.as_os_str().to_os_string();
    name.push(".dockerignore");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_secret_mounts_are_found() {
        let text = "FROM x\nRUN --mount=type=cache,target=/c \\\n  --mount=type=secret,id=KEY,required=false \\\n  --mount=type=secret,id=TOKEN make\nRUN echo --mount=type=secret,id=NOT,required=false\n";
        assert_eq!(optional_secrets(text), BTreeSet::from(["KEY".to_string()]));
    }

    #[test]
    fn finds_declared_args_in_every_stage() {
        let df = "# comment\nARG PYTHON_IMAGE=python:3.11\nFROM ${PYTHON_IMAGE} AS base\n\
                  arg VERSION \\\n  COMMIT=abc\nFROM base\nRUN echo ARG NOPE\n";
        let got: Vec<_> = declared_args(df).into_iter().collect();
        assert_eq!(got, ["COMMIT", "PYTHON_IMAGE", "VERSION"]);
    }

    #[test]
    fn finds_stage_names() {
        let df = "FROM a AS Base\nFROM --platform=$BUILDPLATFORM base as build\nFROM scratch\n\
                  # FROM x AS commented\nFROM build AS production\n";
        assert_eq!(stage_names(df), ["base", "build", "production"]);
    }

    #[test]
    fn comments_and_blank_lines_inside_a_continued_instruction_are_dropped() {
        // As Docker reads it: `RUN apt-get update && apt-get install -y curl`.
        let df = "FROM x AS base\nRUN apt-get update \\\n  # the tools\n\n  && apt-get install -y curl\n\
                  ARG A=1 \\\n# B is next\n  B=2\n";
        assert_eq!(
            instructions(df),
            [
                "FROM x AS base",
                "RUN apt-get update   && apt-get install -y curl",
                "ARG A=1   B=2"
            ]
        );
        let args: Vec<_> = declared_args(df).into_iter().collect();
        assert_eq!(args, ["A", "B"]);
    }
}
