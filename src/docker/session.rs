//! A BuildKit session: the channel on which the daemon's BuildKit asks the client for what a
//! build needs (the context and the Dockerfile, build secrets, registry credentials).
//!
//! The client opens it with `POST /session`, upgraded to a raw connection (`Upgrade: h2c`);
//! on that connection the *daemon* is the gRPC client and slipway the server. The request's
//! `X-Docker-Expose-Session-*` headers name the session (the ID a build then passes as its
//! `session` parameter), its shared key (BuildKit keeps each local's last transfer under it and
//! next time asks only for files whose metadata changed) and the gRPC methods offered.
//! This is how the docker CLI's BuildKit builds and buildx's `docker` driver work, and it
//! works on every daemon with BuildKit, the containerd image store included (where the old
//! "tar in the request body" path is broken: moby/moby#47717).
//!
//! The session lives as long as the [`Session`] value; dropping it closes the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use bollard::errors::Error as DockerError;
use bollard::models::BuildInfo;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use bollard_buildkit_proto::moby::filesync::v1::auth_server::{Auth, AuthServer};
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use super::filesync::{self, FileSync, Local, Transfers};
use super::Endpoint;

/// Registry credentials for a host (`docker.io`, `registry:5000`): user name and secret.
pub type Credentials = Arc<dyn Fn(&str) -> Option<(String, String)> + Send + Sync>;

/// What a session offers.
#[derive(Default)]
pub struct Providers {
    /// Directories by local name (`context`, `dockerfile`).
    pub locals: HashMap<String, Arc<dyn Local>>,
    /// Build secrets by ID. An ID not here is "not found", which a `required=false` secret
    /// mount accepts.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Registry credentials, for base images BuildKit pulls.
    pub credentials: Option<Credentials>,
}

/// An open session.
pub struct Session {
    id: String,
    transfers: Arc<Mutex<Transfers>>,
    server: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Opens a session on the daemon at `endpoint` and serves `providers` on it until dropped.
    /// `shared_key` keys BuildKit's copy of the locals (the same directory should get the same
    /// key every time, so that only changed files travel).
    pub async fn open(
        endpoint: &Endpoint,
        id: &str,
        name: &str,
        shared_key: &str,
        providers: Providers,
    ) -> anyhow::Result<Session> {
        let sync = FileSync::new(providers.locals);
        let transfers = sync.transfers();
        let methods = [
            filesync::DIFF_COPY,
            "/grpc.health.v1.Health/Check",
            "/moby.buildkit.secrets.v1.Secrets/GetSecret",
            "/moby.filesync.v1.Auth/Credentials",
        ];
        let mut head = format!(
            "POST /session HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\
             Content-Length: 0\r\nX-Docker-Expose-Session-Uuid: {id}\r\n\
             X-Docker-Expose-Session-Name: {}\r\nX-Docker-Expose-Session-Sharedkey: {}\r\n",
            header_value(name),
            header_value(shared_key)
        );
        for m in methods {
            head.push_str(&format!("X-Docker-Expose-Session-Grpc-Method: {m}\r\n"));
        }
        head.push_str("\r\n");

        let router = tonic::transport::Server::builder()
            .add_service(HealthServer::new(Healthy))
            .add_service(sync)
            .add_service(SecretsServer::new(SecretStore(providers.secrets)))
            .add_service(AuthServer::new(Registry(providers.credentials)));
        let host = endpoint.host.as_str();
        let server = if let Some(path) = host.strip_prefix("unix://") {
            let mut conn = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("opening a BuildKit session on {host}"))?;
            upgrade(&mut conn, &head).await?;
            tokio::spawn(async move {
                let incoming = futures_util::stream::iter([Ok::<_, std::io::Error>(conn)]);
                let _ = router.serve_with_incoming(incoming).await;
            })
        } else if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let addr = addr.trim_end_matches('/');
            let mut conn = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("opening a BuildKit session on {host}"))?;
            conn.set_nodelay(true).ok();
            upgrade(&mut conn, &head).await?;
            tokio::spawn(async move {
                let incoming = futures_util::stream::iter([Ok::<_, std::io::Error>(conn)]);
                let _ = router.serve_with_incoming(incoming).await;
            })
        } else {
            bail!("BuildKit sessions need a unix:// or tcp:// endpoint, not {host}");
        };
        Ok(Session {
            id: id.to_string(),
            transfers,
            server,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the file sync saw so far.
    pub fn transfers(&self) -> std::sync::MutexGuard<'_, Transfers> {
        self.transfers.lock().unwrap()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `POST /build` for a build whose context comes from a session (`remote=client-session`):
/// no body; the status stream parsed as bollard parses it. `options` must name the session.
pub fn build(
    endpoint: &Endpoint,
    options: &bollard::query_parameters::BuildImageOptions,
) -> futures_util::stream::BoxStream<'static, Result<BuildInfo, DockerError>> {
    use futures_util::StreamExt;
    let query = serde_urlencoded::to_string(options);
    let host = endpoint.host.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(async move {
        let result = async {
            let query = query.map_err(|e| io_error(format!("build options: {e}")))?;
            let req = http::Request::post(format!("/build?{query}"))
                .header("Host", "docker")
                .header("Content-Type", "application/x-tar")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| io_error(e.to_string()))?;
            let resp = if let Some(path) = host.strip_prefix("unix://") {
                let conn = tokio::net::UnixStream::connect(path).await?;
                send(conn, req).await?
            } else {
                let addr = host
                    .strip_prefix("tcp://")
                    .or_else(|| host.strip_prefix("http://"))
                    .unwrap_or(&host)
                    .trim_end_matches('/')
                    .to_string();
                send(tokio::net::TcpStream::connect(addr).await?, req).await?
            };
            read_build_stream(resp, &tx).await
        }
        .await;
        if let Err(e) = result {
            let _ = tx.send(Err(e)).await;
        }
    });
    let stream = ReceiverStream {
        rx,
        _task: AbortOnDrop(task),
    };
    stream.boxed()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ReceiverStream {
    rx: tokio::sync::mpsc::Receiver<Result<BuildInfo, DockerError>>,
    _task: AbortOnDrop,
}

impl futures_util::Stream for ReceiverStream {
    type Item = Result<BuildInfo, DockerError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

fn io_error(msg: String) -> DockerError {
    DockerError::IOError {
        err: std::io::Error::other(msg),
    }
}

async fn send<T>(
    io: T,
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, DockerError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| io_error(format!("connecting to the daemon: {e}")))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| io_error(format!("sending the build request: {e}")))
}

/// Reads the daemon's newline-separated JSON status objects into `tx`.
async fn read_build_stream(
    resp: http::Response<hyper::body::Incoming>,
    tx: &tokio::sync::mpsc::Sender<Result<BuildInfo, DockerError>>,
) -> Result<(), DockerError> {
    use http_body_util::BodyExt;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(DockerError::DockerResponseServerError {
            status_code: status.as_u16(),
            message,
        });
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| io_error(format!("reading the build's status: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if let Some(item) = parse_item(&line) {
                if tx.send(item).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    if let Some(item) = parse_item(&pending) {
        let _ = tx.send(item).await;
    }
    Ok(())
}

/// One status object; an `errorDetail` is the build's failure, as bollard reports it.
fn parse_item(line: &[u8]) -> Option<Result<BuildInfo, DockerError>> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    Some(match serde_json::from_slice::<BuildInfo>(line) {
        Ok(BuildInfo {
            error_detail:
                Some(bollard::models::ErrorDetail {
                    message: Some(error),
                    ..
                }),
            ..
        }) => Err(DockerError::DockerStreamError { error }),
        Ok(info) => Ok(info),
        Err(e) => Err(io_error(format!(
            "unreadable build status from the daemon: {e}"
        ))),
    })
}

/// A header value without line breaks (names and keys come from paths).
fn header_value(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// Sends the upgrade request and reads the answer up to its blank line (byte by byte: what
/// follows is the daemon's HTTP/2 preface, which must stay unread for the server).
async fn upgrade(
    conn: &mut (impl AsyncRead + AsyncWrite + Unpin),
    head: &str,
) -> anyhow::Result<()> {
    conn.write_all(head.as_bytes())
        .await
        .context("sending the session request")?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() > 64 * 1024 {
            bail!("the daemon's answer to POST /session has no end");
        }
        let n = conn
            .read(&mut byte)
            .await
            .context("reading the daemon's answer to POST /session")?;
        if n == 0 {
            bail!("the daemon closed the connection instead of opening a session");
        }
        answer.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        bail!(
            "the daemon refused a BuildKit session: {} {}",
            status.trim(),
            body.trim()
        );
    }
    Ok(())
}

struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    async fn list(
        &self,
        _: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list"))
    }

    type WatchStream = futures_util::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

struct SecretStore(HashMap<String, Vec<u8>>);

#[tonic::async_trait]
impl Secrets for SecretStore {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.0.get(id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

struct Registry(Option<Credentials>);

#[tonic::async_trait]
impl Auth for Registry {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.get_ref().host.clone();
        let found = self.0.as_ref().and_then(|f| f(&host));
        let (username, secret) = found.unwrap_or_default();
        Ok(Response::new(CredentialsResponse { username, secret }))
    }

    async fn fetch_token(
        &self,
        _: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("fetch_token"))
    }

    async fn get_token_authority(
        &self,
        _: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("get_token_authority"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("verify_token_authority"))
    }
}
