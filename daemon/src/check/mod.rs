//! Checking a shard: does every node of it hold every file of the shard,
//! at the newest version? And, on request, queuing the copies that make it
//! whole again (issue 16).
//!
//! The key space of [`name_key`](backpack_shared::model::name_key) is cut
//! into pages sized so that a page holds about
//! [`CheckOptions::page_files`] files on the fullest node; each page is
//! listed by every node (`GET //files?from=&to=`, sorted by key and
//! name) and merged ([`merge`]). Memory is a page's listings, whatever the
//! shard's file count.
//!
//! Repair queues standard replication tasks (`{"from":[...],"to":..,
//! "path":..}`), from the nodes that hold the newest version to the node
//! that lacks it, so every replicator already running does the copying:
//! ours copies the source's current copy with its version (the node keeps
//! the newer of two). An original replicator copies without a version:
//! the receiving node then gives the copy a version of its own, newer than
//! the source's, and the next check sees the source as older and copies
//! back (same bytes; the versions converge). Pushes wait while the queue
//! holds more than [`CheckOptions::max_queue`] tasks, so a rebuild of
//! millions of files does not flood Redis.

pub mod merge;

use std::time::Duration;

use backpack_shared::model::{
    HostPort, MapDoc, QueueInfo, ReplicationTask, Shard, ShardCheck, Version, parse_hash_hex,
    parse_json, paths, to_json,
};
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::{Zk, ZkError};
use bytes::Bytes;
use serde::Deserialize;

use crate::node_client::NodeClient;
use merge::{Lack, Listed};

/// How a check runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Queue the copies that make the shard whole.
    pub repair: bool,
    /// Files per page on the fullest node, about (pages are a power of two).
    pub page_files: u64,
    /// Pushes wait while the queue holds more tasks than this.
    pub max_queue: u64,
    /// One node request (a page's listing, its /stats).
    pub request_timeout: Duration,
    /// Names kept per node as examples for the report.
    pub examples: usize,
    /// Pause between pages, to spread the load on the nodes (the elected
    /// checker's scheduled checks; an operator's check runs flat out).
    pub page_pause: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            repair: false,
            page_files: 10_000,
            max_queue: 100_000,
            request_timeout: Duration::from_secs(60),
            examples: 5,
            page_pause: Duration::ZERO,
        }
    }
}

/// What one node of the shard lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeReport {
    pub id: String,
    /// Files it lists.
    pub files: u64,
    pub missing: u64,
    pub older: u64,
    /// Damaged records its scrub has found since it started (from its
    /// /stats; those copies left its index and count as missing here).
    pub damaged: Option<u64>,
    /// A few of the names it lacks.
    pub examples: Vec<String>,
}

/// A shard's check.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardReport {
    pub shard: String,
    /// Distinct files on any node, and the bytes of their newest copies.
    pub files: u64,
    pub bytes: u64,
    pub nodes: Vec<NodeReport>,
    /// Bytes of the newest copies the nodes lack.
    pub gap_bytes: u64,
    /// Replication tasks queued (with repair), and the bytes they copy.
    pub queued: u64,
    pub queued_bytes: u64,
    pub pages: u64,
}

impl ShardReport {
    /// Every node holds every file at its newest version.
    pub fn whole(&self) -> bool {
        self.nodes.iter().all(|n| n.missing == 0 && n.older == 0)
    }
}

/// Where a check is, for a progress line.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Page {
        done: u64,
        of: u64,
        files: u64,
    },
    /// Waiting for the queue to drain below `max_queue`.
    QueueFull {
        length: u64,
    },
}

/// Why a shard cannot be checked.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("node {node} ({addr}) cannot list its files: {detail}")]
    Listing {
        node: String,
        addr: String,
        detail: String,
    },
    #[error(transparent)]
    Order(#[from] merge::OutOfOrder),
    #[error("cannot queue the repair copies: {0}")]
    Queue(String),
}

#[derive(Deserialize)]
struct Line {
    key: Option<String>,
    name: Option<String>,
    size: Option<u64>,
    time: Option<u64>,
    hash: Option<String>,
    end: Option<bool>,
    files: Option<u64>,
}

/// Parses a page of a node's listing (NDJSON, ending with
/// `{"end":true,"files":N}`).
pub fn parse_listing(body: &[u8]) -> Result<Vec<Listed>, String> {
    let mut out = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line: Line = serde_json::from_slice(raw)
            .map_err(|e| format!("line {} is not a listing line: {e}", i + 1))?;
        if line.end == Some(true) {
            let files = line.files.unwrap_or(u64::MAX);
            if files != out.len() as u64 {
                return Err(format!(
                    "the listing says {files} files but has {}",
                    out.len()
                ));
            }
            return Ok(out);
        }
        let bad = || format!("line {} lacks a field", i + 1);
        let key = line
            .key
            .as_deref()
            .and_then(parse_hash_hex)
            .ok_or_else(bad)?;
        let content_hash = line
            .hash
            .as_deref()
            .and_then(parse_hash_hex)
            .ok_or_else(bad)?;
        out.push(Listed {
            key,
            name: line.name.ok_or_else(bad)?,
            size: line.size.ok_or_else(bad)?,
            version: Version {
                time_ms: line.time.ok_or_else(bad)?,
                content_hash,
            },
        });
    }
    Err("the listing ended early (no end line): the node stopped or the connection broke".into())
}

/// The pages of the key space: `(from, to)` with `to` `None` for the last.
pub fn pages(files: u64, page_files: u64) -> Vec<(u64, Option<u64>)> {
    let n = files
        .div_ceil(page_files.max(1))
        .clamp(1, 1 << 20)
        .next_power_of_two();
    let step = (1u128 << 64) / u128::from(n);
    (0..u128::from(n))
        .map(|i| {
            let to = (i + 1 < u128::from(n)).then(|| ((i + 1) * step) as u64);
            ((i * step) as u64, to)
        })
        .collect()
}

/// Checks one shard, `nodes` as `(id, address)`; with `opts.repair`,
/// queues the copies on `queue`.
pub async fn check_shard(
    client: &NodeClient,
    shard: &str,
    nodes: &[(String, HostPort)],
    queue: Option<&Queue>,
    opts: &CheckOptions,
    mut progress: impl FnMut(Progress),
) -> Result<ShardReport, CheckError> {
    let mut report = ShardReport {
        shard: shard.to_string(),
        nodes: nodes
            .iter()
            .map(|(id, _)| NodeReport {
                id: id.clone(),
                ..NodeReport::default()
            })
            .collect(),
        ..ShardReport::default()
    };
    // Page size from the fullest node; damage its scrub found.
    let mut most = 0;
    for ((id, addr), r) in nodes.iter().zip(report.nodes.iter_mut()) {
        let stats = fetch(client, id, addr, "/stats", opts).await?;
        let v: serde_json::Value = serde_json::from_slice(&stats).unwrap_or_default();
        most = most.max(v["files"].as_u64().unwrap_or(0));
        r.damaged = v["scrub"]["damaged"].as_u64();
    }
    let pages = pages(most, opts.page_files);
    report.pages = pages.len() as u64;
    for (i, (from, to)) in pages.iter().enumerate() {
        let target = match to {
            Some(to) => format!("//files?from={from:016x}&to={to:016x}"),
            None => format!("//files?from={from:016x}"),
        };
        let lists = futures::future::try_join_all(nodes.iter().map(|(id, addr)| {
            let target = target.clone();
            async move {
                let body = fetch(client, id, addr, &target, opts).await?;
                let lines = parse_listing(&body).map_err(|detail| CheckError::Listing {
                    node: id.clone(),
                    addr: addr.url(),
                    detail,
                })?;
                Ok::<_, CheckError>((id.clone(), lines))
            }
        }))
        .await?;
        let page = merge::merge(&lists)?;
        report.files += page.files;
        report.bytes += page.bytes;
        for ((_, lines), r) in lists.iter().zip(report.nodes.iter_mut()) {
            r.files += lines.len() as u64;
        }
        let mut tasks = Vec::new();
        let mut task_bytes = 0;
        for gap in &page.gaps {
            let Some(r) = report.nodes.iter_mut().find(|r| r.id == gap.node) else {
                continue;
            };
            match gap.lack {
                Lack::Missing => r.missing += 1,
                Lack::Older(_) => r.older += 1,
            }
            if r.examples.len() < opts.examples {
                r.examples.push(gap.name.clone());
            }
            task_bytes += gap.size;
            report.gap_bytes += gap.size;
            tasks.push(
                ReplicationTask {
                    from: gap.sources.clone(),
                    to: gap.node.clone(),
                    path: gap.name.clone(),
                }
                .encode(),
            );
        }
        if opts.repair
            && !tasks.is_empty()
            && let Some(queue) = queue
        {
            wait_for_room(queue, opts.max_queue, &mut progress).await;
            queue
                .push_many(&tasks)
                .await
                .map_err(|e| CheckError::Queue(e.to_string()))?;
            report.queued += tasks.len() as u64;
            report.queued_bytes += task_bytes;
        }
        progress(Progress::Page {
            done: i as u64 + 1,
            of: pages.len() as u64,
            files: report.files,
        });
        if !opts.page_pause.is_zero() {
            tokio::time::sleep(opts.page_pause).await;
        }
    }
    Ok(report)
}

impl ShardReport {
    /// The document kept in `checks/<id>`.
    pub fn to_check(&self, by: &str) -> ShardCheck {
        ShardCheck {
            when_ms: backpack_shared::clock::now_ms(),
            files: self.files,
            bytes: self.bytes,
            missing: self.nodes.iter().map(|n| n.missing).sum(),
            older: self.nodes.iter().map(|n| n.older).sum(),
            damaged: self.nodes.iter().filter_map(|n| n.damaged).sum(),
            queued: self.queued,
            queued_bytes: self.queued_bytes,
            to_go_bytes: self.gap_bytes,
            previous: None,
            by: by.to_string(),
            error: None,
        }
    }
}

/// Keeps a shard's last check in `checks/<id>`, with the one before as
/// its previous point while copies are lacking (the rebuild's rate).
pub async fn record(zk: &Zk, shard: &str, check: &ShardCheck) -> Result<(), ZkError> {
    let name = paths::shard_check(shard);
    let check = match zk.get(&name).await? {
        Some((data, _)) => match parse_json::<ShardCheck>(&name, &data) {
            Ok(before) => before.followed_by(check.clone()),
            Err(_) => check.clone(),
        },
        None => check.clone(),
    };
    zk.put(&name, &to_json(&check)).await
}

/// Checks (and with `opts.repair` repairs) every shard of the current
/// shards map, or those in `only`, keeping each result in `checks/<id>`
/// (a shard that could not be checked gets its error there). `pause`
/// between shards spreads the load on the nodes.
pub async fn check_all(
    zk: &Zk,
    client: &NodeClient,
    only: Option<&[String]>,
    opts: &CheckOptions,
    by: &str,
) -> Result<Vec<(String, ShardCheck)>, ZkError> {
    let read = |name: &'static str| async move {
        Ok::<_, ZkError>(zk.get(name).await?.map(|(d, _)| d).unwrap_or_default())
    };
    let servers = MapDoc::<HostPort>::parse(paths::SERVERS_MAP, &read(paths::SERVERS_MAP).await?)
        .map(|d| d.valid())
        .unwrap_or_default();
    let shards = MapDoc::<Shard>::parse(paths::SHARDS_MAP, &read(paths::SHARDS_MAP).await?)
        .map(|d| d.valid())
        .unwrap_or_default();
    let queue = match parse_json::<QueueInfo>(paths::QUEUE, &read(paths::QUEUE).await?) {
        Ok(info) if opts.repair => Some(Queue::new(&info, &RedisPool::new(), zk.clone())),
        _ => None,
    };
    let mut out = Vec::new();
    for (id, shard) in &shards {
        if only.is_some_and(|o| !o.contains(id)) {
            continue;
        }
        let nodes: Option<Vec<(String, HostPort)>> = shard
            .nodes
            .iter()
            .map(|n| servers.get(n).map(|a| (n.clone(), a.clone())))
            .collect();
        let result = match nodes {
            None => Err(format!("shard {id} names a server not in servers-map")),
            Some(nodes) => check_shard(client, id, &nodes, queue.as_ref(), opts, |_| {})
                .await
                .map_err(|e| e.to_string()),
        };
        let check = match result {
            Ok(report) => report.to_check(by),
            Err(error) => {
                tracing::warn!(shard = %id, %error, "shard check could not run");
                ShardCheck {
                    when_ms: backpack_shared::clock::now_ms(),
                    by: by.to_string(),
                    error: Some(error),
                    ..ShardCheck::default()
                }
            }
        };
        if check.error.is_none() && !check.whole() {
            tracing::warn!(shard = %id, missing = check.missing, older = check.older, queued = check.queued, "shard not whole");
        }
        record(zk, id, &check).await?;
        out.push((id.clone(), check));
    }
    Ok(out)
}

/// Waits while the queue is longer than `max`.
async fn wait_for_room(queue: &Queue, max: u64, progress: &mut impl FnMut(Progress)) {
    loop {
        let length = queue.len().await.overall.unwrap_or(0);
        if length <= max {
            return;
        }
        progress(Progress::QueueFull { length });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A node resource's body, or why not.
async fn fetch(
    client: &NodeClient,
    id: &str,
    addr: &HostPort,
    target: &str,
    opts: &CheckOptions,
) -> Result<Bytes, CheckError> {
    let err = |detail: String| CheckError::Listing {
        node: id.to_string(),
        addr: addr.url(),
        detail,
    };
    let asked = client.get_resource(addr, target, 1 << 30);
    match tokio::time::timeout(opts.request_timeout, asked).await {
        Err(_) => Err(err(format!("no answer within {:?}", opts.request_timeout))),
        Ok(Err(e)) => Err(err(e.detail)),
        Ok(Ok((status, body))) if status.is_success() => Ok(body),
        Ok(Ok((status, body)))
            if status == hyper::StatusCode::NOT_FOUND && target.starts_with("//") =>
        {
            Err(err(format!(
                "{}; an original node (or a backpack-node older than this command) has no listing",
                crate::node_client::answered(status, &body)
            )))
        }
        Ok(Ok((status, body))) => Err(err(crate::node_client::answered(status, &body))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pages_cover_the_key_space_in_powers_of_two() {
        assert_eq!(pages(0, 10_000), vec![(0, None)]);
        assert_eq!(pages(10_000, 10_000), vec![(0, None)]);
        let p = pages(25_000, 10_000);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0], (0, Some(1 << 62)));
        assert_eq!(p[3], (3 << 62, None));
        for w in p.windows(2) {
            assert_eq!(w[0].1, Some(w[1].0));
        }
    }

    #[test]
    fn a_listing_parses_and_must_be_complete() {
        let body = b"{\"key\":\"00000000000000ff\",\"name\":\"/a b\",\"size\":3,\"time\":17,\"hash\":\"0123456789abcdef\"}\n{\"end\":true,\"files\":1}\n";
        let l = parse_listing(body).unwrap();
        assert_eq!(l[0].key, 255);
        assert_eq!(l[0].name, "/a b");
        assert_eq!(l[0].version.time_ms, 17);
        assert_eq!(l[0].version.content_hash, 0x0123_4567_89ab_cdef);
        let cut = &body[..body.len() - 23];
        assert!(parse_listing(cut).unwrap_err().contains("ended early"));
        let wrong = b"{\"end\":true,\"files\":2}\n";
        assert!(parse_listing(wrong).unwrap_err().contains("says 2 files"));
    }
}
