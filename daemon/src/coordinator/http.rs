//! The HTTP API, on plain hyper. Requests are routed by the request
//! target exactly as the client sent it, taken from the connection before
//! hyper parses it (see [`super::raw_target`]): no router, no
//! normalisation, and a name hyper would cut or refuse gets our answer.
//!
//! - `PUT /<name>`: an upload (see [`super::upload`]).
//! - `GET /stats`: the original's JSON figures plus ours.
//! - `GET /metrics`: Prometheus text.
//! - `GET /health`: 200 once the configuration is read, else 503.
//! - `GET|HEAD /<shard>:<name>`: the file, from any node of the shard (see
//!   [`super::read`]).
//! - Other paths: 404; other methods: 405.
//!
//! Errors answer JSON `{"error": "..."}` through [`ApiError`]; 5xx are also
//! logged. Bodies end with a newline, like the original's.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use backpack_shared::model::name::{NameError, split_read_target};
use backpack_shared::model::{Name, hash_hex};

use super::App;
use super::body::BodyError;
use super::nodes::Attempt;
use super::raw_target::{HeadError, Lines, RawRequest, RawTargets};
use super::stats::{Snapshot, metrics_text, stats_json};
use super::{read, upload};
use crate::node_client::{HASH_HEADER, TIME_HEADER, UNORDERED_HEADER};

/// Answers are small JSON documents or files streamed from a node.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Everything an upload or request can be answered with, besides 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", bad_name(.0))]
    BadName(NameError),
    #[error("{0}")]
    BadHead(HeadError),
    #[error("the request line was lost between the connection and the server; retry")]
    LostRequestLine,
    #[error("{0}")]
    BadRequest(String),
    #[error("PUT needs a Content-Length header (chunked uploads are not accepted)")]
    LengthRequired,
    #[error("the body of {len} bytes is over the limit of {max} bytes (--max-body)")]
    TooLarge { len: u64, max: u64 },
    #[error("{0}")]
    Body(BodyError),
    #[error("the coordinator has not read the cluster configuration from ZooKeeper yet; retry")]
    NotReady,
    #[error("the coordinator is shutting down; retry on another one")]
    ShuttingDown,
    #[error(
        "No writable shards found! (no enabled shard has room for {len} bytes; add or enable a shard)"
    )]
    NoWritableShard { len: u64 },
    #[error("every node of shard {shard} failed: {}", describe(.attempts))]
    AllNodesFailed {
        shard: String,
        attempts: Vec<Attempt>,
    },
    #[error(
        "the file is on node {node} only: the replication queue is not configured (set it with backpack-coordinator-set-queue); retry the upload"
    )]
    QueueUnconfigured { node: String },
    #[error(
        "the file is on node {node} only: cannot queue its replication ({error}); retry the upload"
    )]
    QueuePush { node: String, error: String },
    #[error(
        "the queue Redis {0} may evict queued copies (maxmemory-policy allkeys-*), so an upload's copies could vanish: set maxmemory-policy noeviction there (CONFIG SET and redis.conf), or start the coordinator with --allow-evicting-queue"
    )]
    QueueEvicts(String),
    #[error("{0} is not served here: upload with PUT /<name>, read with GET /<shard>:<name>")]
    NotFound(String),
    #[error("shard {0} does not exist; the upload answered the shard id to read from")]
    UnknownShard(String),
    #[error("{name} is on no node of shard {shard}")]
    FileNotFound { shard: String, name: String },
    #[error("no node of shard {shard} could answer for {name}: {}", describe(.attempts))]
    ReadFailed {
        shard: String,
        name: String,
        attempts: Vec<Attempt>,
    },
    #[error(
        "method {0} is not supported; use PUT /<name>, GET or HEAD /<shard>:<name>, or GET /stats, /metrics, /health"
    )]
    Method(Method),
}

/// A name's refusal; a long one names the flag that sets the limit.
fn bad_name(e: &NameError) -> String {
    match e {
        NameError::TooLong { .. } => format!("{e} (the coordinator's --max-name-len)"),
        _ => e.to_string(),
    }
}

fn describe(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "none of its nodes is in the servers map".into();
    }
    attempts
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadName(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BadHead(HeadError::TooLarge) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::BadHead(_) => StatusCode::BAD_REQUEST,
            ApiError::LostRequestLine => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(BodyError::Stalled(_)) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Body(BodyError::Spill { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady
            | ApiError::ShuttingDown
            | ApiError::NoWritableShard { .. }
            | ApiError::QueueUnconfigured { .. }
            | ApiError::QueuePush { .. }
            | ApiError::QueueEvicts(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::AllNodesFailed { .. } | ApiError::ReadFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ApiError::NotFound(_) | ApiError::UnknownShard(_) | ApiError::FileNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn into_response(self, head: bool) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let mut resp = json_response(
            status,
            &serde_json::json!({ "error": self.to_string() }),
            head,
        );
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
        }
        resp
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value, head: bool) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    let len = text.len();
    let mut resp = Response::new(if head { full(Bytes::new()) } else { full(text) });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Accepts connections until `shutdown`, then lets in-flight requests
/// finish within `deadline` (see [`crate::accept`]).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
    deadline: Duration,
) {
    crate::accept::serve(listener, &shutdown, deadline, |stream| {
        serve_connection(stream, app.clone(), shutdown.clone())
    })
    .await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Arc<App>,
    shutdown: CancellationToken,
) {
    let (stream, lines) = RawTargets::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let lines = lines.clone();
        async move { Ok::<_, Infallible>(handle(&app, &lines, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(app: &App, lines: &Lines, req: Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let numbered = req.uri().path_and_query().map_or("", |p| p.as_str());
    let Some(raw) = lines.take(numbered) else {
        let mut resp = ApiError::LostRequestLine.into_response(head);
        close(&mut resp);
        return resp;
    };
    let mut resp = route(app, &raw, req, head).await;
    if raw.close {
        close(&mut resp);
    }
    resp
}

fn close(resp: &mut Response<Body>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

async fn route(app: &App, raw: &RawRequest, req: Request<Incoming>, head: bool) -> Response<Body> {
    if let Some(e) = &raw.refused {
        return ApiError::BadHead(e.clone()).into_response(head);
    }
    let target = raw.target.as_slice();
    match *req.method() {
        Method::PUT => put(app, target, req).await,
        Method::GET | Method::HEAD => {
            let path = target.split(|&b| b == b'?').next().unwrap_or(target);
            match path {
                b"/stats" => stats(app, head).await,
                b"/metrics" => metrics(app, head).await,
                b"/health" => health(app, head),
                other => match split_read_target(target) {
                    Some((shard, name)) => match Name::parse(&name) {
                        Ok(name) => read::read(app, shard, &name, head).await,
                        Err(e) => ApiError::BadName(e).into_response(head),
                    },
                    None => ApiError::NotFound(String::from_utf8_lossy(other).into_owned())
                        .into_response(head),
                },
            }
        }
        ref other => ApiError::Method(other.clone()).into_response(head),
    }
}

async fn put(app: &App, target: &[u8], req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let mut len = 0;
    let result = upload::upload(app, target, req, &mut len).await;
    let took = started.elapsed();
    let (status, resp) = match result {
        Ok(done) => {
            let mut resp = json_response(
                StatusCode::OK,
                &serde_json::json!({ "shard_id": done.shard }),
                false,
            );
            // The stored copy's version, as the node said it.
            if let Some(v) = done.version {
                let h = resp.headers_mut();
                h.insert(TIME_HEADER, HeaderValue::from(v.time_ms));
                if let Ok(hash) = HeaderValue::from_str(&hash_hex(v.content_hash)) {
                    h.insert(HASH_HEADER, hash);
                }
            }
            if let Some(why) = done.unordered {
                resp.headers_mut()
                    .insert(UNORDERED_HEADER, HeaderValue::from_static(why.label()));
            }
            (StatusCode::OK, resp)
        }
        Err(e) => (e.status(), e.into_response(false)),
    };
    app.stats.upload(status.as_u16(), len, took);
    if let Some(statsd) = &app.statsd {
        statsd.upload(status == StatusCode::OK, took);
    }
    resp
}

async fn snapshot_parts(app: &App, oldest: bool) -> (Option<u64>, Option<Duration>) {
    let queue = app.view.borrow().queue.clone();
    let Some(queue) = queue else {
        return (None, None);
    };
    if oldest {
        tokio::join!(async { queue.len().await.overall }, queue.oldest_age())
    } else {
        (queue.len().await.overall, None)
    }
}

async fn stats(app: &App, head: bool) -> Response<Body> {
    let (queue_length, queue_oldest) = snapshot_parts(app, true).await;
    let view = app.view.borrow().clone();
    let value = stats_json(&Snapshot {
        stats: &app.stats,
        view: &view,
        queue_length,
        queue_oldest,
        queue_servers: app.queue_check.servers(),
        pending_fill: app.fill.pending_total(),
        zk_connected: app.zk_connected(),
    });
    json_response(StatusCode::OK, &value, head)
}

async fn metrics(app: &App, head: bool) -> Response<Body> {
    let (queue_length, queue_oldest) = snapshot_parts(app, true).await;
    let view = app.view.borrow().clone();
    let text = metrics_text(&Snapshot {
        stats: &app.stats,
        view: &view,
        queue_length,
        queue_oldest,
        queue_servers: app.queue_check.servers(),
        pending_fill: app.fill.pending_total(),
        zk_connected: app.zk_connected(),
    });
    let len = text.len();
    let mut resp = Response::new(if head { full(Bytes::new()) } else { full(text) });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn health(app: &App, head: bool) -> Response<Body> {
    let ready = app.view.borrow().ready;
    let shutting_down = app.shutting_down.is_cancelled();
    let evicting = app.queue_evicting();
    let (status, text) = match (ready, shutting_down, &evicting) {
        (_, true, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        (true, false, None) => (StatusCode::OK, "ok"),
        (true, false, Some(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads refused: a queue Redis may evict queued copies",
        ),
        (false, false, _) => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
    };
    json_response(
        status,
        &serde_json::json!({
            "status": text,
            "ready": ready,
            "zookeeper_connected": app.zk_connected(),
            "queue_evicting": evicting,
        }),
        head,
    )
}
