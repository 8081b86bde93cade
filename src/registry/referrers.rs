//! OCI referrers: artifacts (an SBOM, a provenance statement) attached to an image in a
//! registry, so that the image itself (its manifest, its digest, `docker pull` of it) stays as
//! it is.
//!
//! An artifact is an OCI image manifest with an `artifactType`, the empty config, its blobs as
//! layers, and a `subject`: the descriptor of the image it is about. A registry with the
//! referrers API (`GET /v2/NAME/referrers/DIGEST`, OCI distribution 1.1) indexes it by that
//! subject (it says so with an `OCI-Subject` header); for one without (Debian's
//! docker-registry 2.8), the spec's fallback is kept by the client: an image index under the
//! tag `sha256-<hex of the subject digest>` listing the artifacts.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{Client, Descriptor, ImageManifest, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST};

/// An OCI image index (the referrers list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Index {
    fn empty() -> Self {
        Index {
            schema_version: 2,
            media_type: OCI_INDEX.into(),
            manifests: Vec::new(),
        }
    }
}

/// The tag the referrers tag schema keeps the list of `digest`'s referrers under.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// One blob of an artifact: its media type and content.
pub struct Blob<'a> {
    pub media_type: &'a str,
    pub bytes: &'a [u8],
}

/// Pushes an artifact of type `artifact_type` made of `blobs` about `subject` (an image in
/// the client's repository) and makes it findable as a referrer of it; returns the artifact's
/// descriptor. The same subject, type and blobs give the same artifact digest: pushing it
/// again changes nothing.
pub async fn attach(
    client: &Client,
    subject: &Descriptor,
    artifact_type: &str,
    blobs: &[Blob<'_>],
) -> anyhow::Result<Descriptor> {
    let config = client.put_blob(OCI_EMPTY, b"{}").await?;
    let mut layers = Vec::new();
    for b in blobs {
        layers.push(client.put_blob(b.media_type, b.bytes).await?);
    }
    let subject = Descriptor {
        media_type: subject.media_type.clone(),
        digest: subject.digest.clone(),
        size: subject.size,
        artifact_type: None,
        annotations: None,
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST.into(),
        artifact_type: Some(artifact_type.to_string()),
        config,
        layers,
        subject: Some(subject.clone()),
        annotations: None,
    };
    let bytes = manifest.to_bytes();
    let mut desc = Descriptor::of(OCI_MANIFEST, &bytes);
    desc.artifact_type = Some(artifact_type.to_string());
    let (_, indexed) = client
        .put_manifest(&desc.digest, OCI_MANIFEST, &bytes)
        .await
        .with_context(|| format!("attaching a {artifact_type} to {}", subject.digest))?;
    if indexed || client.referrers_api(&subject.digest).await?.is_some() {
        return Ok(desc);
    }
    // No referrers API: the tag schema.
    let tag = fallback_tag(&subject.digest);
    let mut index = match client.get_manifest(&tag).await? {
        Some(m) => serde_json::from_slice(&m.bytes)
            .with_context(|| format!("the referrers list `{tag}` is not an image index"))?,
        None => Index::empty(),
    };
    if !index.manifests.iter().any(|m| m.digest == desc.digest) {
        index.manifests.push(desc.clone());
        let bytes = serde_json::to_vec(&index)?;
        client
            .put_manifest(&tag, OCI_INDEX, &bytes)
            .await
            .with_context(|| format!("updating the referrers list `{tag}`"))?;
    }
    Ok(desc)
}

/// The referrers of `digest` (of `artifact_type` only, when given): from the referrers API
/// when the registry has it, else from the tag schema's index.
pub async fn list(
    client: &Client,
    digest: &str,
    artifact_type: Option<&str>,
) -> anyhow::Result<Vec<Descriptor>> {
    let index: Index = match client.referrers_api(digest).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("the referrers of {digest} are not an image index"))?,
        None => match client.get_manifest(&fallback_tag(digest)).await? {
            Some(m) => serde_json::from_slice(&m.bytes)
                .with_context(|| format!("the referrers list of {digest} is not an image index"))?,
            None => Index::empty(),
        },
    };
    Ok(index
        .manifests
        .into_iter()
        .filter(|m| artifact_type.is_none_or(|t| m.artifact_type.as_deref() == Some(t)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_tag_is_the_digest_with_a_dash() {
        assert_eq!(
            fallback_tag(&format!("sha256:{}", "ab".repeat(32))),
            format!("sha256-{}", "ab".repeat(32))
        );
    }
}
