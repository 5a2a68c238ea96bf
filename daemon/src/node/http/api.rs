//! The node's API (carried by `server.rs`): what a GET answers,
//! what a PUT stores, `/stats`, `/health`; the version an upload gets
//! ([`VersionLocks`]), and uploads whose client has gone not stored
//! ([`App::still_there`]). A server reads the request head into a
//! [`Request`], hands the upload's body over as an [`UploadBody`], and
//! writes the [`Answer`] or the error's [`ErrorAnswer`] its own way.

use super::listing::{self, KeyRange};
use super::request::{HttpError, Request};
use crate::node::NodeConfig;
use crate::node::index::{Location, Offer};
use crate::node::record::MAX_NAME_LEN;
use crate::node::stats::OpStats;
use crate::node::store::{SMALL_MAX, Store, StoreError};
use backpack_shared::clock::now_ms;
use backpack_shared::model::{Name, NameError, Version};
use bytes::{Bytes, BytesMut};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Semaphore;
use tracing::error;

/// The node's Prometheus metrics: like the listing, a path no file name
/// can take (an empty segment).
pub const METRICS_PATH: &str = "//metrics";

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
    /// The cap on connections and its refusals (`--max-connections`).
    pub connections: crate::accept::Limit,
    /// Connections cut for reading slower than `--send-min-rate`.
    pub slow_readers: Arc<AtomicU64>,
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
pub enum ApiError {
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
    #[error(
        "no endpoint {0}; the node's own are GET //metrics and GET //files?from=<16 hex digits>&to=<16 hex digits>"
    )]
    NoEndpoint(String),
    #[error("method {0} is not supported; use GET, HEAD or PUT")]
    Method(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{}", outside(.range, *.len))]
    RangeNotSatisfiable { range: String, len: u64 },
    #[error(
        "the client closed the connection before the upload was stored; not stored (keep the connection open until the answer)"
    )]
    ClientGone,
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn outside(range: &str, len: u64) -> String {
    if len == 0 {
        format!("range {range:?} asks for bytes of an empty file; ask without a Range")
    } else {
        format!(
            "range {range:?} is outside the file's {len} bytes; ask for bytes 0-{} at most",
            len - 1
        )
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::LengthRequired => 411,
            ApiError::BadRequest(_) | ApiError::ClientGone => 400,
            ApiError::TooLarge { .. } => 413,
            ApiError::NameTooLong(_) | ApiError::BadName(NameError::TooLong { .. }) => 414,
            ApiError::BadName(_) => 400,
            ApiError::NotFound(_) | ApiError::NoEndpoint(_) => 404,
            ApiError::RangeNotSatisfiable { .. } => 416,
            ApiError::Method(_) => 405,
            ApiError::Http(e) => e.status(),
            ApiError::Store(StoreError::NoSpace(_)) => 507,
            ApiError::Store(StoreError::Failed | StoreError::Closed) => 503,
            ApiError::Store(_) => 500,
        }
    }
}

/// An IO failure on the connection itself: nothing useful can be answered.
pub fn io_error(e: io::Error) -> ApiError {
    ApiError::Store(StoreError::Io {
        context: "connection".into(),
        cause: e,
    })
}

/// How an error is answered, by either server: `{"error": "..."}`.
pub struct ErrorAnswer {
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// The `Allow` header's value, on a 405.
    pub allow: Option<&'static str>,
}

impl From<ApiError> for ErrorAnswer {
    fn from(e: ApiError) -> ErrorAnswer {
        let status = e.status();
        if status >= 500 {
            error!(error = %e, "request failed");
        }
        ErrorAnswer {
            status,
            body: serde_json::json!({ "error": e.to_string() }).to_string(),
            allow: (status == 405).then_some("GET, HEAD, PUT"),
        }
    }
}

/// What a GET or HEAD answers.
pub enum Answer {
    /// 200 with this JSON (`/stats`, `/health`).
    Json(String),
    /// 200 with this Prometheus text (`//metrics`).
    Metrics(String),
    /// 200 with a stored file's data.
    File(Location),
    /// 200 with the listing of these keys, streamed ([`super::listing`]).
    Listing(KeyRange),
}

/// An upload's body as the server receives it.
pub trait UploadBody: Send {
    /// Lets the client send the body (the `100 Continue` a client that
    /// sent `Expect: 100-continue` waits for); called once the head is
    /// accepted.
    fn proceed(&mut self) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The next piece of the body, at most `left` bytes; `got` of
    /// `expected` arrived so far. A body that ends early is
    /// [`HttpError::ShortBody`], one that stalls [`HttpError::Timeout`].
    fn chunk(
        &mut self,
        left: u64,
        got: u64,
        expected: u64,
    ) -> impl Future<Output = Result<Bytes, ApiError>> + Send;

    /// Reads the whole body of `len` bytes onto the end of `out`.
    fn read_into(
        &mut self,
        out: &mut Vec<u8>,
        len: u64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async move {
            let mut got = 0;
            while got < len {
                let c = self.chunk(len - got, got, len).await?;
                got += c.len() as u64;
                out.extend_from_slice(&c);
            }
            Ok(())
        }
    }

    /// Whether the client has closed the connection (see
    /// [`App::still_there`]).
    fn peer_gone(&self) -> bool;
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
            connections: crate::accept::Limit::new(config.max_connections),
            slow_readers: Arc::default(),
        }
    }

    /// `--max-body`, bytes.
    pub fn max_body(&self) -> u64 {
        self.max_body
    }

    /// The store, for the servers' ways of sending a file.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What a GET or HEAD of `req` answers.
    pub fn get(&self, req: &Request) -> Result<Answer, ApiError> {
        let name = name(req)?;
        match name {
            "/stats" => Ok(Answer::Json(self.stats_json().to_string())),
            "/health" => Ok(Answer::Json(
                serde_json::json!({"status": "ok"}).to_string(),
            )),
            // Never a file's name (no empty segment): the node's own.
            METRICS_PATH => Ok(Answer::Metrics(self.metrics())),
            _ if name.starts_with("//") => Ok(Answer::Listing(listing::parse(name)?)),
            _ => match self.store.lookup(name) {
                Some(loc) => Ok(Answer::File(loc)),
                None => Err(ApiError::NotFound(name.to_owned())),
            },
        }
    }

    /// Counts a file sent whole (`/stats`).
    pub fn sent(&self, len: u64, started: Instant) {
        self.gets.record(len, started.elapsed());
    }

    /// Stores the upload `req` with its `body`; returns the version the
    /// node now holds for the name (this upload's, or a newer one kept).
    pub async fn put(
        &self,
        req: &Request,
        body: &mut impl UploadBody,
    ) -> Result<Version, ApiError> {
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
        body.proceed().await?;
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
        if let (Some(t), Some(cur)) = (client_time, current)
            && t < cur.time_ms
        {
            // A newer copy is already durable: read the body (to answer
            // properly) and keep the newer copy.
            let mut got = 0;
            while got < len {
                got += body.chunk(len - got, got, len).await?.len() as u64;
            }
            self.puts.record(len, started.elapsed());
            return Ok(cur.version());
        }

        let _slot = self
            .put_slots
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let (offer, stored) = if len <= SMALL_MAX {
            let mut buf = Store::small_record_buffer(&name, len);
            body.read_into(&mut buf, len).await?;
            self.still_there(body)?;
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
                let c = body.chunk(len - got, got, len).await?;
                got += c.len() as u64;
                pending.extend_from_slice(&c);
                if pending.len() >= SMALL_MAX as usize || got == len {
                    upload.write(pending.split().freeze()).await?;
                }
            }
            self.still_there(body)?;
            upload.finish().await?
        };
        self.puts.record(len, started.elapsed());
        // The version now current: this upload's, or the one that beat it.
        let kept = match offer {
            Offer::Kept => self.store.lookup(&name).map_or(stored, |c| c.version()),
            Offer::Inserted | Offer::Replaced { .. } => stored,
        };
        Ok(kept)
    }

    /// Checks, just before an upload is stored, that its client has not
    /// closed the connection. A coordinator that gave up on this node (its
    /// `--node-timeout`, this node stopped or stalled) has stored the file
    /// elsewhere and answered; a copy stored here afterwards would get a
    /// version later than uploads that followed, and win over them. Not
    /// airtight (the client may give up during the store itself), but it
    /// closes the window of a node that resumes after a long stop.
    fn still_there(&self, body: &impl UploadBody) -> Result<(), ApiError> {
        if body.peer_gone() {
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
            "connections_refused": self.connections.refused.load(Ordering::Relaxed),
            "slow_readers_cut": self.slow_readers.load(Ordering::Relaxed),
            "files": s.files,
            "bytes_stored": s.bytes_stored,
            "volumes": s.volumes,
            "volume_bytes": s.volume_bytes,
            "free_disk_bytes": s.free_disk_bytes,
            "index_bytes": s.index_bytes,
            "scrub": self.store.scrub_stats(),
        })
    }

    /// The Prometheus text of `//metrics`: what `/stats` shows, as
    /// counters and gauges named `backpack_node_*` (bytes, seconds).
    fn metrics(&self) -> String {
        use crate::prometheus::{Kind, Text};
        let s = self.store.stats();
        let scrub = self.store.scrub_stats();
        let mut m = Text::new("backpack_node_");
        let (gets, puts) = (self.gets.snapshot(), self.puts.snapshot());
        m.family(
            "requests_total",
            Kind::Counter,
            "Files sent whole (get) and stored (put).",
        )
        .sample(&[("op", "get")], gets.count)
        .sample(&[("op", "put")], puts.count);
        m.family(
            "request_bytes_total",
            Kind::Counter,
            "Bytes of the files sent whole and stored.",
        )
        .sample(&[("op", "get")], gets.bytes)
        .sample(&[("op", "put")], puts.bytes);
        let counters = [
            (
                "abandoned_uploads_total",
                "Uploads not stored: the client left before the answer.",
                self.abandoned_uploads.load(Ordering::Relaxed),
            ),
            (
                "connections_refused_total",
                "Connections answered 503 over --max-connections.",
                self.connections.refused.load(Ordering::Relaxed),
            ),
            (
                "slow_readers_cut_total",
                "Downloads cut under --send-min-rate.",
                self.slow_readers.load(Ordering::Relaxed),
            ),
            (
                "scrub_passes_total",
                "Whole scrub passes over every volume since start.",
                scrub.passes,
            ),
            (
                "scrub_damaged_total",
                "Damaged records the scrub found since start (each once); they are no longer served.",
                scrub.damaged,
            ),
        ];
        for (name, help, v) in counters {
            m.one(name, Kind::Counter, help, v);
        }
        let gauges = [
            ("files", "Files held (current copies).", s.files),
            ("stored_bytes", "Bytes of the files held.", s.bytes_stored),
            ("volumes", "Volume files.", s.volumes),
            (
                "volume_bytes",
                "Bytes of the volume files, older copies included.",
                s.volume_bytes,
            ),
            (
                "free_disk_bytes",
                "Free bytes on the data directory's file system.",
                s.free_disk_bytes,
            ),
            (
                "index_bytes",
                "Bytes of the in-memory index.",
                s.index_bytes,
            ),
            (
                "scrub_rate_bytes_per_second",
                "--scrub-rate in bytes per second (0: the scrub is off).",
                scrub.rate_bytes_per_sec,
            ),
            (
                "scrub_pass_checked_bytes",
                "Bytes the scrub pass under way has read.",
                scrub.bytes_checked,
            ),
        ];
        for (name, help, v) in gauges {
            m.one(name, Kind::Gauge, help, v);
        }
        m.maybe(
            "scrub_last_pass_seconds",
            Kind::Gauge,
            "When the last whole scrub pass ended, seconds since the Unix epoch.",
            scrub.last_pass_ms.map(|ms| ms / 1000),
        );
        m.finish()
    }
}
