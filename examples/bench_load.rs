//! Benchmark: `slipway load` after a one-line change vs the kind way, on a 2-node kind stand-in.
//!
//! Usage: cargo run --release --example bench_load -- [--image REF] [--rounds N] [--json]
//!
//! The image is `--image`, else `$SLIPWAY_BENCH_IMAGE`, else the reference backend
//! (`slipway/backend:latest`) when it exists, else a generated ~150 MB image. Both nodes start
//! with that image loaded (the previous version). Each round builds two "one-line changes" of
//! it (the image plus one small layer with a changed file, as a source edit adds on top of
//! unchanged dependency layers) and loads one with slipway and the other the way
//! `kind load docker-image` does: `docker save` to a file, then a full `ctr images import`
//! into every node, concurrently. The medians are compared (target: ratio at most 0.5). Then a
//! no-op load is timed, and the presence check (one exec per node) alone (target < 150 ms).
//!
//! Needs the Docker daemon and the kind node image (`scripts/env/images kind-node`); starts and
//! removes its nodes with tests/env/kind-up and tests/env/down.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slipway::cluster;
use slipway::config::ClusterTarget;
use slipway::record::BuiltImage;
use slipway::report::{fmt_bytes, fmt_duration, Silent};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sh(cmd: &str) -> anyhow::Result<String> {
    let out = Command::new("sh").args(["-c", cmd]).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "`{cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn build(tag: &str, dockerfile: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("Dockerfile"), dockerfile)?;
    for (name, cmd) in files {
        sh(&format!("{cmd} > {}", dir.path().join(name).display()))?;
    }
    sh(&format!(
        "cd {} && DOCKER_BUILDKIT=0 docker build -q -t {tag} .",
        dir.path().display()
    ))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Cleanup {
    cluster: String,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/env/down"))
            .arg(&self.cluster)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !self.images.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&self.images)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rounds: usize = arg("--rounds")
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let json = args.iter().any(|a| a == "--json");
    let pid = std::process::id();
    let cluster_name = format!("bench-load-{pid}");
    let mut cleanup = Cleanup {
        cluster: cluster_name.clone(),
        images: vec![],
    };

    let daemon = slipway::docker::connect(Duration::from_secs(5)).await?;
    let busybox =
        std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX").unwrap_or("slipway-test/busybox:1.35".into());
    let base = match arg("--image").or_else(|| std::env::var("SLIPWAY_BENCH_IMAGE").ok()) {
        Some(i) => i,
        None if exists("slipway/backend:latest") => "slipway/backend:latest".into(),
        None => {
            let tag = format!("slipway-bench/generated:{pid}");
            eprintln!("bench: no reference backend image; generating a ~150 MB one ({tag})");
            build(
                &tag,
                &format!("FROM {busybox}\nCOPY deps.bin /deps.bin\nCOPY lib.bin /lib.bin\nCOPY app.bin /app/app.bin\n"),
                &[
                    ("deps.bin", "head -c 100000000 /dev/urandom"),
                    ("lib.bin", "head -c 45000000 /dev/urandom"),
                    ("app.bin", "head -c 2000000 /dev/urandom"),
                ],
            )?;
            cleanup.images.push(tag.clone());
            tag
        }
    };
    let info = daemon.docker.inspect_image(&base).await?;
    let base_size = info.size.unwrap_or(0) as u64;
    let base_layers = info
        .root_fs
        .and_then(|r| r.layers)
        .map(|l| l.len())
        .unwrap_or(0);

    eprintln!("bench: starting the 2-node kind stand-in {cluster_name}");
    let nodes: Vec<String> = sh(&format!(
        "{} {cluster_name} 1",
        repo().join("tests/env/kind-up").display()
    ))?
    .lines()
    .map(str::to_string)
    .collect();
    anyhow::ensure!(nodes.len() == 2, "kind-up gave {nodes:?}");
    let target = ClusterTarget::Kind(cluster_name.clone());

    // The previous version is in the cluster already.
    let base_id = info.id.clone().unwrap_or_default();
    let r = cluster::load(
        &daemon,
        &target,
        &[BuiltImage::recorded("app", &base, &base_id)],
        &Silent,
    )
    .await?;
    anyhow::ensure!(r.ok(), "initial load failed: {}", cluster::render(&r));

    let mut ours = Vec::new();
    let mut kinds = Vec::new();
    let mut sent = 0;
    let mut last = (String::new(), String::new());
    let tar = tempfile::tempdir()?;
    for round in 0..rounds {
        let change = |n: &str| -> anyhow::Result<(String, String)> {
            let tag = format!("slipway-bench/changed:{pid}-{round}-{n}");
            let id = build(
                &tag,
                &format!("FROM {base}\nCOPY main.py /app/bench_change.py\n"),
                &[(
                    "main.py",
                    &format!("echo 'VERSION = \"{pid}-{round}-{n}\"  # the one changed line'"),
                )],
            )?;
            Ok((tag, id))
        };
        let (ours_tag, ours_id) = change("slipway")?;
        let (kind_tag, _) = change("kind")?;
        cleanup.images.push(ours_tag.clone());
        cleanup.images.push(kind_tag.clone());

        let t0 = Instant::now();
        let r = cluster::load(
            &daemon,
            &target,
            &[BuiltImage::recorded("app", &ours_tag, &ours_id)],
            &Silent,
        )
        .await?;
        ours.push(t0.elapsed());
        last = (ours_tag.clone(), ours_id);
        anyhow::ensure!(r.ok(), "slipway load failed: {}", cluster::render(&r));
        sent = r.bytes_sent;

        // kind load docker-image: save to a file, then import the whole file into each node.
        let file = tar.path().join("image.tar");
        let t0 = Instant::now();
        sh(&format!("docker save {kind_tag} -o {}", file.display()))?;
        let imports: Vec<_> = nodes
            .iter()
            .map(|n| {
                let cmd = format!(
                    "docker exec -i {n} ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs - < {}",
                    file.display()
                );
                std::thread::spawn(move || sh(&cmd))
            })
            .collect();
        for i in imports {
            i.join().map_err(|_| anyhow::anyhow!("import thread"))??;
        }
        kinds.push(t0.elapsed());
        std::fs::remove_file(&file)?;
        eprintln!(
            "bench: round {}: slipway {} / kind way {}",
            round + 1,
            fmt_duration(*ours.last().unwrap()),
            fmt_duration(*kinds.last().unwrap())
        );
    }

    // A no-op load, and the presence check alone (one exec per node).
    let t0 = Instant::now();
    let r = cluster::load(
        &daemon,
        &target,
        &[BuiltImage::recorded("app", &last.0, &last.1)],
        &Silent,
    )
    .await?;
    let noop = t0.elapsed();
    anyhow::ensure!(
        r.ok() && r.bytes_sent == 0,
        "no-op load sent {}",
        r.bytes_sent
    );
    let mut checks = Vec::new();
    for _ in 0..10 {
        for n in &nodes {
            let t0 = Instant::now();
            let at = cluster::kind::Ctr {
                node: n,
                address: cluster::kind::CONTAINERD_ADDRESS,
            };
            cluster::kind::query(&daemon.docker, at).await?;
            checks.push(t0.elapsed());
        }
    }
    let check = median(checks);

    let (o, k) = (median(ours), median(kinds));
    let ratio = o.as_secs_f64() / k.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "image": base, "image_size": base_size, "layers": base_layers + 1,
                "nodes": nodes.len(), "rounds": rounds,
                "slipway_ms": o.as_millis() as u64, "kind_way_ms": k.as_millis() as u64,
                "ratio": ratio, "ratio_target": 0.5, "bytes_sent": sent,
                "noop_load_ms": noop.as_millis() as u64,
                "presence_check_ms_per_node": check.as_secs_f64() * 1000.0,
                "presence_check_target_ms": 150,
            })
        );
    } else {
        println!(
            "image {base} ({}, {} layers + the changed one), 2-node kind stand-in, median of {rounds}",
            fmt_bytes(base_size),
            base_layers
        );
        println!(
            "  slipway load after a one-line change: {} ({} sent in all)",
            fmt_duration(o),
            fmt_bytes(sent)
        );
        println!(
            "  kind way (docker save + full ctr import per node): {}",
            fmt_duration(k)
        );
        println!(
            "  ratio {ratio:.2} (target <= 0.5): {}",
            if ratio <= 0.5 { "ok" } else { "MISSED" }
        );
        println!(
            "  no-op load: {}; presence check per node: {:.0} ms (target < 150 ms): {}",
            fmt_duration(noop),
            check.as_secs_f64() * 1000.0,
            if check < Duration::from_millis(150) {
                "ok"
            } else {
                "MISSED"
            }
        );
    }
    Ok(())
}
