//! `slipway verify COMPONENT [--against DOCKER_HOST|IMAGE] [--json]`: build twice without cache
//! and check both builds give one image ID; or build once and check the image in a registry
//! is that image.

use super::Session;
use crate::cli::VerifyArgs;
use crate::error::Fail;
use crate::verify::{self, Difference, VerifyReport};

pub async fn run(session: &Session, args: VerifyArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock(&config).await?;
    let daemon = session.daemon().await?;
    let report = verify::run(
        session.reporter.clone(),
        &config,
        &daemon,
        &args.component,
        args.against.as_deref(),
    )
    .await?;
    if args.json {
        session.print_json(&report)?;
    } else {
        session.result(&report);
        session.print(&verify::render(&report));
    }
    let registry = args.against.as_deref().filter(|a| !a.contains("://"));
    verdict(&report, registry)
}

/// A difference is exit code 1, naming the first layer and file that differ (and, against a
/// registry's image, that image).
fn verdict(report: &VerifyReport, registry: Option<&str>) -> anyhow::Result<()> {
    if report.identical {
        return Ok(());
    }
    let what = match &report.difference {
        Some(Difference::Layer {
            index, step, file, ..
        }) => format!(
            "layer {index} (`{step}`) differs{}",
            file.as_ref()
                .map(|f| format!(" at {}", f.path))
                .unwrap_or_default()
        ),
        Some(Difference::Config { path, .. }) => format!("the image config differs at {path}"),
        None => "the images differ".into(),
    };
    if let Some(reference) = registry {
        return Err(Fail::job(format!(
            "`{}` built from this tree is not {reference}: {what}",
            report.component
        ))
        .hint(format!(
            "that image was not built from this tree (or the build is not reproducible: `slipway verify {}` says)",
            report.component
        ))
        .into());
    }
    Err(Fail::job(format!("`{}` is not reproducible: {what}", report.component))
        .hint("make that step deterministic (no build times, no caches in the layer, sorted output); SOURCE_DATE_EPOCH is set for every build")
        .into())
}
