//! Writing an upload to the storage nodes of its shard.
//!
//! One pooled HTTP/1.1 client for every node, connections kept alive and
//! not capped per node (the original's cap of 5 per node is what held it
//! at a sixth of a node's speed). It is hyper's own client rather than
//! reqwest because reqwest re-encodes request paths through the `url`
//! crate (`'` in a query, `"`, `{`...), and the name must reach the node
//! byte for byte.
//!
//! Nodes are tried in random order until one answers 201 or 204; a node
//! that failed (no connection, 5xx, timeout) in the last few seconds goes
//! to the end of the order, so one dead node costs one failed attempt per
//! few seconds instead of one per upload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backpack_shared::model::HostPort;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::seq::SliceRandom;

use super::body::Held;

/// Header carrying the upload's time (ms since the Unix epoch) to the node.
pub const TIME_HEADER: &str = "x-backpack-time";

type NodeBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// The client and what it remembers of failing nodes.
pub struct Nodes {
    client: Client<HttpConnector, NodeBody>,
    timeout: Duration,
    retry_after: Duration,
    failed: Mutex<HashMap<HostPort, Instant>>,
}

/// One failed attempt, for the 502 answer and the log.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub addr: HostPort,
    pub error: String,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node {} ({}): {}", self.id, self.addr, self.error)
    }
}

impl Nodes {
    /// `timeout` bounds one attempt (send and answer); `retry_after` is how
    /// long a failed node goes to the back of the order.
    pub fn new(connect_timeout: Duration, timeout: Duration, retry_after: Duration) -> Nodes {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Nodes {
            client,
            timeout,
            retry_after,
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostPort, Instant>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Random order, nodes that failed lately last.
    pub fn order(&self, mut nodes: Vec<(String, HostPort)>) -> Vec<(String, HostPort)> {
        nodes.shuffle(&mut rand::rng());
        let failed = self.failed_lock();
        let recent = |addr: &HostPort| {
            failed
                .get(addr)
                .is_some_and(|t| t.elapsed() < self.retry_after)
        };
        // Stable: keeps the random order within each group.
        nodes.sort_by_key(|(_, addr)| recent(addr));
        nodes
    }

    /// Writes the body to the first node that takes it; returns that
    /// node's id, or every attempt's failure.
    pub async fn write(
        &self,
        nodes: Vec<(String, HostPort)>,
        name: &str,
        body: &Held,
        time_ms: u64,
        on_fail: impl Fn(&Attempt),
    ) -> Result<String, Vec<Attempt>> {
        let mut attempts = Vec::new();
        for (id, addr) in self.order(nodes) {
            match self.put(&addr, name, body, time_ms).await {
                Ok(()) => {
                    self.failed_lock().remove(&addr);
                    return Ok(id);
                }
                Err((error, node_fault)) => {
                    if node_fault {
                        self.failed_lock().insert(addr.clone(), Instant::now());
                    }
                    let a = Attempt { id, addr, error };
                    on_fail(&a);
                    attempts.push(a);
                }
            }
        }
        Err(attempts)
    }

    /// One PUT. The error says whether the node is to blame (to be
    /// skipped for a while) or just refused this upload (4xx).
    async fn put(
        &self,
        addr: &HostPort,
        name: &str,
        body: &Held,
        time_ms: u64,
    ) -> Result<(), (String, bool)> {
        let authority = addr.url();
        let authority = authority.strip_prefix("http://").unwrap_or(&authority);
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(name)
            .build()
            .map_err(|e| (format!("cannot make a request to it: {e}"), false))?;
        let req = Request::builder()
            .method(Method::PUT)
            .uri(uri)
            .header(header::CONTENT_LENGTH, HeaderValue::from(body.len()))
            .header(TIME_HEADER, HeaderValue::from(time_ms))
            .body(node_body(body))
            .map_err(|e| (format!("cannot make a request to it: {e}"), false))?;
        let attempt = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| (describe(&e), true))?;
            let status = resp.status();
            // Read the answer to the end so the connection goes back to the pool.
            let text = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            match status {
                StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(()),
                s => {
                    let text = String::from_utf8_lossy(&text[..text.len().min(300)])
                        .trim()
                        .to_string();
                    Err((format!("answered {s} {text}"), s.is_server_error()))
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err((
                format!("no answer within {:?} (--node-timeout)", self.timeout),
                true,
            )),
        }
    }
}

impl Nodes {
    /// Asks one node for a file (GET, or HEAD for `head`): the answer once
    /// its headers arrived (the body streams after), or why the node is to
    /// blame. A node that fails goes to the back of the order for a while.
    pub async fn get(
        &self,
        addr: &HostPort,
        name: &str,
        head: bool,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let authority = addr.url();
        let authority = authority.strip_prefix("http://").unwrap_or(&authority);
        let req = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(name)
            .build()
            .map_err(|e| format!("cannot make a request to it: {e}"))
            .and_then(|uri| {
                Request::builder()
                    .method(if head { Method::HEAD } else { Method::GET })
                    .uri(uri)
                    .body(
                        Full::new(Bytes::new())
                            .map_err(|never| match never {})
                            .boxed_unsync(),
                    )
                    .map_err(|e| format!("cannot make a request to it: {e}"))
            })?;
        let result = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) if !resp.status().is_server_error() => Ok(resp),
            Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!(
                "no answer within {:?} (--node-timeout)",
                self.timeout
            )),
        };
        match &result {
            Ok(_) => {
                self.failed_lock().remove(addr);
            }
            Err(_) => {
                self.failed_lock().insert(addr.clone(), Instant::now());
            }
        }
        result
    }
}

/// The most telling part of a client error (the source chain).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

fn node_body(held: &Held) -> NodeBody {
    match held {
        Held::Memory { chunks, .. } if chunks.len() == 1 => Full::new(chunks[0].clone())
            .map_err(|never| match never {})
            .boxed_unsync(),
        Held::Memory { chunks, .. } => {
            // Each piece as received, written with one writev; the
            // Content-Length header gives hyper the length.
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
                chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
            StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
        }
        Held::File { file, len } => {
            let file = Arc::clone(file);
            let len = *len;
            let chunks = futures::stream::unfold(0u64, move |offset| {
                let file = Arc::clone(&file);
                async move {
                    if offset >= len {
                        return None;
                    }
                    let n = (len - offset).min(super::body::CHUNK as u64) as usize;
                    let read = tokio::task::spawn_blocking(move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0u8; n];
                        file.read_exact_at(&mut buf, offset).map(|()| buf)
                    })
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                    match read {
                        Ok(buf) => Some((Ok(Frame::data(Bytes::from(buf))), offset + n as u64)),
                        Err(e) => Some((Err(e), len)),
                    }
                }
            });
            StreamBody::new(chunks).boxed_unsync()
        }
    }
}
