//! A client of the OCI distribution API: what slipway needs of a registry, spoken by slipway
//! itself rather than through the daemon.
//!
//! Why not ask the daemon to push: each daemon pushes other bytes (a classic-store daemon
//! gzips layers itself, a containerd-store daemon sends what its content store holds), so the
//! same image had another manifest digest depending on which daemon built it. slipway pushes
//! the normal form with its own deterministic compression ([`crate::archive::gzip`]), so the
//! manifest digest depends on the image alone.
//!
//! One [`Client`] talks to one repository of one registry: `GET /v2/` first (the scheme and
//! how it wants to be authenticated), then blobs (HEAD to skip what it has, a monolithic
//! upload: `POST` then `PUT ?digest=` with the body streamed from a file) and manifests.
//! Authentication is the registry's choice: `Basic` with the Docker config's user and
//! password, or a `Bearer` token from the realm its `WWW-Authenticate` names (fetched with
//! those credentials, or an identity token as a refresh token). Credentials and tokens are
//! only ever sent in headers, never logged or put in an error.
//!
//! HTTPS with the system's roots; plain HTTP only for a registry the daemon treats as
//! insecure (loopback addresses, `insecure-registries`), after HTTPS failed, as docker does.

pub mod referrers;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Fail;

/// An OCI image manifest: what slipway pushes.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index (the referrers tag schema's list).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The empty config of an artifact manifest (`{}`).
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest GET accepts.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How long a request waits for the response headers (a blob upload's response comes after
/// the whole body, so uploads wait [`crate::docker::LONG_TIMEOUT`]).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest manifest or config read into memory.
const MAX_DOCUMENT: u64 = 16 << 20;

type Body = BoxBody<Bytes, std::io::Error>;
type Http = hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// A content descriptor: what a manifest says of a blob or of another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// The descriptor of `bytes` as `media_type`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest_of(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: None,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An OCI image manifest (also an artifact's, with `artifactType` and `subject`). Fields in
/// the order the spec lists them, so that the same manifest is the same bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// Its bytes as pushed (compact JSON, fields in a fixed order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A manifest as the registry holds it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// Its content as an image manifest (an error for an index).
    pub fn image(&self) -> anyhow::Result<ImageManifest> {
        serde_json::from_slice(&self.bytes)
            .with_context(|| format!("the manifest {} is not an image manifest", self.digest))
    }
}

/// One repository of one registry.
pub struct Client {
    http: Http,
    /// `https://HOST` or `http://HOST`.
    base: String,
    /// The registry as references name it (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// The repository inside it (`app/web`; `library/nginx` on Docker Hub).
    pub name: String,
    creds: Option<DockerCredentials>,
    /// Whether the token asked for covers pushing.
    push: bool,
    /// The `Authorization` header once the registry asked for one.
    authorization: tokio::sync::Mutex<Option<String>>,
}

/// The registry host (as references name it) and the repository path in it:
/// `localhost:5000/app/web` → (`localhost:5000`, `app/web`); `nginx` → (`docker.io`,
/// `library/nginx`).
pub fn split_repository(repository: &str) -> (String, String) {
    match repository.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => {
            let name = if repository.contains('/') {
                repository.to_string()
            } else {
                format!("library/{repository}")
            };
            ("docker.io".to_string(), name)
        }
    }
}

/// A reference split into repository and tag or digest: `r:t` → (`r`, `t`), `r@sha256:..` →
/// (`r`, `sha256:..`), `r` → (`r`, `latest`).
pub fn split_reference(reference: &str) -> (String, String) {
    if let Some((r, d)) = reference.split_once('@') {
        return (r.to_string(), d.to_string());
    }
    match reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) => (r.to_string(), t.to_string()),
        None => (reference.to_string(), "latest".to_string()),
    }
}

/// The host of `registry` without its port (`[::1]:5000` → `::1`).
fn host_of(registry: &str) -> &str {
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether docker treats `registry` as insecure on its own: loopback hosts.
pub fn is_loopback(registry: &str) -> bool {
    let host = host_of(registry);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `registry`'s address is in one of `cidrs` (`127.0.0.0/8`), the daemon's
/// `InsecureRegistryCIDRs`.
pub fn in_cidrs(registry: &str, cidrs: &[String]) -> bool {
    let Ok(ip) = host_of(registry).parse::<std::net::IpAddr>() else {
        return false;
    };
    cidrs.iter().any(|c| {
        let Some((net, bits)) = c.split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(bits)) = (net.parse::<std::net::IpAddr>(), bits.parse::<u32>()) else {
            return false;
        };
        match (ip, net) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) if bits <= 32 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(a) & mask == u32::from(b) & mask
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) if bits <= 128 => {
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    })
}

fn http_client() -> Http {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(15)));
    http.enforce_http(false);
    let provider = rustls::crypto::ring::default_provider();
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(b) => b,
        // No system roots (a bare container): HTTPS then fails naming the certificate, and
        // plain-HTTP registries still work.
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                })
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }),
        ),
    };
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// A body streamed from the file at `path`, adding what it has read to `sent`.
fn file_body(path: &Path, sent: Arc<AtomicU64>) -> anyhow::Result<Body> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sent.store(0, Ordering::Relaxed);
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 1 << 20)
            .map_ok(move |chunk| {
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Frame::data(chunk)
            });
    Ok(BodyExt::boxed(StreamBody::new(stream)))
}

/// A registry's `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="registry",scope="..."` (and `Basic
/// realm="..."`).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The registry's own words in an error body (`{"errors":[{"code":..,"message":..}]}`).
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        let parts: Vec<String> = e
            .errors
            .iter()
            .map(|i| format!("{} {}", i.code, i.message).trim().to_string())
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_string()
}

/// Whether an error is one of reaching the server at all (refused, TLS): a plain-HTTP
/// registry answering an HTTPS hello gives one.
fn is_connect_error(e: &hyper_util::client::legacy::Error) -> bool {
    e.is_connect()
}

impl Client {
    /// A client of repository `name` in `registry`, authenticated with `creds` when the
    /// registry asks. `insecure`: the daemon treats the registry as insecure, so plain HTTP is
    /// tried when HTTPS cannot connect. `push`: ask for tokens that allow pushing.
    pub async fn connect(
        registry: &str,
        name: &str,
        creds: Option<DockerCredentials>,
        insecure: bool,
        push: bool,
    ) -> anyhow::Result<Client> {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let http = http_client();
        let mut client = Client {
            http,
            base: format!("https://{host}"),
            registry: registry.to_string(),
            name: name.to_string(),
            creds,
            push,
            authorization: Default::default(),
        };
        let ping = match client.ping().await {
            Err(e) if insecure && e.downcast_ref::<PingConnect>().is_some() => {
                client.base = format!("http://{host}");
                client.ping().await
            }
            other => other,
        };
        let ping = ping.map_err(|e| {
            let hint = if e.downcast_ref::<PingConnect>().is_none() {
                format!("check that {registry} is a registry (it should answer GET /v2/)")
            } else if insecure {
                format!("check that the registry {registry} is running and reachable from here")
            } else {
                format!(
                    "check that {registry} is reachable over HTTPS; a plain-HTTP registry must be \
                     listed in the Docker daemon's `insecure-registries` (slipway reads that list)"
                )
            };
            e.context(Fail::job(format!("cannot reach the registry {registry}")).hint(hint))
        })?;
        if let Some(challenge) = ping {
            client.authenticate(&challenge).await?;
        }
        Ok(client)
    }

    /// `GET /v2/`: `None` when the registry lets us in as we are, else its challenge.
    async fn ping(&self) -> anyhow::Result<Option<Challenge>> {
        let req = Request::get(format!("{}/v2/", self.base))
            .body(empty())
            .context("building a request")?;
        let resp = match tokio::time::timeout(Duration::from_secs(30), self.http.request(req)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if is_connect_error(&e) => {
                return Err(anyhow::Error::new(e).context(PingConnect(self.base.clone())))
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("{} did not answer within 30s", self.base),
        };
        match resp.status() {
            StatusCode::UNAUTHORIZED => {
                let header = resp
                    .headers()
                    .get(hyper::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                parse_challenge(&header).map(Some).with_context(|| {
                    format!(
                        "{}/v2/ asks for authentication without a usable WWW-Authenticate header",
                        self.base
                    )
                })
            }
            s if s.is_success() => Ok(None),
            s => {
                let body = read_limited(resp.into_body(), 64 << 10)
                    .await
                    .unwrap_or_default();
                anyhow::bail!("GET {}/v2/ answered {s}: {}", self.base, error_text(&body))
            }
        }
    }

    /// Answers `challenge`: sets the `Authorization` header the next requests send.
    async fn authenticate(&self, challenge: &Challenge) -> anyhow::Result<()> {
        let denied = |what: String| -> anyhow::Error {
            Fail::job(format!("the registry {} {what}", self.registry))
                .hint(format!(
                    "log in first: `docker login {}` (slipway reads the same Docker config)",
                    self.registry
                ))
                .into()
        };
        let header = match challenge.scheme.as_str() {
            "basic" => match &self.creds {
                Some(DockerCredentials {
                    username: Some(u),
                    password: Some(p),
                    ..
                }) => format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
                _ => {
                    return Err(denied(
                        "asks for a user and password, and the Docker config has none for it"
                            .into(),
                    ))
                }
            },
            "bearer" => format!("Bearer {}", self.token(challenge).await?),
            other => {
                return Err(denied(format!(
                    "asks for `{other}` authentication, which slipway does not speak"
                )))
            }
        };
        *self.authorization.lock().await = Some(header);
        Ok(())
    }

    /// A token from the challenge's realm for this repository.
    async fn token(&self, challenge: &Challenge) -> anyhow::Result<String> {
        let realm = challenge
            .params
            .get("realm")
            .context("the registry's Bearer challenge names no realm")?;
        let actions = if self.push { "pull,push" } else { "pull" };
        let scope = format!("repository:{}:{actions}", self.name);
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let identity = self.creds.as_ref().and_then(|c| c.identitytoken.clone());
        let req = if let Some(refresh) = identity {
            // An identity token is an OAuth2 refresh token.
            let form = serde_urlencoded::to_string([
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "slipway"),
            ])?;
            Request::post(realm.as_str())
                .header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(full(form.into_bytes()))?
        } else {
            let mut query = vec![("scope", scope.as_str())];
            if !service.is_empty() {
                query.push(("service", service.as_str()));
            }
            let sep = if realm.contains('?') { '&' } else { '?' };
            let url = format!("{realm}{sep}{}", serde_urlencoded::to_string(query)?);
            let mut b = Request::get(url);
            if let Some(DockerCredentials {
                username: Some(u),
                password: Some(p),
                ..
            }) = &self.creds
            {
                b = b.header(
                    hyper::header::AUTHORIZATION,
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                    ),
                );
            }
            b.body(empty())?
        };
        let resp = self
            .timed(req, RESPONSE_TIMEOUT)
            .await
            .with_context(|| format!("asking {realm} for a token for {}", self.registry))?;
        let status = resp.status();
        let body = read_limited(resp.into_body(), 1 << 20).await?;
        if !status.is_success() {
            return Err(Fail::job(format!(
                "the token service of {} refused a token for {} ({status}): {}",
                self.registry,
                self.name,
                error_text(&body)
            ))
            .hint(format!(
                "log in first: `docker login {}` (slipway reads the same Docker config)",
                self.registry
            ))
            .into());
        }
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body)
            .with_context(|| format!("the token service of {} answered no JSON", self.registry))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        anyhow::ensure!(
            !token.is_empty(),
            "the token service of {} answered no token",
            self.registry
        );
        Ok(token)
    }

    async fn timed(
        &self,
        req: Request<Body>,
        wait: Duration,
    ) -> anyhow::Result<Response<Incoming>> {
        let uri = req.uri().clone();
        match tokio::time::timeout(wait, self.http.request(req)).await {
            Ok(r) => r.with_context(|| format!("{} {}", self.registry, uri.path())),
            Err(_) => anyhow::bail!(
                "{} did not answer {} within {}s",
                self.registry,
                uri.path(),
                wait.as_secs()
            ),
        }
    }

    /// Sends the request `make` builds (called again after authenticating, when the registry
    /// answers 401), with the `Authorization` header when one is known.
    async fn send(
        &self,
        wait: Duration,
        make: impl Fn() -> anyhow::Result<Request<Body>>,
    ) -> anyhow::Result<Response<Incoming>> {
        for attempt in 0..2 {
            let mut req = make()?;
            if let Some(h) = self.authorization.lock().await.clone() {
                req.headers_mut()
                    .insert(hyper::header::AUTHORIZATION, h.parse()?);
            }
            let resp = self.timed(req, wait).await?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let header = resp
                    .headers()
                    .get(hyper::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                if let Some(challenge) = header {
                    self.authenticate(&challenge).await?;
                    continue;
                }
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.name)
    }

    /// An error for an answer that was not the expected one, naming what was asked.
    async fn unexpected(&self, what: &str, resp: Response<Incoming>) -> anyhow::Error {
        let status = resp.status();
        let body = read_limited(resp.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let fail = Fail::job(format!(
            "{what} in {}/{}: the registry answered {status}: {}",
            self.registry,
            self.name,
            error_text(&body)
        ));
        let fail = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => fail.hint(format!(
                "log in with an account that may push there: `docker login {}` (slipway reads the same Docker config)",
                self.registry
            )),
            // What a registry in read-only (maintenance) mode or a pull-through cache answers.
            StatusCode::METHOD_NOT_ALLOWED => fail.hint(format!(
                "{} takes no pushes (a read-only registry or a pull-through cache): set `[images] prefix` in slipway.toml to a registry that does",
                self.registry
            )),
            _ => fail,
        };
        fail.into()
    }

    /// The size of blob `digest` when the registry has it.
    pub async fn has_blob(&self, digest: &str) -> anyhow::Result<Option<u64>> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self
            .send(RESPONSE_TIMEOUT, || Ok(Request::head(&url).body(empty())?))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(Some(content_length(&resp).unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.unexpected(&format!("HEAD blob {digest}"), resp).await),
        }
    }

    /// Starts an upload: the location to `PUT` the blob to.
    async fn start_upload(&self) -> anyhow::Result<String> {
        let url = self.url("blobs/uploads/");
        let resp = self
            .send(RESPONSE_TIMEOUT, || {
                Ok(Request::post(&url)
                    .header(hyper::header::CONTENT_LENGTH, "0")
                    .body(empty())?)
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.unexpected("starting a blob upload", resp).await);
        }
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("the registry started an upload without a Location")?;
        Ok(self.absolute(location))
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    /// Uploads one blob: `POST` starts it, `PUT ?digest=` sends `size` bytes of the body
    /// `body` makes (called again after authenticating), waiting up to `wait` for the answer.
    async fn upload(
        &self,
        digest: &str,
        size: u64,
        wait: Duration,
        body: impl Fn() -> anyhow::Result<Body>,
    ) -> anyhow::Result<()> {
        let location = self.start_upload().await?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!(
            "{location}{sep}{}",
            serde_urlencoded::to_string([("digest", digest)])?
        );
        let resp = self
            .send(wait, || {
                Ok(Request::put(&url)
                    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                    .header(hyper::header::CONTENT_LENGTH, size)
                    .body(body()?)?)
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .unexpected(&format!("uploading blob {digest}"), resp)
                .await);
        }
        Ok(())
    }

    /// Uploads the blob in the file at `path` (its digest `digest`, `size` bytes), streamed;
    /// `sent` counts the bytes sent so far (for progress).
    pub async fn upload_file(
        &self,
        path: &Path,
        digest: &str,
        size: u64,
        sent: Arc<AtomicU64>,
    ) -> anyhow::Result<()> {
        self.upload(digest, size, crate::docker::LONG_TIMEOUT, || {
            file_body(path, sent.clone())
        })
        .await
    }

    /// Uploads `bytes` as a blob unless the registry has it; returns its descriptor.
    pub async fn put_blob(&self, media_type: &str, bytes: &[u8]) -> anyhow::Result<Descriptor> {
        let desc = Descriptor::of(media_type, bytes);
        if self.has_blob(&desc.digest).await?.is_none() {
            self.upload(&desc.digest, desc.size, RESPONSE_TIMEOUT, || {
                Ok(full(bytes.to_vec()))
            })
            .await?;
        }
        Ok(desc)
    }

    /// The manifest `reference` (a tag or a digest) names, or `None` when there is none.
    pub async fn get_manifest(&self, reference: &str) -> anyhow::Result<Option<Manifest>> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self
            .send(RESPONSE_TIMEOUT, || {
                Ok(Request::get(&url)
                    .header(hyper::header::ACCEPT, ACCEPT)
                    .body(empty())?)
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                return Err(self
                    .unexpected(&format!("GET manifest {reference}"), resp)
                    .await)
            }
        }
        let media_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = read_limited(resp.into_body(), MAX_DOCUMENT).await?;
        let digest = digest_of(&bytes);
        if reference.starts_with("sha256:") && reference != digest {
            anyhow::bail!(
                "the registry {} answered manifest {reference} with content of digest {digest}",
                self.registry
            );
        }
        // A document names its own type; the header is the fallback.
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
            .unwrap_or(media_type);
        Ok(Some(Manifest {
            media_type,
            digest,
            bytes,
        }))
    }

    /// Puts `bytes` as the manifest `reference` (a tag or its digest); returns its digest and
    /// whether the registry said it knows the subject (the `OCI-Subject` header of a registry
    /// with the referrers API).
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<(String, bool)> {
        let url = self.url(&format!("manifests/{reference}"));
        let resp = self
            .send(RESPONSE_TIMEOUT, || {
                Ok(Request::put(&url)
                    .header(hyper::header::CONTENT_TYPE, media_type)
                    .header(hyper::header::CONTENT_LENGTH, bytes.len())
                    .body(full(bytes.to_vec()))?)
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self
                .unexpected(&format!("putting manifest {reference}"), resp)
                .await);
        }
        let subject = resp.headers().contains_key("oci-subject");
        Ok((digest_of(bytes), subject))
    }

    /// Blob `digest` into the file at `path`, streamed, its digest checked (redirects to
    /// another host, as Docker Hub's blob store does, are followed without credentials).
    pub async fn get_blob_to(&self, digest: &str, path: &Path) -> anyhow::Result<u64> {
        let mut url = self.url(&format!("blobs/{digest}"));
        let mut resp = self
            .send(crate::docker::LONG_TIMEOUT, || {
                Ok(Request::get(&url).body(empty())?)
            })
            .await?;
        for _ in 0..5 {
            if !resp.status().is_redirection() {
                break;
            }
            let Some(next) = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
            else {
                break;
            };
            url = self.absolute(next);
            let same_host = url.starts_with(&format!("{}/", self.base));
            let req = Request::get(&url).body(empty())?;
            resp = if same_host {
                self.send(crate::docker::LONG_TIMEOUT, || {
                    Ok(Request::get(&url).body(empty())?)
                })
                .await?
            } else {
                self.timed(req, crate::docker::LONG_TIMEOUT).await?
            };
        }
        if resp.status() != StatusCode::OK {
            return Err(self.unexpected(&format!("GET blob {digest}"), resp).await);
        }
        use tokio::io::AsyncWriteExt as _;
        let mut file = tokio::fs::File::create(path)
            .await
            .with_context(|| format!("creating {}", path.display()))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.with_context(|| format!("reading blob {digest}"))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                size += data.len() as u64;
                file.write_all(&data).await?;
            }
        }
        file.flush().await?;
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        anyhow::ensure!(
            got == digest,
            "blob {digest} from {} has the digest {got}",
            self.registry
        );
        Ok(size)
    }

    /// Blob `digest` in memory (a config; at most 16 MB), its digest checked.
    pub async fn get_blob(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self
            .send(RESPONSE_TIMEOUT, || Ok(Request::get(&url).body(empty())?))
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.unexpected(&format!("GET blob {digest}"), resp).await);
        }
        let bytes = read_limited(resp.into_body(), MAX_DOCUMENT).await?;
        anyhow::ensure!(
            digest_of(&bytes) == digest,
            "blob {digest} from {} has another digest",
            self.registry
        );
        Ok(bytes)
    }

    /// The referrers API's answer for `digest` (an image index), or `None` when the registry
    /// has no such API (it answers 404, as distribution 2.8 does).
    pub async fn referrers_api(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let url = self.url(&format!("referrers/{digest}"));
        let resp = self
            .send(RESPONSE_TIMEOUT, || {
                Ok(Request::get(&url)
                    .header(hyper::header::ACCEPT, OCI_INDEX)
                    .body(empty())?)
            })
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(read_limited(resp.into_body(), MAX_DOCUMENT).await?)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self
                .unexpected(&format!("GET referrers of {digest}"), resp)
                .await),
        }
    }
}

/// The error of a ping that could not connect (refused, or TLS failed).
#[derive(Debug)]
struct PingConnect(String);

impl std::fmt::Display for PingConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connecting to {}", self.0)
    }
}

impl std::error::Error for PingConnect {}

fn content_length(resp: &Response<Incoming>) -> Option<u64> {
    resp.headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A response body, at most `max` bytes.
async fn read_limited(mut body: Incoming, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            out.extend_from_slice(&data);
            anyhow::ensure!(
                out.len() as u64 <= max,
                "a registry answer is larger than {max} bytes"
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let b = parse_challenge(r#"Basic realm="slipway-test""#).unwrap();
        assert_eq!(b.scheme, "basic");
        assert_eq!(b.params["realm"], "slipway-test");
    }

    #[test]
    fn repositories_and_references_split() {
        assert_eq!(
            split_repository("localhost:5000/app/web"),
            ("localhost:5000".into(), "app/web".into())
        );
        assert_eq!(
            split_repository("nginx"),
            ("docker.io".into(), "library/nginx".into())
        );
        assert_eq!(
            split_repository("org/app"),
            ("docker.io".into(), "org/app".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b:tag"),
            ("127.0.0.1:5000/a/b".into(), "tag".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split_reference(&format!("r/x@{d}")),
            ("r/x".into(), d.clone())
        );
    }

    #[test]
    fn insecure_hosts() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("ghcr.io"));
        let cidrs = vec!["127.0.0.0/8".to_string(), "10.1.0.0/16".to_string()];
        assert!(in_cidrs("10.1.2.3:5000", &cidrs));
        assert!(!in_cidrs("10.2.2.3:5000", &cidrs));
        assert!(!in_cidrs("registry.local:5000", &cidrs));
    }

    #[test]
    fn manifests_are_the_same_bytes() {
        let m = ImageManifest {
            schema_version: 2,
            media_type: OCI_MANIFEST.into(),
            artifact_type: None,
            config: Descriptor::of(OCI_CONFIG, b"{}"),
            layers: vec![],
            subject: None,
            annotations: None,
        };
        let text = String::from_utf8(m.to_bytes()).unwrap();
        assert!(
            text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"#),
            "{text}"
        );
        let back: ImageManifest = serde_json::from_slice(text.as_bytes()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn registry_errors_read() {
        assert_eq!(
            error_text(br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#),
            "DENIED requested access to the resource is denied"
        );
        assert_eq!(error_text(b"not json"), "not json");
    }
}
