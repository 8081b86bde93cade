//! One package an image holds, as the SBOM names it: a package URL (purl) and where slipway
//! learned of it.

use std::collections::BTreeMap;

/// Whether a package is part of what the image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Installed for the app to run (the default).
    Required,
    /// Installed only on some platforms or when available (npm's optional dependencies).
    Optional,
    /// Locked for development or tests only (npm's `dev`, Poetry's non-main groups).
    Excluded,
}

impl Scope {
    /// CycloneDX's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Required => "required",
            Scope::Optional => "optional",
            Scope::Excluded => "excluded",
        }
    }
}

/// A package: its purl parts, its scope and the file that lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The purl type: `npm`, `pypi`, `golang`, `cargo`, `deb`.
    pub kind: &'static str,
    /// The purl namespace (`@types` of `@types/node`, `github.com/pkg` of `github.com/pkg/errors`,
    /// `debian` for Debian packages).
    pub namespace: Option<String>,
    pub name: String,
    /// `None` when the lockfile does not pin it (a requirement without `==`).
    pub version: Option<String>,
    /// purl qualifiers (`arch`, `distro`), sorted by key.
    pub qualifiers: BTreeMap<String, String>,
    pub scope: Scope,
    /// The file it came from: a lockfile relative to the context, or a path in the image.
    pub source: String,
}

impl Package {
    /// A package of a language ecosystem (no qualifiers), scope `required`.
    pub fn locked(
        kind: &'static str,
        full_name: &str,
        version: Option<&str>,
        source: &str,
    ) -> Self {
        let (namespace, name) = match (kind, full_name.rsplit_once('/')) {
            ("npm" | "golang", Some((ns, n))) => (Some(ns.to_string()), n.to_string()),
            _ => (None, full_name.to_string()),
        };
        let name = match kind {
            // The purl spec: PyPI names are lowercase, `_` read as `-`.
            "pypi" => name.to_ascii_lowercase().replace('_', "-"),
            _ => name,
        };
        Package {
            kind,
            namespace,
            name,
            version: version.filter(|v| !v.is_empty()).map(str::to_string),
            qualifiers: BTreeMap::new(),
            scope: Scope::Required,
            source: source.to_string(),
        }
    }

    /// The name with its namespace: `@types/node`, `github.com/pkg/errors`.
    pub fn full_name(&self) -> String {
        match &self.namespace {
            Some(ns) if self.kind != "deb" => format!("{ns}/{}", self.name),
            _ => self.name.clone(),
        }
    }

    /// `pkg:TYPE/NAMESPACE/NAME@VERSION?QUALIFIERS`, each part percent-encoded.
    pub fn purl(&self) -> String {
        let mut out = format!("pkg:{}/", self.kind);
        if let Some(ns) = &self.namespace {
            for segment in ns.split('/') {
                out.push_str(&encode(segment));
                out.push('/');
            }
        }
        out.push_str(&encode(&self.name));
        if let Some(v) = &self.version {
            out.push('@');
            out.push_str(&encode(v));
        }
        let qualifiers: Vec<String> = self
            .qualifiers
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        if !qualifiers.is_empty() {
            out.push('?');
            out.push_str(&qualifiers.join("&"));
        }
        out
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The packages with one entry per purl, sorted by purl: a package listed twice (npm nests the
/// same version at several paths) keeps the widest scope and the first file that named it.
pub fn dedup(packages: Vec<Package>) -> Vec<(String, Package)> {
    let mut by_purl: BTreeMap<String, Package> = BTreeMap::new();
    for p in packages {
        match by_purl.entry(p.purl()) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(p);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let kept = e.get_mut();
                kept.scope = kept.scope.min(p.scope);
            }
        }
    }
    by_purl.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_spec() {
        let p = Package::locked("npm", "@types/node", Some("20.19.43"), "package-lock.json");
        assert_eq!(p.purl(), "pkg:npm/%40types/node@20.19.43");
        assert_eq!(p.full_name(), "@types/node");
        let p = Package::locked("pypi", "typing_extensions", Some("4.16.0"), "r.txt");
        assert_eq!(p.purl(), "pkg:pypi/typing-extensions@4.16.0");
        let p = Package::locked("golang", "github.com/pkg/errors", Some("v0.9.1"), "go.sum");
        assert_eq!(p.purl(), "pkg:golang/github.com/pkg/errors@v0.9.1");
        let mut deb = Package::locked("deb", "libc6", Some("1:2.36-9+deb12u9"), "status");
        deb.namespace = Some("debian".into());
        deb.qualifiers.insert("arch".into(), "amd64".into());
        deb.qualifiers.insert("distro".into(), "debian-12".into());
        assert_eq!(
            deb.purl(),
            "pkg:deb/debian/libc6@1%3A2.36-9%2Bdeb12u9?arch=amd64&distro=debian-12"
        );
        assert_eq!(deb.full_name(), "libc6");
    }

    #[test]
    fn a_package_listed_twice_is_one_with_the_widest_scope() {
        let mut dev = Package::locked("npm", "tslib", Some("2.8.1"), "package-lock.json");
        dev.scope = Scope::Excluded;
        let run = Package::locked("npm", "tslib", Some("2.8.1"), "package-lock.json");
        let out = dedup(vec![dev, run]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.scope, Scope::Required);
    }
}
