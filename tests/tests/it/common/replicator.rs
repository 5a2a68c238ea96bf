//! The replicator in-process, on its own ZooKeeper session: test settings,
//! a cluster root made for it ([`Env`]), and [`Running`] to start and stop
//! one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backpack_daemon::replicator::{Counters, Replicator, ReplicatorConfig, Stats};
use backpack_shared::model::{QueueInfo, ReplicationTask};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool, worker_id};
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::unique_root;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cluster::{init_root, queue_info};
use super::node::Node;

/// Test settings: quick backoffs (50 ms doubling to 300 ms, per task and
/// per destination) and announcements, and a unique announcement name
/// (several replicators share this process).
pub fn config(concurrency: usize) -> ReplicatorConfig {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut c = ReplicatorConfig::new(concurrency);
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(300);
    c.retry_min = Duration::from_millis(50);
    c.retry_max = Duration::from_millis(300);
    c.destination_retry_max = Duration::from_millis(300);
    c.announce_every = Duration::from_millis(200);
    c.shutdown_deadline = Duration::from_secs(5);
    c.name = format!("{}-{}", worker_id(), N.fetch_add(1, Ordering::Relaxed));
    c
}

/// A replicator with the test settings ([`config`]) on its own session to
/// `zk_addr`/`root`; runs until `stop`. Returns once it has started.
pub async fn start_replicator(
    zk_addr: &str,
    root: &str,
    concurrency: usize,
    stop: CancellationToken,
) -> JoinHandle<Counters> {
    let zk = ZkConfig::new(zk_addr, root);
    Running::launch(zk, config(concurrency), None, stop)
        .await
        .task
}

/// A cluster root: the nodes in servers-map and
/// a queue on the given Redis servers, plus the test's own session on it.
pub struct Env {
    pub zk_addr: String,
    pub root: String,
    pub zk: Zk,
    pub queue: Queue,
    pub info: QueueInfo,
}

pub async fn env(zk_addr: &str, name: &str, nodes: &[&Node], redis: &[u16]) -> Env {
    let root = unique_root(name);
    let info = queue_info(&format!("q{}", root.replace('/', "-")), redis);
    let addrs: Vec<String> = redis.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // The replicator reads no shard; tests that upload make their own.
    let zk = init_root(zk_addr, &root, &info.key, &addrs).await;
    for n in nodes {
        zk.apply(&MapOp::AddServer {
            id: n.id.clone(),
            addr: n.addr(),
            replace: false,
        })
        .await
        .unwrap();
    }
    let queue = Queue::new(&info, &RedisPool::new(), zk.clone());
    Env {
        zk_addr: zk_addr.into(),
        root,
        zk,
        queue,
        info,
    }
}

/// The queued task copying `path` from `from` to `to`.
pub fn task(from: &[&Node], to: &Node, path: &str) -> String {
    ReplicationTask {
        from: from.iter().map(|n| n.id.clone()).collect(),
        to: to.id.clone(),
        path: path.into(),
    }
    .encode()
}

/// An in-process replicator on its own session.
pub struct Running {
    pub stats: Arc<Stats>,
    pub name: String,
    stop: CancellationToken,
    task: JoinHandle<Counters>,
}

impl Running {
    pub async fn start(
        env: &Env,
        config: ReplicatorConfig,
        metrics: Option<TcpListener>,
    ) -> Running {
        Self::start_with(ZkConfig::new(&env.zk_addr, &env.root), config, metrics).await
    }

    pub async fn start_with(
        zk: ZkConfig,
        config: ReplicatorConfig,
        metrics: Option<TcpListener>,
    ) -> Running {
        Self::launch(zk, config, metrics, CancellationToken::new()).await
    }

    async fn launch(
        zk: ZkConfig,
        config: ReplicatorConfig,
        metrics: Option<TcpListener>,
        stop: CancellationToken,
    ) -> Running {
        let zk = Zk::connect_initialized(zk).await.unwrap();
        let name = config.name.clone();
        let mut r = Replicator::new(config, zk);
        if let Some(l) = metrics {
            r = r.with_metrics(l);
        }
        let stats = r.stats();
        let started = r.started();
        let task = tokio::spawn(r.run(stop.clone()));
        tokio::time::timeout(Duration::from_secs(10), started.cancelled())
            .await
            .expect("replicator started");
        Running {
            stats,
            name,
            stop,
            task,
        }
    }

    pub async fn shutdown(self) -> Counters {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("replicator stopped")
            .unwrap()
    }
}

/// Waits for `f` to hold; fails the test, naming `what`, after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        super::eventually(timeout, f).await,
        "timed out after {timeout:?} waiting for {what}"
    );
}
