//! Made-up clusters for tests, snapshots and the measurement: the
//! original README's cluster (3 shards on 6 nodes) and large ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backpack_shared::live::{ClusterState, Doc};
use backpack_shared::model::{
    HostPort, QueueInfo, ServersMap, Shard, ShardCheck, ShardSize, ShardsMap,
};
use backpack_shared::queue::{Keeping, Lock, TaskInfo, lock_name};
use backpack_shared::zk::ConnState;

use crate::event::{Event, Health, Millis, QueueReport};
use crate::state::{Config, State};

/// 2026-11-25 14:02:07 UTC: a fixed clock for snapshots.
pub const T0: Millis = 1_795_615_327_000;
pub const GIB: u64 = 1 << 30;

pub fn doc<T>(v: T) -> Doc<T> {
    Doc {
        value: Some(v),
        error: None,
        seen: true,
        skipped: Vec::new(),
    }
}

pub fn config() -> Config {
    Config {
        zk_servers: "127.0.0.1:2181".into(),
        root: "/backpack".into(),
        read_only: false,
        color: true,
        utc_offset_secs: 0,
    }
}

fn hp(host: &str, port: u16) -> HostPort {
    HostPort {
        host: host.into(),
        port,
    }
}

/// The README's cluster: servers 1-6 on hosts one and two, shards 1 (1,4)
/// and 2 (2,5) writable, 3 (3,6) read-only, plus server 7 in no shard; two
/// coordinators and two replicators announced, the first the elected
/// checker. Shard 1 was found whole 2 hours ago, shard 2 lacking 3 copies
/// 5 minutes ago; shard 3 was never checked.
pub fn cluster() -> ClusterState {
    let mut servers = ServersMap::new();
    for i in 1..=7u16 {
        let host = if i <= 3 || i == 7 { "one" } else { "two" };
        servers.insert(i.to_string(), hp(host, 10000 + i));
    }
    let mut shards = ShardsMap::new();
    let mut sizes = BTreeMap::new();
    for (id, nodes, ro, used) in [
        ("1", ["1", "4"], false, 38 * GIB),
        ("2", ["2", "5"], false, 23 * GIB + GIB / 5),
        ("3", ["3", "6"], true, 0),
    ] {
        shards.insert(
            id.into(),
            Shard {
                read_only: ro,
                nodes: nodes.iter().map(|s| s.to_string()).collect(),
            },
        );
        sizes.insert(
            id.to_string(),
            doc(ShardSize {
                capacity: 100 * GIB,
                current: Some(used),
            }),
        );
    }
    let mut coordinators = BTreeMap::new();
    for (name, up) in [("one:12001", 1200u64), ("two:12002", 1100)] {
        coordinators.insert(
            name.to_string(),
            doc(serde_json::json!({
                "version": "0.1.0", "address": name, "started": T0 - 3_600_000, "pid": 4121,
                "updated": T0, "ready": true, "processed_uploads": up,
                "processed_bytes": up * 100_000, "failed_uploads": 0, "failed_bytes": 0,
                "rejected_uploads": 0, "pending_fill_bytes": 0,
            })),
        );
    }
    let mut replicators = BTreeMap::new();
    for (name, done) in [("one:4121", 2100u64), ("two:977", 2050)] {
        replicators.insert(
            name.to_string(),
            doc(serde_json::json!({
                "version": "0.1.0", "started_ms": T0 - 3_600_000, "concurrency": 8,
                "max_attempts": 10, "copies_done": done, "copies_failed": 1,
                "dead_lettered": 0, "abandoned": 0, "bytes": done * 100_000, "in_flight": 1,
            })),
        );
    }
    ClusterState {
        servers: doc(servers),
        shards: doc(shards),
        sizes,
        queue: doc(QueueInfo {
            key: "backpack-queue".into(),
            servers: vec![hp("one", 13001), hp("two", 13002)],
        }),
        coordinators,
        replicators,
        checks: BTreeMap::from([
            (
                "1".to_string(),
                doc(ShardCheck {
                    when_ms: T0 - 2 * 3_600_000,
                    files: 381_204,
                    bytes: 38 * GIB,
                    by: "one:4121".into(),
                    ..ShardCheck::default()
                }),
            ),
            (
                "2".to_string(),
                doc(ShardCheck {
                    when_ms: T0 - 5 * 60_000,
                    files: 230_911,
                    bytes: 23 * GIB,
                    missing: 2,
                    older: 1,
                    by: "one:4121".into(),
                    ..ShardCheck::default()
                }),
            ),
        ]),
        check_requests: BTreeMap::new(),
        checker: Some(Some("one:4121".into())),
        conn: Some(ConnState::Connected { session_id: 0x1a2b }),
        generation: 1,
    }
}

/// A cluster of `shards` shards of two nodes each over `servers` servers.
pub fn large(shards: usize, servers: usize) -> ClusterState {
    let mut c = cluster();
    let mut smap = ServersMap::new();
    for i in 1..=servers {
        smap.insert(
            i.to_string(),
            hp(
                &format!("node{}.example", i / 100),
                10000 + (i % 50000) as u16,
            ),
        );
    }
    let mut shmap = ShardsMap::new();
    let mut sizes = BTreeMap::new();
    for i in 1..=shards {
        let a = (2 * i - 2) % servers + 1;
        let b = (2 * i - 1) % servers + 1;
        shmap.insert(
            i.to_string(),
            Shard {
                read_only: i % 3 == 0,
                nodes: vec![a.to_string(), b.to_string()],
            },
        );
        sizes.insert(
            i.to_string(),
            doc(ShardSize {
                capacity: 100 * GIB,
                current: Some((i as u64 * 7919) % 100 * GIB),
            }),
        );
    }
    c.servers = doc(smap);
    c.shards = doc(shmap);
    c.sizes = sizes;
    c
}

pub fn health_up(latency_ms: u32, gets: u64, puts: u64) -> Health {
    Health::Up {
        latency_ms,
        gets: Some(gets),
        puts: Some(puts),
        get_avg_ms: Some(1.5),
        put_avg_ms: Some(4.25),
        at: T0 - 2000,
    }
}

/// Health of the demo cluster: every node up but 6 down; 7 unchecked.
pub fn health() -> Event {
    let mut v = vec![];
    for i in 1..=5u16 {
        let host = if i <= 3 { "one" } else { "two" };
        v.push((
            hp(host, 10000 + i),
            health_up(i as u32 + 1, 100 * i as u64, 40 * i as u64),
        ));
    }
    v.push((
        hp("two", 10006),
        Health::Down {
            error: "Connection refused (os error 111)".into(),
            at: T0 - 2000,
        },
    ));
    Event::Health(v)
}

pub fn task(path: &str, to: &str, from: &str) -> String {
    format!(r#"{{"from":["{from}"],"to":"{to}","path":"{path}"}}"#)
}

/// A queue with two queued tasks (one being copied) and one dead letter.
pub fn queue() -> Event {
    let key = "backpack-queue";
    let copying = task("/photos/2026/11/25/a8f3.jpg", "4", "1");
    Event::Queue(QueueReport {
        key: key.into(),
        per_server: vec![(hp("one", 13001), Ok(12)), (hp("two", 13002), Ok(12))],
        overall: Some(12),
        oldest: Some(Duration::from_secs(3)),
        dead_count: Some(1),
        sample: vec![
            TaskInfo {
                item: copying.clone(),
                first_queued_ms: Some(T0 - 3000),
                attempts: 1,
                last_error: Some("GET http://one:10001: 404".into()),
            },
            TaskInfo {
                item: task("/photos/2026/11/25/a8f4.jpg", "5", "2"),
                first_queued_ms: Some(T0 - 2000),
                attempts: 0,
                last_error: None,
            },
        ],
        dead: vec![TaskInfo {
            item: task("/photos/2026/11/24/lost.jpg", "6", "3"),
            first_queued_ms: Some(T0 - 86_400_000),
            attempts: 10,
            last_error: Some("GET http://one:10003/photos/2026/11/24/lost.jpg: 404".into()),
        }],
        locks: Ok(vec![Lock {
            name: lock_name(key, &copying),
            worker: "one:4121".into(),
        }]),
    })
}

/// How the demo queue's servers keep items when they can lose tasks:
/// one:13001 evicts (`allkeys-lru`), two:13002 does not persist.
pub fn keeping_at_risk() -> Event {
    Event::Keeping(vec![
        Keeping {
            addr: hp("one", 13001),
            policy: Some("allkeys-lru".into()),
            appendonly: Some(true),
            error: None,
        },
        Keeping {
            addr: hp("two", 13002),
            policy: Some("noeviction".into()),
            appendonly: Some(false),
            error: None,
        },
    ])
}

/// A state that has seen the demo cluster, its health and queue, at `T0`,
/// on a `w` x `h` terminal.
pub fn state(w: u16, h: u16) -> State {
    let mut s = State::new(config(), T0 - 10_000);
    s.update(T0 - 10_000, Event::Resize(w, h));
    s.update(T0 - 10_000, Event::Cluster(Arc::new(cluster())));
    // Five seconds of activity: counters and shard 1 grew.
    let mut later = cluster();
    later.generation = 2;
    if let Some(d) = later.sizes.get_mut("1") {
        d.value = Some(ShardSize {
            capacity: 100 * GIB,
            current: Some(38 * GIB + (512 << 20)),
        });
    }
    for (i, (_, d)) in later.coordinators.iter_mut().enumerate() {
        if let Some(v) = &mut d.value {
            v["processed_uploads"] = (1200 + 1030 - 100 * i as u64).into();
        }
    }
    for (i, (_, d)) in later.replicators.iter_mut().enumerate() {
        if let Some(v) = &mut d.value {
            v["copies_done"] = (2100 + 995 - 50 * i as u64).into();
        }
    }
    s.update(T0 - 5_000, Event::Cluster(Arc::new(later)));
    s.update(T0 - 2_000, health());
    s.update(T0 - 1_000, queue());
    s.update(T0, Event::Tick);
    s
}
