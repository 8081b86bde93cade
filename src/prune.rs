//! `prune`: the images slipway built and nothing needs any more, removed from the daemon and
//! from every node of the local cluster.
//!
//! Every change leaves another `PREFIX/NAME:<12 hex>` image behind, on the daemon and in every
//! node. Only images carrying slipway's labels (`dev.slipway.component` naming a component of
//! this project) under this project's repository names are candidates; of those, each
//! component keeps the image of the last build record, every image a container uses, and the
//! newest N (by the time the daemon last tagged them). Only the input-digest tags are removed:
//! an image someone tagged by hand as well stays under that name. Nodes keep the same newest N
//! and the last build's, and what their own containers use (not what the daemon's use); a node image is removed only when its config
//! carries slipway's labels too. The temporary tags of runs that were killed outright (a
//! build's, this project's; a normalisation's export tag, any project's) go too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::Context as _;
use bollard::Docker;
use serde::Serialize;

use crate::builder::LABEL_COMPONENT;
use crate::cluster::{self, kind, Cluster, Detection, Runtime};
use crate::config::{ClusterTarget, Config};
use crate::docker::Daemon;
use crate::record::BuildReport;
use crate::report::fmt_bytes;

/// What one place (the daemon, a node) gave up.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Place {
    /// `daemon` or the node container's name.
    pub place: String,
    /// The image references removed (or, in a dry run, that would be).
    pub removed: Vec<String>,
    /// Bytes freed: on the daemon the layers no remaining image holds, in a node the shrinking
    /// of containerd's store; `None` in a dry run or when not measured.
    pub freed_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `prune` did: the `--metadata-file` JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct PruneReport {
    pub dry_run: bool,
    pub keep: usize,
    /// `kind:NAME`... when there was a cluster.
    pub cluster: Option<String>,
    pub places: Vec<Place>,
}

/// One slipway image on the daemon.
#[derive(Debug, Clone)]
struct Candidate {
    component: String,
    id: String,
    /// Its input-digest tags (`PREFIX/NAME:<12 hex>`).
    tags: Vec<String>,
    /// When the daemon last tagged it (RFC 3339), else when it was created.
    when: String,
}

/// Whether `tag` is `REPO:<12 hex>`.
fn digest_tag_of(tag: &str, repo: &str) -> bool {
    tag.strip_prefix(repo)
        .and_then(|t| t.strip_prefix(':'))
        .is_some_and(|t| t.len() == 12 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Decides what goes: the candidates beyond the newest `keep` per component that neither the
/// record nor a container uses. Returns (doomed, kept).
fn choose(
    mut candidates: Vec<Candidate>,
    record: &BuildReport,
    in_use: &HashSet<String>,
    keep: usize,
) -> (Vec<Candidate>, Vec<Candidate>) {
    candidates.sort_by(|a, b| (&a.component, &b.when, &b.id).cmp(&(&b.component, &a.when, &a.id)));
    let (mut doomed, mut kept) = (Vec::new(), Vec::new());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in candidates {
        let rank = seen.entry(c.component.clone()).or_default();
        *rank += 1;
        let recorded = record
            .components
            .get(&c.component)
            .is_some_and(|r| r.image_id == c.id || c.tags.contains(&r.image));
        if *rank <= keep || recorded || in_use.contains(&c.id) {
            kept.push(c);
        } else {
            doomed.push(c);
        }
    }
    (doomed, kept)
}

/// Removes (or with `dry_run` lists) what nothing needs, on the daemon and in every node of
/// the cluster `target` names.
pub async fn prune(
    daemon: &Daemon,
    config: &Config,
    record: &BuildReport,
    target: &ClusterTarget,
    keep: usize,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    let docker = &daemon.docker;
    let candidates = candidates(docker, config).await?;
    let in_use = containers_images(docker).await?;
    // Nodes keep the same but for the daemon's containers (their own are asked for).
    let (_, kept_in_nodes) = choose(candidates.clone(), record, &HashSet::new(), keep);
    let (doomed, _) = choose(candidates, record, &in_use, keep);
    let mut report = PruneReport {
        dry_run,
        keep,
        ..Default::default()
    };
    let mut removed: Vec<String> = doomed.iter().flat_map(|c| c.tags.clone()).collect();
    let freed = match dry_run {
        true => None,
        false => remove_from_daemon(docker, &doomed).await?,
    };
    // The temporary tags of runs killed outright (build tags of this project, export tags of
    // any): the next build would reap them, but that project may never be built again.
    let repositories: Vec<String> = config
        .components
        .keys()
        .map(|n| config.image_repo(n))
        .collect();
    let (dead, error) = match crate::leftovers::dead_tags(daemon, &repositories).await {
        Ok(dead) => (dead, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    removed.extend(match dry_run {
        true => dead,
        false => crate::leftovers::untag(daemon, dead).await,
    });
    report.places.push(Place {
        place: "daemon".into(),
        removed,
        freed_bytes: freed,
        error,
    });

    let cluster = match target {
        ClusterTarget::None => None,
        t => match Cluster::detect(docker, t).await? {
            Detection::Found(c) => Some(c),
            Detection::NoCluster(_) => None,
        },
    };
    if let Some(c) = cluster {
        report.cluster = Some(c.target().to_string());
        let mut keep_names: HashSet<String> = kept_in_nodes
            .iter()
            .flat_map(|c| c.tags.iter().map(|t| cluster::image::normalize_ref(t)))
            .collect();
        keep_names.extend(
            record
                .components
                .values()
                .map(|r| cluster::image::normalize_ref(&r.image)),
        );
        let repos: Vec<(String, String)> = config
            .components
            .keys()
            .map(|n| {
                let r = cluster::image::normalize_ref(&format!("{}:x", config.image_repo(n)));
                (n.clone(), r.trim_end_matches(":x").to_string())
            })
            .collect();
        for node in c.nodes() {
            let place = match (c.runtime(), node.running) {
                (Runtime::Docker, _) => Place {
                    place: node.name.clone(),
                    removed: vec![],
                    freed_bytes: None,
                    error: Some("not pruned: nodes with the Docker runtime are not pruned yet (`docker exec NODE docker image prune`)".into()),
                },
                (_, false) => Place {
                    place: node.name.clone(),
                    removed: vec![],
                    freed_bytes: None,
                    error: Some(format!("not pruned: the node container is {}", node.state)),
                },
                (Runtime::Containerd, true) => {
                    let at = kind::Ctr {
                        node: &node.name,
                        address: c.containerd_address(),
                    };
                    prune_node(docker, at, &repos, &keep_names, dry_run)
                        .await
                        .unwrap_or_else(|e| Place {
                            place: node.name.clone(),
                            removed: vec![],
                            freed_bytes: None,
                            error: Some(format!("{e:#}")),
                        })
                }
            };
            report.places.push(place);
        }
    }
    Ok(report)
}

/// This project's slipway images on the daemon.
async fn candidates(docker: &Docker, config: &Config) -> anyhow::Result<Vec<Candidate>> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![LABEL_COMPONENT.to_string()])]);
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker
        .list_images(Some(opts))
        .await
        .context("listing slipway's images (label dev.slipway.component)")?;
    let mut out = Vec::new();
    for i in images {
        let Some(component) = i.labels.get(LABEL_COMPONENT) else {
            continue;
        };
        if !config.components.contains_key(component) {
            continue;
        }
        let repo = config.image_repo(component);
        let tags: Vec<String> = i
            .repo_tags
            .iter()
            .filter(|t| digest_tag_of(t, &repo))
            .cloned()
            .collect();
        if tags.is_empty() {
            continue;
        }
        let info = docker
            .inspect_image(&i.id)
            .await
            .with_context(|| format!("inspecting {}", tags[0]))?;
        let when = info
            .metadata
            .and_then(|m| m.last_tag_time)
            .map(|t| t.to_string())
            .filter(|t| !t.starts_with("0001"))
            .or_else(|| info.created.map(|t| t.to_string()))
            .unwrap_or_default();
        out.push(Candidate {
            component: component.clone(),
            id: i.id,
            tags,
            when,
        });
    }
    Ok(out)
}

/// The image IDs that containers (running or not) use.
async fn containers_images(docker: &Docker) -> anyhow::Result<HashSet<String>> {
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .context("listing containers")?;
    Ok(list.into_iter().filter_map(|c| c.image_id).collect())
}

/// The diff ID of an empty layer (a tar of two zero blocks), as the classic builder records it.
const EMPTY_LAYER: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// The diff IDs of an image's layers with content, with each one's size: the history entries
/// with a size, in order. `None` when the two do not pair up (a layer of directories only).
async fn layers(docker: &Docker, id: &str) -> anyhow::Result<Option<Vec<(String, u64)>>> {
    let info = docker.inspect_image(id).await?;
    let diff_ids: Vec<String> = info
        .root_fs
        .and_then(|r| r.layers)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d != EMPTY_LAYER)
        .collect();
    let sizes: Vec<u64> = docker
        .image_history(id)
        .await?
        .iter()
        .rev()
        .filter(|h| h.size > 0)
        .map(|h| h.size as u64)
        .collect();
    Ok((sizes.len() == diff_ids.len()).then(|| diff_ids.into_iter().zip(sizes).collect()))
}

/// Untags the doomed images' digest tags; returns the bytes of the layers that no remaining
/// image holds any more (`None` when an image's layer sizes could not be read).
async fn remove_from_daemon(docker: &Docker, doomed: &[Candidate]) -> anyhow::Result<Option<u64>> {
    let mut before: Option<Vec<(String, u64)>> = Some(Vec::new());
    for c in doomed {
        let l = layers(docker, &c.id).await.ok().flatten();
        before = before.zip(l).map(|(mut b, l)| {
            b.extend(l);
            b
        });
    }
    for c in doomed {
        for tag in &c.tags {
            docker
                .remove_image(
                    tag,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await
                .with_context(|| format!("removing {tag}"))?;
        }
    }
    let all = docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
        .context("listing images")?;
    let mut held: HashSet<String> = HashSet::new();
    for i in all {
        if let Ok(info) = docker.inspect_image(&i.id).await {
            held.extend(info.root_fs.and_then(|r| r.layers).unwrap_or_default());
        }
    }
    let mut counted = HashSet::new();
    Ok(before.map(|b| {
        b.into_iter()
            .filter(|(d, _)| !held.contains(d) && counted.insert(d.clone()))
            .map(|(_, s)| s)
            .sum()
    }))
}

/// Prunes one containerd node: slipway's references under this project's repositories that
/// neither the daemon keeps nor a container of the node uses.
async fn prune_node(
    docker: &Docker,
    at: kind::Ctr<'_>,
    repos: &[(String, String)],
    keep: &HashSet<String>,
    dry_run: bool,
) -> anyhow::Result<Place> {
    let state = kind::query(docker, at).await?;
    let used = kind::container_images(docker, at).await?;
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    let mut doomed_digests: BTreeSet<String> = BTreeSet::new();
    for (name, digest) in &state.refs {
        let Some((component, _)) = repos.iter().find(|(_, r)| digest_tag_of(name, r)) else {
            continue;
        };
        if keep.contains(name) || used.contains(name) {
            continue;
        }
        if kind::config_label(docker, at, digest, LABEL_COMPONENT)
            .await?
            .as_deref()
            != Some(component.as_str())
        {
            continue;
        }
        doomed.insert(name.clone());
        doomed_digests.insert(digest.clone());
    }
    // The ID and import references of a removed image go with it, unless a kept name shares
    // its manifest.
    for (name, digest) in &state.refs {
        let kept_elsewhere = state
            .refs
            .iter()
            .any(|(n, d)| d == digest && !doomed.contains(n) && !is_alias(n));
        if doomed_digests.contains(digest) && is_alias(name) && !kept_elsewhere {
            doomed.insert(name.clone());
        }
    }
    let removed: Vec<String> = doomed.into_iter().collect();
    if dry_run || removed.is_empty() {
        return Ok(Place {
            place: at.node.to_string(),
            freed_bytes: (!dry_run).then_some(0),
            removed,
            error: None,
        });
    }
    let before = kind::store_bytes(docker, at).await?;
    kind::remove(docker, at, &removed).await?;
    let after = kind::store_bytes(docker, at).await?;
    Ok(Place {
        place: at.node.to_string(),
        removed,
        freed_bytes: Some(before.saturating_sub(after)),
        error: None,
    })
}

/// The CRI's ID reference (`sha256:...`) and `--digests` import references.
fn is_alias(name: &str) -> bool {
    name.starts_with("sha256:") || name.starts_with("import-")
}

/// The report for people: one line per place.
pub fn render(report: &PruneReport) -> String {
    let mut out = String::new();
    for p in &report.places {
        let done = match report.dry_run {
            true => format!("would remove {}", p.removed.len()),
            false => format!(
                "removed {}, freed {}",
                p.removed.len(),
                p.freed_bytes
                    .map(fmt_bytes)
                    .unwrap_or_else(|| "(not measured)".into())
            ),
        };
        // A place not pruned at all says only why; one pruned in part says both.
        let what = match &p.error {
            Some(e) if p.removed.is_empty() && p.freed_bytes.is_none() => e.clone(),
            Some(e) => format!("{done}; {e}"),
            None => done,
        };
        out.push_str(&format!("{}: {what}\n", p.place));
        for r in &p.removed {
            out.push_str(&format!("  {r}\n"));
        }
    }
    out.push_str(&format!(
        "kept: the last build's images, those containers use, and the newest {} per component{}\n",
        report.keep,
        if report.dry_run {
            " (dry run: nothing removed)"
        } else {
            ""
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ImageRecord;

    fn cand(component: &str, id: &str, when: &str) -> Candidate {
        Candidate {
            component: component.into(),
            id: id.into(),
            tags: vec![format!("p/{component}:{}", &id[..12])],
            when: when.into(),
        }
    }

    #[test]
    fn keeps_the_newest_the_recorded_and_the_used() {
        let c = vec![
            cand("api", "111111111111", "2026-01-01"),
            cand("api", "222222222222", "2026-01-02"),
            cand("api", "333333333333", "2026-01-03"),
            cand("api", "444444444444", "2026-01-04"),
            cand("web", "555555555555", "2026-01-01"),
        ];
        let mut record = BuildReport::default();
        let r: ImageRecord = serde_json::from_value(serde_json::json!({
            "image": "p/api:111111111111", "repository": "p/api", "tag": "111111111111",
            "tags": [], "image_id": "111111111111", "input_digest": "", "outcome": "built",
            "duration_ms": 0, "size": 0
        }))
        .unwrap();
        record.components.insert("api".into(), r);
        let used = HashSet::from(["222222222222".to_string()]);
        let (doomed, kept) = choose(c, &record, &used, 1);
        let ids = |v: &[Candidate]| v.iter().map(|c| c.id[..1].to_string()).collect::<Vec<_>>();
        assert_eq!(ids(&doomed), ["3"]);
        assert_eq!(ids(&kept), ["4", "2", "1", "5"]);
    }

    /// A place pruned in part keeps what it removed beside the error; one not pruned says why.
    #[test]
    fn the_report_keeps_what_was_removed_beside_an_error() {
        let place = |removed: &[&str], freed, error: Option<&str>| Place {
            place: "daemon".into(),
            removed: removed.iter().map(|r| r.to_string()).collect(),
            freed_bytes: freed,
            error: error.map(str::to_string),
        };
        let report = PruneReport {
            places: vec![
                place(&["p/api:111111111111"], Some(2048), Some("listing failed")),
                place(&[], None, Some("not pruned: the node container is exited")),
            ],
            ..Default::default()
        };
        let out = render(&report);
        assert!(
            out.contains("daemon: removed 1, freed 2.0 kB; listing failed\n  p/api:111111111111\n"),
            "{out}"
        );
        assert!(
            out.contains("daemon: not pruned: the node container is exited\n"),
            "{out}"
        );
    }

    #[test]
    fn only_input_digest_tags() {
        assert!(digest_tag_of("p/api:0123456789ab", "p/api"));
        assert!(!digest_tag_of("p/api:latest", "p/api"));
        assert!(!digest_tag_of("p/apix:0123456789ab", "p/api"));
        assert!(!digest_tag_of("docker.io/p/api:0123456789ab", "p/api"));
    }
}
