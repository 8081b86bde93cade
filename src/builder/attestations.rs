//! After a run's builds: the SBOM and provenance of every image the run made or found on the
//! daemon ([`crate::attest`]), from the plan's inputs, recorded with the image.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

use super::{BuildPlan, Builder, CacheState, ComponentPlan};
use crate::attest::{self, Base, Facts};
use crate::docker::Daemon;
use crate::error::Fail;
use crate::record::{BuildReport, ImageRecord};
use crate::reproduce::normalize::NormalImage;

/// Writes the attestations of each image in `report` that is on the daemon (one the registry
/// has and the run did not pull has those it was pushed with) to `dir`, and lists them in its
/// record. A component whose attestations cannot be written is a failure of its own.
pub(super) async fn write_all(
    daemon: &Daemon,
    plan: &BuildPlan,
    made: &BTreeMap<String, NormalImage>,
    report: &mut BuildReport,
    failures: &mut Vec<(String, anyhow::Error)>,
    dir: &Path,
) -> Vec<String> {
    let containerd = daemon.containerd_store().await;
    let jobs = report
        .components
        .iter()
        .filter(|(_, record)| !record.image_id.is_empty())
        .filter_map(|(name, record)| {
            let c = plan.components.iter().find(|c| &c.name == name)?;
            let made = made.get(name).filter(|n| n.daemon_id == record.image_id);
            Some(async move {
                let written = one(daemon, plan, c, record, made, containerd, dir)
                    .await
                    .with_context(|| {
                        Fail::job(format!(
                            "component `{name}`: writing its SBOM and provenance to {}",
                            dir.join(name).display()
                        ))
                    });
                (name.clone(), written)
            })
        });
    let results = futures_util::future::join_all(jobs).await;
    let mut done = Vec::new();
    for (name, result) in results {
        match result {
            Ok(list) => {
                if let Some(r) = report.components.get_mut(&name) {
                    r.attestations = list;
                }
                done.push(name);
            }
            Err(e) => failures.push((name, e)),
        }
    }
    done
}

async fn one(
    daemon: &Daemon,
    plan: &BuildPlan,
    c: &ComponentPlan,
    record: &ImageRecord,
    made: Option<&NormalImage>,
    containerd: bool,
    dir: &Path,
) -> anyhow::Result<Vec<crate::record::Attestation>> {
    let config_digest = match (made, containerd) {
        (Some(n), _) => n.image_id.clone(),
        (None, false) => record.image_id.clone(),
        // The daemon calls it by its manifest digest: the config digest is read once and kept.
        (None, true) => {
            let diff_ids = match &c.cache {
                CacheState::Cached { image_id } if *image_id == record.image_id => {
                    c.cached_diff_ids.clone()
                }
                _ => Vec::new(),
            };
            let cache = crate::leftovers::cache_dir();
            crate::docker::images::config_digest(
                daemon,
                &record.image,
                &record.image_id,
                &diff_ids,
                &cache,
            )
            .await?
        }
    };
    let facts = facts(plan, c, record, config_digest);
    let same_os_as = made.and_then(|n| n.same_os_as.as_deref());
    attest::write(
        daemon,
        &facts,
        (&record.image_id, same_os_as),
        &c.context_dir,
        dir,
    )
    .await
}

/// What the attestations say of the image: the plan's inputs and the record's image.
pub(super) fn facts(
    plan: &BuildPlan,
    c: &ComponentPlan,
    record: &ImageRecord,
    config_digest: String,
) -> Facts {
    let bases = c
        .base_images
        .iter()
        .map(|(reference, id)| {
            let pin = c.pins.get(reference);
            Base {
                reference: reference.clone(),
                id: id.clone(),
                digest: pin.and_then(|p| p.digest.clone()),
                platform: pin.map_or_else(|| plan.platform.clone(), |p| p.platform.clone()),
            }
        })
        .collect();
    Facts {
        app: plan.app.clone(),
        component: c.name.clone(),
        image: record.image.clone(),
        repository: record.repository.clone(),
        tag: record.tag.clone(),
        config_digest,
        input_digest: c.input_digest.clone(),
        source_date_epoch: c.date.epoch,
        dockerfile: c.dockerfile.display().to_string(),
        dockerfile_sha256: c.inputs.dockerfile.clone(),
        context: c.context.display().to_string(),
        context_sha256: c.inputs.context.clone(),
        target: c.target.clone(),
        platform: c.inputs.platform.clone(),
        builder: match plan.builder {
            Builder::BuildKit => "buildkit",
            Builder::Legacy => "legacy",
        }
        .to_string(),
        build_args: c.build_args.clone(),
        build_secrets: c.build_secrets.clone(),
        bases,
    }
}
