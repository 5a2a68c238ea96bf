//! A convergence checker in the spirit of Jepsen: uploads and overwrites
//! of a small set of names through two coordinators (one with its clock
//! ten minutes ahead, the nodes' clocks seven minutes apart), some of them
//! two at once, while a storage node is stopped (SIGSTOP) and resumed and a
//! queue Redis restarts empty. After the queue drains, every node of the
//! shard holds the same bytes for every name, and for a name whose last
//! upload did not overlap another and was stored with the ordering
//! guarantee (no `X-Backpack-Unordered` in its answer), they are that
//! upload's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use backpack_shared::ops::MapOp;
use backpack_tests::{RedisServer, shared_zk, unique_root};
use tokio_util::sync::CancellationToken;

use crate::common::{
    CoordinatorProcess, NodeProcess, add_shard, client, drained, eventually, init_root, queue_on,
    require_faketime, start_coordinator, start_replicator, two_node_shard,
};

/// Uploads through a coordinator: the status (0 without an answer) and
/// whether the answer says the upload is unordered.
async fn upload(
    client: &reqwest::Client,
    front: SocketAddr,
    name: &str,
    body: &[u8],
) -> (u16, bool) {
    match client
        .put(format!("http://{front}{name}"))
        .body(body.to_vec())
        .send()
        .await
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers().contains_key("x-backpack-unordered"),
        ),
        Err(_) => (0, false),
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

/// What the checker expects of a name after its last answered upload.
#[derive(Debug)]
enum Last {
    /// One upload, ordered after every earlier one: its bytes everywhere.
    Ordered(Vec<u8>),
    /// The same bytes everywhere, one of these (overlapping uploads, or
    /// an upload stored without the ordering guarantee, or an earlier one).
    OneOf(Vec<Vec<u8>>),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_through_faults_converge_on_the_last_answered_upload() {
    if !require_faketime() {
        return;
    }
    let Some(zks) = shared_zk() else { return };
    let (Some(mut ra), Some(rb)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let root = unique_root("converge");
    let zk = init_root(&zks.addr(), &root, "cq", &[ra.addr(), rb.addr()]).await;
    // Node 2, the one stopped, has its clock seven minutes ahead of node 1.
    let (a, b) = (NodeProcess::start("-4m"), NodeProcess::start("+3m"));
    add_shard(&zk, &[a.port, b.port]).await;
    zk.apply(&MapOp::EnableShard { id: "1".into() })
        .await
        .unwrap();
    // A stopped node costs a write 2 s and a version probe 0.3 s, and is
    // tried again 1 s after it failed.
    let opts = [
        "--node-timeout",
        "2",
        "--node-probe-timeout-ms",
        "300",
        "--node-retry-after",
        "1",
    ];
    let fronts = [
        CoordinatorProcess::start(&zks.addr(), &root, "+10m", &opts).await,
        CoordinatorProcess::start(&zks.addr(), &root, "", &opts).await,
    ];
    let stop = CancellationToken::new();
    let running = start_replicator(&zks.addr(), &root, 4, stop.clone()).await;

    let client = client();
    let names: Vec<String> = (0..20).map(|i| format!("/c/{i}.jpg")).collect();
    let mut last: BTreeMap<&str, Last> = BTreeMap::new();
    let mut sent: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    let (mut refused, mut unordered, mut overlapping) = (0, 0, 0);
    for k in 0..300 {
        match k {
            100 => b.pause(),
            160 => {
                b.resume();
                // Once both coordinators write to it again, uploads are
                // ordered again (what the last ones are checked against).
                for front in &fronts {
                    let back = eventually(Duration::from_secs(10), || async {
                        upload(&client, front.addr(), "/c/scratch.jpg", b"x").await == (200, false)
                    })
                    .await;
                    assert!(back, "uploads through {} stay unordered", front.addr());
                }
            }
            // A queue Redis restarted empty: the other still holds every task.
            200 => ra.restart(),
            _ => {}
        }
        let name = names[k % names.len()].as_str();
        if k % 7 == 3 {
            // Two uploads of the name at once, one through each coordinator.
            let (one, two) = (
                format!("{name} upload {k} via 1").into_bytes(),
                format!("{name} upload {k} via 2").into_bytes(),
            );
            let ((s1, _), (s2, _)) = tokio::join!(
                upload(&client, fronts[0].addr(), name, &one),
                upload(&client, fronts[1].addr(), name, &two),
            );
            sent.entry(name)
                .or_default()
                .extend([one.clone(), two.clone()]);
            let mut answered = Vec::new();
            for (status, body) in [(s1, one), (s2, two)] {
                if status == 200 {
                    answered.push(body);
                } else {
                    refused += 1;
                }
            }
            if !answered.is_empty() {
                overlapping += 1;
                last.insert(name, Last::OneOf(answered));
            }
            continue;
        }
        let body = format!("{name} upload {k}").into_bytes();
        sent.entry(name).or_default().push(body.clone());
        match upload(&client, fronts[k % 2].addr(), name, &body).await {
            (200, false) => {
                last.insert(name, Last::Ordered(body));
            }
            (200, true) => {
                unordered += 1;
                last.insert(name, Last::OneOf(sent[name].clone()));
            }
            _ => refused += 1,
        }
    }
    eprintln!("{refused} refused, {unordered} unordered, {overlapping} overlapping pairs");
    assert!(refused < 5, "{refused} uploads refused");
    // The stopped node made some uploads unordered; the checker must have
    // seen both kinds.
    assert!(
        unordered > 0 && overlapping > 0,
        "{unordered} unordered, {overlapping} overlapping"
    );

    let queue = queue_on(&zk, "cq", &[ra.port, rb.port]);
    drained(&queue, Duration::from_secs(90)).await;
    let mut wrong = Vec::new();
    for (name, expected) in &last {
        let on_a = read(&client, a.addr(), name).await;
        let on_b = read(&client, b.addr(), name).await;
        let ok = on_a.is_some()
            && on_a == on_b
            && match expected {
                Last::Ordered(body) => on_a.as_ref() == Some(body),
                Last::OneOf(bodies) => bodies.iter().any(|x| on_a.as_ref() == Some(x)),
            };
        if !ok {
            wrong.push((
                name,
                expected,
                on_a.map(String::from_utf8),
                on_b.map(String::from_utf8),
            ));
        }
    }
    assert!(wrong.is_empty(), "{} names wrong: {wrong:?}", wrong.len());
    stop.cancel();
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
    let client = client();
    let pairs = 200;
    for k in 0..pairs {
        let name = format!("/race/{k}.jpg");
        let (one, two) = (format!("{k} via 1"), format!("{k} via 2"));
        let (x, y) = tokio::join!(
            upload(&client, fronts[0].local_addr(), &name, one.as_bytes()),
            upload(&client, fronts[1].local_addr(), &name, two.as_bytes()),
        );
        assert_eq!((x.0, y.0), (200, 200), "{name}");
    }
    drained(&queue_on(&zk, "rq", &[redis.port]), Duration::from_secs(60)).await;
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

/// A node stopped (SIGSTOP) with an upload's whole body in its socket, its
/// client gone meanwhile: resumed, it does not store the upload, whose
/// writer has stored it elsewhere and moved on (a copy stored now would be
/// versioned after later uploads and win over them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_resumed_after_its_client_gave_up_does_not_store_the_upload() {
    use std::io::Write;
    let node = NodeProcess::start("");
    node.pause();
    let mut s = std::net::TcpStream::connect(node.addr()).unwrap();
    s.write_all(b"PUT /ghost.jpg HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    drop(s);
    node.resume();
    let client = client();
    let stats = format!("http://{}/stats", node.addr());
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s: serde_json::Value = client
                .get(&stats)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            s["abandoned_uploads"] == 1
        })
        .await
    );
    assert_eq!(read(&client, node.addr(), "/ghost.jpg").await, None);
    // A client that stays gets its upload stored.
    let r = client
        .put(format!("http://{}/kept.jpg", node.addr()))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        read(&client, node.addr(), "/kept.jpg").await,
        Some(b"hello".to_vec())
    );
}
