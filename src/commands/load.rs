//! `slipway load [COMPONENT...] [--cluster ...]`: the last build's images into the local
//! cluster's nodes.

use super::Session;
use crate::cli::LoadArgs;
use crate::cluster::{self, LoadReport};
use crate::config::{ClusterTarget, Config};
use crate::error::Fail;
use crate::record::{BuildReport, BuiltImage};

pub async fn run(session: &Session, args: LoadArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock(&config).await?;
    let target = super::cluster_target(&args.cluster, &config);
    let record = crate::record::read_last(&config)?;
    let mut images = chosen(&config, &record, &args.components)?;
    let report = if target == ClusterTarget::None {
        LoadReport {
            message: Some("cluster = none: images are not loaded".into()),
            ..Default::default()
        }
    } else {
        let daemon = session.daemon().await?;
        // An image the build found in the registry is not on the daemon yet: pull it.
        for image in images.iter_mut().filter(|i| i.image_id.is_empty()) {
            let r = &record.components[&image.component];
            let pinned = r.pushed.as_deref().unwrap_or_default();
            image.image_id = crate::builder::pull_pinned(
                &daemon,
                &image.component,
                pinned,
                &r.image,
                &r.input_digest,
                session.reporter.as_ref(),
            )
            .await?;
            session.reporter.report(crate::report::Event::Finished {
                task: image.component.clone(),
                outcome: "pulled".into(),
                reason: None,
                detail: Some("pulled from the registry".into()),
                changed_files: Vec::new(),
                bytes_sent: None,
            });
        }
        cluster::load(&daemon, &target, &images, session.reporter.as_ref()).await?
    };
    if let Some(path) = &args.metadata_file {
        super::write_metadata(path, &report)?;
    }
    session.result(&report);
    session.print(&cluster::render(&report));
    let failed = report.failed();
    if !failed.is_empty() {
        let nodes: std::collections::BTreeSet<&str> =
            failed.iter().map(|r| r.node.as_str()).collect();
        return Err(Fail::job(format!(
            "{} of {} loads failed (nodes: {})",
            failed.len(),
            report.results.len(),
            nodes.into_iter().collect::<Vec<_>>().join(", ")
        ))
        .hint("fix what the failures say (a stopped node: `docker start NODE`) and run `slipway load` again: only what is still missing is sent")
        .into());
    }
    Ok(())
}

/// The images of the last build that `wanted` names (all when empty).
fn chosen(
    config: &Config,
    record: &BuildReport,
    wanted: &[String],
) -> anyhow::Result<Vec<BuiltImage>> {
    let wanted: Vec<String> = if wanted.is_empty() {
        record.components.keys().cloned().collect()
    } else {
        wanted.to_vec()
    };
    let mut images = Vec::new();
    for name in &wanted {
        let Some(r) = record.components.get(name) else {
            let known: Vec<&str> = record.components.keys().map(String::as_str).collect();
            let fail = if config.components.contains_key(name) {
                Fail::usage(format!("component `{name}` is not in the last build"))
                    .hint(format!("build it first: `slipway build {name}`"))
            } else {
                Fail::usage(format!("no component `{name}`")).hint(format!(
                    "components of the last build: {}",
                    known.join(", ")
                ))
            };
            return Err(fail.into());
        };
        // One the registry has (`build --push` did not build it) is pulled before the load.
        let in_registry = r.outcome == crate::record::Outcome::Registry && r.pushed.is_some();
        if r.image_id.is_empty() && !in_registry {
            return Err(
                Fail::usage(format!("component `{name}` has no image in the last build"))
                    .hint(format!("build it again: `slipway build {name}`"))
                    .into(),
            );
        }
        images.push(BuiltImage::recorded(name, &r.image, &r.image_id));
    }
    Ok(images)
}
