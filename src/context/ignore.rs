//! `.dockerignore`, read and matched exactly as Docker does.
//!
//! Three Go sources define the semantics, and each has a counterpart here:
//! - `moby/patternmatcher/ignorefile.ReadAll` → [`read_patterns`]: BOM, `#` comments (only at
//!   column 0), whitespace trimming, `!` exceptions, `filepath.Clean`, a leading `/` dropped.
//! - `moby/patternmatcher.New` + `Pattern.compile` → [`Matcher::new`]: patterns are validated
//!   with Go's `filepath.Match` syntax, then translated to a Go regex (or to an exact, prefix or
//!   suffix comparison, which is not always the same thing: `**file` matches `dir/afile`).
//!   The regex runs on [`super::goregex`], so even odd patterns match what Docker matches.
//! - `MatchesUsingParentResults`, as BuildKit's fsutil walker calls it →
//!   [`Matcher::matches_using_parent_results`]: a pattern that matched a directory matches
//!   everything below it, and the last matching pattern wins.
//!
//! Docker only reports a pattern its regex engine rejects (`[Local-Only]`: a reversed range)
//! when it first evaluates it; slipway reports every bad pattern up front with its file and line.

use std::path::Path;

use super::goregex::{self, Regex};

/// One line of an ignore file that survived [`read_patterns`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the ignore file.
    pub number: usize,
    /// The pattern as `ReadAll` returns it (`!` kept, cleaned, leading `/` dropped).
    pub text: Vec<u8>,
}

/// A bad ignore file, with the place to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: invalid .dockerignore pattern `{pattern}`: {reason}")]
pub struct PatternError {
    pub file: String,
    pub line: usize,
    pub pattern: String,
    pub reason: String,
}

/// bufio.Scanner's default limit; Go fails the whole file on a longer line.
const MAX_LINE: usize = 64 * 1024;

/// Port of `ignorefile.ReadAll`.
pub fn read_patterns(content: &[u8], file: &Path) -> Result<Vec<Line>, PatternError> {
    let mut out = Vec::new();
    let mut rest = content;
    let mut number = 0;
    while !rest.is_empty() {
        let (mut line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() >= MAX_LINE {
            return Err(PatternError {
                file: file.display().to_string(),
                line: number + 1,
                pattern: String::from_utf8_lossy(&line[..40]).into_owned() + "...",
                reason: "line longer than 64 KiB (Docker refuses the file)".into(),
            });
        }
        if number == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        number += 1;
        if line.first() == Some(&b'#') {
            continue;
        }
        let mut pattern = trim_space(line);
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern[0] == b'!';
        if invert {
            pattern = trim_space(&pattern[1..]);
        }
        let mut text = Vec::new();
        if !pattern.is_empty() {
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned[0] == b'/' {
                cleaned.remove(0);
            }
            text = cleaned;
        }
        if invert {
            text.insert(0, b'!');
        }
        out.push(Line { number, text });
    }
    Ok(out)
}

/// Go's `strings.TrimSpace` on bytes: trims Unicode white space at both ends; invalid UTF-8
/// stops the trimming, as in Go.
pub fn trim_space(mut s: &[u8]) -> &[u8] {
    loop {
        match leading_char(s) {
            Some((c, n)) if c.is_whitespace() => s = &s[n..],
            _ => break,
        }
    }
    loop {
        match trailing_char(s) {
            Some((c, n)) if c.is_whitespace() => s = &s[..s.len() - n],
            _ => break,
        }
    }
    s
}

fn leading_char(s: &[u8]) -> Option<(char, usize)> {
    for n in 1..=s.len().min(4) {
        if let Ok(t) = std::str::from_utf8(&s[..n]) {
            return t.chars().next().map(|c| (c, n));
        }
    }
    None
}

fn trailing_char(s: &[u8]) -> Option<(char, usize)> {
    for n in 1..=s.len().min(4) {
        if let Ok(t) = std::str::from_utf8(&s[s.len() - n..]) {
            return t.chars().next().map(|c| (c, n));
        }
    }
    None
}

/// Go's `path.Clean` (= `filepath.Clean` on Unix) on bytes.
pub fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || path[r + 1] == b'/')) {
            // empty element or `.`
            r += 1;
        } else if path[r] == b'.' && path[r + 1] == b'.' && (r + 2 == n || path[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                // Back up to the previous slash (lazybuf's `w--` loop), dropping it too.
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return b".".to_vec();
    }
    out
}

#[derive(Debug, Clone)]
enum Kind {
    Exact,
    /// `lit**`: the literal before the `**`.
    Prefix(Vec<u8>),
    /// `**...` with no other wildcard: the text after the leading `**`.
    Suffix(Vec<u8>),
    /// The Go regex moby would build, and its compiled form.
    Regexp(String, Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The cleaned pattern without its `!`.
    pub text: Vec<u8>,
    pub exclusion: bool,
    /// Line in the ignore file; 0 for patterns slipway adds itself.
    pub line: usize,
    /// `text` split at `/` (for the deprecated single-parent `Matches`).
    dirs: usize,
    kind: Kind,
}

impl Pattern {
    fn matches(&self, path: &[u8]) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text.as_slice(),
            Kind::Prefix(lit) => path.starts_with(lit),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix) || (suffix.first() == Some(&b'/') && path == &suffix[1..])
            }
            Kind::Regexp(_, re) => re.is_match(path),
        }
    }

    /// False only when this pattern cannot match any path below `dir_slash` (`dir/`).
    pub fn could_match_below(&self, dir_slash: &[u8]) -> bool {
        match &self.kind {
            Kind::Exact => self.text.starts_with(dir_slash),
            Kind::Prefix(lit) => lit.starts_with(dir_slash) || dir_slash.starts_with(lit),
            Kind::Suffix(_) => true,
            Kind::Regexp(_, re) => re.could_match_with_prefix(dir_slash),
        }
    }

    /// The Go regular expression moby builds for this pattern, when it builds one.
    pub fn go_regex(&self) -> Option<&str> {
        match &self.kind {
            Kind::Regexp(source, _) => Some(source),
            _ => None,
        }
    }

    /// An exclusion of exactly `path` (and so of everything below it): slipway's own files.
    /// Built directly, so that glob characters in the name stay literal.
    pub fn literal_exclusion(path: &[u8]) -> Pattern {
        Pattern {
            exclusion: false,
            ..Pattern::literal_exception(path)
        }
    }

    /// An exception for exactly `path` (the Dockerfile and the ignore file, which Docker
    /// always sends). Built directly, so that glob characters in the name stay literal.
    pub fn literal_exception(path: &[u8]) -> Pattern {
        Pattern {
            text: path.to_vec(),
            exclusion: true,
            line: 0,
            dirs: path.split(|&b| b == b'/').count(),
            kind: Kind::Exact,
        }
    }
}

/// Port of `patternmatcher.PatternMatcher`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub patterns: Vec<Pattern>,
    exclusions: bool,
}

impl Matcher {
    /// Port of `patternmatcher.New` over the lines of `file`.
    pub fn new(lines: &[Line], file: &Path) -> Result<Matcher, PatternError> {
        let mut patterns = Vec::new();
        for line in lines {
            let err = |reason: String| PatternError {
                file: file.display().to_string(),
                line: line.number,
                pattern: String::from_utf8_lossy(&line.text).into_owned(),
                reason,
            };
            let p = trim_space(&line.text);
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if p[0] == b'!' {
                if p.len() == 1 {
                    return Err(err("illegal exclusion pattern: \"!\"".into()));
                }
                exclusion = true;
                p.remove(0);
            }
            if go_match(&p, b".").is_err() {
                return Err(err(
                    "syntax error in pattern (Go's filepath.Match rejects it)".into(),
                ));
            }
            let kind = compile(&p).map_err(|e| err(format!("syntax error in pattern: {e}")))?;
            patterns.push(Pattern {
                dirs: p.split(|&b| b == b'/').count(),
                text: p,
                exclusion,
                line: line.number,
                kind,
            });
        }
        let exclusions = patterns.iter().any(|p| p.exclusion);
        Ok(Matcher {
            patterns,
            exclusions,
        })
    }

    /// Parses ignore-file text (for tests and tools).
    pub fn parse(content: &str) -> Result<Matcher, PatternError> {
        let file = Path::new(".dockerignore");
        Matcher::new(&read_patterns(content.as_bytes(), file)?, file)
    }

    pub fn push(&mut self, p: Pattern) {
        self.exclusions |= p.exclusion;
        self.patterns.push(p);
    }

    /// True when some pattern is an exception (`!...`).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `MatchesExact`: no parent matching.
    pub fn matches_exact(&self, file: &[u8]) -> bool {
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            if p.matches(file) {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// `MatchesOrParentMatches`.
    pub fn matches_or_parent_matches(&self, file: &[u8]) -> bool {
        let parents = parent_dirs(file);
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(file);
            if !m {
                m = parents.iter().any(|d| p.matches(d));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// The deprecated `Matches` (checks only the parent prefix as deep as the pattern), kept
    /// to run moby's own table of `filepath.Match` cases.
    pub fn matches_deprecated(&self, file: &[u8]) -> bool {
        let parent = parent_of(file);
        let parent_dirs: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(file);
            if !m && parent != b"." && p.dirs <= parent_dirs.len() {
                m = p.matches(&parent_dirs[..p.dirs].join(&b'/'));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// `MatchesUsingParentResults`: `parent` is what this returned for the parent directory
    /// (empty at the top level, or when unknown). Returns whether `file` is excluded and the
    /// per-pattern results to pass to its children.
    pub fn matches_using_parent_results(&self, file: &[u8], parent: &[bool]) -> (bool, Vec<bool>) {
        let mut info = vec![false; self.patterns.len()];
        let mut matched = false;
        let mut parents: Option<Vec<Vec<u8>>> = None;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = parent.get(i).copied().unwrap_or(false);
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(file);
                if !m && parent.is_empty() {
                    let ps = parents.get_or_insert_with(|| parent_dirs(file));
                    m = ps.iter().any(|d| p.matches(d));
                }
            }
            info[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }

    /// Whether a directory excluded with `info` (its [`Self::matches_using_parent_results`])
    /// can contain anything that ends up included. Only exceptions after the last pattern
    /// that matched the directory can re-include something below it, and only if they can
    /// match some path under `dir/`. When this is false the walker prunes the directory.
    pub fn may_include_below(&self, dir: &[u8], info: &[bool]) -> bool {
        if !self.exclusions {
            return false;
        }
        let last = info.iter().rposition(|&m| m).unwrap_or(0);
        let mut dir_slash = dir.to_vec();
        dir_slash.push(b'/');
        self.patterns[last..]
            .iter()
            .any(|p| p.exclusion && p.could_match_below(&dir_slash))
    }
}

fn parent_of(file: &[u8]) -> Vec<u8> {
    match file.iter().rposition(|&b| b == b'/') {
        Some(i) => clean(&file[..i]),
        None => b".".to_vec(),
    }
}

/// `a/b/c` → [`a`, `a/b`] (nothing for a top-level path).
fn parent_dirs(file: &[u8]) -> Vec<Vec<u8>> {
    let parent = parent_of(file);
    if parent == b"." {
        return Vec::new();
    }
    let parts: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
    (1..=parts.len()).map(|i| parts[..i].join(&b'/')).collect()
}

/// `escapeBytes` in patternmatcher: regex metacharacters with no meaning in a glob.
fn should_escape(c: char) -> bool {
    matches!(c, '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$')
}

/// Port of `Pattern.compile` for `/` separators.
fn compile(pattern: &[u8]) -> Result<Kind, goregex::Error> {
    #[derive(PartialEq)]
    enum T {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let runes = goregex::go_runes(pattern);
    let mut re = String::from("^");
    let mut ty = T::Exact;
    let mut pos = 0;
    let mut i = 0;
    while pos < runes.len() {
        let ch = runes[pos];
        pos += 1;
        let peek = runes.get(pos).copied();
        if ch == '*' {
            if peek == Some('*') {
                pos += 1;
                if runes.get(pos) == Some(&'/') {
                    pos += 1;
                }
                if pos >= runes.len() {
                    if ty == T::Exact {
                        ty = T::Prefix;
                    } else {
                        re.push_str(".*");
                        ty = T::Regexp;
                    }
                } else {
                    re.push_str("(.*/)?");
                    ty = T::Regexp;
                }
                if i == 0 {
                    ty = T::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                ty = T::Regexp;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            ty = T::Regexp;
        } else if should_escape(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            match peek {
                Some(next) => {
                    pos += 1;
                    re.push('\\');
                    re.push(next);
                    ty = T::Regexp;
                }
                None => re.push('\\'),
            }
        } else if ch == '[' || ch == ']' {
            re.push(ch);
            ty = T::Regexp;
        } else {
            re.push(ch);
        }
        i += 1;
    }
    Ok(match ty {
        T::Exact => Kind::Exact,
        T::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_vec()),
        T::Suffix => Kind::Suffix(pattern[2..].to_vec()),
        T::Regexp => {
            re.push('$');
            let compiled = Regex::new(&re)?;
            Kind::Regexp(re, compiled)
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
pub struct BadPattern;

/// Port of Go's `filepath.Match` (Unix), used as Docker uses it: `Match(p, ".")` to validate.
pub fn go_match(mut pattern: &[u8], mut name: &[u8]) -> Result<bool, BadPattern> {
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            return Ok(!name.contains(&b'/'));
        }
        let (t, ok, err) = match_chunk(chunk, name);
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if err {
            return Err(BadPattern);
        }
        if star {
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                let (t, ok, err) = match_chunk(chunk, &name[i + 1..]);
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                if err {
                    return Err(BadPattern);
                }
                i += 1;
            }
        }
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            if match_chunk(chunk, b"").2 {
                return Err(BadPattern);
            }
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

fn scan_chunk(mut pattern: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pattern.first() == Some(&b'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut inrange = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'\\' if i + 1 < pattern.len() => i += 1,
            b'[' => inrange = true,
            b']' => inrange = false,
            b'*' if !inrange => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

fn decode_rune(s: &[u8]) -> (u32, usize) {
    if s.is_empty() {
        return (0xFFFD, 0);
    }
    let n = s.len().min(4);
    for len in 1..=n {
        if let Ok(t) = std::str::from_utf8(&s[..len]) {
            if let Some(c) = t.chars().next() {
                return (c as u32, len);
            }
        }
    }
    (0xFFFD, 1)
}

/// Returns (rest, ok, error).
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> (&'a [u8], bool, bool) {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = 0u32;
                if !failed {
                    let (c, n) = decode_rune(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let mut negated = false;
                if chunk.first() == Some(&b'^') {
                    negated = true;
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let Some((lo, rest)) = get_esc(chunk) else {
                        return (b"", false, true);
                    };
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let Some((h, rest)) = get_esc(&chunk[1..]) else {
                            return (b"", false, true);
                        };
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode_rune(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                let mut c = c;
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return (b"", false, true);
                    }
                    c = chunk[0];
                }
                if !failed {
                    if c != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        return (b"", false, false);
    }
    (s, true, false)
}

/// `getEsc`: one possibly escaped character of a range; None = bad pattern.
fn get_esc(mut chunk: &[u8]) -> Option<(u32, &[u8])> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return None;
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return None;
        }
    }
    let (r, n) = decode_rune(chunk);
    if r == 0xFFFD && n == 1 {
        return None;
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return None;
    }
    Some((r, rest))
}

#[cfg(test)]
mod tests {
    //! moby/patternmatcher's own tables (patternmatcher_test.go, ignorefile_test.go), run
    //! through every matching entry point the way the Go tests do.
    use super::*;

    fn matcher(patterns: &[&str]) -> Result<Matcher, PatternError> {
        let lines: Vec<Line> = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| Line {
                number: i + 1,
                text: p.as_bytes().to_vec(),
            })
            .collect();
        Matcher::new(&lines, Path::new("test"))
    }

    /// The package-level deprecated `Matches(file, patterns)`.
    fn go_matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
        let pm = matcher(patterns)?;
        let file = clean(file.as_bytes());
        if file == b"." {
            return Ok(false);
        }
        Ok(pm.matches_deprecated(&file))
    }

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum T {
        Fail,
        Exact,
        Inexact,
    }
    use T::*;

    const TESTS: &[(&str, &str, T)] = &[
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact),
        ("**/", "file/", Exact),
        ("**", "/", Exact),
        ("**/", "/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        // Unix-only cases.
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
    ];

    const MULTI: &[(&[&str], &str, T)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", Fail),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            Exact,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Fail,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Fail,
        ),
    ];

    /// Walks the parents of `text` the way TestMatches does, then matches `text`.
    fn using_parent_results(pm: &Matcher, text: &str) -> bool {
        let parent = parent_of(text.as_bytes());
        let mut info: Vec<bool> = Vec::new();
        if parent != b"." {
            let parts: Vec<&[u8]> = parent.split(|&b| b == b'/').collect();
            for i in 0..parts.len() {
                info = pm
                    .matches_using_parent_results(&parts[..=i].join(&b'/'), &info)
                    .1;
            }
        }
        pm.matches_using_parent_results(text.as_bytes(), &info).0
    }

    #[test]
    fn moby_matches_table() {
        for &(pattern, text, pass) in TESTS {
            let pm = matcher(&[pattern]).unwrap();
            let desc = format!("pattern={pattern:?} text={text:?}");
            assert_eq!(
                pm.matches_exact(text.as_bytes()),
                pass == Exact,
                "exact {desc}"
            );
            assert_eq!(
                pm.matches_or_parent_matches(text.as_bytes()),
                pass != Fail,
                "or-parent {desc}"
            );
            assert_eq!(
                using_parent_results(&pm, text),
                pass != Fail,
                "parent-results {desc}"
            );
            assert_eq!(
                pm.matches_using_parent_results(text.as_bytes(), &[]).0,
                pass != Fail,
                "no-context {desc}"
            );
        }
        for &(patterns, text, pass) in MULTI {
            let pm = matcher(patterns).unwrap();
            let desc = format!("patterns={patterns:?} text={text:?}");
            assert_eq!(
                pm.matches_or_parent_matches(text.as_bytes()),
                pass != Fail,
                "or-parent {desc}"
            );
            assert_eq!(
                using_parent_results(&pm, text),
                pass != Fail,
                "parent-results {desc}"
            );
            assert_eq!(
                pm.matches_using_parent_results(text.as_bytes(), &[]).0,
                pass != Fail,
                "no-context {desc}"
            );
        }
    }

    #[test]
    fn moby_simple_cases() {
        assert!(go_matches("fileutils.go", &["*"]).unwrap());
        assert!(go_matches("fileutils.go", &["*.go"]).unwrap());
        assert!(go_matches("fileutils.go", &["!fileutils.go", "*.go"]).unwrap());
        assert!(!go_matches("docs/README.md", &["docs", "!docs/README.md"]).unwrap());
        assert!(!go_matches("docs/README.md", &["docs/", "!docs/README.md"]).unwrap());
        assert!(!go_matches("docs/README.md", &["docs/*", "!docs/README.md"]).unwrap());
        assert!(!go_matches("fileutils.go", &["*.go", "!fileutils.go"]).unwrap());
        assert!(!go_matches(".", &["*.go"]).unwrap());
        assert!(go_matches("fileutils.go", &["!"]).is_err());
        assert!(!go_matches("/any/path/there", &[]).unwrap());
        assert!(go_matches("/any/path/there", &["["]).is_err());
        let pm = matcher(&["docs", "  !docs/README.md"]).unwrap();
        assert!(pm.exclusions());
        let pm = matcher(&["docs", "!docs/README.md  "]).unwrap();
        assert!(pm.exclusions());
        assert_eq!(matcher(&["docs", "config", ""]).unwrap().patterns.len(), 2);
    }

    /// Go's filepath.Match tests as moby runs them (through the deprecated `Matches`).
    #[test]
    fn moby_filepath_match_table() {
        let table: &[(&str, &str, bool, bool)] = &[
            ("abc", "abc", true, false),
            ("*", "abc", true, false),
            ("*c", "abc", true, false),
            ("a*", "a", true, false),
            ("a*", "abc", true, false),
            ("a*", "ab/c", true, false),
            ("a*/b", "abc/b", true, false),
            ("a*/b", "a/c/b", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
            ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
            ("ab[c]", "abc", true, false),
            ("ab[b-d]", "abc", true, false),
            ("ab[e-g]", "abc", false, false),
            ("ab[^c]", "abc", false, false),
            ("ab[^b-d]", "abc", false, false),
            ("ab[^e-g]", "abc", true, false),
            ("a\\*b", "a*b", true, false),
            ("a\\*b", "ab", false, false),
            ("a?b", "a☺b", true, false),
            ("a[^a]b", "a☺b", true, false),
            ("a???b", "a☺b", false, false),
            ("a[^a][^a][^a]b", "a☺b", false, false),
            ("[a-ζ]*", "α", true, false),
            ("*[a-ζ]", "A", false, false),
            ("a?b", "a/b", false, false),
            ("a*b", "a/b", false, false),
            ("[\\]a]", "]", true, false),
            ("[\\-]", "-", true, false),
            ("[x\\-]", "x", true, false),
            ("[x\\-]", "-", true, false),
            ("[x\\-]", "z", false, false),
            ("[\\-x]", "x", true, false),
            ("[\\-x]", "-", true, false),
            ("[\\-x]", "a", false, false),
            ("[]a]", "]", false, true),
            ("[-]", "-", false, true),
            ("[x-]", "x", false, true),
            ("[x-]", "-", false, true),
            ("[x-]", "z", false, true),
            ("[-x]", "x", false, true),
            ("[-x]", "-", false, true),
            ("[-x]", "a", false, true),
            ("\\", "a", false, true),
            ("[a-b-c]", "a", false, true),
            ("[", "a", false, true),
            ("[^", "a", false, true),
            ("[^bc", "a", false, true),
            ("a[", "a", false, true),
            ("a[", "ab", false, true),
            ("*x", "xxx", true, false),
        ];
        for &(pattern, s, want, want_err) in table {
            match go_matches(s, &[pattern]) {
                Ok(m) => {
                    assert!(!want_err, "Match({pattern:?}, {s:?}) wanted an error");
                    assert_eq!(m, want, "Match({pattern:?}, {s:?})");
                }
                Err(_) => assert!(want_err, "Match({pattern:?}, {s:?}) unexpected error"),
            }
        }
    }

    #[test]
    fn moby_compile_table() {
        let table: &[(&str, &str)] = &[
            ("*", "R^[^/]*$"),
            ("file*", "R^file[^/]*$"),
            ("*file", "R^[^/]*file$"),
            ("a*/b", "R^a[^/]*/b$"),
            ("**", "S"),
            ("**/**", "R^(.*/)?.*$"),
            ("dir/**", "P"),
            ("**/dir", "S"),
            ("**/dir2/*", "R^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", "R^(.*/)?dir2/.*$"),
            ("**file", "S"),
            ("**/file*txt", "R^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", "R^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", "R^a[b-d]e$"),
            (".*", "R^\\.[^/]*$"),
            ("abc.def", "E"),
            ("abc?def", "R^abc[^/]def$"),
            ("**/foo/bar", "S"),
            ("a(b)c/def", "E"),
            ("a.|)$(}+{bc", "E"),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                "E",
            ),
        ];
        for &(pattern, want) in table {
            let kind = compile(&clean(pattern.as_bytes())).unwrap();
            let got = match kind {
                Kind::Exact => "E".to_string(),
                Kind::Prefix(_) => "P".to_string(),
                Kind::Suffix(_) => "S".to_string(),
                Kind::Regexp(re, _) => format!("R{re}"),
            };
            assert_eq!(got, want, "compile({pattern:?})");
        }
    }

    #[test]
    fn regex_rejected_pattern_is_an_error_up_front() {
        // Passes filepath.Match, fails Go's regexp (reversed range l-O): moby issue 52203.
        let err = matcher(&["[Local-Only]/"]).unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.to_string().contains("[Local-Only]"), "{err}");
    }

    #[test]
    fn moby_read_all() {
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        let got: Vec<String> = read_patterns(content.as_bytes(), Path::new("x"))
            .unwrap()
            .into_iter()
            .map(|l| String::from_utf8(l.text).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
    }

    #[test]
    fn read_all_details() {
        let content = "\u{feff}# bom then comment\r\n  # not a comment\r\n./a/../b/\n\t\n/\n";
        let lines = read_patterns(content.as_bytes(), Path::new("x")).unwrap();
        let got: Vec<(usize, String)> = lines
            .into_iter()
            .map(|l| (l.number, String::from_utf8(l.text).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "# not a comment".to_string()),
                (3, "b".to_string()),
                (5, "/".to_string())
            ]
        );
    }

    #[test]
    fn go_clean() {
        for (i, o) in [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ] {
            assert_eq!(
                String::from_utf8(clean(i.as_bytes())).unwrap(),
                o,
                "Clean({i:?})"
            );
        }
    }

    /// BuildKit sends `vendor/lib-a/LICENSE` for `vendor` + `!vendor/*/LICENSE`; the classic
    /// builder does not (its walk skips `vendor/lib-a`). slipway follows BuildKit.
    #[test]
    fn buildkit_exception_under_wildcard_dir() {
        let pm = Matcher::parse("vendor\n!vendor/*/LICENSE\n").unwrap();
        let (m, vendor) = pm.matches_using_parent_results(b"vendor", &[]);
        assert!(m);
        assert!(
            pm.may_include_below(b"vendor", &vendor),
            "vendor must be walked"
        );
        let (m, lib) = pm.matches_using_parent_results(b"vendor/lib-a", &vendor);
        assert!(m);
        assert!(
            pm.may_include_below(b"vendor/lib-a", &lib),
            "vendor/lib-a must be walked"
        );
        let (m, _) = pm.matches_using_parent_results(b"vendor/lib-a/LICENSE", &lib);
        assert!(!m, "the exception re-includes vendor/lib-a/LICENSE");
        let (m, _) = pm.matches_using_parent_results(b"vendor/lib-a/code.go", &lib);
        assert!(m);
    }

    #[test]
    fn pruning_decisions() {
        let pm = Matcher::parse("node_modules\n*.log\n!important.log\n!src/**/keep\n").unwrap();
        let (m, info) = pm.matches_using_parent_results(b"node_modules", &[]);
        assert!(m);
        assert!(!pm.may_include_below(b"node_modules", &info));
        // An exception that can match anywhere keeps every excluded directory open.
        let pm = Matcher::parse("node_modules\n!**/keep\n").unwrap();
        let (_, info) = pm.matches_using_parent_results(b"node_modules", &[]);
        assert!(pm.may_include_below(b"node_modules", &info));
        // ...unless a later include pattern wins over it anyway.
        let pm = Matcher::parse("!**/keep\nnode_modules\n").unwrap();
        let (_, info) = pm.matches_using_parent_results(b"node_modules", &[]);
        assert!(!pm.may_include_below(b"node_modules", &info));
        // No exceptions at all: prune.
        let pm = Matcher::parse("build/\n").unwrap();
        let (_, info) = pm.matches_using_parent_results(b"build", &[]);
        assert!(!pm.may_include_below(b"build", &info));
    }

    #[test]
    fn errors_name_file_and_line() {
        let file = Path::new("ctx/.dockerignore");
        let lines = read_patterns(b"# ok\nfine\n\nsrc/[a-\n", file).unwrap();
        let err = Matcher::new(&lines, file).unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(err.file, "ctx/.dockerignore");
        assert!(
            err.to_string()
                .starts_with("ctx/.dockerignore:4: invalid .dockerignore pattern `src/[a-`"),
            "{err}"
        );
        let lines = read_patterns(b"a\n!\n", file).unwrap();
        assert_eq!(Matcher::new(&lines, file).unwrap_err().line, 2);
    }

    #[test]
    fn quirks_match_docker() {
        // `**file` is a suffix comparison in moby, not `(.*/)?file`.
        let pm = Matcher::parse("**file").unwrap();
        assert!(pm.matches_exact(b"dir/afile"));
        // Without wildcards `^` is literal; with them the pattern is a Go regex, where a
        // leading `^` is a second start anchor and a middle one never matches.
        assert!(Matcher::parse("^foo").unwrap().matches_exact(b"^foo"));
        assert!(Matcher::parse("^fo*").unwrap().matches_exact(b"foo"));
        assert!(!Matcher::parse("a^b*").unwrap().matches_exact(b"a^bc"));
        // Escapes make a literal.
        assert!(Matcher::parse("\\*.txt").unwrap().matches_exact(b"*.txt"));
        assert!(!Matcher::parse("\\*.txt").unwrap().matches_exact(b"a.txt"));
        // A pattern naming a directory excludes everything below it.
        let pm = Matcher::parse("./build/").unwrap();
        assert!(pm.matches_or_parent_matches(b"build/x/y.o"));
        assert!(!pm.matches_or_parent_matches(b"builds/y.o"));
    }
}
