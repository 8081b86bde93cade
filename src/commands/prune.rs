//! `slipway prune [--keep N] [--dry-run] [--cluster ...]`: old images off the daemon and the
//! nodes.

use super::Session;
use crate::cli::PruneArgs;
use crate::record::BuildReport;

pub async fn run(session: &Session, args: PruneArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock(&config).await?;
    let target = super::cluster_target(&args.cluster, &config);
    // Without a record (nothing built yet, or it was removed) only the newest N protect.
    let record = match crate::record::last_build_path(&config).exists() {
        true => crate::record::read_last(&config)?,
        false => BuildReport::default(),
    };
    let daemon = session.daemon().await?;
    let report =
        crate::prune::prune(&daemon, &config, &record, &target, args.keep, args.dry_run).await?;
    if let Some(path) = &args.metadata_file {
        super::write_metadata(path, &report)?;
    }
    session.print(&crate::prune::render(&report));
    Ok(())
}
