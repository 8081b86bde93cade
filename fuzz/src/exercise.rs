//! What the fuzz targets (and the stable randomized test in tests/hostile.rs, which includes
//! this file with `#[path]`) do with one input. Each function takes raw bytes, must never
//! panic, and returns normally for every input: errors are fine, crashes are bugs.

// Each fuzz target uses one of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use slipway::context::ignore::{self, Matcher};

/// A `slipway.toml`: parse and validate it; when it is valid, use it the way the commands
/// do (resolved config, base-image args, image names, manifests and the chart).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = slipway::config::parse(&text, Path::new("/fuzz/slipway.toml")) else {
        return;
    };
    // Paths outside the root are refused, never a panic (the check reads the file system
    // only to follow symlinks).
    let _ = slipway::config::confine(&config);
    let _ = config.base_image_args();
    let mut images = BTreeMap::new();
    for (name, c) in &config.components {
        let _ = config.resolved_config(c);
        let _ = config.object_name(name);
        let _ = config.service_host(name);
        let _ = config.context_dir(c);
        let _ = config.dockerfile_path(c);
        images.insert(name.clone(), format!("{}:fuzz", config.image_repo(name)));
    }
    let opts = slipway::k8s::Options {
        allow_missing_secrets: true,
        namespace_manifest: true,
        ..Default::default()
    };
    let secrets = slipway::k8s::SecretValues::new(BTreeMap::new());
    let _ = slipway::k8s::render_manifests(&config, &images, &secrets, &opts);
    let _ = slipway::k8s::render_chart(&config, &images, &opts);
}

/// An ignore file and paths to match: the bytes up to the first NUL are the ignore file,
/// the rest are paths, one per line. Each path is matched as the packer's walk matches it
/// (every parent first, passing its results down), and with the other matching entry points.
pub fn ignore(data: &[u8]) {
    let (patterns, paths) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let file = Path::new("/fuzz/.dockerignore");
    let Ok(lines) = ignore::read_patterns(patterns, file) else {
        return;
    };
    for line in &lines {
        let _ = ignore::clean(&line.text);
    }
    let Ok(matcher) = Matcher::new(&lines, file) else {
        return;
    };
    for path in paths.split(|&b| b == b'\n').take(64) {
        walk(&matcher, path);
        let _ = matcher.matches_exact(path);
        let _ = matcher.matches_or_parent_matches(path);
        let _ = matcher.matches_deprecated(path);
        for p in &matcher.patterns {
            let _ = p.could_match_below(path);
            let _ = ignore::go_match(&p.text, path);
        }
    }
}

/// Matches `path` component by component, as the context walker does.
fn walk(matcher: &Matcher, path: &[u8]) {
    let mut info: Vec<bool> = Vec::new();
    let mut end = 0;
    for (i, part) in path.split(|&b| b == b'/').enumerate() {
        end += part.len() + usize::from(i > 0);
        let prefix = &path[..end.min(path.len())];
        let (excluded, next) = matcher.matches_using_parent_results(prefix, &info);
        if excluded {
            let _ = matcher.may_include_below(prefix, &next);
        }
        info = next;
    }
}

/// A `.env` file (what `slipway manifests --env-file` reads secret values from).
pub fn env_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = slipway::k8s::secrets::parse_env(&text);
}
