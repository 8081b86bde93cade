//! Benchmark (issue 4): a no-op `slipway build` (or with `--up`, `slipway up`) of the reference
//! app vs one cached build per component the plain Docker way, measured in the same run, pair
//! by pair.
//!
//! The baseline here is what `docker build` with BuildKit asks of the daemon, without the
//! docker CLI: a `POST /build` with the full context, BuildKit and a session, through bollard,
//! with the same Dockerfile, context, build args and target, every step served from the build
//! cache; so it leaves out the CLI's own start-up and session set-up, and is faster than what a
//! user runs. `scripts/bench` measures against the real CLI (`docker build` with
//! docker-buildx, `kind load docker-image`, `docker buildx bake`); this example remains for a
//! look at the daemon's side alone. Both sides talk to the same daemon; the slipway side runs
//! the real binary (process start included).
//!
//! Usage: `cargo build --release && cargo run --release --example bench_build -- [--config
//! slipway.toml] [--runs 5] [--up CLUSTER]` (`--up` measures a no-op `slipway up` instead;
//! `--raw-build COMPONENT TAG` only builds COMPONENT the plain way). `SLIPWAY_BIN` overrides
//! the slipway binary (default: the one next to this example's target directory).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, BuilderVersion, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use slipway::builder::{self as build, ComponentPlan};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn slipway_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("SLIPWAY_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/bench_build -> target/<profile>/slipway
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("slipway"))
        .context("cannot find the target directory")?;
    if !bin.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release` first (or set SLIPWAY_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One cached BuildKit build of a component, the way `docker build` would ask for it.
async fn docker_build(
    docker: &bollard::Docker,
    c: &ComponentPlan,
    tag: &str,
) -> anyhow::Result<()> {
    let (body, packer) = slipway::context::pack_stream(c.context_spec());
    let args: std::collections::HashMap<String, String> =
        c.build_args.clone().into_iter().collect();
    let session = format!("bench-{}-{}", c.name, std::process::id());
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .dockerfile(&c.dockerfile_name)
        .target(&c.target)
        .buildargs(&args)
        .version(BuilderVersion::BuilderBuildKit)
        .session(&session)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_try_stream(body)));
    while let Some(item) = stream.next().await {
        item.with_context(|| format!("building {}", c.name))?;
    }
    drop(stream);
    packer.await??;
    Ok(())
}

/// The slipway command measured: `build`, or with `--up CLUSTER` a whole `up`.
fn slipway_args(up: &Option<String>) -> Vec<String> {
    match up {
        Some(cluster) => vec!["up".into(), "--cluster".into(), cluster.clone()],
        None => vec!["build".into()],
    }
}

fn run_slipway(bin: &PathBuf, config: &PathBuf, up: &Option<String>) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = Command::new(bin)
        .args(slipway_args(up))
        .args(["--progress=json", "--config"])
        .arg(config)
        .output()?;
    let elapsed = t0.elapsed();
    if !out.status.success() {
        bail!(
            "slipway build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("\"what\":\"build\"") {
        bail!("the slipway build was not a no-op:\n{stderr}");
    }
    Ok(elapsed)
}

/// Warms the baseline, then times `runs` rounds of each side.
async fn measure(
    docker: &bollard::Docker,
    components: &[ComponentPlan],
    tags: &[String],
    bin: &PathBuf,
    config_path: &PathBuf,
    up: &Option<String>,
    runs: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    for (c, tag) in components.iter().zip(tags) {
        docker_build(docker, c, tag).await?;
    }
    let mut slipway_times = Vec::new();
    let mut docker_times = Vec::new();
    for _ in 0..runs {
        slipway_times.push(run_slipway(bin, config_path, up)?);
        let t0 = Instant::now();
        for (c, tag) in components.iter().zip(tags) {
            docker_build(docker, c, tag).await?;
        }
        docker_times.push(t0.elapsed());
    }
    Ok((slipway_times, docker_times))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config_path = PathBuf::from("slipway.toml");
    let mut runs = 5usize;
    let mut up: Option<String> = None;
    let mut raw: Option<(String, String)> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config_path = args.next().context("--config PATH")?.into(),
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--up" => up = Some(args.next().context("--up CLUSTER")?),
            "--raw-build" => {
                let component = args.next().context("--raw-build COMPONENT TAG")?;
                raw = Some((component, args.next().context("--raw-build COMPONENT TAG")?));
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let config_path = std::fs::canonicalize(&config_path)
        .with_context(|| format!("{} not found", config_path.display()))?;
    let config = slipway::config::load(&config_path)?;
    let daemon = slipway::docker::connect(Duration::from_secs(5)).await?;
    let docker = slipway::docker::client(&daemon.endpoint, slipway::docker::LONG_TIMEOUT)?;
    // The plain Docker way's build, for scripts/bench: one BuildKit build of COMPONENT tagged
    // TAG, nothing else (no input digest, no normalisation).
    if let Some((component, tag)) = raw {
        let plan = build::plan(&config, &daemon, std::slice::from_ref(&component)).await?;
        let c = plan
            .components
            .iter()
            .find(|c| c.name == component)
            .with_context(|| format!("no component {component}"))?;
        return docker_build(&docker, c, &tag).await;
    }
    let bin = slipway_bin()?;

    // Make sure everything is built, and both caches are warm.
    eprintln!("warming up: slipway build, and one baseline build per component");
    let out = Command::new(&bin)
        .args(slipway_args(&up))
        .args(["--progress=plain", "--config"])
        .arg(&config_path)
        .status()?;
    if !out.success() {
        bail!("the first slipway build failed");
    }
    let plan = build::plan(&config, &daemon, &[]).await?;
    let tags: Vec<String> = plan
        .components
        .iter()
        .map(|c| format!("slipway-bench-{}/{}:baseline", std::process::id(), c.name))
        .collect();
    let measured = measure(
        &docker,
        &plan.components,
        &tags,
        &bin,
        &config_path,
        &up,
        runs,
    )
    .await;
    // The baseline's tags go on every path.
    for tag in &tags {
        let _ = docker
            .remove_image(
                tag,
                Some(RemoveImageOptionsBuilder::default().build()),
                None,
            )
            .await;
    }
    let (slipway_times, docker_times) = measured?;

    let s = median(slipway_times.clone());
    let d = median(docker_times.clone());
    let mut ratios: Vec<f64> = slipway_times
        .iter()
        .zip(&docker_times)
        .map(|(s, d)| s.as_secs_f64() / d.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "no-op build of {} ({} components), median of {runs} runs:",
        config.app.name,
        plan.components.len()
    );
    println!(
        "  slipway {} (no-op, binary):{}{}",
        slipway_args(&up).join(" "),
        " ".repeat(30usize.saturating_sub(slipway_args(&up).join(" ").len() + 9)),
        ms(s)
    );
    println!("  1 cached BuildKit build per component:    {}", ms(d));
    println!("  ratio slipway / docker, median of the pairs: {ratio:.2}");
    println!(
        "  (baseline: POST /build with BuildKit through bollard, without the docker CLI; \
         scripts/bench compares with the CLI users run)"
    );
    Ok(())
}
