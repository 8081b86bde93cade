//! The toolchain release a project asks for, and so the base image its Dockerfile starts
//! from: Node's `.nvmrc`, `.node-version` and `engines.node`; Python's `.python-version` and
//! `requires-python`; Go's `toolchain` and `go` directives; Rust's `rust-toolchain.toml`,
//! `rust-version` and `edition`. An exact version (`22.12.0`, `toolchain go1.24.4`) is used as
//! it is; a range picks the stack's default release when it fits, else the nearest release
//! that does (a newer one first). A project that says nothing gets the default, a release
//! that is supported today: each language's table carries the end-of-life date of every line,
//! and a unit test fails once a default has reached it (time to move the default on).

use serde_json::Value;

use super::{Notes, SourceTree};

/// A language's releases slipway knows: (release line, pinned patch version), oldest first.
pub struct Releases {
    pub language: &'static str,
    pub lines: &'static [(&'static str, &'static str)],
    /// The release line used when the project says nothing.
    pub default: &'static str,
    /// (release line, the day its support ends, `YYYY-MM-DD`): the project's published end
    /// of life; for Go the release of the second next line (Go supports the last two), on
    /// its February/August cadence; Rust publishes none (only the latest stable is
    /// supported), so slipway counts a line as current for 24 weeks (four releases).
    pub eol: &'static [(&'static str, &'static str)],
    /// The image reference of a version.
    pub image: fn(&str) -> String,
}

pub const NODE: Releases = Releases {
    language: "Node.js",
    lines: &[
        ("18", "18.20.5"),
        ("20", "20.18.1"),
        ("22", "22.12.0"),
        ("24", "24.11.0"),
    ],
    default: "22",
    eol: &[
        ("18", "2025-04-30"),
        ("20", "2026-04-30"),
        ("22", "2027-04-30"),
        ("24", "2028-04-30"),
    ],
    image: |v| format!("node:{v}-bookworm-slim"),
};

pub const PYTHON: Releases = Releases {
    language: "Python",
    lines: &[
        ("3.9", "3.9.21"),
        ("3.10", "3.10.16"),
        ("3.11", "3.11.11"),
        ("3.12", "3.12.8"),
        ("3.13", "3.13.1"),
    ],
    default: "3.13",
    eol: &[
        ("3.9", "2025-10-31"),
        ("3.10", "2026-10-31"),
        ("3.11", "2027-10-31"),
        ("3.12", "2028-10-31"),
        ("3.13", "2029-10-31"),
    ],
    image: |v| format!("python:{v}-slim-bookworm"),
};

pub const GO: Releases = Releases {
    language: "Go",
    lines: &[
        ("1.22", "1.22.10"),
        ("1.23", "1.23.4"),
        ("1.24", "1.24.4"),
        ("1.25", "1.25.0"),
        ("1.26", "1.26.11"),
        ("1.27", "1.27.4"),
    ],
    default: "1.27",
    eol: &[
        ("1.22", "2025-02-11"),
        ("1.23", "2025-08-12"),
        ("1.24", "2026-02-10"),
        ("1.25", "2026-08-01"),
        ("1.26", "2027-02-01"),
        ("1.27", "2027-08-01"),
    ],
    image: |v| format!("golang:{v}-bookworm"),
};

pub const RUST: Releases = Releases {
    language: "Rust",
    lines: &[
        ("1.83", "1.83.0"),
        ("1.85", "1.85.0"),
        ("1.88", "1.88.0"),
        ("1.95", "1.95.0"),
        ("1.100", "1.100.0"),
    ],
    default: "1.100",
    // Released 2024-11-28, 2025-02-20, 2025-06-26, 2026-04-16, 2026-11-12; plus 24 weeks.
    eol: &[
        ("1.83", "2025-05-15"),
        ("1.85", "2025-08-07"),
        ("1.88", "2025-12-11"),
        ("1.95", "2026-10-01"),
        ("1.100", "2027-04-29"),
    ],
    image: |v| format!("rust:{v}-slim-bookworm"),
};

impl Releases {
    /// The default release's image.
    pub fn default_image(&self) -> String {
        let (_, v) = self
            .lines
            .iter()
            .find(|(l, _)| *l == self.default)
            .expect("the default is a known line");
        (self.image)(v)
    }

    /// The version to use for a requirement: an exact version as it is, a range resolved
    /// against the known lines. `None` when nothing known fits.
    pub fn resolve(&self, requirement: &str) -> Option<String> {
        let req = requirement.trim().trim_start_matches('v');
        if is_exact(req) {
            return Some(req.to_string());
        }
        let fits = |v: &str| satisfies(v, req);
        let default = self.lines.iter().position(|(l, _)| *l == self.default)?;
        if fits(self.lines[default].1) {
            return Some(self.lines[default].1.to_string());
        }
        let newer = self.lines[default + 1..].iter().find(|(_, v)| fits(v));
        let older = self.lines[..default].iter().rev().find(|(_, v)| fits(v));
        newer.or(older).map(|(_, v)| v.to_string())
    }

    /// Records the choice for `requirement` (from `file`) and returns the image.
    fn choose(&self, requirement: &str, file: &str, what: &str, notes: &mut Notes) -> String {
        self.choose_shown(requirement, requirement, file, what, notes)
    }

    /// [`Releases::choose`], naming the requirement as the project wrote it.
    fn choose_shown(
        &self,
        requirement: &str,
        shown: &str,
        file: &str,
        what: &str,
        notes: &mut Notes,
    ) -> String {
        let requirement_shown = shown;
        match self.resolve(requirement) {
            Some(v) => {
                let image = (self.image)(&v);
                notes.because(
                    file,
                    format!(
                        "{what} `{requirement_shown}`: {} {v} ({image})",
                        self.language
                    ),
                );
                image
            }
            None => {
                let image = self.default_image();
                notes.warn(format!(
                    "{file}: no {} release slipway knows fits {what} `{requirement_shown}`: using {image} (set `[base_images]` in slipway.toml to choose)",
                    self.language
                ));
                image
            }
        }
    }
}

impl Releases {
    /// A least version (`go 1.24`, `rust-version = "1.86"`): the default or the nearest known
    /// release at or above it, else that version itself (these images exist for every release).
    fn at_least(&self, least: &str, file: &str, what: &str, notes: &mut Notes) -> String {
        let range = format!(">={least}");
        if self.resolve(&range).is_some() {
            return self.choose_shown(&range, least, file, what, notes);
        }
        let mut parts = numbers(least);
        parts.resize(3, 0);
        let exact: Vec<String> = parts.iter().map(u64::to_string).collect();
        self.choose(&exact.join("."), file, what, notes)
    }
}

/// `22.12.0`, `3.12.8`: three numbers.
fn is_exact(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn numbers(v: &str) -> Vec<u64> {
    v.split('.')
        .map_while(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Compares a full version with a possibly partial one, on the parts the partial one has.
fn cmp_prefix(v: &[u64], partial: &[u64]) -> std::cmp::Ordering {
    for (i, p) in partial.iter().enumerate() {
        let x = v.get(i).copied().unwrap_or(0);
        match x.cmp(p) {
            std::cmp::Ordering::Equal => {}
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

/// Whether `version` (full) meets a requirement in npm's or PEP 440's range syntax:
/// alternatives joined by `||`, comparators by spaces or commas (`>=3.10,<3.13`, `^20`,
/// `~3.12`, `~=3.11`, `20.x`, `==3.12.*`, `>=18 <23`).
pub fn satisfies(version: &str, requirement: &str) -> bool {
    let v = numbers(version);
    requirement.split("||").any(|alt| {
        let mut comparators = alt
            .split([',', ' '])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .peekable();
        comparators.peek().is_some() && comparators.all(|c| comparator(&v, c))
    })
}

fn comparator(v: &[u64], c: &str) -> bool {
    use std::cmp::Ordering::*;
    if c == "*" || c == "x" || c == "latest" || c == "lts/*" {
        return true;
    }
    let (op, rest) = ["~=", "==", "!=", ">=", "<=", ">", "<", "=", "^", "~"]
        .iter()
        .find_map(|op| c.strip_prefix(op).map(|r| (*op, r)))
        .unwrap_or(("", c));
    let rest = rest.trim().trim_start_matches('v');
    let p = numbers(rest.trim_end_matches(".*").trim_end_matches(".x"));
    if p.is_empty() {
        return false;
    }
    let ord = cmp_prefix(v, &p);
    match op {
        ">=" => ord != Less,
        ">" => ord == Greater,
        "<" => ord == Less,
        "<=" => ord != Greater,
        "!=" => ord != Equal,
        // `^20.1` keeps the major; `^0.x` is not a toolchain's.
        "^" => v.first() == p.first() && cmp_prefix(v, &p) != Less,
        // `~3.12` / `~=3.11`: same release line.
        "~" => cmp_prefix(v, &p[..p.len().min(2)]) == Equal && ord != Less,
        "~=" => cmp_prefix(v, &p[..p.len() - 1]) == Equal && ord != Less,
        // `20`, `=20.x`, `==3.12.*`: every version on that prefix.
        _ => ord == Equal,
    }
}

/// The first non-empty, non-comment line of a version file.
fn version_file(tree: &SourceTree, file: &str) -> anyhow::Result<Option<String>> {
    Ok(tree.read_opt(file)?.and_then(|t| {
        t.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
            .find(|l| !l.is_empty())
    }))
}

/// The Node.js image of a project with this `package.json`.
pub fn node(tree: &SourceTree, pkg: &Value, notes: &mut Notes) -> anyhow::Result<String> {
    for file in [".nvmrc", ".node-version"] {
        if let Some(v) = version_file(tree, file)? {
            let v = v.trim_start_matches('v');
            if v.starts_with(|c: char| c.is_ascii_digit()) {
                return Ok(NODE.choose(v, file, "version", notes));
            }
        }
    }
    if let Some(req) = pkg
        .get("engines")
        .and_then(|e| e.get("node"))
        .and_then(Value::as_str)
    {
        return Ok(NODE.choose(req, "package.json", "engines.node", notes));
    }
    Ok(NODE.default_image())
}

/// The Python image of a project: `.python-version`, else `requires-python`.
pub fn python(
    tree: &SourceTree,
    pyproject: Option<&toml::Table>,
    notes: &mut Notes,
) -> anyhow::Result<String> {
    if let Some(v) = version_file(tree, ".python-version")? {
        if v.starts_with(|c: char| c.is_ascii_digit()) {
            return Ok(PYTHON.choose(&v, ".python-version", "version", notes));
        }
    }
    let requires = pyproject
        .and_then(|p| p.get("project"))
        .and_then(|p| p.get("requires-python"))
        .and_then(|r| r.as_str());
    if let Some(req) = requires {
        return Ok(PYTHON.choose(req, "pyproject.toml", "requires-python", notes));
    }
    Ok(PYTHON.default_image())
}

/// The Go image of a module: its `toolchain` directive, else its `go` directive (the least
/// version it builds with: the default when that is newer).
pub fn go(gomod: &str, notes: &mut Notes) -> String {
    let directive = |name: &str| {
        gomod
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().trim_start_matches("go").to_string())
    };
    if let Some(v) = directive("toolchain ").filter(|v| is_exact(v)) {
        return GO.choose(&v, "go.mod", "toolchain", notes);
    }
    if let Some(v) = directive("go ").filter(|v| !numbers(v).is_empty()) {
        return GO.at_least(&v, "go.mod", "go", notes);
    }
    GO.default_image()
}

/// The Rust image of a package: `rust-toolchain.toml`'s numeric channel, else `rust-version`,
/// else the least release of its `edition`.
pub fn rust(tree: &SourceTree, package: &toml::Table, notes: &mut Notes) -> anyhow::Result<String> {
    for file in ["rust-toolchain.toml", "rust-toolchain"] {
        let Some(text) = tree.read_opt(file)? else {
            continue;
        };
        let channel = text.parse::<toml::Table>().ok().and_then(|t| {
            t.get("toolchain")
                .and_then(|t| t.get("channel"))
                .and_then(|c| c.as_str())
                .map(str::to_string)
        });
        let channel = channel.unwrap_or_else(|| text.trim().to_string());
        if is_exact(&channel) {
            return Ok(RUST.choose(&channel, file, "channel", notes));
        }
        if numbers(&channel).len() == 2 {
            return Ok(RUST.choose(&format!("{channel}.0"), file, "channel", notes));
        }
    }
    if let Some(v) = package.get("rust-version").and_then(|v| v.as_str()) {
        return Ok(RUST.at_least(v, "Cargo.toml", "rust-version", notes));
    }
    let least = match package.get("edition").and_then(|e| e.as_str()) {
        Some("2024") => Some("1.85"),
        Some("2021") => Some("1.56"),
        _ => None,
    };
    if let Some(least) = least {
        let edition = package
            .get("edition")
            .and_then(|e| e.as_str())
            .unwrap_or("");
        return Ok(RUST.at_least(
            least,
            "Cargo.toml",
            &format!("edition {edition} needs Rust"),
            notes,
        ));
    }
    Ok(RUST.default_image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for (v, req, want) in [
            ("22.12.0", ">=18", true),
            ("22.12.0", "^20", false),
            ("20.18.1", "^20.10", true),
            ("22.12.0", ">=18 <21", false),
            ("20.18.1", ">=18 <21", true),
            ("22.12.0", "20.x || 22.x", true),
            ("3.11.11", ">=3.12", false),
            ("3.12.8", ">=3.10,<3.13", true),
            ("3.13.1", ">=3.10,<3.13", false),
            ("3.12.8", "~=3.11", true),
            ("3.12.8", "~=3.11.2", false),
            ("3.11.11", "~=3.11.0", true),
            ("3.12.8", "==3.12.*", true),
            ("1.85.0", ">=1.85", true),
            ("1.83.0", ">=1.85", false),
        ] {
            assert_eq!(satisfies(v, req), want, "{v} {req}");
        }
    }

    #[test]
    fn the_default_when_it_fits_else_the_nearest() {
        assert_eq!(NODE.resolve(">=18").as_deref(), Some("22.12.0"));
        assert_eq!(NODE.resolve(">=24").as_deref(), Some("24.11.0"));
        assert_eq!(NODE.resolve("^20").as_deref(), Some("20.18.1"));
        assert_eq!(NODE.resolve("v22.11.0").as_deref(), Some("22.11.0"));
        assert_eq!(NODE.resolve(">=30"), None);
        assert_eq!(PYTHON.resolve(">=3.12").as_deref(), Some("3.13.1"));
        assert_eq!(PYTHON.resolve(">=3.10,<3.13").as_deref(), Some("3.12.8"));
        assert_eq!(PYTHON.resolve("3.13").as_deref(), Some("3.13.1"));
        assert_eq!(RUST.resolve(">=1.85").as_deref(), Some("1.100.0"));
        assert_eq!(RUST.resolve("<1.90").as_deref(), Some("1.88.0"));
        assert_eq!(GO.resolve(">=1.22").as_deref(), Some("1.27.4"));
        assert_eq!(GO.default_image(), "golang:1.27.4-bookworm");
        let mut notes = Notes::default();
        assert_eq!(
            RUST.at_least("1.101", "Cargo.toml", "rust-version", &mut notes),
            "rust:1.101.0-slim-bookworm"
        );
        assert_eq!(
            go("module x\n\ngo 1.24\n\ntoolchain go1.24.4\n", &mut notes),
            "golang:1.24.4-bookworm"
        );
        assert_eq!(
            go("module x\ngo 1.21\n", &mut notes),
            "golang:1.27.4-bookworm"
        );
    }

    /// Days since 1970-01-01 of a `YYYY-MM-DD` date (Howard Hinnant's days_from_civil).
    fn days(date: &str) -> i64 {
        let n: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
        let (m, d) = (n[1], n[2]);
        let y = if m <= 2 { n[0] - 1 } else { n[0] };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Fails once a default release reaches its end of life: then move the default on (and
    /// add the new line with its end-of-life date).
    #[test]
    fn every_default_is_a_supported_release_today() {
        assert_eq!(days("1970-01-01"), 0);
        assert_eq!(days("2026-12-02"), 20_789);
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            / 86_400;
        for r in [&NODE, &PYTHON, &GO, &RUST] {
            for (line, _) in r.lines {
                assert!(
                    r.eol.iter().any(|(l, _)| l == line),
                    "{} {line} has no end-of-life date",
                    r.language
                );
            }
            let (_, eol) = r
                .eol
                .iter()
                .find(|(l, _)| *l == r.default)
                .expect("the default has an end-of-life date");
            assert!(
                today < days(eol),
                "{} {}, the default when a project says nothing, reached its end of life on {eol}",
                r.language,
                r.default
            );
        }
    }
}
