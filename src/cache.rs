//! Build cache shared across machines: what `--cache-from` / `--cache-to` (and `[images]
//! cache_from` / `cache_to`) say, as buildx spells it, and the names the cache goes under.
//!
//! Why not hand the specs to BuildKit as they are: slipway builds through the Engine API's
//! `POST /build`, and there moby passes only `cachefrom` image references (BuildKit's
//! `registry` importer, which reads inline cache and cache manifests) and turns the build arg
//! `BUILDKIT_INLINE_CACHE=1` into BuildKit's `inline` exporter. No daemon takes a `cacheto`
//! there (moby 20.10 and 26.1 `builder/builder-next/builder.go`), and the classic image store's
//! BuildKit has no `registry` or `local` exporter at all (26.1 `controller.go` registers only
//! `inline` there). So slipway gets the effect of `mode=max` from what every daemon has: it
//! builds each stage of the Dockerfile (up to the target) as an image with inline cache and
//! keeps those images in the registry (`REF:COMPONENT-STAGE`) or in a directory
//! (`DIR/COMPONENT.tar`, a `docker save` archive); a later build names them in `cachefrom`.
//! A fresh runner whose sources changed then takes the dependency stage from the registry
//! and runs only the steps after the change. None of it touches the input digest: cache
//! options are not inputs, and the image slipway tags is built without them.

use std::path::PathBuf;

use serde::Serialize;

/// One `--cache-from` or `--cache-to` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CacheSpec {
    /// `type=registry,ref=REPO` (or a bare `REPO`): stage images `REPO:COMPONENT-STAGE`.
    Registry {
        #[serde(rename = "ref")]
        reference: String,
    },
    /// `type=local,src=DIR` (from) or `type=local,dest=DIR` (to): `DIR/COMPONENT.tar`.
    Local { dir: PathBuf },
    /// `type=inline` (to only): the cache rides in the stage images of the other entries; on
    /// its own it asks nothing more (the image slipway tags stays free of cache metadata).
    Inline,
}

/// Which flag an entry came from: they take different keys (`src` vs `dest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    From,
    To,
}

impl Direction {
    fn flag(self) -> &'static str {
        match self {
            Direction::From => "--cache-from",
            Direction::To => "--cache-to",
        }
    }
}

/// Parses one entry as buildx writes it: `type=registry,ref=R[,mode=max]`,
/// `type=local,src=DIR` / `dest=DIR`, `type=inline`, or a bare image reference. A relative
/// directory stays relative (the caller resolves it against the right base). The error names
/// the flag and says what is supported.
pub fn parse(text: &str, direction: Direction) -> Result<CacheSpec, String> {
    let flag = direction.flag();
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{flag}: empty value"));
    }
    if !text.contains('=') {
        return registry(text, flag);
    }
    let mut kind = None;
    let mut reference = None;
    let mut dir = None;
    for part in text.split(',') {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("{flag} {text}: `{part}` is not KEY=VALUE"));
        };
        let value = value.trim().to_string();
        match (key.trim(), direction) {
            ("type", _) => kind = Some(value),
            ("ref", _) => reference = Some(value),
            ("src", Direction::From) | ("dest", Direction::To) => dir = Some(value),
            ("src", Direction::To) => {
                return Err(format!(
                    "{flag} {text}: a local cache is written to `dest=DIR`, not `src`"
                ))
            }
            ("dest", Direction::From) => {
                return Err(format!(
                    "{flag} {text}: a local cache is read from `src=DIR`, not `dest`"
                ))
            }
            // Accepted as buildx has them; slipway's stage images always give `max`'s reach,
            // and the rest concern exporters no daemon's Engine API offers.
            ("mode" | "ignore-error" | "compression" | "oci-mediatypes" | "image-manifest", _) => {}
            (other, _) => return Err(format!("{flag} {text}: unknown key `{other}`")),
        }
    }
    match kind.as_deref() {
        Some("registry") => match reference {
            Some(r) => registry(&r, flag),
            None => Err(format!("{flag} {text}: type=registry needs ref=REPOSITORY")),
        },
        Some("local") => match dir {
            Some(d) if !d.is_empty() => Ok(CacheSpec::Local {
                dir: PathBuf::from(d),
            }),
            _ => Err(format!(
                "{flag} {text}: type=local needs {}=DIR",
                if direction == Direction::From {
                    "src"
                } else {
                    "dest"
                }
            )),
        },
        Some("inline") if direction == Direction::To => Ok(CacheSpec::Inline),
        Some("inline") => Err(format!(
            "{flag} {text}: an inline cache is read with type=registry,ref=IMAGE"
        )),
        Some(other) => Err(format!(
            "{flag} {text}: type={other} is not supported: slipway builds through the Docker \
             Engine API, whose BuildKit reads cache only from images; use type=registry or \
             type=local"
        )),
        None => Err(format!(
            "{flag} {text}: missing type= (registry, local or inline)"
        )),
    }
}

/// A registry entry: a repository without a tag or digest (slipway names the tags).
fn registry(reference: &str, flag: &str) -> Result<CacheSpec, String> {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        return Err(format!(
            "{flag} {reference}: name a repository without a tag; slipway writes one tag per \
             component and stage (REPOSITORY:COMPONENT-STAGE)"
        ));
    }
    let ok = !reference.is_empty()
        && reference.split('/').enumerate().all(|(i, part)| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || "._-".contains(c)
                        || (i == 0 && (c == ':' || c.is_ascii_uppercase()))
                })
        });
    if !ok {
        return Err(format!(
            "{flag} {reference}: not a valid repository name (lowercase, digits, `.`, `_`, `-`, `/`, optional registry host:port)"
        ));
    }
    Ok(CacheSpec::Registry {
        reference: reference.to_string(),
    })
}

/// The image a component's stage is kept as in the registry repository `reference`.
pub fn registry_tag(reference: &str, component: &str, stage: &str) -> String {
    format!("{reference}:{component}-{stage}")
}

/// The local name of a component's stage image in a directory cache (`REPOSITORY` is the
/// component's image repository): what `DIR/COMPONENT.tar` holds and `cachefrom` then names.
pub fn local_tag(repository: &str, stage: &str) -> String {
    format!("{repository}:slipway-cache-{stage}")
}

/// The archive of a component's stage images in a directory cache.
pub fn local_archive(dir: &std::path::Path, component: &str) -> PathBuf {
    dir.join(format!("{component}.tar"))
}

/// The stages a build of `target` may take from cache: every stage of the Dockerfile up to
/// and including the target (a later stage cannot feed it). A Dockerfile without named
/// stages, or a target it does not name, gives just the target.
pub fn stages_up_to(dockerfile: &str, target: &str) -> Vec<String> {
    let names = crate::instructions::stage_names(dockerfile);
    let target = target.to_ascii_lowercase();
    match names.iter().position(|n| *n == target) {
        Some(i) => names[..=i].to_vec(),
        None => vec![target],
    }
}

/// What a daemon's builder takes over the Engine API, for `doctor` (see the module docs).
pub fn daemon_support(containerd_store: bool) -> String {
    format!(
        "--cache-from reads registry images (inline cache or cache manifests{}); --cache-to: \
         POST /build exports inline cache only ({}), so slipway writes each Dockerfile stage as \
         an inline-cache image (type=registry: REPOSITORY:COMPONENT-STAGE, type=local: \
         DIR/COMPONENT.tar{})",
        if containerd_store {
            ""
        } else {
            ", and local images with inline cache"
        },
        if containerd_store {
            "its BuildKit's registry and local exporters are reachable only over buildx's gRPC path"
        } else {
            "its BuildKit has no registry or local exporter"
        },
        if containerd_store {
            ", which this image store does not read back: use type=registry"
        } else {
            ""
        }
    )
}

/// The cache options of a run: what the builds read from and where they write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheOptions {
    pub from: Vec<CacheSpec>,
    pub to: Vec<CacheSpec>,
}

impl CacheOptions {
    /// Whether anything is exported after a build (an `inline` entry alone writes nothing).
    pub fn exports(&self) -> bool {
        self.to.iter().any(|s| !matches!(s, CacheSpec::Inline))
    }

    /// The flags win over the config's lists, each direction on its own (as `--tags` would).
    pub fn or(self, config: &CacheOptions) -> CacheOptions {
        CacheOptions {
            from: if self.from.is_empty() {
                config.from.clone()
            } else {
                self.from
            },
            to: if self.to.is_empty() {
                config.to.clone()
            } else {
                self.to
            },
        }
    }

    /// Relative directories of local entries resolved against `base`.
    pub fn resolved(mut self, base: &std::path::Path) -> CacheOptions {
        for spec in self.from.iter_mut().chain(self.to.iter_mut()) {
            if let CacheSpec::Local { dir } = spec {
                if dir.is_relative() {
                    *dir = base.join(&*dir);
                }
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctors_build_cache_line_is_one_sentence() {
        for containerd_store in [false, true] {
            let line = daemon_support(containerd_store);
            assert!(!line.contains("  "), "{line}");
            assert!(line.contains("--cache-to: POST /build"), "{line}");
        }
    }

    #[test]
    fn buildx_spellings() {
        assert_eq!(
            parse(
                "type=registry,ref=127.0.0.1:5000/cache/app,mode=max",
                Direction::To
            ),
            Ok(CacheSpec::Registry {
                reference: "127.0.0.1:5000/cache/app".into()
            })
        );
        assert_eq!(
            parse("ghcr.io/acme/app-cache", Direction::From),
            Ok(CacheSpec::Registry {
                reference: "ghcr.io/acme/app-cache".into()
            })
        );
        assert_eq!(
            parse("type=local,src=/tmp/c", Direction::From),
            Ok(CacheSpec::Local {
                dir: "/tmp/c".into()
            })
        );
        assert_eq!(
            parse("type=local,dest=.cache", Direction::To),
            Ok(CacheSpec::Local {
                dir: ".cache".into()
            })
        );
        assert_eq!(parse("type=inline", Direction::To), Ok(CacheSpec::Inline));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let e = parse("type=gha", Direction::To).unwrap_err();
        assert!(
            e.contains("type=gha is not supported") && e.contains("type=registry"),
            "{e}"
        );
        let e = parse("type=local,src=/x", Direction::To).unwrap_err();
        assert!(e.contains("dest=DIR"), "{e}");
        let e = parse("type=local,dest=/x", Direction::From).unwrap_err();
        assert!(e.contains("src=DIR"), "{e}");
        let e = parse("type=registry,ref=reg:5000/app:cache", Direction::To).unwrap_err();
        assert!(e.contains("without a tag"), "{e}");
        let e = parse("type=registry", Direction::From).unwrap_err();
        assert!(e.contains("ref=REPOSITORY"), "{e}");
        let e = parse("type=registry,ref=x,colour=blue", Direction::From).unwrap_err();
        assert!(e.contains("unknown key `colour`"), "{e}");
        assert!(parse("type=inline", Direction::From).is_err());
        assert!(parse("Upper/Case", Direction::From).is_err());
        assert!(parse("", Direction::From).is_err());
    }

    #[test]
    fn stages_up_to_the_target() {
        let df = "FROM x AS base\nFROM base AS deps\nFROM deps AS build\nFROM base AS production\nFROM base AS debug\n";
        assert_eq!(
            stages_up_to(df, "production"),
            ["base", "deps", "build", "production"]
        );
        assert_eq!(
            stages_up_to("FROM x\nRUN y\n", "production"),
            ["production"]
        );
    }

    #[test]
    fn flags_win_over_the_config_per_direction() {
        let reg = |r: &str| CacheSpec::Registry {
            reference: r.into(),
        };
        let config = CacheOptions {
            from: vec![reg("a")],
            to: vec![reg("b")],
        };
        let flags = CacheOptions {
            from: vec![reg("c")],
            to: vec![],
        };
        assert_eq!(
            flags.or(&config),
            CacheOptions {
                from: vec![reg("c")],
                to: vec![reg("b")]
            }
        );
        let local = CacheOptions {
            from: vec![CacheSpec::Local { dir: "c".into() }],
            to: vec![],
        }
        .resolved(std::path::Path::new("/w"));
        assert_eq!(local.from, [CacheSpec::Local { dir: "/w/c".into() }]);
    }
}
