//! The replicator's live configuration: the servers map and the queue,
//! followed through [`backpack_shared::live::watch_cluster`].
//!
//! A changed `queue` znode builds a new [`Queue`] on the same
//! [`RedisPool`] (connections to servers that stay are kept) and a new
//! wake-up listener; workers pick the new [`Active`] up at their next pop.
//! A znode that turns invalid keeps its last good value (the live module
//! logs why).

use std::sync::Arc;

use backpack_shared::live::watch_cluster;
use backpack_shared::model::{QueueInfo, ServersMap};
use backpack_shared::queue::{Queue, RedisPool, WakeListener};
use backpack_shared::zk::Zk;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// What workers work with, replaced as a whole on every change.
pub struct Active {
    pub queue: Queue,
    pub info: QueueInfo,
    /// Fired on every push our coordinators publish.
    pub wake: Arc<Notify>,
    pub servers: Arc<ServersMap>,
}

/// Follows the configuration until `stop`; the receiver holds `None` until
/// both the servers map and the queue have been read once.
pub fn follow(
    zk: &Zk,
    pool: RedisPool,
    stop: CancellationToken,
) -> watch::Receiver<Option<Arc<Active>>> {
    let (tx, rx) = watch::channel(None);
    let mut cluster = watch_cluster(zk, false);
    let zk = zk.clone();
    tokio::spawn(async move {
        let mut current: Option<Arc<Active>> = None;
        let mut listener_stop: Option<CancellationToken> = None;
        loop {
            let state = cluster.borrow_and_update().clone();
            if let (Some(info), Some(servers)) = (&state.queue.value, &state.servers.value) {
                let queue_changed = current.as_ref().is_none_or(|a| &a.info != info);
                let servers_changed = current.as_ref().is_none_or(|a| *a.servers != *servers);
                if queue_changed || servers_changed {
                    let (queue, wake) = match (&current, queue_changed) {
                        (Some(a), false) => (a.queue.clone(), a.wake.clone()),
                        _ => {
                            if let Some(old) = listener_stop.take() {
                                old.cancel();
                            }
                            let token = stop.child_token();
                            let listener =
                                WakeListener::start(&info.key, &info.servers, token.clone());
                            listener_stop = Some(token);
                            let servers_list: Vec<String> =
                                info.servers.iter().map(|s| s.to_string()).collect();
                            tracing::info!(key = %info.key, servers = %servers_list.join(","), "replication queue configured");
                            let queue = Queue::new(info, &pool, zk.clone());
                            tokio::spawn(warn_if_evicting(queue.clone()));
                            (queue, listener.notify)
                        }
                    };
                    if servers_changed {
                        tracing::info!(nodes = servers.len(), "servers map updated");
                    }
                    let next = Arc::new(Active {
                        queue,
                        info: info.clone(),
                        wake,
                        servers: Arc::new(servers.clone()),
                    });
                    let old = current.replace(next.clone());
                    tx.send_replace(Some(next));
                    // Idle workers waiting on the old wake-up look again now.
                    if let Some(old) = old {
                        old.wake.notify_waiters();
                    }
                }
            }
            tokio::select! {
                r = cluster.changed() => if r.is_err() { break },
                _ = stop.cancelled() => break,
                _ = tx.closed() => break,
            }
        }
        if let Some(t) = listener_stop {
            t.cancel();
        }
    });
    rx
}

/// Says so, loudly, when a queue Redis may evict queued copies. The
/// replicator still drains such a queue (stopping would leave more files
/// on one node); the coordinators refuse uploads to it.
async fn warn_if_evicting(queue: Queue) {
    for k in queue.keeping().await {
        if k.evicts() {
            tracing::error!(server = %k.addr, policy = ?k.policy, "queue Redis may evict queued copies under memory pressure; set maxmemory-policy noeviction on it");
        } else if k.appendonly == Some(false) {
            tracing::warn!(server = %k.addr, "queue Redis does not persist (appendonly no): a restart empties it and its queued copies are lost; set appendonly yes");
        }
    }
}
