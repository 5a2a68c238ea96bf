//! Fill levels: the bytes each shard holds, in `shard-size-<id>`.
//!
//! An upload adds its size only once a node has the file. Increments are
//! summed per shard in memory and written about once a second, one
//! compare-and-set per shard (get, then set with the version read; on
//! BADVERSION read again and retry), so a thousand uploads a second cost a
//! few ZooKeeper writes. A crash loses at most one interval of increments.
//!
//! Nothing is counted twice: when the answer to a write is lost (timeout,
//! connection loss, session expiry) the write may or may not have been
//! applied, so the znode is read again before anything is retried:
//! - same version as read: not applied, retry;
//! - next version holding exactly our bytes: applied, done;
//! - next version holding other bytes: another writer won, ours failed, retry;
//! - a later version: cannot tell; the increment is dropped with a warning
//!   (under-counting by one interval beats counting it twice).
//!
//! A `"current": null` left by the original counts as 0 (with a warning);
//! we always write a number.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backpack_shared::model::{ShardSize, parse_json, paths, to_json};
use backpack_shared::zk::{Zk, ZkError};
use tokio_util::sync::CancellationToken;
use zookeeper_client as zkc;

/// How long a value we wrote overrides the (older) one the watch shows.
const WRITTEN_FRESH: Duration = Duration::from_secs(5);
/// Conflicting writes tolerated in one flush before waiting for the next.
const MAX_CONFLICTS: u32 = 100;
/// Interval between warnings about one shard that cannot be written.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How one shard's flush ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushResult {
    /// The znode now holds this `current`.
    Written(u64),
    /// A lost answer that re-reading could not settle; the bytes were
    /// dropped rather than risk counting them twice.
    Dropped,
    /// Kept for the next flush (ZooKeeper unreachable, znode missing or
    /// invalid, too many conflicts).
    Kept(String),
}

#[derive(Default)]
struct Inner {
    pending: HashMap<String, u64>,
    written: HashMap<String, (Instant, u64)>,
    warned: HashMap<String, Instant>,
}

/// The per-shard batcher. Cheap to share behind an `Arc`.
pub struct FillLevels {
    zk: Zk,
    inner: Mutex<Inner>,
    /// One flush at a time: two concurrent flushes of a shard could write
    /// its increments twice.
    flushing: tokio::sync::Mutex<()>,
}

impl FillLevels {
    pub fn new(zk: Zk) -> FillLevels {
        FillLevels {
            zk,
            inner: Mutex::new(Inner::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `bytes` written to `shard` (after a node took them).
    pub fn add(&self, shard: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut inner = self.lock();
        match inner.pending.get_mut(shard) {
            Some(n) => *n += bytes,
            None => {
                inner.pending.insert(shard.to_string(), bytes);
            }
        }
    }

    /// Bytes not yet written, all shards.
    pub fn pending_total(&self) -> u64 {
        self.lock().pending.values().sum()
    }

    /// The shard's used bytes for the shard choice: what the watch shows
    /// (or what we just wrote, if the watch has not caught up), plus what
    /// is waiting for the next flush.
    pub fn used(&self, shard: &str, live: u64) -> u64 {
        let inner = self.lock();
        let base = match inner.written.get(shard) {
            Some((at, w)) if at.elapsed() < WRITTEN_FRESH => live.max(*w),
            _ => live,
        };
        base.saturating_add(inner.pending.get(shard).copied().unwrap_or(0))
    }

    /// Writes every shard's pending increments, shards in parallel.
    pub async fn flush(&self) -> Vec<(String, u64, FlushResult)> {
        let _one = self.flushing.lock().await;
        let batch: Vec<(String, u64)> = self
            .lock()
            .pending
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (id.clone(), *n))
            .collect();
        let results = futures::future::join_all(batch.into_iter().map(|(id, delta)| async move {
            let result = add_to_shard(&self.zk, &id, delta).await;
            (id, delta, result)
        }))
        .await;
        let mut inner = self.lock();
        for (id, delta, result) in &results {
            match result {
                FlushResult::Written(current) => {
                    take(&mut inner.pending, id, *delta);
                    inner.written.insert(id.clone(), (Instant::now(), *current));
                    inner.warned.remove(id);
                }
                FlushResult::Dropped => {
                    take(&mut inner.pending, id, *delta);
                    tracing::warn!(shard = %id, bytes = delta, "the answer to a fill-level write was lost and the shard was written by another coordinator meanwhile; not adding these bytes again (the fill level may be under by this much)");
                }
                FlushResult::Kept(why) => {
                    let now = Instant::now();
                    let warn = inner
                        .warned
                        .get(id)
                        .is_none_or(|t| now.duration_since(*t) > WARN_EVERY);
                    if warn {
                        inner.warned.insert(id.clone(), now);
                        tracing::warn!(shard = %id, bytes = delta, reason = %why, "fill level not written yet; retrying every interval");
                    } else {
                        tracing::debug!(shard = %id, bytes = delta, reason = %why, "fill level not written yet");
                    }
                }
            }
        }
        results
    }
}

fn take(pending: &mut HashMap<String, u64>, id: &str, delta: u64) {
    if let Some(n) = pending.get_mut(id) {
        *n = n.saturating_sub(delta);
        if *n == 0 {
            pending.remove(id);
        }
    }
}

/// Flushes every `every` until `stop`; the final flush is the caller's.
pub fn spawn_flusher(
    fill: Arc<FillLevels>,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            fill.flush().await;
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Lost {
    /// Not applied: read again and retry.
    Retry,
    Applied,
    Unknown,
}

/// One compare-and-set loop adding `delta` to `shard-size-<id>`.
async fn add_to_shard(zk: &Zk, id: &str, delta: u64) -> FlushResult {
    let name = paths::shard_size(id);
    let path = zk.path(&name);
    let mut backoff = Duration::from_millis(2);
    for _ in 0..MAX_CONFLICTS {
        let (data, version) = match zk.get(&name).await {
            Ok(Some(v)) => v,
            Ok(None) => return FlushResult::Kept(format!("{path} does not exist")),
            Err(e) => return FlushResult::Kept(e.to_string()),
        };
        let size: ShardSize = match parse_json(&name, &data) {
            Ok(s) => s,
            Err(e) => return FlushResult::Kept(e.to_string()),
        };
        if size.current_was_null() {
            tracing::warn!(shard = %id, "{name} has \"current\": null (left by the original coordinator); counting from 0");
        }
        let current = size.used().saturating_add(delta);
        let new = to_json(&ShardSize {
            capacity: size.capacity,
            current: Some(current),
        });
        let (p, d) = (path.clone(), new.clone());
        let written = zk
            .call(
                &path,
                |c| async move { c.set_data(&p, &d, Some(version)).await },
            )
            .await;
        match written {
            Ok(_) => return FlushResult::Written(current),
            Err(ZkError::Request {
                source: zkc::Error::BadVersion,
                ..
            }) => {}
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => return FlushResult::Kept(format!("{path} does not exist")),
            Err(ZkError::Closed) => return FlushResult::Kept("ZooKeeper handle closed".into()),
            Err(e) => {
                tracing::debug!(error = %e, shard = %id, "fill-level write answer lost; reading back");
                match settle(zk, &name, version, &new).await {
                    Ok(Lost::Retry) => {}
                    Ok(Lost::Applied) => return FlushResult::Written(current),
                    Ok(Lost::Unknown) => return FlushResult::Dropped,
                    Err(e) => return FlushResult::Kept(e),
                }
            }
        }
        tokio::time::sleep(backoff + Duration::from_micros(rand::random::<u64>() % 2000)).await;
        backoff = (backoff * 2).min(Duration::from_millis(100));
    }
    FlushResult::Kept(format!(
        "{MAX_CONFLICTS} conflicting writes in a row on {path}"
    ))
}

/// Whether our write (expecting `version`, writing `ours`) was applied,
/// given what the znode holds now.
fn judge(version: i32, ours: &[u8], now_version: i32, now: &[u8]) -> Lost {
    if now_version == version.wrapping_add(1) && now == ours {
        Lost::Applied
    } else if now_version == version
        || now_version == version.wrapping_add(1)
        || now_version < version
    {
        // Unchanged; or the next version is someone else's (so ours, which
        // expected `version`, failed); or the znode was recreated.
        Lost::Retry
    } else {
        // Several writes since: ours may be any of them, or none.
        Lost::Unknown
    }
}

/// Finds out whether a write whose answer was lost was applied, reading
/// until ZooKeeper answers.
async fn settle(zk: &Zk, name: &str, version: i32, ours: &[u8]) -> Result<Lost, String> {
    let mut pause = Duration::from_millis(50);
    loop {
        match zk.get(name).await {
            Ok(Some((data, v))) => return Ok(judge(version, ours, v, &data)),
            Ok(None) => return Err(format!("{} does not exist", zk.path(name))),
            Err(ZkError::Closed) => return Err("ZooKeeper handle closed".into()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read back a fill level yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_answer_is_settled_by_what_the_znode_holds() {
        let ours = br#"{"capacity":10,"current":7}"#;
        let theirs = br#"{"capacity":10,"current":9}"#;
        let check = |now_version, now: &[u8], expected| {
            assert_eq!(judge(4, ours, now_version, now), expected, "{now_version}")
        };
        check(5, ours, Lost::Applied);
        check(4, br#"{"capacity":10,"current":5}"#, Lost::Retry);
        check(5, theirs, Lost::Retry);
        check(0, theirs, Lost::Retry);
        check(6, theirs, Lost::Unknown);
        check(6, ours, Lost::Unknown);
    }

    #[test]
    fn written_increments_leave_the_later_ones_pending() {
        let mut pending = HashMap::new();
        pending.insert("1".to_string(), 10);
        // 4 bytes written while 6 more arrived: 6 stay for the next flush.
        take(&mut pending, "1", 4);
        assert_eq!(pending.get("1"), Some(&6));
        take(&mut pending, "1", 6);
        assert!(pending.is_empty());
        take(&mut pending, "2", 6);
        assert!(pending.is_empty());
    }
}
