//! Benchmark of context packing (a benchmark, not a test; `scripts/bench` runs it):
//!
//! 1. hashing a 1 GiB context with `slipway::context::digest` vs `tar -c | sha256sum` on the
//!    same files (target: at least 0.8x the speed of the pipeline);
//! 2. what a 50,000-file `node_modules` that the `.dockerignore` excludes adds to the digest
//!    of a small app (target: under 50 ms — the directory is pruned, never listed);
//! 3. peak memory (VmHWM) of a process that packs the 1 GiB context, both into a hashing sink
//!    and through `pack_stream` (target: under 64 MiB).
//!
//! Data is generated under the temp dir (`$TMPDIR`, default /tmp) and deleted afterwards.
//! Timings are taken with a hot page cache (each tree is read once first), median of `--runs`.
//!
//! Usage: cargo run --release --example bench_context [-- --size-mib N --runs N --keep]
//! Exit status 1 when a target is missed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use slipway::context::{self, ContextSpec};

struct Args {
    size_mib: u64,
    runs: usize,
    keep: bool,
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    // Child mode: pack one context and report time and peak memory.
    if argv.get(1).map(String::as_str) == Some("--child") {
        child(&argv[2], Path::new(&argv[3]));
        return;
    }
    let mut args = Args {
        size_mib: 1024,
        runs: 3,
        keep: false,
    };
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-mib" => args.size_mib = it.next().and_then(|v| v.parse().ok()).unwrap_or(1024),
            "--runs" => args.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(3),
            "--keep" => args.keep = true,
            other => {
                eprintln!("unknown argument {other}; usage: bench_context [--size-mib N] [--runs N] [--keep]");
                std::process::exit(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; run with --release for meaningful numbers");
    }
    let work = Scratch(
        std::env::temp_dir().join(format!("slipway-bench-context-{}", std::process::id())),
        args.keep,
    );
    fs::create_dir_all(&work.0).expect("creating the scratch directory");
    let ok = run(&args, &work.0);
    if args.keep {
        eprintln!("data kept in {}", work.0.display());
    }
    drop(work);
    std::process::exit(if ok { 0 } else { 1 });
}

/// Deletes the generated data, also on panic.
struct Scratch(PathBuf, bool);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.1 {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn spec(dir: &Path) -> ContextSpec {
    ContextSpec {
        dir: dir.to_path_buf(),
        dockerfile: dir.join("Dockerfile"),
        source_date_epoch: Some(0),
        ..Default::default()
    }
}

fn run(args: &Args, work: &Path) -> bool {
    let mut rows: Vec<Row> = Vec::new();
    let mut ok = true;

    // 1. Hashing a large context.
    let big = work.join("big");
    eprint!("generating {} MiB context... ", args.size_mib);
    let (files, bytes) = generate_big(&big, args.size_mib << 20);
    eprintln!("{files} files");
    // Warm the page cache (and check both sides run).
    let _ = context::digest(&spec(&big)).expect("digest");
    tar_sha256(&big);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..args.runs {
        ours.push(time(|| {
            context::digest(&spec(&big)).expect("digest");
        }));
        theirs.push(time(|| tar_sha256(&big)));
    }
    // The ratio pair by pair (a drift of the machine's speed hits both sides of a pair).
    let mut pairs: Vec<f64> = ours
        .iter()
        .zip(&theirs)
        .map(|(o, t)| o.as_secs_f64() / t.as_secs_f64())
        .collect();
    pairs.sort_by(f64::total_cmp);
    let pair_ratio = pairs[pairs.len() / 2];
    let (ours, theirs) = (median(ours), median(theirs));
    let gbs = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    let ratio = 1.0 / pair_ratio;
    rows.push(Row::info(
        format!("hash {}: slipway digest", human(bytes)),
        format!("{:.2} s  ({:.2} GB/s)", ours.as_secs_f64(), gbs(ours)),
    ));
    rows.push(Row::info(
        format!("hash {}: tar -c | sha256sum", human(bytes)),
        format!("{:.2} s  ({:.2} GB/s)", theirs.as_secs_f64(), gbs(theirs)),
    ));
    ok &= rows_push(
        &mut rows,
        "  speed vs tar | sha256sum",
        format!("{ratio:.2}x"),
        ">= 0.80x",
        ratio >= 0.8,
    );

    // 3. Peak memory while packing it (in a fresh process each).
    for mode in ["digest", "stream"] {
        let (elapsed, hwm_kib) = run_child(mode, &big);
        let mib = hwm_kib as f64 / 1024.0;
        ok &= rows_push(
            &mut rows,
            &format!(
                "peak RSS, {} of {}",
                if mode == "digest" {
                    "digest"
                } else {
                    "pack_stream"
                },
                human(bytes)
            ),
            format!("{mib:.1} MiB  ({:.2} s)", elapsed.as_secs_f64()),
            "< 64 MiB",
            mib < 64.0,
        );
    }
    let _ = fs::remove_dir_all(&big);

    // 2. An ignored node_modules.
    let app = work.join("app");
    generate_app(&app);
    let base = repeat_median(args.runs.max(15), || {
        context::digest(&spec(&app)).expect("digest");
    });
    eprint!("generating 50,000-file node_modules... ");
    let n = generate_node_modules(&app.join("node_modules"));
    eprintln!("{n} files");
    let _ = context::digest(&spec(&app)).expect("digest");
    let with = repeat_median(args.runs.max(15), || {
        context::digest(&spec(&app)).expect("digest");
    });
    let added = with.saturating_sub(base);
    rows.push(Row::info(
        "small app (300 files), no node_modules".into(),
        format!("{:.2} ms", ms(base)),
    ));
    ok &= rows_push(
        &mut rows,
        &format!("  + ignored node_modules ({n} files) adds"),
        format!("{:.2} ms", ms(added)),
        "< 50 ms",
        added < Duration::from_millis(50),
    );
    // For scale: the same tree when the exception `!**/keep` forces BuildKit's full walk.
    fs::write(app.join(".dockerignore"), "node_modules\n!**/keep\n").unwrap();
    let walked = repeat_median(3, || {
        context::digest(&spec(&app)).expect("digest");
    });
    rows.push(Row::info(
        "  (for scale: walked, `!**/keep` forces it)".into(),
        format!("{:.1} ms", ms(walked)),
    ));
    fs::write(app.join(".dockerignore"), "").unwrap();
    let packed_all = repeat_median(3, || {
        context::digest(&spec(&app)).expect("digest");
    });
    rows.push(Row::info(
        "  (for scale: not ignored, all sent)".into(),
        format!("{:.1} ms", ms(packed_all)),
    ));

    print_table(&rows);
    ok
}

fn rows_push(rows: &mut Vec<Row>, what: &str, value: String, target: &str, pass: bool) -> bool {
    rows.push(Row {
        what: what.to_string(),
        value,
        target: target.to_string(),
        status: if pass { "ok" } else { "MISSED" }.to_string(),
    });
    pass
}

struct Row {
    what: String,
    value: String,
    target: String,
    status: String,
}

impl Row {
    fn info(what: String, value: String) -> Row {
        Row {
            what,
            value,
            target: String::new(),
            status: String::new(),
        }
    }
}

fn print_table(rows: &[Row]) {
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0).max(7);
    let w1 = rows.iter().map(|r| r.value.len()).max().unwrap_or(0).max(6);
    let w2 = rows
        .iter()
        .map(|r| r.target.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:w0$}  {:w1$}  {:w2$}  status",
        "measure", "result", "target"
    );
    let _ = writeln!(out, "{}", "-".repeat(w0 + w1 + w2 + 12));
    for r in rows {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r.what, r.value, r.target, r.status
        );
    }
}

fn child(mode: &str, dir: &Path) {
    let start = Instant::now();
    match mode {
        "digest" => {
            context::digest(&spec(dir)).expect("digest");
        }
        _ => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use futures_util::StreamExt;
                let (mut stream, handle) = context::pack_stream(spec(dir));
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    n += chunk.expect("stream").len() as u64;
                }
                let packed = handle.await.unwrap().expect("pack");
                assert_eq!(n, packed.bytes);
            });
        }
    }
    let elapsed = start.elapsed();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("{} {}", elapsed.as_nanos(), hwm);
}

fn run_child(mode: &str, dir: &Path) -> (Duration, u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", mode])
        .arg(dir)
        .output()
        .expect("running the child");
    assert!(
        out.status.success(),
        "child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let nanos: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let hwm: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (Duration::from_nanos(nanos), hwm)
}

fn tar_sha256(dir: &Path) {
    let status = Command::new("sh")
        .arg("-c")
        .arg("tar -C \"$1\" -cf - . | sha256sum > /dev/null")
        .arg("sh")
        .arg(dir)
        .status()
        .expect("running tar | sha256sum");
    assert!(status.success(), "tar -c | sha256sum failed");
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn repeat_median(n: usize, mut f: impl FnMut()) -> Duration {
    median((0..n).map(|_| time(&mut f)).collect())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Pseudo-random, incompressible content (xorshift), generated fast.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// Half the bytes in 8 large files, half in 64 KiB files spread over 64 directories.
fn generate_big(dir: &Path, total: u64) -> (u64, u64) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = vec![0u8; 1 << 20];
    let mut files = 1;
    let mut written = 0;
    let large = total / 2 / 8;
    for i in 0..8 {
        let mut f = fs::File::create(dir.join(format!("asset-{i}.bin"))).unwrap();
        let mut left = large;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            f.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        files += 1;
        written += large;
    }
    let small = 64 * 1024;
    let count = (total - written) / small;
    for i in 0..count {
        let sub = dir.join(format!("src/m{:02}", i % 64));
        if i < 64 {
            fs::create_dir_all(&sub).unwrap();
        }
        rng.fill(&mut buf[..small as usize]);
        fs::write(sub.join(format!("f{i:05}.dat")), &buf[..small as usize]).unwrap();
        files += 1;
        written += small;
    }
    (files, written)
}

fn generate_app(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    fs::write(dir.join(".dockerignore"), "node_modules\n").unwrap();
    for i in 0..300 {
        let sub = dir.join(format!("src/mod{}", i % 20));
        fs::create_dir_all(&sub).unwrap();
        fs::write(
            sub.join(format!("file{i}.js")),
            format!("export const v{i} = {i};\n"),
        )
        .unwrap();
    }
}

/// 2,500 packages of 20 files each (lib/, dist/, package.json...).
fn generate_node_modules(dir: &Path) -> u64 {
    let mut n = 0;
    for p in 0..2500 {
        let pkg = dir.join(format!("pkg-{p:04}"));
        fs::create_dir_all(pkg.join("lib")).unwrap();
        fs::create_dir_all(pkg.join("dist")).unwrap();
        fs::write(
            pkg.join("package.json"),
            format!("{{\"name\":\"pkg-{p}\"}}"),
        )
        .unwrap();
        fs::write(pkg.join("README.md"), "readme").unwrap();
        n += 2;
        for f in 0..9 {
            fs::write(pkg.join(format!("lib/f{f}.js")), "module.exports = 1;\n").unwrap();
            fs::write(pkg.join(format!("dist/f{f}.min.js")), "1").unwrap();
            n += 2;
        }
    }
    n
}
