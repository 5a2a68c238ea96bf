//! The API's errors: every answer but a success goes through [`ApiError`],
//! whose message (JSON `{"error": "..."}`) names what went wrong and the
//! fix, and whose status says whose mistake it is: 4xx the client's, 5xx
//! ours or the cluster's (those are also logged).

use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

use backpack_shared::model::name::NameError;

use super::body::BodyError;
use super::nodes::Attempt;
use super::response::{Body, json_response};
use crate::raw_target::HeadError;

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
        "all {max} upload slots are busy (--max-uploads); retry in a moment (Retry-After) or on another coordinator"
    )]
    Busy { max: usize },
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
    #[error("{}", not_satisfiable(.name, .range, *.len))]
    RangeNotSatisfiable {
        name: String,
        /// The `Range` asked for.
        range: String,
        /// The file's length in bytes, when the node said.
        len: Option<u64>,
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

/// A range past a file's end, with the ranges that would be answered.
fn not_satisfiable(name: &str, range: &str, len: Option<u64>) -> String {
    match len {
        Some(0) => format!("{range} is outside {name}: it is empty; read it without Range"),
        Some(len) => format!(
            "{range} is outside {name} ({len} bytes): ask for bytes within 0-{}, or read it without Range",
            len - 1
        ),
        None => format!("{range} is outside {name}: read it without Range to learn its length"),
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
            ApiError::BadHead(HeadError::LengthTooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadHead(_) => StatusCode::BAD_REQUEST,
            ApiError::LostRequestLine => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Body(BodyError::Stalled(_) | BodyError::TooSlow { .. }) => {
                StatusCode::REQUEST_TIMEOUT
            }
            ApiError::Body(BodyError::Spill { .. }) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Body(BodyError::NoSpillRoom { .. }) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::NotReady
            | ApiError::ShuttingDown
            | ApiError::Busy { .. }
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
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn into_response(self, head: bool) -> Response<Body> {
        let status = self.status();
        let self_busy = matches!(
            self,
            ApiError::Busy { .. } | ApiError::Body(BodyError::NoSpillRoom { .. })
        );
        // Capacity refusals are counted in /metrics; one log line each
        // would flood the log exactly when the daemon is busiest.
        let capacity = matches!(
            self,
            ApiError::Busy { .. } | ApiError::Body(BodyError::NoSpillRoom { .. })
        );
        if status.is_server_error() && !capacity {
            tracing::error!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let mut resp = json_response(
            status,
            &serde_json::json!({ "error": self.to_string() }),
            head,
        );
        if self_busy {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
        }
        resp
    }
}
