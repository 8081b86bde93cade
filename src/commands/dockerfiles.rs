//! `slipway dockerfiles [COMPONENT...] [--check]`: write (or check) each component's generated
//! Dockerfile and ignore file.

use super::Session;
use crate::cli::DockerfilesArgs;
use crate::report::Verbosity;

pub async fn run(session: &Session, args: DockerfilesArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock_unless(args.check, &config).await?;
    let mut out = String::new();
    let result = crate::generate::run(
        &config,
        &args.components,
        args.check,
        session.verbosity == Verbosity::Verbose,
        session.reporter.as_ref(),
        &mut out,
    );
    session.print(&out);
    result
}
