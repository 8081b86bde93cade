//! What the project's own code declares about how it runs: the port it listens on and its
//! health and readiness routes. `slipway init` proposes these instead of a stack's
//! convention, and names the file and line that decided each one.
//!
//! This is a reading, not a parse: the patterns are the ones apps are written with
//! (`process.env.PORT ?? 8080`, `app.listen(8080)`, `os.environ.get("PORT", "5000")`,
//! `os.Getenv("PORT")` with a default on the next lines, `--port`/`-p` in a start script;
//! `app.get('/healthz', ...)`, `@app.route("/health")`, Django's `path("healthz", ...)`,
//! Next.js route files). Tests and dependencies are never read.

use serde::Serialize;

use super::{node, SourceTree, Stack};

/// A value found in the source, and the line that says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Declared<T> {
    pub value: T,
    /// Path relative to the context.
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// The line as written, trimmed and shortened.
    pub text: String,
}

impl<T> Declared<T> {
    fn new(value: T, file: &str, line: usize, text: &str) -> Self {
        let text = text.trim();
        let text = match text.char_indices().nth(80) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text.to_string(),
        };
        Declared {
            value,
            file: file.to_string(),
            line,
            text,
        }
    }

    /// `file:line`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Health routes, in the order they are preferred.
pub const HEALTH_ROUTES: &[&str] = &[
    "/healthz",
    "/api/healthz",
    "/health",
    "/api/health",
    "/livez",
    "/api/livez",
    "/ping",
    "/api/ping",
];

/// Readiness routes, in the order they are preferred.
pub const READY_ROUTES: &[&str] = &["/readyz", "/api/readyz", "/ready", "/api/ready"];

/// Source files of a stack worth reading, shallowest first, tests left out.
pub fn source_files(tree: &SourceTree, stack: Stack) -> anyhow::Result<Vec<String>> {
    let exts: &[&str] = match stack {
        Stack::Python => &["py"],
        Stack::Go => &["go"],
        Stack::Rust => &["rs"],
        Stack::Nextjs | Stack::Node => &["ts", "js", "mjs", "cjs", "tsx", "jsx"],
    };
    let mut files = Vec::new();
    for ext in exts {
        files.extend(tree.files_with_ext(ext, 4)?);
    }
    files.retain(|f| !is_test(f));
    files.sort_by(|a, b| {
        a.matches('/')
            .count()
            .cmp(&b.matches('/').count())
            .then(a.cmp(b))
    });
    Ok(files)
}

fn is_test(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file);
    file.split('/')
        .any(|p| p == "tests" || p == "test" || p == "__tests__")
        || name.starts_with("test_")
        || name.ends_with("_test.go")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.ends_with(".config.js")
        || name.ends_with(".config.ts")
        || name.ends_with(".config.mjs")
}

/// Whether a line is a comment as a whole (`//`, `#`, `/*`, `*`).
fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with('#') || t.starts_with("/*") || t.starts_with('*')
}

/// The port the app declares: its start script first, then the source.
pub fn port(tree: &SourceTree, stack: Stack) -> anyhow::Result<Option<Declared<u16>>> {
    if matches!(stack, Stack::Node | Stack::Nextjs) {
        if let Some(d) = script_port(tree)? {
            return Ok(Some(d));
        }
    }
    for file in source_files(tree, stack)? {
        let text = tree.read(&file)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if is_comment(line) {
                continue;
            }
            if let Some(p) = port_in_line(line) {
                return Ok(Some(Declared::new(p, &file, i + 1, line)));
            }
            if port_env_read(line).is_some() {
                // `port := os.Getenv("PORT")` and a default on one of the next lines.
                for (j, next) in lines.iter().enumerate().skip(i + 1).take(3) {
                    if let Some(p) = next
                        .split_once('=')
                        .filter(|_| next.to_ascii_lowercase().contains("port"))
                        .and_then(|(_, rhs)| first_port(rhs))
                    {
                        return Ok(Some(Declared::new(p, &file, j + 1, next)));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// `--port N`, `--port=N`, `-p N` or `PORT=N` in package.json's `start` script.
fn script_port(tree: &SourceTree) -> anyhow::Result<Option<Declared<u16>>> {
    let Some(pkg) = node::package_json(tree)? else {
        return Ok(None);
    };
    let Some(start) = node::script(&pkg, "start") else {
        return Ok(None);
    };
    let words: Vec<&str> = start.split_whitespace().collect();
    let mut port = None;
    for (i, w) in words.iter().enumerate() {
        let value = match *w {
            "--port" | "-p" => words.get(i + 1).copied(),
            _ => w
                .strip_prefix("--port=")
                .or_else(|| w.strip_prefix("PORT=")),
        };
        if let Some(p) = value.and_then(parse_port) {
            port = Some(p);
            break;
        }
    }
    let Some(port) = port else {
        return Ok(None);
    };
    let text = tree.read("package.json")?;
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"start\""))
        .unwrap_or((0, ""));
    Ok(Some(Declared::new(port, "package.json", n + 1, line)))
}

fn parse_port(s: &str) -> Option<u16> {
    let s = s.trim_matches(|c| c == '"' || c == '\'');
    if s.len() < 2 || !s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p >= 80)
}

/// The first number in `s` that reads as a port (2 to 5 digits, 80 or more).
fn first_port(s: &str) -> Option<u16> {
    let mut rest = s;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let before = rest[..start].chars().last();
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let digits = &tail[..end];
        let after = tail[end..].chars().next();
        // Not part of a name (`http2`), a decimal or a dotted address.
        let alone = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if alone {
            if let Some(p) = parse_port(digits) {
                return Some(p);
            }
        }
        rest = &tail[end..];
    }
    None
}

/// Where a read of the `PORT` environment variable ends in a line, when it has one.
fn port_env_read(line: &str) -> Option<usize> {
    [
        "process.env.PORT",
        "process.env[\"PORT\"]",
        "process.env['PORT']",
        "environ.get(\"PORT\"",
        "environ.get('PORT'",
        "environ[\"PORT\"]",
        "environ['PORT']",
        "getenv(\"PORT\"",
        "getenv('PORT'",
        "Getenv(\"PORT\")",
        "LookupEnv(\"PORT\")",
        "env::var(\"PORT\")",
        "env.PORT",
    ]
    .iter()
    .filter_map(|p| line.find(p).map(|i| i + p.len()))
    .min()
}

/// A port a line declares: a default for `PORT`, or a literal the app listens on.
fn port_in_line(line: &str) -> Option<u16> {
    if let Some(end) = port_env_read(line) {
        return first_port(&line[end..]);
    }
    let lower = line.to_ascii_lowercase();
    // `app.listen(8080)`, `http.ListenAndServe(":8080", ...)`, `TcpListener::bind("0.0.0.0:8080")`,
    // `app.run(port=5000)`, `uvicorn.run(app, port=8001)`, `const PORT = 8080`.
    for call in [".listen(", "listenandserve(", "::bind(", ".bind(", "serve("] {
        if let Some(i) = lower.find(call) {
            if let Some(p) = first_port(&line[i + call.len()..]) {
                return Some(p);
            }
        }
    }
    if let Some(i) = lower.find("port=").or_else(|| lower.find("port =")) {
        let before = &lower[..i];
        let word_start = !before
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let simple = before.contains(".run(")
            || before.trim_start().starts_with("const ")
            || before.trim_start().starts_with("let ")
            || before.trim_start().starts_with("var ")
            || before.trim().is_empty();
        if word_start && simple {
            let rhs = &line[i..];
            let rhs = &rhs[rhs.find('=')? + 1..];
            let value = rhs.split([',', ')', ';']).next().unwrap_or("");
            return parse_port(value.trim());
        }
    }
    None
}

/// The first of `routes` the source declares, and where. Next.js route files come first.
pub fn route(
    tree: &SourceTree,
    stack: Stack,
    routes: &[&str],
) -> anyhow::Result<Option<Declared<String>>> {
    if matches!(stack, Stack::Nextjs) {
        for r in routes {
            if let Some(d) = next_route_file(tree, r)? {
                return Ok(Some(d));
            }
        }
    }
    let files = source_files(tree, stack)?;
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        texts.push(tree.read(f)?);
    }
    for r in routes {
        for (file, text) in files.iter().zip(&texts) {
            for (i, line) in text.lines().enumerate() {
                if is_comment(line) {
                    continue;
                }
                if let Some(path) = route_in_line(line, r, stack) {
                    return Ok(Some(Declared::new(path, file, i + 1, line)));
                }
            }
        }
    }
    Ok(None)
}

/// `app/api/healthz/route.ts`, `pages/api/healthz.ts` or `pages/api/healthz/index.ts`.
fn next_route_file(tree: &SourceTree, route: &str) -> anyhow::Result<Option<Declared<String>>> {
    let mut candidates = Vec::new();
    for dir in ["app", "src/app"] {
        for ext in ["ts", "js", "tsx", "jsx", "mjs"] {
            candidates.push(format!("{dir}{route}/route.{ext}"));
        }
    }
    for dir in ["pages", "src/pages"] {
        for ext in ["ts", "js", "tsx", "jsx"] {
            candidates.push(format!("{dir}{route}.{ext}"));
            candidates.push(format!("{dir}{route}/index.{ext}"));
        }
    }
    for file in candidates {
        if tree.is_file(&file) {
            let text = tree.read(&file)?;
            let (n, line) = text
                .lines()
                .enumerate()
                .find(|(_, l)| l.contains("GET") || l.contains("export default"))
                .unwrap_or((0, ""));
            return Ok(Some(Declared::new(route.to_string(), &file, n + 1, line)));
        }
    }
    Ok(None)
}

/// The path a line declares for `route`: as a quoted literal (with or without a trailing
/// slash), or in Python as Django's `path("healthz", ...)` without the leading slash.
fn route_in_line(line: &str, route: &str, stack: Stack) -> Option<String> {
    for q in ['"', '\'', '`'] {
        for (literal, path) in [
            (format!("{q}{route}{q}"), route.to_string()),
            (format!("{q}{route}/{q}"), format!("{route}/")),
        ] {
            if line.contains(&literal) {
                return Some(path);
            }
        }
    }
    if matches!(stack, Stack::Python) && (line.contains("path(") || line.contains("url(")) {
        let bare = route.trim_start_matches('/');
        // `path("healthz")`, `path('healthz/')`, `re_path(r"^healthz/?$")`.
        for q in ['"', '\'', '^'] {
            let Some(i) = line.find(&format!("{q}{bare}")) else {
                continue;
            };
            let tail = &line[i + 1 + bare.len()..];
            let path = if tail.starts_with("/?$") || tail.starts_with(['"', '\'', '$']) {
                format!("/{bare}")
            } else if tail.starts_with("/\"") || tail.starts_with("/'") || tail.starts_with("/$") {
                format!("/{bare}/")
            } else {
                continue;
            };
            return Some(path);
        }
    }
    None
}

/// Variables the platform or slipway sets, never proposed.
const SET_BY_PLATFORM: &[&str] = &[
    "PORT", "HOST", "HOSTNAME", "NODE_ENV", "HOME", "PATH", "PWD", "USER", "TZ", "LANG", "DEBUG",
    "CI",
];

/// The environment variables the source reads (`process.env.X`, `os.environ["X"]`,
/// `os.environ.get("X")`, `os.getenv("X")`, `os.Getenv("X")`, `env::var("X")`), each once,
/// at its first read.
pub fn env_reads(tree: &SourceTree, stack: Stack) -> anyhow::Result<Vec<Declared<String>>> {
    let mut out: Vec<Declared<String>> = Vec::new();
    for file in source_files(tree, stack)? {
        let text = tree.read(&file)?;
        for (i, line) in text.lines().enumerate() {
            if is_comment(line) {
                continue;
            }
            for name in env_names(line) {
                if !SET_BY_PLATFORM.contains(&name.as_str())
                    && !name.starts_with("npm_")
                    && !out.iter().any(|d| d.value == name)
                {
                    out.push(Declared::new(name, &file, i + 1, line));
                }
            }
        }
    }
    Ok(out)
}

/// The variable names a line reads.
fn env_names(line: &str) -> Vec<String> {
    const READS: &[&str] = &[
        "process.env.",
        "process.env[",
        "environ[",
        "environ.get(",
        "getenv(",
        "Getenv(",
        "LookupEnv(",
        "env::var(",
        "env::var_os(",
    ];
    let mut names = Vec::new();
    for read in READS {
        let mut rest = line;
        while let Some(i) = rest.find(read) {
            rest = &rest[i + read.len()..];
            let quoted = rest.starts_with(['"', '\'', '`']);
            let body = if quoted { &rest[1..] } else { rest };
            let name: String = body
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let closed = !quoted || body[name.len()..].starts_with(['"', '\'', '`']);
            let dotted = *read == "process.env.";
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && closed
                && (quoted || dotted)
            {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_code() {
        let cases = [
            ("app.listen(Number(process.env.PORT ?? 8080));", Some(8080)),
            ("const port = process.env.PORT || 3001;", Some(3001)),
            ("app.listen(8080, () => console.log('up'))", Some(8080)),
            ("const PORT = 4000;", Some(4000)),
            ("port = int(os.environ.get(\"PORT\", \"5000\"))", Some(5000)),
            ("port = int(os.getenv('PORT', 5001))", Some(5001)),
            ("    app.run(host=\"0.0.0.0\", port=5002)", Some(5002)),
            ("uvicorn.run(app, host=\"0.0.0.0\", port=8001)", Some(8001)),
            ("http.ListenAndServe(\":8081\", mux)", Some(8081)),
            (
                "let port = std::env::var(\"PORT\").unwrap_or_else(|_| \"9090\".into());",
                Some(9090),
            ),
            ("let l = TcpListener::bind(\"0.0.0.0:7070\")?;", Some(7070)),
            ("http.ListenAndServe(\":\"+os.Getenv(\"PORT\"), r)", None),
            ("app.listen(process.env.PORT)", None),
            ("const http2 = require('http2');", None),
            ("server.listen(0.0)", None),
            ("timeout = 30", None),
            ("report(port=port)", None),
        ];
        for (line, want) in cases {
            assert_eq!(port_in_line(line), want, "{line}");
        }
    }

    #[test]
    fn environment_reads() {
        assert_eq!(
            env_names("const u = process.env.API_URL ?? process.env['TOKEN'];"),
            ["API_URL", "TOKEN"]
        );
        assert_eq!(
            env_names("x = os.environ[\"A\"] + os.environ.get('B', 'd') + os.getenv(\"C\")"),
            ["A", "B", "C"]
        );
        assert_eq!(
            env_names("v := os.Getenv(\"BACKEND_URL\")"),
            ["BACKEND_URL"]
        );
        assert_eq!(env_names("std::env::var(\"DB\").ok()"), ["DB"]);
        assert!(env_names("os.environ[key]").is_empty());
        assert!(env_names("process.env").is_empty());
    }

    #[test]
    fn routes_in_code() {
        let r = |line: &str, stack| route_in_line(line, "/healthz", stack);
        assert_eq!(
            r(
                "app.get('/healthz', (req, res) => res.send('ok'))",
                Stack::Node
            )
            .as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            r("@app.route(\"/healthz/\")", Stack::Python).as_deref(),
            Some("/healthz/")
        );
        assert_eq!(
            r("    path(\"healthz\", views.healthz),", Stack::Python).as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            r("    path('healthz/', views.healthz),", Stack::Python).as_deref(),
            Some("/healthz/")
        );
        assert_eq!(
            r("    re_path(r'^healthz/?$', views.healthz),", Stack::Python).as_deref(),
            Some("/healthz")
        );
        assert_eq!(r("x = \"healthz\"", Stack::Python), None);
        assert_eq!(r("path(\"healthz\")", Stack::Node), None);
    }
}
