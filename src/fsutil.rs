//! Writing files so that a reader never sees half of one.
//!
//! Everything slipway writes (Dockerfiles, ignore files, manifests, the chart, reports) goes
//! through [`write_atomic`]: the bytes go to a temporary file in the same directory, are
//! flushed, and the file is renamed over the target. A crash or Ctrl-C leaves either the old
//! file or the new one, never a mix, and no temporary file once the process is gone.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;

/// Writes `bytes` to `path` atomically, creating parent directories. `mode` sets Unix
/// permissions (e.g. `0o600` for Secret manifests) before the file becomes visible.
/// Returns whether the content changed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> anyhow::Result<bool> {
    if let Ok(existing) = std::fs::read(path) {
        if existing == bytes && mode.is_none_or(|m| current_mode(path) == Some(m)) {
            return Ok(false);
        }
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating directory {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".slipway-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = mode.unwrap_or(0o644);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(m))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

/// The `.gitignore` slipway keeps in its state directory: nothing in it belongs in git.
pub const STATE_GITIGNORE: &str =
    "# Written by slipway: its state for this project (lock, last build, caches).\n*\n";

/// The project's state directory `ROOT/.slipway`, created with its own `.gitignore` (so it
/// stays out of git without an entry in the project's). A `.gitignore` already there is left
/// as it is.
pub fn state_dir(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = root.join(".slipway");
    let ignore = dir.join(".gitignore");
    if !ignore.exists() {
        write_atomic(&ignore, STATE_GITIGNORE.as_bytes(), None)?;
    }
    Ok(dir)
}

#[cfg(unix)]
fn current_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn current_mode(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_sets_mode_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/file.yaml");
        assert!(write_atomic(&p, b"one", None).unwrap());
        assert!(!write_atomic(&p, b"one", None).unwrap());
        assert!(write_atomic(&p, b"two", Some(0o600)).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(current_mode(&p), Some(0o600));
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file.yaml"]);
    }

    #[test]
    fn the_state_directory_ignores_itself() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_dir(dir.path()).unwrap();
        assert_eq!(state, dir.path().join(".slipway"));
        let ignore = std::fs::read_to_string(state.join(".gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*"), "{ignore}");
        // A user's own is kept.
        std::fs::write(state.join(".gitignore"), "lock\n").unwrap();
        state_dir(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.join(".gitignore")).unwrap(),
            "lock\n"
        );
    }
}
