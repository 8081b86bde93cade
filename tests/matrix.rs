//! The reference app through `slipway up` on every daemon of the test matrix: Docker 20.10,
//! Docker 26.1 with the classic image store, and Docker 26.1 with the containerd image store
//! (Docker Desktop's and Engine 29's default), where builds must go over the BuildKit session.

mod common;

use std::path::Path;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "node_modules" || name == ".next" || name == "__pycache__" {
            continue;
        }
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if ft.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_reference_app_comes_up_on_every_daemon() {
    let repo = common::repo();
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo.join("contexts"), &dir.path().join("contexts"));
    copy_tree(&repo.join("dockerfiles"), &dir.path().join("dockerfiles"));
    std::fs::copy(repo.join("slipway.toml"), dir.path().join("slipway.toml")).unwrap();
    for (label, host) in common::daemon_matrix() {
        let out = common::slipway()
            .current_dir(dir.path())
            .env("DOCKER_HOST", &host)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["--progress", "plain", "up", "--cluster", "none"])
            .args(["--metadata-file", "run.json"])
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{label} ({host}):\n{text}");
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("run.json")).unwrap()).unwrap();
        let text_run = run.to_string();
        for component in ["backend", "frontend"] {
            assert!(
                text_run.contains(&format!("slipway/{component}:")),
                "{label}: {component} missing from run.json: {text_run}"
            );
            // The image is on that daemon under its tag, and runs there as the non-root user.
            let id = std::process::Command::new("docker")
                .env("DOCKER_HOST", &host)
                .args(["image", "inspect", "--format", "{{.Config.User}}"])
                .arg(format!("slipway/{component}:latest"))
                .output()
                .unwrap();
            assert!(
                id.status.success(),
                "{label}: slipway/{component}:latest: {}",
                String::from_utf8_lossy(&id.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&id.stdout).trim(),
                "10001:10001",
                "{label}"
            );
        }
        assert!(dir.path().join("k8s").is_dir(), "{label}: no manifests");
    }
}
