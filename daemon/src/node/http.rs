//! The HTTP API, on plain hyper so that the request target reaches us
//! exactly as the client sent it (no router, no normalisation).
//!
//! - `PUT /<name>`: 201 once durable; 411 without Content-Length, 400 when
//!   the body ends early, 413 over `--max-body`, 414 for a name over
//!   [`MAX_NAME_LEN`], 400 for a reserved name.
//! - `GET /<name>`, `HEAD /<name>`: 200 with Content-Length and
//!   `X-Backpack-Time`, 404 when unknown.
//! - `GET /stats`: counters and store figures; `GET /health`: readiness.
//! - Anything else: 405.
//!
//! Errors are JSON `{"error": "..."}`; 5xx are also logged.

use super::NodeConfig;
use super::index::Offer;
use super::record::MAX_NAME_LEN;
use super::stats::OpStats;
use super::store::{SMALL_MAX, Store, StoreError, now_ms};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Header carrying an upload's time in milliseconds since the Unix epoch.
pub const TIME_HEADER: &str = "x-backpack-time";
/// Names the node's own API uses; a PUT to them is refused.
pub const RESERVED: [&str; 2] = ["/stats", "/health"];
/// Uploads buffered or streamed at once; more wait. Bounds memory to about
/// this many times [`SMALL_MAX`].
const MAX_PUTS_IN_FLIGHT: usize = 256;

type Body = BoxBody<Bytes, std::io::Error>;

struct App {
    store: Arc<Store>,
    max_body: u64,
    body_timeout: Duration,
    gets: OpStats,
    puts: OpStats,
    put_slots: Semaphore,
}

/// An error answered to the client.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("PUT needs a Content-Length header (chunked uploads are not accepted)")]
    LengthRequired,
    #[error("body ended after {got} of the {expected} bytes announced by Content-Length")]
    ShortBody { got: u64, expected: u64 },
    #[error("body of {len} bytes is over this node's limit of {max} bytes (--max-body)")]
    TooLarge { len: u64, max: u64 },
    #[error("name of {0} bytes is over the limit of {MAX_NAME_LEN} bytes")]
    NameTooLong(usize),
    #[error("{0} is used by the node's own API and cannot be stored")]
    Reserved(String),
    #[error("no file named {0}")]
    NotFound(String),
    #[error("method {0} is not supported; use GET, HEAD or PUT")]
    Method(Method),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body stalled for more than {0:?} (--body-timeout)")]
    Timeout(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::ShortBody { .. } | ApiError::Reserved(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NameTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Store(StoreError::NoSpace(_)) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Store(StoreError::Failed | StoreError::Closed) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn into_response(self, head: bool) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            error!(error = %self, "request failed");
        }
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut resp = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp = resp.header(header::ALLOW, "GET, HEAD, PUT");
        }
        resp.body(if head { empty() } else { full(body) })
            .unwrap_or_else(|_| Response::new(empty()))
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

/// Serves the API on `listener` until `shutdown`, then lets in-flight
/// requests finish (up to the configured deadline) and closes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    config: &NodeConfig,
    shutdown: CancellationToken,
) {
    let app = Arc::new(App {
        store: store.clone(),
        max_body: config.max_body,
        body_timeout: config.body_timeout,
        gets: OpStats::default(),
        puts: OpStats::default(),
        put_slots: Semaphore::new(MAX_PUTS_IN_FLIGHT),
    });
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, data_dir = %config.data_dir.display(), "backpack-node listening");
    }
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: back off, keep serving.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(stream, app.clone(), shutdown.clone()));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(timeout = ?config.shutdown_timeout, "requests still running at the shutdown deadline; dropping them");
    }
    if tokio::task::spawn_blocking(move || store.close())
        .await
        .is_err()
    {
        error!("closing the store panicked");
    }
    info!("backpack-node stopped");
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Arc<App>,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client may shut its write side and still wait for the answer
        // (how a short body is noticed).
        .half_close(true)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let result = match *req.method() {
        Method::GET | Method::HEAD => get(app, req).await,
        Method::PUT => put(app, req).await,
        ref other => Err(ApiError::Method(other.clone())),
    };
    result.unwrap_or_else(|e| e.into_response(head))
}

/// The name: the request target exactly as received.
fn name_of<B>(req: &Request<B>) -> Result<String, ApiError> {
    let uri = req.uri();
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(ApiError::BadRequest(
            "absolute-form request target; send only the path (and query)".into(),
        ));
    }
    let name = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    if !name.starts_with('/') {
        return Err(ApiError::BadRequest(format!(
            "request target {name:?} does not start with /"
        )));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ApiError::NameTooLong(name.len()));
    }
    Ok(name.to_owned())
}

fn json_response(value: serde_json::Value, head: bool) -> Response<Body> {
    let body = value.to_string();
    let mut resp = Response::new(if head { empty() } else { full(body.clone()) });
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    resp
}

async fn get(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let head = req.method() == Method::HEAD;
    let name = name_of(&req)?;
    match name.as_str() {
        "/stats" => return Ok(json_response(stats_json(app), head)),
        "/health" => return Ok(json_response(serde_json::json!({"status": "ok"}), head)),
        _ => {}
    }
    let Some(loc) = app.store.lookup(&name) else {
        return Err(ApiError::NotFound(name));
    };
    let body = if head {
        empty()
    } else if loc.data_len <= SMALL_MAX {
        // Cached (the common case for hot files): read right here. Else a
        // blocking thread waits for the disk.
        let data = match app.store.read_small_cached(&loc) {
            Some(r) => r?,
            None => {
                let store = app.store.clone();
                tokio::task::spawn_blocking(move || store.read_small(&loc))
                    .await
                    .map_err(|_| StoreError::Closed)??
            }
        };
        full(data)
    } else {
        let reader = app.store.read_large(&loc)?;
        let stream = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            let next = tokio::task::spawn_blocking(move || {
                let r = reader.next_chunk();
                (reader, r)
            })
            .await;
            match next {
                Ok((reader, Ok(Some(chunk)))) => Some((Ok(Frame::data(chunk)), Some(reader))),
                Ok((_, Ok(None))) => None,
                // Aborts the response: the client sees a truncated body,
                // never corrupt bytes presented as complete.
                Ok((_, Err(e))) => Some((Err(std::io::Error::other(e.to_string())), None)),
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        });
        BodyExt::boxed(StreamBody::new(stream))
    };
    if !head {
        app.gets.record(loc.data_len, started.elapsed());
    }
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(loc.data_len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(TIME_HEADER, HeaderValue::from(loc.time_ms));
    Ok(resp)
}

fn stats_json(app: &App) -> serde_json::Value {
    let s = app.store.stats();
    serde_json::json!({
        "gets": app.gets.snapshot(),
        "puts": app.puts.snapshot(),
        "files": s.files,
        "bytes_stored": s.bytes_stored,
        "volumes": s.volumes,
        "volume_bytes": s.volume_bytes,
        "free_disk_bytes": s.free_disk_bytes,
        "index_bytes": s.index_bytes,
    })
}

fn parse_header<B>(req: &Request<B>, name: &str, what: &str) -> Result<Option<u64>, ApiError> {
    // HeaderMap lookups ignore case; `name` is also how the error says it.
    match req.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} must be {what}"))),
    }
}

/// The next piece of the request body, `None` at its end.
async fn next_data(
    body: &mut Incoming,
    timeout: Duration,
    got: u64,
    expected: u64,
) -> Result<Option<Bytes>, ApiError> {
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ApiError::Timeout(timeout)),
            Ok(None) => return Ok(None),
            // The connection ended (or broke) before Content-Length bytes
            // arrived.
            Ok(Some(Err(e))) => {
                debug!(error = %e, "body read failed");
                return Err(ApiError::ShortBody { got, expected });
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

async fn put(app: &App, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let name = name_of(&req)?;
    if RESERVED.contains(&name.as_str()) {
        return Err(ApiError::Reserved(name));
    }
    let Some(len) = parse_header(&req, "Content-Length", "a number of bytes")? else {
        return Err(ApiError::LengthRequired);
    };
    if len > app.max_body {
        return Err(ApiError::TooLarge {
            len,
            max: app.max_body,
        });
    }
    let client_time = parse_header(&req, "X-Backpack-Time", "milliseconds since the Unix epoch")?;
    let current = app.store.lookup(&name);
    let mut body = req.into_body();
    let timeout = app.body_timeout;

    let (time_ms, from_client) = match client_time {
        Some(t) => (t, true),
        // Without a client time the new copy must win: never older than
        // the current one, even if the clock stepped back.
        None => (now_ms().max(current.map_or(0, |c| c.time_ms)), false),
    };
    let older = match (client_time, current) {
        (Some(t), Some(cur)) => t < cur.time_ms,
        _ => false,
    };
    if older {
        // A newer copy is already durable: read the body (to answer the
        // request properly) and keep the newer copy.
        let mut got = 0;
        while let Some(d) = next_data(&mut body, timeout, got, len).await? {
            got += d.len() as u64;
        }
        if got < len {
            return Err(ApiError::ShortBody { got, expected: len });
        }
        app.puts.record(len, started.elapsed());
        return Ok(created(current.map_or(time_ms, |c| c.time_ms)));
    }

    let _slot = app
        .put_slots
        .acquire()
        .await
        .map_err(|_| StoreError::Closed)?;
    let offer = if len <= SMALL_MAX {
        let mut buf = Store::small_record_buffer(&name, len);
        let start = buf.len();
        let mut got = 0;
        while let Some(d) = next_data(&mut body, timeout, got, len).await? {
            got += d.len() as u64;
            if got > len {
                return Err(ApiError::BadRequest(
                    "body longer than Content-Length".into(),
                ));
            }
            buf.extend_from_slice(&d);
        }
        if got < len {
            return Err(ApiError::ShortBody { got, expected: len });
        }
        debug_assert_eq!(buf.len() - start, len as usize);
        app.store
            .put_small(&name, time_ms, from_client, buf)
            .await?
    } else {
        let mut upload = app
            .store
            .begin_large(&name, time_ms, from_client, len)
            .await?;
        let mut pending = BytesMut::with_capacity(SMALL_MAX as usize);
        let mut got = 0;
        while let Some(d) = next_data(&mut body, timeout, got, len).await? {
            got += d.len() as u64;
            if got > len {
                return Err(ApiError::BadRequest(
                    "body longer than Content-Length".into(),
                ));
            }
            pending.extend_from_slice(&d);
            if pending.len() >= SMALL_MAX as usize {
                upload.write(pending.split().freeze()).await?;
            }
        }
        if got < len {
            return Err(ApiError::ShortBody { got, expected: len });
        }
        if !pending.is_empty() {
            upload.write(pending.split().freeze()).await?;
        }
        upload.finish().await?
    };
    app.puts.record(len, started.elapsed());
    let kept_time = match offer {
        Offer::Kept => app.store.lookup(&name).map_or(time_ms, |c| c.time_ms),
        Offer::Inserted | Offer::Replaced { .. } => time_ms,
    };
    Ok(created(kept_time))
}

fn created(time_ms: u64) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::CREATED;
    resp.headers_mut()
        .insert(TIME_HEADER, HeaderValue::from(time_ms));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
    resp
}
