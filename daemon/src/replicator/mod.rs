//! `backpack-replicator`: makes every node of a shard hold every file.
//!
//! The coordinator writes an upload to one node of the shard and queues a
//! task per other node (`{"from":[..],"to":"4","path":"/x"}`, the
//! original's wire format); replicators drain that queue. The pieces:
//!
//! - [`live`]: the servers map and the queue, followed live from
//!   ZooKeeper; a changed queue znode rebuilds the [`Queue`] on the same
//!   Redis connections.
//! - [`worker`]: claimers take tasks ahead of the copiers in batches
//!   (locked by the original's ephemeral znodes, one ZooKeeper request per
//!   batch), `concurrency` copiers copy, a completer marks copies done in
//!   batches. A failure records the attempt and the error on the task;
//!   after `max_attempts` it moves to the dead-letter set ([`dead`] is the
//!   admin command over it).
//! - [`copy`]: the streaming GET-into-PUT of one file, on one shared,
//!   uncapped connection pool.
//! - [`stats`]: counters, the `<root>/replicators/<host:pid>` announcement
//!   and the Prometheus text of `--metrics-listen`.
//! - its benchmark, `backpack-bench-replicator`, is in `bench/` (package
//!   `backpack-bench`).
//!
//! Session loss: claimers pause while ZooKeeper is disconnected; at expiry
//! a copy in flight is abandoned (its lock vanished with the session, so
//! another worker may already be copying it) and never marked done.
//!
//! Shutdown: claimers stop taking tasks (the ones claimed ahead are
//! released), in-flight copies get until the deadline to finish; then the
//! rest are cut and their locks released, the announcement is removed and
//! the session closed.

pub mod checker;
pub mod cli;
pub mod copy;
pub mod dead;
mod destinations;
pub mod live;
pub mod metrics;
pub mod stats;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use backpack_shared::model::paths;
use backpack_shared::queue::{Queue, RedisPool, worker_id};
use backpack_shared::zk::{ConnState, Zk, spawn_announcer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use stats::{Announcement, Counters, Stats};

/// Settings of a replicator; [`ReplicatorConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Workers copying at once.
    pub concurrency: usize,
    /// Failed attempts after which a task whose file is on none of its
    /// sources moves to the dead-letter set (0: no dead letters at all).
    pub max_attempts: u64,
    /// Age (from first queued) after which a task that keeps failing for
    /// reasons that can heal (a node down, unreachable, unknown) moves to
    /// the dead-letter set.
    pub max_age: Duration,
    /// Pause before a failed task is tried again: doubles with each failed
    /// attempt from `retry_min` up to `retry_max` (with jitter). The task
    /// waits in the queue meanwhile, without a lock.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Longest pause of a destination node that keeps failing: its tasks
    /// are postponed, unlocked, until it ends (see `destinations`).
    pub destination_retry_max: Duration,
    /// How long shutdown lets in-flight copies finish.
    pub shutdown_deadline: Duration,
    /// Fallback poll of an empty queue (original coordinators publish no
    /// wake-up).
    pub poll_interval: Duration,
    /// First pause after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often the announcement is refreshed.
    pub announce_every: Duration,
    /// The announcement's name under `replicators/` (`host:pid`).
    pub name: String,
    /// Take part in the election of the shards' checker (see
    /// [`checker`]); `None`: never check.
    pub checker: Option<checker::CheckerConfig>,
}

impl ReplicatorConfig {
    pub fn new(concurrency: usize) -> ReplicatorConfig {
        ReplicatorConfig {
            concurrency: concurrency.max(1),
            max_attempts: 10,
            max_age: Duration::from_secs(24 * 3600),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            destination_retry_max: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            announce_every: Duration::from_secs(3),
            name: worker_id(),
            checker: None,
        }
    }
}

/// A replicator ready to run: [`Replicator::run`] drives it until shutdown.
pub struct Replicator {
    config: ReplicatorConfig,
    zk: Zk,
    stats: Arc<Stats>,
    metrics: Option<TcpListener>,
    started: CancellationToken,
}

impl Replicator {
    /// A replicator on a connected session (see
    /// [`Zk::connect_initialized`]).
    pub fn new(config: ReplicatorConfig, zk: Zk) -> Replicator {
        Replicator {
            config,
            zk,
            stats: Arc::default(),
            metrics: None,
            started: CancellationToken::new(),
        }
    }

    /// Serves Prometheus text on `GET /metrics` of this listener.
    pub fn with_metrics(mut self, listener: TcpListener) -> Replicator {
        self.metrics = Some(listener);
        self
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Cancelled once the configuration was read and the workers run.
    pub fn started(&self) -> CancellationToken {
        self.started.clone()
    }

    /// Runs until `shutdown` is cancelled, then shuts down gracefully
    /// (see the module docs) and closes the ZooKeeper session. Returns the
    /// final counters.
    pub async fn run(self, shutdown: CancellationToken) -> Counters {
        let Replicator {
            config,
            zk,
            stats,
            metrics,
            started,
        } = self;
        let background = CancellationToken::new();
        let active = live::follow(&zk, RedisPool::new(), background.clone());

        let started_ms = backpack_shared::clock::now_ms();
        let announcer = {
            let stats = stats.clone();
            let (concurrency, max_attempts) = (config.concurrency, config.max_attempts);
            spawn_announcer(
                zk.clone(),
                format!("{}/{}", paths::REPLICATORS, config.name),
                config.announce_every,
                move || {
                    serde_json::to_vec(&Announcement {
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        started_ms,
                        concurrency,
                        max_attempts,
                        counters: stats.snapshot(),
                    })
                    .unwrap_or_default()
                },
                background.clone(),
            )
        };
        let metrics_task = metrics.map(|listener| {
            tokio::spawn(metrics::serve(
                listener,
                metrics::MetricsState {
                    stats: stats.clone(),
                    active: active.clone(),
                    zk: zk.clone(),
                    concurrency: config.concurrency,
                },
                background.clone(),
            ))
        });
        tokio::spawn(log_session(zk.clone(), background.clone()));

        // Start once the servers map and the queue have been read.
        let mut ready = active.clone();
        let ok = tokio::select! {
            r = ready.wait_for(|a| a.is_some()) => r.is_ok(),
            _ = shutdown.cancelled() => false,
        };
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut handoff = None;
        if ok {
            let wake = Arc::new(tokio::sync::Notify::new());
            tokio::spawn(worker::relay_wakeups(
                active.clone(),
                wake.clone(),
                background.clone(),
            ));
            let ctx = Arc::new(worker::Ctx {
                zk: zk.clone(),
                client: copy::client(),
                config: config.clone(),
                stats: stats.clone(),
                active,
                wake,
                shutdown: shutdown.clone(),
                hard_stop: hard_stop.clone(),
                destinations: destinations::Destinations::new(
                    config.retry_min,
                    config.destination_retry_max,
                ),
            });
            // Claimed ahead: twice the copiers, so batches of claims arrive
            // before the copiers run dry; as many waiting to be marked done
            // (see worker).
            let c = config.concurrency;
            let (claimed_tx, claimed_rx) = tokio::sync::mpsc::channel(4 * c);
            let claimed_rx: worker::Shared<worker::Popped> =
                Arc::new(tokio::sync::Mutex::new(claimed_rx));
            handoff = Some(claimed_rx.clone());
            let (done_tx, done_rx) = tokio::sync::mpsc::channel(4 * c);
            tracker.spawn(worker::claimer(ctx.clone(), claimed_tx, tracker.clone()));
            for n in 0..c {
                tracker.spawn(worker::copier(
                    n,
                    ctx.clone(),
                    claimed_rx.clone(),
                    done_tx.clone(),
                ));
            }
            drop(done_tx);
            tracker.spawn(worker::completer(ctx.clone(), done_rx, tracker.clone()));
            if let Some(c) = config.checker.clone() {
                tracker.spawn(checker::run(
                    zk.clone(),
                    config.name.clone(),
                    c,
                    shutdown.clone(),
                ));
            }
            info!(
                concurrency = config.concurrency,
                max_attempts = config.max_attempts,
                name = %config.name,
                "replicator started"
            );
            started.cancel();
        }
        tracker.close();

        shutdown.cancelled().await;
        let in_flight = stats.snapshot().in_flight;
        info!(
            in_flight,
            deadline = ?config.shutdown_deadline,
            "shutting down: finishing in-flight copies"
        );
        if tokio::time::timeout(config.shutdown_deadline, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = stats.snapshot().in_flight,
                "shutdown deadline passed: cutting the copies still running and releasing their locks"
            );
            hard_stop.cancel();
            if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                .await
                .is_err()
            {
                warn!("workers did not stop; closing the ZooKeeper session drops their locks");
            }
        }
        if let Some(rx) = handoff {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), worker::release_unstarted(&rx)).await;
        }
        background.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), announcer).await;
        if let Some(m) = metrics_task {
            let _ = tokio::time::timeout(Duration::from_secs(3), m).await;
        }
        zk.close();
        let counters = stats.snapshot();
        info!(
            copies_done = counters.copies_done,
            copies_failed = counters.copies_failed,
            bytes = counters.bytes,
            "replicator stopped"
        );
        counters
    }
}

/// Runs a replicator until `shutdown`: the library entry point.
pub async fn run(config: ReplicatorConfig, zk: Zk, shutdown: CancellationToken) -> Counters {
    Replicator::new(config, zk).run(shutdown).await
}

/// Logs once per change what the session state means for the work.
async fn log_session(zk: Zk, stop: CancellationToken) {
    let mut state = zk.state();
    loop {
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
        let s = *state.borrow_and_update();
        match s {
            ConnState::Disconnected { .. } => {
                warn!("ZooKeeper connection lost: workers pause (copies in flight go on)")
            }
            ConnState::Expired { .. } => warn!(
                "ZooKeeper session expired: copies in flight are abandoned (their locks vanished)"
            ),
            ConnState::Connected { .. } => info!("ZooKeeper session usable: workers resume"),
            ConnState::Closed => return,
        }
    }
}

/// The queue of a cluster as configured now (for the admin commands).
pub async fn queue_of(zk: &Zk) -> anyhow::Result<Queue> {
    use anyhow::Context as _;
    let (data, _) = zk.get(paths::QUEUE).await?.with_context(|| {
        format!(
            "{} is missing; run backpack-coordinator-init first",
            zk.path(paths::QUEUE)
        )
    })?;
    let info: backpack_shared::model::QueueInfo =
        backpack_shared::model::parse_json(paths::QUEUE, &data)?;
    Ok(Queue::new(&info, &RedisPool::new(), zk.clone()))
}
