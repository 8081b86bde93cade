//! How the image was made, as an in-toto statement (v1) with a SLSA provenance (v1)
//! predicate: the image's config digest as the subject; the Dockerfile, the packed context and
//! each base image (by its pinned digest) as resolved dependencies; the build args, target and
//! platform as parameters; the input digest and SOURCE_DATE_EPOCH; slipway's version.
//!
//! Build secrets appear by name only (their values never reach slipway's records), and there
//! is no wall-clock time: the same facts give the same bytes.

use serde_json::{json, Map, Value};

use super::Facts;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build this describes: a Dockerfile built by slipway through the daemon's
/// BuildKit (or legacy builder), then normalised.
pub const BUILD_TYPE: &str = "urn:slipway:build:dockerfile:v1";
pub const BUILDER_ID: &str = "urn:slipway:builder";

/// `{"sha256": "<hex>"}` of a `sha256:<hex>` (or bare hex) digest.
fn digest_set(digest: &str) -> Value {
    json!({"sha256": digest.trim_start_matches("sha256:")})
}

/// The statement's JSON value.
pub fn statement(facts: &Facts) -> Value {
    let mut dependencies = vec![
        json!({
            "name": "Dockerfile",
            "uri": format!("file:{}", facts.dockerfile),
            "digest": digest_set(&facts.dockerfile_sha256),
        }),
        json!({
            "name": "context",
            "uri": format!("file:{}", facts.context),
            "digest": digest_set(&facts.context_sha256),
            "annotations": {"packing": "tar, mtimes set to SOURCE_DATE_EPOCH"},
        }),
    ];
    for base in &facts.bases {
        // The registry's manifest digest when the base came from one (what slipway.lock pins),
        // else only the image ID.
        let (uri, digest) = match base.digest.as_deref().and_then(|d| d.rsplit_once('@')) {
            Some((_, d)) => (format!("docker-image://{}@{d}", base.reference), d),
            None => (
                format!("docker-image://{}", base.reference),
                base.id.as_str(),
            ),
        };
        dependencies.push(json!({
            "name": base.reference,
            "uri": uri,
            "digest": digest_set(digest),
            "annotations": {"imageId": base.id, "platform": base.platform},
        }));
    }
    let build_args: Map<String, Value> = facts
        .build_args
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut secrets = facts.build_secrets.clone();
    secrets.sort();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": facts.image, "digest": digest_set(&facts.config_digest)}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "app": facts.app,
                    "component": facts.component,
                    "dockerfile": facts.dockerfile,
                    "context": facts.context,
                    "target": facts.target,
                    "platform": facts.platform,
                    "buildArgs": build_args,
                    "buildSecrets": secrets,
                },
                "internalParameters": {
                    "inputDigest": facts.input_digest,
                    "SOURCE_DATE_EPOCH": facts.source_date_epoch,
                    "builder": facts.builder,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"slipway": super::SLIPWAY_VERSION},
                },
                "metadata": {"invocationId": facts.input_digest},
            },
        },
    })
}
