//! The HTTP/1.1 API, served by a small purpose-built server.
//!
//! Why not hyper: serving a cached file with `sendfile` (page cache to
//! socket, no copy through user space) is what lets GETs keep up with
//! nginx, and hyper owns the socket writes. The server is deliberately
//! narrow: requests are parsed with `httparse`, bodies must have a
//! Content-Length (no chunked uploads), responses always carry one;
//! keep-alive and pipelining work; a connection whose request body was
//! not read is closed after the answer.
//!
//! - `PUT /<name>`: 201 once durable; 411 without Content-Length, 400 when
//!   the body ends early, 413 over `--max-body`, 414 for a name over
//!   [`MAX_NAME_LEN`], 400 for any other name that is not a valid
//!   [`Name`] (the same rules as the coordinator's: a file stored here can
//!   always be copied to the shard's other nodes), 408 when the body stalls.
//! - `GET /<name>`, `HEAD /<name>`: 200 with Content-Length and
//!   `X-Backpack-Time`, 404 when unknown.
//! - `GET /stats`: counters and store figures; `GET /health`: readiness.
//! - Anything else: 405.
//!
//! The name is the request target exactly as received (path and query,
//! percent-encoding untouched). Errors are JSON `{"error": "..."}`; 5xx
//! are also logged.

use super::NodeConfig;
use super::index::{Location, Offer};
use super::record::MAX_NAME_LEN;
use super::stats::OpStats;
use super::store::{SMALL_MAX, Store, StoreError, now_ms};
use backpack_shared::model::{Name, NameError, Version, hash_hex};
use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, ErrorKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::node_client::AFTER_HEADER;
pub use crate::node_client::TIME_HEADER;
/// Uploads buffered or streamed at once; more wait. Bounds memory to about
/// this many times [`SMALL_MAX`].
const MAX_PUTS_IN_FLIGHT: usize = 256;
/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// How long an idle keep-alive connection or a partial request head may
/// wait.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

struct App {
    store: Arc<Store>,
    max_body: u64,
    body_timeout: Duration,
    gets: OpStats,
    puts: OpStats,
    put_slots: Semaphore,
    versions: Arc<VersionLocks>,
    /// Uploads not stored because their client had gone when the body was
    /// complete ([`Conn::still_there`]).
    abandoned_uploads: std::sync::atomic::AtomicU64,
}

/// One lock per name being written with a version this node assigns, so
/// that two uploads of one name arriving at once get distinct versions
/// (the later one the higher) instead of equal ones that two nodes could
/// order differently. Entries live only while someone holds them.
#[derive(Default)]
struct VersionLocks {
    held: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held version lock; releasing it drops the entry when unused.
struct VersionGuard {
    locks: Arc<VersionLocks>,
    name: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl VersionLocks {
    async fn lock(self: &Arc<Self>, name: &str) -> VersionGuard {
        let entry = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.entry(name.to_string()).or_default().clone()
        };
        VersionGuard {
            locks: self.clone(),
            name: name.to_string(),
            guard: Some(entry.lock_owned().await),
        }
    }
}

impl Drop for VersionGuard {
    fn drop(&mut self) {
        self.guard = None;
        let mut held = self.locks.held.lock().unwrap_or_else(|p| p.into_inner());
        if held
            .get(&self.name)
            .is_some_and(|e| Arc::strong_count(e) == 1)
        {
            held.remove(&self.name);
        }
    }
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
    #[error("{0}")]
    BadName(NameError),
    #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    HeadTooLarge,
    #[error("no file named {0}")]
    NotFound(String),
    #[error("method {0} is not supported; use GET, HEAD or PUT")]
    Method(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body stalled for more than {0:?} (--body-timeout)")]
    Timeout(Duration),
    #[error(
        "the client closed the connection before the upload was stored; not stored (keep the connection open until the answer)"
    )]
    ClientGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::LengthRequired => 411,
            ApiError::ShortBody { .. } | ApiError::BadRequest(_) | ApiError::ClientGone => 400,
            ApiError::TooLarge { .. } => 413,
            ApiError::NameTooLong(_) | ApiError::BadName(NameError::TooLong { .. }) => 414,
            ApiError::BadName(_) => 400,
            ApiError::HeadTooLarge => 431,
            ApiError::NotFound(_) => 404,
            ApiError::Method(_) => 405,
            ApiError::Timeout(_) => 408,
            ApiError::Store(StoreError::NoSpace(_)) => 507,
            ApiError::Store(StoreError::Failed | StoreError::Closed) => 503,
            ApiError::Store(_) => 500,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// The `Date` header value, formatted at most once a second.
fn http_date() -> String {
    static CACHE: Mutex<(u64, String)> = Mutex::new((u64::MAX, String::new()));
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if c.0 != secs {
        *c = (secs, httpdate::fmt_http_date(now));
    }
    c.1.clone()
}

/// A response head: status line and headers, Content-Length included.
struct ResponseHead {
    buf: Vec<u8>,
}

impl ResponseHead {
    fn new(status: u16, content_length: u64) -> ResponseHead {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {}\r\nDate: {}\r\nContent-Length: {content_length}\r\n",
                reason(status),
                http_date()
            )
            .as_bytes(),
        );
        ResponseHead { buf }
    }

    fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.buf
            .extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        self
    }

    fn finish(mut self, close: bool) -> Vec<u8> {
        if close {
            self.buf.extend_from_slice(b"Connection: close\r\n");
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// What the handler needs of a request head.
struct Request {
    method: String,
    /// The request target, exactly as received.
    target: String,
    keep_alive: bool,
    content_length: Option<Result<u64, ()>>,
    chunked: bool,
    expect_continue: bool,
    time: Option<Result<u64, ()>>,
    /// `X-Backpack-After`: the assigned version must exceed it.
    after: Option<Result<u64, ()>>,
}

impl Request {
    fn has_body(&self) -> bool {
        self.chunked
            || matches!(self.content_length, Some(Ok(n)) if n > 0)
            || matches!(self.content_length, Some(Err(())))
    }
}

/// What to do with the connection after a response.
#[derive(PartialEq)]
enum Next {
    KeepAlive,
    Close,
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
        abandoned_uploads: Default::default(),
        put_slots: Semaphore::new(MAX_PUTS_IN_FLIGHT),
        versions: Arc::default(),
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
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            app: app.clone(),
        };
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = conn.run(&shutdown).await {
                debug!(error = %e, "connection ended with an error");
            }
        });
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

struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet used (the next request head, a body start).
    buf: BytesMut,
    app: Arc<App>,
}

impl Conn {
    async fn run(&mut self, shutdown: &CancellationToken) -> io::Result<()> {
        loop {
            let req = tokio::select! {
                r = self.read_head() => r,
                // Idle between requests: close at once on shutdown. A
                // request being received or handled is finished first.
                _ = shutdown.cancelled(), if self.buf.is_empty() => return Ok(()),
            };
            let req = match req {
                Ok(Some(req)) => req,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = self.respond_error(e, false, true).await;
                    return Ok(());
                }
            };
            let next = self.handle(req).await?;
            if next == Next::Close || shutdown.is_cancelled() {
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
        }
    }

    /// Reads and parses the next request head. `None`: the client closed
    /// the connection between requests (or stayed idle too long).
    async fn read_head(&mut self) -> Result<Option<Request>, ApiError> {
        loop {
            if !self.buf.is_empty() {
                if let Some((req, used)) = parse_head(&self.buf)? {
                    self.buf.advance(used);
                    return Ok(Some(req));
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(ApiError::HeadTooLarge);
                }
            }
            let read =
                tokio::time::timeout(HEAD_TIMEOUT, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => {
                    return Err(ApiError::BadRequest(
                        "connection closed inside the request head".into(),
                    ));
                }
                Err(_) => return Err(ApiError::Timeout(HEAD_TIMEOUT)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(ApiError::BadRequest(format!(
                        "cannot read the request: {e}"
                    )));
                }
            }
        }
    }

    async fn handle(&mut self, req: Request) -> io::Result<Next> {
        let head = req.method == "HEAD";
        // An unread body would be taken for the next request: close then.
        let unread_body = req.has_body();
        let result = match req.method.as_str() {
            "GET" | "HEAD" => self.get(&req).await,
            "PUT" => self.put(&req).await,
            other => Err(ApiError::Method(other.to_owned())),
        };
        // A GET or HEAD carrying a body (odd, but legal) leaves it unread.
        let close_anyway = !req.keep_alive || (unread_body && req.method != "PUT");
        match result {
            Ok(Next::KeepAlive) if !close_anyway => Ok(Next::KeepAlive),
            Ok(_) => Ok(Next::Close),
            Err(e) => {
                // After a PUT error the body may be partly read: close.
                let close = close_anyway || unread_body || req.method == "PUT";
                self.respond_error(e, head, close).await?;
                Ok(if close { Next::Close } else { Next::KeepAlive })
            }
        }
    }

    async fn respond_error(&mut self, e: ApiError, head: bool, close: bool) -> io::Result<()> {
        let status = e.status();
        if status >= 500 {
            error!(error = %e, "request failed");
        }
        let body = serde_json::json!({ "error": e.to_string() }).to_string();
        let mut rh =
            ResponseHead::new(status, body.len() as u64).header("Content-Type", "application/json");
        if status == 405 {
            rh = rh.header("Allow", "GET, HEAD, PUT");
        }
        let mut out = rh.finish(close);
        if !head {
            out.extend_from_slice(body.as_bytes());
        }
        self.write(&out).await
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(self.app.body_timeout, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::TimedOut.into()),
        }
    }

    fn name(req: &Request) -> Result<&str, ApiError> {
        let name = req.target.as_str();
        if !name.starts_with('/') {
            return Err(ApiError::BadRequest(format!(
                "request target {name:?} does not start with /; send only the path (and query)"
            )));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ApiError::NameTooLong(name.len()));
        }
        Ok(name)
    }

    async fn get(&mut self, req: &Request) -> Result<Next, ApiError> {
        let started = Instant::now();
        let head = req.method == "HEAD";
        let name = Self::name(req)?;
        let json = match name {
            "/stats" => Some(stats_json(&self.app)),
            "/health" => Some(serde_json::json!({"status": "ok"})),
            _ => None,
        };
        if let Some(json) = json {
            let body = json.to_string();
            let mut out = ResponseHead::new(200, body.len() as u64)
                .header("Content-Type", "application/json")
                .finish(false);
            if !head {
                out.extend_from_slice(body.as_bytes());
            }
            self.write(&out).await.map_err(io_error)?;
            return Ok(Next::KeepAlive);
        }
        let Some(loc) = self.app.store.lookup(name) else {
            return Err(ApiError::NotFound(name.to_owned()));
        };
        let out_head = ResponseHead::new(200, loc.data_len)
            .header("Content-Type", "application/octet-stream")
            .header("X-Backpack-Time", loc.time_ms)
            .header("X-Backpack-Hash", hash_hex(loc.content_hash))
            .finish(!req.keep_alive);
        if head {
            self.write(&out_head).await.map_err(io_error)?;
            return Ok(Next::KeepAlive);
        }
        self.send_file(&loc, out_head).await?;
        self.app.gets.record(loc.data_len, started.elapsed());
        Ok(Next::KeepAlive)
    }

    /// Sends a stored file after `head`. Once the head is out, a failure
    /// can only abort the connection (the client sees a short body, never
    /// corrupt bytes presented as complete).
    async fn send_file(&mut self, loc: &Location, head: Vec<u8>) -> Result<(), ApiError> {
        let store = self.app.store.clone();
        if loc.data_len <= SMALL_MAX {
            if let Some((volume, data_offset)) = store.probe_cached(loc) {
                // Head with MSG_MORE so it leaves in one segment with the
                // first file bytes; then the kernel copies page cache to
                // socket.
                self.send_more(&head).await.map_err(io_error)?;
                return self
                    .sendfile(volume.file(), data_offset, loc.data_len)
                    .await
                    .map_err(io_error);
            }
            let loc = *loc;
            let data = tokio::task::spawn_blocking(move || store.read_small(&loc))
                .await
                .map_err(|_| StoreError::Closed)??;
            let mut out = head;
            out.extend_from_slice(&data);
            return self.write(&out).await.map_err(io_error);
        }
        let mut reader = store.read_large(loc)?;
        self.write(&head).await.map_err(io_error)?;
        loop {
            let (r, chunk) = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await
            .map_err(|_| StoreError::Closed)?;
            reader = r;
            match chunk {
                Ok(Some(c)) => self.write(&c).await.map_err(io_error)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    error!(error = %e, "aborting a download");
                    return Err(io_error(io::Error::other(e.to_string())));
                }
            }
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match tokio::time::timeout(self.app.body_timeout, self.stream.writable()).await {
            Ok(r) => r,
            Err(_) => Err(ErrorKind::TimedOut.into()),
        }
    }

    async fn send_more(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.writable().await?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::net::send(&self.stream, bytes, rustix::net::SendFlags::MORE)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn sendfile(&self, file: &std::fs::File, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            self.writable().await?;
            let left = (end - offset).min(1 << 30) as usize;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, file, Some(&mut offset), left)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next piece of the request body: buffered bytes first, then the
    /// socket. At most `left` bytes.
    async fn body_chunk(&mut self, left: u64, got: u64, expected: u64) -> Result<Bytes, ApiError> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(left as usize);
            return Ok(self.buf.split_to(n).freeze());
        }
        let want = left.min(SMALL_MAX) as usize;
        self.buf.reserve(want.min(256 * 1024));
        let read = tokio::time::timeout(
            self.app.body_timeout,
            (&mut self.stream).take(left).read_buf(&mut self.buf),
        )
        .await;
        match read {
            Err(_) => Err(ApiError::Timeout(self.app.body_timeout)),
            Ok(Ok(0)) | Ok(Err(_)) => Err(ApiError::ShortBody { got, expected }),
            Ok(Ok(_)) => Ok(self.buf.split().freeze()),
        }
    }

    async fn put(&mut self, req: &Request) -> Result<Next, ApiError> {
        let started = Instant::now();
        // The same rules as the coordinator's, the length limit included.
        let name = Name::parse(req.target.as_bytes())
            .map_err(ApiError::BadName)?
            .into_string();
        let len = match req.content_length {
            _ if req.chunked => return Err(ApiError::LengthRequired),
            None => return Err(ApiError::LengthRequired),
            Some(Err(())) => {
                return Err(ApiError::BadRequest(
                    "Content-Length must be one number of bytes".into(),
                ));
            }
            Some(Ok(n)) => n,
        };
        if len > self.app.max_body {
            return Err(ApiError::TooLarge {
                len,
                max: self.app.max_body,
            });
        }
        let client_time = match req.time {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(())) => {
                return Err(ApiError::BadRequest(
                    "X-Backpack-Time must be milliseconds since the Unix epoch".into(),
                ));
            }
        };
        let after = match req.after {
            None => 0,
            Some(Ok(t)) => t,
            Some(Err(())) => {
                return Err(ApiError::BadRequest(
                    "X-Backpack-After must be milliseconds since the Unix epoch".into(),
                ));
            }
        };
        if req.expect_continue {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(io_error)?;
        }
        let app = self.app.clone();
        // An upload without a version gets one from this node, held until
        // it is stored: later than the current copy's (even if the clock
        // stepped back) and than the newest copy on the shard's other nodes
        // (`X-Backpack-After`), and distinct from a concurrent upload's.
        let _version = match client_time {
            None => Some(app.versions.lock(&name).await),
            Some(_) => None,
        };
        let current = app.store.lookup(&name);
        let (time_ms, from_client) = match client_time {
            Some(t) => (t, true),
            None => (
                now_ms()
                    .max(current.map_or(0, |c| c.time_ms.saturating_add(1)))
                    .max(after.saturating_add(1)),
                false,
            ),
        };
        let older = matches!((client_time, current), (Some(t), Some(cur)) if t < cur.time_ms);
        if older {
            // A newer copy is already durable: read the body (to answer
            // properly) and keep the newer copy.
            let mut got = 0;
            while got < len {
                got += self.body_chunk(len - got, got, len).await?.len() as u64;
            }
            app.puts.record(len, started.elapsed());
            if let Some(cur) = current {
                self.created(cur.version(), req).await?;
            }
            return Ok(Next::KeepAlive);
        }

        let _slot = app
            .put_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let (offer, stored) = if len <= SMALL_MAX {
            let mut buf = Store::small_record_buffer(&name, len);
            let start = buf.len() as u64;
            let n = self.buf.len().min(len as usize);
            buf.extend_from_slice(&self.buf.split_to(n));
            // The rest straight from the socket into the record buffer.
            while (buf.len() as u64) - start < len {
                let got = buf.len() as u64 - start;
                let read = tokio::time::timeout(
                    self.app.body_timeout,
                    (&mut self.stream).take(len - got).read_buf(&mut buf),
                )
                .await;
                match read {
                    Err(_) => return Err(ApiError::Timeout(self.app.body_timeout)),
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        return Err(ApiError::ShortBody { got, expected: len });
                    }
                    Ok(Ok(_)) => {}
                }
            }
            self.still_there()?;
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
            while got < len {
                let c = self.body_chunk(len - got, got, len).await?;
                got += c.len() as u64;
                pending.extend_from_slice(&c);
                if pending.len() >= SMALL_MAX as usize || got == len {
                    upload.write(pending.split().freeze()).await?;
                }
            }
            self.still_there()?;
            upload.finish().await?
        };
        app.puts.record(len, started.elapsed());
        // The version now current: this upload's, or the one that beat it.
        let kept = match offer {
            Offer::Kept => app.store.lookup(&name).map_or(stored, |c| c.version()),
            Offer::Inserted | Offer::Replaced { .. } => stored,
        };
        self.created(kept, req).await?;
        Ok(Next::KeepAlive)
    }

    /// Answers 201 with the version the node now holds for the name.
    /// Checks, just before an upload is stored, that its client has not
    /// closed the connection. A coordinator that gave up on this node (its
    /// `--node-timeout`, this node stopped or stalled) has stored the file
    /// elsewhere and answered; a copy stored here afterwards would get a
    /// version later than uploads that followed, and win over them. Not
    /// airtight (the client may give up during the store itself), but it
    /// closes the window of a node that resumes after a long stop.
    fn still_there(&self) -> Result<(), ApiError> {
        let mut byte = [0u8; 1];
        let peek = rustix::net::recv(
            &self.stream,
            &mut byte[..],
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        );
        match peek {
            // Nothing to read (or the next pipelined request): still there.
            Err(rustix::io::Errno::WOULDBLOCK) | Ok((1.., _)) => Ok(()),
            Err(rustix::io::Errno::INTR) => Ok(()),
            // End of stream or reset: gone.
            _ => {
                self.app
                    .abandoned_uploads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(ApiError::ClientGone)
            }
        }
    }

    async fn created(&mut self, kept: Version, req: &Request) -> Result<(), ApiError> {
        let out = ResponseHead::new(201, 0)
            .header("X-Backpack-Time", kept.time_ms)
            .header("X-Backpack-Hash", hash_hex(kept.content_hash))
            .finish(!req.keep_alive);
        self.write(&out).await.map_err(io_error)
    }
}

/// An IO failure on the connection itself: nothing useful can be answered.
fn io_error(e: io::Error) -> ApiError {
    ApiError::Store(StoreError::Io {
        context: "connection".into(),
        cause: e,
    })
}

/// Parses a request head at the start of `buf`: `None` if incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ApiError::HeadTooLarge),
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "malformed request ({e}): a request line is `METHOD /<name> HTTP/1.1`, and a file name holds only printable ASCII (percent-encode other bytes)"
            )));
        }
    };
    let method = parsed.method.unwrap_or("").to_owned();
    let target = parsed.path.unwrap_or("").to_owned();
    let http11 = parsed.version == Some(1);
    let mut req = Request {
        method,
        target,
        keep_alive: http11,
        content_length: None,
        chunked: false,
        expect_continue: false,
        time: None,
        after: None,
    };
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let number = || value.parse::<u64>().map_err(|_| ());
        if h.name.eq_ignore_ascii_case("content-length") {
            req.content_length = Some(match req.content_length {
                // Repeated: fine only if identical (RFC 9110 8.6).
                Some(prev) if prev != number() => Err(()),
                _ => number(),
            });
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            req.chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                req.keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                req.keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            req.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case(TIME_HEADER) {
            req.time = Some(number());
        } else if h.name.eq_ignore_ascii_case(AFTER_HEADER) {
            req.after = Some(number());
        }
    }
    Ok(Some((req, used)))
}

fn stats_json(app: &App) -> serde_json::Value {
    let s = app.store.stats();
    serde_json::json!({
        "gets": app.gets.snapshot(),
        "puts": app.puts.snapshot(),
        "abandoned_uploads": app.abandoned_uploads.load(std::sync::atomic::Ordering::Relaxed),
        "files": s.files,
        "bytes_stored": s.bytes_stored,
        "volumes": s.volumes,
        "volume_bytes": s.volume_bytes,
        "free_disk_bytes": s.free_disk_bytes,
        "index_bytes": s.index_bytes,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Request {
        parse_head(s.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads() {
        let r =
            parse("PUT /a%20b?x=1 HTTP/1.1\r\nContent-Length: 5\r\nX-Backpack-Time: 42\r\n\r\n");
        assert_eq!(r.method, "PUT");
        assert_eq!(r.target, "/a%20b?x=1");
        assert!(r.keep_alive);
        assert_eq!(r.content_length, Some(Ok(5)));
        assert_eq!(r.time, Some(Ok(42)));
        let r = parse("GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let r = parse("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(r.content_length, Some(Err(())));
        let r = parse("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.content_length, Some(Ok(5)));
        let r =
            parse("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert!(r.chunked && r.expect_continue);
        assert!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
    }
}
