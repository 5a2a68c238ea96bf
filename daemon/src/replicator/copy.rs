//! One copy: stream `GET http://src/<name>` into `PUT http://dst/<name>`.
//!
//! The body goes through as it arrives (never the whole file in memory),
//! with the source's Content-Length and `X-Backpack-Time`, and its length
//! is counted on the way: a source that sends less or more than it
//! announced fails the copy instead of storing a truncated file.
//!
//! Requests go through the one [`NodeClient`] (shared with the
//! coordinator), so the name reaches both nodes byte for byte. A task
//! whose `path` is not a valid [`Name`] (pushed by an original coordinator
//! or by hand) is a dead letter at once: our coordinator never queues one.
//!
//! Every wait is bounded by [`READ_TIMEOUT`] of no progress, not by a
//! total time, so a large file copies at whatever pace the nodes keep:
//! the source's answer and each piece of its body, the destination taking
//! each piece and answering once the body is sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backpack_shared::model::{HostPort, Name, NameError, ReplicationTask, ServersMap};
use bytes::Bytes;
use futures::Stream;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::StatusCode;
use hyper::body::{Frame, Incoming};
use hyper::header::CONTENT_LENGTH;
use rand::seq::SliceRandom;

use crate::node_client::{NodeClient, TIME_HEADER, Versioning, answered};

/// How long to wait for a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a copy may make no progress (an answer, a piece of the body)
/// before it fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of a replicator (and of the benchmark's plain copy).
pub fn client() -> NodeClient {
    NodeClient::new(CONNECT_TIMEOUT)
}

/// Why one copy from one source failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CopyError {
    #[error("not found on {node} (404)")]
    NotFound { node: String },
    #[error("GET from {node} failed: {detail}")]
    Source { node: String, detail: String },
    #[error("PUT to {node} failed: {detail}")]
    Destination {
        node: String,
        detail: String,
        /// The node is to blame (unreachable, 5xx, stalled), not this
        /// task: its other tasks would fail too.
        down: bool,
    },
}

impl CopyError {
    /// Failures of the destination: another source would not help.
    pub fn is_destination(&self) -> bool {
        matches!(self, CopyError::Destination { .. })
    }
}

/// Why a whole task failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TaskError {
    #[error("not a replication task ({0}); it can never be copied")]
    Undecodable(String),
    #[error(
        "destination server id {0:?} is not in servers-map; add it with backpack-coordinator-add-server"
    )]
    UnknownDestination(String),
    #[error("the task lists no source node")]
    NoSources,
    #[error(
        "the task's path {path:?} is not a file name our coordinator accepts ({error}); it was not queued by it (an original coordinator or backpack-replicator-push?): copy it by hand if it must be kept"
    )]
    BadName { path: String, error: NameError },
    #[error("{0}")]
    Destination(CopyError),
    #[error("no source could give the file: {}", .errors.join("; "))]
    AllSourcesFailed {
        errors: Vec<String>,
        /// Every source answered 404: the file is on none of them.
        missing_everywhere: bool,
    },
}

impl TaskError {
    /// The destination node itself failed (see [`CopyError::Destination`]).
    pub fn destination_down(&self) -> bool {
        matches!(
            self,
            TaskError::Destination(CopyError::Destination { down: true, .. })
        )
    }

    /// The file is on no source: retried `max_attempts` times (it may be a
    /// task for a file that was never stored), then a dead letter.
    pub fn missing_everywhere(&self) -> bool {
        matches!(
            self,
            TaskError::AllSourcesFailed {
                missing_everywhere: true,
                ..
            }
        )
    }

    /// Errors that no retry can fix: the task goes to the dead-letter set
    /// at once.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TaskError::Undecodable(_) | TaskError::NoSources | TaskError::BadName { .. }
        )
    }
}

/// Where a copy stands, shared by the body stream and the watchdog.
#[derive(Default)]
struct Progress {
    /// Milliseconds from the copy's start of the last progress.
    last_ms: AtomicU64,
    /// Waiting on the source for the next piece (its own timer runs).
    on_source: AtomicBool,
    /// What the source did wrong, if it did.
    fault: Mutex<Option<String>>,
}

/// The source's body, counted: errors when it ends short of or runs past
/// the announced length, or stalls; records the source's fault so the
/// failed PUT is blamed on the right node.
struct Counted {
    inner: BodyStream<Incoming>,
    expected: u64,
    got: u64,
    started: Instant,
    progress: Arc<Progress>,
    stall: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Counted {
    fn moved(&mut self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.progress.last_ms.store(ms, Ordering::Relaxed);
        self.stall
            .as_mut()
            .reset(tokio::time::Instant::now() + READ_TIMEOUT);
    }

    fn fail(&mut self, why: String) -> Poll<Option<std::io::Result<Frame<Bytes>>>> {
        self.done = true;
        if let Ok(mut f) = self.progress.fault.lock() {
            *f = Some(why.clone());
        }
        Poll::Ready(Some(Err(std::io::Error::other(why))))
    }
}

impl Stream for Counted {
    type Item = std::io::Result<Frame<Bytes>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        self.progress
            .on_source
            .store(polled.is_pending(), Ordering::Relaxed);
        match polled {
            Poll::Pending => {
                if self.stall.as_mut().poll(cx).is_ready() {
                    let got = self.got;
                    return self.fail(format!(
                        "body stalled for {READ_TIMEOUT:?} after {got} bytes"
                    ));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.moved();
                let Ok(chunk) = frame.into_data() else {
                    // Trailers: nothing to count or send.
                    return self.poll_next(cx);
                };
                self.got += chunk.len() as u64;
                if self.got > self.expected {
                    let (got, expected) = (self.got, self.expected);
                    return self.fail(format!(
                        "sent more than its Content-Length ({got} > {expected} bytes)"
                    ));
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                let got = self.got;
                self.fail(format!("body broken after {got} bytes: {e}"))
            }
            Poll::Ready(None) => {
                self.moved();
                if self.got < self.expected {
                    let (got, expected) = (self.got, self.expected);
                    return self.fail(format!("body ended after {got} of {expected} bytes"));
                }
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}

/// Resolves when the copy made no progress for [`READ_TIMEOUT`] while not
/// waiting on the source: the destination stopped taking the body or
/// answering.
async fn destination_stalled(progress: &Progress, started: Instant) {
    loop {
        tokio::time::sleep(READ_TIMEOUT / 4).await;
        let idle = started.elapsed().saturating_sub(Duration::from_millis(
            progress.last_ms.load(Ordering::Relaxed),
        ));
        if idle >= READ_TIMEOUT && !progress.on_source.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// Copies `name` from `src` to `dst`; returns the bytes copied. `src_name`
/// and `dst_name` label the nodes in errors (e.g. `1 (one:10001)`).
pub async fn copy_file(
    client: &NodeClient,
    (src_name, src): (&str, &HostPort),
    (dst_name, dst): (&str, &HostPort),
    name: &Name,
) -> Result<u64, CopyError> {
    let source = |detail: String| CopyError::Source {
        node: src_name.to_string(),
        detail,
    };
    let destination = |detail: String, down: bool| CopyError::Destination {
        node: dst_name.to_string(),
        detail,
        down,
    };
    let resp = match tokio::time::timeout(READ_TIMEOUT, client.get(src, name, false)).await {
        Ok(r) => r.map_err(|e| source(e.detail))?,
        Err(_) => return Err(source(format!("no answer within {READ_TIMEOUT:?}"))),
    };
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(CopyError::NotFound {
                node: src_name.to_string(),
            });
        }
        status => {
            let text = tokio::time::timeout(Duration::from_secs(1), resp.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(source(answered(status, &text)));
        }
    }
    let len = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| source("answer has no Content-Length".into()))?;
    // An original node gives no time: the destination then versions the
    // copy as a new upload, as before.
    let versioning = match resp.headers().get(TIME_HEADER) {
        Some(t) => Versioning::Copy(t.clone()),
        None => Versioning::Assign { after: None },
    };
    let started = Instant::now();
    let progress = Arc::new(Progress::default());
    let body = Counted {
        inner: BodyStream::new(resp.into_body()),
        expected: len,
        got: 0,
        started,
        progress: progress.clone(),
        stall: Box::pin(tokio::time::sleep(READ_TIMEOUT)),
        done: false,
    };
    let put = client.put(
        dst,
        name,
        len,
        versioning,
        StreamBody::new(body).boxed_unsync(),
    );
    let sent = tokio::select! {
        r = put => Some(r),
        _ = destination_stalled(&progress, started) => None,
    };
    let source_fault = progress.fault.lock().ok().and_then(|f| f.clone());
    if let Some(why) = source_fault {
        return Err(source(why));
    }
    match sent {
        Some(Ok(_)) => Ok(len),
        Some(Err(e)) => Err(destination(e.detail, e.node_fault)),
        None => Err(destination(
            format!("took no part of the body or gave no answer for {READ_TIMEOUT:?}"),
            true,
        )),
    }
}

/// `id (host:port)`, how errors name a node.
fn label(id: &str, addr: &HostPort) -> String {
    format!("{id} ({addr})")
}

/// Carries out a task: a random source first, the others after it when a
/// source fails; a failing destination ends the attempt.
pub async fn replicate(
    client: &NodeClient,
    servers: &ServersMap,
    task: &ReplicationTask,
) -> Result<u64, TaskError> {
    let name = Name::parse(task.path.as_bytes()).map_err(|error| TaskError::BadName {
        path: task.path.clone(),
        error,
    })?;
    let dst = servers
        .get(&task.to)
        .ok_or_else(|| TaskError::UnknownDestination(task.to.clone()))?;
    if task.from.is_empty() {
        return Err(TaskError::NoSources);
    }
    let dst_label = label(&task.to, dst);
    let mut sources: Vec<&String> = task.from.iter().collect();
    sources.shuffle(&mut rand::rng());
    let mut errors = Vec::new();
    let mut missing_everywhere = true;
    for id in sources {
        let Some(src) = servers.get(id) else {
            errors.push(format!("{id}: unknown server id (not in servers-map)"));
            missing_everywhere = false;
            continue;
        };
        match copy_file(client, (&label(id, src), src), (&dst_label, dst), &name).await {
            Ok(n) => return Ok(n),
            Err(e) if e.is_destination() => return Err(TaskError::Destination(e)),
            Err(e) => {
                missing_everywhere &= matches!(e, CopyError::NotFound { .. });
                errors.push(e.to_string());
            }
        }
    }
    Err(TaskError::AllSourcesFailed {
        errors,
        missing_everywhere,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors() {
        assert!(TaskError::Undecodable("x".into()).is_permanent());
        let bad = TaskError::BadName {
            path: "/a/../b".into(),
            error: NameError::DotSegment,
        };
        assert!(bad.is_permanent());
        assert!(
            bad.to_string()
                .contains("not a file name our coordinator accepts")
        );
        assert!(!TaskError::UnknownDestination("4".into()).is_permanent());
        assert!(
            !TaskError::AllSourcesFailed {
                errors: vec![],
                missing_everywhere: true
            }
            .is_permanent()
        );
    }
}
