//! The registry: `build --push` sends images and records the digests to pin; before building,
//! [`lookup`] asks whether the registry has an image already; [`pull`] fetches one.
//!
//! slipway pushes itself ([`push_image`], through [`crate::registry`]), not through the
//! daemon: each daemon compresses layers its own way, so a daemon's push gave the same image
//! another manifest digest on every daemon. slipway's push sends the normal form's layers
//! compressed the same way everywhere ([`crate::archive::gzip`]) under an OCI image manifest,
//! so the digest depends on the image alone; blobs the registry has are not sent again, and
//! an image the registry has under its tag already is not even exported.
//!
//! Credentials are found the way the docker CLI finds them, in `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`): a credential helper for the registry (`credHelpers`),
//! else the default store (`credsStore`), else a stored `auths` entry. They travel in request
//! headers only (the registry's, or the daemon's for a pull), never logged. After a push the
//! manifest digest is recorded, so manifests and the chart pin `repo@sha256:...`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use futures_util::StreamExt;

use crate::archive::gzip;
use crate::docker::{images, Daemon};
use crate::error::Fail;
use crate::record::{BuildReport, Outcome};
use crate::registry::{self, Descriptor, ImageManifest};
use crate::report::{Event, Reporter};

/// The registry host an image reference lives in, as the docker CLI names it
/// (`docker.io` for Docker Hub).
pub fn registry_of(reference: &str) -> String {
    registry::split_repository(reference).0
}

fn docker_config_path() -> Option<PathBuf> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    Some(dir.join("config.json"))
}

/// The credentials for `registry` from the Docker config, if any.
pub fn credentials(registry: &str) -> anyhow::Result<Option<DockerCredentials>> {
    match docker_config_path() {
        Some(path) => credentials_from(&path, registry),
        None => Ok(None),
    }
}

/// The credentials for `registry` from the Docker config file at `path`, if any.
pub fn credentials_from(
    path: &std::path::Path,
    registry: &str,
) -> anyhow::Result<Option<DockerCredentials>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Fail::usage(format!("{} is not valid JSON: {e}", path.display())))?;
    // Docker Hub's entries are keyed by its legacy index URL.
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    let helper = keys
        .iter()
        .find_map(|k| {
            cfg.pointer(&format!("/credHelpers/{}", k.replace('/', "~1")))?
                .as_str()
        })
        .or_else(|| cfg.get("credsStore")?.as_str());
    if let Some(helper) = helper {
        if let Some(c) = from_helper(helper, &keys[0])? {
            return Ok(Some(c));
        }
    }
    let Some(auths) = cfg.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for key in &keys {
        let Some(entry) = auths.get(key) else {
            continue;
        };
        if let Some(token) = entry.get("identitytoken").and_then(|t| t.as_str()) {
            return Ok(Some(DockerCredentials {
                identitytoken: Some(token.to_string()),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            }));
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                })
                .ok_or_else(|| {
                    Fail::usage(format!(
                        "the `auth` entry for {key} in {} is not base64 of USER:PASSWORD",
                        path.display()
                    ))
                    .hint(format!("log in again: `docker login {registry}`"))
                })?;
            return Ok(Some(DockerCredentials {
                username: Some(decoded.0),
                password: Some(decoded.1),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            }));
        }
    }
    Ok(None)
}

/// How long a credential helper may take to answer (one that waits for a keychain prompt no one
/// sees would otherwise hang the push forever).
pub const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Asks `docker-credential-HELPER get` for a registry's credentials. "Not found" (the helper's
/// own words, as the docker CLI reads them) is `None`; a helper that fails otherwise, answers
/// something that is not credentials, or takes longer than [`HELPER_TIMEOUT`] is an error
/// naming it and the registry: never an anonymous push. What the helper printed is never shown
/// (it may hold a secret).
fn from_helper(helper: &str, server: &str) -> anyhow::Result<Option<DockerCredentials>> {
    let program = format!("docker-credential-{helper}");
    let failed = |what: String| -> anyhow::Error {
        Fail::job(format!(
            "credential helper `{program}` (for {server}) {what}; not pushing without credentials"
        ))
        .hint(format!(
            "check it with `echo {server} | {program} get`, log in again (`docker login {server}`), \
             or remove it from `credHelpers`/`credsStore` in the Docker config"
        ))
        .into()
    };
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Err(Fail::usage(format!(
            "the Docker config names credential helper `{helper}`, but `{program}` cannot run: {e}"
        ))
            .hint(format!(
                "install {program}, or remove `credsStore`/`credHelpers` from the Docker config"
            ))
            .into())
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take().context("the helper's stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut out);
        out
    });
    let deadline = std::time::Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("running {program}"))?
        {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        if String::from_utf8_lossy(&out).contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("failed ({status})")));
    }
    let v: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|_| failed("answered something that is not JSON credentials".into()))?;
    let user = v.get("Username").and_then(|u| u.as_str());
    let secret = v.get("Secret").and_then(|s| s.as_str());
    let (Some(user), Some(secret)) = (user, secret) else {
        return Err(failed(
            "answered JSON without a `Username` and a `Secret`".into(),
        ));
    };
    if secret.is_empty() {
        return Err(failed("answered an empty secret".into()));
    }
    Ok(Some(if user == "<token>" {
        DockerCredentials {
            identitytoken: Some(secret.to_string()),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        }
    } else {
        DockerCredentials {
            username: Some(user.to_string()),
            password: Some(secret.to_string()),
            serveraddress: Some(server.to_string()),
            ..Default::default()
        }
    }))
}

/// The registry of `reference` and the Docker config's credentials for it. A helper may take
/// seconds (up to [`HELPER_TIMEOUT`]): it runs off the runtime's threads.
pub async fn credentials_for(
    reference: &str,
) -> anyhow::Result<(String, Option<DockerCredentials>)> {
    let registry = registry_of(reference);
    let of = registry.clone();
    let creds = tokio::task::spawn_blocking(move || credentials(&of))
        .await
        .context("the credential lookup stopped")?
        .with_context(|| format!("reading the Docker config's credentials for {registry}"))?;
    Ok((registry, creds))
}

/// A client of `repository`'s registry ([`crate::registry`]) with the Docker config's
/// credentials for it; plain HTTP is allowed where the daemon allows it (loopback addresses,
/// the daemon's `insecure-registries`). `push`: the tokens asked for allow pushing.
pub async fn client(
    daemon: &Daemon,
    repository: &str,
    push: bool,
) -> anyhow::Result<registry::Client> {
    let (host, creds) = credentials_for(repository).await?;
    let (_, name) = registry::split_repository(repository);
    let insecure = registry::is_loopback(&host) || insecure_on(daemon, &host).await;
    registry::Client::connect(&host, &name, creds, insecure, push).await
}

/// Whether the daemon lists `registry` as insecure (`docker info`: an index marked not
/// secure, or an address in `InsecureRegistryCIDRs`).
async fn insecure_on(daemon: &Daemon, registry: &str) -> bool {
    let Some(config) = daemon
        .docker
        .info()
        .await
        .ok()
        .and_then(|i| i.registry_config)
    else {
        return false;
    };
    let marked = config
        .index_configs
        .as_ref()
        .and_then(|m| m.get(registry))
        .and_then(|c| c.secure)
        == Some(false);
    marked
        || config
            .insecure_registry_cidrs
            .as_deref()
            .is_some_and(|c| registry::in_cidrs(registry, c))
}

/// The manifest digest (`sha256:...`) the registry holds for `repository:tag`, or `None` when
/// it has no such tag (a manifest GET with the credentials a push sends; nothing is pulled).
/// Anything else than "not there" (refused credentials, an unreachable registry) is an error
/// naming the registry: a CI run must not build and push blind.
pub async fn lookup(
    daemon: &Daemon,
    repository: &str,
    tag: &str,
) -> anyhow::Result<Option<String>> {
    let reference = format!("{repository}:{tag}");
    let found = async {
        let client = client(daemon, repository, false).await?;
        client.get_manifest(tag).await
    }
    .await
    .with_context(|| {
        format!(
            "looking up {reference} in {} failed",
            registry_of(repository)
        )
    })?;
    Ok(found.map(|m| m.digest))
}

/// Pulls `reference` (`REPO:TAG` or `REPO@sha256:...`) into the daemon with the Docker
/// config's credentials, reporting a line as each layer arrives under `task`; returns the
/// manifest digest the pull reported. An error item in the daemon's stream fails the pull with
/// the daemon's message; callers say what the image was for.
pub async fn pull(
    daemon: &Daemon,
    reference: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<Option<String>> {
    let (repo, tag) = registry::split_reference(reference);
    let (_, creds) = credentials_for(reference).await?;
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo),
        tag: Some(tag),
        ..Default::default()
    };
    let mut stream = daemon.docker.create_image(Some(options), None, creds);
    let mut done = std::collections::BTreeSet::new();
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.with_context(|| format!("pulling {reference}"))?;
        if let Some(detail) = &info.error_detail {
            anyhow::bail!(
                "pulling {reference}: {}",
                detail
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("error {}", detail.code.unwrap_or_default()))
            );
        }
        let Some(status) = &info.status else {
            continue;
        };
        if let Some(d) = status.strip_prefix("Digest: ") {
            digest = Some(d.trim().to_string());
        }
        if let Some(id) = &info.id {
            if status == "Pull complete" && done.insert(id.clone()) {
                reporter.report(Event::Log {
                    task: task.to_string(),
                    line: format!("layer {id} pulled ({} so far)", done.len()),
                });
            }
        }
    }
    Ok(digest)
}

/// [`pull`], then the image ID of what was pulled. The image is found by what the registry
/// says `reference` is (its config digest, the ID on the classic image store; its manifest
/// digest, the ID on the containerd image store), not by the reference: a daemon that had the
/// image already may answer "up to date" without making it.
pub async fn pull_image(
    daemon: &Daemon,
    reference: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<String> {
    let reported = pull(daemon, reference, task, reporter).await?;
    let (repo, tag) = registry::split_reference(reference);
    let mut candidates = Vec::new();
    // Best effort: a daemon may reach a registry (a mirror, a proxy) that slipway cannot.
    let manifest = async { client(daemon, &repo, false).await?.get_manifest(&tag).await };
    if let Ok(Some(m)) = manifest.await {
        if let Ok(image) = m.image() {
            candidates.push(image.config.digest);
        }
        candidates.push(m.digest);
    }
    candidates.extend(reported.clone());
    candidates.push(reference.to_string());
    for c in &candidates {
        if let Ok(found) = daemon.docker.inspect_image(c).await {
            if let Some(id) = found.id {
                return Ok(id);
            }
        }
    }
    Err(Fail::job(format!(
        "{reference} is not on the daemon after pulling it (the pull reported {}; looked for {})",
        reported.as_deref().unwrap_or("no digest"),
        candidates.join(", ")
    ))
    .into())
}

/// The config digest of `image` on the daemon: its ID on the classic image store; on the
/// containerd image store (where the ID is a manifest digest) read as [`images::config_digest`]
/// reads it.
pub async fn config_digest_of(daemon: &Daemon, image: &str) -> anyhow::Result<String> {
    let found = daemon
        .docker
        .inspect_image(image)
        .await
        .with_context(|| format!("inspecting {image} on {}", daemon.endpoint.host))?;
    let id = found.id.unwrap_or_default();
    if !daemon.containerd_store().await {
        return Ok(id);
    }
    let diff_ids = found.root_fs.and_then(|r| r.layers).unwrap_or_default();
    images::config_digest(
        daemon,
        image,
        &id,
        &diff_ids,
        &crate::leftovers::cache_dir(),
    )
    .await
}

/// The manifest slipway pushes for an image whose config is `config` and whose layers are the
/// blobs `layers`.
pub fn manifest_of(config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
    ImageManifest {
        schema_version: 2,
        media_type: registry::OCI_MANIFEST.into(),
        artifact_type: None,
        config,
        layers,
        subject: None,
        annotations: None,
    }
}

/// Whether `m` is a manifest slipway would push for the image with config `config`.
fn is_ours(m: &registry::Manifest, config: &str) -> bool {
    m.media_type == registry::OCI_MANIFEST
        && m.image().is_ok_and(|i| {
            i.config.digest == config
                && i.config.media_type == registry::OCI_CONFIG
                && i.layers
                    .iter()
                    .all(|l| l.media_type == registry::OCI_LAYER_GZIP)
        })
}

/// Pushes the image `local` (on the daemon: the normal form a build made) as
/// `repository:TAG` for each of `tags`, itself: the layers as the daemon exports them,
/// compressed the same way on every machine ([`gzip`]), blobs the registry has skipped, an
/// OCI image manifest. Returns `repository@sha256:...`.
pub async fn push_image(
    daemon: &Daemon,
    local: &str,
    repository: &str,
    tags: &[String],
    attestations: &[crate::record::Attestation],
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<String> {
    let log = |line: String| {
        reporter.report(Event::Log {
            task: task.to_string(),
            line,
        })
    };
    // A plain context: the hint of the registry's answer (log in, insecure registries) stays
    // the one shown.
    let pushing = || format!("pushing {repository} to {}", registry_of(repository));
    let client = client(daemon, repository, true)
        .await
        .with_context(pushing)?;
    let config_digest = config_digest_of(daemon, local).await?;
    let first = tags.first().context("no tag to push")?;
    let digest = async {
        let existing = client.get_manifest(first).await?;
        let (manifest, mut sent) = match existing.filter(|m| is_ours(m, &config_digest)) {
            Some(m) => {
                log(format!(
                    "{repository}:{first} is this image already ({}): nothing to upload",
                    m.digest
                ));
                (m.bytes, vec![first.clone()])
            }
            None => (
                upload_image(daemon, &client, local, &config_digest, task, reporter)
                    .await?
                    .to_bytes(),
                Vec::new(),
            ),
        };
        for tag in tags {
            if !sent.contains(tag) {
                client
                    .put_manifest(tag, registry::OCI_MANIFEST, &manifest)
                    .await?;
                sent.push(tag.clone());
            }
        }
        let subject = Descriptor::of(registry::OCI_MANIFEST, &manifest);
        let pinned = format!("{repository}@{}", subject.digest);
        attach_attestations(&client, &subject, &pinned, attestations, task, reporter).await?;
        anyhow::Ok(subject.digest)
    }
    .await
    .with_context(pushing)?;
    reporter.report(Event::Finished {
        task: task.to_string(),
        outcome: "pushed".into(),
        reason: None,
        detail: Some(format!("pushed {repository}@{digest}")),
        changed_files: Vec::new(),
        bytes_sent: None,
    });
    Ok(format!("{repository}@{digest}"))
}

/// Exports `local`, uploads its config and each layer the registry lacks (compressed into a
/// temporary file, streamed from there); returns the manifest naming them.
async fn upload_image(
    daemon: &Daemon,
    client: &registry::Client,
    local: &str,
    config_digest: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<ImageManifest> {
    let log = |line: String| {
        reporter.report(Event::Log {
            task: task.to_string(),
            line,
        })
    };
    let files = crate::reproduce::normalize::export_plain(daemon, local).await?;
    if files.image_id != config_digest {
        anyhow::bail!(
            "the export of {local} has the config {}, not {config_digest}",
            files.image_id
        );
    }
    let dir = crate::leftovers::temp_dir("push").context("creating a temporary directory")?;
    let count = files.layers().len();
    let mut layers: Vec<Descriptor> = Vec::new();
    let cache = crate::leftovers::cache_dir();
    for (i, (diff_id, tar)) in files.layers().iter().enumerate() {
        // A layer compressed before (the same bytes every time) that the registry has is
        // named without compressing it again: after a small change only the changed layers
        // are compressed and sent.
        if let Some(c) = gzip::remembered(&cache, diff_id) {
            if client.has_blob(&c.digest).await?.is_some() {
                log(format!(
                    "layer {}/{count} {}: in the registry already",
                    i + 1,
                    crate::docker::images::short_id(&c.digest)
                ));
                layers.push(gzip_layer(c));
                continue;
            }
        }
        let out = dir.path().join(format!("layer-{i}.gz"));
        let (tar, at) = (tar.clone(), out.clone());
        let c = tokio::task::spawn_blocking(move || gzip::compress(&tar, &at))
            .await
            .context("the compression task stopped")??;
        if &c.diff_id != diff_id {
            anyhow::bail!(
                "layer {} of {local} is {} as exported, but its config says {diff_id}",
                i + 1,
                c.diff_id
            );
        }
        gzip::remember(&cache, &c);
        let short = crate::docker::images::short_id(&c.digest);
        if client.has_blob(&c.digest).await?.is_some() {
            log(format!(
                "layer {}/{count} {short}: in the registry already",
                i + 1
            ));
        } else {
            upload_reporting(client, &out, &c, task, reporter).await?;
            log(format!(
                "layer {}/{count} {short}: pushed ({} bytes)",
                i + 1,
                c.size
            ));
        }
        let _ = std::fs::remove_file(&out);
        layers.push(gzip_layer(c));
    }
    let config = client
        .put_blob(registry::OCI_CONFIG, files.config())
        .await?;
    Ok(manifest_of(config, layers))
}

/// The manifest's descriptor of the compressed layer `c`.
fn gzip_layer(c: gzip::Compressed) -> Descriptor {
    Descriptor {
        media_type: registry::OCI_LAYER_GZIP.into(),
        digest: c.digest,
        size: c.size,
        artifact_type: None,
        annotations: None,
    }
}

/// Uploads the compressed layer `c` from `path`, reporting the bytes sent about once a second.
async fn upload_reporting(
    client: &registry::Client,
    path: &std::path::Path,
    c: &gzip::Compressed,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let upload = client.upload_file(path, &c.digest, c.size, sent.clone());
    tokio::pin!(upload);
    let t0 = std::time::Instant::now();
    loop {
        tokio::select! {
            done = &mut upload => return done,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                let done = sent.load(std::sync::atomic::Ordering::Relaxed);
                let secs = t0.elapsed().as_secs_f64().max(0.001);
                reporter.report(Event::Transfer {
                    task: task.to_string(),
                    bytes_done: done,
                    bytes_total: c.size,
                    bytes_per_second: (done as f64 / secs) as u64,
                });
            }
        }
    }
}

/// Attaches each of `attestations` (the SBOM and the provenance a build wrote) to the image
/// pushed as `pinned` (`repository@sha256:...`) as an OCI referrer (an artifact whose subject
/// is the image; on a registry without the referrers API, listed in the `sha256-<hex>` index
/// tag), so that `docker pull`, `kind load` and the pinned manifests are untouched by them.
async fn attach_attestations(
    client: &registry::Client,
    subject: &Descriptor,
    pinned: &str,
    attestations: &[crate::record::Attestation],
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    for a in attestations {
        let bytes = std::fs::read(&a.path)
            .with_context(|| format!("reading the attestation {}", a.path.display()))?;
        let blob = registry::referrers::Blob {
            media_type: &a.media_type,
            bytes: &bytes,
        };
        let artifact = registry::referrers::attach(client, subject, &a.media_type, &[blob])
            .await
            .with_context(|| format!("attaching {} to {pinned}", a.path.display()))?;
        reporter.report(Event::Log {
            task: task.to_string(),
            line: format!(
                "attached {} ({}) to {pinned} as {}",
                a.path.file_name().unwrap_or_default().to_string_lossy(),
                a.media_type,
                artifact.digest
            ),
        });
    }
    Ok(())
}

/// Pushes every component's image (input-digest tag and the extra tags) and records the
/// pinned reference in `report`.
pub async fn push_all(
    daemon: &Daemon,
    report: &mut BuildReport,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let mut failures = BTreeMap::new();
    for (name, rec) in report.components.iter_mut() {
        if rec.outcome == Outcome::Registry {
            // Found in the registry under its digest tag: nothing to send.
            continue;
        }
        reporter.report(Event::Started {
            estimate_ms: None,
            task: name.clone(),
            what: format!("push to {}", registry_of(&rec.repository)),
        });
        // Entries are `REPO:TAG` references or bare tags.
        let tags: Vec<String> = rec
            .tags
            .iter()
            .map(|t| {
                t.strip_prefix(&format!("{}:", rec.repository))
                    .unwrap_or(t)
                    .to_string()
            })
            .collect();
        let local = format!("{}:{}", rec.repository, rec.tag);
        let pushed = push_image(
            daemon,
            &local,
            &rec.repository,
            &tags,
            &rec.attestations,
            name,
            reporter,
        );
        match pushed.await {
            Ok(pinned) => rec.pushed = Some(pinned),
            Err(e) => {
                reporter.report(Event::failed(name, format!("{e:#}")));
                rec.push_error = Some(format!("{e:#}"));
                failures.insert(name.clone(), e);
            }
        }
    }
    match failures.into_iter().next() {
        None => Ok(()),
        Some((name, e)) => Err(e.context(format!("pushing component `{name}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_of("slipway/backend"), "docker.io");
        assert_eq!(registry_of("localhost:5000/app/backend"), "localhost:5000");
        assert_eq!(registry_of("ghcr.io/org/app"), "ghcr.io");
        assert_eq!(registry_of("backend"), "docker.io");
    }

    #[test]
    fn credentials_from_auths_and_bad_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("ci:s3cret");
        std::fs::write(&cfg, format!(r#"{{"auths":{{"localhost:5000":{{"auth":"{auth}"}},"https://index.docker.io/v1/":{{"identitytoken":"tok"}}}}}}"#)).unwrap();
        let c = credentials_from(&cfg, "localhost:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("ci"), Some("s3cret"))
        );
        let hub = credentials_from(&cfg, "docker.io").unwrap().unwrap();
        assert_eq!(hub.identitytoken.as_deref(), Some("tok"));
        assert!(credentials_from(&cfg, "ghcr.io").unwrap().is_none());

        std::fs::write(&cfg, r#"{"auths":{"ghcr.io":{"auth":"not base64!"}}}"#).unwrap();
        let e = credentials_from(&cfg, "ghcr.io").unwrap_err();
        assert!(format!("{e:#}").contains("not base64"), "{e:#}");
        assert!(!format!("{e:#}").contains("s3cret"));

        std::fs::write(&cfg, r#"{"credsStore":"slipway-no-such-helper"}"#).unwrap();
        let e = credentials_from(&cfg, "ghcr.io").unwrap_err();
        assert!(
            format!("{e:#}").contains("docker-credential-slipway-no-such-helper"),
            "{e:#}"
        );
    }
}
