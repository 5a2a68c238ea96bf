//! Taking and finishing several items at once, for busy workers.
//!
//! Same format and locks as [`Queue::pop`] and [`Queue::done`] (one
//! ephemeral znode per item, `<key><md5>`), but the locks of a batch are
//! created, checked and deleted with one ZooKeeper request each (multi
//! operations) instead of one per item. ZooKeeper's cost is per request:
//! measured on a 2-vCPU machine, 16 workers creating and deleting one lock
//! per request cost it about 1.2 ms of CPU per item, in batches of 16
//! about 0.17 ms; at one request per lock, ZooKeeper and not the storage
//! nodes sets the replicator's pace.

use std::time::Duration;

use zookeeper_client as zkc;

use super::{Claim, Queue, QueueError, lock_name};
use crate::zk::{ConnState, ZkError};

/// Rounds of a multi-create after some candidates turned out locked.
const LOCK_ROUNDS: usize = 2;

/// Most candidates read from a server per pop.
const MAX_SAMPLE: usize = 1024;

impl Queue {
    pub(super) fn hold(&self, lock_path: &str, session: i64) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(lock_path.to_string(), session);
    }

    pub(super) fn unhold(&self, claims: &[Claim]) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        for c in claims {
            held.remove(&c.lock_path);
        }
    }

    fn held_count(&self) -> usize {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether this queue holds the lock on `session` now; forgets locks
    /// of sessions gone since.
    fn holding(&self, lock_path: &str, session: i64) -> bool {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(lock_path) {
            Some(s) if *s == session => true,
            Some(_) => {
                held.remove(lock_path);
                false
            }
            None => false,
        }
    }

    /// Takes up to `max` items and locks them, like [`Queue::pop`] (every
    /// server in random order until one gives items), with one ZooKeeper
    /// request for all the locks. Empty when every answering server looks
    /// empty or its items are locked by other workers.
    pub async fn pop_many(&self, max: usize) -> Result<Vec<Claim>, QueueError> {
        self.pop_many_where(max, |_| None).await
    }

    /// [`Queue::pop_many`], except for the due items `later` gives a wait
    /// for: those are not locked but postponed by it (their due time moved,
    /// no lock taken), so that tasks waiting
    /// for a node that is down cost neither locks nor room in the next
    /// samples.
    pub async fn pop_many_where(
        &self,
        max: usize,
        later: impl Fn(&str) -> Option<Duration>,
    ) -> Result<Vec<Claim>, QueueError> {
        if self.inner.servers.is_empty() {
            return Err(QueueError::NoServers);
        }
        let max = max.max(1);
        let key = &self.inner.key;
        let mut errors = Vec::new();
        let mut answered = false;
        // Items this queue holds come back in the sample too; ask for as
        // many more, or near the end of a burst (few items besides ours)
        // the sample can miss the free ones and the claimer would sleep
        // until the next poll.
        let want = ((2 * max).max(16) + self.held_count()).min(MAX_SAMPLE);
        for server in self.shuffled() {
            let candidates = match self.due_candidates(server, want).await {
                Ok(v) => v,
                Err(e) => {
                    errors.push((server.addr.clone(), e));
                    continue;
                }
            };
            answered = true;
            // `later` is asked once per item (it may let one probe through).
            let mut postponed = Vec::new();
            let candidates: Vec<String> = candidates
                .into_iter()
                .filter_map(|item| match later(&item) {
                    Some(until) => {
                        postponed.push((item, until));
                        None
                    }
                    None => Some(item),
                })
                .collect();
            if !postponed.is_empty() {
                self.postpone(&postponed).await;
            }
            let mut claims = self.lock_many(&candidates, max).await?;
            if claims.is_empty() {
                continue;
            }
            // Another worker may have finished some between our read and
            // lock; the push counts are read in the same round trip.
            let mut p = redis::pipe();
            for c in &claims {
                p.cmd("SISMEMBER").arg(key).arg(&c.item);
            }
            let (still, ()) =
                tokio::join!(server.pipe::<Vec<bool>>(&p), self.read_pushes(&mut claims));
            if let Ok(still) = still {
                let mut stale = Vec::new();
                let mut kept = Vec::new();
                for (c, member) in claims.into_iter().zip(still) {
                    if member { kept.push(c) } else { stale.push(c) }
                }
                self.unlock_many(&stale).await;
                claims = kept;
            }
            if !claims.is_empty() {
                return Ok(claims);
            }
        }
        if !answered {
            return Err(QueueError::NoServerAnswered(errors));
        }
        Ok(Vec::new())
    }

    /// Locks up to `max` of `candidates` with multi-creates, skipping the
    /// ones locked by others.
    async fn lock_many(&self, candidates: &[String], max: usize) -> Result<Vec<Claim>, QueueError> {
        let client = self.inner.zk.client().await?;
        let session = client.session_id().0;
        let claim = |item: &String| Claim {
            item: item.clone(),
            lock_path: self.inner.zk.path(&lock_name(&self.inner.key, item)),
            session,
            pushes: Vec::new(),
        };
        // Items this queue holds itself are not asked about.
        let mut free = candidates
            .iter()
            .map(claim)
            .filter(|c| !self.holding(&c.lock_path, session));
        let mut pending: Vec<Claim> = free.by_ref().take(max).collect();
        let data = self.inner.worker_id.as_bytes();
        let options = zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all());
        let timeout = self.inner.zk.request_timeout();
        for _ in 0..LOCK_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let mut multi = client.new_multi_writer();
            for c in &pending {
                multi
                    .add_create(&c.lock_path, data, &options)
                    .map_err(|source| request_error(&c.lock_path, source))?;
            }
            match tokio::time::timeout(timeout, multi.commit()).await {
                Ok(Ok(_)) => {
                    for c in &pending {
                        self.hold(&c.lock_path, session);
                    }
                    return Ok(pending);
                }
                Ok(Err(zkc::MultiWriteError::OperationFailed {
                    index,
                    source: zkc::Error::NodeExists,
                })) if index < pending.len() => {
                    // Locked by another worker: try the others, and one more.
                    pending.remove(index);
                    if let Some(next) = free.next() {
                        pending.push(next);
                    }
                }
                Ok(Err(e)) => {
                    let path = pending
                        .first()
                        .map(|c| c.lock_path.clone())
                        .unwrap_or_default();
                    let e: zkc::Error = e.into();
                    // The answer may be lost after ZooKeeper applied it: the
                    // locks we own are ours to use.
                    if matches!(e, zkc::Error::ConnectionLoss | zkc::Error::Custom(_)) {
                        return self
                            .owned(pending)
                            .await
                            .or(Err(request_error(&path, e).into()));
                    }
                    return Err(request_error(&path, e).into());
                }
                Err(_) => {
                    let path = pending
                        .first()
                        .map(|c| c.lock_path.clone())
                        .unwrap_or_default();
                    return self.owned(pending).await.or(Err(ZkError::Timeout {
                        path,
                        secs: timeout.as_secs(),
                    }
                    .into()));
                }
            }
        }
        // Contended (many candidates locked by other workers): one create
        // each, all at once.
        let mut claims = Vec::new();
        let tries = pending.into_iter().chain(free).take(max).map(|c| {
            let (client, options) = (&client, &options);
            async move {
                let r =
                    tokio::time::timeout(timeout, client.create(&c.lock_path, data, options)).await;
                (c, r)
            }
        });
        for (c, r) in futures::future::join_all(tries).await {
            match r {
                Ok(Ok(_)) => {
                    self.hold(&c.lock_path, session);
                    claims.push(c);
                }
                Ok(Err(zkc::Error::NodeExists)) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, lock = %c.lock_path, "cannot lock"),
                Err(_) => tracing::debug!(lock = %c.lock_path, "lock request timed out"),
            }
        }
        Ok(claims)
    }

    /// The claims whose lock exists and belongs to the claim's session,
    /// read in one request.
    async fn owned(&self, claims: Vec<Claim>) -> Result<Vec<Claim>, QueueError> {
        if claims.is_empty() {
            return Ok(claims);
        }
        let held = self.holds_many(&claims).await?;
        let mine: Vec<Claim> = claims
            .into_iter()
            .zip(held)
            .filter_map(|(c, h)| h.then_some(c))
            .collect();
        for c in &mine {
            self.hold(&c.lock_path, c.session);
        }
        Ok(mine)
    }

    /// Whether each claim's lock is still held by its session, in one
    /// request.
    pub async fn holds_many(&self, claims: &[Claim]) -> Result<Vec<bool>, QueueError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.inner.zk.client().await?;
        let first = claims[0].lock_path.clone();
        let mut reader = client.new_multi_reader();
        for c in claims {
            reader
                .add_get_data(&c.lock_path)
                .map_err(|source| request_error(&c.lock_path, source))?;
        }
        let timeout = self.inner.zk.request_timeout();
        let results = match tokio::time::timeout(timeout, reader.commit()).await {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => return Err(request_error(&first, source).into()),
            Err(_) => {
                return Err(ZkError::Timeout {
                    path: first,
                    secs: timeout.as_secs(),
                }
                .into());
            }
        };
        claims
            .iter()
            .zip(results)
            .map(|(c, r)| match r {
                zkc::MultiReadResult::Data { stat, .. } => Ok(stat.ephemeral_owner == c.session),
                zkc::MultiReadResult::Error {
                    err: zkc::Error::NoNode,
                } => Ok(false),
                zkc::MultiReadResult::Error { err } => Err(request_error(&c.lock_path, err).into()),
                _ => Ok(false),
            })
            .collect()
    }

    /// Marks items done like [`Queue::done`]: one ZooKeeper read checks
    /// every lock, the items are removed from every server, one ZooKeeper
    /// write deletes the locks. Returns, per claim, whether it was done;
    /// `false` is [`QueueError::LockLost`]: nothing removed.
    pub async fn done_many(&self, claims: &[Claim]) -> Result<Vec<bool>, QueueError> {
        let held = self.holds_many(claims).await?;
        let mine: Vec<&Claim> = claims
            .iter()
            .zip(&held)
            .filter_map(|(c, h)| h.then_some(c))
            .collect();
        if mine.is_empty() {
            return Ok(held);
        }
        self.remove_done(&mine).await;
        let mine: Vec<Claim> = mine.into_iter().cloned().collect();
        self.unlock_many(&mine).await;
        Ok(held)
    }

    /// Deletes the claims' locks in one request, like `unlock` for each:
    /// retries transient failures while their session lives, never once it
    /// changed.
    pub(super) async fn unlock_many(&self, claims: &[Claim]) {
        self.unhold(claims);
        let mut pending: Vec<&Claim> = claims.iter().collect();
        let mut pause = Duration::from_millis(50);
        while let Some(session) = pending.first().map(|c| c.session) {
            match *self.inner.zk.state().borrow() {
                ConnState::Connected { session_id } if session_id != session => return,
                ConnState::Expired { .. } | ConnState::Closed => return,
                ConnState::Connected { .. } | ConnState::Disconnected { .. } => {}
            }
            let Ok(client) = self.inner.zk.client().await else {
                return;
            };
            let mut multi = client.new_multi_writer();
            for c in &pending {
                if multi.add_delete(&c.lock_path, None).is_err() {
                    return;
                }
            }
            let timeout = self.inner.zk.request_timeout();
            match tokio::time::timeout(timeout, multi.commit()).await {
                Ok(Ok(_)) => return,
                Ok(Err(zkc::MultiWriteError::OperationFailed {
                    index,
                    source: zkc::Error::NoNode,
                })) if index < pending.len() => {
                    // Already gone: delete the others.
                    pending.remove(index);
                    continue;
                }
                Ok(Err(e)) => {
                    let e: zkc::Error = e.into();
                    if !matches!(
                        e,
                        zkc::Error::ConnectionLoss | zkc::Error::Custom(_) | zkc::Error::Throttled
                    ) {
                        // Not transient: they go with the session.
                        tracing::warn!(error = %e, locks = pending.len(), "cannot delete queue locks");
                        return;
                    }
                    tracing::debug!(error = %e, locks = pending.len(), "could not delete queue locks; retrying");
                }
                Err(_) => {
                    tracing::debug!(
                        locks = pending.len(),
                        "deleting queue locks timed out; retrying"
                    );
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

fn request_error(path: &str, source: zkc::Error) -> ZkError {
    ZkError::Request {
        path: path.to_string(),
        source,
    }
}
