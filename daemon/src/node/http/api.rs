//! The node's API over [`protocol`](super::protocol): GET, HEAD and PUT
//! of files, `/stats`, `/health`; the version an upload gets
//! ([`VersionLocks`]), and uploads whose client has gone not stored
//! ([`App::still_there`]).

use super::protocol::{Conn, HttpError, Next, Request, ResponseHead, Service};
use crate::node::NodeConfig;
use crate::node::index::{Location, Offer};
use crate::node::record::MAX_NAME_LEN;
use crate::node::stats::OpStats;
use crate::node::store::{SMALL_MAX, Store, StoreError};
use crate::node_client::{HASH_HEADER, TIME_HEADER};
use backpack_shared::clock::now_ms;
use backpack_shared::model::{Name, NameError, Version, hash_hex};
use bytes::BytesMut;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tracing::error;

/// How far ahead of this node's clock a copy's time may be (24 h, in ms).
const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Uploads buffered or streamed at once; more wait. Bounds memory to about
/// this many times [`SMALL_MAX`].
const MAX_PUTS_IN_FLIGHT: usize = 256;

/// The API's state, shared by every connection.
pub struct App {
    store: Arc<Store>,
    max_body: u64,
    gets: OpStats,
    puts: OpStats,
    put_slots: Semaphore,
    versions: Arc<VersionLocks>,
    /// Uploads not stored because their client had gone when the body was
    /// complete ([`App::still_there`]).
    abandoned_uploads: AtomicU64,
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
    #[error("body of {len} bytes is over this node's limit of {max} bytes (--max-body)")]
    TooLarge { len: u64, max: u64 },
    #[error("name of {0} bytes is over the limit of {MAX_NAME_LEN} bytes")]
    NameTooLong(usize),
    #[error("{0}")]
    BadName(NameError),
    #[error("no file named {0}")]
    NotFound(String),
    #[error("method {0} is not supported; use GET, HEAD or PUT")]
    Method(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "the client closed the connection before the upload was stored; not stored (keep the connection open until the answer)"
    )]
    ClientGone,
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status(&self) -> u16 {
        match self {
            ApiError::LengthRequired => 411,
            ApiError::BadRequest(_) | ApiError::ClientGone => 400,
            ApiError::TooLarge { .. } => 413,
            ApiError::NameTooLong(_) | ApiError::BadName(NameError::TooLong { .. }) => 414,
            ApiError::BadName(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::Method(_) => 405,
            ApiError::Http(e) => e.status(),
            ApiError::Store(StoreError::NoSpace(_)) => 507,
            ApiError::Store(StoreError::Failed | StoreError::Closed) => 503,
            ApiError::Store(_) => 500,
        }
    }
}

/// An IO failure on the connection itself: nothing useful can be answered.
fn io_error(e: io::Error) -> ApiError {
    ApiError::Store(StoreError::Io {
        context: "connection".into(),
        cause: e,
    })
}

impl Service for App {
    async fn handle(&self, conn: &mut Conn, req: Request) -> io::Result<Next> {
        let head = req.method == "HEAD";
        // An unread body would be taken for the next request: close then.
        let unread_body = req.has_body();
        let result = match req.method.as_str() {
            "GET" | "HEAD" => self.get(conn, &req).await,
            "PUT" => self.put(conn, &req).await,
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
                respond_error(conn, e, head, close).await?;
                Ok(if close { Next::Close } else { Next::KeepAlive })
            }
        }
    }
}

async fn respond_error(conn: &mut Conn, e: ApiError, head: bool, close: bool) -> io::Result<()> {
    let status = e.status();
    if status >= 500 {
        error!(error = %e, "request failed");
    }
    let allow: &[(&str, &str)] = if status == 405 {
        &[("Allow", "GET, HEAD, PUT")]
    } else {
        &[]
    };
    conn.respond_error(status, &e.to_string(), allow, head, close)
        .await
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

impl App {
    pub fn new(store: Arc<Store>, config: &NodeConfig) -> App {
        App {
            store,
            max_body: config.max_body,
            gets: OpStats::default(),
            puts: OpStats::default(),
            abandoned_uploads: Default::default(),
            put_slots: Semaphore::new(MAX_PUTS_IN_FLIGHT),
            versions: Arc::default(),
        }
    }

    async fn get(&self, conn: &mut Conn, req: &Request) -> Result<Next, ApiError> {
        let started = Instant::now();
        let head = req.method == "HEAD";
        let name = name(req)?;
        let json = match name {
            "/stats" => Some(self.stats_json()),
            "/health" => Some(serde_json::json!({"status": "ok"})),
            _ => None,
        };
        if let Some(json) = json {
            conn.respond_json(200, &json.to_string(), &[], head, false)
                .await
                .map_err(io_error)?;
            return Ok(Next::KeepAlive);
        }
        let Some(loc) = self.store.lookup(name) else {
            return Err(ApiError::NotFound(name.to_owned()));
        };
        let out_head =
            ResponseHead::new(200, loc.data_len).header("Content-Type", "application/octet-stream");
        let out_head = with_version(out_head, loc.version()).finish(!req.keep_alive);
        if head {
            conn.write(&out_head).await.map_err(io_error)?;
            return Ok(Next::KeepAlive);
        }
        self.send_file(conn, &loc, out_head).await?;
        self.gets.record(loc.data_len, started.elapsed());
        Ok(Next::KeepAlive)
    }

    /// Sends a stored file after `head`. Once the head is out, a failure
    /// can only abort the connection (the client sees a short body, never
    /// corrupt bytes presented as complete).
    async fn send_file(
        &self,
        conn: &mut Conn,
        loc: &Location,
        head: Vec<u8>,
    ) -> Result<(), ApiError> {
        let store = self.store.clone();
        if loc.data_len <= SMALL_MAX {
            if let Some((volume, data_offset)) = store.probe_cached(loc) {
                // Head with MSG_MORE so it leaves in one segment with the
                // first file bytes; then the kernel copies page cache to
                // socket.
                conn.send_more(&head).await.map_err(io_error)?;
                return conn
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
            return conn.write(&out).await.map_err(io_error);
        }
        let mut reader = store.read_large(loc)?;
        conn.write(&head).await.map_err(io_error)?;
        loop {
            let (r, chunk) = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await
            .map_err(|_| StoreError::Closed)?;
            reader = r;
            match chunk {
                Ok(Some(c)) => conn.write(&c).await.map_err(io_error)?,
                Ok(None) => return Ok(()),
                Err(e) => {
                    error!(error = %e, "aborting a download");
                    return Err(io_error(io::Error::other(e.to_string())));
                }
            }
        }
    }

    async fn put(&self, conn: &mut Conn, req: &Request) -> Result<Next, ApiError> {
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
        if len > self.max_body {
            return Err(ApiError::TooLarge {
                len,
                max: self.max_body,
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
        // A time far ahead would win over every later upload of the name,
        // for good: refuse it (a clock is wrong somewhere).
        let limit = now_ms().saturating_add(MAX_AHEAD_MS);
        for (header, t) in [
            ("X-Backpack-Time", client_time.unwrap_or(0)),
            ("X-Backpack-After", after),
        ] {
            if t > limit {
                return Err(ApiError::BadRequest(format!(
                    "{header} {t} is more than 24 h ahead of this node's clock ({}): the sender's clock or this node's is wrong; fix it (a copy that far ahead would win over every later upload)",
                    now_ms()
                )));
            }
        }
        if req.expect_continue {
            conn.send_continue().await.map_err(io_error)?;
        }
        // An upload without a version gets one from this node, held until
        // it is stored: later than the current copy's (even if the clock
        // stepped back) and than the newest copy on the shard's other nodes
        // (`X-Backpack-After`), and distinct from a concurrent upload's.
        let _version = match client_time {
            None => Some(self.versions.lock(&name).await),
            Some(_) => None,
        };
        let current = self.store.lookup(&name);
        let (time_ms, from_client) = match client_time {
            Some(t) => (t, true),
            None => (
                now_ms()
                    .max(current.map_or(0, |c| c.time_ms.saturating_add(1)))
                    .max(after.saturating_add(1)),
                false,
            ),
        };
        if let (None, Some(cur)) = (client_time, current)
            && time_ms <= cur.time_ms
        {
            // Only a copy stored at the very end of time gets here.
            return Err(ApiError::BadRequest(format!(
                "the copy held has version {} and no later one can be given; overwrite it with a replicated copy of a sane time, or remove the name",
                cur.time_ms
            )));
        }
        let older = matches!((client_time, current), (Some(t), Some(cur)) if t < cur.time_ms);
        if older {
            // A newer copy is already durable: read the body (to answer
            // properly) and keep the newer copy.
            let mut got = 0;
            while got < len {
                got += conn.body_chunk(len - got, got, len).await?.len() as u64;
            }
            self.puts.record(len, started.elapsed());
            if let Some(cur) = current {
                created(conn, cur.version(), req).await?;
            }
            return Ok(Next::KeepAlive);
        }

        let _slot = self
            .put_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let (offer, stored) = if len <= SMALL_MAX {
            let mut buf = Store::small_record_buffer(&name, len);
            conn.read_body_into(&mut buf, len).await?;
            self.still_there(conn)?;
            self.store
                .put_small(&name, time_ms, from_client, buf)
                .await?
        } else {
            let mut upload = self
                .store
                .begin_large(&name, time_ms, from_client, len)
                .await?;
            let mut pending = BytesMut::with_capacity(SMALL_MAX as usize);
            let mut got = 0;
            while got < len {
                let c = conn.body_chunk(len - got, got, len).await?;
                got += c.len() as u64;
                pending.extend_from_slice(&c);
                if pending.len() >= SMALL_MAX as usize || got == len {
                    upload.write(pending.split().freeze()).await?;
                }
            }
            self.still_there(conn)?;
            upload.finish().await?
        };
        self.puts.record(len, started.elapsed());
        // The version now current: this upload's, or the one that beat it.
        let kept = match offer {
            Offer::Kept => self.store.lookup(&name).map_or(stored, |c| c.version()),
            Offer::Inserted | Offer::Replaced { .. } => stored,
        };
        created(conn, kept, req).await?;
        Ok(Next::KeepAlive)
    }

    /// Checks, just before an upload is stored, that its client has not
    /// closed the connection. A coordinator that gave up on this node (its
    /// `--node-timeout`, this node stopped or stalled) has stored the file
    /// elsewhere and answered; a copy stored here afterwards would get a
    /// version later than uploads that followed, and win over them. Not
    /// airtight (the client may give up during the store itself), but it
    /// closes the window of a node that resumes after a long stop.
    fn still_there(&self, conn: &Conn) -> Result<(), ApiError> {
        if conn.peer_gone() {
            self.abandoned_uploads.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::ClientGone);
        }
        Ok(())
    }

    fn stats_json(&self) -> serde_json::Value {
        let s = self.store.stats();
        serde_json::json!({
            "gets": self.gets.snapshot(),
            "puts": self.puts.snapshot(),
            "abandoned_uploads": self.abandoned_uploads.load(Ordering::Relaxed),
            "files": s.files,
            "bytes_stored": s.bytes_stored,
            "volumes": s.volumes,
            "volume_bytes": s.volume_bytes,
            "free_disk_bytes": s.free_disk_bytes,
            "index_bytes": s.index_bytes,
        })
    }
}

/// Answers 201 with the version the node now holds for the name.
async fn created(conn: &mut Conn, kept: Version, req: &Request) -> Result<(), ApiError> {
    let out = with_version(ResponseHead::new(201, 0), kept).finish(!req.keep_alive);
    conn.write(&out).await.map_err(io_error)
}

/// The version of the copy answered: `X-Backpack-Time` and
/// `X-Backpack-Hash`, the headers `node_client` reads.
fn with_version(head: ResponseHead, v: Version) -> ResponseHead {
    head.header(TIME_HEADER, v.time_ms)
        .header(HASH_HEADER, hash_hex(v.content_hash))
}
