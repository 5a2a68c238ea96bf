//! One copy: stream `GET http://src/<path>` into `PUT http://dst/<path>`.
//!
//! The body goes through as it arrives (never the whole file in memory),
//! with the source's Content-Length and `X-Backpack-Time`, and its length
//! is counted on the way: a source that sends less or more than it
//! announced fails the copy instead of storing a truncated file.
//!
//! One [`reqwest::Client`] serves every worker. hyper's pool has no cap per
//! host, so GETs to one node and PUTs to another never wait on each other
//! for a connection (the original's fixed-size agents deadlock that way at
//! concurrency 32); idle connections are kept for reuse.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backpack_shared::model::{HostPort, ReplicationTask, ServersMap};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use reqwest::header::CONTENT_LENGTH;

use crate::node::TIME_HEADER;

/// How long to wait for a TCP connection to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one read may stall (headers or body) before the copy fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP client of a replicator (and of the benchmark's plain copy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        // Storage nodes are addressed directly; an HTTP_PROXY in the
        // environment must not reroute them.
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(usize::MAX)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Only TLS or resolver set-up can fail, and we use neither.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Why one copy from one source failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CopyError {
    #[error("not found on {node} (404)")]
    NotFound { node: String },
    #[error("GET from {node} failed: {detail}")]
    Source { node: String, detail: String },
    #[error("PUT to {node} failed: {detail}")]
    Destination { node: String, detail: String },
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
        "name {0:?} cannot be sent verbatim through the HTTP client (it would be normalized); copy it by hand"
    )]
    Unrepresentable(String),
    #[error("{0}")]
    Destination(CopyError),
    #[error("no source could give the file: {}", .0.join("; "))]
    AllSourcesFailed(Vec<String>),
}

impl TaskError {
    /// Errors that no retry can fix: the task goes to the dead-letter set
    /// at once.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TaskError::Undecodable(_) | TaskError::NoSources | TaskError::Unrepresentable(_)
        )
    }
}

/// The URL of `path` on `node`, refused when the URL parser would change
/// the name (dot segments, characters it escapes): the destination must
/// store the file under exactly the name the source has.
pub fn file_url(node: &HostPort, path: &str) -> Option<reqwest::Url> {
    if !path.starts_with('/') {
        return None;
    }
    let url = reqwest::Url::parse(&format!("{}{path}", node.url())).ok()?;
    let (p, q) = (url.path(), url.query());
    let same = match path.split_once('?') {
        Some((rp, rq)) => p == rp && q == Some(rq),
        None => p == path && q.is_none(),
    };
    (same && url.fragment().is_none()).then_some(url)
}

/// Where the counting stream noticed the source misbehave.
type SourceFault = Arc<Mutex<Option<String>>>;

/// The source's body, counted: errors when it ends short of or runs past
/// the announced length, and records the source-side fault so the failed
/// PUT is blamed on the right node.
struct Counted {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    expected: u64,
    got: u64,
    fault: SourceFault,
    done: bool,
}

impl Counted {
    fn fail(&mut self, why: String) -> Poll<Option<std::io::Result<Bytes>>> {
        self.done = true;
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(why.clone());
        }
        Poll::Ready(Some(Err(std::io::Error::other(why))))
    }
}

impl Stream for Counted {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.got += chunk.len() as u64;
                if self.got > self.expected {
                    let (got, expected) = (self.got, self.expected);
                    return self.fail(format!(
                        "sent more than its Content-Length ({got} > {expected} bytes)"
                    ));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let got = self.got;
                self.fail(format!("body broken after {got} bytes: {e}"))
            }
            Poll::Ready(None) => {
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

fn describe(e: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the
    // chain says "connection refused" or "operation timed out".
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn error_body(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.trim().chars().take(200).collect();
    if text.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

/// Copies `path` from `src` to `dst`; returns the bytes copied. `src_name`
/// and `dst_name` label the nodes in errors (e.g. `1 (one:10001)`).
pub async fn copy_file(
    client: &reqwest::Client,
    (src_name, src): (&str, &HostPort),
    (dst_name, dst): (&str, &HostPort),
    path: &str,
) -> Result<u64, CopyError> {
    let source = |detail: String| CopyError::Source {
        node: src_name.to_string(),
        detail,
    };
    let destination = |detail: String| CopyError::Destination {
        node: dst_name.to_string(),
        detail,
    };
    let get_url = file_url(src, path).ok_or_else(|| source("name not representable".into()))?;
    let put_url =
        file_url(dst, path).ok_or_else(|| destination("name not representable".into()))?;

    let resp = client
        .get(get_url)
        .send()
        .await
        .map_err(|e| source(describe(&e)))?;
    match resp.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => {
            return Err(CopyError::NotFound {
                node: src_name.to_string(),
            });
        }
        _ => return Err(source(error_body(resp).await)),
    }
    let len = resp
        .content_length()
        .ok_or_else(|| source("answer has no Content-Length".into()))?;
    let time = resp.headers().get(TIME_HEADER).cloned();
    let fault: SourceFault = Arc::default();
    let body = Counted {
        inner: Box::pin(resp.bytes_stream()),
        expected: len,
        got: 0,
        fault: fault.clone(),
        done: false,
    };
    let mut put = client
        .put(put_url)
        .header(CONTENT_LENGTH, len)
        .body(reqwest::Body::wrap_stream(body));
    if let Some(t) = time {
        put = put.header(TIME_HEADER, t);
    }
    let sent = put.send().await;
    let source_fault = fault.lock().ok().and_then(|f| f.clone());
    if let Some(why) = source_fault {
        return Err(source(why));
    }
    let resp = sent.map_err(|e| destination(describe(&e)))?;
    match resp.status() {
        StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(len),
        _ => Err(destination(error_body(resp).await)),
    }
}

/// `id (host:port)`, how errors name a node.
fn label(id: &str, addr: &HostPort) -> String {
    format!("{id} ({addr})")
}

/// Carries out a task: a random source first, the others after it when a
/// source fails; a failing destination ends the attempt.
pub async fn replicate(
    client: &reqwest::Client,
    servers: &ServersMap,
    task: &ReplicationTask,
) -> Result<u64, TaskError> {
    let dst = servers
        .get(&task.to)
        .ok_or_else(|| TaskError::UnknownDestination(task.to.clone()))?;
    if task.from.is_empty() {
        return Err(TaskError::NoSources);
    }
    if file_url(dst, &task.path).is_none() {
        return Err(TaskError::Unrepresentable(task.path.clone()));
    }
    let dst_label = label(&task.to, dst);
    let mut sources: Vec<&String> = task.from.iter().collect();
    sources.shuffle(&mut rand::rng());
    let mut errors = Vec::new();
    for id in sources {
        let Some(src) = servers.get(id) else {
            errors.push(format!("{id}: unknown server id (not in servers-map)"));
            continue;
        };
        match copy_file(
            client,
            (&label(id, src), src),
            (&dst_label, dst),
            &task.path,
        )
        .await
        {
            Ok(n) => return Ok(n),
            Err(e) if e.is_destination() => return Err(TaskError::Destination(e)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(TaskError::AllSourcesFailed(errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_through_verbatim_or_not_at_all() {
        let node = HostPort {
            host: "127.0.0.1".into(),
            port: 10001,
        };
        fn check(node: &HostPort, path: &str, verbatim: bool) {
            assert_eq!(file_url(node, path).is_some(), verbatim, "{path}");
        }
        check(&node, "/hi.txt", true);
        check(&node, "/photos/2026/11/a8f3.jpg", true);
        check(&node, "/a%20b?x=1&y=%22", true);
        check(&node, "/x?", true);
        check(&node, "/a/../b", false);
        check(&node, "/a/./b", false);
        check(&node, "/%2e%2e/b", false);
        check(&node, "/a b", false);
        check(&node, "/a#b", false);
        check(&node, "no-slash", false);
    }

    #[test]
    fn ipv6_nodes() {
        let node = HostPort {
            host: "::1".into(),
            port: 8080,
        };
        assert_eq!(
            file_url(&node, "/f").map(|u| u.to_string()),
            Some("http://[::1]:8080/f".into())
        );
    }

    #[test]
    fn permanent_errors() {
        assert!(TaskError::Undecodable("x".into()).is_permanent());
        assert!(TaskError::Unrepresentable("/a/../b".into()).is_permanent());
        assert!(!TaskError::UnknownDestination("4".into()).is_permanent());
        assert!(!TaskError::AllSourcesFailed(vec![]).is_permanent());
    }
}
