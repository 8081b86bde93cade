//! BuildKit's file sync, the sending side: how a build context and a Dockerfile reach the
//! daemon's BuildKit over a session, as buildx and the docker CLI send them.
//!
//! BuildKit asks for a named directory (a "local": `context` or `dockerfile`) by calling
//! `moby.filesync.v1.FileSync/DiffCopy` on the session, with options in the call's metadata
//! (`dir-name`, `include-patterns`, `followpaths`, ...; newer BuildKit percent-encodes them and
//! says so with `KEY-encoded: true`). The stream then speaks fsutil's packet protocol
//! (github.com/tonistiigi/fsutil `send.go`/`receive.go`):
//!
//! 1. the sender sends one `STAT` packet per entry, in walk order (depth-first, names sorted
//!    bytewise in each directory: the receiver checks it), then an empty `STAT`;
//! 2. the receiver compares the listing with what it kept from the last transfer under the
//!    same shared key and sends `REQ id` for each regular file it lacks (`id`: the entry's
//!    position in the listing); the sender answers with `DATA id` chunks and an empty `DATA`;
//! 3. the receiver sends `FIN` when it has everything; the sender answers `FIN` and ends.
//!
//! The declared message type of DiffCopy is `BytesMessage`, but both ends put fsutil `Packet`s
//! on the wire; they are defined here with `bytes` paths (Go strings carry any bytes, so a
//! file name that is not UTF-8 arrives byte for byte).
//!
//! What a local holds is the caller's ([`Local`]): slipway's packer walks the context with the
//! user's ignore rules, so the file set is exactly the one it hashed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::{Request, Response, Status, Streaming};

/// The RPC BuildKit calls to fetch a local.
pub const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";

/// fsutil `types.Stat`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stat {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    /// Go `os.FileMode` bits (see [`go_mode`]).
    #[prost(uint32, tag = "2")]
    pub mode: u32,
    #[prost(uint32, tag = "3")]
    pub uid: u32,
    #[prost(uint32, tag = "4")]
    pub gid: u32,
    #[prost(int64, tag = "5")]
    pub size: i64,
    /// Nanoseconds since the epoch.
    #[prost(int64, tag = "6")]
    pub mod_time: i64,
    /// A symlink's target, or for a hard link the path of the first link sent.
    #[prost(bytes = "vec", tag = "7")]
    pub linkname: Vec<u8>,
    #[prost(int64, tag = "8")]
    pub devmajor: i64,
    #[prost(int64, tag = "9")]
    pub devminor: i64,
    #[prost(map = "string, bytes", tag = "10")]
    pub xattrs: HashMap<String, Vec<u8>>,
}

/// fsutil `types.Packet`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Packet {
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(message, optional, tag = "2")]
    pub stat: Option<Stat>,
    #[prost(uint32, tag = "3")]
    pub id: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

const PACKET_STAT: i32 = 0;
const PACKET_REQ: i32 = 1;
const PACKET_DATA: i32 = 2;
const PACKET_FIN: i32 = 3;
const PACKET_ERR: i32 = 4;

/// Go's `os.FileMode` for a Unix `st_mode`: permission bits as they are, setuid, setgid and
/// sticky moved to Go's own bits, and the type bits for directories and symlinks (regular
/// files have none).
pub fn go_mode(unix_mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const STICKY: u32 = 1 << 20;
    let mut m = unix_mode & 0o777;
    if unix_mode & 0o4000 != 0 {
        m |= SETUID;
    }
    if unix_mode & 0o2000 != 0 {
        m |= SETGID;
    }
    if unix_mode & 0o1000 != 0 {
        m |= STICKY;
    }
    match unix_mode & 0o170000 {
        0o040000 => m | DIR,
        0o120000 => m | SYMLINK,
        _ => m,
    }
}

/// Whether the receiver may ask for an entry's data (fsutil `fileCanRequestData`): regular
/// files, hard links included.
fn carries_data(go_mode: u32) -> bool {
    const TYPE_BITS: u32 = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21);
    go_mode & TYPE_BITS == 0
}

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Bytes(Arc<Vec<u8>>),
}

/// The paths a request is limited to (`include-patterns` and `followpaths`); empty: all.
#[derive(Clone, Debug, Default)]
pub struct Only {
    paths: Vec<Vec<u8>>,
}

impl Only {
    pub fn new(paths: Vec<Vec<u8>>) -> Only {
        let paths = paths
            .into_iter()
            .map(|p| {
                let p = p.strip_prefix(b"./").unwrap_or(&p).to_vec();
                p.strip_prefix(b"/").unwrap_or(&p).to_vec()
            })
            .filter(|p| !p.is_empty() && p != b".")
            .collect();
        Only { paths }
    }

    pub fn is_all(&self) -> bool {
        self.paths.is_empty()
    }

    /// Whether `rel` is asked for: a named path, something below one, or a directory above
    /// one. A pattern with wildcards (BuildKit's frontends ask for literal names) asks for
    /// everything: sending more than asked costs bytes, never correctness.
    pub fn wants(&self, rel: &[u8]) -> bool {
        if self.paths.is_empty() {
            return true;
        }
        self.paths.iter().any(|p| {
            let below = rel.len() > p.len() && rel.starts_with(p) && rel[p.len()] == b'/';
            let above = p.len() > rel.len() && p.starts_with(rel) && p[rel.len()] == b'/';
            let wildcard = p.iter().any(|c| b"*?[\\".contains(c));
            rel == p.as_slice() || below || above || wildcard
        })
    }
}

/// One directory served to BuildKit.
pub trait Local: Send + Sync + 'static {
    /// Walks the directory in fsutil's order, calling `emit` for every entry (with the source
    /// of its bytes for regular files). Runs on a blocking thread. Returns a fingerprint of
    /// what was listed, when the caller can compare it with an earlier walk.
    fn walk(
        &self,
        emit: &mut dyn FnMut(Stat, Option<Source>) -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<String>>;
}

/// What the file sync saw, for the build's report.
#[derive(Default, Debug)]
pub struct Transfers {
    /// A walk that failed, with the reason (an unreadable file): the build's real cause.
    pub error: Option<String>,
    /// The fingerprint of the last whole walk of each local.
    pub fingerprints: HashMap<String, String>,
    /// Bytes of file data sent.
    pub bytes_sent: u64,
    /// Files sent.
    pub files_sent: u64,
}

/// The FileSync service for one session.
#[derive(Clone)]
pub struct FileSync {
    locals: Arc<HashMap<String, Arc<dyn Local>>>,
    transfers: Arc<Mutex<Transfers>>,
}

impl FileSync {
    pub fn new(locals: HashMap<String, Arc<dyn Local>>) -> FileSync {
        FileSync {
            locals: Arc::new(locals),
            transfers: Arc::default(),
        }
    }

    pub fn transfers(&self) -> Arc<Mutex<Transfers>> {
        self.transfers.clone()
    }

    async fn diff_copy(
        &self,
        request: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let meta = request.metadata();
        let values = |key: &str| -> Vec<Vec<u8>> {
            let encoded = meta
                .get(format!("{key}-encoded").as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "true" || v == "1");
            meta.get_all(key)
                .iter()
                .map(|v| {
                    let raw = v.as_bytes();
                    if encoded {
                        percent_decode(raw)
                    } else {
                        raw.to_vec()
                    }
                })
                .collect()
        };
        let name = values("dir-name")
            .into_iter()
            .next()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let local = self
            .locals
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no local directory named {name:?}")))?;
        let mut only = values("include-patterns");
        only.extend(values("followpaths"));
        let only = Only::new(only);
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(send(
            name,
            local,
            only,
            incoming,
            tx,
            self.transfers.clone(),
        ));
        let stream: PacketStream = Box::pin(ReceiverStream(rx));
        Ok(Response::new(stream))
    }
}

type PacketStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;

struct ReceiverStream(mpsc::Receiver<Result<Packet, Status>>);

impl Stream for ReceiverStream {
    type Item = Result<Packet, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Bytes in one DATA packet.
const DATA_CHUNK: usize = 128 * 1024;
/// Files read and sent at once.
const PARALLEL_FILES: usize = 4;
/// Stack of the walking thread (the walk recurses once per directory level).
const WALK_STACK: usize = 64 << 20;

/// Serves one DiffCopy call: the listing from a walking thread, file data on request.
async fn send(
    name: String,
    local: Arc<dyn Local>,
    only: Only,
    mut incoming: Streaming<Packet>,
    tx: mpsc::Sender<Result<Packet, Status>>,
    transfers: Arc<Mutex<Transfers>>,
) {
    let files: Arc<Mutex<HashMap<u32, Source>>> = Arc::default();
    let walker = {
        let (tx, files, transfers, only, name) = (
            tx.clone(),
            files.clone(),
            transfers.clone(),
            only.clone(),
            name.clone(),
        );
        std::thread::Builder::new()
            .name("slipway-sync".into())
            .stack_size(WALK_STACK)
            .spawn(move || list(&name, local.as_ref(), &only, &tx, &files, &transfers))
    };
    if let Err(e) = walker {
        let _ = tx
            .send(Ok(err_packet(&format!("cannot start the walk: {e}"))))
            .await;
        return;
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FILES));
    let mut sending = tokio::task::JoinSet::new();
    loop {
        let packet = match incoming.message().await {
            Ok(Some(p)) => p,
            // The receiver went away (the build failed or was cancelled).
            Ok(None) | Err(_) => break,
        };
        match packet.kind {
            PACKET_REQ => {
                let source = files.lock().unwrap().remove(&packet.id);
                let Some(source) = source else {
                    let msg = format!("invalid file request {}", packet.id);
                    let _ = tx.send(Ok(err_packet(&msg))).await;
                    break;
                };
                let (tx, permits, transfers) = (tx.clone(), permits.clone(), transfers.clone());
                sending.spawn(async move {
                    let Ok(_permit) = permits.acquire_owned().await else {
                        return;
                    };
                    send_file(packet.id, source, &tx, &transfers).await;
                });
            }
            PACKET_FIN => {
                while sending.join_next().await.is_some() {}
                let _ = tx.send(Ok(packet_of(PACKET_FIN))).await;
                break;
            }
            PACKET_ERR => {
                let msg = String::from_utf8_lossy(&packet.data).into_owned();
                let mut t = transfers.lock().unwrap();
                t.error.get_or_insert(format!("BuildKit: {msg}"));
                break;
            }
            _ => {}
        }
    }
    sending.abort_all();
}

/// Lists a local (on the walking thread) and ends the listing with an empty STAT.
fn list(
    name: &str,
    local: &dyn Local,
    only: &Only,
    tx: &mpsc::Sender<Result<Packet, Status>>,
    files: &Mutex<HashMap<u32, Source>>,
    transfers: &Mutex<Transfers>,
) {
    let mut id: u32 = 0;
    let result = local.walk(&mut |stat, source| {
        if !only.wants(&stat.path) {
            return Ok(());
        }
        if let Some(source) = source.filter(|_| carries_data(stat.mode)) {
            files.lock().unwrap().insert(id, source);
        }
        id += 1;
        let packet = Packet {
            kind: PACKET_STAT,
            stat: Some(stat),
            ..Packet::default()
        };
        tx.blocking_send(Ok(packet))
            .map_err(|_| anyhow::anyhow!("the daemon stopped reading the {name} listing"))
    });
    match result {
        Ok(fingerprint) => {
            if let (Some(fp), true) = (fingerprint, only.is_all()) {
                let mut t = transfers.lock().unwrap();
                t.fingerprints.insert(name.to_string(), fp);
            }
            let _ = tx.blocking_send(Ok(packet_of(PACKET_STAT)));
        }
        Err(e) => {
            let msg = format!("{e:#}");
            transfers.lock().unwrap().error.get_or_insert(msg.clone());
            let _ = tx.blocking_send(Ok(err_packet(&msg)));
        }
    }
}

async fn send_file(
    id: u32,
    source: Source,
    tx: &mpsc::Sender<Result<Packet, Status>>,
    transfers: &Mutex<Transfers>,
) {
    let data = |data: Vec<u8>| Packet {
        kind: PACKET_DATA,
        id,
        data,
        stat: None,
    };
    let mut sent = 0u64;
    match source {
        Source::Bytes(bytes) => {
            for chunk in bytes.chunks(DATA_CHUNK) {
                if tx.send(Ok(data(chunk.to_vec()))).await.is_err() {
                    return;
                }
            }
            sent = bytes.len() as u64;
        }
        Source::File(path) => {
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) => {
                    let msg = format!("cannot read {}: {e}", path.display());
                    transfers.lock().unwrap().error.get_or_insert(msg.clone());
                    let _ = tx.send(Ok(err_packet(&msg))).await;
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; DATA_CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        sent += n as u64;
                        if tx.send(Ok(data(buf))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let msg = format!("cannot read {}: {e}", path.display());
                        transfers.lock().unwrap().error.get_or_insert(msg.clone());
                        let _ = tx.send(Ok(err_packet(&msg))).await;
                        return;
                    }
                }
            }
        }
    }
    {
        let mut t = transfers.lock().unwrap();
        t.bytes_sent += sent;
        t.files_sent += 1;
    }
    let _ = tx.send(Ok(data(Vec::new()))).await;
}

fn packet_of(kind: i32) -> Packet {
    Packet {
        kind,
        ..Packet::default()
    }
}

fn err_packet(msg: &str) -> Packet {
    Packet {
        kind: PACKET_ERR,
        data: msg.as_bytes().to_vec(),
        ..Packet::default()
    }
}

/// `%XX` sequences decoded (Go's `url.QueryUnescape`, `+` as a space).
fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

impl<B> tonic::codegen::Service<http::Request<B>> for FileSync
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != DIFF_COPY {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let service = DiffCopy(self.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_max_message_size_config(Some(16 << 20), Some(16 << 20));
            Ok(grpc.streaming(service, req).await)
        })
    }
}

impl tonic::server::NamedService for FileSync {
    const NAME: &'static str = "moby.filesync.v1.FileSync";
}

struct DiffCopy(FileSync);

impl tonic::server::StreamingService<Packet> for DiffCopy {
    type Response = Packet;
    type ResponseStream = PacketStream;
    type Future = BoxFuture<Response<PacketStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Packet>>) -> Self::Future {
        let sync = self.0.clone();
        Box::pin(async move { sync.diff_copy(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes() {
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_mode(0o104755), (1 << 23) | 0o755);
        assert_eq!(go_mode(0o042775), (1 << 31) | (1 << 22) | 0o775);
        assert_eq!(go_mode(0o041777), (1 << 31) | (1 << 20) | 0o777);
        assert!(carries_data(go_mode(0o100600)));
        assert!(!carries_data(go_mode(0o040755)));
        assert!(!carries_data(go_mode(0o120777)));
    }

    #[test]
    fn only_the_paths_asked_for() {
        let all = Only::new(vec![]);
        assert!(all.wants(b"anything/at/all"));
        let only = Only::new(vec![
            b".dockerignore".to_vec(),
            b"./sub/Dockerfile".to_vec(),
        ]);
        assert!(only.wants(b".dockerignore"));
        assert!(only.wants(b"sub"));
        assert!(only.wants(b"sub/Dockerfile"));
        assert!(!only.wants(b"sub/other"));
        assert!(!only.wants(b".dockerignorex"));
        assert!(!only.wants(b"main.go"));
        let glob = Only::new(vec![b"*.txt".to_vec()]);
        assert!(glob.wants(b"a.txt"));
        assert!(glob.wants(b"a.md"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%2Fb+c"), b"a/b c");
        assert_eq!(percent_decode(b"100%"), b"100%");
        assert_eq!(percent_decode(b"%zz"), b"%zz");
    }

    #[test]
    fn packets_are_wire_compatible_with_fsutil() {
        use prost::Message;
        // The generated fsutil types (string paths) decode what we encode (bytes paths).
        let ours = Packet {
            kind: PACKET_STAT,
            stat: Some(Stat {
                path: b"dir/file".to_vec(),
                mode: 0o644,
                size: 3,
                mod_time: 1_700_000_000_123_456_789,
                linkname: b"target".to_vec(),
                ..Stat::default()
            }),
            id: 7,
            data: b"abc".to_vec(),
        };
        let theirs =
            bollard_buildkit_proto::fsutil::types::Packet::decode(ours.encode_to_vec().as_slice())
                .unwrap();
        let stat = theirs.stat.unwrap();
        assert_eq!(stat.path, "dir/file");
        assert_eq!(stat.linkname, "target");
        assert_eq!(stat.mod_time, 1_700_000_000_123_456_789);
        assert_eq!((theirs.id, theirs.data), (7, b"abc".to_vec()));
    }
}
