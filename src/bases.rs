//! Which base images a Dockerfile needs.
//!
//! Used by `doctor` (are they present?) and by the build engine (their resolved IDs are part
//! of a component's input digest). Works on any Dockerfile, generated or the user's own: it
//! reads the `ARG`s declared before the first `FROM`, substitutes them (with the build args
//! given, which include the `[base_images]` overrides) into each `FROM`, and leaves out
//! references to earlier stages and `scratch`. Lines are read as Docker reads them
//! ([`crate::instructions`]).

use std::collections::BTreeMap;

/// The external images a Dockerfile's `FROM` lines name, in order of first use.
pub fn base_images(dockerfile: &str, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut seen_from = false;
    for line in crate::instructions::instructions(dockerfile) {
        let mut words = line.split_whitespace();
        let Some(instr) = words.next() else { continue };
        match instr.to_ascii_uppercase().as_str() {
            "ARG" if !seen_from => {
                for decl in words {
                    let (name, default) = match decl.split_once('=') {
                        Some((n, d)) => (n, Some(unquote(d))),
                        None => (decl, None),
                    };
                    let value = build_args
                        .get(name)
                        .cloned()
                        .or(default)
                        .unwrap_or_default();
                    args.insert(name.to_string(), value);
                }
            }
            "FROM" => {
                seen_from = true;
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let Some(image) = rest.first() else { continue };
                let image = substitute(image, &args);
                if let (Some(kw), Some(alias)) = (rest.get(1), rest.get(2)) {
                    if kw.eq_ignore_ascii_case("as") {
                        stages.push(alias.to_ascii_lowercase());
                    }
                }
                let is_stage = stages[..stages.len().saturating_sub(usize::from(rest.len() >= 3))]
                    .contains(&image.to_ascii_lowercase());
                if !is_stage && image != "scratch" && !image.is_empty() && !images.contains(&image)
                {
                    images.push(image);
                }
            }
            _ => {}
        }
    }
    images
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').trim_matches('\'').to_string()
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` from `args`.
fn substitute(s: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or(r.len());
            let inner = &r[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match args.get(name).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => out.push_str(default.unwrap_or("")),
            }
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(args.get(&rest[..end]).map_or("", String::as_str));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bases_with_args_and_overrides() {
        let df = "# generated\nARG PYTHON_IMAGE=python:3.11-slim\nARG RUNTIME_IMAGE=\"debian:12\"\n\
                  FROM ${PYTHON_IMAGE} AS base\nRUN x \\\n  y\nFROM base AS deps\nFROM --platform=$BUILDPLATFORM $RUNTIME_IMAGE AS production\n\
                  COPY --from=deps /a /a\nFROM scratch AS empty\n";
        let none = BTreeMap::new();
        assert_eq!(base_images(df, &none), ["python:3.11-slim", "debian:12"]);
        let over = BTreeMap::from([(
            "PYTHON_IMAGE".to_string(),
            "slipway-test/python:3.11".to_string(),
        )]);
        assert_eq!(
            base_images(df, &over),
            ["slipway-test/python:3.11", "debian:12"]
        );
    }

    #[test]
    fn a_stage_may_not_refer_to_itself() {
        // `FROM base AS base` names the external image `base`.
        assert_eq!(
            base_images("FROM base AS base\n", &BTreeMap::new()),
            ["base"]
        );
    }
}
