//! Hostile build contexts through `slipway build` on the real daemon: each is handled as
//! Docker handles it, or rejected with an error that names the path; never a panic, a crash
//! or a hang (every run has a deadline and is killed, failing the test, when it passes it).
//!
//! | case                              | what slipway does (and Docker does)                  |
//! |-----------------------------------|------------------------------------------------------|
//! | symlink out of the context, loops | stored as symlinks with their targets, never followed |
//! | non-UTF-8 names                   | sent byte for byte                                    |
//! | 10,000-level deep directory       | error naming the path once it passes PATH_MAX         |
//! | FIFO, socket                      | skipped, with a warning naming each path              |
//! | unreadable file or directory      | error naming it (left out silently when ignored)      |
//! | sparse 8 GiB file, ignored        | never opened: the build takes as long as without it   |
//! | sparse file, included             | streamed: memory stays flat (see `sparse_*` below)    |
//! | ignore pattern Docker rejects     | usage error naming the file and the line              |

mod common;
mod rely;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rely::{docker, Project};

/// A Dockerfile that sends the whole context into the image.
const COPY_ALL: &str = "FROM slipway-test/busybox:1.35 AS production\nCOPY . /ctx\n";

/// Deadline for one slipway run here (they take a few seconds).
const LIMIT: Duration = Duration::from_secs(120);

/// Runs a command in `image` on the default daemon; returns its stdout bytes.
fn in_image(image: &str, script: &str) -> Vec<u8> {
    let out = docker(
        None,
        &["run", "--rm", "--network=none", image, "sh", "-c", script],
    );
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The whole image as `docker save` writes it (layers are uncompressed tars).
fn saved(image: &str) -> Vec<u8> {
    let out = docker(None, &["save", image]);
    assert!(out.status.success(), "docker save {image}");
    out.stdout
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Paths under /ctx in the image, as raw bytes, sorted.
fn ctx_listing(image: &str) -> Vec<Vec<u8>> {
    let out = in_image(image, "cd /ctx && find . -mindepth 1 -print0");
    let mut names: Vec<Vec<u8>> = out
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| n.strip_prefix(b"./").unwrap_or(n).to_vec())
        .collect();
    names.sort();
    names
}

async fn ready() -> bool {
    if common::daemon().await.is_none() {
        return false;
    }
    rely::require_busybox();
    true
}

#[tokio::test]
async fn symlinks_out_of_the_context_and_loops_are_stored_as_symlinks_never_followed() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    let marker = common::unique("outside-marker");
    p.write("outside/secret.txt", &marker);
    let links: [(&str, String); 8] = [
        ("rel_out", "../outside/secret.txt".into()),
        (
            "abs_out",
            p.path("outside/secret.txt").to_string_lossy().into_owned(),
        ),
        ("dir_out", "../outside".into()),
        ("root", "/".into()),
        ("loop_a", "loop_b".into()),
        ("loop_b", "loop_a".into()),
        ("self", "self".into()),
        ("dot", ".".into()),
    ];
    for (name, target) in &links {
        symlink(target, p.path("app").join(name)).unwrap();
    }

    p.run(&["build"], LIMIT).ok();
    let image = p.last_image("app").expect("no image recorded");
    let mut script = String::new();
    for (name, _) in &links {
        script.push_str(&format!(
            "[ -L /ctx/{name} ] && printf '%s -> %s\\n' {name} \"$(readlink /ctx/{name})\"; "
        ));
    }
    let shown = String::from_utf8(in_image(&image, &script)).unwrap();
    let expected: String = links.iter().map(|(n, t)| format!("{n} -> {t}\n")).collect();
    assert_eq!(
        shown, expected,
        "every link is a link, its target unchanged"
    );
    assert!(
        !contains(&saved(&image), marker.as_bytes()),
        "the file outside the context reached the image"
    );
}

#[tokio::test]
async fn names_that_are_not_utf8_reach_the_image_byte_for_byte() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    let app = p.path("app");
    let names: [&[u8]; 4] = [b"caf\xe9.txt", b"\xff\xfe-dir", b"new\nline", b"tab\there"];
    for n in names {
        std::fs::write(app.join(std::ffi::OsStr::from_bytes(n)), n).unwrap();
    }
    std::fs::remove_file(app.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-dir"))).unwrap();
    let dir = app.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-dir"));
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(std::ffi::OsStr::from_bytes(b"inner\xe9")), "x").unwrap();

    p.run(&["build"], LIMIT).ok();
    let image = p.last_image("app").unwrap();
    let mut expected: Vec<Vec<u8>> = vec![
        b"Dockerfile".to_vec(),
        b"caf\xe9.txt".to_vec(),
        b"\xff\xfe-dir".to_vec(),
        b"\xff\xfe-dir/inner\xe9".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
    ];
    expected.sort();
    assert_eq!(ctx_listing(&image), expected);
    assert_eq!(in_image(&image, "cat /ctx/caf*.txt"), b"caf\xe9.txt");
}

/// Makes `levels` nested directories `d/d/d/...` under `dir`, with paths relative to an open
/// directory so that no path ever passes PATH_MAX.
fn nest(dir: &Path, levels: usize) {
    use std::ffi::CString;
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let name = CString::new("d").unwrap();
    // SAFETY: plain syscalls on descriptors this function opens and closes.
    unsafe {
        let mut fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(fd >= 0);
        for _ in 0..levels {
            assert_eq!(libc::mkdirat(fd, name.as_ptr(), 0o755), 0);
            let next = libc::openat(fd, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
        }
        libc::close(fd);
    }
}

/// Removes a tree too deep for recursive removal with paths (GNU rm walks it with fds).
fn remove_deep(dir: &Path) {
    let st = Command::new("rm").arg("-rf").arg(dir).status().unwrap();
    assert!(st.success());
}

#[tokio::test]
async fn a_10000_level_directory_is_an_error_naming_the_path_not_a_crash() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    // 1,000 levels (a 2,000-byte path) is deep but legal: Docker sends it, so does slipway.
    nest(&p.path("app"), 1000);
    let run = p.run(&["build"], LIMIT).ok();
    let image = p.last_image("app").unwrap();
    let deepest = in_image(
        &image,
        "cd /ctx && find . -type d | awk '{ print length }' | sort -n | tail -1",
    );
    assert_eq!(
        String::from_utf8_lossy(&deepest).trim(),
        "2001",
        "{}",
        run.text()
    );
    remove_deep(&p.path("app/d"));

    // 10,000 levels: a path passes PATH_MAX (4,096 bytes) about 2,000 levels down, where
    // Docker's walk fails too ("file name too long"). slipway must get there without running
    // out of stack, and say where it stopped.
    nest(&p.path("app"), 10_000);
    let run = p.run(&["build"], LIMIT).no_panic();
    remove_deep(&p.path("app/d"));
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(run.stderr.contains("File name too long"), "{}", run.text());
    assert!(run.stderr.contains("/app/d/d/d/d/d/d/d"), "{}", run.text());
    assert!(run.stderr.contains("component `app`"), "{}", run.text());
}

#[tokio::test]
async fn fifos_and_sockets_are_skipped_with_a_warning_naming_each_path() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    p.write("app/sub/keep.txt", "kept");
    let fifo = std::ffi::CString::new(p.path("app/sub/pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(p.path("app/sock")).unwrap();

    // A FIFO that was opened would block the walk forever: the deadline catches that.
    let run = p.run(&["build"], LIMIT).ok();
    for (kind, path) in [("FIFO", "sub/pipe"), ("socket", "sock")] {
        assert!(
            run.stderr.lines().any(|l| l.starts_with("warning: app: ")
                && l.contains(&format!("skipped {kind} {path}"))),
            "no warning for the {kind}: {}",
            run.text()
        );
    }
    let image = p.last_image("app").unwrap();
    assert_eq!(
        ctx_listing(&image),
        [
            b"Dockerfile".to_vec(),
            b"sub".to_vec(),
            b"sub/keep.txt".to_vec()
        ]
    );
}

/// `unshare --user --map-root-user`, where root is root only over files whose owner is mapped:
/// the one way for a test running as root to meet a file it cannot read.
fn unshare_works() -> bool {
    let ok = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if common::in_ci() {
            panic!("CI=true and `unshare --user --map-root-user` does not work (util-linux, user namespaces)");
        }
        eprintln!("SKIPPED: `unshare --user --map-root-user` does not work here");
    }
    ok
}

/// Gives `path` to an owner outside the user namespace, with no permissions.
fn unreadable(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: chown/chmod on a path we own.
    unsafe {
        assert_eq!(libc::chown(c.as_ptr(), 12345, 12345), 0);
        assert_eq!(libc::chmod(c.as_ptr(), 0), 0);
    }
}

#[tokio::test]
async fn unreadable_files_and_directories_are_errors_naming_them() {
    if !ready().await || !unshare_works() {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    let build = |p: &Project| {
        let mut cmd = Command::new("unshare");
        cmd.args(["--user", "--map-root-user", env!("CARGO_BIN_EXE_slipway")])
            .args(["build", "--progress=plain"])
            .current_dir(p.dir.path())
            .env_remove("CI");
        rely::run(cmd, LIMIT).no_panic()
    };

    p.write("app/secret.key", "k");
    unreadable(&p.path("app/secret.key"));
    let run = build(&p);
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("cannot read") && run.stderr.contains("app/secret.key"),
        "{}",
        run.text()
    );
    assert!(run.stderr.contains("Permission denied"), "{}", run.text());

    p.write("app/private/inner.txt", "i");
    unreadable(&p.path("app/private"));
    p.write("app/.dockerignore", "secret.key\n");
    let run = build(&p);
    assert_eq!(run.code(), Some(1), "{}", run.text());
    assert!(
        run.stderr.contains("cannot read directory") && run.stderr.contains("app/private"),
        "{}",
        run.text()
    );

    // Ignored, they are never opened (BuildKit leaves an unreadable ignored directory out).
    p.write("app/.dockerignore", "secret.key\nprivate\n");
    build(&p).ok();
}

#[tokio::test]
async fn a_sparse_8_gib_file_that_is_ignored_is_never_read() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    p.write("app/small.txt", "small");
    p.write("app/.dockerignore", "big.bin\n");
    let f = std::fs::File::create(p.path("app/big.bin")).unwrap();
    f.set_len(8 << 30).unwrap();
    drop(f);

    let run = p.run(&["build"], LIMIT).ok();
    // Reading 8 GiB takes tens of seconds here; a build that never opens it, about one.
    assert!(run.took < Duration::from_secs(30), "{}", run.text());
    assert!(
        run.max_rss_kib < 64 * 1024,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
    let plan = p.run(&["plan", "--json"], LIMIT).ok();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let bytes = plan["components"][0]["context_bytes"].as_u64().unwrap();
    assert!(bytes < 64 * 1024, "context of {bytes} bytes");
    let image = p.last_image("app").unwrap();
    assert_eq!(
        ctx_listing(&image),
        [
            b".dockerignore".to_vec(),
            b"Dockerfile".to_vec(),
            b"small.txt".to_vec()
        ]
    );
}

#[tokio::test]
async fn a_sparse_file_that_is_included_is_streamed_in_flat_memory_with_a_warning() {
    if !ready().await {
        return;
    }
    // Included, a big file is hashed (plan) and sent (build) as Docker sends it, a chunk at a
    // time, with a warning past 1 GiB. Just past that keeps this test to seconds; memory must
    // not grow with the file. (8 GiB: 21 s and 25 MB peak RSS for `slipway plan` here.)
    let p = Project::new(&[("app", COPY_ALL)]);
    let f = std::fs::File::create(p.path("app/big.bin")).unwrap();
    f.set_len((1 << 30) + (1 << 20)).unwrap();
    drop(f);
    let run = p.run(&["plan", "--json"], LIMIT).ok();
    assert!(
        run.max_rss_kib < 64 * 1024,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
    let plan: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let bytes = plan["components"][0]["context_bytes"].as_u64().unwrap();
    assert!(bytes > 1 << 30, "context of {bytes} bytes");
    let warnings = plan["components"][0]["warnings"].to_string();
    assert!(warnings.contains("its context app is 1.1 GB"), "{warnings}");
}

#[tokio::test]
async fn ignore_patterns_docker_rejects_are_errors_naming_the_file_and_line() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    let long = "x".repeat(70_000);
    let cases: [(&str, &str); 3] = [
        ("node_modules\n[z-a]\n", ".dockerignore:2"),
        ("# comment\n\n*.log\nsrc/[\n", ".dockerignore:4"),
        // Go's bufio.Scanner gives up on a line of 64 KiB or more, and so does Docker.
        (&format!("ok\n{long}\n"), ".dockerignore:2"),
    ];
    for (ignore, place) in cases {
        p.write("app/.dockerignore", ignore);
        let run = p.run(&["build"], LIMIT).no_panic();
        assert_eq!(run.code(), Some(2), "{ignore:.40}: {}", run.text());
        assert!(run.stderr.contains(place), "{ignore:.40}: {}", run.text());
        assert!(run.stderr.contains("hint:"), "{}", run.text());
    }
    assert!(
        p.tags().is_empty(),
        "a rejected ignore file built something"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile configuration: the fuzz targets' entry points, with random inputs, on stable Rust.
// (fuzz/ holds the cargo-fuzz targets for nightly; see fuzz/README.md.)
// ---------------------------------------------------------------------------------------------

#[path = "../fuzz/src/exercise.rs"]
mod exercise;

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Pieces that mean something to TOML, templates, ignore patterns or .env files.
const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"=",
    b"\"",
    b"'",
    b"\"\"\"",
    b"'''",
    b"{",
    b"}",
    b",",
    b"\n",
    b"\r\n",
    b"#",
    b"\\",
    b"\\u0000",
    b"\\U0010FFFF",
    b"-1",
    b"0",
    b"65536",
    b"4294967296",
    b"99999999999999999999",
    b"1e308",
    b"nan",
    b"true",
    b"${",
    b"${web.url}",
    b"${api.host}",
    b"${nope.port}",
    b"${api.",
    b"$$",
    b"$",
    b"[components.x]",
    b"[app]",
    b"name = \"\"",
    b"port = 0",
    b"context = \"../..\"",
    b"context = \"/\"",
    b"context = \"/etc\"",
    b"context = \"../../../../etc\"",
    b"dockerfile = \"/etc/passwd\"",
    b"dockerfile = \"../../../../etc/shadow\"",
    b"service = { type = \"NodePort\" }",
    b"node_port = 1",
    b"replicas = -5",
    b"user = 0",
    b"cpu = \"0.0001m\"",
    b"memory = \"1Ei\"",
    b"*",
    b"**",
    b"?",
    b"!",
    b"/",
    b"./",
    b"../",
    b"[^",
    b"[!",
    b"[a-",
    b"\\*",
    b"**/",
    b"export ",
    b"=\"",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\0",
    b"\t",
    b" ",
];

/// A seed changed in 1 to 8 random ways (flips, deletions, duplications, tokens, splices).
fn mutate(rng: &mut Rng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            3 => {
                let other = &others[rng.below(others.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(128)).min(other.len());
                    v.splice(at..at, other[start..end].iter().copied());
                }
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
        }
    }
    v
}

fn seeds(kind: &str) -> Vec<Vec<u8>> {
    let dir = common::repo().join("fuzz/seeds").join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty());
    seeds
}

#[test]
fn the_seeds_reach_deep_code() {
    // A seed that does not parse only ever tests the parser's error path.
    for name in ["reference.toml", "everything.toml", "two.toml"] {
        let text =
            std::fs::read_to_string(common::repo().join("fuzz/seeds/config").join(name)).unwrap();
        if let Err(e) = slipway::config::parse(&text, Path::new("/fuzz/slipway.toml")) {
            panic!("fuzz/seeds/config/{name} does not parse: {e}");
        }
    }
    let tricky = std::fs::read(common::repo().join("fuzz/seeds/ignore/tricky")).unwrap();
    let end = tricky.iter().position(|&b| b == 0).unwrap();
    assert!(
        slipway::context::ignore::Matcher::parse(std::str::from_utf8(&tricky[..end]).unwrap())
            .is_ok()
    );
}

#[test]
fn hostile_configuration_never_panics() {
    // SLIPWAY_FUZZ_ITERS / SLIPWAY_FUZZ_SEED run it longer or elsewhere; the default is a
    // few seconds of CI time.
    let iters: usize = std::env::var("SLIPWAY_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("SLIPWAY_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_51ab);
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 3] = [
        ("config", exercise::config),
        ("ignore", exercise::ignore),
        ("env", exercise::env_file),
    ];
    for (kind, run) in targets {
        let seeds = seeds(kind);
        let mut rng = Rng(seed ^ kind.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        for i in 0..iters {
            let base = &seeds[i % seeds.len()];
            let input = mutate(&mut rng, base, &seeds);
            if std::panic::catch_unwind(|| run(&input)).is_err() {
                let out = std::env::temp_dir().join(format!("slipway-fuzz-{kind}-{i}"));
                let _ = std::fs::write(&out, &input);
                panic!(
                    "{kind}: input {i} (seed {seed}) panicked; saved to {} \
                     (reproduce: cargo +nightly fuzz run {} {})",
                    out.display(),
                    if kind == "env" { "env_file" } else { kind },
                    out.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Paths outside the project: a hostile slipway.toml must not send the host's files anywhere.
// ---------------------------------------------------------------------------------------------

/// The `line:col` of the first occurrence of `needle` in `text` (1-based).
fn place_of(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}")
}

#[tokio::test]
async fn contexts_and_dockerfiles_outside_the_project_are_refused_with_their_place() {
    if !ready().await {
        return;
    }
    let p = Project::new(&[("app", COPY_ALL)]);
    let toml = std::fs::read_to_string(p.path("slipway.toml")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let marker = common::unique("host-file-marker");
    std::fs::write(
        outside.path().join("secret.txt"),
        format!("root:{marker}\n"),
    )
    .unwrap();
    std::fs::write(
        outside.path().join("Dockerfile"),
        "FROM slipway-test/busybox:1.35 AS production\nCOPY . /ctx\n",
    )
    .unwrap();
    symlink(outside.path(), p.path("app/link-out")).unwrap();
    symlink(outside.path(), p.path("link-out")).unwrap();
    let up = "../".repeat(12);
    let cases: Vec<(String, &str)> = vec![
        ("context = \"/etc\"".into(), "context"),
        (format!("context = \"{up}etc\""), "context"),
        ("context = \"link-out\"".into(), "context"),
        ("context = \"app/link-out\"".into(), "context"),
        (
            format!(
                "context = \"app\"\ndockerfile = \"{}\"",
                outside.path().join("secret.txt").display()
            ),
            "dockerfile",
        ),
        (
            "context = \"app\"\ndockerfile = \"/etc/passwd\"".into(),
            "dockerfile",
        ),
        (
            "context = \"app\"\ndockerfile = \"link-out/Dockerfile\"".into(),
            "dockerfile",
        ),
    ];
    for (line, what) in &cases {
        let text = toml.replace("context = \"app\"\ndockerfile = \"app/Dockerfile\"", line);
        assert_ne!(text, toml);
        std::fs::write(p.path("slipway.toml"), &text).unwrap();
        let key = if *what == "context" {
            "context = "
        } else {
            "dockerfile = "
        };
        let place = format!("slipway.toml:{}", place_of(&text, key));
        for args in [&["build"][..], &["plan"], &["up", "--cluster", "none"]] {
            let mut cmd = p.slipway(args);
            cmd.env("CI", "true");
            let run = rely::run(cmd, LIMIT).no_panic();
            assert_eq!(run.code(), Some(2), "{line} {args:?}: {}", run.text());
            assert!(run.stderr.contains(&place), "{line}: {}", run.text());
            assert!(
                run.stderr.contains("outside the project root")
                    && run.stderr.contains("--allow-outside-root"),
                "{line}: {}",
                run.text()
            );
            assert!(!run.stderr.contains("root:"), "{line}: {}", run.text());
            assert!(!run.stderr.contains(&marker), "{line}: {}", run.text());
        }
    }
    assert!(p.tags().is_empty(), "something was built: {:?}", p.tags());

    // Inside the project, a file that is not a Dockerfile is refused without a word of it.
    p.write("app/notes.txt", format!("root:{marker}:0:0\n"));
    let text = toml.replace(
        "dockerfile = \"app/Dockerfile\"",
        "dockerfile = \"app/notes.txt\"",
    );
    std::fs::write(p.path("slipway.toml"), &text).unwrap();
    let run = p.run(&["build"], LIMIT).no_panic();
    assert_eq!(run.code(), Some(2), "{}", run.text());
    assert!(run.stderr.contains("is not a Dockerfile"), "{}", run.text());
    assert!(!run.stderr.contains(&marker), "{}", run.text());
    assert!(p.tags().is_empty());

    // Asked for in so many words, a context outside is built.
    let text = toml.replace(
        "context = \"app\"\ndockerfile = \"app/Dockerfile\"",
        "context = \"link-out\"\ndockerfile = \"link-out/Dockerfile\"",
    );
    std::fs::write(p.path("slipway.toml"), &text).unwrap();
    p.run(&["build", "--allow-outside-root"], LIMIT).ok();
    let image = p.last_image("app").unwrap();
    assert_eq!(
        String::from_utf8(in_image(&image, "cat /ctx/secret.txt")).unwrap(),
        format!("root:{marker}\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Names from outside never forge output; configs that are not text files are named as such.
// ---------------------------------------------------------------------------------------------

/// No line of `text` is forged by `name`: no escape character, no line starting with `forged`.
fn assert_not_forged(text: &str, forged: &str, context: &str) {
    assert!(!text.contains('\u{1b}'), "raw ESC in {context}:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with(forged)),
        "a forged line in {context}:\n{text}"
    );
}

#[tokio::test]
async fn control_characters_in_names_and_paths_are_escaped_in_plain_output_and_errors() {
    if !ready().await {
        return;
    }
    let evil = "ev\u{1b}[31mil\nerror: fake line";
    let p = Project::new(&[("app", COPY_ALL)]);
    // A FIFO is named in a warning.
    let fifo = std::ffi::CString::new(p.path("app").join(evil).as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let run = p.run(&["build"], LIMIT).ok();
    assert!(
        run.stderr
            .contains("skipped FIFO ev\\u{1b}[31mil\\nerror: fake line"),
        "{}",
        run.text()
    );
    assert_not_forged(&run.stderr, "error: fake", "plain output");
    // On a terminal (util-linux `script` gives it one), the same.
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c"])
        .arg(format!(
            "{} build --progress=tty --no-cache",
            env!("CARGO_BIN_EXE_slipway")
        ))
        .arg("/dev/null")
        .current_dir(p.dir.path())
        .env_remove("CI");
    let run = rely::run(cmd, LIMIT).ok();
    let shown = run.stdout();
    assert!(shown.contains("skipped FIFO ev\\u{1b}[31mil"), "{shown}");
    // indicatif draws with escape sequences of its own: look at the name only.
    assert!(!shown.contains("ev\u{1b}[31mil"), "{shown}");
    assert!(
        !shown
            .lines()
            .any(|l| l.trim_start_matches('\r').starts_with("error: fake")),
        "{shown}"
    );
    // A context of that name (TOML escapes) is named in an error.
    let toml = std::fs::read_to_string(p.path("slipway.toml")).unwrap();
    std::fs::write(
        p.path("slipway.toml"),
        toml.replace(
            "context = \"app\"",
            "context = \"app/ev\\u001b[31mil\\nerror: fake line/x\"",
        ),
    )
    .unwrap();
    let run = p.run(&["build"], LIMIT).no_panic();
    assert_eq!(run.code(), Some(2), "{}", run.text());
    assert!(run.stderr.starts_with("error: "), "{}", run.text());
    assert_not_forged(&run.stderr, "error: fake", "an error");
}

#[test]
fn a_config_that_is_a_device_a_fifo_or_binary_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    for (path, says) in [
        (Path::new("/dev/zero"), "is not a regular file"),
        (fifo.as_path(), "is not a regular file"),
        (dir.path(), "is a directory"),
        (&dir.path().join("missing.toml"), "does not exist"),
    ] {
        let mut cmd = common::slipway();
        cmd.args(["plan", "--progress=plain", "--config"])
            .arg(path)
            .current_dir(dir.path());
        let run = rely::run(cmd, Duration::from_secs(20)).no_panic();
        assert_eq!(run.code(), Some(2), "{}", run.text());
        assert!(
            run.stderr.contains(says),
            "{}: {}",
            path.display(),
            run.text()
        );
    }
    let binary = dir.path().join("slipway.toml");
    std::fs::write(&binary, b"[app]\nname = \"a\"\n\x7fELF\xff\xfe\x00\x01").unwrap();
    let mut cmd = common::slipway();
    cmd.args(["plan", "--progress=plain"])
        .current_dir(dir.path());
    let run = rely::run(cmd, Duration::from_secs(20)).no_panic();
    assert_eq!(run.code(), Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("slipway.toml:3:5: not UTF-8"),
        "{}",
        run.text()
    );
}
