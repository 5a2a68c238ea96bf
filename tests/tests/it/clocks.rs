//! Overwrites with clocks that disagree (Debian's libfaketime): storage
//! nodes and coordinators run as processes with their wall clocks shifted
//! by minutes, and stepped back across a restart. A later upload of a name
//! wins on every node and through the read path; where the README says the
//! guarantee cannot hold (the first node down while an earlier copy had
//! not left it), the upload is counted and the nodes still converge.

use std::net::SocketAddr;
use std::time::Duration;

use backpack_shared::model::Version;
use backpack_shared::ops::MapOp;
use backpack_tests::{shared_redis, shared_zk, unique_root};
use tokio_util::sync::CancellationToken;

use crate::common::{
    CoordinatorProcess, NodeProcess, add_shard, client, drained, get_json, init_root,
    name_first_on, queue_on, require_faketime, start_replicator,
};

/// Uploads through a coordinator; the answer's status.
async fn upload(c: &reqwest::Client, front: SocketAddr, name: &str, body: &str) -> u16 {
    c.put(format!("http://{front}{name}"))
        .body(body.to_string())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// What `node` holds of `name`: bytes and version.
async fn held(c: &reqwest::Client, node: SocketAddr, name: &str) -> Option<(String, Version)> {
    let r = c.get(format!("http://{node}{name}")).send().await.ok()?;
    if r.status() != 200 {
        return None;
    }
    let header = |h: &str| r.headers()[h].to_str().unwrap().to_string();
    let version = Version {
        time_ms: header("x-backpack-time").parse().unwrap(),
        content_hash: u64::from_str_radix(&header("x-backpack-hash"), 16).unwrap(),
    };
    Some((r.text().await.unwrap(), version))
}

/// The read path: `GET /<shard>:<name without its slash>`.
async fn read_through(c: &reqwest::Client, front: SocketAddr, name: &str) -> Option<String> {
    let r = c
        .get(format!("http://{front}/1:{}", &name[1..]))
        .send()
        .await
        .ok()?;
    (r.status() == 200).then_some(r.text().await.ok()?)
}

/// The coordinator's count of uploads stored without the ordering guarantee.
async fn unordered(c: &reqwest::Client, front: SocketAddr) -> serde_json::Value {
    get_json(c, &format!("http://{front}/stats")).await["uploads_unordered"].clone()
}

/// A shard of two node processes with clocks shifted by `clocks`, on a
/// fresh root whose queue `key` is on the shared Redis; `None` (the test
/// returns) when a server program is missing outside CI.
struct ClockedShard {
    zk_addr: String,
    root: String,
    zk: backpack_shared::zk::Zk,
    queue: backpack_shared::queue::Queue,
    n1: NodeProcess,
    n2: NodeProcess,
}

impl ClockedShard {
    async fn start(tag: &str, key: &str, clocks: [&str; 2]) -> Option<ClockedShard> {
        if !require_faketime() {
            return None;
        }
        let (zks, redis) = (shared_zk()?, shared_redis()?);
        let root = unique_root(tag);
        let zk = init_root(&zks.addr(), &root, key, &[redis.addr()]).await;
        let (n1, n2) = (NodeProcess::start(clocks[0]), NodeProcess::start(clocks[1]));
        add_shard(&zk, &[n1.port, n2.port]).await;
        zk.apply(&MapOp::EnableShard { id: "1".into() })
            .await
            .unwrap();
        Some(ClockedShard {
            zk_addr: zks.addr(),
            queue: queue_on(&zk, key, &[redis.port]),
            root,
            zk,
            n1,
            n2,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_uploads_win_everywhere_whatever_the_clocks_say() {
    // Node 1 ten minutes ahead, node 2 ten minutes behind.
    let Some(ClockedShard {
        zk_addr,
        root,
        zk,
        queue,
        mut n1,
        n2,
    }) = ClockedShard::start("clocks", "ckq", ["+10m", "-10m"]).await
    else {
        return;
    };
    let fronts = [
        CoordinatorProcess::start(&zk_addr, &root, "+10m", &[]).await,
        CoordinatorProcess::start(&zk_addr, &root, "-10m", &[]).await,
    ];
    let stop = CancellationToken::new();
    let running = start_replicator(&zk_addr, &root, 4, stop.clone()).await;
    let c = client();
    // Names versioned by each node.
    let names: Vec<String> = (0..6)
        .flat_map(|i| {
            [
                name_first_on("1", &["1", "2"], &format!("on1-{i}")),
                name_first_on("2", &["1", "2"], &format!("on2-{i}")),
            ]
        })
        .collect();
    let mut round = 0;
    let mut overwrite_all = async |rounds: usize| {
        for _ in 0..rounds {
            for (i, name) in names.iter().enumerate() {
                // Through the clock ahead and the clock behind in turn; each
                // answered upload is read back through the other one.
                let (through, back) = (
                    fronts[(i + round) % 2].addr(),
                    fronts[(i + round + 1) % 2].addr(),
                );
                let body = format!("{name} round {round}");
                assert_eq!(upload(&c, through, name, &body).await, 200, "{name}");
                assert_eq!(
                    read_through(&c, back, name).await.as_deref(),
                    Some(body.as_str()),
                    "{name} read back right after its upload"
                );
            }
            round += 1;
        }
        round
    };

    overwrite_all(4).await;
    // Node 1's clock steps back twenty minutes across a restart.
    n1.restart("-10m");
    overwrite_all(3).await;
    drained(&queue, Duration::from_secs(60)).await;
    // Node 1 down: its names go to node 2, whose clock is behind the copies
    // node 1 gave them; those copies had reached node 2, so node 2 still
    // orders the new uploads after them.
    n1.kill();
    let last = overwrite_all(1).await - 1;
    n1.restart("-10m");
    drained(&queue, Duration::from_secs(60)).await;

    for name in &names {
        let want = format!("{name} round {last}");
        let (on1, on2) = (
            held(&c, n1.addr(), name).await,
            held(&c, n2.addr(), name).await,
        );
        assert_eq!(
            on1.as_ref().map(|h| h.0.as_str()),
            Some(want.as_str()),
            "{name} on node 1"
        );
        assert_eq!(on1, on2, "{name}: node 2 differs from node 1");
        for front in &fronts {
            assert_eq!(
                read_through(&c, front.addr(), name).await.as_deref(),
                Some(want.as_str())
            );
        }
    }
    stop.cancel();
    let _ = running.await;
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_written_while_its_first_node_is_down_is_counted_and_converges() {
    // Node 1 twenty minutes ahead of node 2.
    let Some(ClockedShard {
        zk_addr,
        root,
        zk,
        queue,
        mut n1,
        n2,
    }) = ClockedShard::start("clocks-down", "cdq", ["+10m", "-10m"]).await
    else {
        return;
    };
    let front = CoordinatorProcess::start(&zk_addr, &root, "", &[]).await;
    let c = client();
    let name = name_first_on("1", &["1", "2"], "down");

    // The first upload stays on node 1 (no replicator yet); node 1 goes
    // down; the second is written to node 2, whose clock is twenty minutes
    // behind node 1's: the case the README names.
    assert_eq!(upload(&c, front.addr(), &name, "earlier").await, 200);
    n1.kill();
    assert_eq!(upload(&c, front.addr(), &name, "later").await, 200);
    assert_eq!(
        unordered(&c, front.addr()).await,
        serde_json::json!({"off_first_node": 1, "peer_not_probed": 0})
    );
    n1.restart("+10m");
    let stop = CancellationToken::new();
    let running = start_replicator(&zk_addr, &root, 2, stop.clone()).await;
    drained(&queue, Duration::from_secs(60)).await;

    // Both nodes hold the same copy: the one with the later clock, as the
    // README says.
    let (on1, on2) = (
        held(&c, n1.addr(), &name).await,
        held(&c, n2.addr(), &name).await,
    );
    assert_eq!(on1, on2);
    assert_eq!(on1.map(|h| h.0).as_deref(), Some("earlier"));

    // The next upload is on node 1 again and wins everywhere.
    assert_eq!(upload(&c, front.addr(), &name, "next").await, 200);
    drained(&queue, Duration::from_secs(60)).await;
    for node in [n1.addr(), n2.addr()] {
        assert_eq!(
            held(&c, node, &name).await.map(|h| h.0).as_deref(),
            Some("next")
        );
    }
    stop.cancel();
    let _ = running.await;
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_upload_overtakes_a_copy_only_another_node_holds() {
    // Node 1 versions the name with a clock twenty minutes behind node 2's.
    let Some(ClockedShard {
        zk_addr,
        root,
        zk,
        queue,
        mut n1,
        n2,
    }) = ClockedShard::start("clocks-probe", "cpq", ["-10m", "+10m"]).await
    else {
        return;
    };
    let front = CoordinatorProcess::start(&zk_addr, &root, "", &["--node-retry-after", "0"]).await;
    let c = client();
    let name = name_first_on("1", &["1", "2"], "probe");

    // Written while node 1 is down: only node 2 has it (no replicator yet).
    n1.kill();
    assert_eq!(upload(&c, front.addr(), &name, "earlier").await, 200);
    let (_, earlier) = held(&c, n2.addr(), &name).await.unwrap();
    n1.restart("-10m");
    // Node 1 is back and versions the next upload: after the copy node 2
    // holds, though its own clock is far behind it.
    assert_eq!(upload(&c, front.addr(), &name, "later").await, 200);
    let (body, later) = held(&c, n1.addr(), &name).await.unwrap();
    assert_eq!(body, "later");
    assert_eq!(later.time_ms, earlier.time_ms + 1);
    assert_eq!(
        unordered(&c, front.addr()).await,
        serde_json::json!({"off_first_node": 1, "peer_not_probed": 0})
    );

    let stop = CancellationToken::new();
    let running = start_replicator(&zk_addr, &root, 2, stop.clone()).await;
    drained(&queue, Duration::from_secs(60)).await;
    for node in [n1.addr(), n2.addr()] {
        assert_eq!(held(&c, node, &name).await, Some(("later".into(), later)));
    }
    stop.cancel();
    let _ = running.await;
    zk.close();
}
