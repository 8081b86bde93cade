//! `slipway build [COMPONENT...]`: build the images whose inputs changed, then (`--push`) push
//! them. Prints the image references, one per line (the pinned `repo@sha256:...` once pushed).

use super::Session;
use crate::builder::{self, BuildOptions};
use crate::cli::BuildArgs;
use crate::{push, record};

pub async fn run(session: &Session, args: BuildArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock(&config).await?;
    let daemon = session.daemon().await?;
    let metadata_file = session.path(args.metadata_file);
    let opts = BuildOptions {
        jobs: args.jobs.map(usize::from),
        fail_fast: args.fail_fast,
        no_cache: args.no_cache,
        attestations: Some(crate::attest::dir(&config.root, metadata_file.as_deref())),
        metadata_file,
        keep_normal_forms: false,
        ready: None,
        no_pull: args.no_pull,
        registry: args.push || config.images.registry,
        pull_found: false,
        locked: args.locked,
        cache: args.cache.options(&session.cwd, &config.images.cache),
    };
    let mut report = builder::run_build(
        session.reporter.clone(),
        &config,
        &daemon,
        &args.components,
        &opts,
    )
    .await?;
    if args.push {
        // The records say what was pushed, and why what was not was not (`push_error`),
        // whether or not every push went through.
        let pushed = push::push_all(&daemon, &mut report, session.reporter.as_ref()).await;
        record::merge_last(&config, &report, session.reporter.as_ref())?;
        if let Some(p) = &opts.metadata_file {
            record::write(p, &report)?;
        }
        pushed?;
    }
    // The result: the images for scripts (`$(slipway build -q backend)`), one per line.
    session.result(&report);
    let refs: String = report
        .deploy_refs()
        .values()
        .map(|r| format!("{r}\n"))
        .collect();
    session.print(&refs);
    Ok(())
}
