//! The Docker daemon matrix of the test environment (tests/common `daemon_matrix`,
//! scripts/env/daemons): each daemon answers, is the engine and image store its label says, and
//! holds the base images that tests build FROM. Under CI=true a missing daemon fails here.

mod common;

use common::{DAEMON_CLASSIC, DAEMON_CONTAINERD, DAEMON_HOST};

/// The base images every daemon of the matrix holds (scripts/env/images --env names them).
fn base_images() -> Vec<String> {
    [
        ("SLIPWAY_TEST_IMAGE_PYTHON", "slipway-test/python:3.11"),
        ("SLIPWAY_TEST_IMAGE_NODE", "slipway-test/node:20"),
        ("SLIPWAY_TEST_IMAGE_BUSYBOX", "slipway-test/busybox:1.35"),
    ]
    .into_iter()
    .map(|(var, default)| std::env::var(var).unwrap_or_else(|_| default.to_string()))
    .collect()
}

#[tokio::test]
async fn every_daemon_is_what_its_label_says() {
    let daemons = common::daemon_matrix_clients();
    for (label, docker) in &daemons {
        let version = docker
            .version()
            .await
            .unwrap_or_else(|e| panic!("{label}: version: {e}"))
            .version
            .unwrap_or_default();
        let info = docker
            .info()
            .await
            .unwrap_or_else(|e| panic!("{label}: info: {e}"));
        let driver = info.driver.unwrap_or_default();
        let containerd_store = info.driver_status.unwrap_or_default().iter().any(|kv| {
            kv.len() == 2 && kv[0] == "driver-type" && kv[1] == "io.containerd.snapshotter.v1"
        });
        eprintln!("{label}: Docker {version}, storage driver {driver}, containerd image store: {containerd_store}");
        match *label {
            // The host's daemon is whatever answers there outside CI; CI installs 20.10.
            DAEMON_HOST => {
                if common::in_ci() {
                    assert!(version.starts_with("20.10."), "{label}: Docker {version}");
                }
            }
            DAEMON_CLASSIC => {
                assert!(version.starts_with("26.1."), "{label}: Docker {version}");
                assert_eq!(driver, "overlay2", "{label}");
                assert!(
                    !containerd_store,
                    "{label}: uses the containerd image store"
                );
            }
            DAEMON_CONTAINERD => {
                assert!(version.starts_with("26.1."), "{label}: Docker {version}");
                assert_eq!(driver, "overlayfs", "{label}");
                assert!(containerd_store, "{label}: not the containerd image store");
            }
            other => panic!("unknown daemon label {other}"),
        }
        for image in base_images() {
            docker
                .inspect_image(&image)
                .await
                .unwrap_or_else(|e| panic!("{label}: base image {image}: {e}"));
        }
    }
}

#[test]
fn the_matrix_lists_each_daemon_once_in_order() {
    let labels: Vec<&str> = common::daemon_matrix().iter().map(|(l, _)| *l).collect();
    let order = [DAEMON_HOST, DAEMON_CLASSIC, DAEMON_CONTAINERD];
    let expected: Vec<&str> = order
        .iter()
        .copied()
        .filter(|l| labels.contains(l))
        .collect();
    assert_eq!(labels, expected);
    if common::in_ci() {
        assert_eq!(labels, order, "CI runs against every daemon");
    }
}
