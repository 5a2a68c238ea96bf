//! The coordinator's live view of the cluster, rebuilt from
//! [`backpack_shared::live::watch_cluster`] on every ZooKeeper change: the
//! maps and sizes as last read (a znode holding invalid JSON keeps its last
//! good value there), plus what uploads need ready-made: the queue handle
//! (rebuilt only when the queue znode changes) and the shards that can take
//! writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use backpack_shared::live::ClusterState;
use backpack_shared::model::{
    HostPort, QueueInfo, ServersMap, ShardSize, ShardsMap, SkippedEntry, paths,
};
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::Zk;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One snapshot of the cluster, shared by the requests that read it.
#[derive(Clone, Default)]
pub struct View {
    /// The three maps have been read: uploads may go.
    pub ready: bool,
    pub servers: ServersMap,
    pub shards: ShardsMap,
    pub sizes: BTreeMap<String, ShardSize>,
    pub queue_info: Option<QueueInfo>,
    pub queue: Option<Queue>,
    /// Enabled shards with at least one node in the servers map: the
    /// candidates of the shard choice (sizes decide among them).
    pub writable: ShardsMap,
    /// Invalid entries of `servers-map` and `shards-map`, skipped (the
    /// rest of each map is used), by map: `/metrics` counts them.
    pub skipped: Vec<(&'static str, Vec<SkippedEntry>)>,
}

impl View {
    /// The address of a node id, if the servers map knows it.
    pub fn node(&self, id: &str) -> Option<&HostPort> {
        self.servers.get(id)
    }
}

/// Follows the cluster and publishes a [`View`] per change, until `stop`.
pub fn spawn_view(zk: &Zk, pool: RedisPool, stop: CancellationToken) -> watch::Receiver<Arc<View>> {
    let mut states = backpack_shared::live::watch_cluster(zk, false);
    let (tx, rx) = watch::channel(Arc::new(View::default()));
    let zk = zk.clone();
    tokio::spawn(async move {
        let mut queue: Option<(QueueInfo, Queue)> = None;
        loop {
            let state = states.borrow_and_update().clone();
            let mut view = build(&state, &mut queue, &pool, &zk);
            // Once ready, always ready: a shard added later whose size is
            // not read yet simply is not chosen meanwhile.
            let was_ready = tx.borrow().ready;
            view.ready |= was_ready;
            if view.ready && !was_ready {
                tracing::info!(
                    shards = view.shards.len(),
                    writable = view.writable.len(),
                    servers = view.servers.len(),
                    "cluster configuration read"
                );
            }
            tx.send_replace(Arc::new(view));
            tokio::select! {
                r = states.changed() => if r.is_err() { break },
                _ = stop.cancelled() => break,
            }
        }
    });
    rx
}

fn build(
    state: &ClusterState,
    queue: &mut Option<(QueueInfo, Queue)>,
    pool: &RedisPool,
    zk: &Zk,
) -> View {
    let servers = state.servers.value.clone().unwrap_or_default();
    let shards = state.shards.value.clone().unwrap_or_default();
    let sizes = state.size_values();
    let queue_info = state.queue.value.clone();
    match (&queue_info, queue.as_ref()) {
        (Some(info), Some((old, _))) if info == old => {}
        (Some(info), _) => {
            tracing::info!(key = %info.key, servers = ?info.servers.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "replication queue configured");
            *queue = Some((info.clone(), Queue::new(info, pool, zk.clone())));
        }
        (None, _) => *queue = None,
    }
    let writable = shards
        .iter()
        .filter(|(_, shard)| shard.enabled() && shard.nodes.iter().any(|n| servers.contains_key(n)))
        .map(|(id, shard)| (id.clone(), shard.clone()))
        .collect();
    // Ready once the three maps and the size of every shard have been read
    // (a size znode that is missing or invalid counts as read).
    let ready = state.ready()
        && shards
            .keys()
            .all(|id| state.sizes.get(id).is_some_and(|d| d.seen));
    View {
        ready,
        servers,
        shards,
        sizes,
        queue: queue.as_ref().map(|(_, q)| q.clone()),
        queue_info,
        writable,
        skipped: vec![
            (paths::SERVERS_MAP, state.servers.skipped.clone()),
            (paths::SHARDS_MAP, state.shards.skipped.clone()),
        ],
    }
}
