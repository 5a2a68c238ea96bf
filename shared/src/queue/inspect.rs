//! What operators and the console read of a queue (lengths, ages,
//! samples, dead letters, locks, the servers' settings) and the dead-letter
//! actions (requeue, drop). The claim, done and failure paths are in
//! `mod.rs` and `batch.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::scripts::zadd_from_now;
use super::{Queue, QueueError};
use crate::model::HostPort;

/// Queue length, per server and overall (the largest per-server count:
/// every server holds every item it took).
#[derive(Debug, Clone, Default)]
pub struct QueueLen {
    pub per_server: Vec<(HostPort, Result<u64, String>)>,
    pub overall: Option<u64>,
}

/// What we know of one item, for the console and the admin commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub item: String,
    pub first_queued_ms: Option<u64>,
    pub attempts: u64,
    pub last_error: Option<String>,
}

/// A queue lock held right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub name: String,
    pub worker: String,
}

/// How one queue Redis server keeps items, read with `CONFIG GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keeping {
    pub addr: HostPort,
    /// `maxmemory-policy`, when the server answered.
    pub policy: Option<String>,
    /// `appendonly` (persistence across a restart), when it answered.
    pub appendonly: Option<bool>,
    /// Why it could not be read (server down, `CONFIG` renamed).
    pub error: Option<String>,
}

impl Keeping {
    /// The server may evict queue items under memory pressure.
    pub fn evicts(&self) -> bool {
        self.policy.as_deref().is_some_and(evicting_policy)
    }
}

/// Whether a `maxmemory-policy` may evict the queue's keys. Ours never
/// carry a TTL, so the `volatile-*` policies leave them alone; the
/// `allkeys-*` ones evict any key, the queue's included.
pub fn evicting_policy(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// Decodes an item for display; items pushed by hand may not be tasks.
pub fn describe_item(item: &str) -> String {
    match crate::model::ReplicationTask::decode(item) {
        Ok(t) => format!("{} → {} (from {})", t.path, t.to, t.from.join(",")),
        Err(_) => item.to_string(),
    }
}

impl Queue {
    /// How each server keeps items (see [`Keeping`]), read at once.
    pub async fn keeping(&self) -> Vec<Keeping> {
        futures::future::join_all(self.inner.servers.iter().map(|s| async move {
            let mut p = redis::pipe();
            p.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
            p.cmd("CONFIG").arg("GET").arg("appendonly");
            let value = |v: &[String]| v.get(1).cloned();
            match s.pipe::<(Vec<String>, Vec<String>)>(&p).await {
                Ok((policy, aof)) => Keeping {
                    addr: s.addr.clone(),
                    policy: value(&policy),
                    appendonly: value(&aof).map(|a| a == "yes"),
                    error: None,
                },
                Err(e) => Keeping {
                    addr: s.addr.clone(),
                    policy: None,
                    appendonly: None,
                    error: Some(e),
                },
            }
        }))
        .await
    }

    /// `SCARD` of every server; overall is the largest answer.
    pub async fn len(&self) -> QueueLen {
        self.card(&self.inner.key).await
    }

    /// Dead-letter count, per server and overall.
    pub async fn dead_len(&self) -> QueueLen {
        self.card(&self.k("dead")).await
    }

    async fn card(&self, key: &str) -> QueueLen {
        let per_server: Vec<(HostPort, Result<u64, String>)> =
            futures::future::join_all(self.inner.servers.iter().map(|s| async move {
                (
                    s.addr.clone(),
                    s.cmd::<u64>(redis::cmd("SCARD").arg(key)).await,
                )
            }))
            .await;
        let overall = per_server
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .copied()
            .max();
        QueueLen {
            per_server,
            overall,
        }
    }

    /// Age of the oldest queued item we know the first-queued time of.
    pub async fn oldest_age(&self) -> Option<Duration> {
        let (key, first) = (&self.inner.key, self.k("first"));
        // Ages by each server's clock, which wrote the times.
        let mut oldest: Option<u64> = None;
        for s in &self.inner.servers {
            // Skip the entries of dead letters (they keep their
            // first-queued time), and clean those of items finished by
            // original daemons.
            let mut at = 0;
            for _ in 0..20 {
                let head: Result<Vec<(String, f64)>, String> = s
                    .cmd(
                        redis::cmd("ZRANGE")
                            .arg(&first)
                            .arg(at)
                            .arg(at)
                            .arg("WITHSCORES"),
                    )
                    .await;
                let Ok(Some((item, score))) = head.map(|v| v.into_iter().next()) else {
                    break;
                };
                let mut p = redis::pipe();
                p.cmd("SISMEMBER").arg(key).arg(&item);
                p.cmd("SISMEMBER").arg(self.k("dead")).arg(&item);
                p.cmd("TIME");
                match s.pipe::<(bool, bool, (u64, u64))>(&p).await {
                    Ok((true, _, (secs, micros))) => {
                        let age = (secs * 1000 + micros / 1000).saturating_sub(score as u64);
                        oldest = Some(oldest.map_or(age, |o| o.max(age)));
                        break;
                    }
                    Ok((false, true, _)) => at += 1,
                    Ok((false, false, _)) => {
                        let mut p = redis::pipe();
                        p.cmd("ZREM").arg(&first).arg(&item).ignore();
                        p.cmd("HDEL").arg(self.k("pushes")).arg(&item).ignore();
                        p.cmd("ZREM").arg(self.k("due")).arg(&item).ignore();
                        let _ = s.pipe::<()>(&p).await;
                    }
                    Err(_) => break,
                }
            }
        }
        oldest.map(Duration::from_millis)
    }

    /// Up to `n` queued items with what we know of them.
    pub async fn sample(&self, n: usize) -> Vec<TaskInfo> {
        self.describe_set(&self.inner.key, n).await
    }

    /// Up to `n` dead-letter items with their last error.
    pub async fn dead(&self, n: usize) -> Vec<TaskInfo> {
        self.describe_set(&self.k("dead"), n).await
    }

    async fn describe_set(&self, set: &str, n: usize) -> Vec<TaskInfo> {
        let mut items: BTreeMap<String, TaskInfo> = BTreeMap::new();
        for s in &self.inner.servers {
            let Ok(list) = s
                .cmd::<Vec<String>>(redis::cmd("SRANDMEMBER").arg(set).arg(n))
                .await
            else {
                continue;
            };
            for item in list {
                if items.len() >= n || items.contains_key(&item) {
                    continue;
                }
                let mut p = redis::pipe();
                p.cmd("ZSCORE").arg(self.k("first")).arg(&item);
                p.cmd("HGET").arg(self.k("tries")).arg(&item);
                p.cmd("HGET").arg(self.k("errors")).arg(&item);
                let (first, tries, error): (Option<f64>, Option<u64>, Option<String>) =
                    s.pipe(&p).await.unwrap_or((None, None, None));
                items.insert(
                    item.clone(),
                    TaskInfo {
                        item,
                        first_queued_ms: first.map(|f| f as u64),
                        attempts: tries.unwrap_or(0),
                        last_error: error,
                    },
                );
            }
        }
        items.into_values().collect()
    }

    /// Moves a dead-letter item back into the queue with a fresh attempt
    /// count. Returns whether any server had it.
    pub async fn requeue(&self, item: &str) -> Result<bool, QueueError> {
        let (key, dead, tries, first, wake, due) = (
            &self.inner.key,
            self.k("dead"),
            self.k("tries"),
            self.k("first"),
            self.k("wake"),
            self.k("due"),
        );
        self.on_every(|p| {
            p.cmd("SREM").arg(&dead).arg(item);
            p.cmd("SADD").arg(key).arg(item).ignore();
            p.cmd("HDEL").arg(&tries).arg(item).ignore();
            zadd_from_now(p, &first, "NX", [(item, 0)]);
            zadd_from_now(p, &due, "ANY", [(item, 0)]);
            p.cmd("PUBLISH").arg(&wake).arg(1).ignore();
        })
        .await
    }

    /// Drops a dead-letter item for good. Returns whether any server had it.
    pub async fn drop_dead(&self, item: &str) -> Result<bool, QueueError> {
        let (dead, tries, errs, first) = (
            self.k("dead"),
            self.k("tries"),
            self.k("errors"),
            self.k("first"),
        );
        self.on_every(|p| {
            p.cmd("SREM").arg(&dead).arg(item);
            p.cmd("HDEL").arg(&tries).arg(item).ignore();
            p.cmd("HDEL").arg(&errs).arg(item).ignore();
            p.cmd("ZREM").arg(&first).arg(item).ignore();
        })
        .await
    }

    /// Runs a pipeline whose first reply is a count on every server.
    async fn on_every(&self, build: impl Fn(&mut redis::Pipeline)) -> Result<bool, QueueError> {
        let results = futures::future::join_all(self.inner.servers.iter().map(|s| {
            let mut p = redis::pipe();
            build(&mut p);
            async move { (s.addr.clone(), s.pipe::<(u64,)>(&p).await) }
        }))
        .await;
        let mut found = false;
        let mut errors = Vec::new();
        for (addr, r) in results {
            match r {
                Ok((n,)) => found |= n > 0,
                Err(e) => errors.push((addr, e)),
            }
        }
        if errors.len() == self.inner.servers.len() {
            return Err(QueueError::NoServerTook(errors));
        }
        Ok(found)
    }

    /// The queue locks held now, with the worker holding each.
    pub async fn locks(&self) -> Result<Vec<Lock>, QueueError> {
        let key = &self.inner.key;
        let zk = &self.inner.zk;
        let children = zk.children("").await.map(|c| c.unwrap_or_default());
        let children = match children {
            Ok(c) => c,
            // The root "" maps to "/" + "" with a trailing slash for `/`.
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for name in children {
            let Some(hash) = name.strip_prefix(key.as_str()) else {
                continue;
            };
            if hash.len() != 32 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Ok(Some((data, _))) = zk.get(&name).await {
                out.push(Lock {
                    name,
                    worker: String::from_utf8_lossy(&data).into_owned(),
                });
            }
        }
        Ok(out)
    }
}
