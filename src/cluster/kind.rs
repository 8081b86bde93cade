//! containerd nodes (every kind and k3d node; minikube with the containerd runtime): what a
//! node has, what to do about an image, and the `ctr` commands that do it. k3s runs its own
//! containerd on another socket ([`K3S_ADDRESS`]); every `ctr` names the socket it talks to.
//!
//! A node is asked once per run, in one exec, for its image references (`ctr images ls`) and
//! the blobs in its content store (`ctr content ls -q`). Kubernetes' CRI plugin keeps a
//! reference named after each image's ID (`sha256:<config digest>`), which is what kind itself
//! checks (`crictl inspecti`); so the image ID is found under any name without reading a
//! manifest. Without that reference (CRI off), the manifest behind the image's own name is read.
//!
//! Only blobs an image reference keeps alive count as present: containerd's garbage collector
//! may drop any other blob at any moment (after a failed import was cleaned up, say), and an
//! import that relied on one would fail. Reachability follows the `containerd.io/gc.ref.content`
//! labels that containerd puts on manifests and indexes, as its collector does.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Context as _};
use bollard::Docker;

use super::exec;
use super::image::ImageMeta;

/// The containerd namespace Kubernetes uses.
pub const NAMESPACE: &str = "k8s.io";

/// containerd's own socket (kind, minikube).
pub const CONTAINERD_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The socket of the containerd k3s runs (k3d nodes).
pub const K3S_ADDRESS: &str = "/run/k3s/containerd/containerd.sock";
/// The containerd configuration k3s writes (containerd's own `config dump` does not read it).
pub const K3S_CONFIG: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";

/// A containerd in a node container: the container, and the socket `ctr` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctr<'a> {
    pub node: &'a str,
    pub address: &'a str,
}

impl Ctr<'_> {
    /// `ctr --address ADDRESS -n k8s.io ARGS...`
    pub fn command(&self, args: &[&str]) -> Vec<String> {
        ["ctr", "--address", self.address, "-n", NAMESPACE]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect()
    }

    /// The same, for a shell script.
    fn shell(&self) -> String {
        format!("ctr --address {} -n {NAMESPACE}", self.address)
    }

    /// Runs `ctr ... ARGS` in the node; `what` names the step for a failure.
    async fn run(
        &self,
        docker: &Docker,
        args: &[&str],
        what: &str,
    ) -> anyhow::Result<exec::ExecOutput> {
        let cmd = self.command(args);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        exec::run(docker, self.node, &cmd).await?.check(what)
    }
}

/// What a node's containerd holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// `(name, manifest digest)` of every image reference.
    pub refs: Vec<(String, String)>,
    /// Digests of the blobs in the content store that an image reference keeps alive.
    pub blobs: HashSet<String>,
}

/// What to do for one image on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The image ID is there under the image's name.
    Present,
    /// The image ID is there under another name: tag it.
    Retag { from: String },
    /// The name points at `digest` and every blob is there, but nothing says which image
    /// that is: read the manifest to find out.
    Verify { digest: String },
    /// Send these layers (diff IDs; may be none: then only config and manifest go).
    Import { missing: Vec<String> },
}

const MARK: &str = "@@slipway-content@@";

/// The shell command that lists refs and blobs in one exec (both listings run at once: this
/// is the whole cost of a no-op load).
pub fn state_command(at: Ctr<'_>) -> Vec<String> {
    let ctr = at.shell();
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "f=$(mktemp) && {{ {ctr} content ls > \"$f\" & }} && {ctr} images ls && wait $! && echo {MARK} && cat \"$f\"; r=$?; rm -f \"$f\"; exit $r"
        ),
    ]
}

/// Asks a node what it has.
pub async fn query(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<State> {
    let cmd = state_command(at);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = exec::run(docker, at.node, &cmd)
        .await?
        .check("listing the node's images (ctr images ls, ctr content ls)")?;
    parse_state(&out.stdout).ok_or_else(|| {
        anyhow!(
            "unexpected output from ctr in node {}: {}",
            at.node,
            out.tail()
        )
    })
}

/// Parses [`state_command`]'s output. `None` when it is not what `ctr` prints.
pub fn parse_state(stdout: &str) -> Option<State> {
    let (images, content) = stdout.split_once(MARK)?;
    let mut lines = images.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next()?;
    if !header.starts_with("REF") {
        return None;
    }
    let refs: Vec<(String, String)> = lines
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            let _media_type = cols.next()?;
            let digest = cols.next()?;
            digest
                .starts_with("sha256:")
                .then(|| (name.to_string(), digest.to_string()))
        })
        .collect();
    // DIGEST SIZE AGE LABELS, tab-separated (AGE has spaces); labels `k=v,k=v` or `-`.
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for line in content.lines() {
        let mut cols = line.split('\t').filter(|c| !c.trim().is_empty());
        let Some(digest) = cols
            .next()
            .map(str::trim)
            .filter(|d| d.starts_with("sha256:"))
        else {
            continue;
        };
        let labels = cols.next_back().unwrap_or("");
        let refs = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| k.starts_with("containerd.io/gc.ref.content"))
            .map(|(_, v)| v.trim())
            .collect();
        children.insert(digest, refs);
    }
    let mut blobs = HashSet::new();
    let mut todo: Vec<&str> = refs.iter().map(|(_, d)| d.as_str()).collect();
    while let Some(d) = todo.pop() {
        if let Some(kids) = children.get(d) {
            if blobs.insert(d.to_string()) {
                todo.extend(kids.iter().copied());
            }
        }
    }
    Some(State { refs, blobs })
}

/// Decides what to do for `image` on a node in `state`.
pub fn plan(image: &ImageMeta, state: &State) -> Action {
    let name = image.containerd_name();
    let missing: Vec<String> = unique(&image.diff_ids)
        .into_iter()
        .filter(|d| !state.blobs.contains(d))
        .collect();
    let complete = |digest: &str| {
        missing.is_empty() && state.blobs.contains(&image.id) && state.blobs.contains(digest)
    };
    let by_id = state.refs.iter().find(|(n, _)| *n == image.id);
    if let Some((id_ref, digest)) = by_id {
        if complete(digest) {
            if state.refs.iter().any(|(n, d)| *n == name && d == digest) {
                return Action::Present;
            }
            return Action::Retag {
                from: id_ref.clone(),
            };
        }
    } else if let Some((_, digest)) = state.refs.iter().find(|(n, _)| *n == name) {
        if complete(digest) {
            return Action::Verify {
                digest: digest.clone(),
            };
        }
    }
    Action::Import { missing }
}

fn unique(v: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    v.iter().filter(|d| seen.insert(*d)).cloned().collect()
}

/// Whether the manifest `digest` on the node is `image`'s (its config is the image ID).
pub async fn manifest_is(
    docker: &Docker,
    at: Ctr<'_>,
    digest: &str,
    image: &ImageMeta,
) -> anyhow::Result<bool> {
    let out = at
        .run(
            docker,
            &["content", "get", digest],
            "reading a manifest (ctr content get)",
        )
        .await?;
    let m: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("the manifest {digest} on node {} is not JSON", at.node))?;
    Ok(m.pointer("/config/digest").and_then(|d| d.as_str()) == Some(image.id.as_str()))
}

/// The snapshotter the node's CRI uses (kind reads it the same way; k3s writes its own
/// configuration file); `overlayfs` by default.
pub async fn snapshotter(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<String> {
    let cmd: &[&str] = match at.address {
        K3S_ADDRESS => &["cat", K3S_CONFIG],
        _ => &["containerd", "config", "dump"],
    };
    let out = exec::run(docker, at.node, cmd)
        .await?
        .check("reading the containerd configuration")?;
    Ok(parse_snapshotter(&out.stdout))
}

pub fn parse_snapshotter(config: &str) -> String {
    toml::from_str::<toml::Value>(config)
        .ok()
        .and_then(|v| {
            v.get("plugins")?
                .get("io.containerd.grpc.v1.cri")?
                .get("containerd")?
                .get("snapshotter")?
                .as_str()
                .map(str::to_string)
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "overlayfs".to_string())
}

/// The label on the small blob that holds the layers of one import sent ahead of its archive
/// ([`import_command`]) until the import names them: `containerd.io/gc.root=slipway-load.SECONDS`.
pub const HOLD_LABEL: &str = "containerd.io/gc.root";
const HOLD_VALUE: &str = "slipway-load.";

/// The name a layer's file takes in the content store's directory while it arrives
/// ([`import_command`]); one left by a stopped node goes with [`release_orphans`].
const SPOOL: &str = "slipway-spool.";

/// Prints the directory of the node's content store when a layer's file may be placed in it:
/// the root the content plugin exports, with the metadata store sharing content between
/// namespaces (its default policy, which commits a blob already in the directory without
/// reading it again); nothing otherwise.
fn content_store_probe(ctr: &str) -> String {
    format!(
        r#"{ctr} plugins ls -d id==content id==bolt 2>/dev/null | awk '$1 == "root" {{ r = $2 }} $1 == "policy" {{ p = $2 }} END {{ if (p == "shared" && r != "") print r }}'"#
    )
}

/// Releases what an import cut off by a node stop left behind, created before the node's
/// containerd started (their owners died with the last containerd): the temporary leases of
/// `ctr images import` (`containerd.io/gc.expire`, each keeping its blobs for 24 hours) and
/// the holds of layers sent ahead ([`HOLD_LABEL`], kept for good). A lease or hold of a live
/// process is never older than the containerd serving it; and a layer's file that was still
/// arriving ([`SPOOL`], last written before the start). `ctr` gives a lease's creation to
/// the second, and a hold's label holds its second, so either counts as older only when its
/// whole second came before containerd's start (known to the hundredth: now less the
/// process's age). Returns what it released: `lease ID`, `hold DIGEST` and `spool PATH`
/// lines.
pub async fn release_orphans(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<Vec<String>> {
    let ctr = at.shell();
    let script = format!(
        r#"pid=$(pidof containerd | awk '{{print $1}}')
[ -n "$pid" ] || exit 0
start=$(awk -v now="$(date +%s.%N)" -v ticks="$(cut -d' ' -f22 /proc/$pid/stat)" -v hz="$(getconf CLK_TCK)" '{{ printf "%.2f", now - $1 + ticks / hz }}' /proc/uptime)
before() {{ awk -v at="$1" -v start="$start" 'BEGIN {{ exit !(at + 1 <= start) }}'; }}
{ctr} leases ls | tail -n +2 | while read -r id created labels; do
  case "$labels" in *containerd.io/gc.expire=*) ;; *) continue ;; esac
  at=$(date -d "$created" +%s 2>/dev/null) || continue
  if before "$at" && {ctr} leases rm "$id" >/dev/null; then echo "lease $id"; fi
done
{ctr} content ls | awk '/{HOLD_VALUE}/ {{ for (i = 2; i <= NF; i++) {{ n = split($i, kv, ","); for (j = 1; j <= n; j++) if (kv[j] ~ /^{hold}={value}[0-9]+$/) {{ sub(/.*\./, "", kv[j]); print $1, kv[j] }} }} }}' | while read -r digest at; do
  if before "$at" && {ctr} content rm "$digest" >/dev/null; then echo "hold $digest"; fi
done
store=$({probe})
[ -z "$store" ] || for spool in "$store"/{SPOOL}*; do
  [ -f "$spool" ] && before "$(stat -c %Y "$spool")" && rm -f "$spool" && echo "spool $spool"
done
exit 0"#,
        hold = HOLD_LABEL.replace('.', r"\.").replace('/', r"\/"),
        value = HOLD_VALUE.replace('.', r"\."),
        probe = content_store_probe(&ctr),
    );
    let out = exec::run(docker, at.node, &["sh", "-c", &script])
        .await?
        .check("releasing what imports cut off left (ctr leases rm, ctr content rm)")?;
    Ok(out.stdout.lines().map(str::to_string).collect())
}

/// `ctr images import` of the archive on stdin (kind's own flags) and, once it succeeded,
/// `ctr images check` of the image, in one exec (a second exec per node cost a round trip of
/// its own): the check's output follows [`exec::CHECK_FOLLOWS`]; [`check_import`] reads it.
/// The image's name comes first on stdin, on a line of its own ([`exec::name_line`]), so the
/// command can start before the image is known; without a line it does nothing.
///
/// With `ahead`, the stream is framed ([`super::transfer::Format::Oci`]): a large layer may
/// come by itself, as a line `L SIZE DIGEST` and its bytes, and go straight into the content
/// store (`ctr images import` hashes every blob in `ctr` and again in containerd: see below
/// for what is hashed instead).
/// containerd's garbage collector would take a blob no image names yet, so a small blob of
/// the import's own, a [`HOLD_LABEL`] root, names each layer
/// (`containerd.io/gc.ref.content.l.N`) before its bytes go in, and goes when the import has
/// ended (its layers are the image's then, or nobody's after a failure); a hold left by a
/// stopped node goes with [`release_orphans`].
///
/// Where the node's content store shares content between namespaces (containerd's default;
/// [`content_store_probe`]), a layer's bytes are written once, to a file in the store's
/// directory, linked in as the blob and committed to the namespace by `ctr content ingest`,
/// which finds the blob there and reads nothing: containerd neither copies nor hashes it
/// (1.2 s of a node's CPU for each 200 MB here). The bytes are checked on arrival by their
/// size, and by their digest when the import unpacks the layer (its diff ID is its digest:
/// an uncompressed layer), before any container can use them: a wrong layer fails the
/// import, and no image names it, so it goes with the hold. Should the garbage collector
/// sweep the directory between the link and the commit, the ingest reads the file and
/// hashes it as it would have.
pub fn import_command(at: Ctr<'_>, snapshotter: &str, ahead: bool) -> Vec<String> {
    let ctr = at.shell();
    let import = format!(
        "{ctr} images import --all-platforms --digests --snapshotter={} - && echo '{}' && {ctr} images check \"name==$name\"",
        exec::sh_quote(snapshotter),
        exec::CHECK_FOLLOWS,
    );
    let script = if ahead {
        // `demux` reads the frames: a layer alone goes into the content store, the archive's
        // entries go on to the import. Nothing else it runs writes to its standard output, the
        // import's archive. Where the store may not be written to directly, a layer goes
        // through `ctr content ingest` (from a file when an earlier, cut-off ingest of it waits
        // to be resumed: `ctr` resumes by seeking its input; in /var/tmp, as a kind node's /tmp
        // is memory).
        let probe = content_store_probe(&ctr);
        format!(
            r#"read -r name || exit 0
mark=$(mktemp -p /var/tmp 2>/dev/null || mktemp) || exit 1
stamp={HOLD_VALUE}$(date +%s)
hold="slipway hold $stamp $$ $(cat /proc/sys/kernel/random/uuid) $name"
holding() {{
  d=sha256:$(printf '%s' "$hold" | sha256sum | cut -c1-64)
  for try in 1 2 3; do
    printf '%s' "$hold" | {ctr} content ingest --expected-digest "$d" "slipway-$d" >/dev/null
    if {ctr} content label "$d" "{HOLD_LABEL}=$stamp" >/dev/null; then root=$d; echo "$d" > "$mark"; break; fi
  done
  [ -n "$root" ] || return 1
  # (The hold is a blob: the store's blob directory exists now, in a node new until then too.)
  store=$({probe})
  [ -n "$store" ] && [ -d "$store/blobs/sha256" ] && [ -w "$store" ] && return 0
  store=
  # Through `ctr content ingest`: the cut-off ingests waiting to be resumed.
  active=" $({ctr} content active | awk 'NR > 1 {{ printf "%s ", $1 }}')"
}}
ingest() {{ {ctr} content ingest --expected-size "$size" --expected-digest "$digest" "slipway-$digest" >/dev/null; }}
placed() {{
  if ! head -c "$size" > "$spool" || [ "$(stat -c %s "$spool")" != "$size" ]; then
    rm -f "$spool"; echo "the stream ended inside layer $digest" >&2; return 1
  fi
  chmod 0444 "$spool"
  ln "$spool" "$store/blobs/sha256/${{digest#sha256:}}" 2>/dev/null
  ingest < "$spool"; rc=$?
  rm -f "$spool"; return $rc
}}
demux() {{
  root=; n=0
  while read -r frame size digest; do
    case "$frame" in
      L) [ -n "$root" ] || holding || {{ echo "could not make the blob that holds the layers sent ahead" >&2; exit 1; }}
         {ctr} content label "$root" "containerd.io/gc.ref.content.l.$n=$digest" >/dev/null || {{ echo "could not hold layer $digest" >&2; exit 1; }}
         n=$((n + 1))
         if [ -n "$store" ] && spool=$(mktemp "$store/{SPOOL}XXXXXX"); then
           placed || exit 1
         else
           case "$active" in
             *" slipway-$digest "*) head -c "$size" > "$mark.layer" && ingest < "$mark.layer"; rm -f "$mark.layer" ;;
             *) head -c "$size" | {{ ingest; cat >/dev/null; }} ;;
           esac
         fi ;;
      T) head -c "$size" || exit 1 ;;
      E) exit 0 ;;
      *) echo "unexpected line in the stream: $frame" >&2; exit 1 ;;
    esac
  done
  echo "the stream ended early" >&2
  exit 1
}}
demux | {import}
rc=$?
root=$(cat "$mark"); rm -f "$mark"
[ -z "$root" ] || {ctr} content rm "$root" >/dev/null
exit $rc"#
        )
    } else {
        format!("read -r name || exit 0; {import}")
    };
    vec!["sh".into(), "-c".into(), script]
}

/// Points `to` at the image `from` names.
pub async fn retag(docker: &Docker, at: Ctr<'_>, from: &str, to: &str) -> anyhow::Result<()> {
    at.run(
        docker,
        &["images", "tag", "--force", from, to],
        "tagging the image (ctr images tag)",
    )
    .await?;
    Ok(())
}

/// The images the node's containers were made from (`ctr containers ls`).
pub async fn container_images(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<HashSet<String>> {
    let out = at
        .run(
            docker,
            &["containers", "ls"],
            "listing containers (ctr containers ls)",
        )
        .await?;
    Ok(out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect())
}

/// The value of `label` in the config of the image whose manifest is `digest`.
pub async fn config_label(
    docker: &Docker,
    at: Ctr<'_>,
    digest: &str,
    label: &str,
) -> anyhow::Result<Option<String>> {
    let read = |d: String| async move {
        let out = at
            .run(
                docker,
                &["content", "get", &d],
                "reading a blob (ctr content get)",
            )
            .await?;
        serde_json::from_str::<serde_json::Value>(&out.stdout)
            .with_context(|| format!("the blob {d} on node {} is not JSON", at.node))
    };
    let manifest = read(digest.to_string()).await?;
    let Some(config) = manifest.pointer("/config/digest").and_then(|d| d.as_str()) else {
        return Ok(None);
    };
    let config = read(config.to_string()).await?;
    Ok(config
        .pointer("/config/Labels")
        .and_then(|l| l.get(label))
        .and_then(|v| v.as_str())
        .map(str::to_string))
}

/// Removes image references, waiting for containerd to collect what they held.
pub async fn remove(docker: &Docker, at: Ctr<'_>, names: &[String]) -> anyhow::Result<()> {
    let mut args = vec!["images", "rm", "--sync"];
    args.extend(names.iter().map(String::as_str));
    at.run(docker, &args, "removing images (ctr images rm)")
        .await?;
    Ok(())
}

/// The bytes containerd's store takes in the node (content and snapshots: `du -sk` of its root).
pub async fn store_bytes(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<u64> {
    let root = match at.address {
        K3S_ADDRESS => "/var/lib/rancher/k3s/agent/containerd",
        _ => "/var/lib/containerd",
    };
    let out = exec::run(docker, at.node, &["du", "-sk", root])
        .await?
        .check("measuring containerd's store (du -sk)")?;
    out.stdout
        .split_whitespace()
        .next()
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| k * 1024)
        .ok_or_else(|| {
            anyhow!(
                "unexpected output from du in node {}: {}",
                at.node,
                out.tail()
            )
        })
}

/// One line of `ctr images check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub digest: String,
    pub complete: bool,
    pub unpacked: bool,
}

pub fn parse_check(stdout: &str) -> Vec<Check> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("REF"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 5 {
                return None;
            }
            Some(Check {
                name: cols[0].to_string(),
                digest: cols[2].to_string(),
                complete: cols[3] == "complete",
                unpacked: cols.last() == Some(&"true"),
            })
        })
        .collect()
}

async fn check_all(docker: &Docker, at: Ctr<'_>) -> anyhow::Result<Vec<Check>> {
    let out = at
        .run(
            docker,
            &["images", "check"],
            "checking images (ctr images check)",
        )
        .await?;
    Ok(parse_check(&out.stdout))
}

/// Reads what `ctr images check` printed for `name`: it must be there, point at `digest` (when
/// known), and be complete and unpacked.
pub fn check_import(stdout: &str, name: &str, digest: Option<&str>) -> anyhow::Result<()> {
    let Some(c) = parse_check(stdout).into_iter().find(|c| c.name == name) else {
        return Err(anyhow!(
            "after the import, {name} is not in the node's image list"
        ));
    };
    if let Some(d) = digest {
        if c.digest != d {
            return Err(anyhow!(
                "after the import, {name} points at {} instead of {d}",
                c.digest
            ));
        }
    }
    if !c.complete || !c.unpacked {
        return Err(anyhow!(
            "after the import, {name} is {} and {}",
            if c.complete { "complete" } else { "incomplete" },
            if c.unpacked {
                "unpacked"
            } else {
                "not unpacked"
            }
        ));
    }
    Ok(())
}

/// Removes the references a failed import left pointing at an incomplete image: the image's
/// name, its ID reference and `--digests` references, when they point at something
/// incomplete or not unpacked (a layer that failed its digest on unpacking: the blob goes
/// with them). Returns the names removed.
pub async fn cleanup(
    docker: &Docker,
    at: Ctr<'_>,
    image: &ImageMeta,
    digest: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let name = image.containerd_name();
    let checks = check_all(docker, at).await?;
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| !c.complete || !c.unpacked)
        .filter(|c| c.name == name || c.name == image.id || Some(c.digest.as_str()) == digest)
        .map(|c| c.name.clone())
        .collect();
    if bad.is_empty() {
        return Ok(bad);
    }
    let mut args = vec!["images", "rm"];
    args.extend(bad.iter().map(String::as_str));
    at.run(
        docker,
        &args,
        "removing an incomplete image (ctr images rm)",
    )
    .await?;
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LS: &str = "REF                                                                                       TYPE                                                 DIGEST                                                                  SIZE    PLATFORMS   LABELS                          
docker.io/lx/app:v1                                                                       application/vnd.docker.distribution.manifest.v2+json sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0 4.9 MiB linux/amd64 io.cri-containerd.image=managed 
import-2026-11-25@sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0 application/vnd.docker.distribution.manifest.v2+json sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0 4.9 MiB linux/amd64 io.cri-containerd.image=managed 
sha256:612450e932051f0d4efb445ac97dc93d20880497794b9edf2ce35abd603c3aae                   application/vnd.docker.distribution.manifest.v2+json sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0 4.9 MiB linux/amd64 io.cri-containerd.image=managed 
";
    const M: &str = "sha256:9082c2cbbf3aafdbe1daf9fee879fb8fd8bf8f324301067d9ba9b4f44c2497c0";
    const ID: &str = "sha256:612450e932051f0d4efb445ac97dc93d20880497794b9edf2ce35abd603c3aae";

    fn image(reference: &str) -> ImageMeta {
        ImageMeta::new(
            "app",
            reference,
            ID,
            vec!["sha256:l0".into(), "sha256:l1".into()],
        )
    }

    fn state(with_l1: bool) -> State {
        let mut out = format!(
            "{LS}{MARK}\nDIGEST\t\t\tSIZE\tAGE\t\tLABELS\n{ID}\t2.415kB\t1 second\tcontainerd.io/gc.ref.snapshot.overlayfs=sha256:af\nsha256:l0\t1.985MB\t1 second\t\tcontainerd.io/uncompressed=sha256:l0\n{M}\t896B\tLess than a second\tcontainerd.io/gc.ref.content.l.1=sha256:l1,containerd.io/gc.ref.content.l.0=sha256:l0,containerd.io/gc.ref.content.config={ID}\nsha256:stray\t1B\t1 second\t-\n"
        );
        if with_l1 {
            out.push_str("sha256:l1\t2B\t2 minutes\t-\n");
        }
        parse_state(&out).unwrap()
    }

    #[test]
    fn parses_refs_and_blobs() {
        let s = state(true);
        assert_eq!(s.refs.len(), 3);
        assert_eq!(
            s.refs[0],
            ("docker.io/lx/app:v1".to_string(), M.to_string())
        );
        assert!(s.blobs.contains("sha256:l1"));
        assert!(s.blobs.contains(ID) && s.blobs.contains(M));
        // A blob no image keeps alive may be collected any moment: not counted.
        assert!(!s.blobs.contains("sha256:stray"));
        assert_eq!(s.blobs.len(), 4);
        assert_eq!(parse_state("no marker"), None);
        let empty =
            parse_state(&format!("REF TYPE DIGEST SIZE PLATFORMS LABELS\n{MARK}\n")).unwrap();
        assert_eq!(empty, State::default());
    }

    #[test]
    fn plans_the_least_work() {
        assert_eq!(plan(&image("lx/app:v1"), &state(true)), Action::Present);
        assert_eq!(
            plan(&image("lx/app:other"), &state(true)),
            Action::Retag {
                from: ID.to_string()
            }
        );
        assert_eq!(
            plan(&image("lx/app:v1"), &state(false)),
            Action::Import {
                missing: vec!["sha256:l1".into()]
            }
        );
        // Without the CRI's ID reference, the name's manifest has to be read.
        let mut s = state(true);
        s.refs.retain(|(n, _)| n != ID);
        assert_eq!(
            plan(&image("lx/app:v1"), &s),
            Action::Verify {
                digest: M.to_string()
            }
        );
        // Nothing there at all: every layer, once even when listed twice.
        let mut img = image("lx/app:v1");
        img.diff_ids.push("sha256:l0".into());
        assert_eq!(
            plan(&img, &State::default()),
            Action::Import {
                missing: vec!["sha256:l0".into(), "sha256:l1".into()]
            }
        );
    }

    #[test]
    fn reads_the_snapshotter() {
        let cfg = "version = 2\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n      snapshotter = \"native\"\n";
        assert_eq!(parse_snapshotter(cfg), "native");
        assert_eq!(parse_snapshotter("version = 2\n"), "overlayfs");
        assert_eq!(parse_snapshotter("not toml ["), "overlayfs");
    }

    #[test]
    fn parses_image_checks() {
        let out = "REF                 TYPE                                                 DIGEST                                                                  STATUS           SIZE            UNPACKED 
docker.io/lx/app:v3 application/vnd.docker.distribution.manifest.v2+json sha256:8c03e676aee262422ff18556622c55b6d0605050083dae69096fdc020960a933 incomplete (5/6) 4.9 MiB/4.9 MiB false
docker.io/lx/app:v2 application/vnd.docker.distribution.manifest.v2+json sha256:5aaf8b1de977ce5d745c73235e7b06f3b791cc45f57e79bd57edb175a686694c complete (6/6)   4.9 MiB/4.9 MiB true
";
        let c = parse_check(out);
        assert_eq!(c.len(), 2);
        assert!(!c[0].complete && !c[0].unpacked);
        assert!(c[1].complete && c[1].unpacked);
        assert_eq!(c[1].name, "docker.io/lx/app:v2");
    }
}
