//! The coordinator's life: start (refused clearly), readiness (a valid
//! configuration, a queue Redis that cannot evict), shutdown (uploads in
//! flight finished, fill levels flushed, the announcement removed), and a
//! ZooKeeper session that expires mid-run.

use std::time::{Duration, Instant};

use backpack_daemon::coordinator::{self, CoordinatorConfig};
use backpack_shared::model::{HostPort, QueueInfo, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::zk::{Zk, ZkConfig, ZkError};
use backpack_tests::{ZkServer, shared_zk, unique_root};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::common::cluster::redis_cmd;
use crate::common::coordinator::{Cluster, put, quick};
use crate::common::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_configuration_is_valid() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-ready", &zk.addr(), 1).await else {
        return;
    };
    cluster.add_shard("1", &["1"], 1 << 30, true).await;
    // Left broken by hand: the coordinator starts but takes no upload.
    let (good, _) = cluster.zk.get(paths::SERVERS_MAP).await.unwrap().unwrap();
    let path = cluster.zk.path(paths::SERVERS_MAP);
    let p = path.clone();
    cluster
        .zk
        .call(&path, |c| async move {
            c.set_data(&p, b"{not json", None).await
        })
        .await
        .unwrap();
    let r = cluster.start(quick()).await;
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = put(&client, &r, "/early", vec![1; 10]).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not read the cluster configuration")
    );
    assert_eq!(reqwest::get(r.url("/health")).await.unwrap().status(), 503);
    // Fixed: ready and taking uploads within a second.
    let p = path.clone();
    cluster
        .zk
        .call(&path, |c| async move { c.set_data(&p, &good, None).await })
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(1), || async {
            put(&client, &r, "/later", vec![1; 10]).await.0 == 200
        })
        .await
    );
    // Broken again: the last good configuration is kept.
    let p = path.clone();
    cluster
        .zk
        .call(&path, |c| async move { c.set_data(&p, b"[", None).await })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(put(&client, &r, "/still", vec![1; 10]).await.0, 200);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_clearly() {
    let Some(zk) = shared_zk() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = ZkConfig::new(&format!("127.0.0.1:{}", backpack_tests::free_port()), "/x");
    cfg.connect_timeout = Duration::from_secs(1);
    let e = coordinator::start(listener, quick(), cfg, CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            coordinator::CoordinatorError::Zk(ZkError::Unreachable { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("cannot reach ZooKeeper"), "{e}");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = unique_root("coord-uninit");
    let e = coordinator::start(
        listener,
        quick(),
        ZkConfig::new(&zk.addr(), &root),
        CancellationToken::new(),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("backpack-coordinator-init"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_uploads_and_flushes_fill_levels() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-shutdown", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    // No periodic flush during the test: only the one at shutdown.
    let r = cluster
        .start(CoordinatorConfig {
            flush_interval: Duration::from_secs(3600),
            ..quick()
        })
        .await;
    r.ready().await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        assert_eq!(
            put(&client, &r, &format!("/s{i}"), vec![9; 100]).await.0,
            200
        );
    }
    // An upload in flight when shutdown comes: half its body sent.
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    s.write_all(b"PUT /inflight HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[1; 500]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cluster.size("1").await.used(), 0);
    r.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are refused now.
    assert!(reqwest::get(r.url("/health")).await.is_err());
    s.write_all(&[1; 500]).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    r.stop().await;
    assert_eq!(cluster.size("1").await.used(), 1500);
    // The announcement is gone with the coordinator.
    let left = cluster
        .zk
        .children(paths::COORDINATORS)
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// The session owning an ephemeral znode, if it exists.
async fn owner(zk: &Zk, name: &str) -> Option<i64> {
    let path = zk.path(name);
    let p = path.clone();
    match zk
        .call(&path, |c| async move { c.get_data(&p).await })
        .await
    {
        Ok((_, stat)) => Some(stat.ephemeral_owner),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_mid_run() {
    // Pausing ZooKeeper: this test has its own.
    let Some(server) = ZkServer::start() else {
        return;
    };
    let Some(cluster) = Cluster::new("coord-expiry", &server.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let mut zk = cluster.zk_config();
    zk.session_timeout = Duration::from_secs(2);
    zk.request_timeout = Duration::from_secs(1);
    let r = cluster.start_with(quick(), zk).await;
    r.ready().await;
    let client = reqwest::Client::new();
    let mut total = 0;
    for i in 0..20 {
        assert_eq!(
            put(&client, &r, &format!("/before{i}"), vec![1; 100])
                .await
                .0,
            200
        );
        total += 100;
    }
    let announced = format!("{}/{}", paths::COORDINATORS, r.addr);
    assert!(
        eventually(Duration::from_secs(3), || async {
            owner(&cluster.zk, &announced).await.is_some()
        })
        .await
    );
    let first_session = owner(&cluster.zk, &announced).await;
    // ZooKeeper stops answering for longer than the session timeout.
    server.pause();
    let paused = Instant::now();
    // Uploads go on meanwhile: the configuration is known, nodes and Redis are up.
    let mut during = 0;
    while paused.elapsed() < Duration::from_secs(4) {
        let (status, v) = put(&client, &r, &format!("/during{during}"), vec![2; 100]).await;
        assert_eq!(status, 200, "{v}");
        total += 100;
        during += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.resume();
    // A new session: fill levels written, the announcement back, watches live.
    assert!(
        eventually(Duration::from_secs(15), || async {
            matches!(cluster.size("1").await.current, Some(c) if c == total)
        })
        .await,
        "fill level {:?} != {total}",
        cluster.size("1").await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let now = owner(&cluster.zk, &announced).await;
            now.is_some() && now != first_session
        })
        .await,
        "announcement re-created by a new session"
    );
    cluster.add_shard("2", &["2"], 1 << 40, true).await;
    cluster.disable("1").await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            let (s, v) = put(&client, &r, "/after", vec![3; 100]).await;
            s == 200 && v["shard_id"] == "2"
        })
        .await,
        "watches re-armed on the new session"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            cluster.size("2").await.used() == 100
        })
        .await
    );
    assert_eq!(cluster.size("1").await.used(), total);
    eprintln!("{during} uploads while ZooKeeper was paused");
    r.stop().await;
}

/// Sets a Redis server's `maxmemory-policy`.
async fn set_policy(redis: &backpack_tests::RedisServer, policy: &str) {
    let () = redis_cmd(redis, &["CONFIG", "SET", "maxmemory-policy", policy]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_redis_that_may_evict_is_refused_until_fixed_or_allowed() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-evict", &zk.addr(), 2).await else {
        return;
    };
    let Some(redis) = backpack_tests::RedisServer::start() else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    cluster
        .zk
        .apply(&MapOp::SetQueue(QueueInfo {
            key: cluster.key.clone(),
            servers: vec![HostPort {
                host: "127.0.0.1".into(),
                port: redis.port,
            }],
        }))
        .await
        .unwrap();
    set_policy(&redis, "allkeys-lru").await;
    let config = CoordinatorConfig {
        queue_check_every: Duration::from_millis(100),
        ..quick()
    };
    let r = cluster.start(config.clone()).await;
    r.ready().await;
    let client = reqwest::Client::new();
    let health = || async {
        let resp = reqwest::get(r.url("/health")).await.unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.0 == 503
        })
        .await,
        "{:?}",
        health().await
    );
    let (_, h) = health().await;
    assert!(
        h["queue_evicting"]
            .as_str()
            .unwrap()
            .contains("allkeys-lru"),
        "{h}"
    );
    let (status, v) = put(&client, &r, "/refused.jpg", b"x".to_vec()).await;
    assert_eq!(status, 503, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains(&format!("127.0.0.1:{}", redis.port)) && e.contains("noeviction"),
        "{e}"
    );
    let metrics = reqwest::get(r.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "backpack_coordinator_queue_redis_evicting{{server=\"127.0.0.1:{}\"}} 1",
            redis.port
        )),
        "{metrics}"
    );
    // Nothing reached a node or the queue.
    assert!(cluster.tasks().await.is_empty());

    // Fixed on the server: uploads are taken again without a restart.
    set_policy(&redis, "noeviction").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            health().await.0 == 200
        })
        .await
    );
    assert_eq!(put(&client, &r, "/taken.jpg", b"x".to_vec()).await.0, 200);

    // With the flag, an evicting policy is accepted (and still reported).
    set_policy(&redis, "allkeys-random").await;
    let allowed = cluster
        .start(CoordinatorConfig {
            allow_evicting_queue: true,
            ..config
        })
        .await;
    allowed.ready().await;
    assert_eq!(
        put(&client, &allowed, "/allowed.jpg", b"x".to_vec())
            .await
            .0,
        200
    );
    r.stop().await;
    allowed.stop().await;
}
