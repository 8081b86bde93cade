//! The input digest: one sha256 that decides whether a component's image must be built.
//!
//! Everything that can change the image goes in: the Dockerfile's bytes, the packed context
//! (its tar's sha256, which covers every path, mode, link target and file byte), the non-secret
//! build args the Dockerfile declares, the target stage, the platform and the IDs the base
//! images resolve to on the daemon. Build secrets stay out: their values must never be
//! derivable from anything slipway stores, and BuildKit leaves them out of its cache key too.
//!
//! The parts are kept as a small record of per-input hashes ([`Inputs`]), stored on every image
//! as a label, and the digest is the sha256 of that record's canonical JSON. Keeping the parts
//! is what lets `plan` say *which* input changed since the image a tag last pointed to, instead
//! of only "changed". [`SCHEME`] is part of the record, so a change to what goes in changes
//! every digest instead of silently reusing images built under other rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The version of what goes into a digest. Bump it when [`Inputs`] or its meaning changes,
/// including what image a digest stands for: 2 is the normal form that keeps the base image's
/// layers as they are (1 rewrote them), so an image made under 1 is never taken for one now;
/// 4 leaves out the `/etc` BuildKit 0.8 leaves behind on a base without one.
pub const SCHEME: &str = "slipway-inputs/4";

/// The per-input hashes a digest is computed from (also the `dev.slipway.inputs` label).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub scheme: String,
    /// sha256 (hex) of the Dockerfile's bytes.
    pub dockerfile: String,
    /// sha256 (hex) of the packed context tar.
    pub context: String,
    /// Size of the packed context tar in bytes (informative: follows from `context`).
    pub context_bytes: u64,
    /// Non-secret build args passed to the build, as name -> sha256 (hex) of the value.
    pub args: BTreeMap<String, String>,
    /// The stage built.
    pub target: String,
    /// `os/arch` of the daemon the image is built for.
    pub platform: String,
    /// Base image reference -> the image ID it resolved to.
    pub bases: BTreeMap<String, String>,
    /// Names of the optional build secrets given to this build (`required=false` mounts the
    /// build may go without, such as Next.js's server-actions key): whether one was given
    /// changes the image, so it is an input. Never a value; absent when none was given, which
    /// keeps every digest made before this field the same.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub optional_secrets: BTreeSet<String>,
}

/// sha256 (hex) of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Inputs {
    /// Builds the record from the raw inputs (build arg values are hashed here).
    pub fn new(
        dockerfile: &[u8],
        context_sha256: &str,
        context_bytes: u64,
        args: &BTreeMap<String, String>,
        target: &str,
        platform: &str,
        bases: &BTreeMap<String, String>,
    ) -> Self {
        Inputs {
            scheme: SCHEME.to_string(),
            dockerfile: sha256_hex(dockerfile),
            context: context_sha256.to_string(),
            context_bytes,
            args: args
                .iter()
                .map(|(k, v)| (k.clone(), sha256_hex(v.as_bytes())))
                .collect(),
            target: target.to_string(),
            platform: platform.to_string(),
            bases: bases.clone(),
            optional_secrets: BTreeSet::new(),
        }
    }

    /// The record with the names of the optional build secrets given.
    pub fn with_optional_secrets(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.optional_secrets = names.into_iter().collect();
        self
    }

    /// The record as the label stores it (compact, canonical JSON: fields in declaration
    /// order, maps sorted by key).
    pub fn to_label(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a `dev.slipway.inputs` label; `None` when it is missing or unreadable.
    pub fn from_label(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// `sha256:<hex>` over the canonical record.
    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(self.to_label().as_bytes()))
    }

    /// Why `self` (the current inputs) differ from `old` (those of an earlier image), most
    /// telling first. Empty when they are the same.
    pub fn changes_since(&self, old: &Inputs) -> Vec<String> {
        let mut out = Vec::new();
        if self.scheme != old.scheme {
            out.push(format!(
                "slipway's digest scheme changed ({} -> {})",
                old.scheme, self.scheme
            ));
        }
        if self.dockerfile != old.dockerfile {
            out.push("Dockerfile changed".to_string());
        }
        if self.context != old.context {
            use crate::report::fmt_bytes;
            out.push(if self.context_bytes == old.context_bytes {
                format!("context changed ({})", fmt_bytes(self.context_bytes))
            } else {
                format!(
                    "context changed ({}, was {})",
                    fmt_bytes(self.context_bytes),
                    fmt_bytes(old.context_bytes)
                )
            });
        }
        let names: BTreeSet<&String> = self.args.keys().chain(old.args.keys()).collect();
        for name in names {
            match (self.args.get(name), old.args.get(name)) {
                (Some(a), Some(b)) if a != b => out.push(format!("build arg {name} changed")),
                (Some(_), None) => out.push(format!("build arg {name} added")),
                (None, Some(_)) => out.push(format!("build arg {name} removed")),
                _ => {}
            }
        }
        if self.target != old.target {
            out.push(format!(
                "target changed ({} -> {})",
                old.target, self.target
            ));
        }
        if self.platform != old.platform {
            out.push(format!(
                "platform changed ({} -> {})",
                old.platform, self.platform
            ));
        }
        for name in self.optional_secrets.difference(&old.optional_secrets) {
            out.push(format!("optional build secret {name} given"));
        }
        for name in old.optional_secrets.difference(&self.optional_secrets) {
            out.push(format!("optional build secret {name} no longer given"));
        }
        let bases: BTreeSet<&String> = self.bases.keys().chain(old.bases.keys()).collect();
        for base in bases {
            match (self.bases.get(base), old.bases.get(base)) {
                (Some(a), Some(b)) if a != b => out.push(format!("base image {base} changed")),
                (Some(_), None) => out.push(format!("base image {base} added")),
                (None, Some(_)) => out.push(format!("base image {base} removed")),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inputs {
        Inputs::new(
            b"FROM busybox\n",
            &"ab".repeat(32),
            10240,
            &BTreeMap::from([
                ("B".to_string(), "2".to_string()),
                ("A".to_string(), "1".to_string()),
            ]),
            "production",
            "linux/amd64",
            &BTreeMap::from([("busybox".to_string(), format!("sha256:{}", "cd".repeat(32)))]),
        )
    }

    #[test]
    fn an_optional_secret_given_is_an_input_by_name_only() {
        let without = sample();
        let with = sample().with_optional_secrets(["KEY".to_string()]);
        assert_eq!(without.to_label(), sample().to_label());
        assert!(!without.to_label().contains("optional_secrets"));
        assert_ne!(with.digest(), without.digest());
        assert_eq!(
            with.changes_since(&without),
            vec!["optional build secret KEY given".to_string()]
        );
        assert_eq!(
            without.changes_since(&with),
            vec!["optional build secret KEY no longer given".to_string()]
        );
        assert_eq!(Inputs::from_label(&with.to_label()), Some(with));
    }

    #[test]
    fn digest_is_stable_across_versions_of_slipway() {
        // A golden value: if this changes, every user's images rebuild. Bump SCHEME when
        // that is intended.
        let d = sample().digest();
        assert_eq!(d.len(), 7 + 64);
        assert_eq!(
            d,
            "sha256:0c173f88c2a49195f9c467bc52a2625c6f4236f670ed2f8583e35912638641ed"
        );
    }

    #[test]
    fn arg_order_does_not_matter() {
        let mut reversed = BTreeMap::new();
        reversed.insert("A".to_string(), "1".to_string());
        reversed.insert("B".to_string(), "2".to_string());
        let a = sample();
        let b = Inputs::new(
            b"FROM busybox\n",
            &"ab".repeat(32),
            10240,
            &reversed,
            "production",
            "linux/amd64",
            &a.bases,
        );
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn every_input_changes_the_digest_and_is_named() {
        let base = sample();
        type Change = Box<dyn Fn(&mut Inputs)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|i| i.dockerfile = sha256_hex(b"FROM other\n")),
                "Dockerfile changed",
            ),
            (
                Box::new(|i| {
                    i.context = "ef".repeat(32);
                    i.context_bytes = 20480;
                }),
                "context changed (20.5 kB, was 10.2 kB)",
            ),
            (
                Box::new(|i| {
                    i.args.insert("A".into(), sha256_hex(b"other"));
                }),
                "build arg A changed",
            ),
            (
                Box::new(|i| {
                    i.args.insert("C".into(), sha256_hex(b"3"));
                }),
                "build arg C added",
            ),
            (
                Box::new(|i| {
                    i.args.remove("B");
                }),
                "build arg B removed",
            ),
            (
                Box::new(|i| i.target = "build".into()),
                "target changed (production -> build)",
            ),
            (
                Box::new(|i| i.platform = "linux/arm64".into()),
                "platform changed (linux/amd64 -> linux/arm64)",
            ),
            (
                Box::new(|i| {
                    i.bases
                        .insert("busybox".into(), format!("sha256:{}", "00".repeat(32)));
                }),
                "base image busybox changed",
            ),
            (
                Box::new(|i| i.scheme = "slipway-inputs/0".into()),
                "slipway's digest scheme changed (slipway-inputs/4 -> slipway-inputs/0)",
            ),
        ];
        for (change, reason) in cases {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.digest(), base.digest(), "{reason}");
            assert_eq!(changed.changes_since(&base), [reason]);
        }
        assert!(base.changes_since(&base).is_empty());
    }

    #[test]
    fn label_round_trips() {
        let i = sample();
        assert_eq!(Inputs::from_label(&i.to_label()), Some(i));
        assert_eq!(Inputs::from_label("not json"), None);
    }
}
