//! Shared helpers for integration tests: the real daemon, the judges, unique names.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// True when running in CI, where a missing daemon or judge must fail a test, not skip it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// The real Docker daemon, or `None` (with a printed reason) outside CI when none answers.
/// Under `CI=true` a missing daemon panics: daemon tests never pass by skipping there.
pub async fn daemon() -> Option<bollard::Docker> {
    let endpoint = slipway::docker::endpoint();
    let docker = slipway::docker::client(&endpoint, slipway::docker::LONG_TIMEOUT).ok();
    let ok = match &docker {
        Some(d) => tokio::time::timeout(std::time::Duration::from_secs(5), d.ping())
            .await
            .is_ok_and(|r| r.is_ok()),
        None => false,
    };
    if ok {
        return docker;
    }
    if in_ci() {
        panic!(
            "CI=true and no Docker daemon answers at {}: daemon tests must run in CI",
            endpoint.host
        );
    }
    eprintln!(
        "SKIPPED: no Docker daemon at {} (set CI=true to make this a failure)",
        endpoint.host
    );
    None
}

/// Path to an external judge (hadolint, helm, kubernetes-validate, yamllint, checkov), from
/// `$SLIPWAY_TOOLS/bin`, the repo's `.tools/bin`, or PATH. Panics under CI when missing.
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("SLIPWAY_TOOLS") {
        dirs.push(PathBuf::from(t).join("bin"));
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return Some(found);
    }
    if in_ci() {
        panic!("CI=true and the judge `{name}` is not installed: run scripts/env/tools");
    }
    eprintln!("SKIPPED: `{name}` not found (run scripts/env/tools)");
    None
}

/// A name no other test (or engineer) uses at the same time.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The slipway binary built for these tests.
pub fn slipway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
