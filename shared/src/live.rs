//! The cluster configuration, followed live.
//!
//! [`watch_cluster`] watches `servers-map`, `shards-map`, every
//! `shard-size-<id>` of the shards map, `queue` and, when asked
//! ([`Follow`]), the live daemons (`coordinators/`, `replicators/` and
//! their data) and the shard checks (`checks/<id>` and
//! `check-requests/<id>` of every shard of the map, and the elected
//! `checker`), and publishes a new [`ClusterState`] on each change. A znode that holds invalid JSON
//! keeps its last good value, with the error beside it; nothing here
//! polls ZooKeeper.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::model::{
    CheckRequest, MapDoc, MapEntry, QueueInfo, ServersMap, ShardCheck, ShardSize, ShardsMap,
    SkippedEntry, parse_json, paths,
};
use crate::zk::{Children, ConnState, NodeData, Zk};

/// One watched document: its last good value and the current problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<T> {
    /// The last value that parsed (kept when the znode turns invalid).
    pub value: Option<T>,
    /// Why the current content is not used: invalid JSON, or missing.
    pub error: Option<String>,
    /// Whether the znode has been read at least once.
    pub seen: bool,
    /// A map's entries that are invalid and not used (the rest of the map
    /// is): see [`crate::model::MapDoc`].
    pub skipped: Vec<SkippedEntry>,
}

impl<T> Default for Doc<T> {
    fn default() -> Self {
        Doc {
            value: None,
            error: None,
            seen: false,
            skipped: Vec::new(),
        }
    }
}

impl<T: DeserializeOwned> Doc<T> {
    fn update(&mut self, what: &str, data: &NodeData) {
        match data {
            NodeData::Unknown => {}
            NodeData::Missing => {
                self.seen = true;
                self.error = Some(format!("{what} is missing"));
            }
            NodeData::Present { data, .. } => {
                self.seen = true;
                match parse_json::<T>(what, data) {
                    Ok(v) => {
                        self.value = Some(v);
                        self.error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the last good {what}");
                        self.error = Some(e.to_string());
                    }
                }
            }
        }
    }
}

impl<T: MapEntry + Clone> Doc<BTreeMap<String, T>> {
    /// Like [`Doc::update`] for a map znode, entry by entry: an invalid
    /// entry is skipped (logged, listed in `skipped`) and the rest used.
    fn update_map(&mut self, what: &str, data: &NodeData) {
        match data {
            NodeData::Present { data, .. } => {
                self.seen = true;
                match MapDoc::<T>::parse(what, data) {
                    Ok(doc) => {
                        let skipped = doc.skipped();
                        for s in &skipped {
                            if !self.skipped.contains(s) {
                                tracing::warn!(
                                    map = what,
                                    entry = %s.id,
                                    reason = %s.reason,
                                    "invalid entry skipped; the rest of the map is used (repair it with the admin commands)"
                                );
                            }
                        }
                        self.value = Some(doc.valid());
                        self.skipped = skipped;
                        self.error = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "keeping the last good {what}");
                        self.error = Some(e.to_string());
                    }
                }
            }
            _ => self.update(what, data),
        }
    }
}

/// A live daemon's announcement (`coordinators/<host:port>`,
/// `replicators/<host:pid>`), as free-form JSON.
pub type Announcement = serde_json::Value;

/// Everything known of the cluster's configuration now.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub servers: Doc<ServersMap>,
    pub shards: Doc<ShardsMap>,
    pub sizes: BTreeMap<String, Doc<ShardSize>>,
    pub queue: Doc<QueueInfo>,
    pub coordinators: BTreeMap<String, Doc<Announcement>>,
    pub replicators: BTreeMap<String, Doc<Announcement>>,
    /// The last check of each shard (`checks/<id>`), for the shards of the
    /// map whose check exists; followed with [`Follow::checks`].
    pub checks: BTreeMap<String, Doc<ShardCheck>>,
    /// Checks asked for and not yet taken (`check-requests/<id>`).
    pub check_requests: BTreeMap<String, Doc<CheckRequest>>,
    /// The elected checker (the `checker` znode's content, a replicator's
    /// name): `None` while unread or unfollowed, `Some(None)` when no
    /// replicator runs the checks.
    pub checker: Option<Option<String>>,
    pub conn: Option<ConnState>,
    /// Bumped on every change, so users can tell snapshots apart cheaply.
    pub generation: u64,
}

impl ClusterState {
    /// The three maps have been read (whether valid or not).
    pub fn ready(&self) -> bool {
        self.servers.value.is_some() && self.shards.value.is_some() && self.queue.value.is_some()
    }

    /// Last good sizes by shard id (what the shard choice takes).
    pub fn size_values(&self) -> BTreeMap<String, ShardSize> {
        self.sizes
            .iter()
            .filter_map(|(id, d)| d.value.map(|v| (id.clone(), v)))
            .collect()
    }
}

enum Update {
    Servers(NodeData),
    Shards(NodeData),
    Queue(NodeData),
    PerShard(PerShard, String, NodeData),
    Checker(NodeData),
    DaemonList(Kind, Children),
    Daemon(Kind, String, NodeData),
    Conn(ConnState),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Coordinator,
    Replicator,
}

/// The znodes followed for every shard of the map.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum PerShard {
    Size,
    Check,
    Request,
}

impl PerShard {
    fn path(self, id: &str) -> String {
        match self {
            PerShard::Size => paths::shard_size(id),
            PerShard::Check => paths::shard_check(id),
            PerShard::Request => paths::check_request(id),
        }
    }
}

/// What [`watch_cluster_following`] follows besides the maps, the sizes
/// and the queue (the console wants everything; the daemons neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Follow {
    /// The live coordinators and replicators.
    pub daemons: bool,
    /// The shard checks: two more watches per shard, and the checker.
    pub checks: bool,
}

/// Keeps a per-shard document, or forgets it when its znode is gone (a
/// shard never checked has no `checks/<id>`; a request taken is deleted).
fn update_or_forget<T: DeserializeOwned>(
    map: &mut BTreeMap<String, Doc<T>>,
    id: &str,
    what: &str,
    data: &NodeData,
) {
    match data {
        NodeData::Unknown => {}
        NodeData::Missing => {
            map.remove(id);
        }
        NodeData::Present { .. } => map.entry(id.to_string()).or_default().update(what, data),
    }
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Coordinator => paths::COORDINATORS,
            Kind::Replicator => paths::REPLICATORS,
        }
    }
}

/// Forwards every value of a watch channel into the update channel.
fn forward<T: Clone + Send + Sync + 'static>(
    mut rx: watch::Receiver<T>,
    tx: mpsc::UnboundedSender<Update>,
    wrap: impl Fn(T) -> Update + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let value = rx.borrow_and_update().clone();
            if tx.send(wrap(value)).is_err() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Starts following the cluster. `daemons` adds the live coordinators and
/// replicators (the console wants them; the daemons do not). The task ends
/// when every receiver is dropped.
pub fn watch_cluster(zk: &Zk, daemons: bool) -> watch::Receiver<Arc<ClusterState>> {
    watch_cluster_following(
        zk,
        Follow {
            daemons,
            checks: false,
        },
    )
}

/// Starts following the cluster and what `follow` adds. The task ends
/// when every receiver is dropped.
pub fn watch_cluster_following(zk: &Zk, follow: Follow) -> watch::Receiver<Arc<ClusterState>> {
    let Follow { daemons, checks } = follow;
    let (out_tx, out_rx) = watch::channel(Arc::new(ClusterState::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut fixed = vec![
        forward(
            zk.watch_data(paths::SERVERS_MAP),
            tx.clone(),
            Update::Servers,
        ),
        forward(zk.watch_data(paths::SHARDS_MAP), tx.clone(), Update::Shards),
        forward(zk.watch_data(paths::QUEUE), tx.clone(), Update::Queue),
        forward(zk.state(), tx.clone(), Update::Conn),
    ];
    if checks {
        fixed.push(forward(
            zk.watch_data(paths::CHECKER),
            tx.clone(),
            Update::Checker,
        ));
    }
    if daemons {
        for kind in [Kind::Coordinator, Kind::Replicator] {
            fixed.push(forward(
                zk.watch_children(kind.dir()),
                tx.clone(),
                move |c| Update::DaemonList(kind, c),
            ));
        }
    }
    let zk = zk.clone();
    tokio::spawn(async move {
        let mut state = ClusterState::default();
        let per_shard: &[PerShard] = if checks {
            &[PerShard::Size, PerShard::Check, PerShard::Request]
        } else {
            &[PerShard::Size]
        };
        let mut shard_watches: HashMap<(PerShard, String), JoinHandle<()>> = HashMap::new();
        let mut daemon_watches: HashMap<(Kind, String), JoinHandle<()>> = HashMap::new();
        loop {
            let update = tokio::select! {
                u = rx.recv() => match u { Some(u) => u, None => break },
                _ = out_tx.closed() => break,
            };
            let mut batch = vec![update];
            while let Ok(u) = rx.try_recv() {
                batch.push(u);
            }
            for update in batch {
                match update {
                    Update::Servers(d) => state.servers.update_map(paths::SERVERS_MAP, &d),
                    Update::Shards(d) => {
                        state.shards.update_map(paths::SHARDS_MAP, &d);
                        let ids: Vec<String> = state
                            .shards
                            .value
                            .as_ref()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        shard_watches.retain(|(_, id), h| {
                            let keep = ids.contains(id);
                            if !keep {
                                h.abort();
                            }
                            keep
                        });
                        state.sizes.retain(|id, _| ids.contains(id));
                        state.checks.retain(|id, _| ids.contains(id));
                        state.check_requests.retain(|id, _| ids.contains(id));
                        for id in ids {
                            for &what in per_shard {
                                shard_watches.entry((what, id.clone())).or_insert_with(|| {
                                    let rx = zk.watch_data(&what.path(&id));
                                    let id = id.clone();
                                    forward(rx, tx.clone(), move |d| {
                                        Update::PerShard(what, id.clone(), d)
                                    })
                                });
                            }
                        }
                    }
                    Update::Queue(d) => state.queue.update(paths::QUEUE, &d),
                    Update::PerShard(what, id, d) => {
                        if !shard_watches.contains_key(&(what, id.clone())) {
                            continue;
                        }
                        match what {
                            PerShard::Check => {
                                update_or_forget(&mut state.checks, &id, &what.path(&id), &d)
                            }
                            PerShard::Request => update_or_forget(
                                &mut state.check_requests,
                                &id,
                                &what.path(&id),
                                &d,
                            ),
                            PerShard::Size => {
                                let doc = state.sizes.entry(id.clone()).or_default();
                                doc.update(&paths::shard_size(&id), &d);
                                if let Some(v) = &doc.value
                                    && v.current_was_null()
                                    && matches!(d, NodeData::Present { .. })
                                {
                                    tracing::warn!(shard = %id, "shard-size-{id} has \"current\": null (left by the original coordinator); counting it as 0");
                                }
                            }
                        }
                    }
                    Update::Checker(d) => {
                        state.checker = match d {
                            NodeData::Unknown => state.checker.take(),
                            NodeData::Missing => Some(None),
                            NodeData::Present { data, .. } => {
                                Some(Some(String::from_utf8_lossy(&data).into_owned()))
                            }
                        };
                    }
                    Update::DaemonList(kind, children) => {
                        let names = match children {
                            Children::Present(n) => n,
                            Children::Missing => vec![],
                            Children::Unknown => continue,
                        };
                        daemon_watches.retain(|(k, name), h| {
                            let keep = *k != kind || names.contains(name);
                            if !keep {
                                h.abort();
                            }
                            keep
                        });
                        let map = match kind {
                            Kind::Coordinator => &mut state.coordinators,
                            Kind::Replicator => &mut state.replicators,
                        };
                        map.retain(|name, _| names.contains(name));
                        for name in names {
                            daemon_watches
                                .entry((kind, name.clone()))
                                .or_insert_with(|| {
                                    let rx = zk.watch_data(&format!("{}/{name}", kind.dir()));
                                    forward(rx, tx.clone(), move |d| {
                                        Update::Daemon(kind, name.clone(), d)
                                    })
                                });
                        }
                    }
                    Update::Daemon(kind, name, d) => {
                        if !daemon_watches.contains_key(&(kind, name.clone()))
                            || matches!(d, NodeData::Missing)
                        {
                            continue;
                        }
                        let map = match kind {
                            Kind::Coordinator => &mut state.coordinators,
                            Kind::Replicator => &mut state.replicators,
                        };
                        map.entry(name.clone())
                            .or_default()
                            .update(&format!("{}/{name}", kind.dir()), &d);
                    }
                    Update::Conn(c) => state.conn = Some(c),
                }
            }
            state.generation += 1;
            out_tx.send_replace(Arc::new(state.clone()));
        }
        for h in fixed
            .into_iter()
            .chain(shard_watches.into_values())
            .chain(daemon_watches.into_values())
        {
            h.abort();
        }
    });
    out_rx
}
