//! `slipway plan [COMPONENT...] [--json]`: each component's image tag, and whether it is cached
//! or which input changed.

use super::Session;
use crate::builder;
use crate::cli::PlanArgs;

pub async fn run(session: &Session, args: PlanArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let daemon = session.daemon().await?;
    let plan = builder::plan(&config, &daemon, &args.components).await?;
    if args.json {
        session.print_json(&plan)
    } else {
        session.result(&plan);
        session.print(&builder::render_plan_with(&plan, session.verbosity));
        Ok(())
    }
}
