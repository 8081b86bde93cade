//! `build --push` against a real registry: Debian's `docker-registry` on 127.0.0.1.

mod common;

use std::process::Command;

use common::registry::start as registry;

use slipway::record::{BuildReport, ImageRecord, Outcome};

/// A registry that wants `user:password` (basic auth, checked against an htpasswd file).
const CI_USER: &str = "ci";
const CI_PASSWORD: &str = "s3cret";
/// bcrypt of [`CI_PASSWORD`], as `htpasswd -B` writes it.
const CI_HTPASSWD: &str = "ci:$2b$12$z056TPbmvGa7r0K/0ZWOxORXFJnMOzrEXugp5ONybxBvL9LRDpUai";

#[tokio::test]
async fn pushes_every_tag_and_records_the_registry_digest() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(reg) = registry() else { return };
    let repository = format!("127.0.0.1:{}/{}", reg.port, common::unique("push"));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /\n",
    )
    .unwrap();
    let st = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "-t",
            &format!("{repository}:0123456789ab"),
            "-t",
            &format!("{repository}:latest"),
        ])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&st.stderr)
    );

    let mut report = BuildReport::default();
    report.components.insert(
        "web".into(),
        ImageRecord {
            image: format!("{repository}:0123456789ab"),
            repository: repository.clone(),
            tag: "0123456789ab".into(),
            tags: vec!["0123456789ab".into(), "latest".into()],
            image_id: String::new(),
            input_digest: String::new(),
            outcome: Outcome::Built,
            reason: None,
            duration_ms: 0,
            size: 0,
            pushed: None,
            push_error: None,
            attestations: Vec::new(),
        },
    );
    let daemon = slipway::docker::Daemon::new(docker.clone(), slipway::docker::endpoint());
    let rec = slipway::report::Recorder::default();
    slipway::push::push_all(&daemon, &mut report, &rec)
        .await
        .unwrap();

    let pinned = report.components["web"]
        .pushed
        .clone()
        .expect("pushed reference recorded");
    assert!(
        pinned.starts_with(&format!("{repository}@sha256:")),
        "{pinned}"
    );
    assert_eq!(report.deploy_refs()["web"], pinned);

    // The registry serves that exact manifest digest for both tags.
    let name = repository.split_once('/').unwrap().1;
    for tag in ["0123456789ab", "latest"] {
        let out = Command::new("curl")
            .args([
                "-sfI",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://127.0.0.1:{}/v2/{name}/manifests/{tag}",
                reg.port
            ))
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
        let digest = pinned.split_once('@').unwrap().1;
        assert!(
            headers.contains(&format!("docker-content-digest: {digest}")),
            "{tag}: {headers}"
        );
    }

    // A push to a registry that is not there fails with a hint naming it.
    let gone = format!("127.0.0.1:1/{}", common::unique("nowhere"));
    Command::new("docker")
        .args([
            "tag",
            &format!("{repository}:latest"),
            &format!("{gone}:latest"),
        ])
        .status()
        .unwrap();
    let e = slipway::push::push_image(
        &daemon,
        &format!("{gone}:latest"),
        &gone,
        &["latest".into()],
        &[],
        "web",
        &rec,
    )
    .await
    .unwrap_err();
    let text = slipway::error::render(&e);
    assert!(
        text.contains("pushing") && text.contains("127.0.0.1:1"),
        "{text}"
    );
    assert!(text.contains("hint:"), "{text}");

    for r in [
        format!("{repository}:0123456789ab"),
        format!("{repository}:latest"),
        format!("{gone}:latest"),
    ] {
        let _ = docker
            .remove_image(
                &r,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

/// slipway pushes the image itself: a second push of the same image (under another tag)
/// uploads no blob (the registry has each one), a push to a tag that holds the image already
/// does not even ask for the blobs, and every push gives the first one's digest.
#[tokio::test]
async fn a_second_push_uploads_no_blob() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(reg) = registry() else { return };
    let repository = format!("127.0.0.1:{}/{}", reg.port, common::unique("again"));
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("a.txt"), "a\n").unwrap();
    std::fs::write(ctx.path().join("b.txt"), "b\n").unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /\nCOPY b.txt /\n",
    )
    .unwrap();
    let local = format!("{repository}:one");
    let st = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &local])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let daemon = slipway::docker::Daemon::new(docker.clone(), slipway::docker::endpoint());
    let rec = slipway::report::Recorder::default();
    let push = |tags: &[&str]| {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let (daemon, rec, local, repository) = (&daemon, &rec, &local, &repository);
        async move {
            slipway::push::push_image(daemon, local, repository, &tags, &[], "web", rec)
                .await
                .unwrap()
        }
    };
    let first = push(&["one"]).await;
    let uploads = reg.uploads();
    assert_eq!(uploads, 3, "two layers and the config");
    let second = push(&["two"]).await;
    assert_eq!(second, first);
    assert_eq!(reg.uploads(), uploads, "the second push uploaded a blob");
    let heads = reg.requests("HEAD", "/blobs/");
    let third = push(&["one", "three"]).await;
    assert_eq!(third, first);
    assert_eq!(reg.uploads(), uploads);
    assert_eq!(
        reg.requests("HEAD", "/blobs/"),
        heads,
        "the third push asked for blobs"
    );
    let name = repository.split_once('/').unwrap().1;
    let digest = first.split_once('@').unwrap().1;
    for tag in ["one", "two", "three"] {
        let m = reg.get_json(&format!("{name}/manifests/{tag}"));
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(2), "{tag}: {m}");
        let out = Command::new("curl")
            .args([
                "-sfI",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!("http://{}/v2/{name}/manifests/{tag}", reg.address))
            .output()
            .unwrap();
        let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            headers.contains(&format!("docker-content-digest: {digest}")),
            "{tag}: {headers}"
        );
    }
    let _ = Command::new("docker").args(["rmi", &local]).output();
}

#[tokio::test]
async fn build_push_pins_digests_in_the_metadata_file() {
    let Some(docker) = common::daemon().await else {
        return;
    };
    let Some(reg) = registry() else { return };
    let prefix = format!("127.0.0.1:{}/{}", reg.port, common::unique("pushapp"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("web")).unwrap();
    std::fs::write(dir.path().join("web/index.html"), "hi\n").unwrap();
    std::fs::write(
        dir.path().join("web/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        format!(
            "[app]\nname = \"pushapp\"\n[images]\nprefix = \"{prefix}\"\n\
             [components.web]\ncontext = \"web\"\ndockerfile = \"web/Dockerfile\"\nport = 80\n\
             [components.api]\ncontext = \"web\"\ndockerfile = \"web/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
    // Another component built before: pushing `web` alone must not forget its record.
    let api = common::slipway()
        .current_dir(dir.path())
        .args(["build", "api"])
        .output()
        .unwrap();
    assert!(
        api.status.success(),
        "{}",
        String::from_utf8_lossy(&api.stderr)
    );
    let out = common::slipway()
        .current_dir(dir.path())
        .args([
            "--progress",
            "plain",
            "build",
            "web",
            "--push",
            "--metadata-file",
            "m.json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
    let web = &meta["components"]["web"];
    let pushed = web["pushed"].as_str().expect("pushed digest recorded");
    assert!(
        pushed.starts_with(&format!("{prefix}/web@sha256:")),
        "{pushed}"
    );
    assert!(stderr.contains("pushed"), "{stderr}");
    // The project's own record carries it too, for `manifests` and `chart` to pin.
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".slipway/last-build.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(last["components"]["web"]["pushed"], pushed);
    // The image's SBOM and provenance went with it, as OCI referrers of the pushed manifest
    // whose content is the files the build wrote.
    let (repository, digest) = pushed.split_once('@').unwrap();
    let name = repository.split_once('/').unwrap().1;
    let client = slipway::registry::Client::connect(
        &format!("127.0.0.1:{}", reg.port),
        name,
        None,
        true,
        false,
    )
    .await
    .unwrap();
    let referrers = slipway::registry::referrers::list(&client, digest, None)
        .await
        .unwrap();
    let attestations = web["attestations"]
        .as_array()
        .expect("attestations recorded");
    assert_eq!(attestations.len(), 2, "{web:#}");
    for a in attestations {
        let kind = a["media_type"].as_str().unwrap();
        let file = std::fs::read(dir.path().join(a["path"].as_str().unwrap())).unwrap();
        let found = referrers
            .iter()
            .find(|r| r.artifact_type.as_deref() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} referrer of {pushed}: {referrers:?}"));
        let artifact = client.get_manifest(&found.digest).await.unwrap().unwrap();
        let artifact: serde_json::Value = serde_json::from_slice(&artifact.bytes).unwrap();
        assert_eq!(artifact["subject"]["digest"], digest);
        let blob = artifact["layers"][0]["digest"].as_str().unwrap();
        let served = reg.get_bytes(&format!("{name}/blobs/{blob}"));
        assert_eq!(served, file, "{kind}");
    }
    let api_tags = last["components"]["api"]["tags"].clone();
    assert!(api_tags.is_array(), "api's record was lost: {last:#}");
    for tag in web["tags"]
        .as_array()
        .unwrap()
        .iter()
        .chain(api_tags.as_array().unwrap())
    {
        let r = tag.as_str().unwrap().to_string();
        let _ = docker
            .remove_image(
                &r,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

/// Runs `docker ARGS`, which must succeed; returns its stdout, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A project `name` with one component `app` (context `app/`) built from `dockerfile`.
fn app_project(dir: &std::path::Path, name: &str, prefix: &str, dockerfile: &str) {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        dir.join("slipway.toml"),
        format!(
            "[app]\nname = \"{name}\"\n[images]\nprefix = \"{prefix}\"\n[components.app]\ncontext = \"app\"\ndockerfile = \"app/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
}

/// A base image the daemon lacks is pulled from its registry (with the Docker config's
/// credentials, none needed here), then the build goes on.
#[tokio::test]
async fn a_missing_base_image_is_pulled_from_its_registry() {
    let Some(_docker) = common::daemon().await else {
        return;
    };
    let Some(reg) = registry() else {
        return;
    };
    let busybox = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    let remote = format!("127.0.0.1:{}/base/busybox:1.35", reg.port);
    docker_ok(&["tag", &busybox, &remote]);
    docker_ok(&["push", &remote]);
    docker_ok(&["rmi", &remote]);

    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-pulltest");
    app_project(
        dir.path(),
        "pull",
        &prefix,
        &format!("FROM {remote}\nRUN echo pulled > /pulled\n"),
    );
    let out = common::slipway()
        .current_dir(dir.path())
        .args(["--progress", "plain", "build"])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Command::new("docker").args(["rmi", "-f", &remote]).output();
    let _ = Command::new("docker")
        .args(["rmi", "-f", &format!("{prefix}/app:latest")])
        .output();
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains(&format!("pulling base image {remote}")),
        "{all}"
    );
}

/// Writes an executable `docker-credential-NAME` with `script` (sh) into `dir`.
fn helper(dir: &std::path::Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn a_credential_helper_that_fails_lies_or_hangs_stops_the_push_naming_it() {
    if common::daemon().await.is_none() {
        return;
    }
    let Some(reg) = registry() else { return };
    let host = format!("127.0.0.1:{}", reg.port);
    let prefix = format!("{host}/{}", common::unique("cred"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        format!("# {prefix}\nFROM slipway-test/busybox:1.35 AS production\nCOPY . /ctx\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        format!("[app]\nname = \"cred\"\n\n[images]\nprefix = \"{prefix}\"\n\n[components.app]\ncontext = \"app\"\ndockerfile = \"app/Dockerfile\"\nport = 8080\n"),
    )
    .unwrap();
    let bin = tempfile::tempdir().unwrap();
    helper(
        bin.path(),
        "garbage",
        "cat >/dev/null; echo 'Hello, I am not JSON'",
    );
    helper(
        bin.path(),
        "nosecret",
        "cat >/dev/null; echo '{\"Username\":null}'",
    );
    helper(
        bin.path(),
        "fails",
        "cat >/dev/null; echo 'keychain locked' >&2; exit 3",
    );
    helper(bin.path(), "hangs", "exec sleep 600");
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = tempfile::tempdir().unwrap();
    for (name, says) in [
        ("garbage", "not JSON credentials"),
        ("nosecret", "without a `Username` and a `Secret`"),
        ("fails", "failed (exit status: 3)"),
        ("hangs", "did not answer within 15s"),
    ] {
        std::fs::write(
            config.path().join("config.json"),
            format!("{{\"credHelpers\":{{\"{host}\":\"{name}\"}}}}"),
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        let out = common::slipway()
            .args(["build", "--push", "--progress=plain"])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("DOCKER_CONFIG", config.path())
            .env_remove("CI")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("docker-credential-{name}"))
                && stderr.contains(&host)
                && stderr.contains(says),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("pushed "), "{name}: {stderr}");
        assert!(!stderr.contains("Hello, I am"), "{name}: {stderr}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{name}");
    }
    // Nothing reached the registry.
    let catalog = Command::new("curl")
        .args(["-sf", &format!("http://{host}/v2/_catalog")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&catalog.stdout).trim(),
        "{\"repositories\":[]}"
    );
    remove_local(&prefix);
}

/// A registry that wants [`CI_USER`]'s password, beside a daemon: the registry (stopped on
/// drop) and the host the daemon pushes to.
async fn password_registry() -> Option<(common::registry::Registry, String)> {
    common::daemon().await?;
    let reg = common::registry::start_with_htpasswd(CI_HTPASSWD)?;
    let host = format!("127.0.0.1:{}", reg.port);
    Some((reg, host))
}

/// A working credential helper, as the default store (`credsStore`) and as the registry's own
/// (`credHelpers`), gets `build --push` into a registry that wants a password (Debian's
/// docker-registry with htpasswd), and the password is in no output. (A stored `auths` entry:
/// `the_registry_lookup_uses_the_push_credentials`; helpers that fail, lie or hang:
/// `a_credential_helper_that_fails_lies_or_hangs_stops_the_push_naming_it`.)
#[tokio::test]
async fn a_credential_helper_as_store_or_for_the_registry_pushes_with_a_password() {
    let Some((_reg, host)) = password_registry().await else {
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    // The helper protocol: `get`, the server on stdin, the credentials as JSON on stdout; a
    // server it does not know gets the keychain's "not found" and exit 1.
    helper(
        bin.path(),
        "slipwaytest",
        &format!(
            "[ \"$1\" = get ] || exit 1\nread -r server\ncase \"$server\" in\n  *{host}*) \
             echo '{{\"ServerURL\":\"{host}\",\"Username\":\"{CI_USER}\",\"Secret\":\"{CI_PASSWORD}\"}}' ;;\n  \
             *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac"
        ),
    );
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for config_json in [
        r#"{"credsStore":"slipwaytest"}"#.to_string(),
        format!(r#"{{"credHelpers":{{"{host}":"slipwaytest"}}}}"#),
    ] {
        let prefix = format!("{host}/{}", common::unique("credok"));
        let dir = tempfile::tempdir().unwrap();
        cache_project(dir.path(), &prefix, "");
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("config.json"), &config_json).unwrap();
        let (pushed_ok, all) = run_env(
            dir.path(),
            config.path(),
            &[("PATH", &path)],
            &["build", "--push", "--metadata-file", "m.json"],
        );
        remove_local(&prefix);
        assert!(pushed_ok, "{config_json}: {all}");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("m.json")).unwrap()).unwrap();
        let pushed = meta["components"]["web"]["pushed"]
            .as_str()
            .unwrap_or_default();
        assert!(
            pushed.starts_with(&format!("{prefix}/web@sha256:")),
            "{config_json}: {meta}"
        );
        assert!(!all.contains(CI_PASSWORD), "{config_json}: {all}");
    }
}

/// A registry that refuses the push: `build --push` fails naming the component and the
/// registry's words, and the metadata file (and the last build's record) still say what was
/// built and why it was not pushed (`push_error`), not the build's record alone.
#[tokio::test]
async fn a_refused_push_is_recorded_in_the_metadata_file_with_why() {
    if common::daemon().await.is_none() {
        return;
    }
    let Some(reg) = common::registry::start_read_only() else {
        return;
    };
    let prefix = format!("127.0.0.1:{}/{}", reg.port, common::unique("refused"));
    let dir = tempfile::tempdir().unwrap();
    cache_project(dir.path(), &prefix, "");
    let config = tempfile::tempdir().unwrap();
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["build", "--push", "--metadata-file", "m.json"],
    );
    assert!(!ok, "{all}");
    assert!(all.contains("pushing component `web`"), "{all}");
    assert!(
        all.contains("405") && all.contains("takes no pushes"),
        "{all}"
    );
    for file in ["m.json", ".slipway/last-build.json"] {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(file)).unwrap()).unwrap();
        let web = &meta["components"]["web"];
        assert_eq!(web["outcome"], "built", "{file}: {web}");
        assert!(web["pushed"].is_null(), "{file}: {web}");
        let why = web["push_error"].as_str().unwrap_or_default();
        assert!(
            why.contains("blob upload") && why.contains("405"),
            "{file}: {web}"
        );
    }
    // `up --push` leaves the last build's record saying the same (the image cached now).
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["up", "--push", "--cluster", "none"],
    );
    remove_local(&prefix);
    assert!(!ok && all.contains("takes no pushes"), "{all}");
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(".slipway/last-build.json")).unwrap(),
    )
    .unwrap();
    let web = &last["components"]["web"];
    assert_eq!(web["outcome"], "cached", "{web}");
    assert!(
        web["push_error"]
            .as_str()
            .is_some_and(|w| w.contains("405")),
        "{web}"
    );
}

/// A one-component project whose images go to `prefix` (a registry's repository prefix).
fn cache_project(dir: &std::path::Path, prefix: &str, extra_images: &str) {
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("web/index.html"), "cached in the registry\n").unwrap();
    std::fs::write(
        dir.join("web/Dockerfile"),
        "FROM slipway-test/busybox:1.35\nCOPY index.html /www/\nRUN echo built > /built\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("slipway.toml"),
        format!(
            "[app]\nname = \"regcache\"\n[images]\nprefix = \"{prefix}\"\n{extra_images}\
             [components.web]\ncontext = \"web\"\ndockerfile = \"web/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
}

/// Runs slipway in `dir` with `DOCKER_CONFIG` at `docker_config`; returns (success, all output).
fn run_in(dir: &std::path::Path, docker_config: &std::path::Path, args: &[&str]) -> (bool, String) {
    run_env(dir, docker_config, &[], args)
}

/// [`run_in`], with `env` set too.
fn run_env(
    dir: &std::path::Path,
    docker_config: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String) {
    let out = common::slipway()
        .current_dir(dir)
        .env("DOCKER_CONFIG", docker_config)
        .envs(env.iter().copied())
        .args(["--progress", "plain"])
        .args(args)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

/// The daemon's image events naming `repository` from `since` (unix seconds) until now: a
/// build names (tags) or loads the image it makes, a pull pulls it.
fn image_events(since: i64, repository: &str) -> Vec<String> {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=image",
            "--format",
            "{{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(repository))
        .map(str::to_string)
        .collect()
}

/// Now, in unix seconds, once the second of anything before has passed (events carry seconds).
fn now() -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Removes every local tag and digest reference of `prefix`'s images (as a fresh CI runner has
/// none).
fn remove_local(prefix: &str) {
    for (digests, format) in [
        (false, "{{.Repository}}:{{.Tag}}"),
        (true, "{{.Repository}}@{{.Digest}}"),
    ] {
        let mut ls = Command::new("docker");
        ls.args(["image", "ls", "--format", format, "--filter"])
            .arg(format!("reference={prefix}/*"));
        if digests {
            ls.arg("--digests");
        }
        let out = ls.output().unwrap();
        for reference in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = Command::new("docker").args(["rmi", reference]).output();
        }
    }
}

/// What a fresh CI runner has of the project's images: none on the daemon, no `.slipway`.
fn fresh_state(dir: &std::path::Path, prefix: &str) {
    remove_local(prefix);
    std::fs::remove_dir_all(dir.join(".slipway")).unwrap();
}

/// A registry without authentication, a project pushing to it ([`cache_project`]) and an
/// empty Docker config: (registry, prefix, project dir, Docker config dir).
async fn cache_setup(
    name: &str,
) -> Option<(
    common::registry::Registry,
    String,
    tempfile::TempDir,
    tempfile::TempDir,
)> {
    common::daemon().await?;
    let reg = registry()?;
    let prefix = format!("127.0.0.1:{}/{}", reg.port, common::unique(name));
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    cache_project(dir.path(), &prefix, "");
    Some((reg, prefix, dir, config))
}

/// `build --push --metadata-file FILE` in `dir`: the metadata, and all the output.
fn build_push(
    dir: &std::path::Path,
    docker_config: &std::path::Path,
    file: &str,
) -> (serde_json::Value, String) {
    let (ok, all) = run_in(
        dir,
        docker_config,
        &["build", "--push", "--metadata-file", file],
    );
    assert!(ok, "{all}");
    let meta = serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
    (meta, all)
}

/// Pushes once, then runs as a fresh runner would (no image on the daemon, no .slipway):
/// `build --push` builds nothing, records the registry's digest, and `manifests` pins it.
/// Returns the pinned reference.
fn fresh_runner_builds_nothing(
    dir: &std::path::Path,
    docker_config: &std::path::Path,
    prefix: &str,
) -> String {
    let (first, _) = build_push(dir, docker_config, "first.json");
    assert_eq!(first["components"]["web"]["outcome"], "built", "{first}");
    let pushed = first["components"]["web"]["pushed"]
        .as_str()
        .unwrap()
        .to_string();
    let image = first["components"]["web"]["image"]
        .as_str()
        .unwrap()
        .to_string();

    fresh_state(dir, prefix);

    let (ok, plan) = run_in(dir, docker_config, &["plan", "--push"]);
    assert!(ok, "{plan}");
    assert!(plan.contains("cached (registry)"), "{plan}");
    let (ok, plain) = run_in(dir, docker_config, &["plan"]);
    assert!(ok && plain.contains("build: never built"), "{plain}");

    let t0 = now();
    let (second, all) = build_push(dir, docker_config, "second.json");
    let web = &second["components"]["web"];
    assert_eq!(web["outcome"], "registry", "{second}");
    assert_eq!(web["pushed"], pushed.as_str(), "{second}");
    assert_eq!(web["image"], image.as_str(), "{second}");
    // The daemon built nothing, loaded nothing, pulled nothing: no event names the image, and
    // the image is not there.
    let events = image_events(t0, prefix);
    assert!(events.is_empty(), "the daemon saw: {events:?}\n{all}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "{image} is on the daemon");
    // The project's record pins it, so the manifests do.
    let (ok, all) = run_in(dir, docker_config, &["manifests"]);
    assert!(ok, "{all}");
    let deploy = std::fs::read_to_string(dir.join("k8s/web.yaml")).unwrap();
    assert!(deploy.contains(&format!("'{pushed}'")), "{deploy}");
    pushed
}

#[tokio::test]
async fn a_fresh_runner_builds_nothing_the_registry_has() {
    let Some((_reg, prefix, dir, config)) = cache_setup("regcache").await else {
        return;
    };
    let t0 = now();
    fresh_runner_builds_nothing(dir.path(), config.path(), &prefix);
    // The first run's build did show: the events above are a real check.
    assert!(!image_events(t0, &prefix).is_empty());

    // `[images] registry = true` looks it up without pushing (a read-only CI job).
    fresh_state(dir.path(), &prefix);
    cache_project(dir.path(), &prefix, "registry = true\n");
    let (ok, all) = run_in(dir.path(), config.path(), &["build"]);
    assert!(ok, "{all}");
    assert!(all.contains("cached (registry)"), "{all}");

    // A one-line change is not in the registry: it builds.
    std::fs::write(dir.path().join("web/index.html"), "changed\n").unwrap();
    let (ok, all) = run_in(dir.path(), config.path(), &["plan", "--push"]);
    assert!(ok && all.contains("build: "), "{all}");
    assert!(!all.contains("cached (registry)"), "{all}");
    remove_local(&prefix);
}

/// `up --push` on a fresh runner with a local cluster: the image the registry has is pulled
/// (not built) and loaded into the node, and the manifests pin the registry's digest.
#[tokio::test]
async fn up_pulls_what_the_registry_has_and_loads_it() {
    let Some((_reg, prefix, dir, config)) = cache_setup("regup").await else {
        return;
    };
    let (ok, all) = run_in(dir.path(), config.path(), &["build", "--push"]);
    assert!(ok, "{all}");
    fresh_state(dir.path(), &prefix);

    let cluster = common::unique("regup");
    let _kind = common::kind(&cluster);
    let target = format!("kind:{cluster}");
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &[
            "up",
            "--push",
            "--cluster",
            &target,
            "--metadata-file",
            "up.json",
        ],
    );
    assert!(ok, "{all}");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("up.json")).unwrap()).unwrap();
    let web = &run["build"]["components"]["web"];
    assert_eq!(web["outcome"], "registry", "{run}");
    let pushed = web["pushed"].as_str().unwrap();
    let loads = run["load"]["results"].as_array().unwrap();
    assert!(loads.len() == 1 && loads[0]["status"] == "loaded", "{run}");
    let image = web["image"].as_str().unwrap();
    let ls = Command::new("docker")
        .args([
            "exec",
            &format!("{cluster}-control-plane"),
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains(image),
        "{}",
        String::from_utf8_lossy(&ls.stdout)
    );
    let deploy = std::fs::read_to_string(dir.path().join("k8s/web.yaml")).unwrap();
    assert!(deploy.contains(&format!("'{pushed}'")), "{deploy}");

    // `build --push` on a fresh runner records it without pulling; `load` pulls it then.
    fresh_state(dir.path(), &prefix);
    let (built, _) = build_push(dir.path(), config.path(), "b.json");
    assert_eq!(built["components"]["web"]["outcome"], "registry", "{built}");
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["load", "--cluster", &target, "--metadata-file", "l.json"],
    );
    assert!(ok && all.contains("pulled from the registry"), "{all}");
    let load: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("l.json")).unwrap()).unwrap();
    assert_eq!(load["results"][0]["status"], "already_present", "{load}");
    docker_ok(&["image", "inspect", image]);
    remove_local(&prefix);
}

/// `verify --against REGISTRY_REF` rebuilds here and compares with the pushed image: it passes
/// for the image this tree published, and for one pushed from a changed tree it fails naming
/// the layer and the file.
#[tokio::test]
async fn verify_against_a_pushed_image_names_the_layer_and_file_that_differ() {
    let Some((_reg, prefix, dir, config)) = cache_setup("verreg").await else {
        return;
    };
    let pushed = |file: &str| {
        let (meta, _) = build_push(dir.path(), config.path(), file);
        meta["components"]["web"]["pushed"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let good = pushed("a.json");
    std::fs::write(dir.path().join("web/index.html"), "changed\n").unwrap();
    let changed = pushed("b.json");
    assert_ne!(good, changed);
    std::fs::write(
        dir.path().join("web/index.html"),
        "cached in the registry\n",
    )
    .unwrap();

    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["verify", "web", "--against", &good],
    );
    assert!(ok, "{all}");
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["verify", "web", "--against", &changed],
    );
    assert!(!ok, "{all}");
    assert!(
        all.contains(&format!("is not {changed}"))
            && all.contains("layer 2 (`COPY index.html /www/`)")
            && all.contains("/www/index.html"),
        "{all}"
    );
    remove_local(&prefix);
}

#[tokio::test]
async fn the_registry_lookup_uses_the_push_credentials() {
    let Some((_reg, host)) = password_registry().await else {
        return;
    };
    let prefix = format!("{host}/{}", common::unique("regauth"));
    let dir = tempfile::tempdir().unwrap();
    cache_project(dir.path(), &prefix, "");
    let config = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{CI_USER}:{CI_PASSWORD}"));
    std::fs::write(
        config.path().join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    fresh_runner_builds_nothing(dir.path(), config.path(), &prefix);

    // Without credentials the lookup fails before anything is built, saying how to log in,
    // and never shows the password.
    fresh_state(dir.path(), &prefix);
    let anonymous = tempfile::tempdir().unwrap();
    let t0 = now();
    let (ok, all) = run_in(dir.path(), anonymous.path(), &["build", "--push"]);
    assert!(!ok, "{all}");
    assert!(
        all.contains(&format!("looking up {prefix}/web:"))
            && all.contains(&format!("docker login {host}")),
        "{all}"
    );
    assert!(image_events(t0, &prefix).is_empty(), "{all}");
    let (_, all) = run_in(dir.path(), config.path(), &["-v", "build", "--push"]);
    assert!(!all.contains(CI_PASSWORD) && !all.contains(&auth), "{all}");
    remove_local(&prefix);
}

/// `slipway.lock` pins a base image from a registry: written by the first build, a tag that
/// moved is named (`--locked` refuses it), a fresh runner pulls the pinned digest (not the
/// moved tag) and gets the same image tags, and `lock --update` moves the pin.
#[tokio::test]
async fn slipway_lock_pins_base_images() {
    if common::daemon().await.is_none() {
        return;
    }
    let Some(reg) = registry() else { return };
    let busybox = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    let base_repo = format!("127.0.0.1:{}/{}", reg.port, common::unique("base"));
    let base = format!("{base_repo}:1");
    let docker = docker_ok;
    docker(&["tag", &busybox, &base]);
    docker(&["push", &base]);

    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", reg.port);
    let prefix = format!("{host}/{}", common::unique("pins"));
    app_project(
        dir.path(),
        "pins",
        &prefix,
        &format!("FROM {base}\nCOPY index.html /www/\n"),
    );
    std::fs::write(dir.path().join("app/index.html"), "pinned\n").unwrap();
    let lock_path = dir.path().join("slipway.lock");
    // The tag a build gave `app`, from the metadata file it wrote.
    let tag_in = |file: &str| -> serde_json::Value {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(file)).unwrap()).unwrap();
        meta["components"]["app"]["tag"].clone()
    };

    // The first build writes the lock: the base's ID, registry digest and platform.
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["build", "--metadata-file", "m1.json"],
    );
    assert!(ok, "{all}");
    assert!(all.contains("wrote slipway.lock"), "{all}");
    let first_lock = std::fs::read_to_string(&lock_path).unwrap();
    let old_id = docker(&["image", "inspect", "-f", "{{.Id}}", &base]);
    assert!(
        first_lock.contains(&format!("[base.\"{base}\"]"))
            && first_lock.contains(&format!("id = \"{old_id}\""))
            && first_lock.contains(&format!("digest = \"{base_repo}@sha256:"))
            && first_lock.contains("platform = \"linux/amd64\""),
        "{first_lock}"
    );
    let first_tag = tag_in("m1.json");
    // `slipway lock` on the same pins writes the same bytes.
    let (ok, all) = run_in(dir.path(), config.path(), &["lock"]);
    assert!(ok && all.contains("is current"), "{all}");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), first_lock);

    // The tag moves in the registry and on this daemon.
    let moved = tempfile::tempdir().unwrap();
    std::fs::write(
        moved.path().join("Dockerfile"),
        format!("FROM {busybox}\nRUN echo moved > /moved\n"),
    )
    .unwrap();
    docker(&[
        "build",
        "-q",
        "-t",
        &base,
        &moved.path().display().to_string(),
    ]);
    docker(&["push", &base]);
    let (ok, all) = run_in(dir.path(), config.path(), &["build", "--locked"]);
    assert!(!ok, "{all}");
    assert!(
        all.contains("--locked") && all.contains(&format!("base image moved: {base} (locked")),
        "{all}"
    );
    let (ok, all) = run_in(dir.path(), config.path(), &["lock"]);
    assert!(!ok && all.contains("slipway lock --update"), "{all}");
    let (ok, plan) = run_in(dir.path(), config.path(), &["plan"]);
    assert!(
        ok && plan.contains("warning: slipway.lock: base image moved"),
        "{plan}"
    );

    // A fresh runner (no base, no image on the daemon) pulls the pinned digest, not the moved
    // tag: the same image tag as the first build.
    fresh_state(dir.path(), &prefix);
    docker(&["rmi", &base]);
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["build", "--locked", "--metadata-file", "m2.json"],
    );
    assert!(ok, "{all}");
    assert_eq!(tag_in("m2.json"), first_tag);
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &base]),
        old_id
    );

    // `lock --update` moves the pin to what the tag points at now.
    let (ok, all) = run_in(dir.path(), config.path(), &["lock", "--update"]);
    assert!(ok, "{all}");
    let new_id = docker(&["image", "inspect", "-f", "{{.Id}}", &base]);
    assert_ne!(new_id, old_id);
    let updated = std::fs::read_to_string(&lock_path).unwrap();
    assert!(updated.contains(&format!("id = \"{new_id}\"")), "{updated}");
    let (ok, all) = run_in(
        dir.path(),
        config.path(),
        &["build", "--locked", "--metadata-file", "m3.json"],
    );
    assert!(ok, "{all}");
    let moved_tag = tag_in("m3.json");
    assert_ne!(moved_tag, first_tag);

    // A fresh runner with the lock and the registry: no base image, no app image, no
    // .slipway. `build --locked --push` of pushed inputs pulls nothing and builds nothing.
    let (ok, all) = run_in(dir.path(), config.path(), &["build", "--push"]);
    assert!(ok, "{all}");
    fresh_state(dir.path(), &prefix);
    docker(&["rmi", &base]);
    let t0 = now();
    let (m4, all) = build_push(dir.path(), config.path(), "m4.json");
    assert_eq!(m4["components"]["app"]["outcome"], "registry", "{m4}");
    assert_eq!(m4["components"]["app"]["tag"], moved_tag, "{m4}");
    let events = image_events(t0, &host);
    assert!(events.is_empty(), "the daemon saw: {events:?}\n{all}");

    // --locked with no lock file says how to make one.
    std::fs::remove_file(&lock_path).unwrap();
    let (ok, all) = run_in(dir.path(), config.path(), &["build", "--locked"]);
    assert!(!ok && all.contains("run `slipway lock`"), "{all}");

    remove_local(&prefix);
    let _ = Command::new("docker").args(["rmi", &base]).output();
}

/// The OCI referrers helper on Debian's docker-registry 2.8 (no referrers API): an artifact
/// attached to an image is pushed with `subject` and `artifactType`, listed under the tag
/// schema's `sha256-<hex>` index, found again by `referrers::list`; attaching the same
/// artifact again changes nothing, and the image itself is untouched. With htpasswd auth, the
/// client authenticates with the Docker config's user and password, and without them fails
/// with a hint to log in.
#[tokio::test]
async fn artifacts_attach_to_an_image_as_referrers() {
    use slipway::registry::{self, referrers, Client};
    let Some(reg) = common::registry::start_with_htpasswd(CI_HTPASSWD) else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.port);
    let name = common::unique("refs");
    let e = Client::connect(&host, &name, None, true, true)
        .await
        .err()
        .unwrap();
    let text = slipway::error::render(&e);
    assert!(text.contains("docker login"), "{text}");
    let creds = bollard::auth::DockerCredentials {
        username: Some(CI_USER.into()),
        password: Some(CI_PASSWORD.into()),
        ..Default::default()
    };
    let client = Client::connect(&host, &name, Some(creds), true, true)
        .await
        .unwrap();

    // A small image to attach to.
    let layer = client
        .put_blob(registry::OCI_LAYER_GZIP, b"not really a layer")
        .await
        .unwrap();
    let config = client
        .put_blob(
            registry::OCI_CONFIG,
            br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .await
        .unwrap();
    let image = slipway::push::manifest_of(config, vec![layer]).to_bytes();
    let (image_digest, _) = client
        .put_manifest("v1", registry::OCI_MANIFEST, &image)
        .await
        .unwrap();
    let subject = registry::Descriptor::of(registry::OCI_MANIFEST, &image);

    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let attach = |kind: &'static str, bytes: &'static [u8]| {
        let (client, subject) = (&client, &subject);
        async move {
            referrers::attach(
                client,
                subject,
                kind,
                &[referrers::Blob {
                    media_type: kind,
                    bytes,
                }],
            )
            .await
            .unwrap()
        }
    };
    let a = attach("application/spdx+json", sbom).await;
    assert_eq!(a.artifact_type.as_deref(), Some("application/spdx+json"));
    let again = attach("application/spdx+json", sbom).await;
    assert_eq!(again, a);
    let b = attach("application/vnd.in-toto+json", br#"{"_type":"x"}"#).await;

    let all = referrers::list(&client, &image_digest, None).await.unwrap();
    assert_eq!(all, vec![a.clone(), b.clone()]);
    let sboms = referrers::list(&client, &image_digest, Some("application/spdx+json"))
        .await
        .unwrap();
    assert_eq!(sboms, vec![a.clone()]);
    // What the registry holds: the tag schema's index, and the artifact naming its subject.
    let tag = referrers::fallback_tag(&image_digest);
    let index: serde_json::Value =
        serde_json::from_slice(&client.get_manifest(&tag).await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let artifact = client.get_manifest(&a.digest).await.unwrap().unwrap();
    let artifact: serde_json::Value = serde_json::from_slice(&artifact.bytes).unwrap();
    assert_eq!(artifact["subject"]["digest"], image_digest.as_str());
    assert_eq!(artifact["artifactType"], "application/spdx+json");
    assert_eq!(artifact["config"]["mediaType"], registry::OCI_EMPTY);
    // The image is as it was.
    let v1 = client.get_manifest("v1").await.unwrap().unwrap();
    assert_eq!(v1.digest, image_digest);
}
