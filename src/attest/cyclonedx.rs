//! The SBOM as CycloneDX 1.5 JSON: the image as the BOM's subject, and one component per
//! package (locked dependencies, then OS packages), in purl order.
//!
//! Same facts, same bytes: keys sorted (serde_json's map is ordered), components sorted, the
//! only time SOURCE_DATE_EPOCH, and the serial number derived from the input digest rather
//! than random.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::package::Package;
use super::Facts;

pub const SPEC_VERSION: &str = "1.5";

/// `urn:uuid:...` made from `input_digest`: a name-based UUID (RFC 4122 version 5 layout,
/// sha256 instead of sha1), so one image's SBOM always has one serial number.
pub fn serial_number(input_digest: &str) -> String {
    let hash = Sha256::digest(format!("slipway SBOM of {input_digest}").as_bytes());
    let mut b: [u8; 16] = hash[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `[{"name": k, "value": v}, ...]` in key order.
fn properties<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let mut v: Vec<(&str, &str)> = pairs.into_iter().collect();
    v.sort();
    Value::Array(
        v.into_iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

/// The BOM's JSON value.
pub fn bom(facts: &Facts, packages: &[(String, Package)]) -> Value {
    let components: Vec<Value> = packages
        .iter()
        .map(|(purl, p)| {
            let mut c = json!({
                "type": "library",
                "bom-ref": purl,
                "name": p.name,
                "purl": purl,
                "scope": p.scope.as_str(),
                "properties": properties([("slipway:source", p.source.as_str())]),
            });
            if let Some(v) = &p.version {
                c["version"] = json!(v);
            }
            if let (Some(ns), false) = (&p.namespace, p.kind == "deb") {
                c["group"] = json!(ns);
            }
            c
        })
        .collect();
    // What the image runs with (not what was locked for development only).
    let refs: Vec<&str> = packages
        .iter()
        .filter(|(_, p)| p.scope != super::package::Scope::Excluded)
        .map(|(purl, _)| purl.as_str())
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": serial_number(&facts.input_digest),
        "version": 1,
        "metadata": {
            "timestamp": crate::reproduce::sde::rfc3339(facts.source_date_epoch),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "slipway",
                    "version": super::SLIPWAY_VERSION,
                }],
            },
            "component": {
                "type": "container",
                "bom-ref": facts.image,
                "name": facts.repository,
                "version": facts.tag,
                "properties": properties([
                    ("slipway:app", facts.app.as_str()),
                    ("slipway:component", facts.component.as_str()),
                    ("slipway:config-digest", facts.config_digest.as_str()),
                    ("slipway:input-digest", facts.input_digest.as_str()),
                    ("slipway:platform", facts.platform.as_str()),
                ]),
            },
        },
        "components": components,
        "dependencies": [{"ref": facts.image, "dependsOn": refs}],
    })
}
