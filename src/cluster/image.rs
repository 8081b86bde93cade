//! What an image is made of, as the nodes see it: its ID, its layers' diff IDs and chain IDs,
//! and the name containerd stores it under.
//!
//! The daemon's `docker save` stream (API 1.41) names each layer by a legacy "v1 ID" directory
//! rather than by digest, and lists the order only in `manifest.json`, which comes last. To
//! decide which nodes get a layer *before* its bytes go by, [`v1_layer_index`] recomputes the
//! v1 ID from the directory's `json` file (which comes just before `layer.tar`) for each chain
//! position, the way the daemon derived it, and so names the layer without reading it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

pub use crate::archive::oci::{normalize_ref, sha256_digest};

/// One image to load, with what the daemon says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// The component it belongs to (`backend`).
    pub component: String,
    /// The reference as the user knows it (`shop/backend:0123456789ab`).
    pub reference: String,
    /// The image ID: the digest of its config (`sha256:...`).
    pub id: String,
    /// Uncompressed layer digests, bottom first.
    pub diff_ids: Vec<String>,
    /// Chain IDs, one per layer: the identity of the layer stack up to and including it.
    pub chain_ids: Vec<String>,
    /// Layer sizes known beforehand (diff ID -> bytes), for layers a stream leaves out.
    pub sizes: std::collections::HashMap<String, u64>,
}

impl ImageMeta {
    pub fn new(component: &str, reference: &str, id: &str, diff_ids: Vec<String>) -> Self {
        let chain_ids = chain_ids(&diff_ids);
        ImageMeta {
            component: component.to_string(),
            reference: reference.to_string(),
            id: id.to_string(),
            diff_ids,
            chain_ids,
            sizes: Default::default(),
        }
    }

    /// The name containerd keeps the image under (`docker.io/shop/backend:0123456789ab`).
    pub fn containerd_name(&self) -> String {
        normalize_ref(&self.reference)
    }
}

/// The chain IDs of a layer stack (OCI image spec: `ChainID(L0|..|Ln) = SHA256(ChainID(..Ln-1) + " " + DiffID(Ln))`).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256_digest(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Which layer (index into `chain_ids`) a `docker save` v1 directory holds, from its `json`.
///
/// The daemon names the directory `CreateID(v1 config without "id", layer_id = chain ID,
/// parent = "sha256:" + parent dir)`: the config marshalled as a Go map, so with sorted keys
/// and the raw values as written. Lower layers get `"os"` only after the ID is computed; the
/// top layer has it in both. Both forms are tried for every chain ID; `None` when nothing
/// matches (another daemon version), and the caller falls back to hashing.
pub fn v1_layer_index(json: &[u8], chain_ids: &[String]) -> Option<usize> {
    let map: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(json).ok()?;
    let id: String = serde_json::from_str(map.get("id")?.get()).ok()?;
    let parent: Option<String> = match map.get("parent") {
        Some(p) => Some(serde_json::from_str(p.get()).ok()?),
        None => None,
    };
    for (index, chain) in chain_ids.iter().enumerate() {
        for with_os in [false, true] {
            let mut fields: BTreeMap<&str, String> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "id" && (with_os || k.as_str() != "os"))
                .map(|(k, v)| (k.as_str(), v.get().to_string()))
                .collect();
            fields.insert("layer_id", json_string(chain));
            if let Some(p) = &parent {
                fields.insert("parent", json_string(&format!("sha256:{p}")));
            }
            let mut text = String::from("{");
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&json_string(k));
                text.push(':');
                text.push_str(v);
            }
            text.push('}');
            if hex::encode(Sha256::digest(text.as_bytes())) == id {
                return Some(index);
            }
        }
    }
    None
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(normalize_ref("shop/api:1"), "docker.io/shop/api:1");
        assert_eq!(normalize_ref("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            normalize_ref("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normalize_ref("localhost:5000/a/b:2"),
            "localhost:5000/a/b:2"
        );
        assert_eq!(normalize_ref("ghcr.io/o/r"), "ghcr.io/o/r:latest");
        assert_eq!(
            normalize_ref("docker.io/library/x:y"),
            "docker.io/library/x:y"
        );
        assert_eq!(normalize_ref("a/b@sha256:00"), "docker.io/a/b@sha256:00");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(c[1], sha256_digest(b"sha256:a sha256:b"));
    }

    /// Real `json` files of a `docker save` by Docker 20.10.24 (an image with four layers).
    #[test]
    fn identifies_v1_directories_of_a_real_save() {
        let diff_ids: Vec<String> = [
            "sha256:9a6a32b75a16174d1e73ef2316b9976b2794fd5195b9df2f6e15fe768ea12edf",
            "sha256:2dfd4404455fb74187f11d164fea1962945b6457fdaa1ff155b4472cec68d264",
            "sha256:db597814feae16455c12353c0c94803eb1d7d6dfb67ef9b5425ca462bbd1dca7",
            "sha256:e60f5dac907331af477f1946d7a9b8c900edd1c730f43c023b240c55e4582ac2",
        ]
        .map(String::from)
        .to_vec();
        let chains = chain_ids(&diff_ids);
        let empty = r#""container_config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null}"#;
        let bottom = format!(
            r#"{{"id":"8bc05ae71fe1d292b925b4a33363642ba12833f53f8b2af1e7d06f1fdefd729c","created":"1970-01-01T00:00:00Z",{empty},"os":"linux"}}"#
        );
        assert_eq!(v1_layer_index(bottom.as_bytes(), &chains), Some(0));
        let second = format!(
            r#"{{"id":"bc1f9e07e0e416c4fbf3e7c043a9e3bf2db3027014b42d5420936763bc666f52","parent":"8bc05ae71fe1d292b925b4a33363642ba12833f53f8b2af1e7d06f1fdefd729c","created":"1970-01-01T00:00:00Z",{empty},"os":"linux"}}"#
        );
        assert_eq!(v1_layer_index(second.as_bytes(), &chains), Some(1));
        let top = r#"{"id":"4e62e8f0a09ca28f590ab23b9bb89067be7825d9d05bbbf81dca065cdb36b0de","parent":"d089156a34531cba6355f3bc73e80d5933b1a3bdefe8fc8b5e6e27680451497c","created":"2026-11-25T19:11:53.390056545Z","container":"ace08ee879ce9a9b10b2a93ae8bfef97619e917093f3dac2c0e1318ebd55dd71","container_config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/sh","-c","echo one \u003e /one.txt"],"Image":"sha256:93311728183e5cc04f7ae85ec514527e283ecd25a60ed449915247d6182073a1","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"org.slipway.test.recipe":"c730994dd08f0dadffe76d6976fc92a254b779f036a0b645e0de5c6365dbad6b"}},"docker_version":"20.10.24+dfsg1","config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"Image":"sha256:93311728183e5cc04f7ae85ec514527e283ecd25a60ed449915247d6182073a1","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"org.slipway.test.recipe":"c730994dd08f0dadffe76d6976fc92a254b779f036a0b645e0de5c6365dbad6b"}},"architecture":"amd64","os":"linux"}"#;
        assert_eq!(v1_layer_index(top.as_bytes(), &chains), Some(3));
        assert_eq!(v1_layer_index(top.as_bytes(), &chains[..3]), None);
        assert_eq!(v1_layer_index(b"not json", &chains), None);
    }
}
