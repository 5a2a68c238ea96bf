//! The replication queue: a reliable queue over several independent Redis
//! servers plus ZooKeeper locks, in the original's exact wire format
//! (zk-redis-queue), so original and new daemons share one queue.
//!
//! # The original's format (never changes)
//! - An item is a string (a [`crate::model::ReplicationTask`] as JSON);
//!   the queue is the Redis set `<key>` on every server.
//! - push: `SADD <key> <item>` on every server; ok if one took it.
//! - pop: `SRANDMEMBER`, then lock with the EPHEMERAL znode
//!   `<root>/<key><md5 hex of item>` holding the worker id `host:pid`.
//! - done: `SREM` on every server, then delete the lock. failed: delete the
//!   lock only.
//!
//! # Our additions (invisible to the original daemons)
//! All under keys that start with `<key>:`, on the same servers:
//! - `<key>:first`  sorted set, item → first-queued time (ms), `ZADD NX` at push;
//! - `<key>:tries`  hash, item → failed attempts (`HINCRBY`);
//! - `<key>:errors` hash, item → last error;
//! - `<key>:dead`   set of items that failed too often (dead letters);
//! - `<key>:wake`   pub/sub channel, published after each push so idle
//!   replicators wake at once instead of polling fast;
//! - `<key>:due`    sorted set, item → when it may be tried next (ms):
//!   the push time, then after each failure the time its backoff ends.
//!   Claims take due items only (a Lua script per server picks them at a
//!   random place among the due ones, and adopts items an original
//!   daemon pushed), so tasks waiting out a node's outage cost neither
//!   locks nor the copy rate of the others;
//! - `<key>:pushes` hash, item → pushes so far (`HINCRBY` at push). A claim
//!   reads it after taking the lock; done removes the item only where the
//!   count is still the one read (a Lua script per server), so an item
//!   pushed again while its copy was in flight (the file uploaded again)
//!   stays queued and is copied once more. An original replicator's done
//!   removes unconditionally, and an original coordinator's push does not
//!   count: in a mixed cluster such a re-push can still be lost.
//!
//! Times in `<key>:first` and `<key>:due` are each server's own clock
//! (`TIME`, in Lua scripts), never a daemon's: a coordinator whose clock is
//! ten minutes ahead does not push tasks due in ten minutes.
//!
//! Items finished by an original replicator leave stale entries in
//! `<key>:first`; readers check membership and clean them.
//!
//! Busy workers take and finish items in batches ([`Queue::pop_many`],
//! [`Queue::done_many`]): same locks, one ZooKeeper request per batch.
//!
//! Fixes of the original's weak spots: pop and length look at every server
//! (a server restarted empty hides nothing), every Redis call is bounded by
//! a timeout (a dead server never stalls the others), and a task that keeps
//! failing ends in the dead-letter set instead of cycling unseen.

mod batch;
mod inspect;
mod redis_conn;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use rand::seq::SliceRandom;
use thiserror::Error;

pub use redis_conn::{RedisPool, WakeListener};

use crate::model::{HostPort, QueueInfo};
use crate::zk::{ConnState, Zk, ZkError};
pub use inspect::{Keeping, Lock, QueueLen, TaskInfo, describe_item, evicting_policy};
use redis_conn::Server;
use scripts::{DUE_CANDIDATES, REMOVE_DONE, ZADD_FROM_NOW, with_server_now, zadd_from_now};

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("could not write to any of the {} queue Redis servers ({}); check that they run (see the queue znode)", .0.len(), describe(.0))]
    NoServerTook(Vec<(HostPort, String)>),
    #[error("no queue Redis server answered ({}); check that they run (see the queue znode)", describe(.0))]
    NoServerAnswered(Vec<(HostPort, String)>),
    #[error("the queue has no Redis servers; set them with backpack-coordinator-set-queue")]
    NoServers,
    #[error(
        "the lock of this task was lost with the ZooKeeper session; another worker may take it"
    )]
    LockLost,
    #[error(transparent)]
    Zk(#[from] ZkError),
}

fn describe(errors: &[(HostPort, String)]) -> String {
    errors
        .iter()
        .map(|(a, e)| format!("{a}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The lock znode's name (under the root) for an item: `<key><md5 hex>`.
pub fn lock_name(key: &str, item: &str) -> String {
    format!("{key}{}", hex::encode(Md5::digest(item.as_bytes())))
}

/// A popped, locked item.
#[derive(Debug, Clone)]
pub struct Claim {
    pub item: String,
    lock_path: String,
    session: i64,
    /// Per server (in the queue's order), the item's push count read
    /// after locking: `Some("")` none (an original daemon's push), `None`
    /// unknown (the server did not answer; done leaves the item there).
    pushes: Vec<Option<String>>,
}

impl Claim {
    /// The ZooKeeper session holding the lock: the lock lives as long as
    /// that session does.
    pub fn session(&self) -> i64 {
        self.session
    }
}

/// What happened to a failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Stays in the queue for a later try.
    Retry { attempts: u64 },
    /// Moved to the dead-letter set.
    Dead { attempts: u64 },
}

/// The queue of one cluster: its key, its Redis servers and the ZooKeeper
/// session holding locks. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    key: String,
    servers: Vec<Server>,
    zk: Zk,
    worker_id: String,
    /// Locks this queue holds now (lock path → session), so that
    /// [`Queue::pop_many`] does not ask ZooKeeper for items it holds itself.
    held: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// `hostname:pid`, the worker id the original writes into locks.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

impl Queue {
    /// A queue on `info`'s servers, taking connections from `pool` (shared
    /// across configuration changes so a reconfiguration keeps them).
    pub fn new(info: &QueueInfo, pool: &RedisPool, zk: Zk) -> Queue {
        let servers = info.servers.iter().map(|a| pool.server(a)).collect();
        Queue {
            inner: Arc::new(Inner {
                key: info.key.clone(),
                servers,
                zk,
                worker_id: worker_id(),
                held: Default::default(),
            }),
        }
    }

    pub fn key(&self) -> &str {
        &self.inner.key
    }

    pub fn servers(&self) -> Vec<HostPort> {
        self.inner.servers.iter().map(|s| s.addr.clone()).collect()
    }

    fn k(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.key)
    }

    fn shuffled(&self) -> Vec<&Server> {
        let mut v: Vec<&Server> = self.inner.servers.iter().collect();
        v.shuffle(&mut rand::rng());
        v
    }

    /// Pushes items to every server at once; ok when every item was taken
    /// by at least one server (the original's `w = 1`).
    pub async fn push_many(&self, items: &[String]) -> Result<(), QueueError> {
        if self.inner.servers.is_empty() {
            return Err(QueueError::NoServers);
        }
        if items.is_empty() {
            return Ok(());
        }
        let key = &self.inner.key;
        let first = self.k("first");
        let wake = self.k("wake");
        let pushes = self.k("pushes");
        let due = self.k("due");
        let results = futures::future::join_all(self.inner.servers.iter().map(|s| {
            let mut p = redis::pipe();
            for item in items {
                p.cmd("SADD").arg(key).arg(item).ignore();
                p.cmd("HINCRBY").arg(&pushes).arg(item).arg(1).ignore();
            }
            // Due now and first seen now, by the server's clock.
            let now = || items.iter().map(|i| (i.as_str(), 0));
            zadd_from_now(&mut p, &due, "NX", now());
            zadd_from_now(&mut p, &first, "NX", now());
            p.cmd("PUBLISH").arg(&wake).arg(1).ignore();
            async move { (s.addr.clone(), s.pipe::<()>(&p).await) }
        }))
        .await;
        let errors: Vec<(HostPort, String)> = results
            .iter()
            .filter_map(|(a, r)| r.as_ref().err().map(|e| (a.clone(), e.clone())))
            .collect();
        if errors.len() == results.len() {
            return Err(QueueError::NoServerTook(errors));
        }
        for (addr, error) in &errors {
            tracing::warn!(%addr, %error, "queue Redis server missed a push; the others took it");
        }
        Ok(())
    }

    /// Pushes one item.
    pub async fn push(&self, item: &str) -> Result<(), QueueError> {
        self.push_many(&[item.to_string()]).await
    }

    /// Takes an item and locks it, or `None` when every answering server
    /// looks empty (or every candidate is locked by other workers). Looks
    /// at every server, in random order, before saying empty.
    pub async fn pop(&self) -> Result<Option<Claim>, QueueError> {
        if self.inner.servers.is_empty() {
            return Err(QueueError::NoServers);
        }
        let key = &self.inner.key;
        let mut errors = Vec::new();
        let mut answered = false;
        for server in self.shuffled() {
            let candidates = match self.due_candidates(server, 16).await {
                Ok(v) => v,
                Err(e) => {
                    errors.push((server.addr.clone(), e));
                    continue;
                }
            };
            answered = true;
            for item in candidates {
                if let Some(claim) = self.lock(&item).await? {
                    // Another worker may have finished it between our read and lock.
                    let still: Result<bool, String> = server
                        .cmd(redis::cmd("SISMEMBER").arg(key).arg(&item))
                        .await;
                    if matches!(still, Ok(false)) {
                        self.unlock(&claim).await;
                        continue;
                    }
                    let mut claims = [claim];
                    self.read_pushes(&mut claims).await;
                    let [claim] = claims;
                    return Ok(Some(claim));
                }
            }
        }
        if !answered {
            return Err(QueueError::NoServerAnswered(errors));
        }
        Ok(None)
    }

    async fn lock(&self, item: &str) -> Result<Option<Claim>, QueueError> {
        let name = lock_name(&self.inner.key, item);
        let path = self.inner.zk.path(&name);
        let p = path.clone();
        let data = self.inner.worker_id.clone().into_bytes();
        let client = self.inner.zk.client().await?;
        let session = client.session_id().0;
        let r = self
            .inner
            .zk
            .call(&path, |c| async move {
                use zookeeper_client as zkc;
                c.create(
                    &p,
                    &data,
                    &zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all()),
                )
                .await
            })
            .await;
        match r {
            Ok(_) => {
                self.hold(&path, session);
                Ok(Some(Claim {
                    item: item.to_string(),
                    lock_path: path,
                    session,
                    pushes: Vec::new(),
                }))
            }
            Err(ZkError::Request {
                source: zookeeper_client::Error::NodeExists,
                ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the claim's lock. Retries transient failures while the
    /// claim's session lives: a session that survives a disconnection keeps
    /// its ephemeral lock, and a lock left behind would hide the item from
    /// every worker for as long as this process runs. Never deletes the lock
    /// once the session changed: it may be another worker's by then.
    async fn unlock(&self, claim: &Claim) {
        self.unhold(std::slice::from_ref(claim));
        let mut pause = Duration::from_millis(50);
        loop {
            match *self.inner.zk.state().borrow() {
                ConnState::Connected { session_id } if session_id != claim.session => return,
                // The lock vanished (or vanishes) with the session.
                ConnState::Expired { .. } | ConnState::Closed => return,
                ConnState::Connected { .. } | ConnState::Disconnected { .. } => {}
            }
            let p = claim.lock_path.clone();
            let r = self
                .inner
                .zk
                .call(
                    &claim.lock_path,
                    |c| async move { c.delete(&p, None).await },
                )
                .await;
            match r {
                Ok(())
                | Err(ZkError::Request {
                    source: zookeeper_client::Error::NoNode,
                    ..
                }) => return,
                Err(e) => {
                    tracing::debug!(error = %e, lock = %claim.lock_path, "could not delete queue lock; retrying");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Whether the claim's lock is still held by this session.
    pub async fn holds(&self, claim: &Claim) -> Result<bool, QueueError> {
        let p = claim.lock_path.clone();
        match self
            .inner
            .zk
            .call(&claim.lock_path, |c| async move { c.get_data(&p).await })
            .await
        {
            Ok((_, stat)) => Ok(stat.ephemeral_owner == claim.session),
            Err(ZkError::Request {
                source: zookeeper_client::Error::NoNode,
                ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks an item done: removed from every server, then unlocked.
    /// Refuses (and removes nothing) when the lock was lost meanwhile.
    pub async fn done(&self, claim: &Claim) -> Result<(), QueueError> {
        if !self.holds(claim).await? {
            return Err(QueueError::LockLost);
        }
        self.remove_done(&[claim]).await;
        self.unlock(claim).await;
        Ok(())
    }

    /// Moves due times later (`item`, by how long from now), on every
    /// server that has one for the item; best effort (a miss only means the
    /// item is looked at again sooner).
    pub(super) async fn postpone(&self, items: &[(String, Duration)]) {
        let due = self.k("due");
        let results = futures::future::join_all(self.inner.servers.iter().map(|s| {
            let mut p = redis::pipe();
            zadd_from_now(
                &mut p,
                &due,
                "XX",
                items
                    .iter()
                    .map(|(item, wait)| (item.as_str(), wait.as_millis() as u64)),
            );
            async move { (s.addr.clone(), s.pipe::<()>(&p).await) }
        }))
        .await;
        for (addr, r) in results {
            if let Err(error) = r {
                tracing::debug!(%addr, %error, "could not postpone tasks");
            }
        }
    }

    /// Up to `want` items of `server` due now (see [`DUE_CANDIDATES`]).
    pub(super) async fn due_candidates(
        &self,
        server: &Server,
        want: usize,
    ) -> Result<Vec<String>, String> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(with_server_now(DUE_CANDIDATES))
            .arg(2)
            .arg(&self.inner.key)
            .arg(self.k("due"))
            .arg(rand::random::<f64>())
            .arg(want);
        let mut items: Vec<String> = server.cmd(&cmd).await?;
        // Workers reading the same window lock different items first.
        items.shuffle(&mut rand::rng());
        Ok(items)
    }

    /// Reads each claim's push count on every server (after its lock is
    /// taken: a push after this read is copied again).
    pub(super) async fn read_pushes(&self, claims: &mut [Claim]) {
        if claims.is_empty() {
            return;
        }
        let pushes = self.k("pushes");
        let per_server = futures::future::join_all(self.inner.servers.iter().map(|s| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(&pushes);
            for c in claims.iter() {
                cmd.arg(&c.item);
            }
            async move { s.cmd::<Vec<Option<String>>>(&cmd).await }
        }))
        .await;
        for (i, c) in claims.iter_mut().enumerate() {
            c.pushes = per_server
                .iter()
                .map(|r| match r {
                    Ok(v) => Some(v.get(i).cloned().flatten().unwrap_or_default()),
                    Err(_) => None,
                })
                .collect();
        }
    }

    /// Removes finished items, with what we kept on them, from every
    /// server where no push came after the claim read its count. A server
    /// that misses it gives the items back later, and they are copied once
    /// more: harmless.
    async fn remove_done(&self, claims: &[&Claim]) {
        let keys = [
            self.inner.key.clone(),
            self.k("first"),
            self.k("tries"),
            self.k("errors"),
            self.k("pushes"),
            self.k("due"),
        ];
        let results =
            futures::future::join_all(self.inner.servers.iter().enumerate().map(|(i, s)| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(REMOVE_DONE).arg(keys.len()).arg(&keys[..]);
                let mut any = false;
                for c in claims {
                    if let Some(Some(count)) = c.pushes.get(i) {
                        cmd.arg(&c.item).arg(count);
                        any = true;
                    }
                }
                async move {
                    let r = if any { s.cmd::<u64>(&cmd).await } else { Ok(0) };
                    (s.addr.clone(), r)
                }
            }))
            .await;
        for (addr, r) in results {
            match r {
                Ok(removed) if (removed as usize) < claims.len() => {
                    tracing::debug!(%addr, kept = claims.len() - removed as usize, "items pushed again during their copy stay queued");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%addr, %error, items = claims.len(), "queue Redis server missed removals of done items");
                }
            }
        }
    }

    /// Records a failed attempt and unlocks. The item moves to the
    /// dead-letter set when `dead` says so, given the attempts so far and
    /// its age (from its first-queued time, or first sight for an item an
    /// original daemon pushed); otherwise it is not tried again before
    /// `retry_in(attempts)` has passed.
    pub async fn failed(
        &self,
        claim: &Claim,
        error: &str,
        retry_in: impl Fn(u64) -> Duration,
        dead: impl Fn(u64, Option<Duration>) -> bool,
    ) -> Result<FailOutcome, QueueError> {
        let (tries, errs, first, due) = (
            self.k("tries"),
            self.k("errors"),
            self.k("first"),
            self.k("due"),
        );
        let results = futures::future::join_all(self.inner.servers.iter().map(|s| {
            let mut p = redis::pipe();
            p.cmd("HINCRBY").arg(&tries).arg(&claim.item).arg(1);
            p.cmd("HSET")
                .arg(&errs)
                .arg(&claim.item)
                .arg(error)
                .ignore();
            // First sight, for items an original daemon pushed; and the
            // server's time, to tell the age by the same clock.
            p.cmd("EVAL")
                .arg(with_server_now(ZADD_FROM_NOW))
                .arg(1)
                .arg(&first)
                .arg("NX")
                .arg(&claim.item)
                .arg(0);
            p.cmd("ZSCORE").arg(&first).arg(&claim.item);
            async move { s.pipe::<(u64, u64, Option<f64>)>(&p).await }
        }))
        .await;
        let answers: Vec<(u64, u64, Option<f64>)> =
            results.into_iter().filter_map(Result::ok).collect();
        let attempts = answers.iter().map(|a| a.0).max().unwrap_or(0);
        let age = answers
            .iter()
            .filter_map(|&(_, now, first)| first.map(|f| now.saturating_sub(f as u64)))
            .max()
            .map(Duration::from_millis);
        let outcome = if dead(attempts, age) && self.holds(claim).await? {
            let (key, dead_set) = (&self.inner.key, self.k("dead"));
            futures::future::join_all(self.inner.servers.iter().map(|s| {
                let mut p = redis::pipe();
                p.cmd("SADD").arg(&dead_set).arg(&claim.item).ignore();
                p.cmd("SREM").arg(key).arg(&claim.item).ignore();
                p.cmd("ZREM").arg(&due).arg(&claim.item).ignore();
                async move { s.pipe::<()>(&p).await }
            }))
            .await;
            FailOutcome::Dead { attempts }
        } else {
            let wait = retry_in(attempts).as_millis() as u64;
            futures::future::join_all(self.inner.servers.iter().map(|s| {
                let mut p = redis::pipe();
                zadd_from_now(&mut p, &due, "ANY", [(claim.item.as_str(), wait)]);
                async move { s.pipe::<()>(&p).await }
            }))
            .await;
            FailOutcome::Retry { attempts }
        };
        self.unlock(claim).await;
        Ok(outcome)
    }

    /// Unlocks without counting an attempt (shutdown).
    pub async fn release(&self, claim: &Claim) {
        self.unlock(claim).await;
    }
}
