//! `slipway lock [--update]`: pin the base images in `slipway.lock` (see [`crate::pins`]). (The
//! module is not `lock`: that name is the project lock's, [`crate::lock`].)

use super::Session;
use crate::builder::{self, PlanOptions};
use crate::cli::LockArgs;
use crate::detect::Stacks;
use crate::error::Fail;
use crate::pins::{self, Drift, LockFile};
use crate::report::Event;

pub async fn run(session: &Session, args: LockArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock(&config).await?;
    let daemon = session.daemon().await?;
    let stacks = Stacks::detect(&config);
    let opts = || PlanOptions {
        pull: Some(session.reporter.clone()),
        ..Default::default()
    };
    let mut plan = builder::plan_pulling(&config, &daemon, &[], &stacks, opts()).await?;
    let path = pins::path(&config);
    let old = pins::read(&path)?.unwrap_or_default();
    if args.update {
        // What each registry's tag points at now.
        for (reference, pin) in &plan.pins {
            if pin.digest.is_some() {
                let task = format!("pull {reference}");
                session.reporter.report(Event::Started {
                    task: task.clone(),
                    what: format!("pulling base image {reference} to move its pin"),
                });
                crate::push::pull(&daemon, reference, &task, session.reporter.as_ref())
                    .await
                    .map_err(|e| {
                        e.context(Fail::job(format!("pulling base image {reference} failed")))
                    })?;
                session.reporter.report(Event::Finished {
                    task,
                    outcome: "pulled".into(),
                });
            }
        }
        plan = builder::plan_pulling(&config, &daemon, &[], &stacks, opts()).await?;
    } else {
        let drift = Drift::between(&old, &plan.pins, true);
        if !drift.moved.is_empty() {
            return Err(Fail::job(format!(
                "{}: base image moved: {}",
                session.shown(&path),
                drift.moved.join(", ")
            ))
            .hint("move the pins on purpose: `slipway lock --update`")
            .into());
        }
    }
    let new = LockFile::new(plan.pins.clone());
    let changed = pins::write(&path, &new)?;
    let drift = Drift::between(&old, &new.bases, true);
    let what = match (changed, old.bases.is_empty() || drift.is_empty()) {
        (false, _) => "is current".to_string(),
        (true, true) => "written".to_string(),
        (true, false) => format!("updated (was: {})", drift.describe()),
    };
    session.print(&format!(
        "{} {what}: {} base image(s) pinned\n",
        session.shown(&path),
        new.bases.len()
    ));
    Ok(())
}
