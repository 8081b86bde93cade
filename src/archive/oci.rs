//! The OCI image layout slipway sends a containerd node, and the image manifest in it; a node's
//! Docker daemon gets a partial `docker save` archive instead ([`super::save`]).
//!
//! containerd's `ctr images import` reads an OCI layout tar (`oci-layout`, `index.json`,
//! `blobs/sha256/...`) and only needs the blobs its content store lacks: the manifest may list
//! layers that are not in the tar. The manifest is written exactly as containerd writes it when
//! it imports a full `docker save` archive (compact JSON, Docker media types, uncompressed
//! layers whose digest is the diff ID), so a partial load and a full `kind load` give the image
//! the same manifest digest and share every blob.
//!
//! dockerd's `docker load` checks each layer's chain ID before it opens the layer's file, so a
//! `docker save`-style archive may leave out the leading layers whose chain the daemon has.

use bytes::Bytes;
use serde::Serialize;

use sha2::{Digest, Sha256};

pub const MEDIA_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A content descriptor, fields in the order containerd marshals them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            annotations: None,
        }
    }
}

#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// The image manifest containerd creates on a `docker save` import, byte for byte.
/// `layers` are `(diff ID, size of the uncompressed layer tar)`, bottom first.
pub fn docker_manifest(config_digest: &str, config_size: u64, layers: &[(String, u64)]) -> Bytes {
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|(d, s)| Descriptor::new(MEDIA_LAYER, d, *s))
        .collect();
    manifest(config_digest, config_size, layers)
}

/// An image manifest (Docker media types, compact JSON) of the config `config_digest` and the
/// layer blobs `layers`, bottom first.
pub fn manifest(config_digest: &str, config_size: u64, layers: Vec<Descriptor>) -> Bytes {
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST,
        config: Descriptor::new(MEDIA_CONFIG, config_digest, config_size),
        layers,
    };
    Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default())
}

/// `index.json` naming the manifest `name` (containerd's form, `docker.io/app/web:tag`).
pub fn oci_index(manifest: &Bytes, name: &str) -> Bytes {
    oci_index_names(manifest, &[name.to_string()])
}

/// `index.json` naming the manifest once per name in `names` (containerd's form).
pub fn oci_index_names(manifest: &Bytes, names: &[String]) -> Bytes {
    let manifests: Vec<Descriptor> = names
        .iter()
        .map(|name| {
            let tag = name
                .rsplit_once('/')
                .map(|(_, last)| last)
                .unwrap_or(name)
                .split_once(':')
                .map(|(_, t)| t)
                .unwrap_or("latest");
            let mut desc = Descriptor::new(
                MEDIA_MANIFEST,
                &sha256_digest(manifest),
                manifest.len() as u64,
            );
            desc.annotations = Some(
                [
                    ("io.containerd.image.name".to_string(), name.to_string()),
                    (
                        "org.opencontainers.image.ref.name".to_string(),
                        tag.to_string(),
                    ),
                ]
                .into(),
            );
            desc
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
    Bytes::from(serde_json::to_vec(&index).unwrap_or_default())
}

pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `sha256:` + hex of the SHA-256 of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Normalises a Docker reference the way containerd names images: `app/web:1` →
/// `docker.io/app/web:1`, `busybox` → `docker.io/library/busybox:latest`,
/// `localhost:5000/x:1` unchanged.
pub fn normalize_ref(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_domain {
        repo.to_string()
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    match (tag, digest) {
        (Some(t), Some(d)) => format!("{repo}:{t}@{d}"),
        (Some(t), None) => format!("{repo}:{t}"),
        (None, Some(d)) => format!("{repo}@{d}"),
        (None, None) => format!("{repo}:latest"),
    }
}

/// The path of a blob in an OCI layout.
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::blocks::{small_entry, trailer};

    /// The manifest containerd 1.6 wrote for a `docker save | ctr images import` of a
    /// four-layer image (read back with `ctr content get`).
    #[test]
    fn manifest_matches_containerds_import() {
        let layers = [
            (
                "sha256:9a6a32b75a16174d1e73ef2316b9976b2794fd5195b9df2f6e15fe768ea12edf",
                1984512,
            ),
            (
                "sha256:2dfd4404455fb74187f11d164fea1962945b6457fdaa1ff155b4472cec68d264",
                138752,
            ),
            (
                "sha256:db597814feae16455c12353c0c94803eb1d7d6dfb67ef9b5425ca462bbd1dca7",
                3001856,
            ),
            (
                "sha256:e60f5dac907331af477f1946d7a9b8c900edd1c730f43c023b240c55e4582ac2",
                2048,
            ),
        ]
        .map(|(d, s)| (d.to_string(), s));
        let m = docker_manifest(
            "sha256:612450e932051f0d4efb445ac97dc93d20880497794b9edf2ce35abd603c3aae",
            2415,
            &layers,
        );
        assert_eq!(
            sha256_digest(&m),
            "sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0"
        );
    }

    #[test]
    fn index_names_the_image() {
        let m = Bytes::from_static(b"{}");
        let idx: serde_json::Value =
            serde_json::from_slice(&oci_index(&m, "docker.io/app/web:abc")).unwrap();
        let a = &idx["manifests"][0]["annotations"];
        assert_eq!(a["io.containerd.image.name"], "docker.io/app/web:abc");
        assert_eq!(a["org.opencontainers.image.ref.name"], "abc");
        assert_eq!(idx["manifests"][0]["digest"], sha256_digest(b"{}"));
    }

    #[test]
    fn entries_read_back_with_the_tar_crate() {
        let mut bytes = Vec::new();
        for part in small_entry(&blob_path("sha256:ab"), b"hello")
            .into_iter()
            .chain(small_entry("index.json", &[b'x'; 512]))
        {
            bytes.extend_from_slice(&part);
        }
        bytes.extend_from_slice(&trailer());
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.size())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("blobs/sha256/ab".to_string(), 5),
                ("index.json".to_string(), 512)
            ]
        );
    }
}
