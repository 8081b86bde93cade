//! `build --push` against a real registry: Debian's `docker-registry` on 127.0.0.1.

mod common;

use std::process::Command;

use common::registry::start as registry;

use slipway::record::{BuildReport, ImageRecord, Outcome};

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
        .status()
        .unwrap();
    assert!(st.success());

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
        },
    );
    let daemon = slipway::docker::Daemon {
        docker: docker.clone(),
        endpoint: slipway::docker::endpoint(),
    };
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
                "Accept: application/vnd.docker.distribution.manifest.v2+json",
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
    let e = slipway::push::push_one(&daemon, &gone, "latest", "web", &rec)
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
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    docker(&["tag", &busybox, &remote]);
    docker(&["push", &remote]);
    docker(&["rmi", &remote]);

    let dir = tempfile::tempdir().unwrap();
    let prefix = common::unique("slipway-pulltest");
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("app/Dockerfile"),
        format!("FROM {remote}\nRUN echo pulled > /pulled\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("slipway.toml"),
        format!(
            "[app]\nname = \"pull\"\n[images]\nprefix = \"{prefix}\"\n[components.app]\ncontext = \"app\"\ndockerfile = \"app/Dockerfile\"\nport = 80\n"
        ),
    )
    .unwrap();
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
    let tags = Command::new("docker")
        .args([
            "image",
            "ls",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
        ])
        .arg(format!("reference={prefix}"))
        .output()
        .unwrap();
    for tag in String::from_utf8_lossy(&tags.stdout).lines() {
        let _ = Command::new("docker").args(["rmi", tag]).output();
    }
}
