//! `slipway plan [COMPONENT...] [--json]`: each component's image tag, and whether it is cached
//! or which input changed.

use super::Session;
use crate::builder;
use crate::cli::PlanArgs;

pub async fn run(session: &Session, args: PlanArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let daemon = session.daemon().await?;
    let opts = builder::PlanOptions {
        pull: None,
        registry: args.push || config.images.registry,
        locked: false,
        lazy_bases: true,
    };
    let stacks = crate::detect::Stacks::detect(&config);
    let plan = builder::plan_pulling(&config, &daemon, &args.components, &stacks, opts).await?;
    if args.json {
        session.print_json(&plan)
    } else {
        session.print(&builder::render_plan(&plan));
        Ok(())
    }
}
