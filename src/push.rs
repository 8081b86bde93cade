//! The registry: `build --push` sends images and records the digests to pin; before building,
//! [`lookup`] asks whether the registry has an image already; [`pull`] fetches one.
//!
//! Credentials are found the way the docker CLI finds them, in `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`): a credential helper for the registry (`credHelpers`),
//! else the default store (`credsStore`), else a stored `auths` entry. They are handed to the
//! daemon in the request header only, never logged. After a push the manifest digest the
//! registry answered is recorded, so manifests and the chart pin `repo@sha256:...`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use futures_util::StreamExt;

use crate::docker::Daemon;
use crate::error::Fail;
use crate::record::{BuildReport, Outcome};
use crate::report::{Event, Reporter};

/// The registry host an image reference lives in, as the docker CLI names it
/// (`docker.io` for Docker Hub).
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => "docker.io".to_string(),
    }
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

/// The manifest digest (`sha256:...`) the registry holds for `repository:tag`, or `None` when
/// it has no such tag. The daemon asks the registry (the distribution API's manifest HEAD, `GET
/// /distribution/NAME/json`) with the same credentials a push sends, so whatever registry the
/// daemon can push to (TLS, insecure registries, mirrors as configured there) answers here too;
/// nothing is pulled. Anything else than "not there" (refused credentials, an unreachable
/// registry) is an error naming the registry: a CI run must not build and push blind.
pub async fn lookup(
    daemon: &Daemon,
    repository: &str,
    tag: &str,
) -> anyhow::Result<Option<String>> {
    let (registry, creds) = credentials_for(repository).await?;
    let reference = format!("{repository}:{tag}");
    match daemon
        .docker
        .inspect_registry_image(&reference, creds)
        .await
    {
        Ok(found) => {
            let digest = found.descriptor.digest.unwrap_or_default();
            Ok(Some(digest).filter(|d| d.starts_with("sha256:")))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(bollard::errors::Error::DockerResponseServerError { message, .. })
            if message.contains("manifest unknown") || message.contains("name unknown") =>
        {
            Ok(None)
        }
        Err(e) => {
            let text = e.to_string();
            let hint = if text.contains("unauthorized")
                || text.contains("denied")
                || text.contains("credentials")
            {
                format!("log in first: `docker login {registry}` (slipway reads the same Docker config)")
            } else {
                format!("check that {registry} is reachable from the Docker daemon")
            };
            Err(anyhow::Error::new(e).context(
                Fail::job(format!("looking up {reference} in {registry} failed")).hint(hint),
            ))
        }
    }
}

/// Pulls `reference` (`REPO:TAG` or `REPO@sha256:...`) into the daemon with the Docker
/// config's credentials, reporting a line as each layer arrives under `task`. The error is the
/// daemon's; callers say what the image was for.
pub async fn pull(
    daemon: &Daemon,
    reference: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<()> {
    let (repo, tag) = match reference.split_once('@') {
        Some((r, d)) => (r.to_string(), d.to_string()),
        None => match reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
            Some((r, t)) => (r.to_string(), t.to_string()),
            None => (reference.to_string(), "latest".to_string()),
        },
    };
    let (_, creds) = credentials_for(reference).await?;
    let options = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo),
        tag: Some(tag),
        ..Default::default()
    };
    let mut stream = daemon.docker.create_image(Some(options), None, creds);
    let mut done = std::collections::BTreeSet::new();
    while let Some(item) = stream.next().await {
        let info = item?;
        if let (Some(id), Some(status)) = (&info.id, &info.status) {
            if status == "Pull complete" && done.insert(id.clone()) {
                reporter.report(Event::Log {
                    task: task.to_string(),
                    line: format!("layer {id} pulled ({} so far)", done.len()),
                });
            }
        }
    }
    Ok(())
}

/// The digest in a push status line: `TAG: digest: sha256:HEX size: N`.
fn digest_in_status(status: &str) -> Option<String> {
    let rest = status.split("digest: ").nth(1)?;
    let digest = rest.split_whitespace().next()?;
    (digest.starts_with("sha256:") && digest.len() == 71).then(|| digest.to_string())
}

/// Pushes one `repository:tag`; returns `repository@sha256:...`.
pub async fn push_one(
    daemon: &Daemon,
    repository: &str,
    tag: &str,
    task: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<String> {
    let (registry, creds) = credentials_for(repository).await?;
    let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let mut stream = daemon.docker.push_image(repository, Some(opts), creds);
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            let hint = if e.to_string().contains("unauthorized") || e.to_string().contains("denied") {
                format!("log in first: `docker login {registry}` (slipway reads the same Docker config)")
            } else {
                format!("check that {registry} is reachable from the Docker daemon")
            };
            anyhow::Error::new(e).context(Fail::job(format!("pushing {repository}:{tag} to {registry} failed")).hint(hint))
        })?;
        if let Some(status) = &info.status {
            if let Some(d) = digest_in_status(status) {
                digest = Some(d);
            }
        }
    }
    let digest = match digest {
        Some(d) => d,
        None => {
            // Fall back to what the daemon recorded for the repository.
            let img = daemon
                .docker
                .inspect_image(&format!("{repository}:{tag}"))
                .await?;
            img.repo_digests
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| {
                    d.strip_prefix(&format!("{repository}@"))
                        .map(str::to_string)
                })
                .ok_or_else(|| {
                    Fail::job(format!(
                        "the registry did not report a digest for {repository}:{tag}"
                    ))
                })?
        }
    };
    reporter.report(Event::Finished {
        task: task.to_string(),
        outcome: format!("pushed {repository}@{digest}"),
    });
    Ok(format!("{repository}@{digest}"))
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
            task: name.clone(),
            what: format!("push to {}", registry_of(&rec.repository)),
        });
        let mut pinned = None;
        for tag in &rec.tags {
            // Entries are `REPO:TAG` references or bare tags.
            let tag = tag
                .strip_prefix(&format!("{}:", rec.repository))
                .unwrap_or(tag);
            match push_one(daemon, &rec.repository, tag, name, reporter).await {
                Ok(p) => pinned = pinned.or(Some(p)),
                Err(e) => {
                    reporter.report(Event::Failed {
                        task: name.clone(),
                        error: format!("{e:#}"),
                        log_tail: vec![],
                    });
                    failures.insert(name.clone(), e);
                    break;
                }
            }
        }
        if !failures.contains_key(name) {
            rec.pushed = pinned;
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

    #[test]
    fn digest_from_status_line() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            digest_in_status(&format!("latest: digest: {d} size: 527")),
            Some(d)
        );
        assert_eq!(digest_in_status("Pushed"), None);
    }
}
