//! The receiver (src/docker/receive.rs) against the real daemon: a push delivers every layer the
//! receiver lacks, exactly as the image holds it, and none it says it has; a push past the budget
//! fails; the temporary tag never stays behind.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use slipway::docker::receive::{push_to, Presence, Receiver};

/// The host's daemon as slipway connects to it, or `None` outside CI when none answers.
async fn daemon() -> Option<slipway::docker::Daemon> {
    common::daemon().await?;
    Some(
        slipway::docker::connect(std::time::Duration::from_secs(10))
            .await
            .expect("the daemon answered a ping a moment ago"),
    )
}

fn busybox() -> String {
    let image = std::env::var("SLIPWAY_TEST_IMAGE_BUSYBOX")
        .unwrap_or_else(|_| "slipway-test/busybox:1.35".to_string());
    let ok = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "base image {image} missing: run scripts/env/images busybox"
    );
    image
}

/// A tag removed (with `docker rmi`) when the test ends, however it ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

/// Busybox plus one layer of `size` random bytes (new on every run), untagged: its ID.
fn build_untagged(size: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let seed = common::unique("receive");
    let mut bytes = Vec::with_capacity(size + 32);
    let mut block = Sha256::digest(seed.as_bytes()).to_vec();
    while bytes.len() < size {
        bytes.extend_from_slice(&block);
        block = Sha256::digest(&block).to_vec();
    }
    bytes.truncate(size);
    std::fs::write(dir.path().join("random.bin"), &bytes).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nCOPY random.bin /random.bin\n", busybox()),
    )
    .unwrap();
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q"])
        .arg(dir.path())
        .output()
        .unwrap();
    common::ok(out, "docker build")
}

/// [`build_untagged`], tagged: the tag (removed when dropped) and the image ID.
fn build(size: usize) -> (Image, String) {
    let id = build_untagged(size);
    let tag = format!("slipway-test/receive:{}", common::unique("receive"));
    common::ok(
        Command::new("docker")
            .args(["tag", &id, &tag])
            .output()
            .unwrap(),
        "docker tag",
    );
    (Image(tag), id)
}

fn absent() -> Presence {
    Arc::new(|_: &str| None)
}

/// The digests a presence was asked about, in order.
type Asked = Arc<std::sync::Mutex<Vec<String>>>;

/// `answer`, recording what it is asked.
fn recording(answer: impl Fn(&str) -> Option<u64> + Send + Sync + 'static) -> (Presence, Asked) {
    let asked = Asked::default();
    let log = asked.clone();
    let presence: Presence = Arc::new(move |d: &str| {
        log.lock().unwrap().push(d.to_string());
        answer(d)
    });
    (presence, asked)
}

/// The image's tags and digests on the daemon, to see that no temporary one is left.
fn references(id: &str) -> String {
    let out = Command::new("docker")
        .args([
            "image",
            "inspect",
            "--format",
            "{{json .RepoTags}} {{json .RepoDigests}}",
            id,
        ])
        .output()
        .unwrap();
    common::ok(out, "docker image inspect")
}

#[tokio::test]
async fn a_push_delivers_every_layer_the_receiver_lacks_as_the_image_holds_it() {
    let Some(daemon) = daemon().await else { return };
    let (image, id) = build(64 << 10);
    let dir = tempfile::tempdir().unwrap();
    let (presence, asked) = recording(|_| None);
    let receiver = Receiver::start(dir.path(), presence, 1 << 30)
        .await
        .unwrap();

    let pushed = push_to(&daemon, &image.0, &receiver).await.unwrap();

    assert_eq!(pushed.config, id, "the config blob is the image");
    let blobs: HashMap<String, _> = receiver
        .blobs()
        .into_iter()
        .map(|b| (b.digest.clone(), b))
        .collect();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&blobs[&pushed.config].path).unwrap()).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(pushed.layers.len(), diff_ids.len());
    assert!(pushed.layers.len() >= 2, "busybox and the random layer");
    for (layer, diff_id) in pushed.layers.iter().zip(diff_ids) {
        let blob = blobs
            .get(&layer.digest)
            .unwrap_or_else(|| panic!("layer {} was not uploaded", layer.digest));
        assert_eq!(blob.size, layer.size);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&blob.path).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        assert_eq!(got, diff_id.as_str().unwrap(), "layer {}", layer.digest);
    }
    // The new layer has no v2 metadata on the daemon: it is uploaded without being asked about.
    let top = &pushed.layers.last().unwrap().digest;
    assert!(!asked.lock().unwrap().contains(top), "{:?}", asked.lock());
    let host = receiver.host();
    let refs = references(&id);
    assert!(!refs.contains(&host), "temporary tag left: {refs}");
    assert!(refs.contains(&image.0), "the image's own tag stays: {refs}");
    receiver.stop().await;
}

#[tokio::test]
async fn a_second_push_uploads_nothing_the_receiver_says_it_has() {
    let Some(daemon) = daemon().await else { return };
    let (image, id) = build(64 << 10);
    let first_dir = tempfile::tempdir().unwrap();
    let first = Receiver::start(first_dir.path(), absent(), 1 << 30)
        .await
        .unwrap();
    let t = Instant::now();
    let pushed = push_to(&daemon, &image.0, &first).await.unwrap();
    let first_push = t.elapsed();
    let known: HashMap<String, u64> = first
        .blobs()
        .into_iter()
        .map(|b| (b.digest, b.size))
        .collect();
    first.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let (presence, asked) = recording(move |d| known.get(d).copied());
    let second = Receiver::start(dir.path(), presence, 1 << 30)
        .await
        .unwrap();
    let t = Instant::now();
    let again = push_to(&daemon, &image.0, &second).await.unwrap();
    let second_push = t.elapsed();
    eprintln!("first push {first_push:?}, second push {second_push:?}");

    assert_eq!(again, pushed, "the same manifest");
    // The daemon asked about each layer (and the config) by the digest it uploaded before.
    let asked = asked.lock().unwrap().clone();
    for layer in &pushed.layers {
        assert!(
            asked.contains(&layer.digest),
            "{} not asked: {asked:?}",
            layer.digest
        );
    }
    assert!(
        second.blobs().is_empty(),
        "nothing uploaded: {:?}",
        second.blobs()
    );
    let refs = references(&id);
    assert!(!refs.contains(&second.host()), "temporary tag left: {refs}");
}

#[tokio::test]
async fn a_push_past_the_budget_fails_and_leaves_no_tag() {
    let Some(daemon) = daemon().await else { return };
    let (image, id) = build(256 << 10);
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), absent(), 16 << 10)
        .await
        .unwrap();
    let t = Instant::now();
    let err = push_to(&daemon, &image.0, &receiver).await.unwrap_err();
    let message = slipway::error::render(&err);
    assert!(receiver.over_budget());
    assert!(message.contains(&image.0), "{message}");
    assert!(message.contains("budget"), "{message}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "refused without retries: {:?}",
        t.elapsed()
    );
    let refs = references(&id);
    assert!(
        !refs.contains(&receiver.host()),
        "temporary tag left: {refs}"
    );
    assert!(
        std::fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .all(|e| e.unwrap().metadata().unwrap().len() < 16 << 10),
        "no refused layer is filed"
    );
}

/// `SLIPWAY_RECEIVE_IMAGE=<tag> cargo test --test receive -- --ignored --nocapture`: the times
/// of a first and a second push of that image and of `docker save` (reported by hand).
#[tokio::test]
#[ignore]
async fn measure() {
    let Some(daemon) = daemon().await else { return };
    let image = std::env::var("SLIPWAY_RECEIVE_IMAGE").expect("SLIPWAY_RECEIVE_IMAGE");
    let dir = tempfile::tempdir().unwrap();
    let first = Receiver::start(dir.path(), absent(), u64::MAX)
        .await
        .unwrap();
    let t = Instant::now();
    push_to(&daemon, &image, &first).await.unwrap();
    eprintln!(
        "first push {:?}: {} blobs, {} bytes",
        t.elapsed(),
        first.blobs().len(),
        first.blobs().iter().map(|b| b.size).sum::<u64>()
    );
    let known: HashMap<String, u64> = first
        .blobs()
        .into_iter()
        .map(|b| (b.digest, b.size))
        .collect();
    let presence: Presence = Arc::new(move |d: &str| known.get(d).copied());
    // A second image (`SLIPWAY_RECEIVE_IMAGE2`, e.g. a rebuild with a new top layer) is pushed
    // against the same presence: only the layers it does not share are uploaded.
    let mut images = vec![("second push", image.clone())];
    images.extend(std::env::var("SLIPWAY_RECEIVE_IMAGE2").map(|i| ("other image", i)));
    for (what, image) in images {
        let dir2 = tempfile::tempdir().unwrap();
        let second = Receiver::start(dir2.path(), presence.clone(), u64::MAX)
            .await
            .unwrap();
        let t = Instant::now();
        push_to(&daemon, &image, &second).await.unwrap();
        eprintln!(
            "{what} {:?}: {} blobs uploaded, {} bytes",
            t.elapsed(),
            second.blobs().len(),
            second.blobs().iter().map(|b| b.size).sum::<u64>()
        );
    }
    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", &format!("docker save '{image}' > /dev/null")])
        .output()
        .unwrap();
    common::ok(out, "docker save");
    eprintln!("docker save {:?}", t.elapsed());
}

#[tokio::test]
async fn an_untagged_image_is_refused_and_kept() {
    let Some(daemon) = daemon().await else { return };
    // Untagged, the image would be deleted with the temporary tag: push_to must not touch it.
    let id = build_untagged(1 << 10);
    let _image = Image(id.clone());
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), absent(), 1 << 30)
        .await
        .unwrap();
    let err = push_to(&daemon, &id, &receiver).await.unwrap_err();
    let message = slipway::error::render(&err);
    assert!(message.contains("no tag"), "{message}");
    assert_eq!(references(&id), "[] []", "still there, untouched");
}
