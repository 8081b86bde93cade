//! What normalising needs to know of an image's lower layers to normalise its successor from
//! the successor's new layers alone.
//!
//! After a one-line change a rebuilt image shares all but its top layers with the image built
//! before: the same base, the same dependency layers (the build cache gave them back). The
//! normal form of a shared layer is known already, and so is everything the rewrite of a new
//! layer asks of the layers below it ([`super::normalize`]'s `Lower`: the entry each path shows
//! there). So each normalisation leaves a record: every layer's outcome, the build-made layers'
//! entries (by their diff IDs, shared by every image that has them), and the base's entries at
//! the paths the build touched and their parents. The next normalisation of an image with the
//! same bottom layers needs from the daemon only the layers above them
//! ([`crate::docker::receive`]: the daemon's own push skips what a registry has).
//!
//! A path of a new layer that the record cannot answer for (the base was not read there, nor at
//! any parent the base lacks) sends normalising back to the whole export, which reads it and
//! records it for the next time. Losing the records costs one whole export.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layer::{self, Listed};
use super::normalize::LayerOutcome;

const DIR: &str = "partial";
const INDEX: &str = "index.json";
/// Held while the index is read, changed and written back ([`crate::lock::cache_lock`]).
const INDEX_LOCK: &str = "index.lock";
const RECEIVED: &str = "received.json";
/// Records kept in all: the newest are the images the next builds start from.
const KEEP: usize = 48;
/// Records kept per base (the same bottom layers and SOURCE_DATE_EPOCH): a run of edits to
/// one component must not push out the records every other component starts from.
const KEEP_PER_BASE: usize = 4;

/// What one normalisation learned, for [`remember`].
#[derive(Debug, Default)]
pub struct Learned {
    base: Vec<Listed>,
    queried: HashSet<Vec<u8>>,
    /// Each build-made layer's entries, by its diff ID as built.
    layers: Vec<(String, Vec<Listed>)>,
    /// Whether each shared build-made layer (not read again: its entries are not in
    /// `layers`) touches `/etc`, as the record normalising started from says.
    etc: HashMap<String, bool>,
}

impl Learned {
    /// The filesystem of the base (`entries`: what each path shows there), read at `queried`.
    pub fn base<'a>(
        &mut self,
        entries: impl Iterator<Item = &'a Listed>,
        queried: &HashSet<Vec<u8>>,
    ) {
        self.base = entries.cloned().collect();
        self.base.sort_by(|a, b| a.head.path.cmp(&b.head.path));
        self.queried = queried.clone();
    }

    /// A build-made layer's entries, all of them.
    pub fn layer(&mut self, diff_id: &str, listed: &[Listed]) {
        self.layers.push((diff_id.to_string(), listed.to_vec()));
    }
}

/// `keys` and every parent directory of each.
pub fn with_parents(keys: impl Iterator<Item = Vec<u8>>) -> HashSet<Vec<u8>> {
    let mut out = HashSet::new();
    for k in keys {
        let mut end = k.len();
        while let Some(i) = k[..end].iter().rposition(|&c| c == b'/') {
            out.insert(k[..i].to_vec());
            end = i;
        }
        out.insert(k);
    }
    out
}

/// One normalisation's record.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    /// The normal form's ID.
    #[serde(default)]
    pub image_id: Option<String>,
    /// The layers as built (diff IDs), bottom first.
    pub raw: Vec<String>,
    /// Their sizes as built.
    pub raw_sizes: Vec<u64>,
    /// How many of them are the base's.
    pub keep: usize,
    /// The SOURCE_DATE_EPOCH the outcomes were normalised with: their normal forms hold it.
    pub sde: i64,
    pub outcomes: Vec<LayerOutcome>,
    /// The base's entries at `queried`.
    base: Vec<Listed>,
    queried: Vec<Vec<u8>>,
    /// Per layer: whether it has an entry under `/etc` (see `Lower::runtime_stub`).
    touches_etc: Vec<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Newest first.
    records: Vec<Entry>,
}

/// A record in the index: its raw diff IDs, its SOURCE_DATE_EPOCH, its file, and how many of
/// its layers are the base's (0 in an index written before that was kept).
#[derive(Debug, Serialize, Deserialize)]
struct Entry(Vec<String>, i64, String, #[serde(default)] usize);

impl Entry {
    /// What records compete for [`KEEP_PER_BASE`] places.
    fn base(&self) -> (&[String], i64) {
        (&self.0[..self.3.min(self.0.len())], self.1)
    }
}

fn dir(cache: &Path) -> PathBuf {
    cache.join(DIR)
}

fn layer_file(cache: &Path, diff_id: &str) -> PathBuf {
    dir(cache)
        .join("layers")
        .join(format!("{}.json", diff_id.trim_start_matches("sha256:")))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// A cache: a write that fails costs one whole export next time, so it is not an error.
fn write_json<T: Serialize>(path: &Path, value: &T) {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(bytes) = serde_json::to_vec(value) {
        let _ = crate::fsutil::write_atomic(path, &bytes, None);
    }
}

fn touches_etc(listed: &[Listed]) -> bool {
    listed
        .iter()
        .any(|l| layer::key_of(&l.head.path).starts_with(b"etc/"))
}

/// Records what normalising the image built with layers `raw` (their sizes, how many are the
/// base's) with SOURCE_DATE_EPOCH `sde` into `image_id` learned.
pub fn remember(
    cache: &Path,
    (raw, raw_sizes, keep): (&[String], &[u64], usize),
    sde: i64,
    image_id: &str,
    outcomes: &[LayerOutcome],
    learned: Learned,
) {
    let mut touches = vec![false; raw.len()];
    let by_id: HashMap<&str, &Vec<Listed>> = learned
        .layers
        .iter()
        .map(|(d, l)| (d.as_str(), l))
        .collect();
    for (i, d) in raw.iter().enumerate().skip(keep) {
        touches[i] = match by_id.get(d.as_str()) {
            Some(listed) => touches_etc(listed),
            // A shared layer: as the earlier record had it (else a later build whose own
            // layers touch `/etc` would find the record's did not, and export whole).
            None => learned.etc.get(d).copied().unwrap_or(false),
        };
    }
    for (diff_id, listed) in &learned.layers {
        let path = layer_file(cache, diff_id);
        if !path.exists() {
            write_json(&path, listed);
        }
    }
    let mut queried: Vec<Vec<u8>> = learned.queried.into_iter().collect();
    queried.sort();
    let record = Record {
        image_id: Some(image_id.to_string()),
        raw: raw.to_vec(),
        raw_sizes: raw_sizes.to_vec(),
        keep,
        sde,
        outcomes: outcomes.to_vec(),
        base: learned.base,
        queried,
        touches_etc: touches,
    };
    let name = format!(
        "{}.json",
        hex::encode(Sha256::digest(
            format!("{}@{sde}", raw.join(",")).as_bytes()
        ))
    );
    write_json(&dir(cache).join(&name), &record);
    let index_path = dir(cache).join(INDEX);
    let lock = dir(cache).join(INDEX_LOCK);
    let Some(_held) = crate::lock::cache_lock(&lock, std::time::Duration::from_secs(2)) else {
        return;
    };
    let mut index: Index = read_json(&index_path).unwrap_or_default();
    index
        .records
        .retain(|Entry(r, t, _, _)| (r.as_slice(), *t) != (raw, sde));
    index
        .records
        .insert(0, Entry(raw.to_vec(), sde, name, keep));
    // The newest KEEP_PER_BASE of each base, and KEEP in all.
    let mut per_base: HashMap<(Vec<String>, i64), usize> = HashMap::new();
    let mut kept = 0;
    index.records.retain(|e| {
        let (base, sde) = e.base();
        let n = per_base.entry((base.to_vec(), sde)).or_default();
        *n += 1;
        let stays = *n <= KEEP_PER_BASE && kept < KEEP;
        kept += usize::from(stays);
        if !stays {
            let _ = std::fs::remove_file(dir(cache).join(&e.2));
        }
        stays
    });
    write_json(&index_path, &index);
    forget_unused_layers(cache, &index);
}

/// Removes the layer listings no kept record names, so the cache stays the size of its
/// [`KEEP`] newest records.
fn forget_unused_layers(cache: &Path, index: &Index) {
    let used: HashSet<String> = index
        .records
        .iter()
        .flat_map(|Entry(raw, _, _, _)| raw.iter())
        .map(|d| format!("{}.json", d.trim_start_matches("sha256:")))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir(cache).join("layers")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !used.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The record to normalise an image built with layers `raw` (the first `keep` its base's)
/// from, and how many bottom layers it shares with it (`from`: the first new layer).
pub struct Prepared {
    pub record: Record,
    pub from: usize,
    /// The entries of the shared build-made layers, bottom first.
    pub below: Vec<Vec<Listed>>,
}

/// The record sharing the most bottom layers with `raw`, made with the same SOURCE_DATE_EPOCH
/// `sde` (a layer's normal form holds it), if it shares at least the base and one layer, and
/// every shared layer's entries are on disk. (Normalising itself tries the first few
/// candidates in turn: `normalize::start_from`.)
#[cfg(test)]
pub fn prepare(cache: &Path, raw: &[String], keep: usize, sde: i64) -> Option<Prepared> {
    candidates(cache, raw, keep, sde)
        .into_iter()
        .find_map(|c| prepare_from(cache, raw, keep, sde, &c))
}

/// A record normalising could start from: how many bottom layers it shares, and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    shared: usize,
    file: String,
}

/// The records made with SOURCE_DATE_EPOCH `sde` that share at least the base and one layer
/// with `raw`, best first: those sharing the most, and of those the newest (a build from
/// scratch shares only the base).
pub fn candidates(cache: &Path, raw: &[String], keep: usize, sde: i64) -> Vec<Candidate> {
    let Some(index) = read_json::<Index>(&dir(cache).join(INDEX)) else {
        return Vec::new();
    };
    let mut found: Vec<Candidate> = index
        .records
        .iter()
        .filter(|Entry(_, t, _, _)| *t == sde)
        .map(|Entry(r, _, file, _)| Candidate {
            shared: r.iter().zip(raw).take_while(|(a, b)| a == b).count(),
            file: file.clone(),
        })
        .filter(|c| c.shared > 0 && c.shared >= keep)
        .collect();
    // The index lists the newest first; a stable sort keeps that order among equals.
    found.sort_by_key(|c| std::cmp::Reverse(c.shared));
    found
}

/// The record of `candidate`, ready to start from: `None` when it no longer fits (read
/// again, another base or SOURCE_DATE_EPOCH) or a shared layer's entries are not on disk.
pub fn prepare_from(
    cache: &Path,
    raw: &[String],
    keep: usize,
    sde: i64,
    candidate: &Candidate,
) -> Option<Prepared> {
    let record: Record = read_json(&dir(cache).join(&candidate.file))?;
    if record.keep != keep || record.sde != sde || record.outcomes.len() != record.raw.len() {
        return None;
    }
    let shared = candidate.shared;
    if record.raw.len() < shared || record.raw[..shared] != raw[..shared] {
        return None;
    }
    let below = raw[keep..shared]
        .iter()
        .map(|d| read_json(&layer_file(cache, d)))
        .collect::<Option<Vec<Vec<Listed>>>>()?;
    Some(Prepared {
        record,
        from: shared,
        below,
    })
}

impl Prepared {
    /// What normalising the new image learns before its new layers are read: the record's base.
    pub fn learned(&self) -> Learned {
        let record = &self.record;
        Learned {
            base: record.base.clone(),
            queried: record.queried.iter().cloned().collect(),
            layers: Vec::new(),
            etc: (record.keep..self.from)
                .filter_map(|i| Some((record.raw.get(i)?.clone(), *record.touches_etc.get(i)?)))
                .collect(),
        }
    }

    /// The base's entries and the paths it was read at.
    pub fn base(&self) -> (&[Listed], HashSet<&[u8]>) {
        let queried = self.record.queried.iter().map(Vec::as_slice).collect();
        (&self.record.base, queried)
    }

    /// Whether the record can say what the base shows at every path of `keys` (the new
    /// layers' paths): read there, or at a parent directory the base lacks.
    pub fn answers_for<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Result<(), Vec<u8>> {
        let (base, queried) = self.base();
        let present: HashSet<&[u8]> = base.iter().map(|l| layer::key_of(&l.head.path)).collect();
        for k in keys {
            let base_name = k.rsplit(|&c| c == b'/').next().unwrap_or(k);
            if queried.contains(k) || base_name.starts_with(b".wh.") {
                continue;
            }
            let mut end = k.len();
            let mut known = false;
            while let Some(i) = k[..end].iter().rposition(|&c| c == b'/') {
                let parent = &k[..i];
                if queried.contains(parent) && !present.contains(parent) {
                    known = true;
                    break;
                }
                end = i;
            }
            if !known {
                return Err(k.to_vec());
            }
        }
        Ok(())
    }

    /// Whether the layers above `from` touch `/etc` as the recorded ones did (which decides
    /// whether a lower layer's empty `/etc` is a runtime's stub).
    pub fn same_etc(&self, new_layers: &[Vec<Listed>]) -> bool {
        let old = self.record.touches_etc[self.from..].iter().any(|t| *t);
        let new = new_layers.iter().any(|l| touches_etc(l));
        old == new
    }
}

/// Bases whose layers a daemon has no registry digest for (imported with `docker load` or
/// `docker import`, never pulled or pushed): the daemon would compress and push all of them,
/// so normalising on them takes the whole export. Asked again after a day (the base may have
/// been pulled since).
const UNPUSHABLE: &str = "unpushable.json";
const UNPUSHABLE_FOR: u64 = 24 * 3600;

fn base_key(host: &str, raw: &[String], keep: usize) -> String {
    let base = &raw[..keep.max(1).min(raw.len())];
    hex::encode(Sha256::digest(
        format!("{host}|{}", base.join(",")).as_bytes(),
    ))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether the daemon at `host` was found to have no registry digest for the base of `raw`.
pub fn unpushable(cache: &Path, host: &str, raw: &[String], keep: usize) -> bool {
    let map: HashMap<String, u64> = read_json(&dir(cache).join(UNPUSHABLE)).unwrap_or_default();
    map.get(&base_key(host, raw, keep))
        .is_some_and(|t| now().saturating_sub(*t) < UNPUSHABLE_FOR)
}

/// Notes that the daemon at `host` pushed more than the new layers of an image on this base.
pub fn remember_unpushable(cache: &Path, host: &str, raw: &[String], keep: usize) {
    let path = dir(cache).join(UNPUSHABLE);
    let mut map: HashMap<String, u64> = read_json(&path).unwrap_or_default();
    let t = now();
    map.retain(|_, seen| t.saturating_sub(*seen) < UNPUSHABLE_FOR);
    map.insert(base_key(host, raw, keep), t);
    write_json(&path, &map);
}

/// Which layer (diff ID as built) each blob slipway received from a daemon's push was: the
/// daemon asks about a layer it pushed before by that blob's digest.
pub fn received(cache: &Path) -> HashMap<String, String> {
    read_json(&dir(cache).join(RECEIVED)).unwrap_or_default()
}

/// Adds `blobs` (compressed digest, diff ID) to [`received`].
pub fn remember_received(cache: &Path, blobs: &[(String, String)]) {
    if blobs.is_empty() {
        return;
    }
    let path = dir(cache).join(RECEIVED);
    let mut map = received(cache);
    const MAX: usize = 4096;
    if map.len() > MAX {
        map.clear();
    }
    for (digest, diff_id) in blobs {
        map.insert(digest.clone(), diff_id.clone());
    }
    write_json(&path, &map);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_added() {
        let got = with_parents([b"app/src/main.py".to_vec()].into_iter());
        let want: HashSet<Vec<u8>> = [&b"app"[..], b"app/src", b"app/src/main.py"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        assert_eq!(got, want);
    }

    /// Remembers an image of `base` and one build-made layer `i` in `cache`.
    fn build(cache: &Path, base: &str, i: usize) {
        let raw = vec![format!("sha256:{base}"), format!("sha256:{i:064x}")];
        let learned = Learned {
            layers: vec![(raw[1].clone(), Vec::new())],
            ..Default::default()
        };
        remember(
            cache,
            (&raw, &[1, 1], 1),
            0,
            "sha256:img",
            &outcomes(&raw),
            learned,
        );
    }

    fn listed(cache: &Path, i: usize) -> bool {
        layer_file(cache, &format!("sha256:{i:064x}")).exists()
    }

    #[test]
    fn only_the_kept_records_layers_stay_listed() {
        let cache = tempfile::tempdir().unwrap();
        let n = KEEP_PER_BASE + 3;
        for i in 0..n {
            build(cache.path(), "base", i);
        }
        assert!(
            (0..3).all(|i| !listed(cache.path(), i)),
            "the oldest records' layers are forgotten"
        );
        assert!(
            (3..n).all(|i| listed(cache.path(), i)),
            "the kept records' layers stay"
        );
        let files = std::fs::read_dir(dir(cache.path()))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != INDEX && e.file_name() != INDEX_LOCK && e.path().is_file())
            .count();
        assert_eq!(
            files, KEEP_PER_BASE,
            "the forgotten records' files are removed"
        );
    }

    #[test]
    fn edits_to_one_component_keep_the_other_components_records() {
        // The frontend built once, then a long run of backend edits: the frontend's next
        // build still finds its record (a whole export otherwise).
        let cache = tempfile::tempdir().unwrap();
        build(cache.path(), "node", 1000);
        for i in 0..KEEP + 5 {
            build(cache.path(), "python", i);
        }
        let raw = ["sha256:node".to_string(), format!("sha256:{:064x}", 1001)];
        let prepared = prepare(cache.path(), &raw, 1, 0).expect("the frontend's record");
        assert_eq!(prepared.from, 1);
        assert!(listed(cache.path(), 1000));
        // And many bases: at most KEEP records in all, the newest.
        for b in 0..KEEP + 2 {
            build(cache.path(), &format!("base{b}"), 2000 + b);
        }
        let index: Index = read_json(&dir(cache.path()).join(INDEX)).unwrap();
        assert_eq!(index.records.len(), KEEP);
        assert!(listed(cache.path(), 2000 + KEEP + 1) && !listed(cache.path(), 2000));
    }

    fn entry(path: &str) -> Listed {
        Listed {
            head: layer::Head {
                path: path.as_bytes().to_vec(),
                link: Vec::new(),
                typeflag: b'0',
                size: 0,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                pax: Vec::new(),
            },
            digest: String::new(),
        }
    }

    fn outcomes(raw: &[String]) -> Vec<LayerOutcome> {
        raw.iter()
            .map(|d| LayerOutcome {
                before: d.clone(),
                after: d.clone(),
                size: 1,
                rewritten: false,
            })
            .collect()
    }

    #[test]
    fn a_shared_layer_that_touches_etc_is_remembered_so_after_a_one_line_change() {
        // A whole export reads every build-made layer: `users` adds a user (/etc/passwd).
        let cache = tempfile::tempdir().unwrap();
        let ids = |v: &[&str]| v.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>();
        let first = ids(&["base", "users", "code1"]);
        let learned = Learned {
            layers: vec![
                (first[1].clone(), vec![entry("etc/passwd")]),
                (first[2].clone(), vec![entry("app/main.py")]),
            ],
            ..Default::default()
        };
        remember(
            cache.path(),
            (&first, &[1, 1, 1], 1),
            0,
            "sha256:a",
            &outcomes(&first),
            learned,
        );
        // A one-line change: only the top layer is read; `users` is shared.
        let second = ids(&["base", "users", "code2"]);
        let prepared = prepare(cache.path(), &second, 1, 0).unwrap();
        assert_eq!(prepared.from, 2);
        let mut learned = prepared.learned();
        learned.layer(&second[2], &[entry("app/main.py")]);
        remember(
            cache.path(),
            (&second, &[1, 1, 1], 1),
            0,
            "sha256:b",
            &outcomes(&second),
            learned,
        );
        // A build from scratch: its own `users` layer touches /etc, as the record's did.
        let cold = ids(&["base", "users2", "code3"]);
        let prepared = prepare(cache.path(), &cold, 1, 0).unwrap();
        assert_eq!(prepared.record.raw, second, "the newest record of the base");
        let new = [vec![entry("etc/passwd")], vec![entry("app/main.py")]];
        assert!(prepared.same_etc(&new), "{:?}", prepared.record.touches_etc);
    }

    #[test]
    fn normalisations_finishing_at_once_lose_no_record() {
        let cache = tempfile::tempdir().unwrap();
        let n = 8;
        std::thread::scope(|s| {
            for i in 0..n {
                let cache = cache.path();
                s.spawn(move || build(cache, &format!("base{i}"), i));
            }
        });
        let index: Index = read_json(&dir(cache.path()).join(INDEX)).unwrap();
        assert_eq!(index.records.len(), n, "{index:?}");
    }

    #[test]
    fn an_index_written_before_it_held_the_base_is_read() {
        let cache = tempfile::tempdir().unwrap();
        build(cache.path(), "node", 1);
        let path = dir(cache.path()).join(INDEX);
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["records"][0].as_array_mut().unwrap().truncate(3);
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
        let raw = ["sha256:node".to_string(), format!("sha256:{:064x}", 2)];
        assert!(prepare(cache.path(), &raw, 1, 0).is_some());
        build(cache.path(), "node", 3);
        let index: Index = read_json(&path).unwrap();
        assert_eq!(index.records.len(), 2);
    }
}
