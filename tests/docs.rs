//! `slipway completions SHELL` and `slipway man [COMMAND]` (issue 19, item 5): the shell
//! completes slipway's commands and flags, and `man` renders its pages; and the README quotes
//! the benchmark table of docs/benchmarks.md as `scripts/bench` printed it (issue 14). Needs
//! no daemon.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Every subcommand, as `slipway --help` lists them (`help` aside).
fn commands() -> Vec<String> {
    let help = stdout_of(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section");
    let names: Vec<String> = list
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    for known in ["up", "build", "completions", "man"] {
        assert!(names.iter().any(|n| n == known), "{known} in {names:?}");
    }
    names
}

fn stdout_of(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = common::slipway()
        .current_dir(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_shell_gets_a_script_naming_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for c in commands() {
            assert!(script.contains(&c), "{shell} script lacks {c}");
        }
        assert!(script.contains("allow-missing-secrets"), "{shell}");
    }
}

/// bash accepts the script, and completing with it gives slipway's commands and flags.
#[test]
fn bash_completes_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.bash");
    std::fs::write(&path, stdout_of(&["completions", "bash"])).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let complete = |words: &str| -> String {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             _slipway slipway \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[@]}}\"",
            path.display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(complete("slipway bu").trim(), "build");
    let flags = complete("slipway up --no");
    assert!(
        flags.contains("--no-cache") && flags.contains("--no-pull"),
        "{flags}"
    );
}

#[test]
fn man_pages_render_and_name_every_command() {
    let page = stdout_of(&["man"]);
    assert!(page.contains("\n.TH slipway 1 "), "{page}");
    assert!(page.contains(".SH SYNOPSIS"), "{page}");
    for c in commands() {
        assert!(
            page.contains(&format!("slipway\\-{c}(1)")),
            "slipway(1) lacks {c}"
        );
        let sub = stdout_of(&["man", &c]);
        assert!(
            sub.contains(&format!(".TH slipway-{c} 1 ")),
            "slipway-{c}(1): {sub}"
        );
    }
    // The page of `up` documents its flags.
    assert!(stdout_of(&["man", "up"]).contains("\\-\\-no\\-cache"));

    // A man on the machine renders it (the page is valid roff, not only text).
    if Command::new("man").arg("--version").output().is_ok() {
        let mut man = Command::new("man")
            .args(["-l", "-"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        man.stdin
            .take()
            .unwrap()
            .write_all(page.as_bytes())
            .unwrap();
        let out = man.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("SYNOPSIS") && text.contains("--progress"),
            "{text}"
        );
        assert!(!text.contains(".TH"), "unrendered roff: {text}");
    }
}

#[test]
fn a_man_page_for_no_such_command_is_a_usage_error() {
    let out = common::slipway().args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no command `nope`") && err.contains("hint: one of: up,"),
        "{err}"
    );
}

/// The parts of JSON Schema docs/slipway.schema.json uses: type, properties,
/// additionalProperties, required, items, enum, minimum, maximum, oneOf. The errors, as
/// `path: what`.
fn check(schema: &serde_json::Value, v: &serde_json::Value, path: &str, errs: &mut Vec<String>) {
    use serde_json::Value;
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts.iter().filter(|s| {
            let mut e = Vec::new();
            check(s, v, path, &mut e);
            e.is_empty()
        });
        if ok.count() != 1 {
            errs.push(format!("{path}: not exactly one of oneOf"));
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            errs.push(format!("{path}: {v} not in {values:?}"));
        }
    }
    let ty = schema["type"].as_str();
    let matches = match (ty, v) {
        (None, _) => true,
        (Some("object"), Value::Object(_)) | (Some("array"), Value::Array(_)) => true,
        (Some("string"), Value::String(_)) | (Some("boolean"), Value::Bool(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64(),
        _ => false,
    };
    if !matches {
        errs.push(format!("{path}: {v} is not {ty:?}"));
        return;
    }
    if let Some(n) = v.as_i64() {
        if schema["minimum"].as_i64().is_some_and(|m| n < m)
            || schema["maximum"].as_i64().is_some_and(|m| n > m)
        {
            errs.push(format!("{path}: {n} out of range"));
        }
    }
    if let Value::Array(items) = v {
        for (i, item) in items.iter().enumerate() {
            check(&schema["items"], item, &format!("{path}[{i}]"), errs);
        }
    }
    if let Value::Object(map) = v {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{path}: {r} missing"));
            }
        }
        for (k, value) in map {
            let sub = format!("{path}.{k}");
            match (&schema["properties"][k], &schema["additionalProperties"]) {
                (Value::Null, Value::Bool(false)) => errs.push(format!("{sub}: not allowed")),
                (Value::Null, Value::Null | Value::Bool(true)) => {}
                (Value::Null, extra) => check(extra, value, &sub, errs),
                (prop, _) => check(prop, value, &sub, errs),
            }
        }
    }
}

#[test]
fn the_schema_is_valid_json_and_the_bundled_slipway_toml_follows_it() {
    let printed = stdout_of(&["schema"]);
    let schema: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(schema["title"], "slipway.toml");
    let file = std::fs::read_to_string(common::repo().join("docs/slipway.schema.json")).unwrap();
    assert_eq!(
        printed, file,
        "slipway schema prints docs/slipway.schema.json"
    );

    let toml_of = |text: &str| -> serde_json::Value {
        serde_json::to_value(text.parse::<toml::Table>().unwrap()).unwrap()
    };
    let bundled = std::fs::read_to_string(common::repo().join("slipway.toml")).unwrap();
    let mut errs = Vec::new();
    check(&schema, &toml_of(&bundled), "", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");

    // What slipway refuses, the schema refuses: a misspelt key, a port out of range, a
    // component without a context.
    let bad = toml_of(
        "[app]\nname = \"x\"\n[components.a]\ncontext = \"a\"\nport = 70000\nhelth = \"/\"\n\
         [components.b]\nport = 80\n",
    );
    let mut errs = Vec::new();
    check(&schema, &bad, "", &mut errs);
    assert_eq!(
        errs,
        [
            ".components.a.helth: not allowed",
            ".components.a.port: 70000 out of range",
            ".components.b: \"context\" missing"
        ],
        "{errs:?}"
    );
}

/// A slipway.toml with every key the schema knows.
const EVERY_KEY: &str = r#"cluster = { target = "none", registry = "localhost:5001" }
[app]
name = "x"
version = "1"
namespace = "ns"
[images]
prefix = "p"
tags = ["latest"]
registry = false
[base_images]
python = "python:3.11"
[components.a]
context = "a"
dockerfile = "a/Dockerfile"
stack = "python"
port = 80
health = "/h"
readiness = "/r"
build_args = { A = "1" }
build_secrets = ["S"]
target = "production"
config = { C = "v" }
secrets = ["T"]
service = { type = "NodePort", port = 81, node_port = 30001 }
replicas = 2
resources = { requests = { cpu = "1", memory = "1Mi" }, limits = { cpu = "1", memory = "1Mi" } }
autoscaling = { enabled = true, min = 1, max = 2, target_cpu = 50 }
user = 1000
writable = ["/tmp"]
[components.a.ingress]
enabled = true
class_name = "nginx"
annotations = { a = "b" }
path_type = "Prefix"
hosts = [{ host = "x.example", paths = ["/"] }]
tls = [{ secret_name = "s", hosts = ["x.example"] }]
"#;

/// Every key of the schema is one slipway reads (it refuses unknown keys), and such a file
/// follows the schema.
#[test]
fn slipway_reads_every_key_of_the_schema() {
    let schema: serde_json::Value = serde_json::from_str(&stdout_of(&["schema"])).unwrap();
    let value = serde_json::to_value(EVERY_KEY.parse::<toml::Table>().unwrap()).unwrap();
    let mut errs = Vec::new();
    check(&schema, &value, "", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    let count = |s: &serde_json::Value| s["properties"].as_object().map_or(0, |p| p.len());
    let component = &schema["properties"]["components"]["additionalProperties"];
    let every = &value["components"]["a"];
    assert_eq!(
        every.as_object().unwrap().len(),
        count(component),
        "{every}"
    );
    assert_eq!(value.as_object().unwrap().len(), count(&schema));

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/Dockerfile"), "FROM busybox\n").unwrap();
    std::fs::write(dir.path().join("slipway.toml"), EVERY_KEY).unwrap();
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["chart", "--image", "a=example/a:1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The last run of `scripts/bench` as the README quotes it: its `== results` line and the
/// table under it, up to the first blank line after the table.
fn results_block(file: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let start = text
        .find("```\n== results")
        .unwrap_or_else(|| panic!("{file} shows no `== results` block of scripts/bench"));
    let table = start
        + text[start..]
            .find("\n| case |")
            .unwrap_or_else(|| panic!("{file}: no table after the `== results` block"));
    let end = table
        + 1
        + text[table + 1..]
            .find("\n\n")
            .unwrap_or(text.len() - table - 1);
    text[start..end].to_string()
}

/// Issue 14: the README quotes the benchmark table of docs/benchmarks.md verbatim (one run,
/// with its machine, date and commit), every case is in it, and each row has its six cells (a
/// `|` inside a cell's code is escaped, or Markdown splits the cell).
#[test]
fn the_readme_quotes_the_benchmark_table_verbatim() {
    let readme = results_block("README.md");
    assert_eq!(readme, results_block("docs/benchmarks.md"));
    let header = readme.lines().nth(1).unwrap();
    for part in ["commit ", "cores", "Docker ", "kind "] {
        assert!(header.contains(part), "no {part:?} in {header}");
    }
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| (")).collect();
    for case in ["(a)", "(b)", "(c)", "(d)", "(e)", "(f) warm", "(f) cold"] {
        assert!(
            rows.iter().any(|r| r.starts_with(&format!("| {case}"))),
            "no row for {case} in\n{readme}"
        );
    }
    for row in rows {
        let cells = row.replace("\\|", "").matches('|').count() - 1;
        assert_eq!(cells, 6, "{row}");
    }
}
