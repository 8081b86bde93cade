//! A tiny registry on 127.0.0.1 that a local daemon pushes an image to, so that slipway gets
//! only the layers it does not already have.
//!
//! Why: `docker save` exports every layer of an image, the base layers too, every time. A push
//! (`POST /images/{name}/push`) asks the registry about each layer first and skips what it
//! already holds, so a push to a registry slipway serves itself exports only what the build
//! made. A daemon treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default, so no
//! TLS and no daemon configuration is needed.
//!
//! How Docker 20.10 pushes (moby v20.10.24 `distribution/push_v2.go`, seen against this
//! receiver in tests/receive.rs):
//! - `GET /v2/` first (the ping that looks for an auth challenge).
//! - A layer is looked up by its *v2 metadata*: the compressed digests the daemon recorded for
//!   its diff ID when it last pulled or pushed it, with the repository (any registry) it came
//!   from. With metadata, it `HEAD`s the newest such digest (any registry's, one check) and
//!   skips the layer on a 200. Then it tries a cross-repository mount (`POST
//!   .../blobs/uploads/?mount=D&from=R`), but only from repositories on the same registry host:
//!   each [`Receiver`] listens on a new port, so mounts happen only within one receiver's life.
//!   Layers larger than 10 MB get up to 3 existence checks with other known digests.
//! - A layer without any metadata (imported with `docker load`, or built and never pushed) is
//!   never asked about: the daemon compresses it and uploads it (`POST`, one `PATCH` with the
//!   whole gzip stream, chunked, `PUT ?digest=`), then `HEAD`s the digest it just uploaded, and
//!   records the digest for the layer. So the *first* push of such an image uploads every layer,
//!   and later pushes of images sharing those layers `HEAD` them and skip them. [`Presence`]
//!   therefore sees compressed digests the daemon made (or a registry it pulled from served).
//! - The config blob is `HEAD`ed by its digest (the image ID) and uploaded when absent; then the
//!   manifest is `PUT` under the tag (schema 2, `application/vnd.docker.distribution.manifest.v2+json`).
//! - `HEAD` must answer `Content-Length` (the blob's size): the daemon's client fails the push
//!   ("missing content-length header") without it. Up to 5 layers are uploaded at once.
//! - An error answered as `DENIED` is not retried; other failures are retried up to 5 times with
//!   growing waits, so the budget is enforced with `DENIED`, after reading the request's body
//!   (a daemon that has not finished sending does not see the answer and would retry).
//!
//! So [`Presence`] must know compressed digests: the ones an earlier receiver got (what
//! [`Receiver::blobs`] lists) and, for base layers pulled from a registry, the digests that
//! registry served (the daemon asks about those first). Cost, measured on this machine
//! (Docker 20.10.24, the 266 MB reference backend image, 6 blobs, 90 MB gzip): the first push,
//! nothing present, 8.0-9.6 s (the daemon gzips every layer); the same image again with every
//! digest present, 23-25 ms and nothing uploaded; a rebuild sharing all but a 4 kB layer, 28 ms
//! and 6.5 kB uploaded; `docker save` of it, 1.8-2.0 s (`measure` in tests/receive.rs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::docker::Daemon;
use crate::error::Fail;

/// Says, for a blob digest the daemon asks about (HEAD or cross-repo mount), whether to answer
/// "present" (`Some(size)`) so that the daemon skips the upload, or "absent" (`None`).
pub type Presence = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// A blob received in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// `sha256:...` of the bytes as uploaded (a layer's are gzip).
    pub digest: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Largest manifest accepted (they are a few kB).
const MAX_MANIFEST: usize = 4 << 20;

type Body = BoxBody<Bytes, std::io::Error>;

/// An upload in progress: its file and the hash of what it holds so far.
struct Upload {
    path: PathBuf,
    size: u64,
    hash: Sha256,
}

#[derive(Default)]
struct Inner {
    /// By digest.
    blobs: HashMap<String, Blob>,
    /// In order of arrival.
    order: Vec<String>,
    /// By upload ID; an upload being appended to is taken out meanwhile.
    uploads: HashMap<String, Upload>,
    /// (name, reference, media type, bytes), in order of arrival.
    manifests: Vec<(String, String, String, Vec<u8>)>,
}

struct State {
    dir: PathBuf,
    presence: Presence,
    budget: u64,
    used: AtomicU64,
    over: AtomicBool,
    /// Told when the budget is passed: [`push_to`] then hangs up on the daemon, which cancels
    /// the push (it would otherwise compress the rest of a layer before it hears the refusal).
    tripped: tokio::sync::Notify,
    next: AtomicU64,
    inner: Mutex<Inner>,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn blob_dir(&self) -> PathBuf {
        self.dir.join("sha256")
    }

    fn upload_dir(&self) -> PathBuf {
        self.dir.join("uploads")
    }

    /// The size of `digest` if it was received or `presence` says the daemon may skip it.
    fn present(&self, digest: &str) -> Option<u64> {
        if let Some(b) = self.lock().blobs.get(digest) {
            return Some(b.size);
        }
        (self.presence)(digest)
    }
}

/// The registry: listening until [`Receiver::stop`] or drop.
pub struct Receiver {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on 127.0.0.1:0 (a free port); blobs go to files under `dir`. `budget`: the most
    /// bytes of uploads accepted in all; past it every upload request answers an error (the push
    /// fails) and [`Receiver::over_budget`] says so.
    pub async fn start(dir: &Path, presence: Presence, budget: u64) -> anyhow::Result<Receiver> {
        let state = Arc::new(State {
            dir: dir.to_path_buf(),
            presence,
            budget,
            used: AtomicU64::new(0),
            over: AtomicBool::new(false),
            tripped: tokio::sync::Notify::new(),
            next: AtomicU64::new(0),
            inner: Mutex::default(),
        });
        for d in [state.blob_dir(), state.upload_dir()] {
            tokio::fs::create_dir_all(&d)
                .await
                .with_context(|| format!("creating {}", d.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("listening on 127.0.0.1 for the daemon's push")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve(listener, state.clone()));
        Ok(Receiver { addr, state, task })
    }

    /// `127.0.0.1:PORT`, the registry host for the tag `HOST/REPO:TAG`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Blobs uploaded so far, in order of arrival.
    pub fn blobs(&self) -> Vec<Blob> {
        let inner = self.state.lock();
        inner
            .order
            .iter()
            .filter_map(|d| inner.blobs.get(d).cloned())
            .collect()
    }

    /// The manifests PUT so far: (reference, media type, bytes).
    pub fn manifests(&self) -> Vec<(String, String, Vec<u8>)> {
        self.state
            .lock()
            .manifests
            .iter()
            .map(|(_, r, m, b)| (r.clone(), m.clone(), b.clone()))
            .collect()
    }

    /// Whether uploads went past the budget (and were refused from then on).
    pub fn over_budget(&self) -> bool {
        self.state.over.load(Ordering::SeqCst)
    }

    /// Stops listening and drops unfinished uploads (also on drop, but for the files).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Aborting the accept loop drops its connections with it.
        self.task.abort();
        let _ = std::fs::remove_dir_all(self.state.upload_dir());
    }
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Finished connections are reaped so that the set does not grow with the push.
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/<name>/blobs/<digest>`
    Blob(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/`
    Uploads(&'a str),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(&'a str, &'a str),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(&'a str, &'a str),
    /// A repository name the distribution spec does not allow.
    BadName,
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Route::Base
        } else {
            Route::NotFound
        };
    };
    if rest.is_empty() {
        return Route::Base;
    }
    let (name, found) = if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        (name, Route::Upload(name, id))
    } else if let Some(name) = rest.strip_suffix("/blobs/uploads") {
        (name, Route::Uploads(name))
    } else if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        (name, Route::Manifest(name, r))
    } else if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        (name, Route::Blob(name, d))
    } else {
        return Route::NotFound;
    };
    if !valid_name(name) {
        return Route::BadName;
    }
    match found {
        Route::Upload(n, "") => Route::Uploads(n),
        other => other,
    }
}

/// Path components of `[a-z0-9]` separated by `.`, `_`, `__`, `-`s, joined by `/` (checked
/// loosely: lowercase alphanumerics and separators, no empty component, no leading separator).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
                })
        })
}

/// `sha256:<64 lowercase hex>`, the only digests this registry takes.
fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response<Body> {
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        "Docker-Distribution-API-Version",
        hyper::header::HeaderValue::from_static("registry/2.0"),
    );
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(v),
        ) {
            h.insert(k, v);
        }
    }
    res
}

/// The registry's error body (`{"errors":[{"code":..., "message":...}]}`).
fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    reply(
        status,
        &[("Content-Type", "application/json".into())],
        full(body.to_string()),
    )
}

fn query(req_query: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req_query.unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Answers one request of the distribution API.
async fn handle<B>(state: &State, req: Request<B>) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(req.uri().query());
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = req.into_body();
    match (route(&path), &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => reply(
            StatusCode::OK,
            &[("Content-Type", "application/json".into())],
            full("{}"),
        ),
        (Route::BadName, _) => error(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        ),
        (Route::Blob(_, d), _) if !valid_digest(d) => digest_invalid(d),
        (Route::Blob(_, d), &Method::HEAD) => match state.present(d) {
            Some(size) => reply(
                StatusCode::OK,
                &[
                    ("Content-Length", size.to_string()),
                    ("Content-Type", "application/octet-stream".into()),
                    ("Docker-Content-Digest", d.to_string()),
                ],
                full(Bytes::new()),
            ),
            None => blob_unknown(d),
        },
        (Route::Blob(_, d), &Method::GET) => get_blob(state, d).await,
        (Route::Uploads(name), &Method::POST) => start_upload(state, name, &q, body).await,
        (Route::Upload(name, id), &Method::PATCH) => {
            let Some(mut up) = take_upload(state, id) else {
                return upload_unknown();
            };
            match append(state, &mut up, body).await {
                Ok(()) => {
                    let range = format!("0-{}", up.size.saturating_sub(1));
                    state.lock().uploads.insert(id.to_string(), up);
                    reply(
                        StatusCode::ACCEPTED,
                        &[
                            ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
                            ("Range", range),
                            ("Docker-Upload-UUID", id.to_string()),
                        ],
                        full(Bytes::new()),
                    )
                }
                Err(res) => {
                    discard(up).await;
                    res
                }
            }
        }
        (Route::Upload(name, id), &Method::PUT) => {
            let Some(up) = take_upload(state, id) else {
                return upload_unknown();
            };
            finish(state, name, up, q.get("digest").map(String::as_str), body).await
        }
        (Route::Upload(_, id), &Method::DELETE) => match take_upload(state, id) {
            Some(up) => {
                discard(up).await;
                reply(StatusCode::NO_CONTENT, &[], full(Bytes::new()))
            }
            None => upload_unknown(),
        },
        (Route::Upload(name, id), &Method::GET) => match state.lock().uploads.get(id) {
            Some(up) => reply(
                StatusCode::NO_CONTENT,
                &[
                    ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
                    ("Range", format!("0-{}", up.size.saturating_sub(1))),
                    ("Docker-Upload-UUID", id.to_string()),
                ],
                full(Bytes::new()),
            ),
            None => upload_unknown(),
        },
        (Route::Manifest(_, r), _) if !valid_tag(r) && !valid_digest(r) => error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "a manifest reference is a tag or a sha256 digest",
        ),
        (Route::Manifest(name, r), &Method::PUT) => {
            put_manifest(state, name, r, content_type, body).await
        }
        (Route::Manifest(name, r), &Method::GET | &Method::HEAD) => {
            let found = state
                .lock()
                .manifests
                .iter()
                .rev()
                .find(|(n, reference, _, bytes)| {
                    n == name && (reference == r || digest_of(bytes) == r)
                })
                .cloned();
            match found {
                Some((_, _, media_type, bytes)) => {
                    let digest = digest_of(&bytes);
                    let mut headers = vec![
                        ("Content-Type", media_type),
                        ("Docker-Content-Digest", digest),
                    ];
                    if method == Method::HEAD {
                        headers.push(("Content-Length", bytes.len().to_string()));
                        reply(StatusCode::OK, &headers, full(Bytes::new()))
                    } else {
                        reply(StatusCode::OK, &headers, full(bytes))
                    }
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    "MANIFEST_UNKNOWN",
                    &format!("manifest unknown: {r}"),
                ),
            }
        }
        (Route::NotFound, _) => error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route"),
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "the operation is unsupported",
        ),
    }
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn digest_invalid(d: &str) -> Response<Body> {
    error(
        StatusCode::BAD_REQUEST,
        "DIGEST_INVALID",
        &format!("provided digest did not match uploaded content or is not sha256:<64 hex>: {d}"),
    )
}

fn blob_unknown(d: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
        &format!("blob unknown to registry: {d}"),
    )
}

fn upload_unknown() -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
    )
}

fn denied(state: &State) -> Response<Body> {
    error(
        StatusCode::FORBIDDEN,
        "DENIED",
        &format!(
            "slipway's receiver takes at most {} bytes of uploads",
            state.budget
        ),
    )
}

async fn get_blob(state: &State, d: &str) -> Response<Body> {
    let Some(blob) = state.lock().blobs.get(d).cloned() else {
        return blob_unknown(d);
    };
    let Ok(file) = tokio::fs::File::open(&blob.path).await else {
        return blob_unknown(d);
    };
    use futures_util::StreamExt;
    let stream = tokio_util::io::ReaderStream::new(file).map(|r| r.map(Frame::data));
    reply(
        StatusCode::OK,
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("Docker-Content-Digest", d.to_string()),
        ],
        BodyExt::boxed(StreamBody::new(stream)),
    )
}

fn take_upload(state: &State, id: &str) -> Option<Upload> {
    state.lock().uploads.remove(id)
}

/// Removes an upload's file (a refused or cancelled upload leaves nothing behind).
async fn discard(up: Upload) {
    let _ = tokio::fs::remove_file(&up.path).await;
}

async fn start_upload<B>(
    state: &State,
    name: &str,
    q: &HashMap<String, String>,
    body: B,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if let Some(d) = q.get("mount") {
        if !valid_digest(d) {
            return digest_invalid(d);
        }
        if state.present(d).is_some() {
            return reply(
                StatusCode::CREATED,
                &[
                    ("Location", format!("/v2/{name}/blobs/{d}")),
                    ("Docker-Content-Digest", d.clone()),
                ],
                full(Bytes::new()),
            );
        }
    }
    if state.over.load(Ordering::SeqCst) {
        drain(body).await;
        return denied(state);
    }
    let n = state.next.fetch_add(1, Ordering::SeqCst);
    let id = format!("u{n:08x}");
    let path = state.upload_dir().join(&id);
    if let Err(e) = tokio::fs::File::create(&path).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            &format!("creating {}: {e}", path.display()),
        );
    }
    let up = Upload {
        path,
        size: 0,
        hash: Sha256::new(),
    };
    if let Some(d) = q.get("digest") {
        // A monolithic upload: the body is the blob.
        return finish(state, name, up, Some(d), body).await;
    }
    drain(body).await;
    state.lock().uploads.insert(id.clone(), up);
    reply(
        StatusCode::ACCEPTED,
        &[
            ("Location", format!("/v2/{name}/blobs/uploads/{id}")),
            ("Range", "0-0".into()),
            ("Docker-Upload-UUID", id),
        ],
        full(Bytes::new()),
    )
}

/// Reads a body to its end without keeping it (so the client reads the answer).
async fn drain<B>(mut body: B)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    while let Some(Ok(_)) = body.frame().await {}
}

/// Appends `body` to the upload's file, within the budget.
async fn append<B>(state: &State, up: &mut Upload, mut body: B) -> Result<(), Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let io_error = |e: std::io::Error, path: &Path| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            &format!("writing {}: {e}", path.display()),
        )
    };
    if state.over.load(Ordering::SeqCst) {
        drain(body).await;
        return Err(denied(state));
    }
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&up.path)
        .await
        .map_err(|e| io_error(e, &up.path))?;
    let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                &format!("reading the upload: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = data.len() as u64;
        if state.used.fetch_add(len, Ordering::SeqCst) + len > state.budget {
            state.over.store(true, Ordering::SeqCst);
            state.tripped.notify_one();
            drain(body).await;
            return Err(denied(state));
        }
        up.hash.update(&data);
        up.size += len;
        out.write_all(&data)
            .await
            .map_err(|e| io_error(e, &up.path))?;
    }
    out.flush().await.map_err(|e| io_error(e, &up.path))?;
    Ok(())
}

/// Appends the last of an upload and, if its bytes hash to `digest`, files it under that name.
async fn finish<B>(
    state: &State,
    name: &str,
    mut up: Upload,
    digest: Option<&str>,
    body: B,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let digest = digest.unwrap_or("");
    if !valid_digest(digest) {
        drain(body).await;
        discard(up).await;
        return digest_invalid(digest);
    }
    if let Err(res) = append(state, &mut up, body).await {
        discard(up).await;
        return res;
    }
    let got = format!("sha256:{}", hex::encode(up.hash.clone().finalize()));
    if got != digest {
        discard(up).await;
        return digest_invalid(digest);
    }
    let path = state.blob_dir().join(&digest["sha256:".len()..]);
    if let Err(e) = tokio::fs::rename(&up.path, &path).await {
        discard(up).await;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            &format!("moving the upload to {}: {e}", path.display()),
        );
    }
    let mut inner = state.lock();
    if !inner.blobs.contains_key(digest) {
        inner.order.push(digest.to_string());
    }
    inner.blobs.insert(
        digest.to_string(),
        Blob {
            digest: digest.to_string(),
            path,
            size: up.size,
        },
    );
    reply(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
        ],
        full(Bytes::new()),
    )
}

async fn put_manifest<B>(
    state: &State,
    name: &str,
    reference: &str,
    media_type: Option<String>,
    mut body: B,
) -> Response<Body>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return error(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                "reading the manifest failed",
            );
        };
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
            if bytes.len() > MAX_MANIFEST {
                drain(body).await;
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "MANIFEST_INVALID",
                    "manifest too large",
                );
            }
        }
    }
    let digest = digest_of(&bytes);
    if valid_digest(reference) && reference != digest {
        return digest_invalid(reference);
    }
    let media_type = media_type.unwrap_or_default();
    state
        .lock()
        .manifests
        .push((name.to_string(), reference.to_string(), media_type, bytes));
    reply(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/manifests/{digest}")),
            ("Docker-Content-Digest", digest),
        ],
        full(Bytes::new()),
    )
}

/// What the daemon pushed: its manifest, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:...` of the manifest's bytes.
    pub digest: String,
    pub media_type: String,
    /// The config blob's digest: the image ID on a classic-store daemon.
    pub config: String,
    /// The layers, bottom first.
    pub layers: Vec<PushedLayer>,
}

/// A layer descriptor of a pushed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PushedLayer {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `sha256:...` of the compressed bytes.
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: ConfigRef,
    layers: Vec<PushedLayer>,
}

#[derive(Deserialize)]
struct ConfigRef {
    digest: String,
}

impl Pushed {
    fn parse(media_type: &str, bytes: &[u8]) -> anyhow::Result<Pushed> {
        let doc: ManifestDoc =
            serde_json::from_slice(bytes).context("reading the manifest the daemon pushed")?;
        Ok(Pushed {
            digest: digest_of(bytes),
            media_type: if doc.media_type.is_empty() {
                media_type.to_string()
            } else {
                doc.media_type
            },
            config: doc.config.digest,
            layers: doc.layers,
        })
    }
}

/// Removes the temporary tag when dropped, unless already removed: a push that fails, panics or
/// is abandoned (Ctrl-C) leaves no tag behind.
struct TempTag {
    docker: Option<bollard::Docker>,
    reference: String,
}

impl TempTag {
    async fn remove(mut self) -> anyhow::Result<()> {
        let docker = self.docker.take().expect("removed once");
        untag(&docker, &self.reference).await
    }
}

impl Drop for TempTag {
    fn drop(&mut self) {
        if let Some(docker) = self.docker.take() {
            let reference = std::mem::take(&mut self.reference);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = untag(&docker, &reference).await;
                });
            }
        }
    }
}

async fn untag(docker: &bollard::Docker, reference: &str) -> anyhow::Result<()> {
    super::images::untag(docker, reference)
        .await
        .with_context(|| format!("removing the temporary tag {reference}"))
}

/// The repository name for `image` under `slipway-export/`: its last path component, in the
/// letters a repository name may have (`image` when nothing is left).
fn export_name(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let last = last.split(':').next().unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(64)
        .collect();
    if name.is_empty() || image.starts_with("sha256:") {
        "image".to_string()
    } else {
        name
    }
}

/// Pushes `image` (ID or reference) from `daemon` into `receiver` under a temporary tag
/// `HOST/slipway-export/NAME:TAG` which it removes afterwards whatever happens; returns the
/// manifest the daemon PUT (parsed: config digest, layer descriptors in order).
///
/// The image must have a tag of its own: the daemon deletes an image whose last tag is
/// removed, so an untagged image is refused before anything is tagged.
///
/// The daemon must share this machine's loopback: one in a container or on another host (a
/// `tcp://` `DOCKER_HOST`, Docker Desktop's VM) dials its own 127.0.0.1 and fails to connect;
/// such daemons need `docker save`.
pub async fn push_to(daemon: &Daemon, image: &str, receiver: &Receiver) -> anyhow::Result<Pushed> {
    use futures_util::StreamExt;
    let host = &daemon.endpoint.host;
    let docker = daemon.long()?;
    let info = docker
        .inspect_image(image)
        .await
        .with_context(|| format!("inspecting {image} on the daemon at {host}"))?;
    let id = info.id.clone().unwrap_or_else(|| image.to_string());
    let tagged = info
        .repo_tags
        .iter()
        .flatten()
        .any(|t| t != "<none>:<none>");
    if !tagged {
        return Err(Fail::job(format!(
            "cannot push {image} through the daemon at {host}: it has no tag, and removing the \
             temporary tag a push needs would delete it"
        ))
        .hint("tag the image before exporting it")
        .into());
    }
    static N: AtomicU64 = AtomicU64::new(0);
    // The pid in the tag lets a later run reap it when this one is killed outright
    // (`leftovers::export_tag_owner`).
    let repo = format!(
        "{}/{}/{}",
        receiver.host(),
        crate::leftovers::EXPORT_REPO,
        export_name(image)
    );
    let tag = format!(
        "p{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let reference = format!("{repo}:{tag}");
    docker
        .tag_image(
            &id,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(repo.clone()),
                tag: Some(tag.clone()),
            }),
        )
        .await
        .with_context(|| format!("tagging {image} as {reference} on the daemon at {host}"))?;
    let temp = TempTag {
        docker: Some(docker.clone()),
        reference: reference.clone(),
    };
    let options = bollard::query_parameters::PushImageOptions {
        tag: Some(tag.clone()),
        ..Default::default()
    };
    // Empty credentials still send `X-Registry-Auth` (base64 of a JSON object of nulls), which
    // old daemons require.
    let mut progress = docker.push_image(
        &repo,
        Some(options),
        Some(bollard::auth::DockerCredentials::default()),
    );
    let mut failure = None;
    loop {
        let item = tokio::select! {
            item = progress.next() => item,
            _ = receiver.state.tripped.notified() => {
                failure = Some("it sent more than the receiver's budget".to_string());
                break;
            }
        };
        match item {
            None => break,
            Some(Ok(_)) => {}
            Some(Err(bollard::errors::Error::DockerStreamError { error })) => {
                failure = Some(error);
                break;
            }
            Some(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    // Hanging up cancels the daemon's push.
    drop(progress);
    let removed = temp.remove().await;
    if let Some(error) = failure {
        let mut fail = Fail::job(format!(
            "the daemon at {host} could not push {image} to slipway's receiver at {}: {error}",
            receiver.host()
        ));
        if receiver.over_budget() {
            fail = fail.hint(format!(
                "the push uploaded more than the receiver's budget of {} bytes",
                receiver.state.budget
            ));
        }
        return Err(fail.into());
    }
    removed?;
    let (_, media_type, bytes) = receiver
        .manifests()
        .into_iter()
        .rev()
        .find(|(r, _, _)| *r == tag)
        .ok_or_else(|| {
            Fail::job(format!(
                "the daemon at {host} reported pushing {image} but no manifest reached \
                 slipway's receiver at {}",
                receiver.host()
            ))
        })?;
    Pushed::parse(&media_type, &bytes)
        .with_context(|| format!("pushing {image} from the daemon at {host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_with_slashes_route_to_their_name() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(
            route(&format!("/v2/slipway-export/backend/blobs/{D}")),
            Route::Blob("slipway-export/backend", D)
        );
        assert_eq!(
            route("/v2/slipway-export/backend/blobs/uploads/"),
            Route::Uploads("slipway-export/backend")
        );
        assert_eq!(
            route("/v2/a/b/c/blobs/uploads/u01"),
            Route::Upload("a/b/c", "u01")
        );
        assert_eq!(
            route("/v2/slipway-export/backend/manifests/p1-0"),
            Route::Manifest("slipway-export/backend", "p1-0")
        );
        // A repository may itself be called `blobs` or `manifests`.
        assert_eq!(
            route("/v2/x/manifests/manifests/latest"),
            Route::Manifest("x/manifests", "latest")
        );
        for bad in [
            "/v2/../blobs/uploads/",
            "/v2/UPPER/manifests/x",
            "/v2//blobs/x",
        ] {
            assert_eq!(route(bad), Route::BadName, "{bad}");
        }
        assert_eq!(route("/v2/x/tags/list"), Route::NotFound);
        assert_eq!(route("/other"), Route::NotFound);
    }

    #[test]
    fn only_sha256_digests_are_valid() {
        assert!(valid_digest(D));
        for bad in [
            "",
            "sha256:",
            "sha512:0123",
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "sha256:../../../../etc/passwd",
            &D[..D.len() - 1],
        ] {
            assert!(!valid_digest(bad), "{bad}");
        }
    }

    fn request(method: Method, uri: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    }

    async fn json(res: Response<Body>) -> serde_json::Value {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn receiver(budget: u64) -> (tempfile::TempDir, Receiver) {
        let dir = tempfile::tempdir().unwrap();
        let r = Receiver::start(dir.path(), Arc::new(|_: &str| None), budget)
            .await
            .unwrap();
        (dir, r)
    }

    fn header(res: &Response<Body>, name: &str) -> String {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn bad_digests_are_400_and_unknown_things_404_with_the_registry_error() {
        let (_dir, r) = receiver(1 << 20).await;
        let s = &r.state;
        for uri in [
            "/v2/x/blobs/sha256:abc",
            "/v2/x/blobs/md5:0123",
            "/v2/x/blobs/uploads/?mount=nope&from=y",
        ] {
            let method = if uri.contains("uploads") {
                Method::POST
            } else {
                Method::HEAD
            };
            let res = handle(s, request(method, uri, b"")).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
        let res = handle(s, request(Method::GET, "/v2/a/b/manifests/latest", b"")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(json(res).await["errors"][0]["code"], "MANIFEST_UNKNOWN");
        let res = handle(s, request(Method::GET, &format!("/v2/a/blobs/{D}"), b"")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(json(res).await["errors"][0]["code"], "BLOB_UNKNOWN");
        let res = handle(s, request(Method::GET, "/v2/", b"")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            header(&res, "Docker-Distribution-API-Version"),
            "registry/2.0"
        );
    }

    #[tokio::test]
    async fn an_upload_is_filed_under_its_digest_only_when_its_bytes_hash_to_it() {
        let (dir, r) = receiver(1 << 20).await;
        let s = &r.state;
        let good = digest_of(b"hello world");
        // Chunked: POST, PATCH, PATCH, PUT with the digest.
        let res = handle(s, request(Method::POST, "/v2/a/b/blobs/uploads/", b"")).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let location = header(&res, "Location");
        let res = handle(s, request(Method::PATCH, &location, b"hello")).await;
        assert_eq!(header(&res, "Range"), "0-4");
        handle(s, request(Method::PATCH, &location, b" world")).await;
        let res = handle(
            s,
            request(Method::PUT, &format!("{location}?digest={good}"), b""),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        assert_eq!(header(&res, "Docker-Content-Digest"), good);
        let res = handle(
            s,
            request(Method::HEAD, &format!("/v2/a/b/blobs/{good}"), b""),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "Content-Length"), "11");
        let blobs = r.blobs();
        assert_eq!(blobs.len(), 1);
        assert_eq!(std::fs::read(&blobs[0].path).unwrap(), b"hello world");

        // A monolithic upload whose bytes do not match: 400 and no file at all.
        let res = handle(
            s,
            request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={D}"),
                b"other",
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json(res).await["errors"][0]["code"], "DIGEST_INVALID");
        assert_eq!(r.blobs().len(), 1);
        assert!(!dir.path().join("sha256").join(&D[7..]).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("uploads"))
                .unwrap()
                .count(),
            0
        );

        // A manifest PUT by tag is found by tag and by digest.
        let res = handle(s, request(Method::PUT, "/v2/a/b/manifests/t1", b"{}")).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let digest = header(&res, "Docker-Content-Digest");
        assert_eq!(digest, digest_of(b"{}"));
        let res = handle(
            s,
            request(Method::GET, &format!("/v2/a/b/manifests/{digest}"), b""),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(r.manifests()[0].0, "t1");
    }

    #[tokio::test]
    async fn past_the_budget_uploads_are_denied() {
        let (_dir, r) = receiver(4).await;
        let s = &r.state;
        let res = handle(
            s,
            request(Method::POST, "/v2/a/blobs/uploads/?digest={D}", b"too long"),
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "no valid digest yet");
        let d = digest_of(b"too long");
        let res = handle(
            s,
            request(
                Method::POST,
                &format!("/v2/a/blobs/uploads/?digest={d}"),
                b"too long",
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(json(res).await["errors"][0]["code"], "DENIED");
        assert!(r.over_budget());
        let res = handle(s, request(Method::POST, "/v2/a/blobs/uploads/", b"")).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(r.blobs().is_empty());
    }

    #[test]
    fn export_names_are_repository_names() {
        assert_eq!(export_name("slipway-test/busybox:1.35"), "busybox");
        assert_eq!(export_name("localhost:5000/My_App@sha256:00"), "myapp");
        assert_eq!(export_name("sha256:0123"), "image");
        assert!(valid_name(&format!(
            "slipway-export/{}",
            export_name("x/y/Z-1")
        )));
    }
}
