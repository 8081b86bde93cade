//! `slipway doctor [--json]`: is this machine ready for the main job?

use super::Session;
use crate::cli::DoctorArgs;
use crate::error::Fail;

pub async fn run(session: &Session, args: DoctorArgs) -> anyhow::Result<()> {
    let config = session.config_if_any()?;
    let report = crate::doctor::run(config.as_ref()).await;
    if args.json {
        session.print_json(&report)?;
    } else {
        session.result(&report);
        session.print(&crate::doctor::render(&report));
    }
    if !report.ok {
        return Err(Fail::job("doctor found problems that stop the main job").into());
    }
    Ok(())
}
