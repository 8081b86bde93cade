//! What is in an image and how it was made: an SBOM and a provenance statement for every
//! image a build run made or found.
//!
//! The SBOM ([`cyclonedx`], CycloneDX 1.5 JSON) lists what slipway already knows: every
//! package the component's lockfiles pin ([`lockfiles`]) and the OS packages dpkg lists in the
//! final image ([`dpkg`], read through the daemon without running anything). The provenance
//! ([`provenance`], an in-toto statement with a SLSA v1 predicate) names the inputs the input
//! digest is made of. Both are byte-reproducible: the same inputs give the same files.
//!
//! They are written per component to `attestations/NAME/` beside the metadata file
//! (`--metadata-file`), else under `.slipway/`, and the build record lists them
//! ([`crate::record::Attestation`]) for a push to attach to the image.

pub mod cyclonedx;
pub mod dpkg;
pub mod lockfiles;
pub mod package;
pub mod provenance;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::detect::SourceTree;
use crate::docker::Daemon;
use crate::record::Attestation;

pub use package::{Package, Scope};

/// slipway's version and the commit it was built from, as the attestations name the tool.
pub const SLIPWAY_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("SLIPWAY_COMMIT"));

/// The SBOM's file name and media type.
pub const SBOM_FILE: &str = "sbom.cdx.json";
pub const SBOM_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// The provenance's file name and media type.
pub const PROVENANCE_FILE: &str = "provenance.intoto.json";
pub const PROVENANCE_MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// What slipway knows of one image: the build's inputs and the image it gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub app: String,
    pub component: String,
    /// `PREFIX/NAME:TAG`.
    pub image: String,
    /// `PREFIX/NAME`.
    pub repository: String,
    /// The input-digest tag.
    pub tag: String,
    /// `sha256:...` of the image's config (its ID on the classic image store).
    pub config_digest: String,
    pub input_digest: String,
    pub source_date_epoch: i64,
    /// The Dockerfile and context as `slipway.toml` names them.
    pub dockerfile: String,
    /// sha256 (hex) of the Dockerfile's bytes.
    pub dockerfile_sha256: String,
    pub context: String,
    /// sha256 (hex) of the packed context.
    pub context_sha256: String,
    pub target: String,
    pub platform: String,
    /// `buildkit` or `legacy`.
    pub builder: String,
    /// The non-secret build args passed.
    pub build_args: BTreeMap<String, String>,
    /// The names (never the values) of the build secrets mounted.
    pub build_secrets: Vec<String>,
    /// The base images, by reference.
    pub bases: Vec<Base>,
}

/// A base image as it resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// As the Dockerfile names it.
    pub reference: String,
    /// Its image ID (config digest).
    pub id: String,
    /// `REPO@sha256:...` when it came from a registry.
    pub digest: Option<String>,
    pub platform: String,
}

/// Where a run's attestations go: `attestations/` beside the metadata file, else
/// `ROOT/.slipway/attestations/`.
pub fn dir(root: &Path, metadata_file: Option<&Path>) -> PathBuf {
    match metadata_file.and_then(Path::parent) {
        Some(d) if !d.as_os_str().is_empty() => d.join("attestations"),
        Some(_) => PathBuf::from("attestations"),
        None => root.join(".slipway").join("attestations"),
    }
}

/// A JSON value as the files hold it: pretty, keys sorted, a final newline.
fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

/// The SBOM's bytes: `locked` (the lockfiles' packages) and `os` (the image's), one entry per
/// purl.
pub fn render_sbom(facts: &Facts, locked: Vec<Package>, os: Vec<Package>) -> Vec<u8> {
    let packages = package::dedup(locked.into_iter().chain(os).collect());
    to_bytes(&cyclonedx::bom(facts, &packages))
}

/// The provenance statement's bytes.
pub fn render_provenance(facts: &Facts) -> Vec<u8> {
    to_bytes(&provenance::statement(facts))
}

/// Whether a layer entry (its path, without the leading `/`) changes what the OS files the SBOM
/// reads say: one of them, or a whiteout of it or of a directory above it. Normalising reports
/// an image whose new layers have none ([`crate::reproduce::normalize::Watched`]).
pub fn is_os_file(key: &[u8]) -> bool {
    let (dir, name) = match key.iter().rposition(|&c| c == b'/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (&key[..0], key),
    };
    let removed: Option<Vec<u8>> = match name.strip_prefix(b".wh.") {
        Some(b".wh..opq") => Some(dir.to_vec()),
        Some(gone) if dir.is_empty() => Some(gone.to_vec()),
        Some(gone) => Some([dir, b"/", gone].concat()),
        None => None,
    };
    std::iter::once(dpkg::STATUS)
        .chain(dpkg::OS_RELEASE.iter().copied())
        .map(|p| p.trim_start_matches('/').as_bytes())
        .any(|file| {
            key == file
                || removed.as_deref().is_some_and(|r| {
                    r.is_empty() || file == r || file.starts_with(&[r, b"/"].concat())
                })
        })
}

/// Where the OS files of an image (by config digest) read for its SBOM are kept, so that an
/// image whose new layers leave them alone is not read again.
fn os_files_dir(config_digest: &str) -> PathBuf {
    crate::leftovers::cache_dir()
        .join("os-files")
        .join(config_digest.trim_start_matches("sha256:"))
}

/// Images whose OS files are kept.
const OS_FILES_KEPT: usize = 64;

/// The OS files the SBOM reads, of `image` on the daemon (`config_digest`), or of the image
/// `same_as` when normalising found the new layers leave them alone and they were kept.
async fn os_files(
    daemon: &Daemon,
    image: &str,
    config_digest: &str,
    same_as: Option<&str>,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut paths = vec![dpkg::STATUS];
    paths.extend(dpkg::OS_RELEASE);
    let name = |p: &str| p.trim_start_matches('/').replace('/', "_");
    let kept = |dir: PathBuf| -> Option<BTreeMap<String, Vec<u8>>> {
        let listed = std::fs::read_to_string(dir.join("files")).ok()?;
        listed
            .lines()
            .map(|p| Some((p.to_string(), std::fs::read(dir.join(name(p))).ok()?)))
            .collect()
    };
    if let Some(files) = same_as.and_then(|s| kept(os_files_dir(s))) {
        keep_os_files(config_digest, &files, &name);
        return Ok(files);
    }
    let files = crate::docker::files::read_files(daemon, image, &paths).await?;
    keep_os_files(config_digest, &files, &name);
    Ok(files)
}

/// Keeps `files` as the OS files of `config_digest` (a cache: a failed write costs one read).
fn keep_os_files(
    config_digest: &str,
    files: &BTreeMap<String, Vec<u8>>,
    name: &dyn Fn(&str) -> String,
) {
    let dir = os_files_dir(config_digest);
    if dir.join("files").is_file() {
        return;
    }
    if let Some(root) = dir.parent() {
        prune_oldest(root, OS_FILES_KEPT);
    }
    let _ = std::fs::create_dir_all(&dir);
    for (path, bytes) in files {
        let _ = crate::fsutil::write_atomic(&dir.join(name(path)), bytes, None);
    }
    let listed: String = files.keys().map(|p| format!("{p}\n")).collect();
    let _ = crate::fsutil::write_atomic(&dir.join("files"), listed.as_bytes(), None);
}

/// Removes the oldest entries of `root` beyond `keep`.
fn prune_oldest(root: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if dirs.len() < keep {
        return;
    }
    dirs.sort();
    for (_, d) in &dirs[..dirs.len() + 1 - keep] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The OS packages the files read from an image list.
fn packages_of(files: &BTreeMap<String, Vec<u8>>) -> Vec<Package> {
    let Some(status) = files.get(dpkg::STATUS) else {
        return Vec::new();
    };
    let distro = dpkg::OS_RELEASE
        .iter()
        .find_map(|p| files.get(*p))
        .and_then(|t| dpkg::Distro::parse(&String::from_utf8_lossy(t)));
    dpkg::packages(&String::from_utf8_lossy(status), distro.as_ref())
}

/// Writes the SBOM and provenance of one image (`image` names it on the daemon; its context
/// is `context_dir`) to `dir/COMPONENT/`, atomically, and returns what it wrote.
/// `same_os_as`: an earlier image whose OS files this one has (see [`is_os_file`]).
pub async fn write(
    daemon: &Daemon,
    facts: &Facts,
    (image, same_os_as): (&str, Option<&str>),
    context_dir: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<Attestation>> {
    let out = dir.join(&facts.component);
    let provenance = render_provenance(facts);
    let listed = |name: &str, media_type: &str| Attestation {
        path: out.join(name),
        media_type: media_type.to_string(),
    };
    // The provenance names everything the SBOM is made from (the image by its config digest,
    // the context by its digest, slipway's version): when the one on disk is this one, so is
    // the SBOM beside it, and the image need not be read again (a no-op run stays fast).
    let current = std::fs::read(out.join(PROVENANCE_FILE)).is_ok_and(|b| b == provenance);
    if current && out.join(SBOM_FILE).is_file() {
        return Ok(vec![
            listed(SBOM_FILE, SBOM_MEDIA_TYPE),
            listed(PROVENANCE_FILE, PROVENANCE_MEDIA_TYPE),
        ]);
    }
    let tree = SourceTree::new(context_dir, &facts.context);
    let locked = lockfiles::read(&tree)?;
    let os_files = os_files(daemon, image, &facts.config_digest, same_os_as).await?;
    let os = packages_of(&os_files);
    let files = [
        (SBOM_FILE, SBOM_MEDIA_TYPE, render_sbom(facts, locked, os)),
        (PROVENANCE_FILE, PROVENANCE_MEDIA_TYPE, provenance),
    ];
    let mut written = Vec::new();
    for (name, media_type, bytes) in files {
        let path = out.join(name);
        crate::fsutil::write_atomic(&path, &bytes, None)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(Attestation {
            path,
            media_type: media_type.to_string(),
        });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_files_their_whiteouts_and_those_of_directories_above_them_are_os_files() {
        for key in [
            "var/lib/dpkg/status",
            "etc/os-release",
            "usr/lib/os-release",
            "var/lib/dpkg/.wh.status",
            "var/lib/.wh.dpkg",
            "var/lib/dpkg/.wh..wh..opq",
            "etc/.wh..wh..opq",
            ".wh.etc",
        ] {
            assert!(is_os_file(key.as_bytes()), "{key}");
        }
        for key in [
            "var/lib/dpkg/status-old",
            "var/lib/dpkg",
            "etc",
            "app/etc/os-release",
            "etc/.wh.passwd",
            "opt/.wh..wh..opq",
            "var/lib/dpkg/info/.wh.x.list",
        ] {
            assert!(!is_os_file(key.as_bytes()), "{key}");
        }
    }

    pub(crate) fn facts() -> Facts {
        Facts {
            app: "taskboard".into(),
            component: "backend".into(),
            image: "slipway/backend:0123456789ab".into(),
            repository: "slipway/backend".into(),
            tag: "0123456789ab".into(),
            config_digest: format!("sha256:{}", "c".repeat(64)),
            input_digest: format!("sha256:0123456789ab{}", "0".repeat(52)),
            source_date_epoch: 1_764_000_000,
            dockerfile: "dockerfiles/backend.Dockerfile".into(),
            dockerfile_sha256: "d".repeat(64),
            context: "contexts/backend".into(),
            context_sha256: "e".repeat(64),
            target: "production".into(),
            platform: "linux/amd64".into(),
            builder: "buildkit".into(),
            build_args: BTreeMap::from([
                ("PYTHON_IMAGE".into(), "slipway-test/python:3.11".into()),
                ("SOURCE_DATE_EPOCH".into(), "1764000000".into()),
            ]),
            build_secrets: vec!["PIP_TOKEN".into()],
            bases: vec![Base {
                reference: "slipway-test/python:3.11".into(),
                id: format!("sha256:{}", "1".repeat(64)),
                digest: Some(format!("slipway-test/python@sha256:{}", "2".repeat(64))),
                platform: "linux/amd64".into(),
            }],
        }
    }

    /// The version varies with the commit slipway is built from: the snapshots hold a fixed one.
    fn stable(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes)
            .unwrap()
            .replace(SLIPWAY_VERSION, "VERSION")
    }

    fn sample_packages() -> (Vec<Package>, Vec<Package>) {
        let (reqs, _) = lockfiles::requirements(
            "fastapi==0.165.0\nPyJWT==2.15.1\nfastapi==0.165.0\n",
            "requirements.txt",
        );
        let mut dev = Package::locked("pypi", "pytest", Some("8.0.0"), "poetry.lock");
        dev.scope = Scope::Excluded;
        let distro = dpkg::Distro::parse("ID=debian\nVERSION_ID=\"12\"\n");
        let os = dpkg::packages(
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u9\n",
            distro.as_ref(),
        );
        (reqs.into_iter().chain([dev]).collect(), os)
    }

    #[test]
    fn sbom_snapshot() {
        let (locked, os) = sample_packages();
        insta::assert_snapshot!(stable(render_sbom(&facts(), locked, os)));
    }

    #[test]
    fn provenance_snapshot() {
        insta::assert_snapshot!(stable(render_provenance(&facts())));
    }

    #[test]
    fn same_facts_same_bytes_in_any_order() {
        let (locked, os) = sample_packages();
        let a = render_sbom(&facts(), locked.clone(), os.clone());
        let b = render_sbom(
            &facts(),
            locked.into_iter().rev().collect(),
            os.into_iter().rev().collect(),
        );
        assert_eq!(a, b);
        let serial = cyclonedx::serial_number(&facts().input_digest);
        assert_eq!(serial, cyclonedx::serial_number(&facts().input_digest));
        assert_ne!(serial, cyclonedx::serial_number("sha256:other"));
        assert!(String::from_utf8(a).unwrap().contains(&serial));
    }

    #[test]
    fn attestations_go_beside_the_metadata_file() {
        let root = Path::new("/p");
        assert_eq!(dir(root, None), Path::new("/p/.slipway/attestations"));
        assert_eq!(
            dir(root, Some(Path::new("/ci/out/build.json"))),
            Path::new("/ci/out/attestations")
        );
    }
}
