//! One worker: pop a task, copy the file, mark it done or failed, repeat.
//!
//! A worker never busy-loops: an empty queue waits for a wake-up (a push
//! published by our coordinators, relayed to one idle worker at a time) or
//! the slow poll; errors back off exponentially; a lost ZooKeeper
//! connection pauses it until the session is back.

use std::sync::Arc;
use std::time::Duration;

use backpack_shared::model::ReplicationTask;
use backpack_shared::queue::{Claim, FailOutcome, QueueError};
use backpack_shared::zk::{ConnState, Zk};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::ReplicatorConfig;
use super::copy::{TaskError, replicate};
use super::live::Active;
use super::stats::Stats;

/// What every worker shares.
pub(crate) struct Ctx {
    pub zk: Zk,
    pub client: reqwest::Client,
    pub config: ReplicatorConfig,
    pub stats: Arc<Stats>,
    pub active: watch::Receiver<Option<Arc<Active>>>,
    /// Wake-ups relayed from the queue's channel, one idle worker each.
    pub wake: Arc<Notify>,
    /// Stop taking tasks (shutdown asked).
    pub shutdown: CancellationToken,
    /// The shutdown deadline passed: cut copies, release their locks.
    pub hard_stop: CancellationToken,
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

fn session_of(state: &ConnState) -> Option<i64> {
    match state {
        ConnState::Connected { session_id } => Some(*session_id),
        _ => None,
    }
}

/// Resolves when the session `session` is gone for good (expired, closed
/// or replaced): the locks it held have vanished.
async fn session_lost(mut state: watch::Receiver<ConnState>, session: Option<i64>) {
    let _ = state
        .wait_for(|s| match s {
            ConnState::Expired { .. } | ConnState::Closed => true,
            ConnState::Connected { session_id } => Some(*session_id) != session,
            ConnState::Disconnected { .. } => false,
        })
        .await;
}

/// Forwards each wake-up of the current queue to one idle worker; the
/// worker that finds a task passes the wake-up on (see [`work`]), so a
/// burst of pushes reaches as many workers as there are tasks without
/// waking every idle worker for every push.
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

/// The worker loop; returns at shutdown (after its in-flight copy).
pub(crate) async fn work(n: usize, ctx: Arc<Ctx>) {
    let mut backoff = Backoff::new(ctx.config.backoff_min, ctx.config.backoff_max);
    let mut last_error: Option<String> = None;
    let mut active_rx = ctx.active.clone();
    let mut state = ctx.zk.state();
    loop {
        if ctx.shutdown.is_cancelled() {
            break;
        }
        // Pause while the session is not connected: a lock taken now could
        // not be trusted, and every request would just time out.
        if !state.borrow_and_update().is_connected() {
            tokio::select! {
                _ = state.wait_for(|s| s.is_connected()) => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            continue;
        }
        let Some(active) = active_rx.borrow_and_update().clone() else {
            tokio::select! {
                _ = active_rx.changed() => {}
                _ = ctx.shutdown.cancelled() => break,
            }
            continue;
        };
        match active.queue.pop().await {
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    warn!(worker = n, error = %msg, "cannot take a task from the queue; retrying");
                    last_error = Some(msg);
                } else {
                    debug!(worker = n, error = %msg, "queue still failing");
                }
                if !ctx.pause(backoff.next()).await {
                    break;
                }
            }
            Ok(None) => {
                if last_error.take().is_some() {
                    info!(worker = n, "queue reachable again");
                }
                tokio::select! {
                    _ = ctx.wake.notified() => {}
                    _ = tokio::time::sleep(ctx.config.poll_interval) => {}
                    _ = ctx.shutdown.cancelled() => break,
                }
            }
            Ok(Some(claim)) => {
                if last_error.take().is_some() {
                    info!(worker = n, "queue reachable again");
                }
                // There may be more: hand the wake-up on to an idle worker.
                ctx.wake.notify_one();
                let session = session_of(&state.borrow());
                match process(&ctx, &active, claim, session).await {
                    Outcome::Done | Outcome::Abandoned => backoff.reset(),
                    Outcome::Failed => {
                        if !ctx.pause(backoff.next()).await {
                            break;
                        }
                    }
                    Outcome::Stopped => break,
                }
            }
        }
    }
    debug!(worker = n, "worker stopped");
}

enum Outcome {
    Done,
    Failed,
    /// The lock is gone (session lost): nothing more to do for this task.
    Abandoned,
    /// Cut by the shutdown deadline; the lock was released.
    Stopped,
}

async fn process(ctx: &Ctx, active: &Active, claim: Claim, session: Option<i64>) -> Outcome {
    let _in_flight = ctx.stats.start();
    let task = match ReplicationTask::decode(&claim.item) {
        Ok(t) => t,
        Err(e) => {
            return fail(
                ctx,
                active,
                &claim,
                None,
                TaskError::Undecodable(e.to_string()),
            )
            .await;
        }
    };
    let lost = session_lost(ctx.zk.state(), session);
    let result = tokio::select! {
        r = replicate(&ctx.client, &active.servers, &task) => r,
        _ = lost => {
            ctx.stats.abandoned();
            warn!(path = %task.path, to = %task.to, "ZooKeeper session lost mid-copy; abandoning the task (its lock vanished; a worker will copy it again)");
            return Outcome::Abandoned;
        }
        _ = ctx.hard_stop.cancelled() => {
            ctx.stats.abandoned();
            active.queue.release(&claim).await;
            info!(path = %task.path, to = %task.to, "shutdown deadline: copy cut, lock released; the task stays queued");
            return Outcome::Stopped;
        }
    };
    match result {
        Ok(bytes) => finish(ctx, active, &claim, &task, bytes, session).await,
        Err(e) => fail(ctx, active, &claim, Some(&task), e).await,
    }
}

/// Marks a copied task done, retrying transient ZooKeeper failures while
/// the session lives; never from a session that lost the lock.
async fn finish(
    ctx: &Ctx,
    active: &Active,
    claim: &Claim,
    task: &ReplicationTask,
    bytes: u64,
    session: Option<i64>,
) -> Outcome {
    let mut pause = Duration::from_millis(100);
    loop {
        match active.queue.done(claim).await {
            Ok(()) => {
                ctx.stats.copied(bytes);
                debug!(path = %task.path, to = %task.to, bytes, "copied");
                return Outcome::Done;
            }
            Err(QueueError::LockLost) => {
                ctx.stats.abandoned();
                warn!(path = %task.path, to = %task.to, "copied, but the lock was lost with the ZooKeeper session: not marking it done; a worker will copy it again");
                return Outcome::Abandoned;
            }
            Err(e) => {
                warn!(path = %task.path, to = %task.to, error = %e, "copied, but cannot mark it done yet; retrying");
            }
        }
        let state = ctx.zk.state();
        let gone = !matches!(
            *state.borrow(),
            ConnState::Connected { .. } | ConnState::Disconnected { .. }
        ) || matches!(*state.borrow(), ConnState::Connected { session_id } if Some(session_id) != session);
        if gone {
            ctx.stats.abandoned();
            warn!(path = %task.path, to = %task.to, "ZooKeeper session lost before the copy was marked done; a worker will copy it again");
            return Outcome::Abandoned;
        }
        if ctx.hard_stop.is_cancelled() {
            ctx.stats.abandoned();
            active.queue.release(claim).await;
            return Outcome::Stopped;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn fail(
    ctx: &Ctx,
    active: &Active,
    claim: &Claim,
    task: Option<&ReplicationTask>,
    e: TaskError,
) -> Outcome {
    let max = ctx.config.max_attempts;
    // An error no retry can fix goes to the dead-letter set at once
    // (unless dead-lettering is off).
    let max = if e.is_permanent() && max > 0 { 1 } else { max };
    let msg = e.to_string();
    let (path, to) = task.map_or(("?", "?"), |t| (t.path.as_str(), t.to.as_str()));
    match active.queue.failed(claim, &msg, max).await {
        Ok(FailOutcome::Retry { attempts }) => {
            ctx.stats.failed(false);
            warn!(%path, %to, attempts, error = %msg, "copy failed; the task stays queued for another try");
        }
        Ok(FailOutcome::Dead { attempts }) => {
            ctx.stats.failed(true);
            error!(%path, %to, attempts, error = %msg, item = %claim.item, "copy failed too often; task moved to the dead-letter set (see backpack-replicator-dead)");
        }
        Err(qe) => {
            ctx.stats.failed(false);
            warn!(%path, %to, error = %msg, queue_error = %qe, "copy failed, and recording the failure failed too; releasing the lock");
            active.queue.release(claim).await;
        }
    }
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

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
