//! A small YAML writer that gives the same bytes for the same tree.
//!
//! serde-based emitters decide key order and quoting for us; manifests need both under our
//! control: keys in the order people expect (`apiVersion`, `kind`, `metadata`, `spec`), and
//! every string that a YAML 1.1 reader (Go's yaml.v2, kubectl, helm) could take for a number,
//! a boolean or null quoted. The output also passes `yamllint` with its default rules: a
//! `---` before each document, sequences indented under their key, and no line over 80
//! characters unless it is one unbreakable word (long scalars move to their own line, long
//! sentences are folded inside double quotes).

/// A YAML value. Maps keep their insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Str(String),
    Int(i64),
    Bool(bool),
    Map(Vec<(String, Yaml)>),
    Seq(Vec<Yaml>),
}

/// The longest line yamllint accepts by default.
pub const WIDTH: usize = 80;

impl From<&str> for Yaml {
    fn from(s: &str) -> Self {
        Yaml::Str(s.to_string())
    }
}

impl From<String> for Yaml {
    fn from(s: String) -> Self {
        Yaml::Str(s)
    }
}

impl From<&String> for Yaml {
    fn from(s: &String) -> Self {
        Yaml::Str(s.clone())
    }
}

impl From<bool> for Yaml {
    fn from(b: bool) -> Self {
        Yaml::Bool(b)
    }
}

impl From<u16> for Yaml {
    fn from(n: u16) -> Self {
        Yaml::Int(n.into())
    }
}

impl From<u32> for Yaml {
    fn from(n: u32) -> Self {
        Yaml::Int(n.into())
    }
}

impl From<i64> for Yaml {
    fn from(n: i64) -> Self {
        Yaml::Int(n)
    }
}

/// A map from `(key, value)` pairs, in the given order.
pub fn map<K: Into<String>, V: Into<Yaml>>(pairs: impl IntoIterator<Item = (K, V)>) -> Yaml {
    Yaml::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect(),
    )
}

/// A sequence.
pub fn seq<V: Into<Yaml>>(items: impl IntoIterator<Item = V>) -> Yaml {
    Yaml::Seq(items.into_iter().map(Into::into).collect())
}

impl Yaml {
    /// Appends `key: value` to a map (no-op on other kinds).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Yaml>) {
        if let Yaml::Map(pairs) = self {
            pairs.push((key.into(), value.into()));
        }
    }
}

/// Documents as one stream: each starts with `---`.
pub fn stream<'a>(docs: impl IntoIterator<Item = &'a Yaml>) -> String {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        emit(&mut out, doc, 0);
    }
    out
}

/// One value as a block at `indent` (a map or sequence) or a scalar line.
fn emit(out: &mut String, value: &Yaml, indent: usize) {
    match value {
        Yaml::Map(pairs) if !pairs.is_empty() => emit_map(out, pairs, indent, false),
        Yaml::Seq(items) if !items.is_empty() => emit_seq(out, items, indent, false),
        other => {
            out.push_str(&" ".repeat(indent));
            emit_scalar(out, other, indent);
        }
    }
}

/// `inline`: the first key goes on the current line (after a sequence's `- `).
fn emit_map(out: &mut String, pairs: &[(String, Yaml)], indent: usize, inline: bool) {
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 || !inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&scalar_text(key));
        out.push(':');
        match value {
            Yaml::Map(p) if !p.is_empty() => {
                out.push('\n');
                emit_map(out, p, indent + 2, false);
            }
            Yaml::Seq(s) if !s.is_empty() => {
                out.push('\n');
                emit_seq(out, s, indent + 2, false);
            }
            scalar => {
                out.push(' ');
                emit_scalar(out, scalar, indent + 2);
            }
        }
    }
}

fn emit_seq(out: &mut String, items: &[Yaml], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Yaml::Map(p) if !p.is_empty() => emit_map(out, p, indent + 2, true),
            Yaml::Seq(s) if !s.is_empty() => emit_seq(out, s, indent + 2, true),
            scalar => emit_scalar(out, scalar, indent + 2),
        }
    }
}

/// Writes a scalar that starts at the current column and ends the line. When it does not fit,
/// it moves to its own line at `cont` (continuation indent), and a long double-quoted value is
/// folded at single spaces.
fn emit_scalar(out: &mut String, value: &Yaml, cont: usize) {
    let text = match value {
        Yaml::Str(s) => scalar_text(s),
        Yaml::Int(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Map(_) => "{}".to_string(),
        Yaml::Seq(_) => "[]".to_string(),
    };
    let column = out.len() - out.rfind('\n').map_or(0, |i| i + 1);
    if column + text.chars().count() <= WIDTH {
        out.push_str(&text);
        out.push('\n');
        return;
    }
    // Off the key's line: `key:` then the value indented below it (same value in YAML).
    if out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
    let pad = " ".repeat(cont);
    match value {
        // A sentence: double quotes fold at spaces.
        Yaml::Str(s) if s.contains(' ') => {
            for line in fold(&double_quoted(s), WIDTH.saturating_sub(cont).max(20)) {
                out.push_str(&pad);
                out.push_str(&line);
                out.push('\n');
            }
        }
        // One word: yamllint allows a long line that cannot be broken.
        _ => {
            out.push_str(&pad);
            out.push_str(&text);
            out.push('\n');
        }
    }
}

/// Splits a double-quoted scalar into lines at single spaces (a line break inside double
/// quotes reads back as one space). Breaks only where the space has a non-space on both sides,
/// so nothing is lost to the line-prefix rule.
fn fold(text: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut lines = Vec::new();
    let mut start = 0;
    let mut last_break = None;
    let mut i = 0;
    while i < chars.len() {
        let breakable = chars[i] == ' '
            && i > start
            && chars[i - 1] != ' '
            && chars.get(i + 1).is_some_and(|c| *c != ' ');
        if breakable {
            last_break = Some(i);
        }
        if i - start >= width {
            if let Some(b) = last_break.filter(|b| *b > start) {
                lines.push(chars[start..b].iter().collect());
                start = b + 1;
                last_break = None;
                i = start;
                continue;
            }
        }
        i += 1;
    }
    lines.push(chars[start..].iter().collect());
    lines
}

/// A string as YAML: plain when every reader takes it back as the same string, single-quoted
/// when it is printable text on one line, otherwise double-quoted with escapes.
pub fn scalar_text(s: &str) -> String {
    let printable = s.chars().all(|c| !c.is_control() && !is_special_space(c));
    if printable && is_plain_safe(s) {
        return s.to_string();
    }
    if printable {
        return format!("'{}'", s.replace('\'', "''"));
    }
    double_quoted(s)
}

fn is_special_space(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

/// True when `s` can be written without quotes and reads back as this string in YAML 1.1 and
/// 1.2, in block context.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !s.is_ascii() || s.contains(|c: char| c.is_ascii_control()) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`<=~ ".contains(first) || s.ends_with([' ', ':']) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.contains(['{', '}', '[', ']', ',', '\\']) {
        return false;
    }
    // Anything that starts like a number (ints, floats, octal, hex, times like 1:20, dates).
    let mut cs = s.chars();
    let lead = cs.next().unwrap_or(' ');
    let next = cs.next();
    if lead.is_ascii_digit()
        || ("+.".contains(lead) && next.is_some_and(|c| c.is_ascii_digit() || c == '.'))
    {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    const RESERVED: &[&str] = &[
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", ".inf", "+.inf", ".nan",
    ];
    !RESERVED.contains(&lower.as_str())
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{feff}' => out.push_str("\\uFEFF"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(text: &str) -> serde_json::Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn layout_matches_kubectl_style() {
        let doc = map([
            ("apiVersion", Yaml::from("v1")),
            ("metadata", map([("name", "x"), ("labels", "")]).clone()),
            (
                "items",
                seq([
                    map([("name", Yaml::from("a")), ("port", Yaml::from(80u16))]),
                    Yaml::from("plain"),
                    seq(["nested"]),
                ]),
            ),
            ("empty", map(Vec::<(String, Yaml)>::new())),
            ("none", seq(Vec::<Yaml>::new())),
            ("flag", Yaml::from(true)),
        ]);
        assert_eq!(
            stream([&doc]),
            "---\napiVersion: v1\nmetadata:\n  name: x\n  labels: ''\nitems:\n  - name: a\n    port: 80\n  - plain\n  - - nested\nempty: {}\nnone: []\nflag: true\n"
        );
    }

    #[test]
    fn ambiguous_strings_are_quoted_and_read_back_as_strings() {
        let tricky = [
            "0123456789ab",
            "012",
            "1e3",
            "1:20",
            "2024-01-01",
            "true",
            "Yes",
            "ON",
            "n",
            "~",
            "null",
            "",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "#x",
            "-x",
            "- x",
            "*ref",
            "&a",
            "!tag",
            "%x",
            "@x",
            "`x",
            "'q'",
            "\"q\"",
            "{a}",
            "[a]",
            "a,b",
            "x:",
            "<<",
            "=",
            ".5",
            "+1",
            ".inf",
            "tab\there",
            "new\nline",
            "bell\u{7}",
            "é",
            "a\\b",
            "it's",
            "\u{2028}",
            "{{ include \"x\" . }}",
        ];
        for s in tricky {
            let text = stream([&map([(s, s)])]);
            let back = read_back(&text);
            assert_eq!(
                back[s],
                serde_json::Value::String(s.to_string()),
                "{s:?} as {text}"
            );
        }
        assert_eq!(scalar_text("0123456789ab"), "'0123456789ab'");
        assert_eq!(scalar_text("taskboard/backend"), "taskboard/backend");
        assert_eq!(scalar_text("http://a.b.svc:8000"), "http://a.b.svc:8000");
        assert_eq!(
            scalar_text("app.kubernetes.io/name"),
            "app.kubernetes.io/name"
        );
    }

    #[test]
    fn long_values_stay_within_80_columns_or_are_one_word() {
        let digest = format!("taskboard/backend@sha256:{}", "a".repeat(64));
        let sentence = "word ".repeat(40).trim_end().to_string();
        let odd = "a  b ".repeat(30);
        let doc = map([(
            "spec",
            map([(
                "template",
                map([
                    ("image", Yaml::from(digest.clone())),
                    ("text", Yaml::from(sentence.clone())),
                    ("odd", Yaml::from(odd.clone())),
                    ("list", seq([sentence.clone()])),
                ]),
            )]),
        )]);
        let text = stream([&doc]);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH || !line.trim_start().contains(' '),
                "{line}"
            );
        }
        let back = read_back(&text);
        assert_eq!(back["spec"]["template"]["image"], digest.as_str());
        assert_eq!(back["spec"]["template"]["text"], sentence.as_str());
        assert_eq!(back["spec"]["template"]["odd"], odd.as_str());
        assert_eq!(back["spec"]["template"]["list"][0], sentence.as_str());
    }
}
