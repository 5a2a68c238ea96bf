//! Writing an upload to the storage nodes of its shard, and reading a
//! file from them, through the one [`NodeClient`].
//!
//! Nodes are tried in the name's rendezvous order
//! ([`backpack_shared::model::rendezvous_order`]) until one answers 201 or
//! 204, so that uploads of one name through any coordinator meet on one
//! node, which gives each a version later than the copy it holds (the
//! coordinator sends none: its clock does not matter). A node that failed
//! (no connection, 5xx, timeout) in the last few seconds goes to the end
//! of the order, so one dead node costs one failed attempt per few seconds
//! instead of one per upload. A node that timed out costs each request
//! that tries it the whole timeout, so its back-off doubles with each
//! timeout in a row, from twice `--node-retry-after` up to
//! [`MAX_BACK_OFF`]; any answer ends it. Reads use the same order: the first node is
//! the one most likely to hold the newest copy.
//!
//! Before a write, the other nodes of the shard are asked in parallel
//! (HEAD, while the body is still arriving) which version they hold
//! ([`Nodes::probe`]); the newest goes to the writing node in
//! `X-Backpack-After`, so a copy that reached only another node (written
//! while the first node was down, or with a clock ahead) is still
//! overtaken by a later upload. An upload stored off the first node, or
//! without an answer from every other node, is counted: it is ordered by
//! node clocks only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backpack_shared::model::{HostPort, Name, Version, rendezvous_order};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use super::body::Held;
use crate::node_client::{NodeBody, NodeClient, Versioning, version_of};

/// The longest a node that keeps timing out stays at the back of the order.
pub const MAX_BACK_OFF: Duration = Duration::from_secs(60);

/// The client and what it remembers of failing nodes.
pub struct Nodes {
    client: NodeClient,
    timeout: Duration,
    probe_timeout: Duration,
    read_timeout: Duration,
    retry_after: Duration,
    failed: Mutex<HashMap<HostPort, Failed>>,
}

/// A node's last failure: when, and how long it stays at the back.
#[derive(Debug, Clone, Copy)]
struct Failed {
    at: Instant,
    back_off: Duration,
}

/// How a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Refused, reset or answered 5xx: known at once.
    Quick,
    /// No answer within the timeout: each try costs the whole timeout.
    TimedOut,
}

/// Where an upload was stored.
#[derive(Debug, Clone)]
pub struct Written {
    /// The node's id.
    pub node: String,
    /// It is the first of the name's order: the node that versions every
    /// upload of the name, so this upload is ordered after every earlier
    /// upload of the name that node answered.
    pub on_first: bool,
    /// The version the node assigned (`None` from an original node).
    pub version: Option<Version>,
}

/// What the other nodes of a shard hold of a name, asked before a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The nodes asked: all but the first of the order at the time.
    pub asked: Vec<String>,
    /// The newest time (ms) among their copies; `None` if none has one.
    pub newest: Option<u64>,
    /// Those that gave no version: down, failed lately (not asked), timed
    /// out, answered 5xx, or an original node (no `X-Backpack-Time`).
    pub unanswered: Vec<String>,
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
    /// `timeout` bounds one write (send and answer); `probe_timeout` one
    /// version probe; `read_timeout` a read's wait for the answer to begin;
    /// `retry_after` is how long a failed node goes to the back of the order.
    pub fn new(
        connect_timeout: Duration,
        timeout: Duration,
        probe_timeout: Duration,
        read_timeout: Duration,
        retry_after: Duration,
    ) -> Nodes {
        Nodes {
            client: NodeClient::new(connect_timeout),
            timeout,
            probe_timeout,
            read_timeout,
            retry_after,
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostPort, Failed>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_failed(&self, addr: &HostPort, how: Failure) {
        let mut failed = self.failed_lock();
        let back_off = match (how, failed.get(addr)) {
            (Failure::Quick, _) => self.retry_after,
            (Failure::TimedOut, Some(f)) if f.back_off > self.retry_after => f.back_off * 2,
            (Failure::TimedOut, _) => self.retry_after * 2,
        };
        let back_off = back_off.min(MAX_BACK_OFF.max(self.retry_after));
        if how == Failure::TimedOut {
            tracing::warn!(node = %addr, back_off_secs = back_off.as_secs(), "storage node timed out; it is asked last meanwhile");
        }
        failed.insert(
            addr.clone(),
            Failed {
                at: Instant::now(),
                back_off,
            },
        );
    }

    fn answered(&self, addr: &HostPort) {
        self.failed_lock().remove(addr);
    }

    /// The name's rendezvous order, nodes that failed lately last.
    pub fn order(&self, name: &Name, nodes: Vec<(String, HostPort)>) -> Vec<(String, HostPort)> {
        let mut ids: Vec<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
        rendezvous_order(name.as_str(), &mut ids);
        let mut nodes: Vec<(String, HostPort)> = ids
            .iter()
            .filter_map(|id| nodes.iter().find(|(n, _)| n == id).cloned())
            .collect();
        let failed = self.failed_lock();
        let recent = |addr: &HostPort| {
            failed
                .get(addr)
                .is_some_and(|f| f.at.elapsed() < f.back_off)
        };
        // Stable: keeps the rendezvous order within each group.
        nodes.sort_by_key(|(_, addr)| recent(addr));
        nodes
    }

    fn failed_lately(&self, addr: &HostPort) -> bool {
        self.failed_lock()
            .get(addr)
            .is_some_and(|f| f.at.elapsed() < f.back_off)
    }

    /// Asks every node of `nodes` but the first of the order (the one the
    /// upload will go to) for the version it holds of `name`, in parallel,
    /// each within the probe timeout. Nodes that failed lately are not
    /// asked (they count as unanswered); one that fails the probe (no
    /// connection, timeout, 5xx) is marked failed like a failed write.
    pub async fn probe(&self, name: &Name, nodes: Vec<(String, HostPort)>) -> Probe {
        let others: Vec<_> = self.order(name, nodes).into_iter().skip(1).collect();
        let asks = others.iter().map(|(id, addr)| async move {
            if self.failed_lately(addr) {
                return (id, Err(()));
            }
            let head = tokio::time::timeout(self.probe_timeout, self.client.get(addr, name, true));
            let said = match head.await {
                Ok(Ok(resp)) if resp.status() == hyper::StatusCode::NOT_FOUND => Ok(None),
                Ok(Ok(resp)) if resp.status() == hyper::StatusCode::OK => {
                    // An original node says no version.
                    version_of(resp.headers())
                        .map(|v| Some(v.time_ms))
                        .ok_or(())
                }
                Ok(Ok(resp)) if !resp.status().is_server_error() => Err(()),
                // Unreachable, hung or failing: not asked again (nor
                // written to first) for a while, like a failed write.
                Err(_) => {
                    self.mark_failed(addr, Failure::TimedOut);
                    Err(())
                }
                _ => {
                    self.mark_failed(addr, Failure::Quick);
                    Err(())
                }
            };
            (id, said)
        });
        let mut probe = Probe::default();
        for (id, said) in futures::future::join_all(asks).await {
            probe.asked.push(id.clone());
            match said {
                Ok(t) => probe.newest = probe.newest.max(t),
                Err(()) => probe.unanswered.push(id.clone()),
            }
        }
        probe
    }

    /// Writes the body to the first node that takes it; returns that
    /// node, or every attempt's failure.
    pub async fn write(
        &self,
        nodes: Vec<(String, HostPort)>,
        name: &Name,
        body: &Held,
        after: Option<u64>,
        on_fail: impl Fn(&Attempt),
    ) -> Result<Written, Vec<Attempt>> {
        let mut attempts = Vec::new();
        let mut ids: Vec<String> = nodes.iter().map(|(id, _)| id.clone()).collect();
        rendezvous_order(name.as_str(), &mut ids);
        let first = ids.first().cloned();
        for (id, addr) in self.order(name, nodes) {
            let put = self.client.put(
                &addr,
                name,
                body.len(),
                Versioning::Assign { after },
                node_body(body),
            );
            let result = match tokio::time::timeout(self.timeout, put).await {
                Ok(r) => r.map_err(|e| (e.detail, e.node_fault.then_some(Failure::Quick))),
                Err(_) => Err((
                    format!("no answer within {:?} (--node-timeout)", self.timeout),
                    Some(Failure::TimedOut),
                )),
            };
            match result {
                Ok(version) => {
                    self.answered(&addr);
                    let on_first = first.as_ref() == Some(&id);
                    return Ok(Written {
                        node: id,
                        on_first,
                        version,
                    });
                }
                Err((error, fault)) => {
                    if let Some(how) = fault {
                        self.mark_failed(&addr, how);
                    }
                    let a = Attempt { id, addr, error };
                    on_fail(&a);
                    attempts.push(a);
                }
            }
        }
        Err(attempts)
    }

    /// Asks one node for a file (GET, or HEAD for `head`): the answer once
    /// its headers arrived (the body streams after), or why the node is to
    /// blame. A node that fails goes to the back of the order for a while.
    /// `extra`: request headers passed on (a reader's `Range`, `If-Range`).
    pub async fn get(
        &self,
        addr: &HostPort,
        name: &Name,
        head: bool,
        extra: &hyper::HeaderMap,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let answer = tokio::time::timeout(
            self.read_timeout,
            self.client.get_with(addr, name, head, extra),
        );
        let result = match answer.await {
            Ok(Ok(resp)) if !resp.status().is_server_error() => Ok(resp),
            Ok(Ok(resp)) => Err((format!("answered {}", resp.status()), Failure::Quick)),
            Ok(Err(e)) => Err((e.detail, Failure::Quick)),
            Err(_) => Err((
                format!(
                    "no answer within {:?} (--node-read-timeout-ms)",
                    self.read_timeout
                ),
                Failure::TimedOut,
            )),
        };
        match result {
            Ok(resp) => {
                self.answered(addr);
                Ok(resp)
            }
            Err((detail, how)) => {
                self.mark_failed(addr, how);
                Err(detail)
            }
        }
    }
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
        Held::File { file, len, .. } => {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn timeouts_in_a_row_double_the_back_off_up_to_the_cap() {
        let retry = Duration::from_secs(5);
        let s = Duration::from_secs(1);
        let nodes = Nodes::new(s, s, s, s, retry);
        let addr = HostPort::parse("127.0.0.1:9").unwrap();
        let back_off = |n: &Nodes| n.failed_lock()[&addr].back_off.as_secs();
        nodes.mark_failed(&addr, Failure::Quick);
        assert_eq!(back_off(&nodes), 5);
        let mut seen = Vec::new();
        for _ in 0..5 {
            nodes.mark_failed(&addr, Failure::TimedOut);
            seen.push(back_off(&nodes));
        }
        assert_eq!(seen, [10, 20, 40, 60, 60]);
        // A quick failure is retried soon again; an answer forgets it all.
        nodes.mark_failed(&addr, Failure::Quick);
        assert_eq!(back_off(&nodes), 5);
        nodes.answered(&addr);
        assert!(nodes.failed_lock().is_empty());
    }
}
