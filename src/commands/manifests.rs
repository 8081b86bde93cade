//! `slipway manifests [--out DIR] [--check] ...`: Kubernetes manifests for the last build's
//! images.

use super::Session;
use crate::cli::ManifestsArgs;
use crate::k8s::{self, manifests, Options};
use crate::report::Event;

pub async fn run(session: &Session, args: ManifestsArgs) -> anyhow::Result<()> {
    let config = session.config()?;
    let _lock = session.lock_unless(args.check, &config).await?;
    let images = k8s::images_for(&config, &args.images.images)?;
    let secrets = k8s::gather_secrets(&config, session.path(args.env_file).as_deref())?;
    let opts = Options {
        pull_policy: args.pull_policy.into(),
        namespace_manifest: args.namespace_manifest,
        allow_missing_secrets: args.allow_missing_secrets,
        ..Options::for_config(&config)
    };
    let dir = match &args.out {
        Some(d) => session.cwd.join(d),
        None => config.root.join("k8s"),
    };
    let missing = manifests::missing_secrets(&config, &secrets);
    if !missing.is_empty() && args.allow_missing_secrets {
        session.reporter.report(Event::Warn {
            message: format!(
                "writing empty values for secrets {}",
                manifests::describe_missing(&missing)
            ),
        });
    }
    if args.check {
        let files = k8s::render_manifests(&config, &images, &secrets, &opts)?;
        return super::check_outputs(session, &dir, &files, "slipway manifests");
    }
    let changes = k8s::emit_manifests(&config, &images, &secrets, &opts, &dir)?;
    super::print_changes(session, &changes);
    let ns = if args.namespace_manifest {
        String::new()
    } else {
        format!("kubectl create namespace {} && ", config.app.namespace)
    };
    session.reporter.report(Event::Info {
        message: format!("next: {ns}kubectl apply -f {}", session.shown(&dir)),
    });
    Ok(())
}
