//! The OS packages of an image: Debian's package database (`/var/lib/dpkg/status`) as the
//! final image has it, named by the distribution `/etc/os-release` gives.

use super::package::{Package, Scope};

/// Where dpkg keeps what is installed.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// Where the distribution says what it is (`/etc/os-release` links to it on Debian).
pub const OS_RELEASE: &[&str] = &["/etc/os-release", "/usr/lib/os-release"];

/// The distribution an os-release file names: `ID` (the purl namespace, `debian`) and
/// `ID-VERSION_ID` (the purl's `distro` qualifier, `debian-12`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    pub id: String,
    pub version_id: Option<String>,
}

impl Distro {
    /// Reads `KEY=value` lines (values quoted or not); `None` without an `ID`.
    pub fn parse(os_release: &str) -> Option<Distro> {
        let field = |key: &str| {
            os_release.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
            })
        };
        Some(Distro {
            id: field("ID").filter(|i| !i.is_empty())?,
            version_id: field("VERSION_ID").filter(|v| !v.is_empty()),
        })
    }
}

/// The packages dpkg's status file lists as installed (`Status: install ok installed`), each a
/// `pkg:deb/DISTRO/NAME@VERSION?arch=ARCH&distro=DISTRO-VERSION`.
pub fn packages(status: &str, distro: Option<&Distro>) -> Vec<Package> {
    let namespace = distro.map_or("debian", |d| d.id.as_str());
    let qualifier = distro.map(|d| match &d.version_id {
        Some(v) => format!("{}-{v}", d.id),
        None => d.id.clone(),
    });
    let mut out = Vec::new();
    for paragraph in status.split("\n\n") {
        let field = |key: &str| {
            paragraph.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if !field("Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let mut p = Package::locked("deb", name, Some(version), STATUS);
        p.namespace = Some(namespace.to_string());
        if let Some(arch) = field("Architecture") {
            p.qualifiers.insert("arch".into(), arch.to_string());
        }
        if let Some(q) = &qualifier {
            p.qualifiers.insert("distro".into(), q.clone());
        }
        p.scope = Scope::Required;
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_only() {
        let status = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b7\nDescription: shell\n GNU Bourne Again\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";
        let distro = Distro::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nID=debian\n",
        )
        .unwrap();
        let purls: Vec<String> = packages(status, Some(&distro))
            .iter()
            .map(Package::purl)
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12",
                "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12"
            ]
        );
        assert_eq!(Distro::parse("NAME=x\n"), None);
    }
}
