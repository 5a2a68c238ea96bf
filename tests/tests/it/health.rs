//! The coordinator's `/health` and `/metrics` follow the queue's Redis
//! servers: 503 while none answers (uploads then fail: their copies cannot
//! be queued), 200 again once one does.

use std::time::Duration;

use backpack_daemon::coordinator::CoordinatorConfig;
use backpack_shared::clock::now_ms;
use backpack_shared::model::{HostPort, QueueInfo};
use backpack_shared::ops::MapOp;
use backpack_tests::{RedisServer, shared_zk};
use serde_json::Value;

use crate::common::coordinator::{Cluster, Running, put, quick};
use crate::common::{client, eventually};

/// `/health`: (status, document).
async fn health(r: &Running) -> (u16, Value) {
    let resp = client().get(r.url("/health")).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The value of `sample` (`name{labels}`) in `/metrics`, if present.
async fn metric(r: &Running, sample: &str) -> Option<String> {
    let text = r.metrics().await;
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')
            .map(str::to_string)
    })
}

/// Waits (up to `timeout`) for `/health` to answer `status`.
async fn health_becomes(r: &Running, status: u16, timeout: Duration) -> (u16, Value) {
    let reached = eventually(timeout, || async { health(r).await.0 == status }).await;
    let now = health(r).await;
    assert!(reached, "/health did not become {status}: {now:?}");
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_no_queue_redis_answers() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("health-queue", &zk.addr(), 2).await else {
        return;
    };
    // Its own Redis: this test kills and pauses it.
    let Some(mut redis) = RedisServer::start() else {
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
    let every = Duration::from_millis(100);
    let r = cluster
        .start(CoordinatorConfig {
            queue_check_every: every,
            ..quick()
        })
        .await;
    r.ready().await;
    let http = client();
    let server = redis.addr();
    let reachable = format!("backpack_coordinator_queue_redis_reachable{{server=\"{server}\"}}");
    let count = "backpack_coordinator_queue_redis_reachable_servers";

    let (_, _) = health_becomes(&r, 200, Duration::from_secs(10)).await;
    // Once the first check of the queue servers is in.
    let mut h = serde_json::Value::Null;
    for _ in 0..200 {
        h = client()
            .get(r.url("/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if h["queue_servers"][0]["server"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h["queue_servers"][0]["server"], server.as_str(), "{h}");
    assert_eq!(h["queue_servers"][0]["reachable"], true, "{h}");
    assert_eq!(put(&http, &r, "/before.jpg", b"x".to_vec()).await.0, 200);
    assert_eq!(metric(&r, count).await.as_deref(), Some("1"));

    // Killed: within a few checks, 503 naming the server, and an upload
    // fails as /health says (stored on one node, its copy not queued).
    let killed_at = now_ms();
    redis.kill();
    let (_, h) = health_becomes(&r, 503, Duration::from_secs(10)).await;
    assert!(
        h["status"]
            .as_str()
            .unwrap()
            .contains("no queue Redis answers"),
        "{h}"
    );
    assert!(
        h["queue_unreachable"].as_str().unwrap().contains(&server),
        "{h}"
    );
    let down = &h["queue_servers"][0];
    assert_eq!(down["reachable"], false, "{h}");
    assert!(down["since_ms"].as_u64().unwrap() >= killed_at, "{h}");
    assert!(down["error"].is_string(), "{h}");
    assert_eq!(metric(&r, count).await.as_deref(), Some("0"));
    assert_eq!(metric(&r, &reachable).await.as_deref(), Some("0"));
    let (status, v) = put(&http, &r, "/during.jpg", b"x".to_vec()).await;
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot queue its replication"),
        "{v}"
    );

    // Back (empty, same port): 200 again without a restart.
    redis.restart();
    let (_, h) = health_becomes(&r, 200, Duration::from_secs(10)).await;
    assert_eq!(h["queue_servers"][0]["reachable"], true, "{h}");
    assert_eq!(metric(&r, count).await.as_deref(), Some("1"));
    assert_eq!(metric(&r, &reachable).await.as_deref(), Some("1"));
    assert_eq!(put(&http, &r, "/after.jpg", b"x".to_vec()).await.0, 200);

    // Paused (SIGSTOP): its calls time out instead of being refused; the
    // same 503, then 200 once it runs again.
    let pid = redis.pid().unwrap().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let paused = health_becomes(&r, 503, Duration::from_secs(15)).await;
    signal("-CONT");
    assert_eq!(
        paused.1["queue_servers"][0]["reachable"], false,
        "{paused:?}"
    );
    health_becomes(&r, 200, Duration::from_secs(15)).await;
    r.stop().await;
}
