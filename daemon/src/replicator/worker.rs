//! The work, in three stages joined by bounded channels:
//!
//! 1. [`claimer`]s take tasks from the queue ahead of the copiers, a batch
//!    at a time (one ZooKeeper request locks the whole batch), never more
//!    than the hand-off channel holds;
//! 2. `concurrency` [`copier`]s copy the files, one each at a time;
//! 3. [`completer`]s mark copied tasks done, a batch at a time (one
//!    ZooKeeper read checks the locks, one write deletes them).
//!
//! Why: each queue operation costs ZooKeeper requests (the original's
//! lock create and delete). Done in turn with each copy, one request per
//! lock, ZooKeeper's latency and CPU, not the storage nodes, set the pace
//! (see `backpack_shared::queue::batch`). Locks held at once stay bounded:
//! the copies, the hand-off channel and the completion channel.
//!
//! Nothing busy-loops: an empty queue waits for a wake-up (a push published
//! by our coordinators, relayed to one idle claimer at a time) or the slow
//! poll; errors back off exponentially; a lost ZooKeeper connection pauses
//! the claimers until the session is back.

use std::sync::Arc;
use std::time::Duration;

use backpack_shared::model::ReplicationTask;
use backpack_shared::queue::{Claim, FailOutcome};
use backpack_shared::zk::{ConnState, Zk};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::ReplicatorConfig;
use super::copy::{TaskError, replicate};
use super::live::Active;
use super::stats::Stats;

/// What every worker shares.
pub(crate) struct Ctx {
    pub zk: Zk,
    pub client: crate::node_client::NodeClient,
    pub config: ReplicatorConfig,
    pub stats: Arc<Stats>,
    pub active: watch::Receiver<Option<Arc<Active>>>,
    /// Wake-ups relayed from the queue's channel, one idle claimer each.
    pub wake: Arc<Notify>,
    /// Stop taking tasks (shutdown asked).
    pub shutdown: CancellationToken,
    /// The shutdown deadline passed: cut copies, release their locks.
    pub hard_stop: CancellationToken,
    /// Destination nodes that are down: their tasks wait, unlocked.
    pub destinations: super::destinations::Destinations,
}

/// Exponential backoff with jitter, reset by a success.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The pause to take now (with up to 25% jitter so workers spread out).
    pub fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.as_millis() as u64 / 4;
        base + Duration::from_millis(if jitter > 0 {
            rand::random::<u64>() % jitter
        } else {
            0
        })
    }
}

/// Whether the session `session` is gone for good in `state`: expired,
/// closed or replaced (a disconnected session may still come back).
fn session_gone(state: &ConnState, session: i64) -> bool {
    match state {
        ConnState::Connected { session_id } => *session_id != session,
        ConnState::Disconnected { .. } => false,
        ConnState::Expired { .. } | ConnState::Closed => true,
    }
}

/// Resolves when the session `session` is gone for good (expired, closed
/// or replaced): the locks it held have vanished.
async fn session_lost(mut state: watch::Receiver<ConnState>, session: i64) {
    let _ = state.wait_for(|s| session_gone(s, session)).await;
}

/// Forwards each wake-up of the current queue to one idle claimer; a
/// claimer that finds tasks passes the wake-up on (see `take`), so a burst
/// of pushes reaches as many claimers as it needs without waking every
/// idle one for every push.
pub(crate) async fn relay_wakeups(
    mut active: watch::Receiver<Option<Arc<Active>>>,
    local: Arc<Notify>,
    stop: CancellationToken,
) {
    loop {
        let current = active.borrow_and_update().clone();
        match current {
            Some(a) => {
                tokio::select! {
                    _ = a.wake.notified() => local.notify_one(),
                    r = active.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
            None => {
                tokio::select! {
                    r = active.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

impl Ctx {
    /// Sleeps unless shutdown comes first; false when shutting down.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.cancelled() => false,
        }
    }
}

/// A task taken from the queue and locked.
pub(crate) struct Popped {
    active: Arc<Active>,
    claim: Claim,
}

/// A copied task on its way to a completer.
pub(crate) struct Finished {
    popped: Popped,
    task: ReplicationTask,
    bytes: u64,
}

/// A channel's receiving end shared by several tasks.
pub(crate) type Shared<T> = Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>;

/// Most tasks claimed, or marked done, in one batch.
const BATCH: usize = 64;

/// How long a completion batch may wait to fill up to [`LINGER_UNTIL`].
const LINGER: Duration = Duration::from_millis(10);
const LINGER_UNTIL: usize = 32;

/// Batches of claims or completions in flight at once. While they are,
/// the next batch grows: batches are as large as the load makes them (one
/// task when idle, so no added latency), with no timer.
const IN_FLIGHT: usize = 2;

/// The claimer: takes as many tasks as the hand-off channel has free slots
/// for (up to [`BATCH`]), so that the tasks claimed but not yet copying
/// never outnumber the channel's size; up to [`IN_FLIGHT`] batches at once.
pub(crate) async fn claimer(ctx: Arc<Ctx>, tx: mpsc::Sender<Popped>, tracker: TaskTracker) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut n = 0;
    loop {
        let (turn, first) = tokio::select! {
            r = async {
                let turn = in_flight.clone().acquire_owned().await;
                let first = tx.clone().reserve_owned().await;
                (turn, first)
            } => match r {
                (Ok(t), Ok(f)) => (t, f),
                _ => break,
            },
            _ = ctx.shutdown.cancelled() => break,
        };
        // Claim once half the channel is free (bigger batches, fewer
        // ZooKeeper requests), or at once when the copiers have nothing
        // queued.
        let want = (tx.max_capacity() / 2).clamp(1, BATCH);
        let mut slots = vec![first];
        loop {
            while slots.len() < BATCH {
                match tx.clone().try_reserve_owned() {
                    Ok(s) => slots.push(s),
                    Err(_) => break,
                }
            }
            let queued = tx.max_capacity() - tx.capacity() - slots.len();
            if slots.len() >= want || queued == 0 {
                break;
            }
            tokio::select! {
                s = tx.clone().reserve_owned() => match s {
                    Ok(s) => slots.push(s),
                    Err(_) => break,
                },
                _ = ctx.shutdown.cancelled() => break,
            }
        }
        n += 1;
        let ctx = ctx.clone();
        tracker.spawn(async move {
            let mut backoff = Backoff::new(ctx.config.backoff_min, ctx.config.backoff_max);
            let mut last_error = None;
            if let Some(popped) = take(n, &ctx, slots.len(), &mut backoff, &mut last_error).await {
                for (slot, p) in slots.into_iter().zip(popped) {
                    slot.send(p);
                }
            }
            drop(turn);
        });
    }
    debug!("claimer stopped");
}

/// A copier: copies the claimed tasks' files one at a time and hands the
/// copied ones to the completers; a failed one records the attempt and
/// backs off. Returns at shutdown after its copy in flight.
pub(crate) async fn copier(
    n: usize,
    ctx: Arc<Ctx>,
    rx: Shared<Popped>,
    done: mpsc::Sender<Finished>,
) {
    loop {
        let next = tokio::select! {
            p = async { rx.lock().await.recv().await } => p,
            _ = ctx.shutdown.cancelled() => None,
        };
        let Some(popped) = next else { break };
        if ctx.shutdown.is_cancelled() {
            popped.active.queue.release(&popped.claim).await;
            break;
        }
        // Claimed ahead by a session that is gone: the lock is no longer ours.
        if session_gone(&ctx.zk.state().borrow(), popped.claim.session()) {
            ctx.stats.abandoned();
            continue;
        }
        match copy(&ctx, &popped).await {
            Copied::Ok { task, bytes } => {
                ctx.destinations.ok(&task.to);
                if let Err(e) = done
                    .send(Finished {
                        popped,
                        task,
                        bytes,
                    })
                    .await
                {
                    // No completer left (cannot happen before the copiers
                    // stop): release rather than leave the lock.
                    let c = e.0;
                    c.popped.active.queue.release(&c.popped.claim).await;
                    break;
                }
            }
            Copied::Failed { task, error } => {
                if let Some(t) = &task {
                    if error.destination_down() {
                        ctx.destinations.failed(&t.to);
                    } else {
                        ctx.destinations.unsettled(&t.to);
                    }
                }
                // No pause here: the task waits out its own backoff in the
                // queue, and a destination that is down holds back its
                // other tasks, so this copier moves on to healthy work.
                fail(&ctx, &popped, task.as_ref(), error).await;
            }
            Copied::Abandoned => {}
            Copied::Stopped => break,
        }
    }
    debug!(copier = n, "copier stopped");
}

/// The completer: marks copied tasks done, every task waiting at once in
/// one batch (up to [`BATCH`]), up to [`IN_FLIGHT`] batches at once. Runs
/// until every copier has stopped.
pub(crate) async fn completer(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Finished>,
    tracker: TaskTracker,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(turn) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut batch = match rx.recv().await {
            Some(c) => vec![c],
            None => break,
        };
        // Under load, let a batch fill for a moment: fewer ZooKeeper
        // requests. The files are already on their nodes; only the queue's
        // bookkeeping waits.
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if batch.len() >= LINGER_UNTIL || ctx.shutdown.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        c = rx.recv() => match c {
                            Some(c) => batch.push(c),
                            None => break,
                        },
                        _ = &mut linger => break,
                    }
                }
            }
        }
        let ctx = ctx.clone();
        tracker.spawn(async move {
            // Tasks claimed before a reconfiguration belong to the old queue.
            while !batch.is_empty() {
                let active = batch[0].popped.active.clone();
                let (same, rest): (Vec<Finished>, Vec<Finished>) = batch
                    .into_iter()
                    .partition(|c| Arc::ptr_eq(&c.popped.active, &active));
                finish(&ctx, &active, &same).await;
                batch = rest;
            }
            drop(turn);
        });
    }
}

/// Releases the tasks claimed but never copied (at shutdown).
pub(crate) async fn release_unstarted(rx: &Shared<Popped>) {
    let mut rx = rx.lock().await;
    rx.close();
    while let Some(p) = rx.recv().await {
        p.active.queue.release(&p.claim).await;
    }
}

/// Takes up to `max` tasks, waiting as long as it takes: while the session
/// is not connected (a lock taken now could not be trusted), for a
/// configuration, for a wake-up or the slow poll when the queue is empty,
/// with backoff on errors. `None` at shutdown.
async fn take(
    n: usize,
    ctx: &Ctx,
    max: usize,
    backoff: &mut Backoff,
    last_error: &mut Option<String>,
) -> Option<Vec<Popped>> {
    let mut active_rx = ctx.active.clone();
    let mut state = ctx.zk.state();
    loop {
        if ctx.shutdown.is_cancelled() {
            return None;
        }
        if !state.borrow_and_update().is_connected() {
            tokio::select! {
                _ = state.wait_for(|s| s.is_connected()) => {}
                _ = ctx.shutdown.cancelled() => return None,
            }
            continue;
        }
        let Some(active) = active_rx.borrow_and_update().clone() else {
            tokio::select! {
                _ = active_rx.changed() => {}
                _ = ctx.shutdown.cancelled() => return None,
            }
            continue;
        };
        // Tasks for a destination that is down are postponed, not locked.
        let later = |item: &str| {
            ReplicationTask::decode(item)
                .ok()
                .and_then(|t| ctx.destinations.wait_for(&t.to))
        };
        match active.queue.pop_many_where(max, later).await {
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    warn!(claimer = n, error = %msg, "cannot take tasks from the queue; retrying");
                    *last_error = Some(msg);
                } else {
                    debug!(claimer = n, error = %msg, "queue still failing");
                }
                if !ctx.pause(backoff.next()).await {
                    return None;
                }
            }
            Ok(claims) if claims.is_empty() => {
                if last_error.take().is_some() {
                    info!(claimer = n, "queue reachable again");
                }
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(ctx.config.poll_interval) => {}
                    _ = ctx.shutdown.cancelled() => return None,
                }
            }
            Ok(claims) => {
                if last_error.take().is_some() {
                    info!(claimer = n, "queue reachable again");
                }
                backoff.reset();
                // There may be more: hand the wake-up on to an idle claimer.
                ctx.wake.notify_one();
                return Some(
                    claims
                        .into_iter()
                        .map(|claim| Popped {
                            active: active.clone(),
                            claim,
                        })
                        .collect(),
                );
            }
        }
    }
}

enum Copied {
    Ok {
        task: ReplicationTask,
        bytes: u64,
    },
    Failed {
        task: Option<ReplicationTask>,
        error: TaskError,
    },
    /// The lock is gone (session lost): nothing more to do for this task.
    Abandoned,
    /// Cut by the shutdown deadline; the lock was released.
    Stopped,
}

/// Copies a task's file, unless the session (and with it the lock) is
/// lost first or the shutdown deadline passes.
async fn copy(ctx: &Ctx, p: &Popped) -> Copied {
    let _in_flight = ctx.stats.start();
    let task = match ReplicationTask::decode(&p.claim.item) {
        Ok(t) => t,
        Err(e) => {
            return Copied::Failed {
                task: None,
                error: TaskError::Undecodable(e.to_string()),
            };
        }
    };
    let lost = session_lost(ctx.zk.state(), p.claim.session());
    tokio::select! {
        r = replicate(&ctx.client, &p.active.servers, &task) => match r {
            Ok(bytes) => Copied::Ok { task, bytes },
            Err(error) => Copied::Failed { task: Some(task), error },
        },
        _ = lost => {
            ctx.stats.abandoned();
            warn!(path = %task.path, to = %task.to, "ZooKeeper session lost mid-copy; abandoning the task (its lock vanished; a worker will copy it again)");
            Copied::Abandoned
        }
        _ = ctx.hard_stop.cancelled() => {
            ctx.stats.abandoned();
            p.active.queue.release(&p.claim).await;
            info!(path = %task.path, to = %task.to, "shutdown deadline: copy cut, lock released; the task stays queued");
            Copied::Stopped
        }
    }
}

/// Marks copied tasks of one queue done, retrying transient ZooKeeper
/// failures while the session lives; never from a session that lost the
/// lock.
async fn finish(ctx: &Ctx, active: &Active, batch: &[Finished]) {
    let claims: Vec<_> = batch.iter().map(|c| c.popped.claim.clone()).collect();
    let Some(session) = claims.first().map(|c| c.session()) else {
        return;
    };
    let mut pause = Duration::from_millis(100);
    loop {
        match active.queue.done_many(&claims).await {
            Ok(done) => {
                for (c, ok) in batch.iter().zip(done) {
                    if ok {
                        ctx.stats.copied(c.bytes);
                        debug!(path = %c.task.path, to = %c.task.to, bytes = c.bytes, "copied");
                    } else {
                        ctx.stats.abandoned();
                        warn!(path = %c.task.path, to = %c.task.to, "copied, but the lock was lost with the ZooKeeper session: not marking it done; a worker will copy it again");
                    }
                }
                return;
            }
            Err(e) => {
                warn!(tasks = batch.len(), error = %e, "copied, but cannot mark them done yet; retrying");
            }
        }
        if session_gone(&ctx.zk.state().borrow(), session) {
            for c in batch {
                ctx.stats.abandoned();
                warn!(path = %c.task.path, to = %c.task.to, "ZooKeeper session lost before the copy was marked done; a worker will copy it again");
            }
            return;
        }
        if ctx.hard_stop.is_cancelled() {
            for c in &claims {
                ctx.stats.abandoned();
                active.queue.release(c).await;
            }
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether a task that just failed with `e` goes to the dead-letter set,
/// after `attempts` failed attempts and at `age`: at once for an error no
/// retry can fix, after `max_attempts` when the file is on no source,
/// after `max_age` otherwise (a node down for maintenance heals).
/// `max_attempts` 0 turns dead letters off.
pub(crate) fn dead_letter(
    config: &ReplicatorConfig,
    e: &TaskError,
    attempts: u64,
    age: Option<Duration>,
) -> bool {
    if config.max_attempts == 0 {
        return false;
    }
    if e.is_permanent() {
        return true;
    }
    if e.missing_everywhere() {
        return attempts >= config.max_attempts;
    }
    age.is_some_and(|a| a >= config.max_age)
}

/// The pause before another try after `attempts` failed ones: doubling
/// from `retry_min` to `retry_max`, with up to 25% jitter so that tasks
/// failed together do not come back together.
pub(crate) fn retry_in(config: &ReplicatorConfig, attempts: u64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(32) as u32;
    let base = config
        .retry_min
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(config.retry_max);
    let jitter = base.as_millis() as u64 / 4;
    base + Duration::from_millis(if jitter > 0 {
        rand::random::<u64>() % jitter
    } else {
        0
    })
}

/// Records a failed attempt (and the error) on the task and unlocks it;
/// the task waits out its backoff in the queue, or becomes a dead letter
/// (see [`dead_letter`]).
async fn fail(ctx: &Ctx, p: &Popped, task: Option<&ReplicationTask>, e: TaskError) {
    let msg = e.to_string();
    let (path, to) = task.map_or(("?", "?"), |t| (t.path.as_str(), t.to.as_str()));
    let config = &ctx.config;
    let failed = p.active.queue.failed(
        &p.claim,
        &msg,
        |attempts| retry_in(config, attempts),
        |attempts, age| dead_letter(config, &e, attempts, age),
    );
    match failed.await {
        Ok(FailOutcome::Retry { attempts }) => {
            ctx.stats.failed(false);
            warn!(%path, %to, attempts, error = %msg, "copy failed; the task stays queued and is tried again after its backoff");
        }
        Ok(FailOutcome::Dead { attempts }) => {
            ctx.stats.failed(true);
            error!(%path, %to, attempts, error = %msg, item = %p.claim.item, "copy cannot succeed (or kept failing past --max-age); task moved to the dead-letter set (see backpack-replicator-dead)");
        }
        Err(qe) => {
            ctx.stats.failed(false);
            warn!(%path, %to, error = %msg, queue_error = %qe, "copy failed, and recording the failure failed too; releasing the lock");
            p.active.queue.release(&p.claim).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::copy::CopyError;

    #[test]
    fn dead_letters_only_for_what_cannot_heal() {
        let c = ReplicatorConfig::new(1);
        let hour = Some(Duration::from_secs(3600));
        let day = Some(c.max_age);
        let down = TaskError::Destination(CopyError::Destination {
            node: "4".into(),
            detail: "connection refused".into(),
            down: true,
        });
        // A node down: retried whatever the attempts, until max_age.
        assert!(!dead_letter(&c, &down, 1000, hour));
        assert!(!dead_letter(&c, &down, 1000, None));
        assert!(dead_letter(&c, &down, 3, day));
        // The file on no source: after max_attempts.
        let nowhere = TaskError::AllSourcesFailed {
            errors: vec![],
            missing_everywhere: true,
        };
        assert!(!dead_letter(&c, &nowhere, 9, hour));
        assert!(dead_letter(&c, &nowhere, 10, hour));
        // Cannot ever work: at once.
        assert!(dead_letter(&c, &TaskError::NoSources, 1, hour));
        // Dead letters off.
        let off = ReplicatorConfig {
            max_attempts: 0,
            ..c
        };
        assert!(!dead_letter(&off, &TaskError::NoSources, 1, day));
    }

    #[test]
    fn retries_back_off_per_task_up_to_the_cap() {
        let c = ReplicatorConfig::new(1);
        let within = |d: Duration, base: u64| {
            d >= Duration::from_secs(base) && d <= Duration::from_millis(base * 1250)
        };
        assert!(within(retry_in(&c, 1), 1));
        assert!(within(retry_in(&c, 2), 2));
        assert!(within(retry_in(&c, 5), 16));
        assert!(within(retry_in(&c, 9), 256));
        assert!(within(retry_in(&c, 10), 300));
        assert!(within(retry_in(&c, 1000), 300));
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let within = |d: Duration, base: u64| {
            d >= Duration::from_millis(base) && d < Duration::from_millis(base + base / 4 + 1)
        };
        assert!(within(b.next(), 100));
        assert!(within(b.next(), 200));
        assert!(within(b.next(), 350));
        assert!(within(b.next(), 350));
        b.reset();
        assert!(within(b.next(), 100));
    }
}
