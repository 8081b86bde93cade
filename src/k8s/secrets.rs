//! Secret values for the Secret manifests: read at emit time from the environment or a `.env`
//! file named on the command line, held only in memory, and never printed.
//!
//! [`SecretValues`] has no `Display` and its `Debug` shows names only, so a value cannot end up
//! in a log or an error message by accident. Errors about the `.env` file name the file and the
//! line, never the text on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::error::Fail;

/// Secret values by variable name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValues(BTreeMap<String, String>);

impl fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl SecretValues {
    pub fn new(values: BTreeMap<String, String>) -> Self {
        SecretValues(values)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The values of `names`: from `env_file` when given and it sets the name (the file named
    /// on the command line wins over the ambient environment), else from the process
    /// environment. Names found nowhere are left out; the caller decides whether that is an
    /// error. An empty value counts as given.
    pub fn gather(names: &BTreeSet<String>, env_file: Option<&Path>) -> anyhow::Result<Self> {
        let file = match env_file {
            Some(path) => parse_env_file(path)?,
            None => BTreeMap::new(),
        };
        let mut values = BTreeMap::new();
        for name in names {
            if let Some(v) = file.get(name) {
                values.insert(name.clone(), v.clone());
            } else if let Some(v) = std::env::var_os(name) {
                let v = v.into_string().map_err(|_| {
                    Fail::usage(format!(
                        "the value of environment variable {name} is not valid UTF-8"
                    ))
                })?;
                values.insert(name.clone(), v);
            }
        }
        Ok(SecretValues(values))
    }
}

/// Reads a `.env` file.
pub fn parse_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fail::usage(format!("cannot read env file {}: {e}", path.display()))
            .hint("pass the path of a .env file with KEY=VALUE lines")
    })?;
    parse_env(&text).map_err(|(line, msg)| {
        Fail::usage(format!("{}:{line}: {msg}", path.display()))
            .hint("each line must be `KEY=VALUE`, `export KEY=VALUE`, a `# comment` or blank")
            .into()
    })
}

/// Parses `.env` text: `KEY=VALUE` lines (optionally `export KEY=VALUE`), `#` comments and
/// blank lines. Unquoted values end at ` #` and are trimmed; `'single'` quotes are literal;
/// `"double"` quotes understand `\n`, `\t`, `\r`, `\"`, `\\` and may span lines. A later line
/// wins over an earlier one. Errors give the 1-based line and never the value.
pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i].trim_start_matches('\u{feff}').trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err((lineno, "expected KEY=VALUE".into()));
        };
        let key = key.trim();
        let valid_key = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err((
                lineno,
                "the name before `=` is not a valid variable name".into(),
            ));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The quoted value may continue on the following lines.
                let mut body = rest[1..].to_string();
                let close = loop {
                    if let Some(pos) = closing_quote(&body, q) {
                        break pos;
                    }
                    if i >= lines.len() {
                        return Err((lineno, format!("the value's {q} quote is never closed")));
                    }
                    body.push('\n');
                    body.push_str(lines[i]);
                    i += 1;
                };
                let after = body[close + 1..].trim();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err((lineno, "unexpected text after the closing quote".into()));
                }
                let inner = &body[..close];
                if q == '"' {
                    unescape(inner)
                } else {
                    inner.to_string()
                }
            }
            _ => {
                let v = match rest.find(" #") {
                    Some(p) => &rest[..p],
                    None => rest,
                };
                v.trim_end().to_string()
            }
        };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

fn closing_quote(body: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if q == '"' && !escaped => escaped = true,
            c if c == q && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let text = "\u{feff}# comment\n\nA=plain value # note\nexport B = 'lit #\\n'\nC=\"x\\ny \\\"q\\\"\" # c\nD=\nE=\"multi\nline\"\nF=a#b\nA=again\n";
        let env = parse_env(text).unwrap();
        assert_eq!(env["A"], "again");
        assert_eq!(env["B"], "lit #\\n");
        assert_eq!(env["C"], "x\ny \"q\"");
        assert_eq!(env["D"], "");
        assert_eq!(env["E"], "multi\nline");
        assert_eq!(env["F"], "a#b");
    }

    #[test]
    fn errors_name_the_line_and_never_the_value() {
        let (line, msg) = parse_env("A=1\nsupersecretvalue\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(!msg.contains("supersecret"), "{msg}");
        let (line, msg) = parse_env("A=1\nB=\"supersecret\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(!msg.contains("supersecret"), "{msg}");
        let (line, _) = parse_env("1A=x\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(parse_env("A='x' trailing\n").is_err());
    }

    #[test]
    fn debug_shows_names_only() {
        let v = SecretValues::new([("JWT_SECRET".to_string(), "hunter2".to_string())].into());
        let shown = format!("{v:?}");
        assert_eq!(shown, "{\"JWT_SECRET\"}");
    }

    #[test]
    fn env_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "SLIPWAY_TEST_FROM_FILE=file\n").unwrap();
        // PATH is always set in the environment; the file does not set it.
        let names: BTreeSet<String> = ["SLIPWAY_TEST_FROM_FILE", "PATH", "SLIPWAY_TEST_NOWHERE"]
            .into_iter()
            .map(String::from)
            .collect();
        let v = SecretValues::gather(&names, Some(&path)).unwrap();
        assert_eq!(v.get("SLIPWAY_TEST_FROM_FILE"), Some("file"));
        assert!(v.get("PATH").is_some());
        assert_eq!(v.get("SLIPWAY_TEST_NOWHERE"), None);
    }
}
