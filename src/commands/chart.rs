//! `slipway chart [--out DIR] [--check] [--force]`: one Helm chart for the app.
//!
//! slipway owns the files it generates there (values.yaml, values.schema.json, Chart.yaml,
//! its templates) and never touches a user's own files next to them. A generated file edited
//! by hand stops the run with a diff, so the edit is not lost: it belongs in a values file of
//! the user's own; `--force` overwrites.

use super::Session;
use crate::cli::ChartArgs;
use crate::k8s::{self, Options};
use crate::report::Event;

pub async fn run(session: &Session, args: ChartArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock_unless(args.check, &config).await?;
    let images = k8s::images_for(&config, &args.images.images)?;
    let opts = Options {
        pull_policy: args.pull_policy.into(),
        ..Options::for_config(&config)
    };
    let dir = match &args.out {
        Some(d) => session.cwd.join(d),
        None => config.root.join("charts").join(&config.app.name),
    };
    if args.check {
        let files = k8s::render_chart(&config, &images, &opts)?;
        return super::check_outputs(session, &dir, &files, "slipway chart");
    }
    let files = k8s::render_chart(&config, &images, &opts)?;
    let edits = k8s::chart::hand_edits(&dir, &files);
    if !edits.is_empty() && !args.force {
        for e in &edits {
            session.print(&format!("\n{}", e.diff));
        }
        return Err(k8s::hand_edit_error(&edits).into());
    }
    let changes = k8s::write_chart(&dir, &files)?;
    super::print_changes(session, &changes);
    let first_secret = config
        .components
        .iter()
        .find_map(|(c, comp)| {
            comp.secrets
                .first()
                .map(|s| format!(" --set-string components.{c}.secrets.{s}=..."))
        })
        .unwrap_or_default();
    session.reporter.report(Event::Info {
        message: format!(
            "next: helm install {} {} --namespace {} --create-namespace{first_secret}",
            config.app.name,
            session.shown(&dir),
            config.app.namespace
        ),
    });
    Ok(())
}
