//! The rows of each view, derived from what the console knows (cluster,
//! node health, queue report, growth history), with their filter text and
//! sort keys. Pure: built by [`crate::state::State`] after each change, read
//! by [`crate::view`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use backpack_shared::live::{Announcement, ClusterState, Doc};
use backpack_shared::model::{
    CheckRequest, HostPort, ReplicationTask, ShardCheck, shard_chances, takes_writes,
};
use backpack_shared::queue::{Keeping, TaskInfo, lock_name};

use crate::checks::{ShardHealth, checked_word};
use crate::event::{Health, Millis, QueueReport};
use crate::fmt::{addr_list, id_key};
use crate::growth::Growth;

/// A shard's state as shown: every state is also a word (NO_COLOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShardState {
    Rw,
    Full,
    Ro,
    /// No valid `shard-size-<id>` yet.
    NoSize,
}

impl ShardState {
    pub fn word(self) -> &'static str {
        match self {
            ShardState::Rw => "rw",
            ShardState::Ro => "ro",
            ShardState::Full => "full",
            ShardState::NoSize => "size?",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShardRow {
    pub id: String,
    pub state: ShardState,
    pub nodes: Vec<String>,
    pub used: u64,
    pub capacity: u64,
    /// Share of new uploads it gets now (0..=1).
    pub writes: f64,
    /// Bytes per second over the recent window.
    pub rate: Option<f64>,
    /// Seconds until full at that rate.
    pub full_in: Option<f64>,
    /// Why its size document is not used, if so.
    pub size_error: Option<String>,
    /// Nodes not in the servers map.
    pub unknown_nodes: Vec<String>,
    /// Nodes whose last health check failed.
    pub down_nodes: Vec<String>,
    /// What its last check says (`checks/<id>`).
    pub health: ShardHealth,
    /// Its last check, and a check asked for and not yet taken.
    pub check: Option<ShardCheck>,
    pub asked: Option<CheckRequest>,
}

impl ShardRow {
    pub fn fill(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.used as f64 / self.capacity as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerRow {
    pub id: String,
    pub addr: HostPort,
    /// Shards that use it.
    pub shards: Vec<String>,
    pub health: Option<Health>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub dead: bool,
    pub info: TaskInfo,
    pub task: Option<ReplicationTask>,
    pub locked_by: Option<String>,
}

impl TaskRow {
    pub fn age(&self, now: Millis) -> Option<Millis> {
        self.info.first_queued_ms.map(|t| now.saturating_sub(t))
    }
    pub fn state(&self) -> &'static str {
        if self.dead {
            "dead"
        } else if self.locked_by.is_some() {
            "copying"
        } else {
            "queued"
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonRow {
    pub kind: &'static str,
    pub name: String,
    pub doc: Doc<Announcement>,
    /// Per-second rates of counters that grew since the previous announcement.
    pub rates: BTreeMap<String, f64>,
}

/// Totals of the shards table, as print-stats' `Overall` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardTotals {
    pub used: u64,
    pub capacity: u64,
    pub rw: usize,
    pub ro: usize,
    pub full: usize,
    pub writes: f64,
    /// Shards whose last check found them whole, and those lacking copies
    /// (or whose check failed).
    pub whole: usize,
    pub lacking: usize,
}

/// Builds the shards rows.
pub fn shard_rows(
    cluster: &ClusterState,
    growth: &HashMap<String, Growth>,
    health: &HashMap<HostPort, Health>,
    now: Millis,
) -> Vec<ShardRow> {
    let Some(shards) = &cluster.shards.value else {
        return vec![];
    };
    let servers = cluster.servers.value.as_ref();
    let sizes = cluster.size_values();
    let chances: HashMap<String, f64> = shard_chances(shards, &sizes, 0)
        .into_iter()
        .map(|c| (c.id, c.chance))
        .collect();
    shards
        .iter()
        .map(|(id, shard)| {
            let size = sizes.get(id);
            let (used, capacity) = size.map_or((0, 0), |s| (s.used(), s.capacity));
            let state = match size {
                None => ShardState::NoSize,
                // The one rule (`takes_writes`), then why not: disabled or full.
                Some(s) if takes_writes(shard, s) => ShardState::Rw,
                Some(_) if shard.read_only => ShardState::Ro,
                Some(_) => ShardState::Full,
            };
            let g = growth.get(id);
            let rate = g.and_then(|g| g.rate(now));
            let full_in = if state == ShardState::Rw {
                g.and_then(|g| g.full_in(now, capacity.saturating_sub(used)))
            } else {
                None
            };
            let size_doc = cluster.sizes.get(id);
            let size_error = match size_doc {
                None => Some(format!("shard-size-{id} not read yet")),
                Some(d) => d.error.clone(),
            };
            let mut unknown_nodes = vec![];
            let mut down_nodes = vec![];
            for n in &shard.nodes {
                match servers.and_then(|s| s.get(n)) {
                    None => unknown_nodes.push(n.clone()),
                    Some(addr) => {
                        if matches!(health.get(addr), Some(Health::Down { .. })) {
                            down_nodes.push(n.clone());
                        }
                    }
                }
            }
            let check_doc = cluster.checks.get(id);
            ShardRow {
                id: id.clone(),
                state,
                nodes: shard.nodes.clone(),
                used,
                capacity,
                writes: chances.get(id).copied().unwrap_or(0.0),
                rate,
                full_in,
                size_error,
                unknown_nodes,
                down_nodes,
                health: ShardHealth::of(check_doc),
                check: check_doc.and_then(|d| d.value.clone()),
                asked: cluster.check_requests.get(id).and_then(|d| d.value.clone()),
            }
        })
        .collect()
}

pub fn shard_totals(rows: &[ShardRow]) -> ShardTotals {
    let mut t = ShardTotals::default();
    for r in rows {
        t.used += r.used;
        t.capacity += r.capacity;
        t.writes += r.writes;
        t.whole += usize::from(r.health == ShardHealth::Whole);
        t.lacking += usize::from(r.health.lacks());
        match r.state {
            ShardState::Rw => t.rw += 1,
            ShardState::Full => t.full += 1,
            ShardState::Ro | ShardState::NoSize => t.ro += 1,
        }
    }
    t
}

/// Which shards use each node id.
pub fn node_shards(cluster: &ClusterState) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if let Some(shards) = &cluster.shards.value {
        for (id, shard) in shards {
            for n in &shard.nodes {
                out.entry(n.clone()).or_default().push(id.clone());
            }
        }
    }
    out
}

pub fn server_rows(cluster: &ClusterState, health: &HashMap<HostPort, Health>) -> Vec<ServerRow> {
    let Some(servers) = &cluster.servers.value else {
        return vec![];
    };
    let mut uses = node_shards(cluster);
    servers
        .iter()
        .map(|(id, addr)| {
            let mut shards = uses.remove(id).unwrap_or_default();
            shards.sort_by_key(|s| id_key(s));
            ServerRow {
                id: id.clone(),
                addr: addr.clone(),
                shards,
                health: health.get(addr).cloned(),
            }
        })
        .collect()
}

pub fn task_rows(report: Option<&QueueReport>) -> Vec<TaskRow> {
    let Some(r) = report else {
        return vec![];
    };
    let locks: HashMap<&str, &str> = match &r.locks {
        Ok(l) => l
            .iter()
            .map(|l| (l.name.as_str(), l.worker.as_str()))
            .collect(),
        Err(_) => HashMap::new(),
    };
    let row = |dead: bool, info: &TaskInfo| TaskRow {
        dead,
        task: ReplicationTask::decode(&info.item).ok(),
        locked_by: locks
            .get(lock_name(&r.key, &info.item).as_str())
            .map(|w| w.to_string()),
        info: info.clone(),
    };
    r.dead
        .iter()
        .map(|i| row(true, i))
        .chain(r.sample.iter().map(|i| row(false, i)))
        .collect()
}

/// A queue Redis that can lose tasks, named in the Queue view and the
/// header (a group of servers with the same problem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepingWarning {
    /// Evicting: queued copies can go at any time. Else no appendonly:
    /// they go with a restart (the lesser warning).
    pub evicts: bool,
    pub text: String,
}

/// The warnings for how the queue's servers keep items: one per evicting
/// policy, then one for the servers without appendonly. Servers whose
/// settings could not be read (down, `CONFIG` renamed) are not named, as
/// the daemons do not name them either.
pub fn keeping_warnings(keeping: &[Keeping]) -> Vec<KeepingWarning> {
    let mut evicting: BTreeMap<&str, Vec<&HostPort>> = BTreeMap::new();
    let mut no_appendonly = vec![];
    for k in keeping {
        if let Some(policy) = k.policy.as_deref().filter(|_| k.evicts()) {
            evicting.entry(policy).or_default().push(&k.addr);
        }
        if k.appendonly == Some(false) {
            no_appendonly.push(&k.addr);
        }
    }
    let mut out: Vec<KeepingWarning> = evicting
        .into_iter()
        .map(|(policy, servers)| KeepingWarning {
            evicts: true,
            text: evicts_text(&servers, policy),
        })
        .collect();
    if !no_appendonly.is_empty() {
        out.push(KeepingWarning {
            evicts: false,
            text: no_appendonly_text(&no_appendonly),
        });
    }
    out
}

/// `Redis a:1 evicts: allkeys-lru — ...`: what an evicting policy means
/// and the fix (the Queue view and Events say the same).
pub fn evicts_text(servers: &[&HostPort], policy: &str) -> String {
    format!(
        "Redis {} evict{}: {policy} — queued copies can be lost; set maxmemory-policy noeviction",
        addr_list(servers.iter().copied()),
        if servers.len() == 1 { "s" } else { "" }
    )
}

/// `Redis a:1 has no appendonly: ...`: what a server without persistence
/// means and the fix.
pub fn no_appendonly_text(servers: &[&HostPort]) -> String {
    format!(
        "Redis {} {} no appendonly: a restart loses the queue; set appendonly yes",
        addr_list(servers.iter().copied()),
        if servers.len() == 1 { "has" } else { "have" }
    )
}

pub fn daemon_rows(
    cluster: &ClusterState,
    rates: &HashMap<(&'static str, String), BTreeMap<String, f64>>,
) -> Vec<DaemonRow> {
    let mut out = vec![];
    for (kind, map) in [
        ("coordinator", &cluster.coordinators),
        ("replicator", &cluster.replicators),
    ] {
        for (name, doc) in map {
            out.push(DaemonRow {
                kind,
                name: name.clone(),
                doc: doc.clone(),
                rates: rates
                    .get(&(kind, name.clone()))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The scalar fields of an announcement, flattened one level
/// (`uploads.ok=3`), in document order: shown whatever its shape.
pub fn flatten(value: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.clone())),
        }
    }
    let mut out = vec![];
    walk("", value, &mut out);
    out
}

/// A sort key: numbers compare as numbers, text as text, missing last.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Num(f64),
    Id((u8, u64, String)),
    Text(String),
    None,
}

impl Key {
    pub fn compare(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Num(a), Key::Num(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Key::Id(a), Key::Id(b)) => a.cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::None, Key::None) => Ordering::Equal,
            (Key::None, _) => Ordering::Greater,
            (_, Key::None) => Ordering::Less,
            _ => Ordering::Equal,
        }
    }
}

fn opt(v: Option<f64>) -> Key {
    v.map_or(Key::None, Key::Num)
}

pub const SHARD_COLUMNS: [&str; 9] = [
    "ID",
    "STATE",
    "NODES",
    "FILL",
    "USED / CAP",
    "WRITES",
    "FULL IN",
    "HEALTH",
    "CHECKED",
];
pub const SERVER_COLUMNS: [&str; 7] = ["ID", "URL", "SHARDS", "HEALTH", "LATENCY", "GETS", "PUTS"];
pub const TASK_COLUMNS: [&str; 7] = ["STATE", "PATH", "TO", "FROM", "AGE", "TRIES", "LAST ERROR"];
pub const DAEMON_COLUMNS: [&str; 3] = ["KIND", "NAME", "COUNTERS"];
pub const EVENT_COLUMNS: [&str; 3] = ["TIME", "WHAT", "DETAIL"];

impl ShardRow {
    pub fn key(&self) -> &str {
        &self.id
    }
    pub fn sort_key(&self, col: usize) -> Key {
        match col {
            1 => Key::Text(self.state.word().into()),
            2 => Key::Text(self.nodes.join(",")),
            3 => Key::Num(self.fill()),
            4 => Key::Num(self.used as f64),
            5 => Key::Num(self.writes),
            6 => opt(self.full_in),
            7 => Key::Num(self.health.rank() as f64),
            // Oldest check first; never checked last.
            8 => opt(self.check.as_ref().map(|c| c.when_ms as f64)),
            _ => Key::Id(id_key(&self.id)),
        }
    }
    pub fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id,
            self.state.word(),
            self.nodes.join(","),
            self.health.word()
        )
    }
    /// The CHECKED column.
    pub fn checked(&self, now: Millis) -> String {
        checked_word(self.check.as_ref(), self.asked.as_ref(), now)
    }
}

impl ServerRow {
    pub fn key(&self) -> &str {
        &self.id
    }
    pub fn health_word(&self) -> &'static str {
        match &self.health {
            None => "?",
            Some(Health::Up { .. }) => "up",
            Some(Health::Down { .. }) => "down",
        }
    }
    pub fn sort_key(&self, col: usize) -> Key {
        let up = |f: &dyn Fn(&Health) -> Option<f64>| opt(self.health.as_ref().and_then(f));
        match col {
            1 => Key::Text(self.addr.url()),
            2 => Key::Num(self.shards.len() as f64),
            3 => Key::Text(self.health_word().into()),
            4 => up(&|h| match h {
                Health::Up { latency_ms, .. } => Some(*latency_ms as f64),
                _ => None,
            }),
            5 => up(&|h| match h {
                Health::Up { gets, .. } => gets.map(|g| g as f64),
                _ => None,
            }),
            6 => up(&|h| match h {
                Health::Up { puts, .. } => puts.map(|g| g as f64),
                _ => None,
            }),
            _ => Key::Id(id_key(&self.id)),
        }
    }
    pub fn text(&self) -> String {
        let shards = if self.shards.is_empty() {
            "no shard".to_string()
        } else {
            self.shards.join(",")
        };
        format!(
            "{} {} {} {}",
            self.id,
            self.addr.url(),
            shards,
            self.health_word()
        )
    }
}

impl TaskRow {
    pub fn key(&self) -> &str {
        &self.info.item
    }
    pub fn sort_key(&self, col: usize) -> Key {
        let t = self.task.as_ref();
        match col {
            1 => Key::Text(t.map_or(self.info.item.clone(), |t| t.path.clone())),
            2 => Key::Id(id_key(t.map_or("", |t| t.to.as_str()))),
            3 => Key::Text(t.map_or(String::new(), |t| t.from.join(","))),
            // Oldest first when ascending by age: sort by first-queued time.
            4 => self
                .info
                .first_queued_ms
                .map_or(Key::None, |t| Key::Num(-(t as f64))),
            5 => Key::Num(self.info.attempts as f64),
            6 => self
                .info
                .last_error
                .as_ref()
                .map_or(Key::None, |e| Key::Text(e.clone())),
            // Dead letters first (they need the operator), then copying, queued.
            _ => Key::Num(match self.state() {
                "dead" => 0.0,
                "copying" => 1.0,
                _ => 2.0,
            }),
        }
    }
    pub fn text(&self) -> String {
        format!(
            "{} {} {}",
            self.state(),
            self.info.item,
            self.info.last_error.as_deref().unwrap_or("")
        )
    }
}

impl DaemonRow {
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
    pub fn sort_key(&self, col: usize) -> Key {
        match col {
            1 => Key::Text(self.name.clone()),
            2 => Key::Num(self.rates.values().sum()),
            _ => Key::Text(format!("{} {}", self.kind, self.name)),
        }
    }
    pub fn text(&self) -> String {
        let fields = self
            .doc
            .value
            .as_ref()
            .map(|v| {
                flatten(v)
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        format!("{} {} {fields}", self.kind, self.name)
    }
}

/// The order of rows after filtering (case-insensitive substring of each
/// row's text) and sorting (stable; ties keep the natural order).
pub fn order<R>(
    rows: &[R],
    filter: &str,
    text: impl Fn(&R) -> String,
    key: impl Fn(&R) -> Key,
    desc: bool,
) -> Vec<usize> {
    let needle = filter.to_lowercase();
    let mut idx: Vec<usize> = (0..rows.len())
        .filter(|&i| needle.is_empty() || text(&rows[i]).to_lowercase().contains(&needle))
        .collect();
    let keys: Vec<Key> = rows.iter().map(&key).collect();
    idx.sort_by(|&a, &b| {
        let o = keys[a].compare(&keys[b]);
        if desc { o.reverse() } else { o }
    });
    idx
}
