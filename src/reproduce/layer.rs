//! One layer tar, block by block: scanned as it streams past, rewritten from a spool file.
//!
//! The rewrite changes as little as it can, so that a layer that is already normal keeps its
//! bytes (and its diff ID, and its place in the daemon's layer store): every header block keeps
//! its format (ustar, GNU, PAX) and every field except the ones below; file data is copied as it
//! is. What changes:
//! - every mtime (header fields and PAX `mtime` records) above SOURCE_DATE_EPOCH becomes it;
//! - the mode field keeps only the permission bits (old BuildKit wrote the type bits too);
//! - owner names (header fields and PAX `uname`/`gname`) are removed: extraction uses the IDs;
//! - PAX `atime`/`ctime` records and GNU atime/ctime fields are dropped (they are read times);
//! - entries are put in one fixed order: by path, compared component by component (so a
//!   directory comes before its children; this is the order Docker's own layer writer walks
//!   in); a hard link whose target sorts after it moves to right after its target, so that it
//!   still extracts. Duplicate paths keep their relative order (the later one wins on unpack),
//!   whiteouts (`.wh.*`, `.wh..wh..opq`) are ordinary entries and sort with their directory.
//!
//! Whatever comes after the end-of-archive blocks is kept as it is. The rewrite is a fixed
//! point: rewriting its output gives the same bytes.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};

const BLOCK: usize = 512;
const BLOCK64: u64 = BLOCK as u64;
/// PAX/GNU extension headers larger than this are refused (they are read into memory).
const MAX_EXTENSION: u64 = 16 << 20;

// ustar header field offsets.
const NAME: (usize, usize) = (0, 100);
const SIZE: (usize, usize) = (124, 12);
const MTIME: (usize, usize) = (136, 12);
const CHKSUM: (usize, usize) = (148, 8);
const TYPEFLAG: usize = 156;
const LINKNAME: (usize, usize) = (157, 100);
const MAGIC: (usize, usize) = (257, 8);
const PREFIX: (usize, usize) = (345, 155);
// GNU header fields that share the ustar prefix area.
const GNU_ATIME: (usize, usize) = (345, 12);
const GNU_CTIME: (usize, usize) = (357, 12);
const GNU_IS_EXTENDED: usize = 482;
const GNU_SPARSE_EXT_IS_EXTENDED: usize = 504;

/// What a layer's first pass found.
#[derive(Debug)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Offset of the end-of-archive marker (everything from here on is kept as it is).
    pub trailer_start: u64,
    /// Total length of the layer.
    pub len: u64,
    /// `sha256:...` of the layer as it came.
    pub digest: String,
}

/// One entry: where its bytes are and what decides its place.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path, without leading `./` or `/` and trailing `/`.
    pub key: Box<[u8]>,
    /// Offset of the entry's first header block (extension headers included).
    pub start: u64,
    /// Offset of the entry's data (just after its main header).
    pub data: u64,
    /// Offset just after its padded data.
    pub end: u64,
    /// For hard links: the target, normalised like `key`.
    pub link: Option<Box<[u8]>>,
    /// Whether the header blocks change in the rewrite.
    pub patched: bool,
}

/// The parsed header blocks of one entry (extension headers and the main header).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub typeflag: u8,
    /// Bytes of data after the main header (unpadded).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds, and the PAX fraction when there is one (`"123"` of `1.123`).
    pub mtime: i64,
    /// `SCHILY.xattr.*` and other PAX records that describe the file (not path, size, times).
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Head {
    pub fn is_dir(&self) -> bool {
        self.typeflag == b'5'
    }
    pub fn kind(&self) -> &'static str {
        match self.typeflag {
            b'0' | 0 | b'7' => "file",
            b'1' => "hard link",
            b'2' => "symlink",
            b'3' => "char device",
            b'4' => "block device",
            b'5' => "directory",
            b'6' => "fifo",
            b'S' => "sparse file",
            _ => "other",
        }
    }
}

/// Normalised path: no leading `./` or `/`, no trailing `/`.
pub fn key_of(path: &[u8]) -> &[u8] {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix(b"/") {
            p = rest;
        } else {
            break;
        }
    }
    if p == b"." {
        return b"";
    }
    while let Some(rest) = p.strip_suffix(b"/") {
        p = rest;
    }
    p
}

/// Component-wise path order: `a` < `a/b` < `a-c` (a directory before its children).
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

fn field(block: &[u8], (off, len): (usize, usize)) -> &[u8] {
    &block[off..off + len]
}

fn cstr(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => &bytes[..n],
        None => bytes,
    }
}

/// A numeric header field: octal (space/NUL padded) or GNU base-256.
fn parse_num(bytes: &[u8]) -> anyhow::Result<i64> {
    if let Some(&first) = bytes.first() {
        if first & 0x80 != 0 {
            // base-256, two's complement when the 0x40 bit is set.
            let negative = first & 0x40 != 0;
            let mut v: i128 = (first & 0x3f) as i128;
            if negative {
                v -= 0x40;
            }
            for &b in &bytes[1..] {
                v = (v << 8) | b as i128;
            }
            return i64::try_from(v).context("numeric field out of range");
        }
    }
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .skip_while(|&b| b == b' ' || b == 0)
        .take_while(|&b| b != b' ' && b != 0)
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).context("numeric field is not text")?;
    i64::from_str_radix(s, 8).with_context(|| format!("`{s}` is not an octal number"))
}

/// Whether the block has the ustar or GNU magic (old v7 headers have no owner-name fields).
fn is_ustar_or_gnu(block: &[u8]) -> bool {
    block[MAGIC.0..MAGIC.0 + 5] == *b"ustar"
}

fn write_octal(block: &mut [u8], (off, len): (usize, usize), value: u64) {
    let digits = len - 1;
    let text = format!("{value:0digits$o}");
    block[off..off + digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    block[off + digits] = 0;
}

fn checksum(block: &[u8]) -> (u64, i64) {
    let mut unsigned = 0u64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if (CHKSUM.0..CHKSUM.0 + CHKSUM.1).contains(&i) {
            b' '
        } else {
            b
        };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    (unsigned, signed)
}

fn check_block(block: &[u8], offset: u64) -> anyhow::Result<()> {
    let stored = parse_num(field(block, CHKSUM))
        .with_context(|| format!("tar header at byte {offset}: bad checksum field"))?;
    let (unsigned, signed) = checksum(block);
    if stored != unsigned as i64 && stored != signed {
        bail!("tar header at byte {offset}: checksum mismatch (not a tar, or a corrupt one)");
    }
    Ok(())
}

fn set_checksum(block: &mut [u8]) {
    let (sum, _) = checksum(block);
    let text = format!("{sum:06o}");
    block[CHKSUM.0..CHKSUM.0 + 6].copy_from_slice(text.as_bytes());
    block[CHKSUM.0 + 6] = 0;
    block[CHKSUM.0 + 7] = b' ';
}

fn is_gnu(block: &[u8]) -> bool {
    field(block, MAGIC) == b"ustar  \0"
}

fn is_posix(block: &[u8]) -> bool {
    &field(block, MAGIC)[..6] == b"ustar\0"
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK64) * BLOCK64
}

/// Header-only entry types carry no data whatever their size field says.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

fn is_extension(typeflag: u8) -> bool {
    matches!(typeflag, b'x' | b'g' | b'L' | b'K' | b'X')
}

/// PAX records: `LEN KEY=VALUE\n`.
fn parse_pax(data: &[u8]) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("PAX record length is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("PAX record has a wrong length");
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .context("PAX record without `=`")?;
        let key = String::from_utf8_lossy(&record[..eq]).into_owned();
        out.push((key, record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() != (len - body) {
        len = body + len.to_string().len();
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// A PAX time `SECS[.FRACTION]`: the whole seconds (floor) and whether there is a fraction.
fn pax_time(value: &[u8]) -> Option<(i64, bool)> {
    let s = std::str::from_utf8(value).ok()?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b.trim_end_matches('0')),
        None => (s, ""),
    };
    let mut secs: i64 = secs.parse().ok()?;
    let has_frac = !frac.is_empty();
    if has_frac && s.starts_with('-') {
        secs -= 1;
    }
    Some((secs, has_frac))
}

/// Whether a time is above the ceiling (fractions count).
fn above(secs: i64, frac: bool, sde: i64) -> bool {
    secs > sde || (secs == sde && frac)
}

/// Parses the header blocks of one entry (`head` = extension headers with their data, then
/// the main header block).
pub fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let mut off = 0usize;
    loop {
        if off + BLOCK > head.len() {
            bail!("tar entry ends inside its headers");
        }
        let block = &head[off..off + BLOCK];
        let tf = block[TYPEFLAG];
        if !is_extension(tf) {
            let mut path = match long_name.take() {
                Some(n) => n,
                None => {
                    let name = cstr(field(block, NAME));
                    let prefix = cstr(field(block, PREFIX));
                    if is_posix(block) && !prefix.is_empty() {
                        [prefix, b"/", name].concat()
                    } else {
                        name.to_vec()
                    }
                }
            };
            let mut link = long_link
                .take()
                .unwrap_or_else(|| cstr(field(block, LINKNAME)).to_vec());
            let mut size = parse_num(field(block, SIZE))? as u64;
            let mut mtime = parse_num(field(block, MTIME))?;
            let mut uid = parse_num(&block[108..116])? as u64;
            let mut gid = parse_num(&block[116..124])? as u64;
            let mode = parse_num(&block[100..108])? as u32;
            let mut rest = Vec::new();
            for (k, v) in pax {
                match k.as_str() {
                    "path" => path = v,
                    "linkpath" => link = v,
                    "size" => size = parse_dec(&v)?,
                    "uid" => uid = parse_dec(&v)?,
                    "gid" => gid = parse_dec(&v)?,
                    "mtime" => {
                        if let Some((s, _)) = pax_time(&v) {
                            mtime = s
                        }
                    }
                    "atime" | "ctime" | "uname" | "gname" => {}
                    _ => rest.push((k, v)),
                }
            }
            rest.sort();
            return Ok(Head {
                path,
                link,
                typeflag: tf,
                size,
                mode,
                uid,
                gid,
                mtime,
                pax: rest,
            });
        }
        let size = parse_num(field(block, SIZE))? as u64;
        let data = &head[off + BLOCK..(off + BLOCK + size as usize).min(head.len())];
        match tf {
            b'x' | b'X' => pax.extend(parse_pax(data)?),
            b'L' => long_name = Some(cstr(data).to_vec()),
            b'K' => long_link = Some(cstr(data).to_vec()),
            _ => {} // 'g': global records do not describe this entry
        }
        off += BLOCK + padded(size) as usize;
    }
}

fn parse_dec(v: &[u8]) -> anyhow::Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("PAX value `{}` is not a number", String::from_utf8_lossy(v)))
}

/// The header blocks of one entry as they must be written: `None` when they stay as they are.
pub fn patch_head(head: &[u8], sde: i64) -> anyhow::Result<Option<Vec<u8>>> {
    let mut out: Vec<u8> = Vec::with_capacity(head.len());
    let mut changed = false;
    let mut off = 0usize;
    while off < head.len() {
        let mut block: [u8; BLOCK] = head[off..off + BLOCK].try_into().expect("block");
        let tf = block[TYPEFLAG];
        let mut block_changed = false;
        let mtime = parse_num(field(&block, MTIME))?;
        if mtime > sde {
            write_octal(&mut block, MTIME, sde.max(0) as u64);
            block_changed = true;
        }
        // The mode field holds permission bits; BuildKit before 0.10 also wrote the file type
        // bits there (040755 for a directory), later versions do not. Keep the permissions.
        const MODE: (usize, usize) = (100, 8);
        // Owner names: BuildKit 0.8 writes `root`, 0.13 nothing; Docker and containerd extract
        // by the numeric IDs, so the names go.
        const UNAME: (usize, usize) = (265, 32);
        const GNAME: (usize, usize) = (297, 32);
        if !is_extension(tf) {
            let mode = parse_num(field(&block, MODE))?;
            if mode > 0o7777 {
                write_octal(&mut block, MODE, (mode & 0o7777) as u64);
                block_changed = true;
            }
            if is_ustar_or_gnu(&block) {
                for f in [UNAME, GNAME] {
                    if block[f.0..f.0 + f.1].iter().any(|&b| b != 0) {
                        block[f.0..f.0 + f.1].fill(0);
                        block_changed = true;
                    }
                }
            }
        }
        if is_gnu(&block) {
            for f in [GNU_ATIME, GNU_CTIME] {
                if block[f.0..f.0 + f.1].iter().any(|&b| b != 0) {
                    block[f.0..f.0 + f.1].fill(0);
                    block_changed = true;
                }
            }
        }
        let size = if is_extension(tf) || !header_only(tf) {
            parse_num(field(&block, SIZE))? as u64
        } else {
            0
        };
        let is_main = !is_extension(tf);
        let ext_len = if is_main { 0 } else { padded(size) as usize };
        let data = &head[off + BLOCK..off + BLOCK + ext_len];
        if matches!(tf, b'x' | b'g' | b'X') {
            let records = parse_pax(&data[..size as usize])?;
            let mut kept: Vec<u8> = Vec::with_capacity(size as usize);
            let mut records_changed = false;
            for (k, v) in &records {
                match k.as_str() {
                    "atime" | "ctime" | "uname" | "gname" => records_changed = true,
                    "mtime" => match pax_time(v) {
                        Some((s, f)) if above(s, f, sde) => {
                            kept.extend(pax_record(k, sde.to_string().as_bytes()));
                            records_changed = true;
                        }
                        _ => kept.extend(pax_record(k, v)),
                    },
                    _ => kept.extend(pax_record(k, v)),
                }
            }
            if records_changed {
                changed = true;
                if kept.is_empty() && tf != b'g' {
                    // A PAX header with nothing left in it is dropped.
                    off += BLOCK + ext_len;
                    continue;
                }
                write_octal(&mut block, SIZE, kept.len() as u64);
                set_checksum(&mut block);
                out.extend_from_slice(&block);
                let pad = padded(kept.len() as u64) as usize - kept.len();
                out.extend_from_slice(&kept);
                out.extend(std::iter::repeat_n(0u8, pad));
                off += BLOCK + ext_len;
                continue;
            }
        }
        if block_changed {
            set_checksum(&mut block);
            changed = true;
        }
        out.extend_from_slice(&block);
        // GNU sparse headers may be followed by more sparse-map blocks (no mtimes in them).
        let mut extra = 0usize;
        if is_main && tf == b'S' && block[GNU_IS_EXTENDED] != 0 {
            loop {
                let b = &head[off + BLOCK + extra..off + BLOCK + extra + BLOCK];
                extra += BLOCK;
                if b[GNU_SPARSE_EXT_IS_EXTENDED] == 0 {
                    break;
                }
            }
        }
        out.extend_from_slice(&data[..ext_len]);
        out.extend_from_slice(&head[off + BLOCK..off + BLOCK + extra]);
        off += BLOCK + ext_len + extra;
    }
    Ok(changed.then_some(out))
}

/// Reads a layer tar from `input` to its end, copying every byte to `spool` and hashing it,
/// and notes where each entry is and whether its headers change.
pub fn scan<R: Read, W: Write>(input: R, spool: W, sde: i64) -> anyhow::Result<Scan> {
    let mut r = Tee {
        inner: input,
        out: spool,
        hash: Sha256::new(),
        pos: 0,
    };
    let mut entries = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    let mut block = [0u8; BLOCK];
    let trailer_start;
    loop {
        let start = r.pos;
        head.clear();
        if !read_block(&mut r, &mut block)? {
            trailer_start = start;
            break;
        }
        if block.iter().all(|&b| b == 0) {
            trailer_start = start;
            break;
        }
        read_head(&mut r, &mut block, &mut head, true)?;
        let parsed = parse_head(&head).with_context(|| format!("tar entry at byte {start}"))?;
        let data = r.pos;
        let len = if header_only(parsed.typeflag) {
            0
        } else {
            padded(parsed.size)
        };
        let copied = io::copy(&mut (&mut r).take(len), &mut io::sink())?;
        if copied != len {
            bail!(
                "layer ends inside the data of `{}`",
                String::from_utf8_lossy(&parsed.path)
            );
        }
        let patched = patch_head(&head, sde)
            .with_context(|| format!("tar entry at byte {start}"))?
            .is_some();
        let link = (parsed.typeflag == b'1').then(|| key_of(&parsed.link).into());
        entries.push(Entry {
            key: key_of(&parsed.path).into(),
            start,
            data,
            end: r.pos,
            link,
            patched,
        });
    }
    io::copy(&mut r, &mut io::sink())?;
    r.out.flush()?;
    Ok(Scan {
        entries,
        trailer_start,
        len: r.pos,
        digest: format!("sha256:{}", hex::encode(r.hash.finalize())),
    })
}

/// Reads the rest of an entry's header after its first block (in `block`): extension headers
/// (PAX records, GNU long names) with their data, up to and including the main header, and a
/// GNU sparse map after it. Every byte goes to `head`; with `checked`, each header block's
/// checksum is verified.
fn read_head<R: Positioned>(
    r: &mut R,
    block: &mut [u8; BLOCK],
    head: &mut Vec<u8>,
    checked: bool,
) -> anyhow::Result<()> {
    loop {
        if checked {
            check_block(block, r.pos() - BLOCK64)?;
        }
        head.extend_from_slice(block);
        let tf = block[TYPEFLAG];
        if is_extension(tf) {
            let size = parse_num(field(block, SIZE))? as u64;
            if size > MAX_EXTENSION {
                bail!(
                    "tar extension header at byte {} is {size} bytes (more than {MAX_EXTENSION})",
                    r.pos() - BLOCK64
                );
            }
            let at = head.len();
            head.resize(at + padded(size) as usize, 0);
            r.read_exact(&mut head[at..])
                .context("layer ends inside a tar extension header")?;
            if !read_block(r, block)? {
                bail!("layer ends after an extension header, before its entry");
            }
            continue;
        }
        if tf == b'S' && block[GNU_IS_EXTENDED] != 0 {
            loop {
                if !read_block(r, block)? {
                    bail!("layer ends inside a GNU sparse map");
                }
                head.extend_from_slice(block);
                if block[GNU_SPARSE_EXT_IS_EXTENDED] == 0 {
                    break;
                }
            }
        }
        return Ok(());
    }
}

fn read_block<R: Read>(r: &mut R, block: &mut [u8; BLOCK]) -> anyhow::Result<bool> {
    let mut got = 0;
    while got < BLOCK {
        let n = r.read(&mut block[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            bail!("layer ends inside a tar header block");
        }
        got += n;
    }
    Ok(true)
}

struct Tee<R, W> {
    inner: R,
    out: W,
    hash: Sha256,
    pos: u64,
}

/// A reader that knows how far it has read (for errors that name a byte offset).
trait Positioned: Read {
    fn pos(&self) -> u64;
}

impl<R: Read, W: Write> Positioned for Tee<R, W> {
    fn pos(&self) -> u64 {
        self.pos
    }
}

/// A reader that counts what it reads, and does nothing else.
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> Positioned for Counting<R> {
    fn pos(&self) -> u64 {
        self.pos
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.hash.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// One entry of the rewritten layer: the path of entry `slot`, with the header (and data) of
/// entry `head`; when `head != slot` the header is renamed to `slot`'s path, and with
/// `link_to` its link target becomes that entry's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    pub slot: usize,
    pub head: usize,
    pub link_to: Option<usize>,
}

impl Out {
    fn is_identity(&self) -> bool {
        self.head == self.slot && self.link_to.is_none()
    }
}

/// What the rewrite writes, in order: entries sorted by path; in each group of hard links the
/// path that sorts first holds the data and every other path links to it directly (so the
/// same files give the same bytes whichever name the layer's writer met first); a link whose
/// target the rules above cannot put first (a target with duplicates, a cycle) moves to just
/// after its target.
pub fn plan(entries: &[Entry]) -> Vec<Out> {
    let mut outs: Vec<Out> = (0..entries.len())
        .map(|i| Out {
            slot: i,
            head: i,
            link_to: None,
        })
        .collect();
    let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        by_key.entry(&*e.key).or_default().push(i);
    }
    let unique = |k: &[u8]| match by_key.get(k) {
        Some(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    };
    // Hard-link groups, by the entry that holds the data.
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.link.is_none() || unique(&e.key).is_none() {
            continue;
        }
        let mut target = e.link.as_deref();
        let mut root = None;
        for _ in 0..64 {
            let Some(t) = target.and_then(unique) else {
                break;
            };
            if t == i {
                break;
            }
            match entries[t].link.as_deref() {
                Some(next) => target = Some(next),
                None => {
                    root = Some(t);
                    break;
                }
            }
        }
        if let Some(root) = root {
            groups.entry(root).or_default().push(i);
        }
    }
    for (root, links) in groups {
        let primary = links
            .iter()
            .copied()
            .chain([root])
            .min_by(|&a, &b| path_cmp(&entries[a].key, &entries[b].key))
            .unwrap_or(root);
        let canonical = primary == root
            && links
                .iter()
                .all(|&l| entries[l].link.as_deref() == Some(&*entries[root].key));
        if canonical {
            continue;
        }
        for &l in &links {
            outs[l].link_to = Some(primary);
        }
        if primary != root {
            // The first path takes the data; the old holder becomes a link to it.
            outs[primary] = Out {
                slot: primary,
                head: root,
                link_to: None,
            };
            outs[root] = Out {
                slot: root,
                head: primary,
                link_to: Some(primary),
            };
        }
    }
    // The link target each slot ends up with, for the order.
    let target = |o: &Out| -> Option<&[u8]> {
        match o.link_to {
            Some(t) => Some(&*entries[t].key),
            None if o.head == o.slot => entries[o.slot].link.as_deref(),
            None => None,
        }
    };
    let mut sorted: Vec<usize> = (0..entries.len()).collect();
    sorted.sort_by(|&a, &b| path_cmp(&entries[a].key, &entries[b].key));
    let present: HashSet<&[u8]> = entries.iter().map(|e| &*e.key).collect();
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(entries.len());
    let mut waiting: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut order = Vec::with_capacity(entries.len());
    for i in sorted {
        if let Some(t) = target(&outs[i]) {
            if t != &*entries[i].key && present.contains(t) && !seen.contains(t) {
                waiting.entry(t).or_default().push(i);
                continue;
            }
        }
        let mut stack = vec![i];
        while let Some(i) = stack.pop() {
            order.push(i);
            let key = &*entries[i].key;
            seen.insert(key);
            if let Some(mut links) = waiting.remove(key) {
                links.reverse();
                stack.extend(links);
            }
        }
    }
    // Links whose target never came (a cycle): in path order at the end.
    let mut rest: Vec<usize> = waiting.into_values().flatten().collect();
    rest.sort_by(|&a, &b| path_cmp(&entries[a].key, &entries[b].key).then(a.cmp(&b)));
    order.extend(rest);
    order.into_iter().map(|i| outs[i]).collect()
}

/// Whether the rewrite would give back the same bytes.
pub fn is_normal(scan: &Scan) -> bool {
    scan.entries.iter().all(|e| !e.patched)
        && plan(&scan.entries)
            .iter()
            .enumerate()
            .all(|(i, o)| o.slot == i && o.is_identity())
}

/// Writes the normal form of the spooled layer `src` (scanned as `scan`) to `dst`; returns the
/// new `sha256:` digest (the diff ID) and length. `src` is read in order where entries are in
/// order, and seeks (within its buffer when it can) where they are not.
pub fn rewrite<R: Read + Seek, W: Write>(
    scan: &Scan,
    src: &mut io::BufReader<R>,
    dst: W,
    sde: i64,
) -> anyhow::Result<(String, u64)> {
    let mut w = HashWriter {
        inner: dst,
        hash: Sha256::new(),
        len: 0,
    };
    let mut head = Vec::new();
    src.seek(SeekFrom::Start(0))?;
    let mut pos: u64 = 0;
    let go = |src: &mut io::BufReader<R>, pos: &mut u64, to: u64| -> io::Result<()> {
        if *pos != to {
            src.seek_relative(to as i64 - *pos as i64)?;
            *pos = to;
        }
        Ok(())
    };
    // The path an entry's headers give it, as written (`./usr/bin/x`).
    let raw_path =
        |src: &mut io::BufReader<R>, pos: &mut u64, i: usize| -> anyhow::Result<Vec<u8>> {
            let e = &scan.entries[i];
            go(src, pos, e.start)?;
            let mut h = vec![0u8; (e.data - e.start) as usize];
            src.read_exact(&mut h)?;
            *pos = e.data;
            Ok(parse_head(&h)?.path)
        };
    for out in plan(&scan.entries) {
        let renamed = if out.is_identity() {
            None
        } else {
            let path = match out.head != out.slot {
                true => Some(raw_path(src, &mut pos, out.slot)?),
                false => None,
            };
            let link = match out.link_to {
                Some(t) => Some(raw_path(src, &mut pos, t)?),
                None => None,
            };
            Some((path, link))
        };
        let e = &scan.entries[out.head];
        go(src, &mut pos, e.start)?;
        head.resize((e.data - e.start) as usize, 0);
        src.read_exact(&mut head)?;
        let head = match renamed {
            Some((path, link)) => rename_head(&head, path.as_deref(), link.as_deref())?,
            None => std::mem::take(&mut head),
        };
        match patch_head(&head, sde)? {
            Some(new) => w.write_all(&new)?,
            None => w.write_all(&head)?,
        }
        let n = io::copy(&mut src.take(e.end - e.data), &mut w)?;
        if n != e.end - e.data {
            bail!("spooled layer is shorter than when it was scanned");
        }
        pos = e.end;
    }
    go(src, &mut pos, scan.trailer_start)?;
    io::copy(src, &mut w)?;
    w.inner.flush()?;
    Ok((format!("sha256:{}", hex::encode(w.hash.finalize())), w.len))
}

/// The header blocks of an entry with its path and/or link target replaced. A name that fits
/// the 100-byte field goes there; a longer (or non-ASCII) one goes into a PAX record, as Go's
/// archive/tar writes it. GNU long-name blocks and PAX records of the old name are dropped.
pub fn rename_head(
    head: &[u8],
    path: Option<&[u8]>,
    link: Option<&[u8]>,
) -> anyhow::Result<Vec<u8>> {
    struct Ext {
        block: [u8; BLOCK],
        data: Vec<u8>,
        changed: bool,
    }
    let mut exts: Vec<Ext> = Vec::new();
    let mut off = 0usize;
    let (mut main, tail): ([u8; BLOCK], &[u8]) = loop {
        if off + BLOCK > head.len() {
            bail!("tar entry ends inside its headers");
        }
        let block: [u8; BLOCK] = head[off..off + BLOCK].try_into().expect("block");
        let tf = block[TYPEFLAG];
        if !is_extension(tf) {
            break (block, &head[off + BLOCK..]);
        }
        let size = parse_num(field(&block, SIZE))? as usize;
        let data = head[off + BLOCK..off + BLOCK + size].to_vec();
        off += BLOCK + padded(size as u64) as usize;
        match tf {
            b'L' if path.is_some() => continue,
            b'K' if link.is_some() => continue,
            _ => exts.push(Ext {
                block,
                data,
                changed: false,
            }),
        }
    };
    let fits = |v: &[u8]| v.len() <= NAME.1 && v.is_ascii();
    let mut records: Vec<(&str, &[u8])> = Vec::new();
    if let Some(p) = path {
        let n = p.len().min(NAME.1);
        main[NAME.0..NAME.0 + NAME.1].fill(0);
        main[NAME.0..NAME.0 + n].copy_from_slice(&p[..n]);
        if is_posix(&main) {
            main[PREFIX.0..PREFIX.0 + PREFIX.1].fill(0);
        }
        if !fits(p) {
            records.push(("path", p));
        }
    }
    if let Some(l) = link {
        let n = l.len().min(LINKNAME.1);
        main[LINKNAME.0..LINKNAME.0 + LINKNAME.1].fill(0);
        main[LINKNAME.0..LINKNAME.0 + n].copy_from_slice(&l[..n]);
        if !fits(l) {
            records.push(("linkpath", l));
        }
    }
    // Old PAX records of the replaced names go; the new ones join the entry's PAX header.
    let mut pax_at = None;
    for (i, x) in exts.iter_mut().enumerate() {
        if !matches!(x.block[TYPEFLAG], b'x' | b'X') {
            continue;
        }
        pax_at = Some(i);
        let mut kept = Vec::new();
        for (k, v) in parse_pax(&x.data)? {
            let replaced = (k == "path" && path.is_some()) || (k == "linkpath" && link.is_some());
            if replaced {
                x.changed = true;
            } else {
                kept.extend(pax_record(&k, &v));
            }
        }
        x.data = kept;
    }
    if !records.is_empty() {
        let i = match pax_at {
            Some(i) => i,
            None => {
                let mut block = [0u8; BLOCK];
                let base = path
                    .or(link)
                    .and_then(|p| p.rsplit(|&c| c == b'/').find(|s| !s.is_empty()))
                    .unwrap_or(b"x");
                let name = [b"PaxHeaders.0/".as_slice(), base].concat();
                let n = name.len().min(NAME.1);
                block[..n].copy_from_slice(&name[..n]);
                write_octal(&mut block, (100, 8), 0o644);
                write_octal(&mut block, (108, 8), 0);
                write_octal(&mut block, (116, 8), 0);
                block[MTIME.0..MTIME.0 + MTIME.1].copy_from_slice(field(&main, MTIME));
                block[TYPEFLAG] = b'x';
                block[MAGIC.0..MAGIC.0 + MAGIC.1].copy_from_slice(field(&main, MAGIC));
                exts.push(Ext {
                    block,
                    data: Vec::new(),
                    changed: true,
                });
                exts.len() - 1
            }
        };
        for (k, v) in records {
            exts[i].data.extend(pax_record(k, v));
        }
        exts[i].changed = true;
    }
    set_checksum(&mut main);
    let mut out = Vec::with_capacity(head.len() + BLOCK);
    for mut x in exts {
        if x.changed {
            if matches!(x.block[TYPEFLAG], b'x' | b'X') && x.data.is_empty() {
                continue;
            }
            write_octal(&mut x.block, SIZE, x.data.len() as u64);
            set_checksum(&mut x.block);
        }
        out.extend_from_slice(&x.block);
        let n = x.data.len();
        out.extend(x.data);
        out.extend(std::iter::repeat_n(0u8, padded(n as u64) as usize - n));
    }
    out.extend_from_slice(&main);
    out.extend_from_slice(tail);
    Ok(out)
}

struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One entry as `verify` compares it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Listed {
    pub head: Head,
    /// `sha256:` of the entry's data.
    pub digest: String,
}

/// Lists a layer's entries with a digest of each one's data (for `verify`'s diff).
pub fn list<R: Read>(input: R) -> anyhow::Result<Vec<Listed>> {
    list_where(input, |_| true)
}

/// [`list`], keeping (and hashing the data of) only the entries whose path `wanted` accepts:
/// what normalising needs to know of the layers below the ones a build made.
pub fn list_where<R: Read>(
    input: R,
    wanted: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Vec<Listed>> {
    let mut r = Counting {
        inner: input,
        pos: 0,
    };
    let mut out = Vec::new();
    let mut head: Vec<u8> = Vec::new();
    let mut block = [0u8; BLOCK];
    loop {
        head.clear();
        if !read_block(&mut r, &mut block)? || block.iter().all(|&b| b == 0) {
            break;
        }
        read_head(&mut r, &mut block, &mut head, false)?;
        let parsed = parse_head(&head)?;
        let (len, data_len) = if header_only(parsed.typeflag) {
            (0, 0)
        } else {
            (padded(parsed.size), parsed.size)
        };
        if !wanted(key_of(&parsed.path)) {
            io::copy(&mut (&mut r).take(len), &mut io::sink())?;
            continue;
        }
        let mut hasher = HashWriter {
            inner: io::sink(),
            hash: Sha256::new(),
            len: 0,
        };
        io::copy(&mut (&mut r).take(data_len), &mut hasher)?;
        io::copy(&mut (&mut r).take(len - data_len), &mut io::sink())?;
        out.push(Listed {
            head: parsed,
            digest: format!("sha256:{}", hex::encode(hasher.hash.finalize())),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header block the way Go's archive/tar writes one.
    fn ustar(path: &str, typeflag: u8, size: u64, mtime: u64, link: &str) -> [u8; BLOCK] {
        let mut b = [0u8; BLOCK];
        b[..path.len()].copy_from_slice(path.as_bytes());
        write_octal(
            &mut b,
            (100, 8),
            if typeflag == b'5' { 0o755 } else { 0o644 },
        );
        write_octal(&mut b, (108, 8), 0);
        write_octal(&mut b, (116, 8), 0);
        write_octal(&mut b, SIZE, size);
        write_octal(&mut b, MTIME, mtime);
        b[TYPEFLAG] = typeflag;
        b[LINKNAME.0..LINKNAME.0 + link.len()].copy_from_slice(link.as_bytes());
        b[MAGIC.0..MAGIC.0 + 8].copy_from_slice(b"ustar\x0000");
        set_checksum(&mut b);
        b
    }

    fn file(path: &str, data: &[u8], mtime: u64) -> Vec<u8> {
        let mut v = ustar(path, b'0', data.len() as u64, mtime, "").to_vec();
        v.extend_from_slice(data);
        v.resize(v.len() + padded(data.len() as u64) as usize - data.len(), 0);
        v
    }

    fn pax(records: &[(&str, &str)], mtime: u64) -> Vec<u8> {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|(k, v)| pax_record(k, v.as_bytes()))
            .collect();
        let mut v = ustar("PaxHeaders.0/x", b'x', body.len() as u64, mtime, "").to_vec();
        let n = body.len();
        v.extend(body);
        v.resize(v.len() + padded(n as u64) as usize - n, 0);
        v
    }

    fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut v: Vec<u8> = parts.concat();
        v.extend([0u8; 1024]);
        v
    }

    fn normalize(layer: &[u8], sde: i64) -> Vec<u8> {
        let mut spool = Vec::new();
        let scan = scan(layer, &mut spool, sde).unwrap();
        assert_eq!(spool, layer);
        let mut out = Vec::new();
        rewrite(
            &scan,
            &mut io::BufReader::new(io::Cursor::new(&spool)),
            &mut out,
            sde,
        )
        .unwrap();
        if is_normal(&scan) {
            assert_eq!(out, layer, "a normal layer is rewritten to itself");
        }
        out
    }

    fn names(layer: &[u8]) -> Vec<(String, i64, String)> {
        list(layer)
            .unwrap()
            .into_iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.head.path).into_owned(),
                    l.head.mtime,
                    String::from_utf8_lossy(&l.head.link).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn pax_record_lengths_count_themselves() {
        assert_eq!(pax_record("a", b"b"), b"6 a=b\n");
        // 98 bytes of body: "100 ..." would be 101 bytes long, so the length is 101.
        let r = pax_record("path", &[b'x'; 91]);
        assert_eq!(r.len(), 101);
        assert!(r.starts_with(b"101 "));
        assert_eq!(
            parse_pax(&r).unwrap(),
            vec![("path".to_string(), vec![b'x'; 91])]
        );
    }

    #[test]
    fn paths_sort_by_component_parents_first() {
        let mut v = vec![
            "a-c",
            "a/b",
            "a",
            "b/.wh.x",
            "b/-",
            "b",
            "a/b/c",
            "b/.wh..wh..opq",
        ];
        v.sort_by(|a, b| path_cmp(a.as_bytes(), b.as_bytes()));
        assert_eq!(
            v,
            [
                "a",
                "a/b",
                "a/b/c",
                "a-c",
                "b",
                "b/-",
                "b/.wh..wh..opq",
                "b/.wh.x"
            ]
        );
        assert_eq!(key_of(b"./a/b/"), b"a/b");
        assert_eq!(key_of(b"./"), b"");
        assert_eq!(key_of(b"/x"), b"x");
    }

    #[test]
    fn mtimes_are_clamped_and_entries_sorted() {
        let layer = archive(&[
            file("b", b"bee", 2000),
            ustar("a/", b'5', 0, 3000, "").to_vec(),
            file("a/x", b"x", 500),
        ]);
        let out = normalize(&layer, 1000);
        assert_eq!(
            names(&out),
            [
                ("a/".into(), 1000, "".into()),
                ("a/x".into(), 500, "".into()),
                ("b".into(), 1000, "".into())
            ]
        );
        // Data is untouched and the archive is the same length.
        assert_eq!(out.len(), layer.len());
        assert_eq!(
            list(&out[..]).unwrap()[2].digest,
            list(&layer[..]).unwrap()[0].digest
        );
        // A fixed point.
        assert_eq!(normalize(&out, 1000), out);
    }

    #[test]
    fn normal_layers_keep_their_bytes() {
        let layer = archive(&[ustar("a/", b'5', 0, 10, "").to_vec(), file("a/x", b"x", 10)]);
        let mut spool = Vec::new();
        let s = scan(&layer[..], &mut spool, 10).unwrap();
        assert!(is_normal(&s));
        assert_eq!(normalize(&layer, 10), layer);
    }

    #[test]
    fn the_first_path_of_a_hard_link_group_holds_the_data() {
        // `a/link` sorts before `b/target`, the file it links to.
        let layer = archive(&[
            file("b/target", b"data", 1),
            ustar("a/link", b'1', 0, 1, "b/target").to_vec(),
            file("a/z", b"", 1),
        ]);
        let out = normalize(&layer, 10);
        assert_eq!(
            names(&out),
            [
                ("a/link".into(), 1, "".into()),
                ("a/z".into(), 1, "".into()),
                ("b/target".into(), 1, "a/link".into())
            ]
        );
        let l = list(&out[..]).unwrap();
        assert_eq!((l[0].head.typeflag, l[0].head.size), (b'0', 4));
        assert_eq!(l[2].head.typeflag, b'1');
        assert_eq!(normalize(&out, 10), out);

        // The same files written with the other name first give the same bytes.
        let other = archive(&[
            file("a/link", b"data", 1),
            file("a/z", b"", 1),
            ustar("b/target", b'1', 0, 1, "a/link").to_vec(),
        ]);
        assert_eq!(normalize(&other, 10), out);

        // A chain (c -> b -> a) is flattened to links to the first path.
        let chain = archive(&[
            file("c", b"data", 1),
            ustar("b", b'1', 0, 1, "c").to_vec(),
            ustar("a", b'1', 0, 1, "b").to_vec(),
        ]);
        let out = normalize(&chain, 10);
        assert_eq!(
            names(&out),
            [
                ("a".into(), 1, "".into()),
                ("b".into(), 1, "a".into()),
                ("c".into(), 1, "a".into())
            ]
        );
        assert_eq!(normalize(&out, 10), out);
    }

    #[test]
    fn renamed_hard_links_with_long_names_use_pax() {
        let long = format!("z/{}", "y".repeat(120));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mtime(1);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &b"data"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mtime(1);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Link);
        b.append_link(&mut h, "a/short", &long).unwrap();
        let layer = b.into_inner().unwrap();
        let out = normalize(&layer, 10);
        assert_eq!(
            names(&out),
            [
                ("a/short".into(), 1, "".into()),
                (long.clone(), 1, "a/short".into())
            ]
        );
        assert_eq!(normalize(&out, 10), out);
        // The tar crate agrees, data and all.
        let mut a = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = String::new();
            std::io::Read::read_to_string(&mut e, &mut data).unwrap();
            seen.push((
                e.path().unwrap().display().to_string(),
                e.link_name().unwrap().map(|l| l.display().to_string()),
                data,
            ));
        }
        assert_eq!(
            seen,
            [
                ("a/short".to_string(), None, "data".to_string()),
                (long.clone(), Some("a/short".to_string()), String::new())
            ]
        );
    }

    #[test]
    fn pax_times_are_clamped_and_atime_ctime_dropped() {
        let layer = archive(&[[
            pax(
                &[
                    ("atime", "1700000000.5"),
                    ("ctime", "1700000000.5"),
                    ("mtime", "1700000000.25"),
                    ("SCHILY.xattr.security.capability", "\x01\x00\x00\x02"),
                ],
                1700000000,
            ),
            file("bin/ping", b"elf", 1700000000),
        ]
        .concat()]);
        let out = normalize(&layer, 1000);
        let l = list(&out[..]).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].head.mtime, 1000);
        assert_eq!(
            l[0].head.pax,
            vec![(
                "SCHILY.xattr.security.capability".to_string(),
                b"\x01\x00\x00\x02".to_vec()
            )]
        );
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("atime=") && !text.contains("ctime="));
        assert!(text.contains("mtime=1000\n"));
        assert_eq!(normalize(&out, 1000), out);
        // An mtime below the ceiling keeps its fraction.
        let layer = archive(&[[pax(&[("mtime", "500.25")], 500), file("f", b"", 500)].concat()]);
        assert_eq!(normalize(&layer, 1000), layer);
    }

    #[test]
    fn a_pax_header_left_empty_is_dropped() {
        let layer = archive(&[[pax(&[("atime", "5")], 5), file("f", b"x", 5)].concat()]);
        let out = normalize(&layer, 1000);
        assert_eq!(out, archive(&[file("f", b"x", 5)]));
    }

    #[test]
    fn long_names_and_whiteouts_survive() {
        let long = format!("{}/file", "d".repeat(150));
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        for (path, mtime) in [
            (long.as_str(), 99999u64),
            ("d/.wh.gone", 5),
            ("d/.wh..wh..opq", 5),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mtime(mtime);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, &b"x"[..]).unwrap();
        }
        let layer = b.into_inner().unwrap();
        let out = normalize(&layer, 1000);
        let got = names(&out);
        assert_eq!(got[0].0, "d/.wh..wh..opq");
        assert_eq!(got[1].0, "d/.wh.gone");
        assert_eq!(got[2], (long.clone(), 1000, String::new()));
        assert_eq!(normalize(&out, 1000), out);
        // The tar crate reads it back.
        let mut a = tar::Archive::new(&out[..]);
        let paths: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(paths[2], long);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let mut layer = archive(&[file("f", b"x", 5)]);
        layer[0] = b'g';
        let e = scan(&layer[..], io::sink(), 0).unwrap_err();
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
        let e = scan(&layer[..700], io::sink(), 0).unwrap_err();
        assert!(format!("{e:#}").contains("checksum") || format!("{e:#}").contains("ends"));
    }

    #[test]
    fn truncated_data_is_an_error() {
        let layer = file("f", &[7u8; 2000], 5);
        let e = scan(&layer[..1000], io::sink(), 0).unwrap_err();
        assert!(
            format!("{e:#}").contains("ends inside the data of `f`"),
            "{e:#}"
        );
    }

    #[test]
    fn base256_numbers_parse() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x05;
        assert_eq!(parse_num(&f).unwrap(), 5);
        assert_eq!(parse_num(b"0000644 \0").unwrap(), 0o644);
        assert_eq!(parse_num(b"\0\0\0").unwrap(), 0);
    }
}
