//! `slipway chart [--out DIR] [--check]`: one Helm chart for the app.

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
    let changes = k8s::emit_chart(&config, &images, &opts, &dir)?;
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
            "install with: helm install {} {} --namespace {} --create-namespace{first_secret}",
            config.app.name,
            session.shown(&dir),
            config.app.namespace
        ),
    });
    Ok(())
}
