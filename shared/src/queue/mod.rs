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
mod redis_conn;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use rand::seq::SliceRandom;
use thiserror::Error;

pub use redis_conn::{RedisPool, WakeListener};

use crate::model::{HostPort, QueueInfo};
use crate::zk::{ConnState, Zk, ZkError};
use redis_conn::Server;

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

/// Done on one server: `KEYS` = key, first, tries, errors, pushes, due; `ARGV`
/// = item, push count read at claim (`""`: none), item, count, ... Removes
/// an item only if its count is unchanged; returns how many it removed.
const REMOVE_DONE: &str = r#"
local removed = 0
for i = 1, #ARGV, 2 do
  local item, want = ARGV[i], ARGV[i + 1]
  local have = redis.call('HGET', KEYS[5], item)
  if (have == false and want == '') or have == want then
    redis.call('SREM', KEYS[1], item)
    redis.call('ZREM', KEYS[2], item)
    redis.call('HDEL', KEYS[3], item)
    redis.call('HDEL', KEYS[4], item)
    redis.call('HDEL', KEYS[5], item)
    redis.call('ZREM', KEYS[6], item)
    removed = removed + 1
  end
end
return removed
"#;

/// The server's clock in ms, in a script. Due and first-queued times are
/// each Redis server's own clock, never a daemon's: daemons whose clocks
/// disagree by minutes still agree on when a task is due. (Scripts that
/// write after `TIME` need effects replication: the default since Redis 5,
/// asked for explicitly on older servers.)
const SERVER_NOW: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Sets scores in the sorted set `KEYS[1]` to the server's time (ms) plus
/// an offset: `ARGV[1]` is `NX` (new members only), `XX` (existing only)
/// or `ANY`, then pairs of item and offset (ms). Returns the server's time.
const ZADD_FROM_NOW: &str = r#"
for i = 2, #ARGV, 2 do
  local score = now + tonumber(ARGV[i + 1])
  if ARGV[1] == 'ANY' then
    redis.call('ZADD', KEYS[1], score, ARGV[i])
  else
    redis.call('ZADD', KEYS[1], ARGV[1], score, ARGV[i])
  end
end
return now
"#;

/// Up to `ARGV[2]` items of `KEYS[1]` (the queue set) that are due by the
/// server's time in `KEYS[2]` (the due times), from a random place
/// (`ARGV[1]` in 0..1) among the due ones so that workers spread out.
/// Due entries of items no longer queued (done by an original replicator)
/// are dropped; when too few are due, a sample of the set adopts items
/// without a due time (pushed by an original daemon) as due now.
const DUE_CANDIDATES: &str = r#"
local want = tonumber(ARGV[2])
local n = redis.call('ZCOUNT', KEYS[2], '-inf', now)
local off = math.floor(tonumber(ARGV[1]) * math.max(0, n - want))
local out = {}
for _, item in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', off, want)) do
  if redis.call('SISMEMBER', KEYS[1], item) == 1 then
    table.insert(out, item)
  else
    redis.call('ZREM', KEYS[2], item)
  end
end
if #out < want then
  for _, item in ipairs(redis.call('SRANDMEMBER', KEYS[1], want)) do
    if redis.call('ZSCORE', KEYS[2], item) == false then
      redis.call('ZADD', KEYS[2], now, item)
      table.insert(out, item)
    end
  end
end
return out
"#;

/// `SERVER_NOW` then `body`: one script.
fn with_server_now(body: &str) -> String {
    format!("{SERVER_NOW}{body}")
}

/// Adds to `p` an `EVAL` of [`ZADD_FROM_NOW`] on `set` (its answer
/// ignored): each item's score becomes the server's time plus its offset.
fn zadd_from_now<'a>(
    p: &mut redis::Pipeline,
    set: &str,
    mode: &str,
    items: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let cmd = p
        .cmd("EVAL")
        .arg(with_server_now(ZADD_FROM_NOW))
        .arg(1)
        .arg(set)
        .arg(mode);
    for (item, offset_ms) in items {
        cmd.arg(item).arg(offset_ms);
    }
    cmd.ignore();
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

/// Decodes an item for display; items pushed by hand may not be tasks.
pub fn describe_item(item: &str) -> String {
    match crate::model::ReplicationTask::decode(item) {
        Ok(t) => format!("{} → {} (from {})", t.path, t.to, t.from.join(",")),
        Err(_) => item.to_string(),
    }
}
