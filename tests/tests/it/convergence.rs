//! A convergence checker in the spirit of Jepsen: overwrites of a small
//! set of names through two coordinators while a storage node is stopped
//! and comes back and a queue Redis restarts empty. After the queue
//! drains, every node of the shard holds the same bytes for every name,
//! and they are the last answered upload's (the uploads here never
//! overlap and share one clock; clocks that disagree and simultaneous
//! uploads are issue 12's).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use backpack_shared::model::{HostPort, QueueInfo};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool};
use backpack_tests::{RedisServer, shared_zk, unique_root};
use tokio_util::sync::CancellationToken;

use crate::common::{eventually, init_root, start_coordinator, start_replicator, two_node_shard};

async fn upload(client: &reqwest::Client, front: SocketAddr, name: &str, body: &[u8]) -> u16 {
    match client
        .put(format!("http://{front}{name}"))
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn read(client: &reqwest::Client, node: SocketAddr, name: &str) -> Option<Vec<u8>> {
    let r = client
        .get(format!("http://{node}{name}"))
        .send()
        .await
        .ok()?;
    (r.status() == 200).then_some(r.bytes().await.ok()?.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_through_faults_converge_on_the_last_answered_upload() {
    let Some(zks) = shared_zk() else { return };
    let (Some(mut ra), Some(rb)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let root = unique_root("converge");
    let zk = init_root(&zks.addr(), &root, "cq", &[ra.addr(), rb.addr()]).await;
    let (a, mut b) = two_node_shard(&zk).await;
    zk.apply(&MapOp::EnableShard { id: "1".into() })
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let fronts = [
        start_coordinator(&zk, stop.clone()).await,
        start_coordinator(&zk, stop.clone()).await,
    ];
    let running = start_replicator(&zks.addr(), &root, 4, stop.clone()).await;

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("/c/{i}.jpg")).collect();
    let mut last: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut refused = 0;
    for k in 0..300 {
        match k {
            100 => b.stop().await,
            160 => b.restart().await,
            // A queue Redis restarted empty: the other still holds every task.
            200 => ra.restart(),
            _ => {}
        }
        let name = &names[k % names.len()];
        let body = format!("{name} upload {k}").into_bytes();
        let front = fronts[k % 2].local_addr();
        match upload(&client, front, name, &body).await {
            200 => {
                last.insert(name, body);
            }
            _ => refused += 1,
        }
    }
    assert!(refused < 5, "{refused} uploads refused");

    let info = QueueInfo {
        key: "cq".into(),
        servers: [&ra, &rb]
            .iter()
            .map(|r| HostPort {
                host: "127.0.0.1".into(),
                port: r.port,
            })
            .collect(),
    };
    let queue = Queue::new(&info, &RedisPool::new(), zk.clone());
    assert!(
        eventually(Duration::from_secs(60), || async {
            queue.len().await.overall == Some(0) && queue.locks().await.is_ok_and(|l| l.is_empty())
        })
        .await,
        "the queue did not drain: {:?}",
        queue.len().await.per_server
    );
    assert!(queue.dead(5).await.is_empty(), "{:?}", queue.dead(5).await);
    for (name, body) in &last {
        let on_a = read(&client, a.addr, name).await;
        let on_b = read(&client, b.addr, name).await;
        assert_eq!(on_a.as_ref(), Some(body), "{name} on node 1");
        assert_eq!(on_b.as_ref(), Some(body), "{name} on node 2");
    }
    stop.cancel();
    for f in fronts {
        f.wait().await;
    }
    let _ = running.await;
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_overwrites_through_two_coordinators_leave_one_copy_everywhere() {
    let Some(zks) = shared_zk() else { return };
    let Some(redis) = backpack_tests::shared_redis() else {
        return;
    };
    let root = unique_root("converge-race");
    let zk = init_root(&zks.addr(), &root, "rq", &[redis.addr()]).await;
    let (a, b) = two_node_shard(&zk).await;
    zk.apply(&MapOp::EnableShard { id: "1".into() })
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let fronts = [
        start_coordinator(&zk, stop.clone()).await,
        start_coordinator(&zk, stop.clone()).await,
    ];
    let running = start_replicator(&zks.addr(), &root, 8, stop.clone()).await;

    // Pairs of uploads of one name, one through each coordinator, at once.
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let pairs = 200;
    for k in 0..pairs {
        let name = format!("/race/{k}.jpg");
        let (one, two) = (format!("{k} via 1"), format!("{k} via 2"));
        let (x, y) = tokio::join!(
            upload(&client, fronts[0].local_addr(), &name, one.as_bytes()),
            upload(&client, fronts[1].local_addr(), &name, two.as_bytes()),
        );
        assert_eq!((x, y), (200, 200), "{name}");
    }
    let info = QueueInfo {
        key: "rq".into(),
        servers: vec![HostPort {
            host: "127.0.0.1".into(),
            port: redis.port,
        }],
    };
    let queue = Queue::new(&info, &RedisPool::new(), zk.clone());
    assert!(
        eventually(Duration::from_secs(60), || async {
            queue.len().await.overall == Some(0) && queue.locks().await.is_ok_and(|l| l.is_empty())
        })
        .await
    );
    let mut differ = Vec::new();
    for k in 0..pairs {
        let name = format!("/race/{k}.jpg");
        let (on_a, on_b) = (
            read(&client, a.addr, &name).await,
            read(&client, b.addr, &name).await,
        );
        if on_a.is_none() || on_a != on_b {
            differ.push((name, on_a, on_b));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {pairs} names differ: {:?}",
        differ.len(),
        &differ[..differ.len().min(3)]
    );
    stop.cancel();
    for f in fronts {
        f.wait().await;
    }
    let _ = running.await;
    zk.close();
}
