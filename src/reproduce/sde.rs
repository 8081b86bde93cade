//! SOURCE_DATE_EPOCH: the one time a build may write into an image.
//!
//! The convention (<https://reproducible-builds.org/specs/source-date-epoch/>) is a Unix time
//! in the environment. When it is not set, slipway takes the time of the last git commit that
//! touched the component's context, so that the same checkout gives the same time on every
//! machine; outside git (or with no commit yet), 0. Context mtimes are clamped to it by the
//! context packer, and layer mtimes and config times by [`super::normalize`].

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::error::Fail;

/// Where the time came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `SOURCE_DATE_EPOCH` environment variable.
    Env,
    /// The last git commit that touched the context directory.
    GitCommit,
    /// Neither: the Unix epoch.
    Zero,
}

/// A SOURCE_DATE_EPOCH and its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sde {
    /// Seconds since the Unix epoch.
    pub epoch: i64,
    pub source: Source,
}

impl Sde {
    /// The time in RFC 3339 (`1970-01-01T00:00:00Z` for 0), as image configs write it.
    pub fn rfc3339(&self) -> String {
        rfc3339(self.epoch)
    }

    /// Where the time came from, in words.
    pub fn origin(&self) -> &'static str {
        match self.source {
            Source::Env => "from SOURCE_DATE_EPOCH in the environment",
            Source::GitCommit => "from the last git commit touching the context",
            Source::Zero => {
                "the Unix epoch: no SOURCE_DATE_EPOCH set and no git commit touches the context"
            }
        }
    }
}

/// SOURCE_DATE_EPOCH for a build context: the environment, else git, else 0.
pub fn for_context(context: &Path) -> anyhow::Result<Sde> {
    let env = std::env::var("SOURCE_DATE_EPOCH").ok();
    resolve(env.as_deref(), || git_commit_time(context))
}

/// The rule itself, with the environment value and the git lookup passed in.
pub fn resolve(env: Option<&str>, git: impl FnOnce() -> Option<i64>) -> anyhow::Result<Sde> {
    if let Some(value) = env.map(str::trim).filter(|v| !v.is_empty()) {
        return match value.parse::<i64>() {
            Ok(epoch) if epoch >= 0 => Ok(Sde {
                epoch,
                source: Source::Env,
            }),
            _ => Err(Fail::usage(format!(
                "SOURCE_DATE_EPOCH=`{value}` is not a Unix time (whole seconds since 1970, not negative)"
            ))
            .hint("set it to e.g. `$(git log -1 --format=%ct)`, or unset it to use the last commit's time")
            .into()),
        };
    }
    if let Some(epoch) = git().filter(|&t| t >= 0) {
        return Ok(Sde {
            epoch,
            source: Source::GitCommit,
        });
    }
    Ok(Sde {
        epoch: 0,
        source: Source::Zero,
    })
}

/// `git log -1 --format=%ct -- DIR`, run in DIR; `None` outside git, without commits touching
/// it, or when git is not installed.
///
/// The answer changes only with the commit checked out (and a shallow clone's depth), so it is
/// remembered in the cache directory under the directory, the HEAD commit and the shallow
/// boundary, read from `.git` without running git: in a long history git walks back far to
/// find the last commit touching a directory, and a run asks for every component.
pub fn git_commit_time(dir: &Path) -> Option<i64> {
    let key = head_key(dir);
    let cache = crate::leftovers::cache_dir().join("git-times.json");
    let mut known: Vec<(String, i64)> = key
        .as_ref()
        .and_then(|_| std::fs::read(&cache).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let Some(key) = &key {
        if let Some((_, t)) = known.iter().find(|(k, _)| k == key) {
            return Some(*t);
        }
    }
    let time = run_git_log(dir)?;
    if let Some(key) = key {
        known.retain(|(k, _)| *k != key);
        known.insert(0, (key, time));
        known.truncate(256);
        if let Ok(bytes) = serde_json::to_vec(&known) {
            // A cache: a failure to write it costs the next run a git call, nothing more.
            let _ = crate::fsutil::write_atomic(&cache, &bytes, None);
        }
    }
    Some(time)
}

/// `DIR HEAD-COMMIT SHALLOW-DIGEST` for the repository `dir` is in, from the files under
/// `.git`; `None` (ask git every time) when anything is unusual: `GIT_DIR` or another `GIT_*`
/// variable that moves the repository, a reftable, a HEAD that names no readable ref.
fn head_key(dir: &Path) -> Option<String> {
    if [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_CEILING_DIRECTORIES",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let dir = dir.canonicalize().ok()?;
    let git_dir = dir.ancestors().find_map(|d| {
        let dot_git = d.join(".git");
        if dot_git.is_dir() {
            Some(dot_git)
        } else if dot_git.is_file() {
            let text = std::fs::read_to_string(&dot_git).ok()?;
            let target = text.strip_prefix("gitdir:")?.trim();
            Some(d.join(target))
        } else {
            None
        }
    })?;
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => git_dir.join(c.trim()),
        Err(_) => git_dir.clone(),
    };
    if common.join("reftable").exists() {
        return None;
    }
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let oid = match head.strip_prefix("ref:") {
        None => head.to_string(),
        Some(name) => {
            let name = name.trim();
            let loose = [git_dir.join(name), common.join(name)]
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok());
            match loose {
                Some(oid) => oid.trim().to_string(),
                None => {
                    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
                    packed
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.starts_with('^'))
                        .find_map(|l| {
                            let (oid, n) = l.split_once(' ')?;
                            (n.trim() == name).then(|| oid.to_string())
                        })?
                }
            }
        }
    };
    if oid.len() < 40 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    use sha2::Digest as _;
    let shallow = std::fs::read(common.join("shallow")).unwrap_or_default();
    let shallow = hex::encode(&sha2::Sha256::digest(&shallow)[..8]);
    Some(format!("{} {oid} {shallow}", dir.display()))
}

fn run_git_log(dir: &Path) -> Option<i64> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%ct", "--", "."])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// RFC 3339 in UTC with whole seconds, for `epoch` >= 0.
pub fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_first_then_git_then_zero() {
        let git_unused = || panic!("git must not be asked when the variable is set");
        assert_eq!(
            resolve(Some("1700000000"), git_unused).unwrap(),
            Sde {
                epoch: 1_700_000_000,
                source: Source::Env
            }
        );
        assert_eq!(
            resolve(None, || Some(42)).unwrap().source,
            Source::GitCommit
        );
        assert_eq!(resolve(Some(""), || Some(42)).unwrap().epoch, 42);
        assert_eq!(
            resolve(None, || None).unwrap(),
            Sde {
                epoch: 0,
                source: Source::Zero
            }
        );
    }

    #[test]
    fn a_bad_variable_is_a_usage_error_with_a_hint() {
        for bad in ["yesterday", "-5", "1.5"] {
            let e = resolve(Some(bad), || None).unwrap_err();
            let (exit, hint) = crate::error::exit_and_hint(&e);
            assert_eq!(exit, crate::error::Exit::Usage);
            assert!(e.to_string().contains(bad));
            assert!(hint.unwrap().contains("git log -1"));
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn git_time_of_the_last_commit_touching_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str], date: &str| {
            let ok = Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(args)
                .env("GIT_AUTHOR_DATE", date)
                .env("GIT_COMMITTER_DATE", date)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok
        };
        if !git(&["init", "-q"], "") {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "CI=true and git is not installed"
            );
            eprintln!("SKIPPED: git is not installed");
            return;
        }
        assert_eq!(git_commit_time(dir.path()), None, "no commit yet");
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("a/f"), "1").unwrap();
        std::fs::write(dir.path().join("b/f"), "1").unwrap();
        assert!(git(&["add", "."], ""));
        assert!(git(&["commit", "-qm", "one"], "@1000000000 +0000"));
        std::fs::write(dir.path().join("b/f"), "2").unwrap();
        assert!(git(&["commit", "-qam", "two"], "@1100000000 +0000"));
        assert_eq!(git_commit_time(&dir.path().join("a")), Some(1_000_000_000));
        assert_eq!(git_commit_time(&dir.path().join("b")), Some(1_100_000_000));
        assert_eq!(git_commit_time(dir.path()), Some(1_100_000_000));

        // Remembered per HEAD: a new commit, a detached HEAD and packed refs each give the
        // answer git gives.
        let key = head_key(&dir.path().join("a")).expect("a plain repository has a HEAD key");
        std::fs::write(dir.path().join("a/f"), "3").unwrap();
        assert!(git(&["commit", "-qam", "three"], "@1200000000 +0000"));
        assert_ne!(head_key(&dir.path().join("a")).as_ref(), Some(&key));
        assert_eq!(git_commit_time(&dir.path().join("a")), Some(1_200_000_000));
        assert!(git(&["checkout", "-q", "HEAD~2"], ""));
        assert_eq!(git_commit_time(&dir.path().join("b")), Some(1_000_000_000));
        assert!(git(&["checkout", "-q", "-"], ""));
        assert!(git(&["pack-refs", "--all"], ""));
        assert!(head_key(dir.path()).is_some(), "packed refs are read");
        assert_eq!(git_commit_time(&dir.path().join("b")), Some(1_100_000_000));
        assert_eq!(git_commit_time(&dir.path().join("a")), Some(1_200_000_000));
    }
}
