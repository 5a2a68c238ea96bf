//! What a replicator counts, how it announces itself in ZooKeeper and what
//! `/metrics` shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prometheus::{Kind, Text};

/// Counters of one replicator, shared by its workers.
#[derive(Debug, Default)]
pub struct Stats {
    copies_done: AtomicU64,
    copies_failed: AtomicU64,
    dead_lettered: AtomicU64,
    abandoned: AtomicU64,
    bytes: AtomicU64,
    in_flight: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Files copied and marked done.
    pub copies_done: u64,
    /// Failed attempts (each one counted toward the task's attempts).
    pub copies_failed: u64,
    /// Tasks this replicator moved to the dead-letter set.
    pub dead_lettered: u64,
    /// Copies dropped because the session (and so the lock) was lost, or
    /// cut by the shutdown deadline.
    pub abandoned: u64,
    /// Bytes of the files copied.
    pub bytes: u64,
    /// Copies running now.
    pub in_flight: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Counters {
        Counters {
            copies_done: self.copies_done.load(Ordering::Relaxed),
            copies_failed: self.copies_failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn copied(&self, bytes: u64) {
        self.copies_done.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn failed(&self, dead: bool) {
        self.copies_failed.fetch_add(1, Ordering::Relaxed);
        if dead {
            self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a copy in flight until the guard drops.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }
}

pub(crate) struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The JSON of `<root>/replicators/<host:pid>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub version: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started_ms: u64,
    pub concurrency: usize,
    pub max_attempts: u64,
    #[serde(flatten)]
    pub counters: Counters,
}

/// What `/metrics` shows about the queue, read when scraped.
#[derive(Debug, Clone, Default)]
pub struct QueueFigures {
    pub length: Option<u64>,
    pub oldest_age: Option<Duration>,
    pub dead: Option<u64>,
    /// Per Redis server: address and whether it answered.
    pub servers: Vec<(String, bool)>,
    /// The last check of each shard (`checks/<id>`), and now (ms).
    pub checks: Vec<(String, backpack_shared::model::ShardCheck)>,
    pub now_ms: u64,
}

/// One figure of a shard's last check, at a time (ms); `None`: no sample.
type CheckGauge = fn(&backpack_shared::model::ShardCheck, u64) -> Option<f64>;

/// The Prometheus text exposition of a replicator.
pub fn prometheus(
    c: &Counters,
    concurrency: usize,
    zk_connected: bool,
    q: &QueueFigures,
) -> String {
    use Kind::{Counter, Gauge};
    let mut m = Text::new("backpack_replicator_");
    m.one(
        "copies_total",
        Counter,
        "Files copied and marked done.",
        c.copies_done,
    );
    m.one(
        "failures_total",
        Counter,
        "Failed copy attempts.",
        c.copies_failed,
    );
    m.one(
        "dead_lettered_total",
        Counter,
        "Tasks this replicator moved to the dead-letter set.",
        c.dead_lettered,
    );
    m.one(
        "abandoned_total",
        Counter,
        "Copies dropped when the ZooKeeper session was lost or at the shutdown deadline.",
        c.abandoned,
    );
    m.one(
        "bytes_total",
        Counter,
        "Bytes of the files copied.",
        c.bytes,
    );
    m.one("in_flight", Gauge, "Copies running now.", c.in_flight);
    m.one("workers", Gauge, "Configured concurrency.", concurrency);
    m.one(
        "zookeeper_connected",
        Gauge,
        "1 when the ZooKeeper session is connected.",
        u8::from(zk_connected),
    );
    // Figures Redis did not give are declared without a sample.
    m.maybe(
        "queue_length",
        Gauge,
        "Tasks in the replication queue (largest count of any Redis server; absent when none answered).",
        q.length,
    );
    m.maybe(
        "queue_oldest_age_seconds",
        Gauge,
        "Age of the oldest queued task with a known queue time (absent when none).",
        q.oldest_age.map(|d| format!("{:.3}", d.as_secs_f64())),
    );
    m.maybe(
        "dead_letter_length",
        Gauge,
        "Tasks in the dead-letter set.",
        q.dead,
    );
    let mut f = m.family(
        "queue_server_up",
        Gauge,
        "1 when the queue's Redis server answered.",
    );
    for (addr, up) in &q.servers {
        f.sample(&[("server", addr)], u8::from(*up));
    }
    // The shards' last checks (the same on every replicator): what is
    // whole, and a rebuild's progress.
    let gauges: [(&str, &str, CheckGauge); 6] = [
        (
            "shard_check_age_seconds",
            "Seconds since the shard's last check.",
            |c, now| Some(now.saturating_sub(c.when_ms) as f64 / 1000.0),
        ),
        (
            "shard_check_failed",
            "1 when the shard's last check could not run.",
            |c, _| Some(f64::from(u8::from(c.error.is_some()))),
        ),
        (
            "shard_files",
            "Files of the shard at its last check.",
            |c, _| Some(c.files as f64),
        ),
        (
            "shard_copies_to_go",
            "Copies the shard's nodes lacked at its last check (missing or older).",
            |c, _| Some(c.to_go() as f64),
        ),
        ("shard_bytes_to_go", "Bytes of those copies.", |c, _| {
            Some(c.to_go_bytes as f64)
        }),
        (
            "shard_rebuild_eta_seconds",
            "Seconds left at the rate between the shard's last two checks, while copies are lacking.",
            |c, _| c.eta_secs().map(|s| s as f64),
        ),
    ];
    for (name, help, value) in gauges {
        let mut f = m.family(name, Gauge, help);
        for (id, c) in &q.checks {
            if let Some(v) = value(c, q.now_ms) {
                f.sample(&[("shard", id)], v);
            }
        }
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_is_flat_json() {
        let a = Announcement {
            version: "0.1.0".into(),
            started_ms: 5,
            concurrency: 4,
            max_attempts: 10,
            counters: Counters {
                copies_done: 3,
                bytes: 300,
                ..Counters::default()
            },
        };
        let v = serde_json::to_value(&a).unwrap_or_default();
        assert_eq!(v["copies_done"], 3);
        assert_eq!(v["bytes"], 300);
        assert_eq!(v["concurrency"], 4);
        assert_eq!(v["version"], "0.1.0");
    }

    #[test]
    fn in_flight_guard() {
        let s = Stats::default();
        {
            let _a = s.start();
            let _b = s.start();
            assert_eq!(s.snapshot().in_flight, 2);
        }
        assert_eq!(s.snapshot().in_flight, 0);
    }

    #[test]
    fn prometheus_text() {
        let c = Counters {
            copies_done: 7,
            bytes: 700,
            ..Counters::default()
        };
        let q = QueueFigures {
            length: Some(3),
            oldest_age: Some(Duration::from_millis(1500)),
            dead: None,
            servers: vec![("127.0.0.1:6379".into(), true)],
            checks: vec![(
                "3".into(),
                backpack_shared::model::ShardCheck {
                    when_ms: 50_000,
                    files: 9,
                    missing: 200,
                    to_go_bytes: 2000,
                    previous: Some(backpack_shared::model::Previous {
                        when_ms: 40_000,
                        to_go: 400,
                    }),
                    ..Default::default()
                },
            )],
            now_ms: 62_000,
        };
        let text = prometheus(&c, 8, true, &q);
        for line in [
            "backpack_replicator_copies_total 7",
            "backpack_replicator_bytes_total 700",
            "backpack_replicator_workers 8",
            "backpack_replicator_zookeeper_connected 1",
            "backpack_replicator_queue_length 3",
            "backpack_replicator_queue_oldest_age_seconds 1.500",
            "backpack_replicator_queue_server_up{server=\"127.0.0.1:6379\"} 1",
            "backpack_replicator_shard_check_age_seconds{shard=\"3\"} 12",
            "backpack_replicator_shard_copies_to_go{shard=\"3\"} 200",
            "backpack_replicator_shard_bytes_to_go{shard=\"3\"} 2000",
            "backpack_replicator_shard_rebuild_eta_seconds{shard=\"3\"} 10",
            "backpack_replicator_shard_check_failed{shard=\"3\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("backpack_replicator_dead_letter_length "))
        );
    }
}
