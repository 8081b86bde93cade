//! The small part of Go's RE2 syntax that moby's pattern translation can produce.
//!
//! moby's `patternmatcher` turns a `.dockerignore` pattern into a Go regular expression
//! (`^...$`) and asks Go's `regexp` whether a path matches. To match exactly what Docker
//! matches — including its quirks, e.g. a `*` inside `[...]` becoming `[^/]*` inside the class —
//! slipway builds the very same regex string (see `ignore::compile`) and runs it here: a parser
//! for that subset with Go's rules (classes, `[:name:]`, `\d`-style escapes, `*`/`+`/`?`, groups,
//! `^`/`$`) and a Thompson-NFA simulation over runes decoded the way Go decodes strings (each
//! invalid byte is one U+FFFD). Anything else Go would accept (`\pL`, `\x41`, `\b`, ...) is
//! refused with an error rather than guessed. The NFA also answers "could any string starting
//! with this prefix match?", which lets the walker prune excluded directories soundly.

use std::fmt;

/// A compiled Go-syntax regular expression (anchored by its own leading `^`).
#[derive(Debug, Clone)]
pub struct Regex {
    prog: Vec<Inst>,
}

#[derive(Debug, Clone)]
enum Inst {
    /// Consume one rune in the set.
    Class(Vec<(u32, u32)>),
    /// Consume any rune but `\n` (Go's `.` without the `s` flag).
    AnyNotNl,
    Split(usize, usize),
    Jmp(usize),
    /// `^`: only at the start of the text (Go's default OneLine mode).
    AssertStart,
    /// `$`: only at the end of the text.
    AssertEnd,
    Match,
}

/// Why a regex was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decodes bytes into runes the way Go ranges over a string: every byte of an invalid
/// sequence becomes one U+FFFD.
pub fn go_runes(bytes: &[u8]) -> Vec<char> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.extend(s.chars());
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // Safe: `good` is valid UTF-8 by construction.
                out.extend(std::str::from_utf8(good).unwrap_or_default().chars());
                out.push(char::REPLACEMENT_CHARACTER);
                rest = &bad[1..];
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[derive(Debug)]
enum Node {
    Class(Vec<(u32, u32)>),
    AnyNotNl,
    Start,
    End,
    Group(Vec<Node>),
    Star(Box<Node>),
    Plus(Box<Node>),
    Quest(Box<Node>),
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
    depth: usize,
}

const MAX_RUNE: u32 = 0x10FFFF;

impl Regex {
    /// Parses `re` (Go RE2 syntax, subset) into a matcher.
    pub fn new(re: &str) -> Result<Regex, Error> {
        let chars: Vec<char> = re.chars().collect();
        let mut p = Parser {
            s: &chars,
            i: 0,
            depth: 0,
        };
        let nodes = p.concat()?;
        if p.i != chars.len() {
            return Err(Error(format!("unexpected `{}` in {re}", chars[p.i])));
        }
        let mut prog = Vec::new();
        for n in &nodes {
            emit(n, &mut prog);
        }
        prog.push(Inst::Match);
        Ok(Regex { prog })
    }

    /// True when the whole text (decoded like Go) matches. The regex is anchored by its own
    /// `^`; the simulation only starts at position 0, which is equivalent.
    pub fn is_match(&self, text: &[u8]) -> bool {
        let runes = go_runes(text);
        let n = runes.len();
        let mut sim = Sim::new(self.prog.len());
        sim.add(&self.prog, 0, 0, n, true);
        for (pos, &c) in runes.iter().enumerate() {
            sim.step(&self.prog, c, pos + 1, n);
            if sim.cur.is_empty() {
                return false;
            }
        }
        sim.cur
            .iter()
            .any(|&pc| matches!(self.prog[pc], Inst::Match))
    }

    /// False only when no string that starts with `prefix` can match (sound for pruning).
    pub fn could_match_with_prefix(&self, prefix: &[u8]) -> bool {
        let runes = go_runes(prefix);
        // `usize::MAX` as length: `$` never holds inside the prefix.
        let mut sim = Sim::new(self.prog.len());
        sim.add(&self.prog, 0, 0, usize::MAX, true);
        for (pos, &c) in runes.iter().enumerate() {
            sim.step(&self.prog, c, pos + 1, usize::MAX);
            if sim.cur.is_empty() {
                return false;
            }
        }
        !sim.cur.is_empty()
    }
}

struct Sim {
    cur: Vec<usize>,
    next: Vec<usize>,
    mark: Vec<u32>,
    gen: u32,
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            cur: Vec::new(),
            next: Vec::new(),
            mark: vec![0; n],
            gen: 1,
        }
    }

    /// Adds `pc` and everything reachable by empty moves at text position `pos` to `cur`.
    fn add(&mut self, prog: &[Inst], pc: usize, pos: usize, len: usize, into_cur: bool) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if self.mark[pc] == self.gen {
                continue;
            }
            self.mark[pc] = self.gen;
            match &prog[pc] {
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Jmp(a) => stack.push(*a),
                Inst::AssertStart => {
                    if pos == 0 {
                        stack.push(pc + 1);
                    }
                }
                Inst::AssertEnd => {
                    if pos == len {
                        stack.push(pc + 1);
                    }
                }
                Inst::Class(_) | Inst::AnyNotNl | Inst::Match => {
                    if into_cur {
                        self.cur.push(pc);
                    } else {
                        self.next.push(pc);
                    }
                }
            }
        }
    }

    fn step(&mut self, prog: &[Inst], c: char, pos: usize, len: usize) {
        self.gen += 1;
        self.next.clear();
        let cur = std::mem::take(&mut self.cur);
        for &pc in &cur {
            let ok = match &prog[pc] {
                Inst::Class(ranges) => class_has(ranges, c as u32),
                Inst::AnyNotNl => c != '\n',
                _ => false,
            };
            if ok {
                self.add(prog, pc + 1, pos, len, false);
            }
        }
        self.cur = std::mem::take(&mut self.next);
        self.next = cur;
    }
}

fn class_has(ranges: &[(u32, u32)], c: u32) -> bool {
    // Ranges are sorted and merged: binary search.
    let i = ranges.partition_point(|&(_, hi)| hi < c);
    i < ranges.len() && ranges[i].0 <= c
}

fn emit(n: &Node, prog: &mut Vec<Inst>) {
    match n {
        Node::Class(r) => prog.push(Inst::Class(r.clone())),
        Node::AnyNotNl => prog.push(Inst::AnyNotNl),
        Node::Start => prog.push(Inst::AssertStart),
        Node::End => prog.push(Inst::AssertEnd),
        Node::Group(items) => {
            for it in items {
                emit(it, prog);
            }
        }
        Node::Star(inner) => {
            let split = prog.len();
            prog.push(Inst::Split(0, 0));
            emit(inner, prog);
            prog.push(Inst::Jmp(split));
            let after = prog.len();
            prog[split] = Inst::Split(split + 1, after);
        }
        Node::Plus(inner) => {
            let start = prog.len();
            emit(inner, prog);
            let after = prog.len() + 1;
            prog.push(Inst::Split(start, after));
        }
        Node::Quest(inner) => {
            let split = prog.len();
            prog.push(Inst::Split(0, 0));
            emit(inner, prog);
            let after = prog.len();
            prog[split] = Inst::Split(split + 1, after);
        }
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn concat(&mut self) -> Result<Vec<Node>, Error> {
        let mut out: Vec<Node> = Vec::new();
        // Whether the last item is a repetition (Go refuses `a**`).
        let mut last_repeat = false;
        while let Some(c) = self.peek() {
            match c {
                ')' => break,
                '*' | '+' | '?' => {
                    self.i += 1;
                    let op = c;
                    if last_repeat {
                        return Err(Error(format!("invalid nested repetition operator `{op}`")));
                    }
                    let Some(prev) = out.pop() else {
                        return Err(Error(format!(
                            "missing argument to repetition operator `{op}`"
                        )));
                    };
                    if matches!(prev, Node::Start | Node::End) {
                        return Err(Error(format!("unsupported repetition of an anchor `{op}`")));
                    }
                    // Non-greedy `*?` matches the same set of strings.
                    if self.peek() == Some('?') {
                        self.i += 1;
                    }
                    out.push(match op {
                        '*' => Node::Star(Box::new(prev)),
                        '+' => Node::Plus(Box::new(prev)),
                        _ => Node::Quest(Box::new(prev)),
                    });
                    last_repeat = true;
                    continue;
                }
                '(' => {
                    self.i += 1;
                    if self.peek() == Some('?') {
                        return Err(Error("unsupported group flags `(?`".into()));
                    }
                    self.depth += 1;
                    if self.depth > 100 {
                        return Err(Error("groups nested too deeply".into()));
                    }
                    let inner = self.concat()?;
                    if self.peek() != Some(')') {
                        return Err(Error("missing closing )".into()));
                    }
                    self.i += 1;
                    self.depth -= 1;
                    out.push(Node::Group(inner));
                }
                '|' => return Err(Error("unsupported alternation `|`".into())),
                '{' => return Err(Error("unsupported repetition `{`".into())),
                '[' => {
                    let ranges = self.class()?;
                    out.push(Node::Class(ranges));
                }
                '.' => {
                    self.i += 1;
                    out.push(Node::AnyNotNl);
                }
                '^' => {
                    self.i += 1;
                    out.push(Node::Start);
                }
                '$' => {
                    self.i += 1;
                    out.push(Node::End);
                }
                '\\' => {
                    let ranges = self.escape_outside()?;
                    out.push(Node::Class(ranges));
                }
                _ => {
                    self.i += 1;
                    out.push(Node::Class(vec![(c as u32, c as u32)]));
                }
            }
            last_repeat = false;
        }
        Ok(out)
    }

    /// `\x` outside a class: a literal, a control escape or a Perl class.
    fn escape_outside(&mut self) -> Result<Vec<(u32, u32)>, Error> {
        self.i += 1; // the backslash
        let Some(c) = self.peek() else {
            return Err(Error("trailing backslash".into()));
        };
        if let Some(r) = perl_class(c) {
            self.i += 1;
            return Ok(r);
        }
        let r = self.escape_char()?;
        Ok(vec![(r as u32, r as u32)])
    }

    /// The character after a backslash (already consumed), Go's `parseEscape`.
    fn escape_char(&mut self) -> Result<char, Error> {
        let Some(c) = self.peek() else {
            return Err(Error("trailing backslash".into()));
        };
        self.i += 1;
        if c.is_ascii() && !c.is_ascii_alphanumeric() {
            return Ok(c);
        }
        Ok(match c {
            'a' => '\x07',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            'x' | 'p' | 'P' | 'A' | 'z' | 'b' | 'B' | 'Q' | 'C' | '0'..='7' => {
                return Err(Error(format!(
                    "unsupported escape `\\{c}` (Docker reads it as a regular-expression escape)"
                )))
            }
            _ => return Err(Error(format!("invalid escape sequence `\\{c}`"))),
        })
    }

    /// A bracket class with Go's rules; returns sorted, merged ranges (negation applied).
    fn class(&mut self) -> Result<Vec<(u32, u32)>, Error> {
        self.i += 1; // [
        let mut negated = false;
        if self.peek() == Some('^') {
            negated = true;
            self.i += 1;
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(Error("missing closing ]".into()));
            };
            if c == ']' && !first {
                self.i += 1;
                break;
            }
            first = false;
            // POSIX [:name:]
            if c == '[' && self.s.get(self.i + 1) == Some(&':') {
                if let Some(end) = self.find_named_end() {
                    let name: String = self.s[self.i + 2..end].iter().collect();
                    let (neg, name) = match name.strip_prefix('^') {
                        Some(n) => (true, n.to_string()),
                        None => (false, name),
                    };
                    let Some(r) = posix_class(&name) else {
                        return Err(Error(format!("invalid character class range `[:{name}:]`")));
                    };
                    ranges.extend(if neg { negate(normalize(r)) } else { r });
                    self.i = end + 2;
                    continue;
                }
            }
            if c == '\\' {
                if let Some(&n) = self.s.get(self.i + 1) {
                    if matches!(n, 'p' | 'P') {
                        return Err(Error(format!(
                            "unsupported escape `\\{n}` (Docker reads it as a Unicode class)"
                        )));
                    }
                    if let Some(r) = perl_class(n) {
                        self.i += 2;
                        ranges.extend(r);
                        continue;
                    }
                }
            }
            let lo = self.class_char()?;
            let mut hi = lo;
            if self.peek() == Some('-') && self.s.get(self.i + 1).is_some_and(|&n| n != ']') {
                self.i += 1;
                hi = self.class_char()?;
                if hi < lo {
                    return Err(Error(format!("invalid character class range `{lo}-{hi}`")));
                }
            }
            ranges.push((lo as u32, hi as u32));
        }
        let ranges = normalize(ranges);
        Ok(if negated { negate(ranges) } else { ranges })
    }

    fn find_named_end(&self) -> Option<usize> {
        let mut j = self.i + 2;
        while j + 1 < self.s.len() {
            if self.s[j] == ':' && self.s[j + 1] == ']' {
                return Some(j);
            }
            j += 1;
        }
        None
    }

    fn class_char(&mut self) -> Result<char, Error> {
        let Some(c) = self.peek() else {
            return Err(Error("missing closing ]".into()));
        };
        if c == '\\' {
            self.i += 1;
            return self.escape_char();
        }
        self.i += 1;
        Ok(c)
    }
}

fn perl_class(c: char) -> Option<Vec<(u32, u32)>> {
    let base: Vec<(u32, u32)> = match c.to_ascii_lowercase() {
        'd' => vec![(0x30, 0x39)],
        's' => vec![(0x09, 0x0a), (0x0c, 0x0d), (0x20, 0x20)],
        'w' => vec![(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)],
        _ => return None,
    };
    Some(if c.is_ascii_uppercase() {
        negate(base)
    } else {
        base
    })
}

fn posix_class(name: &str) -> Option<Vec<(u32, u32)>> {
    let r: &[(u32, u32)] = match name {
        "alnum" => &[(0x30, 0x39), (0x41, 0x5a), (0x61, 0x7a)],
        "alpha" => &[(0x41, 0x5a), (0x61, 0x7a)],
        "ascii" => &[(0x00, 0x7f)],
        "blank" => &[(0x09, 0x09), (0x20, 0x20)],
        "cntrl" => &[(0x00, 0x1f), (0x7f, 0x7f)],
        "digit" => &[(0x30, 0x39)],
        "graph" => &[(0x21, 0x7e)],
        "lower" => &[(0x61, 0x7a)],
        "print" => &[(0x20, 0x7e)],
        "punct" => &[(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],
        "space" => &[(0x09, 0x0d), (0x20, 0x20)],
        "upper" => &[(0x41, 0x5a)],
        "word" => &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)],
        "xdigit" => &[(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
        _ => return None,
    };
    Some(r.to_vec())
}

fn normalize(mut r: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    r.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn negate(r: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    let r = normalize(r);
    let mut out = Vec::new();
    let mut next = 0u32;
    for (lo, hi) in r {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = hi.saturating_add(1);
    }
    if next <= MAX_RUNE {
        out.push((next, MAX_RUNE));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, s: &str) -> bool {
        Regex::new(re).unwrap().is_match(s.as_bytes())
    }

    #[test]
    fn basics() {
        assert!(m("^a[^/]*b$", "axxb"));
        assert!(!m("^a[^/]*b$", "ax/xb"));
        assert!(m("^(.*/)?file$", "file"));
        assert!(m("^(.*/)?file$", "a/b/file"));
        assert!(!m("^(.*/)?file$", "a/bfile"));
        assert!(m("^a[b-d]e$", "ace"));
        assert!(!m("^a[b-d]e$", "aae"));
        assert!(m("^a[^b-d]e$", "aze"));
        assert!(m("^a[^b-d]e$", "a/e"), "Go's negated classes match /");
        assert!(!m("^a.b$", "a\nb"), "`.` does not match newline");
        assert!(m("^[]a]$", "]"));
        assert!(m("^[\\]a]$", "]"));
        assert!(m("^[[:digit:]x]$", "7"));
        assert!(m("^[[:^digit:]]$", "x"));
        assert!(m("^\\d\\W$", "1-"));
        assert!(!m("^a^b$", "a^b"), "a mid-pattern ^ is an anchor in Go");
        assert!(m("^^foo$", "foo"));
    }

    #[test]
    fn class_with_translated_star_is_go_quirk() {
        // moby turns `[*]` into `[[^/]*]`: class {[,^,/} repeated, then a literal `]`.
        assert!(m("^a[[^/]*]$", "a]"));
        assert!(m("^a[[^/]*]$", "a[/^]"));
        assert!(!m("^a[[^/]*]$", "a*"));
    }

    #[test]
    fn errors() {
        assert!(Regex::new("^[l-O]$").is_err());
        assert!(Regex::new("^a**$").is_err());
        assert!(Regex::new("^\\pL$").is_err());
        assert!(Regex::new("^\\q$").is_err());
        assert!(Regex::new("^[[:nope:]]$").is_err());
        assert!(Regex::new("^(a$").is_err());
    }

    #[test]
    fn invalid_utf8_is_one_replacement_per_byte() {
        assert_eq!(go_runes(b"a\xf0\x9f\x98b").len(), 5);
        assert!(Regex::new("^a[^/][^/][^/]b$")
            .unwrap()
            .is_match(b"a\xf0\x9f\x98b"));
        assert!(Regex::new("^a[^/]b$").unwrap().is_match("a☺b".as_bytes()));
    }

    #[test]
    fn prefix_feasibility() {
        let re = Regex::new("^vendor/[^/]*/LICENSE$").unwrap();
        assert!(re.could_match_with_prefix(b"vendor/"));
        assert!(re.could_match_with_prefix(b"vendor/lib-a/"));
        assert!(!re.could_match_with_prefix(b"node_modules/"));
        assert!(!re.could_match_with_prefix(b"vendor/lib-a/LICENSE/"));
        let any = Regex::new("^(.*/)?keep$").unwrap();
        assert!(any.could_match_with_prefix(b"node_modules/"));
    }
}
