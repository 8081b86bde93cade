//! `slipway init [DIR...] [--force]`: find the components, detect their stacks, write
//! `slipway.toml`.

use super::Session;
use crate::cli::InitArgs;

pub fn run(session: &Session, args: InitArgs) -> anyhow::Result<()> {
    let init = crate::init::run(
        &session.cwd,
        session.config_flag.as_deref(),
        &args.dirs,
        args.force,
        session.reporter.as_ref(),
    )?;
    session.print(&crate::init::summary(&init, &session.cwd));
    match init.unfinished() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}
