//! What the coordinator counts, and how `/stats` and `/metrics` show it.
//!
//! Counters are plain atomics bumped by the upload path; the cluster
//! figures (sizes, shards) come from the live view, the queue figures from
//! Redis at request time. `/stats` keeps the original's fields and meaning
//! and adds ours; `/metrics` is the Prometheus text format of the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// Kept here for callers that knew it here; the clock is
/// [`backpack_shared::clock`].
pub use backpack_shared::clock::now_ms;

use backpack_shared::model::{ShardSize, paths, takes_writes, usage_ratio};

use super::queue_check::Reading;
use super::view::View;
use crate::prometheus::{Kind, Text};

/// Upper bounds (seconds) of the upload latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// HTTP statuses an upload can end with, counted apart (anything else as
/// 500).
const STATUSES: [u16; 11] = [200, 400, 408, 411, 413, 431, 500, 502, 503, 507, 405];

/// How an upload ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client's mistake (4xx).
    Rejected,
    /// Ours or the cluster's (5xx).
    Failed,
}

/// Why an upload was stored without the ordering guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unordered {
    /// Stored on a node other than the first of its name's order.
    OffFirstNode = 0,
    /// Another node of the shard did not say which version it holds.
    PeerNotProbed = 1,
}

impl Unordered {
    pub const ALL: [Unordered; 2] = [Unordered::OffFirstNode, Unordered::PeerNotProbed];

    /// The name in `/stats` and the `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Unordered::OffFirstNode => "off_first_node",
            Unordered::PeerNotProbed => "peer_not_probed",
        }
    }
}

/// Counters since start. Shared by every request; lock-free.
pub struct Stats {
    started: Instant,
    started_ms: u64,
    ok_uploads: AtomicU64,
    ok_bytes: AtomicU64,
    rejected_uploads: AtomicU64,
    rejected_bytes: AtomicU64,
    failed_uploads: AtomicU64,
    failed_bytes: AtomicU64,
    node_write_failures: AtomicU64,
    unordered: [AtomicU64; Unordered::ALL.len()],
    queue_push_failures: AtomicU64,
    tasks_queued: AtomicU64,
    spilled_uploads: AtomicU64,
    busy_uploads: AtomicU64,
    /// Requests refused on their head alone (400, 413, 431), before their
    /// method was known: uploads among them are not in the upload counts.
    bad_heads: AtomicU64,
    /// Connections cut for reading slower than --send-min-rate.
    pub slow_readers: Arc<AtomicU64>,
    by_status: [AtomicU64; STATUSES.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// A copy of the counters, for the announcement and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counters {
    pub processed_uploads: u64,
    pub processed_bytes: u64,
    pub failed_uploads: u64,
    pub failed_bytes: u64,
    pub rejected_uploads: u64,
    pub rejected_bytes: u64,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            started: Instant::now(),
            started_ms: now_ms(),
            ok_uploads: AtomicU64::new(0),
            ok_bytes: AtomicU64::new(0),
            rejected_uploads: AtomicU64::new(0),
            rejected_bytes: AtomicU64::new(0),
            failed_uploads: AtomicU64::new(0),
            failed_bytes: AtomicU64::new(0),
            node_write_failures: AtomicU64::new(0),
            unordered: std::array::from_fn(|_| AtomicU64::new(0)),
            queue_push_failures: AtomicU64::new(0),
            tasks_queued: AtomicU64::new(0),
            spilled_uploads: AtomicU64::new(0),
            busy_uploads: AtomicU64::new(0),
            bad_heads: AtomicU64::new(0),
            slow_readers: Arc::default(),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Start time, ms since the Unix epoch.
    pub fn started_ms(&self) -> u64 {
        self.started_ms
    }

    /// Counts a finished upload. `bytes` is its Content-Length (0 when
    /// unknown); `took` only counts for successful ones.
    pub fn upload(&self, status: u16, bytes: u64, took: Duration) {
        let outcome = match status {
            200..=299 => Outcome::Ok,
            400..=499 => Outcome::Rejected,
            _ => Outcome::Failed,
        };
        let (n, b) = match outcome {
            Outcome::Ok => (&self.ok_uploads, &self.ok_bytes),
            Outcome::Rejected => (&self.rejected_uploads, &self.rejected_bytes),
            Outcome::Failed => (&self.failed_uploads, &self.failed_bytes),
        };
        n.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(bytes, Ordering::Relaxed);
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(6); // unexpected: counted as 500
        self.by_status[i].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Ok {
            let secs = took.as_secs_f64();
            if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us
                .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub fn node_write_failed(&self) {
        self.node_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload stored without the ordering guarantee, for `why`.
    pub fn unordered(&self, why: Unordered) {
        self.unordered[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn queue_push_failed(&self) {
        self.queue_push_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tasks_queued(&self, n: u64) {
        self.tasks_queued.fetch_add(n, Ordering::Relaxed);
    }

    /// A request refused on its head alone.
    pub fn bad_head(&self) {
        self.bad_heads.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload refused because every slot stayed busy.
    pub fn busy(&self) {
        self.busy_uploads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn spilled(&self) {
        self.spilled_uploads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counters(&self) -> Counters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rejected_uploads = r(&self.rejected_uploads);
        let rejected_bytes = r(&self.rejected_bytes);
        Counters {
            processed_uploads: r(&self.ok_uploads),
            processed_bytes: r(&self.ok_bytes),
            // The original counts every upload that did not succeed.
            failed_uploads: r(&self.failed_uploads) + rejected_uploads,
            failed_bytes: r(&self.failed_bytes) + rejected_bytes,
            rejected_uploads,
            rejected_bytes,
        }
    }
}

/// Cluster-wide figures from the live view, as the original computes them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClusterFigures {
    pub total_size: u64,
    pub used_size: u64,
    /// used / total rounded up to 4 decimals; 1 when there is no capacity.
    pub usage_ratio: f64,
    /// Free bytes of the writable shards.
    pub available_space: u64,
    pub total_shards: u64,
    pub writable_shards: u64,
}

impl ClusterFigures {
    pub fn of(view: &View) -> ClusterFigures {
        let mut f = ClusterFigures {
            total_shards: view.shards.len() as u64,
            ..Default::default()
        };
        for (id, shard) in &view.shards {
            let Some(size) = view.sizes.get(id) else {
                continue;
            };
            f.total_size += size.capacity;
            f.used_size += size.used();
            if takes_writes(shard, size) {
                f.writable_shards += 1;
                f.available_space += size.free();
            }
        }
        f.usage_ratio = usage_ratio(f.used_size, f.total_size);
        f
    }
}

/// What `/stats` and `/metrics` need from outside the counters.
pub struct Snapshot<'a> {
    pub stats: &'a Stats,
    pub view: &'a View,
    pub queue_length: Option<u64>,
    pub queue_oldest: Option<Duration>,
    /// The last check of the queue servers (see [`super::queue_check`]).
    pub queue_servers: Vec<Reading>,
    pub pending_fill: u64,
    pub zk_connected: bool,
    /// Upload slots free now (of --max-uploads).
    pub upload_slots_free: usize,
    /// Connections refused at --max-connections.
    pub connections_refused: u64,
    /// Bytes of the spill directory held by uploads in progress.
    pub spill_bytes: u64,
}

/// The `/stats` document: the original's fields, then ours.
pub fn stats_json(s: &Snapshot<'_>) -> serde_json::Value {
    let c = s.stats.counters();
    let f = ClusterFigures::of(s.view);
    json!({
        "uptime": s.stats.uptime().as_millis() as u64,
        "processed_uploads": c.processed_uploads,
        "processed_bytes": c.processed_bytes,
        "failed_uploads": c.failed_uploads,
        "total_size": f.total_size,
        "used_size": f.used_size,
        "usage_ratio": f.usage_ratio,
        "available_space": f.available_space,
        "total_shards": f.total_shards,
        "writable_shards": f.writable_shards,
        "queue_length": s.queue_length,
        // ours
        "failed_bytes": c.failed_bytes,
        "rejected_uploads": c.rejected_uploads,
        "rejected_bytes": c.rejected_bytes,
        "node_write_failures": s.stats.node_write_failures.load(Ordering::Relaxed),
        "uploads_unordered": Unordered::ALL
            .iter()
            .map(|u| (u.label().to_string(), s.stats.unordered[*u as usize].load(Ordering::Relaxed).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "queue_push_failures": s.stats.queue_push_failures.load(Ordering::Relaxed),
        "tasks_queued": s.stats.tasks_queued.load(Ordering::Relaxed),
        "spilled_uploads": s.stats.spilled_uploads.load(Ordering::Relaxed),
        "busy_uploads": s.stats.busy_uploads.load(Ordering::Relaxed),
        "bad_heads": s.stats.bad_heads.load(Ordering::Relaxed),
        "slow_readers_cut": s.stats.slow_readers.load(Ordering::Relaxed),
        "queue_oldest_age": s.queue_oldest.map(|d| d.as_millis() as u64),
        "pending_fill_bytes": s.pending_fill,
        "ready": s.view.ready,
        "zookeeper_connected": s.zk_connected,
        "upload_slots_free": s.upload_slots_free,
        "connections_refused": s.connections_refused,
        "spill_bytes": s.spill_bytes,
        "started": s.stats.started_ms(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// The `/metrics` text (Prometheus exposition format 0.0.4).
pub fn metrics_text(s: &Snapshot<'_>) -> String {
    use Kind::{Counter, Gauge, Histogram};
    let st = s.stats;
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let f = ClusterFigures::of(s.view);
    let mut m = Text::new("backpack_coordinator_");
    m.one(
        "uptime_seconds",
        Gauge,
        "Seconds since the coordinator started.",
        format_args!("{:.3}", st.uptime().as_secs_f64()),
    );
    m.one(
        "ready",
        Gauge,
        "1 once the cluster configuration has been read from ZooKeeper.",
        u8::from(s.view.ready),
    );
    m.one(
        "zookeeper_connected",
        Gauge,
        "1 while the ZooKeeper session is connected.",
        u8::from(s.zk_connected),
    );
    m.one(
        "upload_slots_free",
        Gauge,
        "Upload slots free now (of --max-uploads); at 0 uploads are refused with 503 after --upload-slot-wait-ms.",
        s.upload_slots_free,
    );
    m.one(
        "connections_refused_total",
        Counter,
        "Connections answered 503 at once because --max-connections were open.",
        s.connections_refused,
    );
    m.one(
        "spill_bytes",
        Gauge,
        "Bytes of the spill directory held by uploads in progress (reserved from their Content-Length).",
        s.spill_bytes,
    );
    m.family(
        "uploads_total",
        Counter,
        "Finished uploads by result: ok, rejected (4xx), failed (5xx).",
    )
    .sample(&[("result", "ok")], r(&st.ok_uploads))
    .sample(&[("result", "rejected")], r(&st.rejected_uploads))
    .sample(&[("result", "failed")], r(&st.failed_uploads));
    m.family(
        "upload_bytes_total",
        Counter,
        "Content-Length of finished uploads by result.",
    )
    .sample(&[("result", "ok")], r(&st.ok_bytes))
    .sample(&[("result", "rejected")], r(&st.rejected_bytes))
    .sample(&[("result", "failed")], r(&st.failed_bytes));
    let mut responses = m.family(
        "upload_responses_total",
        Counter,
        "Upload answers by HTTP status.",
    );
    for (code, n) in STATUSES.iter().zip(&st.by_status) {
        responses.sample(&[("status", &code.to_string())], r(n));
    }
    let mut hist = m.family(
        "upload_duration_seconds",
        Histogram,
        "Time from request to answer of successful uploads.",
    );
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS.iter().zip(&st.latency_buckets) {
        cumulative += r(n);
        hist.sample_of("_bucket", &[("le", &bound.to_string())], cumulative);
    }
    hist.sample_of("_bucket", &[("le", "+Inf")], r(&st.latency_count))
        .sample_of(
            "_sum",
            &[],
            format_args!("{:.6}", r(&st.latency_sum_us) as f64 / 1e6),
        )
        .sample_of("_count", &[], r(&st.latency_count));
    m.one(
        "node_write_failures_total",
        Counter,
        "Writes to a storage node that failed (another node was tried).",
        r(&st.node_write_failures),
    );
    let mut unordered = m.family(
        "uploads_unordered_total",
        Counter,
        "Uploads stored without the ordering guarantee (README, Overwrites), by reason: off_first_node (the first node of the name's order was down or failing), peer_not_probed (another node of the shard did not say which version it holds). Their order against other uploads of the name rests on node clocks.",
    );
    for u in Unordered::ALL {
        unordered.sample(&[("reason", u.label())], r(&st.unordered[u as usize]));
    }
    m.one(
        "queue_push_failures_total",
        Counter,
        "Uploads whose replication tasks could not be queued.",
        r(&st.queue_push_failures),
    );
    m.one(
        "tasks_queued_total",
        Counter,
        "Replication tasks queued.",
        r(&st.tasks_queued),
    );
    m.one(
        "bad_heads_total",
        Counter,
        "Requests refused on their head alone (a bad request line, a head over 64 KiB, a Content-Length no one could send), before their method was known.",
        r(&st.bad_heads),
    );
    m.one(
        "busy_uploads_total",
        Counter,
        "Uploads refused with 503 because every upload slot stayed busy (--max-uploads, --upload-slot-wait-ms).",
        r(&st.busy_uploads),
    );
    m.one(
        "slow_readers_cut_total",
        Counter,
        "Connections closed because the client read an answer slower than --send-min-rate.",
        r(&st.slow_readers),
    );
    m.one(
        "spilled_uploads_total",
        Counter,
        "Uploads held in a temporary file instead of memory.",
        r(&st.spilled_uploads),
    );
    m.one(
        "total_size_bytes",
        Gauge,
        "Capacity of every shard.",
        f.total_size,
    );
    m.one(
        "used_size_bytes",
        Gauge,
        "Bytes used in every shard (shard-size znodes).",
        f.used_size,
    );
    m.one(
        "usage_ratio",
        Gauge,
        "used / total (1 with no capacity).",
        f.usage_ratio,
    );
    m.one(
        "available_space_bytes",
        Gauge,
        "Free bytes of writable shards.",
        f.available_space,
    );
    m.one("shards", Gauge, "Shards in the shards map.", f.total_shards);
    m.one(
        "writable_shards",
        Gauge,
        "Enabled shards below capacity.",
        f.writable_shards,
    );
    {
        let mut family = m.family(
            "map_entries_skipped",
            Gauge,
            "Invalid entries of a map znode, skipped (the rest of the map is used); the log names them.",
        );
        for map in [paths::SERVERS_MAP, paths::SHARDS_MAP] {
            let n = s
                .view
                .skipped
                .iter()
                .find(|(m, _)| *m == map)
                .map_or(0, |(_, v)| v.len());
            family.sample(&[("map", map)], n);
        }
    }
    // One family after the other: each lists every shard with a size.
    let shards: Vec<_> = s
        .view
        .shards
        .iter()
        .filter_map(|(id, shard)| {
            let size = s.view.sizes.get(id)?;
            Some((id.as_str(), takes_writes(shard, size).to_string(), size))
        })
        .collect();
    let per_shard = |m: &mut Text, name, help, value: &dyn Fn(&ShardSize) -> String| {
        let mut family = m.family(name, Gauge, help);
        for (id, writable, size) in &shards {
            family.sample(&[("shard", id), ("writable", writable)], value(size));
        }
    };
    per_shard(
        &mut m,
        "shard_capacity_bytes",
        "Capacity of each shard.",
        &|size| size.capacity.to_string(),
    );
    per_shard(
        &mut m,
        "shard_used_bytes",
        "Bytes used in each shard.",
        &|size| size.used().to_string(),
    );
    per_shard(
        &mut m,
        "shard_fill_ratio",
        "used / capacity of each shard.",
        &|size| {
            let fill = if size.capacity == 0 {
                1.0
            } else {
                size.used() as f64 / size.capacity as f64
            };
            format!("{fill:.6}")
        },
    );
    m.one(
        "pending_fill_bytes",
        Gauge,
        "Uploaded bytes not yet added to shard-size znodes (next flush).",
        s.pending_fill,
    );
    if let Some(len) = s.queue_length {
        m.one(
            "queue_length",
            Gauge,
            "Replication tasks waiting in the queue.",
            len,
        );
    }
    if let Some(age) = s.queue_oldest {
        m.one(
            "queue_oldest_age_seconds",
            Gauge,
            "Age of the oldest queued replication task.",
            format_args!("{:.3}", age.as_secs_f64()),
        );
    }
    if !s.queue_servers.is_empty() {
        m.one(
            "queue_redis_reachable_servers",
            Gauge,
            "Queue Redis servers that answered the last check; at 0 uploads to shards of several nodes fail (503).",
            s.queue_servers.iter().filter(|r| r.reachable).count(),
        );
    }
    let per_server = |m: &mut Text, name, help, value: &dyn Fn(&Reading) -> Option<bool>| {
        let mut family = m.family(name, Gauge, help);
        for r in &s.queue_servers {
            if let Some(v) = value(r) {
                family.sample(&[("server", &r.addr().to_string())], u8::from(v));
            }
        }
    };
    per_server(
        &mut m,
        "queue_redis_reachable",
        "1 when a queue Redis server answered the last check (SCARD of the queue set).",
        &|r| Some(r.reachable),
    );
    per_server(
        &mut m,
        "queue_redis_evicting",
        "1 while a queue Redis server's maxmemory-policy may evict queued copies (uploads are refused unless --allow-evicting-queue).",
        &|r| r.keeping.policy.as_ref().map(|_| r.keeping.evicts()),
    );
    per_server(
        &mut m,
        "queue_redis_appendonly",
        "1 when a queue Redis server persists its data across a restart (appendonly yes).",
        &|r| r.keeping.appendonly,
    );
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backpack_shared::model::{Shard, ShardSize};

    fn view(spec: &[(&str, bool, u64, Option<u64>)]) -> View {
        let mut v = View::default();
        for (id, rw, cap, cur) in spec {
            v.shards.insert(
                id.to_string(),
                Shard {
                    read_only: !rw,
                    nodes: vec!["1".into()],
                },
            );
            v.sizes.insert(
                id.to_string(),
                ShardSize {
                    capacity: *cap,
                    current: *cur,
                },
            );
        }
        v
    }

    #[test]
    fn figures_like_the_original() {
        let f = ClusterFigures::of(&view(&[
            ("1", true, 1000, Some(333)),
            ("2", false, 1000, Some(0)),
            ("3", true, 1000, Some(1000)),
            ("4", true, 3000, None),
        ]));
        assert_eq!(f.total_size, 6000);
        assert_eq!(f.used_size, 1333);
        assert_eq!(f.usage_ratio, 0.2222); // 0.22216.. rounded up
        let up = ClusterFigures::of(&view(&[("1", true, 100_000, Some(22_221))]));
        assert_eq!(up.usage_ratio, 0.2223); // rounding would give 0.2222
        assert_eq!(f.available_space, 667 + 3000);
        assert_eq!(f.total_shards, 4);
        assert_eq!(f.writable_shards, 2);
        assert_eq!(ClusterFigures::of(&View::default()).usage_ratio, 1.0);
    }

    #[test]
    fn counts_outcomes() {
        let s = Stats::new();
        s.upload(200, 10, Duration::from_micros(700));
        s.upload(200, 5, Duration::from_millis(3));
        s.upload(400, 7, Duration::ZERO);
        s.upload(502, 9, Duration::ZERO);
        let c = s.counters();
        assert_eq!(
            c,
            Counters {
                processed_uploads: 2,
                processed_bytes: 15,
                failed_uploads: 2,
                failed_bytes: 16,
                rejected_uploads: 1,
                rejected_bytes: 7,
            }
        );
        let v = View::default();
        let text = metrics_text(&Snapshot {
            stats: &s,
            view: &v,
            queue_length: Some(3),
            queue_oldest: None,
            queue_servers: Vec::new(),
            pending_fill: 0,
            zk_connected: true,
            upload_slots_free: 1024,
            connections_refused: 0,
            spill_bytes: 0,
        });
        assert!(
            text.contains("backpack_coordinator_upload_duration_seconds_bucket{le=\"0.001\"} 1\n")
        );
        assert!(
            text.contains("backpack_coordinator_upload_duration_seconds_bucket{le=\"0.005\"} 2\n")
        );
        assert!(text.contains("backpack_coordinator_upload_duration_seconds_count 2\n"));
        assert!(text.contains("backpack_coordinator_uploads_total{result=\"rejected\"} 1\n"));
        assert!(text.contains("backpack_coordinator_upload_responses_total{status=\"502\"} 1\n"));
        assert!(text.contains("backpack_coordinator_queue_length 3\n"));
        assert!(text.contains("backpack_coordinator_map_entries_skipped{map=\"servers-map\"} 0\n"));
    }
}
