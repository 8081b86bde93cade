//! `slipway completions SHELL` and `slipway man [COMMAND]` (issue 19, item 5): the shell
//! completes slipway's commands and flags, and `man` renders its pages. Needs no daemon.

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
