//! `backpack-coordinator`: takes uploads, puts each on a node of a
//! writable shard, queues its replication to the shard's other nodes and
//! keeps the shards' fill levels, following the cluster's configuration
//! live from ZooKeeper.
//!
//! Modules:
//! - [`cli`]: the command line (the original's arguments, flags for the rest);
//! - [`view`]: the live configuration (maps, sizes, queue) from ZooKeeper watches;
//! - [`http`]: the API's routes; [`error`]: its errors; [`response`]: its
//!   answers of known bytes; [`raw_target`](crate::raw_target): each request's
//!   target as sent, before hyper parses it; [`upload`]: the upload path
//!   (names follow [`backpack_shared::model::Name`]); [`read`]: the read
//!   path; [`body`]: holding a body in memory or a temporary file;
//!   [`nodes`]: writing to storage nodes and reading from them;
//! - [`fill`]: the per-shard fill-level batcher;
//! - [`stats`]: counters, `/stats` and `/metrics`; [`statsd`]; [`announce`];
//! - its benchmark, `backpack-bench-coordinator`, is in `bench/` (package
//!   `backpack-bench`).
//!
//! Entry points: [`start`] returns once the server listens (uploads answer
//! 503 until the configuration is read, see [`Coordinator::wait_ready`]);
//! [`run`] is start-and-wait. Both take the listener, the settings, the
//! ZooKeeper connection (a [`ZkConfig`] to connect with, or a [`Zk`]
//! handle) and a shutdown token: on cancellation the coordinator stops
//! accepting, lets in-flight uploads finish (within
//! [`CoordinatorConfig::shutdown_timeout`]), flushes the fill levels,
//! removes its announcement and closes its ZooKeeper session.

pub mod announce;
pub mod body;
pub mod cli;
pub mod error;
pub mod fill;
pub mod http;
pub mod nodes;
pub mod queue_check;
pub mod read;
pub mod response;
pub mod stats;
pub mod statsd;
pub mod upload;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backpack_shared::queue::RedisPool;
use backpack_shared::zk::{Zk, ZkConfig, ZkError};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use fill::FillLevels;
use stats::Stats;
use view::View;

/// Settings of a coordinator; [`CoordinatorConfig::default`] gives the
/// command line's defaults.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Longest accepted name (request target) in bytes. The original
    /// node's log keeps a name's length in one byte: keep it at 255 while
    /// original nodes are in the cluster.
    pub max_name_len: usize,
    /// Largest accepted upload (413 above).
    pub max_body: u64,
    /// Bodies up to this size are held in memory, larger ones in a
    /// temporary file.
    pub memory_threshold: u64,
    /// Memory for bodies of all uploads together; a body that does not
    /// fit right now goes to a temporary file.
    pub memory_budget: u64,
    /// Directory of the temporary files.
    pub spill_dir: PathBuf,
    /// Uploads handled at once; more wait for a slot.
    pub max_uploads: usize,
    /// How long an upload waits for a free slot before it is refused
    /// (503 with `Retry-After`).
    pub upload_slot_wait: Duration,
    /// How long a body may stall before the upload is refused (408).
    pub body_timeout: Duration,
    /// Lowest average body rate in bytes/s after `body_grace` (0: none;
    /// see [`body::Holder::body_min_rate`]).
    pub body_min_rate: u64,
    pub body_grace: Duration,
    /// The floor under the rate at which clients read answers (see
    /// [`crate::send_floor`]).
    pub send_rule: crate::send_floor::SendRule,
    /// Connections served at once; one more is answered 503 at once.
    pub max_connections: usize,
    /// Connecting to a storage node.
    pub node_connect_timeout: Duration,
    /// One write to a storage node, from sending to its answer.
    pub node_timeout: Duration,
    /// One version probe of a storage node before a write (its copy's
    /// time, see `nodes::Nodes::probe`); without an answer in time the
    /// upload is stored without the ordering guarantee and counted.
    pub node_probe_timeout: Duration,
    /// How long a read waits for a node's answer to begin before the next
    /// node is asked (the body then streams unbounded by it).
    pub node_read_timeout: Duration,
    /// How long a node that failed goes to the back of the order.
    pub node_retry_after: Duration,
    /// Interval of the fill-level writes.
    pub flush_interval: Duration,
    /// How long shutdown waits for in-flight uploads.
    pub shutdown_timeout: Duration,
    /// Name of the announcement under `coordinators/` (default: the
    /// listening address, with the host name for a wildcard address).
    pub announce_as: Option<String>,
    pub announce_every: Duration,
    /// Accept uploads while a queue Redis may evict queued copies
    /// (`maxmemory-policy allkeys-*`); refused (503) otherwise.
    pub allow_evicting_queue: bool,
    /// How often the queue servers are checked again (reachable, settings;
    /// 5 s: /health turns 503 within about 7 s of the last one going).
    pub queue_check_every: Duration,
    /// Statsd server `host:port`, if any.
    pub statsd: Option<String>,
    /// Prefix of every statsd metric name (e.g. `backpack.`).
    pub statsd_prefix: String,
    pub statsd_every: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            max_name_len: 255,
            max_body: 1 << 30,
            memory_threshold: 1 << 20,
            memory_budget: 64 << 20,
            spill_dir: std::env::temp_dir(),
            max_uploads: 1024,
            upload_slot_wait: Duration::from_millis(1000),
            body_timeout: Duration::from_secs(60),
            body_min_rate: 1024,
            body_grace: Duration::from_secs(10),
            send_rule: crate::send_floor::SendRule::DEFAULT,
            max_connections: 8192,
            node_connect_timeout: Duration::from_secs(2),
            node_timeout: Duration::from_secs(60),
            node_probe_timeout: Duration::from_millis(1000),
            node_read_timeout: Duration::from_secs(5),
            node_retry_after: Duration::from_secs(5),
            flush_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            allow_evicting_queue: false,
            queue_check_every: Duration::from_secs(5),
            announce_as: None,
            announce_every: Duration::from_secs(5),
            statsd: None,
            statsd_prefix: String::new(),
            statsd_every: Duration::from_secs(10),
        }
    }
}

/// How to reach ZooKeeper: connect with a config, or use a live handle.
pub enum ZkSource {
    /// Connect (and close the session on shutdown).
    Config(ZkConfig),
    /// Use this session; it is closed on shutdown too (the announcement
    /// and any lock go with it), unless `close` is false.
    Handle { zk: Zk, close: bool },
}

impl From<ZkConfig> for ZkSource {
    fn from(c: ZkConfig) -> Self {
        ZkSource::Config(c)
    }
}

impl From<Zk> for ZkSource {
    fn from(zk: Zk) -> Self {
        ZkSource::Handle { zk, close: true }
    }
}

/// What stops a coordinator from starting.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Zk(#[from] ZkError),
    #[error(
        "cannot listen on {addr} ({cause}); check the host and port arguments, or stop the process using that port"
    )]
    Bind {
        addr: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Shared by every request and background task.
pub struct App {
    pub(crate) config: CoordinatorConfig,
    pub(crate) zk: Zk,
    pub(crate) view: watch::Receiver<Arc<View>>,
    pub(crate) fill: Arc<FillLevels>,
    pub(crate) stats: Stats,
    pub(crate) nodes: nodes::Nodes,
    pub(crate) holder: body::Holder,
    pub(crate) upload_slots: Semaphore,
    /// The cap on connections (`--max-connections`) and the refusals.
    pub(crate) connections: crate::accept::Limit,
    pub(crate) statsd: Option<statsd::Statsd>,
    /// Cancelled when shutdown begins: new uploads are refused.
    pub(crate) shutting_down: CancellationToken,
    pub(crate) queue_check: Arc<queue_check::QueueCheck>,
}

impl App {
    pub(crate) fn zk_connected(&self) -> bool {
        self.zk.state().borrow().is_connected()
    }

    /// Why uploads are refused for the queue's sake: a server that may
    /// evict queued copies (unless allowed).
    pub(crate) fn queue_evicting(&self) -> Option<String> {
        if self.config.allow_evicting_queue {
            return None;
        }
        self.queue_check.evicting()
    }
}

/// A started coordinator.
pub struct Coordinator {
    addr: std::net::SocketAddr,
    announced_as: String,
    view: watch::Receiver<Arc<View>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Its announcement's name under `<root>/coordinators/`.
    pub fn announced_as(&self) -> &str {
        &self.announced_as
    }

    /// Waits until the cluster configuration has been read (uploads
    /// accepted). False when shutdown came first.
    pub async fn wait_ready(&self) -> bool {
        let mut view = self.view.clone();
        tokio::select! {
            r = view.wait_for(|v| v.ready) => r.is_ok(),
            _ = self.shutdown.cancelled() => false,
        }
    }

    /// Waits until it has stopped (after the shutdown token).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "coordinator task ended abnormally");
        }
    }
}

/// Starts a coordinator on `listener`: connects to ZooKeeper (refusing an
/// uninitialized root), starts following the cluster and serving. Returns
/// once it accepts connections.
pub async fn start(
    listener: TcpListener,
    config: CoordinatorConfig,
    zk: impl Into<ZkSource>,
    shutdown: CancellationToken,
) -> Result<Coordinator, CoordinatorError> {
    let addr = listener
        .local_addr()
        .map_err(|cause| CoordinatorError::Bind {
            addr: "the given listener".into(),
            cause,
        })?;
    body::check_spill_dir(&config.spill_dir).map_err(|e| {
        CoordinatorError::Config(format!("{e}; give a writable directory with --spill-dir"))
    })?;
    if let Ok(v) = rustix::fs::statvfs(&config.spill_dir) {
        let total = v.f_blocks.saturating_mul(v.f_frsize);
        if total < config.max_body {
            tracing::warn!(
                spill_dir = %config.spill_dir.display(),
                spill_bytes = total,
                max_body = config.max_body,
                "the spill directory's file system is smaller than --max-body: uploads between the two are refused (507)"
            );
        }
    }
    let (zk, close_zk) = match zk.into() {
        ZkSource::Config(c) => (Zk::connect_initialized(c).await?, true),
        ZkSource::Handle { zk, close } => {
            zk.require_initialized().await?;
            (zk, close)
        }
    };
    let statsd = match &config.statsd {
        Some(target) => Some(
            statsd::open(target, &config.statsd_prefix)
                .await
                .map_err(CoordinatorError::Config)?,
        ),
        None => None,
    };
    let background = CancellationToken::new();
    let view = view::spawn_view(&zk, RedisPool::new(), background.clone());
    let fill = Arc::new(FillLevels::new(zk.clone()));
    let (statsd_client, statsd_sender) = match statsd {
        Some((c, s)) => (Some(c), Some(s)),
        None => (None, None),
    };
    let app = Arc::new(App {
        zk: zk.clone(),
        view: view.clone(),
        fill: fill.clone(),
        stats: Stats::new(),
        nodes: nodes::Nodes::new(
            config.node_connect_timeout,
            config.node_timeout,
            config.node_probe_timeout,
            config.node_read_timeout,
            config.node_retry_after,
        ),
        holder: body::Holder {
            memory_threshold: config.memory_threshold,
            budget: Arc::new(Semaphore::new(
                config.memory_budget.min(Semaphore::MAX_PERMITS as u64) as usize,
            )),
            spill_dir: config.spill_dir.clone(),
            body_timeout: config.body_timeout,
            body_min_rate: config.body_min_rate,
            body_grace: config.body_grace,
            spilled_bytes: Arc::default(),
        },
        upload_slots: Semaphore::new(config.max_uploads.max(1)),
        connections: crate::accept::Limit::new(config.max_connections),
        statsd: statsd_client,
        shutting_down: shutdown.child_token(),
        queue_check: Arc::default(),
        config,
    });
    queue_check::spawn(
        Arc::downgrade(&app),
        app.queue_check.clone(),
        app.config.queue_check_every,
        background.clone(),
    );
    let announced_as = announce::announce_name(app.config.announce_as.as_deref(), addr);
    let flusher = fill::spawn_flusher(fill.clone(), app.config.flush_interval, background.clone());
    let announcer = announce::spawn(
        zk.clone(),
        Arc::downgrade(&app),
        announced_as.clone(),
        app.config.announce_every,
        background.clone(),
    );
    let statsd_task = statsd_sender.map(|s| {
        s.spawn(
            Arc::downgrade(&app),
            app.config.statsd_every,
            background.clone(),
        )
    });
    tracing::info!(%addr, announce = %announced_as, root = %zk.path(""), "backpack-coordinator listening");

    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let deadline = app.config.shutdown_timeout;
            http::serve(listener, app.clone(), shutdown, deadline).await;
            // Uploads are done (or abandoned at the deadline): write what
            // they added, then leave ZooKeeper.
            background.cancel();
            let _ = flusher.await;
            match tokio::time::timeout(Duration::from_secs(10), fill.flush()).await {
                Ok(results) => {
                    for (shard, bytes, result) in results {
                        match result {
                            fill::FlushResult::Written(current) => {
                                tracing::info!(%shard, bytes, current, "final fill level written");
                            }
                            other => tracing::warn!(
                                %shard,
                                bytes,
                                result = ?other,
                                "final fill level not written; these bytes are not counted in shard-size-{shard}"
                            ),
                        }
                    }
                }
                Err(_) => tracing::warn!(
                    bytes = fill.pending_total(),
                    "ZooKeeper did not take the final fill levels within 10s; these bytes are not counted"
                ),
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), announcer).await;
            if let Some(t) = statsd_task {
                let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
            }
            if close_zk {
                zk.close();
            }
            tracing::info!("backpack-coordinator stopped");
        }
    });
    Ok(Coordinator {
        addr,
        announced_as,
        view,
        shutdown,
        task,
    })
}

/// Starts and serves until `shutdown` (see [`start`]).
pub async fn run(
    listener: TcpListener,
    config: CoordinatorConfig,
    zk: impl Into<ZkSource>,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    start(listener, config, zk, shutdown).await?.wait().await;
    Ok(())
}
