//! The replicator copying against real ZooKeeper, Redis and storage nodes:
//! files reach every node byte for byte, tasks are never copied twice at
//! once, nodes and Redis servers that go away and come back lose nothing, a
//! task that cannot succeed lands in the dead-letter set (and the admin
//! command handles it), and the configuration is followed live. Its start,
//! shutdown and ZooKeeper loss are in `lifecycle::replicator`.

use std::process::Command;
use std::time::{Duration, Instant};

use backpack_shared::model::{QueueInfo, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool};
use backpack_tests::{RedisServer, bin, shared_redis, shared_zk, unique_root};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::cluster::queue_empty;
use crate::common::node::{Node, content, get, put, puts_count};
use crate::common::replicator::{Running, config, env, eventually, task};
use crate::common::{self, client, start_coordinator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_holds_every_file_byte_for_byte() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (n1, n2, n3) = (
        Node::start("1").await,
        Node::start("2").await,
        Node::start("3").await,
    );
    let env = env(&zks.addr(), "repl-copy", &[&n1, &n2, &n3], &[redis.port]).await;

    // Files of every kind of size (empty, tiny, 100 KB, over the node's
    // streaming threshold), uploaded to one node each, as a coordinator does.
    let sizes = [0, 1, 1000, 100 * 1024, 3 << 20];
    let mut files = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let path = format!("/photos/{i}.jpg?v={i}");
        let data = content(i, sizes[i % sizes.len()]);
        let (first, others) = match i % 3 {
            0 => (&n1, [&n2, &n3]),
            1 => (&n2, [&n1, &n3]),
            _ => (&n3, [&n1, &n2]),
        };
        put(first.port, &path, data.clone()).await;
        for to in others {
            tasks.push(task(&[first], to, &path));
        }
        files.push((path, data));
    }

    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_port = metrics.local_addr().unwrap().port();
    let r = Running::start(&env, config(4), Some(metrics)).await;
    env.queue.push_many(&tasks).await.unwrap();

    eventually(Duration::from_secs(20), "every task done", || async {
        r.stats.snapshot().copies_done == 60 && queue_empty(&env.queue).await
    })
    .await;
    for (path, data) in &files {
        let mut times = Vec::new();
        for n in [&n1, &n2, &n3] {
            let (body, time) = get(n.port, path)
                .await
                .unwrap_or_else(|| panic!("{path} missing on node {}", n.id));
            assert!(body == *data, "{path} differs on node {}", n.id);
            times.push(time);
        }
        assert!(
            times.iter().all(|t| t == &times[0] && !t.is_empty()),
            "{path}: upload times {times:?}"
        );
    }
    assert!(env.queue.dead(10).await.is_empty());
    let c = r.stats.snapshot();
    assert_eq!((c.copies_failed, c.in_flight), (0, 0));
    let expected_bytes: u64 = files.iter().map(|(_, d)| 2 * d.len() as u64).sum();
    assert_eq!(c.bytes, expected_bytes);

    // Announced in ZooKeeper, refreshed.
    let name = format!("{}/{}", paths::REPLICATORS, r.name);
    eventually(
        Duration::from_secs(5),
        "announcement with the counts",
        || async {
            let Some((data, _)) = env.zk.get(&name).await.unwrap() else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(v["concurrency"], 4);
            assert!(v["version"].is_string() && v["started_ms"].is_u64());
            v["copies_done"] == 60 && v["bytes"] == expected_bytes
        },
    )
    .await;

    // Prometheus text.
    let text = client()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "backpack_replicator_copies_total 60".to_string(),
        format!("backpack_replicator_bytes_total {expected_bytes}"),
        "backpack_replicator_failures_total 0".into(),
        "backpack_replicator_queue_length 0".into(),
        "backpack_replicator_dead_letter_length 0".into(),
        "backpack_replicator_zookeeper_connected 1".into(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
    }

    let end = r.shutdown().await;
    assert_eq!(end.copies_done, 60);
    assert!(
        env.zk.get(&name).await.unwrap().is_none(),
        "announcement removed at shutdown"
    );
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_the_coordinator_reach_every_node_of_their_shard() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    // Shard 1 on nodes 1 and 2, shard 2 on nodes 3, 4 and 5, both writable.
    let mut nodes = Vec::new();
    for id in 1..=5 {
        nodes.push(Node::start(&id.to_string()).await);
    }
    let refs: Vec<&Node> = nodes.iter().collect();
    let env = env(&zks.addr(), "repl-e2e", &refs, &[redis.port]).await;
    for (shard, members) in [("1", ["1", "2"].as_slice()), ("2", &["3", "4", "5"])] {
        env.zk
            .apply(&MapOp::AddShard {
                id: shard.into(),
                nodes: members.iter().map(|m| m.to_string()).collect(),
                capacity: 1 << 30,
                replace: true,
            })
            .await
            .unwrap();
        env.zk
            .apply(&MapOp::EnableShard { id: shard.into() })
            .await
            .unwrap();
    }
    let stop = CancellationToken::new();
    let c = start_coordinator(&env.zk, stop.clone()).await;
    let front = format!("http://{}", c.local_addr());
    let r = Running::start(&env, config(4), None).await;

    let sizes = [0, 10, 100 * 1024, 2 << 20];
    let mut uploads = Vec::new();
    let mut copies = 0;
    for i in 0..40 {
        let path = format!("/e2e/{i}.jpg");
        let data = content(100 + i, sizes[i % sizes.len()]);
        let resp = client()
            .put(format!("{front}{path}"))
            .header(reqwest::header::CONTENT_LENGTH, data.len())
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "upload {path}");
        let v: serde_json::Value = resp.json().await.unwrap();
        let shard = v["shard_id"].as_str().unwrap().to_string();
        copies += if shard == "1" { 1 } else { 2 };
        uploads.push((path, data, shard));
    }
    eventually(Duration::from_secs(20), "every copy done", || async {
        r.stats.snapshot().copies_done == copies && queue_empty(&env.queue).await
    })
    .await;
    for (path, data, shard) in &uploads {
        let members: &[usize] = if shard == "1" { &[0, 1] } else { &[2, 3, 4] };
        let mut times = Vec::new();
        for &m in members {
            let (body, time) = get(nodes[m].port, path)
                .await
                .unwrap_or_else(|| panic!("{path} missing on node {}", nodes[m].id));
            assert!(body == *data, "{path} differs on node {}", nodes[m].id);
            times.push(time);
        }
        assert!(times.iter().all(|t| t == &times[0]), "{path}: {times:?}");
    }
    assert_eq!(r.shutdown().await.copies_failed, 0);
    stop.cancel();
    c.wait().await;
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicators_never_copy_the_same_task_at_once() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (n1, n2) = (Node::start("1").await, Node::start("2").await);
    let env = env(&zks.addr(), "repl-two", &[&n1, &n2], &[redis.port]).await;
    let mut tasks = Vec::new();
    for i in 0..120 {
        let path = format!("/two/{i}");
        put(n1.port, &path, content(i, 2000)).await;
        tasks.push(task(&[&n1], &n2, &path));
    }
    let a = Running::start(&env, config(6), None).await;
    let b = Running::start(&env, config(6), None).await;
    env.queue.push_many(&tasks).await.unwrap();
    eventually(Duration::from_secs(20), "every task done", || async {
        queue_empty(&env.queue).await
    })
    .await;
    let (ca, cb) = (a.shutdown().await, b.shutdown().await);
    // Each task copied exactly once: a lock is never held twice, and a
    // task done by one is not copied again by the other.
    assert_eq!(ca.copies_done + cb.copies_done, 120, "{ca:?} {cb:?}");
    assert!(
        ca.copies_done > 0 && cb.copies_done > 0,
        "both worked: {ca:?} {cb:?}"
    );
    assert_eq!(
        puts_count(n2.port).await,
        120,
        "one PUT per file on the destination"
    );
    for i in 0..120 {
        assert_eq!(
            get(n2.port, &format!("/two/{i}")).await.unwrap().0,
            content(i, 2000)
        );
    }
    env.zk.close();
}

/// A node of the task down at first: attempts are counted with the
/// error, and the copy happens once it is back.
async fn node_down_then_back(source_down: bool) {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (mut n1, mut n2) = (Node::start("1").await, Node::start("2").await);
    let env = env(&zks.addr(), "repl-down", &[&n1, &n2], &[redis.port]).await;
    put(n1.port, "/down.jpg", content(7, 50_000)).await;
    let down = if source_down { &mut n1 } else { &mut n2 };
    down.down().await;

    // Dead letters on as by default: a node down through more than
    // max_attempts failed attempts is not a reason to give up.
    let c = config(2);
    let attempts = c.max_attempts + 2;
    let r = Running::start(&env, c, None).await;
    let pushed = Instant::now();
    env.queue
        .push(&task(&[&n1], &n2, "/down.jpg"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "failed attempts recorded, the task still queued",
        || async {
            let s = env.queue.sample(1).await;
            s.len() == 1 && s[0].attempts >= attempts
        },
    )
    .await;
    assert!(env.queue.dead(1).await.is_empty());
    // Each attempt waited out the task's backoff (50 ms doubling to
    // 300 ms): never the hot loop that used up ten attempts in a second.
    let least = Duration::from_millis(50 + 100 + 200 + 300 * (attempts - 4));
    assert!(pushed.elapsed() >= least, "{:?}", pushed.elapsed());
    let info = &env.queue.sample(1).await[0];
    let error = info.last_error.clone().unwrap();
    let expected = if source_down {
        "GET from 1 (127.0.0.1:"
    } else {
        "PUT to 2 (127.0.0.1:"
    };
    assert!(error.contains(expected), "{error}");
    assert_eq!(r.stats.snapshot().copies_done, 0);

    let down = if source_down { &mut n1 } else { &mut n2 };
    down.up().await;
    eventually(
        Duration::from_secs(10),
        "copied once the node is back",
        || async { queue_empty(&env.queue).await && r.stats.snapshot().copies_done == 1 },
    )
    .await;
    assert_eq!(
        get(n2.port, "/down.jpg").await.unwrap().0,
        content(7, 50_000)
    );
    let end = r.shutdown().await;
    assert!(end.copies_failed >= 2, "{end:?}");
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_down_task_is_retried_and_done_when_it_is_back() {
    node_down_then_back(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_down_task_is_retried_and_done_when_it_is_back() {
    node_down_then_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_redis_servers_killed_mid_run_loses_nothing() {
    let Some(zks) = shared_zk() else { return };
    let (Some(mut ra), Some(rb)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let (n1, n2) = (Node::start("1").await, Node::start("2").await);
    let env = env(&zks.addr(), "repl-redis", &[&n1, &n2], &[ra.port, rb.port]).await;
    let total = 90;
    for i in 0..total {
        put(n1.port, &format!("/r/{i}"), content(i, 5000)).await;
    }
    let push = |range: std::ops::Range<usize>| {
        let items: Vec<String> = range
            .map(|i| task(&[&n1], &n2, &format!("/r/{i}")))
            .collect();
        let q = env.queue.clone();
        async move { q.push_many(&items).await.unwrap() }
    };
    push(0..40).await;
    let r = Running::start(&env, config(2), None).await;
    eventually(Duration::from_secs(10), "some copies", || async {
        r.stats.snapshot().copies_done >= 10
    })
    .await;

    // Redis A dies, its copy of the queue with it; B holds every task.
    ra.kill();
    push(40..70).await;
    eventually(
        Duration::from_secs(30),
        "every task pushed so far done",
        || async { r.stats.snapshot().copies_done >= 70 },
    )
    .await;
    // A comes back empty and takes new pushes again.
    ra.restart();
    push(70..total).await;
    eventually(Duration::from_secs(20), "every task done", || async {
        queue_empty(&env.queue).await
    })
    .await;
    for i in 0..total {
        let (body, _) = get(n2.port, &format!("/r/{i}"))
            .await
            .unwrap_or_else(|| panic!("/r/{i} lost"));
        assert_eq!(body, content(i, 5000));
    }
    r.shutdown().await;
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_exists_nowhere_ends_in_the_dead_letter_set() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (n1, n2) = (Node::start("1").await, Node::start("2").await);
    let env = env(&zks.addr(), "repl-dead", &[&n1, &n2], &[redis.port]).await;
    let mut c = config(2);
    c.max_attempts = 3;
    let r = Running::start(&env, c, None).await;
    let lost = task(&[&n1], &n2, "/lost.jpg");
    let gone = task(&[&n1], &n2, "/gone.jpg");
    env.queue
        .push_many(&[lost.clone(), gone.clone()])
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "both tasks dead", || async {
        env.queue.dead(10).await.len() == 2 && env.queue.len().await.overall == Some(0)
    })
    .await;
    for t in env.queue.dead(10).await {
        assert_eq!(t.attempts, 3, "{t:?}");
        let e = t.last_error.unwrap();
        assert!(
            e.contains("not found on 1 (127.0.0.1:") && e.contains("(404)"),
            "{e}"
        );
    }
    assert_eq!(r.stats.snapshot().dead_lettered, 2);

    // The admin command lists them with their error...
    let admin = |args: &[&str]| {
        let out = Command::new(bin("backpack-replicator-dead"))
            .arg(&env.zk_addr)
            .arg(&env.root)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let listed = tokio::task::block_in_place(|| admin(&["list"]));
    assert!(listed.starts_with("2 dead-letter tasks:"), "{listed}");
    assert!(
        listed.lines().any(|l| l == lost) && listed.lines().any(|l| l == gone),
        "{listed}"
    );
    assert!(
        listed.contains("/lost.jpg → 2 (from 1)") && listed.contains("3 attempts"),
        "{listed}"
    );
    assert!(listed.contains("(404)"), "{listed}");

    // ...re-queues one once its file exists (by file name)...
    put(n1.port, "/lost.jpg", content(1, 100)).await;
    let out = tokio::task::block_in_place(|| admin(&["requeue", "/lost.jpg"]));
    assert_eq!(out, "Requeued 1 task\n");
    eventually(Duration::from_secs(10), "re-queued task copied", || async {
        get(n2.port, "/lost.jpg").await.is_some() && queue_empty(&env.queue).await
    })
    .await;
    // ...and drops the other for good.
    let out = tokio::task::block_in_place(|| admin(&["drop", "--all"]));
    assert_eq!(out, "Dropped 1 task\n");
    assert!(env.queue.dead(10).await.is_empty());
    assert_eq!(
        tokio::task::block_in_place(|| admin(&["list"])),
        "No dead-letter tasks\n"
    );
    r.shutdown().await;
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_changes_are_followed_live() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (n1, n2, n3) = (
        Node::start("1").await,
        Node::start("2").await,
        Node::start("3").await,
    );
    // Node 3 is not in servers-map yet.
    let env = env(&zks.addr(), "repl-live", &[&n1, &n2], &[redis.port]).await;
    put(n1.port, "/live.jpg", content(9, 1234)).await;
    let mut c = config(2);
    c.max_attempts = 0;
    let r = Running::start(&env, c, None).await;

    // An unknown destination is reported on the task, not fatal.
    env.queue
        .push(&task(&[&n1], &n3, "/live.jpg"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "unknown id reported", || async {
        let s = env.queue.sample(1).await;
        s.first()
            .and_then(|t| t.last_error.clone())
            .is_some_and(|e| e.contains("\"3\" is not in servers-map"))
    })
    .await;
    env.zk
        .apply(&MapOp::AddServer {
            id: "3".into(),
            addr: n3.addr(),
            replace: false,
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "copied to the new node",
        || async { get(n3.port, "/live.jpg").await.is_some() && queue_empty(&env.queue).await },
    )
    .await;

    // A new queue (another key) is picked up without restart.
    let moved = QueueInfo {
        key: format!("{}-moved", env.info.key),
        servers: env.info.servers.clone(),
    };
    env.zk.apply(&MapOp::SetQueue(moved.clone())).await.unwrap();
    let q2 = Queue::new(&moved, &RedisPool::new(), env.zk.clone());
    put(n1.port, "/moved.jpg", content(10, 999)).await;
    let pushed = Instant::now();
    // Pushed before the replicator may have switched: the slow poll finds it.
    q2.push(&task(&[&n1], &n2, "/moved.jpg")).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "copied from the new queue",
        || async { get(n2.port, "/moved.jpg").await.is_some() && queue_empty(&q2).await },
    )
    .await;
    eprintln!("new queue picked up in {:?}", pushed.elapsed());
    assert_eq!(r.shutdown().await.copies_done, 2);
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_holds_back_only_its_own_tasks() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let (n1, n2, mut n3) = (
        Node::start("1").await,
        Node::start("2").await,
        Node::start("3").await,
    );
    let env = env(&zks.addr(), "repl-dest", &[&n1, &n2, &n3], &[redis.port]).await;
    n3.down().await;
    let mut c = config(4);
    c.destination_retry_max = Duration::from_secs(2);
    let r = Running::start(&env, c, None).await;
    let (mut to2, mut to3) = (Vec::new(), Vec::new());
    for i in 0..200 {
        let path = format!("/dest/{i}");
        put(n1.port, &path, content(i, 1000)).await;
        to2.push(task(&[&n1], &n2, &path));
        to3.push(task(&[&n1], &n3, &path));
    }
    env.queue.push_many(&to3).await.unwrap();
    env.queue.push_many(&to2).await.unwrap();
    // The healthy destination gets all of its copies while node 3 is down.
    eventually(Duration::from_secs(30), "every copy to node 2", || async {
        r.stats.snapshot().copies_done == 200
    })
    .await;
    // Node 3's tasks were mostly postponed, not tried one by one: a probe
    // per backoff window (and the first batch that found it down).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed = r.stats.snapshot().copies_failed;
    assert!(
        failed < 60,
        "{failed} failed attempts for 200 tasks to a node that is down"
    );
    assert!(env.queue.dead(1).await.is_empty());
    assert_eq!(env.queue.len().await.overall, Some(200));

    n3.up().await;
    eventually(
        Duration::from_secs(30),
        "every copy to node 3 once it is back",
        || async { queue_empty(&env.queue).await },
    )
    .await;
    for i in [0, 99, 199] {
        assert_eq!(
            get(n3.port, &format!("/dest/{i}")).await.unwrap().0,
            content(i, 1000)
        );
    }
    assert!(env.queue.dead(1).await.is_empty());
    r.shutdown().await;
    env.zk.close();
}

/// A destination node restarted in two seconds under steady uploads: its
/// tasks wait out the restart (per-task and per-destination backoff) and
/// none becomes a dead letter; afterwards every answered upload is on both
/// nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_in_two_seconds_under_steady_uploads_loses_no_task() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let root = unique_root("restart-2s");
    let zk = common::init_root(&zks.addr(), &root, "r2q", &[redis.addr()]).await;
    let (a, mut b) = common::two_node_shard(&zk).await;
    zk.apply(&MapOp::EnableShard { id: "1".into() })
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let front = common::start_coordinator(&zk, stop.clone()).await;
    let running = common::start_replicator(&zks.addr(), &root, 4, stop.clone()).await;
    let client = common::client();

    let mut answered = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    let mut restarted_after = None;
    let mut i = 0;
    // Uploads before, during and after the restart.
    while restarted_after.is_none_or(|n| i < n + 100) {
        if i == 100 {
            b.stop().await;
            stopped_at = Some(Instant::now());
        }
        if restarted_after.is_none()
            && stopped_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(2))
        {
            b.restart().await;
            restarted_after = Some(i);
        }
        let name = format!("/steady/{i}.jpg");
        let r = client
            .put(format!("http://{}{name}", front.local_addr()))
            .body(format!("file {i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            answered.push(name);
        }
        i += 1;
    }
    assert!(
        answered.len() as f64 > i as f64 * 0.99,
        "{} of {i} answered",
        answered.len()
    );
    common::drained(
        &common::queue_on(&zk, "r2q", &[redis.port]),
        Duration::from_secs(60),
    )
    .await;
    for name in &answered {
        for node in [&a, &b] {
            let r = client
                .get(format!("{}{name}", node.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name} on {}", node.url());
        }
    }
    stop.cancel();
    front.wait().await;
    let _ = running.await;
    zk.close();
}
