//! What a build produced, as data: the `--metadata-file` JSON and the record later steps read.
//!
//! `build` (and `up`) write the result of every run to `.slipway/last-build.json` under the
//! project root, atomically; `load`, `manifests` and `chart` read it when they run on their own,
//! so they always refer to the images the last build made. `up` passes it along in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::archive::ImageFiles;
use crate::config::Config;
use crate::error::Fail;

/// How a component's image came to be.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Built,
    Cached,
    /// Not built: the registry has an image under its input-digest tag (`pushed` pins it).
    Registry,
    Failed,
}

/// One component's image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The reference to deploy: `PREFIX/NAME:<12 hex of the input digest>`, or
    /// `REPO@sha256:...` once pushed.
    pub image: String,
    /// `PREFIX/NAME`.
    pub repository: String,
    /// The input-digest tag (`<12 hex>`).
    pub tag: String,
    /// Every tag that points at the image after the run (input-digest tag first).
    pub tags: Vec<String>,
    /// `sha256:...` image ID.
    pub image_id: String,
    /// `sha256:...` over every input that decides the image.
    pub input_digest: String,
    pub outcome: Outcome,
    /// Why the build was not served from slipway's cache (when built).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub duration_ms: u64,
    /// Image size in bytes.
    pub size: u64,
    /// `REPO@sha256:...` after `build --push`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<String>,
    /// Why `build --push` could not push the image (it was built: `outcome` says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
    /// The image's SBOM and provenance files ([`crate::attest`]), for a push to attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<Attestation>,
}

/// A file that says something about an image (its SBOM, its provenance), and its media type:
/// what a push attaches to the image as an OCI referrer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attestation {
    pub path: PathBuf,
    /// `application/vnd.cyclonedx+json`, `application/vnd.in-toto+json`.
    pub media_type: String,
}

/// A run's images, by component name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BuildReport {
    pub components: BTreeMap<String, ImageRecord>,
}

impl BuildReport {
    /// The reference each component should be deployed with (pinned digest when pushed).
    pub fn deploy_refs(&self) -> BTreeMap<String, String> {
        self.components
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    r.pushed.clone().unwrap_or_else(|| r.image.clone()),
                )
            })
            .collect()
    }
}

/// One image of a build run as the load needs it: handed from the build to the load in memory
/// by `up`; made from the last build's record by `slipway load`, which knows only its name.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub component: String,
    /// The reference it is tagged with (`PREFIX/NAME:<12 hex>`).
    pub reference: String,
    pub image_id: String,
    /// Its layers' diff IDs, bottom first, when the run knows them (else the load asks the
    /// daemon).
    pub diff_ids: Option<Vec<String>>,
    /// The normal form's files on disk, when this run made the image and keeps them for the
    /// load (read instead of exporting the image again). Removed when the last holder drops.
    pub normal_form: Option<Arc<ImageFiles>>,
}

impl BuiltImage {
    /// An image known only by name, as the build record has it.
    pub fn recorded(component: &str, reference: &str, image_id: &str) -> Self {
        BuiltImage {
            component: component.to_string(),
            reference: reference.to_string(),
            image_id: image_id.to_string(),
            diff_ids: None,
            normal_form: None,
        }
    }
}

/// Where the last build's record lives.
pub fn last_build_path(config: &Config) -> PathBuf {
    config.root.join(".slipway/last-build.json")
}

/// Writes a report as pretty JSON, atomically.
pub fn write(path: &Path, report: &BuildReport) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    crate::fsutil::write_atomic(path, text.as_bytes(), None)?;
    Ok(())
}

/// Records this run's components in `.slipway/last-build.json`, keeping the other
/// components' records (of components the config still has): a run that built or pushed one
/// component must not forget the others. A record that is not valid is kept beside it as
/// `last-build.json.corrupt`, and `reporter` says so.
pub fn merge_last(
    config: &Config,
    report: &BuildReport,
    reporter: &dyn crate::report::Reporter,
) -> anyhow::Result<()> {
    let path = last_build_path(config);
    let mut last = match std::fs::read(&path) {
        Err(_) => BuildReport::default(),
        Ok(bytes) => match serde_json::from_slice::<BuildReport>(&bytes) {
            Ok(last) => last,
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                std::fs::rename(&path, &aside)
                    .with_context(|| format!("moving {} aside", path.display()))?;
                reporter.report(crate::report::Event::Warn {
                    message: format!(
                        "{} was not a valid build record ({e}): kept as {}; the new record \
                         holds only this run's components",
                        path.display(),
                        aside.display()
                    ),
                });
                BuildReport::default()
            }
        },
    };
    last.components
        .retain(|k, _| config.components.contains_key(k));
    for (k, v) in &report.components {
        last.components.insert(k.clone(), v.clone());
    }
    crate::fsutil::state_dir(&config.root)?;
    write(&last_build_path(config), &last)
}

/// Reads the last build's record; a missing one is a usage error with the fix.
pub fn read_last(config: &Config) -> anyhow::Result<BuildReport> {
    let path = last_build_path(config);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Fail::usage(format!("no build record at {}", path.display()))
            .hint("run `slipway build` first (or `slipway up`, which builds, loads and emits)")
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Fail::usage(format!(
            "{} is not a valid build record: {e}",
            path.display()
        ))
        .hint("run `slipway build` again to rewrite it")
        .into()
    })
}
