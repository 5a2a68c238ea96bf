//! Whether the queue's Redis servers answer, and whether they can lose
//! queued copies.
//!
//! An upload is answered 200 only once its replication tasks are queued
//! on at least one queue Redis; when none answers, every upload to a shard
//! of several nodes fails (503, the file left on one node). The
//! coordinator asks each server for the queue set's length (`SCARD`: one of
//! the queue's own commands) at start, when the queue changes and every
//! `queue_check_every`, and keeps whether it answered and since when;
//! `/health` is 503 while none does, and `/metrics` counts them.
//!
//! A queue Redis whose `maxmemory-policy` evicts any key (`allkeys-*`)
//! drops the whole queue set under memory pressure from anything else it
//! holds: every queued copy gone, its file left on one node, nothing
//! warned. The same check reads each server's policy and persistence and,
//! unless `--allow-evicting-queue`, uploads are refused while one evicts
//! (503: the file would be acknowledged with its copies at risk), saying
//! why in the log, `/health` and `/metrics`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use backpack_shared::clock::now_ms;
use backpack_shared::model::HostPort;
use backpack_shared::queue::{Keeping, Queue};
use tokio_util::sync::CancellationToken;

use super::App;

/// The last check of one queue server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// How it keeps items (`keeping.error` when its settings could not be
    /// read, even if it answers: `CONFIG` may be renamed).
    pub keeping: Keeping,
    /// It answered the queue's own command (`SCARD` of the queue set).
    pub reachable: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    /// Since when it is `reachable` as now or not (ms since the Unix
    /// epoch, this machine's clock; for people, nothing is decided by it).
    pub since_ms: u64,
}

impl Reading {
    pub fn addr(&self) -> &HostPort {
        &self.keeping.addr
    }
}

/// The last reading of each queue server.
#[derive(Debug, Default)]
pub struct QueueCheck {
    last: Mutex<Vec<Reading>>,
}

impl QueueCheck {
    /// The last reading; empty before the first or without a queue.
    pub fn servers(&self) -> Vec<Reading> {
        self.lock().clone()
    }

    /// The servers that evict, as `host:port (policy)`, if any.
    pub fn evicting(&self) -> Option<String> {
        let list: Vec<String> = self
            .lock()
            .iter()
            .filter(|r| r.keeping.evicts())
            .map(|r| {
                format!(
                    "{} ({})",
                    r.addr(),
                    r.keeping.policy.as_deref().unwrap_or("?")
                )
            })
            .collect();
        (!list.is_empty()).then(|| list.join(", "))
    }

    /// When no queue server answered at the last check (there is at least
    /// one): each as `host:port (why)`.
    pub fn unreachable(&self) -> Option<String> {
        let last = self.lock();
        if last.is_empty() || last.iter().any(|r| r.reachable) {
            return None;
        }
        let list: Vec<String> = last
            .iter()
            .map(|r| format!("{} ({})", r.addr(), r.error.as_deref().unwrap_or("?")))
            .collect();
        Some(list.join(", "))
    }

    /// Takes a check's results: each server's `SCARD` answer and settings.
    fn set(&self, answered: Vec<(HostPort, Result<u64, String>)>, keeping: Vec<Keeping>) {
        let now = keeping
            .into_iter()
            .map(|k| {
                let error = match answered.iter().find(|(a, _)| *a == k.addr) {
                    Some((_, Ok(_))) => None,
                    Some((_, Err(e))) => Some(e.clone()),
                    None => Some("not asked".to_string()),
                };
                Reading {
                    reachable: error.is_none(),
                    error,
                    keeping: k,
                    since_ms: now_ms(),
                }
            })
            .collect();
        self.replace(now);
    }

    /// Keeps `since_ms` of servers whose reachability did not change, and
    /// says in the log what changed.
    fn replace(&self, mut now: Vec<Reading>) {
        let mut last = self.lock();
        let was_any = last.is_empty() || last.iter().any(|r| r.reachable);
        for r in &mut now {
            let before = last.iter().find(|b| b.addr() == r.addr());
            if let Some(b) = before
                && b.reachable == r.reachable
            {
                r.since_ms = b.since_ms;
            }
            if before.is_some_and(|b| b.reachable) && !r.reachable {
                tracing::warn!(server = %r.addr(), error = ?r.error, "queue Redis does not answer");
            } else if before.is_some_and(|b| !b.reachable) && r.reachable {
                tracing::info!(server = %r.addr(), "queue Redis answers again");
            }
            let k = &r.keeping;
            let changed = before.is_none_or(|b| {
                b.keeping.policy != k.policy || b.keeping.appendonly != k.appendonly
            });
            if !changed {
                continue;
            }
            if k.evicts() {
                tracing::error!(server = %k.addr, policy = ?k.policy, "queue Redis may evict queued copies under memory pressure; set maxmemory-policy noeviction on it (uploads are refused meanwhile unless --allow-evicting-queue)");
            } else if k.appendonly == Some(false) {
                tracing::warn!(server = %k.addr, "queue Redis does not persist (appendonly no): a restart empties it and its queued copies are lost; set appendonly yes");
            } else if k.policy.is_some() {
                tracing::info!(server = %k.addr, policy = ?k.policy, appendonly = ?k.appendonly, "queue Redis keeps its items");
            } else if let Some(e) = &k.error {
                tracing::debug!(server = %k.addr, error = %e, "cannot read the queue Redis's settings");
            }
        }
        let is_any = now.is_empty() || now.iter().any(|r| r.reachable);
        if was_any && !is_any {
            tracing::error!(
                "no queue Redis answers: uploads to shards of several nodes fail (503) until one does; check the servers of the queue (backpack-coordinator-set-queue)"
            );
        } else if !was_any && is_any {
            tracing::info!("a queue Redis answers again: uploads can queue their copies");
        }
        *last = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Reading>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Checks the servers now, when the queue changes and every `every`,
/// until `stop`.
pub fn spawn(app: Weak<App>, check: Arc<QueueCheck>, every: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let Some(mut view) = app.upgrade().map(|a| a.view.clone()) else {
            return;
        };
        loop {
            let queue = view.borrow_and_update().queue.clone();
            match queue {
                Some(queue) => {
                    let (answered, keeping) = read(&queue).await;
                    check.set(answered, keeping);
                }
                // No queue: nothing to say of servers it no longer has.
                None => check.replace(Vec::new()),
            }
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// One check. `SCARD` first: a server that fails it is skipped for a
/// moment (`redis_conn`), so a dead one costs one timeout, not two.
async fn read(queue: &Queue) -> (Vec<(HostPort, Result<u64, String>)>, Vec<Keeping>) {
    let answered = queue.len().await.per_server;
    (answered, queue.keeping().await)
}
