//! The coordinator in-process, against a real ZooKeeper, a real Redis and
//! in-process storage nodes: where uploads land, the tasks they queue (in
//! the original's wire format), fill levels, every refusal, node failures,
//! session expiry, shutdown, and what /stats, /metrics and statsd report.

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
use crate::common::coordinator::{Cluster, holders, put, quick, task};
use crate::common::http::{Answer, raw_get, raw_put, request};
use crate::common::{eventually, name_first_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_lands_on_a_node_and_queues_the_copies() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-upload", &zk.addr(), 3).await else {
        return;
    };
    cluster
        .add_shard("1", &["1", "2", "3"], 1 << 30, true)
        .await;
    let statsd = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let r = cluster
        .start(CoordinatorConfig {
            memory_threshold: 64 * 1024,
            statsd: Some(statsd.local_addr().unwrap().to_string()),
            statsd_prefix: "bp.".into(),
            statsd_every: Duration::from_millis(200),
            ..quick()
        })
        .await;
    r.ready().await;

    // The seed README's upload.
    let before = backpack_daemon::coordinator::stats::now_ms();
    let resp = reqwest::Client::new()
        .put(r.url("/hi.txt"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{\"shard_id\":\"1\"}\n");
    let has = holders(&cluster, "/hi.txt").await;
    assert_eq!(has.len(), 1, "on exactly one node before replication");
    let (writer, body) = has.iter().next().unwrap();
    assert_eq!(body, b"hello");
    let others: Vec<&str> = ["1", "2", "3"]
        .into_iter()
        .filter(|n| n != writer)
        .collect();
    let mut expected: Vec<String> = others.iter().map(|o| task(writer, o, "/hi.txt")).collect();
    expected.sort();
    assert_eq!(cluster.tasks().await, expected);
    assert_eq!(
        expected[0],
        format!(
            "{{\"from\":[\"{writer}\"],\"to\":\"{}\",\"path\":\"/hi.txt\"}}",
            others[0]
        )
    );
    // The node got the upload's time.
    let w = cluster.nodes.iter().find(|n| &n.id == writer).unwrap();
    let Answer { head, .. } = request(w.socket_addr(), &raw_get("/hi.txt")).await;
    let time: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-backpack-time: ")
                .map(|v| v.trim().to_string())
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(time >= before && time <= backpack_daemon::coordinator::stats::now_ms());

    // A name no library may rewrite reaches the node and the task byte for byte.
    // (`url` would re-encode the quotes, braces and apostrophes.)
    let odd = "/a%20b/\"q\"/{c}%2F?x='y'&z={w}|";
    let Answer { status, body, .. } = request(r.addr, &raw_put(odd, b"odd")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let has = holders(&cluster, odd).await;
    assert_eq!(has.len(), 1);
    let writer = has.keys().next().unwrap().clone();
    let tasks = cluster.tasks().await;
    for o in ["1", "2", "3"].into_iter().filter(|n| *n != writer) {
        assert!(tasks.contains(&task(&writer, o, odd)), "{tasks:?}");
    }

    // A body over the memory threshold goes through a temporary file.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (status, v) = put(&reqwest::Client::new(), &r, "/big.bin", big.clone()).await;
    assert_eq!(status, 200, "{v}");
    let has = holders(&cluster, "/big.bin").await;
    assert_eq!(has.values().next().unwrap(), &big);
    let stats = r.stats().await;
    assert_eq!(stats["spilled_uploads"], 1);
    assert_eq!(stats["processed_uploads"], 3);
    assert_eq!(stats["processed_bytes"], 5 + 3 + 300_000);
    assert_eq!(stats["tasks_queued"], 6);
    assert_eq!(stats["queue_length"], 6);

    // The announcement.
    let name = format!("{}/{}", paths::COORDINATORS, r.addr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            match cluster.zk.get(&name).await.unwrap() {
                Some((data, _)) => {
                    let v: Value = serde_json::from_slice(&data).unwrap();
                    v["pid"] == std::process::id() && v["processed_uploads"] == 3
                }
                None => false,
            }
        })
        .await,
        "announcement with pid and counters"
    );

    // Statsd: the gauges and the upload counters.
    let mut seen = String::new();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen.contains("bp.add_photo.ok:1|c")
        && seen.contains("bp.1.rw.capacity_size:1073741824|g"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, statsd.recv(&mut buf))
            .await
            .expect("statsd lines within 5 s")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(seen.contains("bp.add_photo.ok:"), "{seen}");
    assert!(seen.contains("bp.total_size:1073741824|g"), "{seen}");

    r.stop().await;
    // Shutdown removed the announcement.
    assert_eq!(cluster.zk.get(&name).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_full_shards_are_never_chosen_and_new_ones_are_used_at_once() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-choice", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1"], 1 << 30, true).await;
    cluster.add_shard("2", &["2"], 1 << 30, false).await; // disabled
    cluster.add_shard("3", &["2"], 1000, true).await;
    cluster
        .set_size("3", r#"{"capacity":1000,"current":1000}"#)
        .await; // full
    cluster.add_shard("4", &["2"], 1000, true).await;
    cluster
        .set_size("4", r#"{"capacity":1000,"current":990}"#)
        .await; // no room for 100 bytes
    let r = cluster.start(quick()).await;
    r.ready().await;
    let client = reqwest::Client::new();
    // Wait for every size to be seen, then many uploads all land on shard 1.
    assert!(
        eventually(Duration::from_secs(5), || async {
            r.stats().await["total_size"] == (2u64 << 30) + 2000
        })
        .await
    );
    for i in 0..40 {
        let (status, v) = put(&client, &r, &format!("/f{i}"), vec![7; 100]).await;
        assert_eq!((status, &v["shard_id"]), (200, &Value::from("1")), "{v}");
    }
    // A small file fits in shard 4's last 10 bytes; shard 1 is far likelier
    // (by free bytes), so only check that 503 never happens.
    let (status, _) = put(&client, &r, "/tiny", vec![1; 5]).await;
    assert_eq!(status, 200);

    // Disabled elsewhere: refused within a second.
    cluster.disable("1").await;
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            put(&client, &r, "/nope", vec![1; 100]).await.0 == 503
        })
        .await
    );
    let (status, v) = put(&client, &r, "/nope", vec![1; 100]).await;
    assert_eq!(status, 503);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("No writable shards found"),
        "{v}"
    );
    // A new shard enabled while running takes uploads within a second.
    cluster.add_shard("5", &["2"], 1 << 20, true).await;
    let t2 = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || async {
            let (s, v) = put(&client, &r, "/new", vec![1; 100]).await;
            s == 200 && v["shard_id"] == "5"
        })
        .await,
        "new shard used within a second"
    );
    eprintln!(
        "disable seen in {:?}, new shard used in {:?}",
        t.elapsed() - t2.elapsed(),
        t2.elapsed()
    );
    let stats = r.stats().await;
    assert_eq!(stats["total_shards"], 5);
    assert_eq!(stats["writable_shards"], 2, "{stats}"); // 4 (10 bytes left) and 5
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failures_one_down_then_all_down() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("coord-nodes", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let r = cluster.start(quick()).await;
    r.ready().await;
    let client = reqwest::Client::new();

    cluster.node("1").down().await;
    for i in 0..10 {
        let (status, v) = put(&client, &r, &format!("/one-down-{i}"), vec![3; 1000]).await;
        assert_eq!(status, 200, "{v}");
    }
    let expected: Vec<String> = (0..10)
        .map(|i| task("2", "1", &format!("/one-down-{i}")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(cluster.tasks().await, expected);
    let stats = r.stats().await;
    // Node 1 is tried at most once per retry period (3 s here), not per upload.
    let failures = stats["node_write_failures"].as_u64().unwrap();
    assert!(failures <= 2, "{stats}");

    // Wait for the fill level to settle, then take the last node down.
    assert!(
        eventually(Duration::from_secs(5), || async {
            cluster.size("1").await.used() == 10_000
        })
        .await
    );
    cluster.node("2").down().await;
    let (status, v) = put(&client, &r, "/all-down", vec![4; 500]).await;
    assert_eq!(status, 502, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("every node of shard 1 failed"), "{error}");
    assert!(
        error.contains("node 1 (127.0.0.1:") && error.contains("node 2 (127.0.0.1:"),
        "{error}"
    );
    // No task, and no size change (after a few flush intervals).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(cluster.tasks().await, expected);
    assert_eq!(cluster.size("1").await.used(), 10_000);
    let stats = r.stats().await;
    assert_eq!(stats["pending_fill_bytes"], 0);
    assert_eq!(stats["failed_uploads"], 1);
    assert_eq!(stats["processed_uploads"], 10);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-bad", &zk.addr(), 1).await else {
        return;
    };
    cluster.add_shard("1", &["1"], 1 << 30, true).await;
    let r = cluster
        .start(CoordinatorConfig {
            max_body: 1000,
            ..quick()
        })
        .await;
    r.ready().await;
    let long = format!("/{}", "a".repeat(255));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (raw_put("/", b"x"), 400, "empty"),
        (raw_put("/?a=1", b"x"), 400, "empty"),
        (raw_put("/a//b", b"x"), 400, "empty segment"),
        (raw_put("/a/", b"x"), 400, "empty segment"),
        (raw_put("/a/../b", b"x"), 400, ". or .."),
        (raw_put("/./a", b"x"), 400, ". or .."),
        (raw_put("/a/%2e%2e/b", b"x"), 400, ". or .."),
        (raw_put("/stats", b"x"), 400, "endpoint"),
        (raw_put("/metrics", b"x"), 400, "endpoint"),
        (raw_put("/health?x", b"x"), 400, "endpoint"),
        (raw_put(&long, b"x"), 400, "over the limit of 255"),
        (raw_put("http://x/abs", b"x"), 400, "start with /"),
        (
            b"PUT /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\n\r\n".to_vec(),
            411,
            "Content-Length",
        ),
        (
            b"PUT /nolen HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            411,
            "Content-Length",
        ),
        (raw_put("/large", &[0; 1001]), 413, "over the limit of 1000"),
        (
            b"PUT /short HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc".to_vec(),
            400,
            "ended after 3 of the 10",
        ),
        (
            b"DELETE /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            "not supported",
        ),
        (
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx".to_vec(),
            405,
            "not supported",
        ),
        (raw_get("/x"), 404, "not served here"),
    ];
    for (req, status, text) in &cases {
        let shown = String::from_utf8_lossy(&req[..req.len().min(60)]).to_string();
        let mut s = TcpStream::connect(r.addr).await.unwrap();
        s.write_all(req).await.unwrap();
        if shown.contains("/short") {
            // End the body early: the client gives up sending.
            s.shutdown().await.unwrap();
        }
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&out).to_string();
        assert_eq!(&out[9..12], status.to_string(), "{shown}: {out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{shown}: JSON {body:?}"));
        assert!(v["error"].as_str().unwrap().contains(text), "{shown}: {v}");
    }
    // A control character: refused (by the HTTP parser or by us), 400.
    let Answer { status, .. } = request(r.addr, &raw_put("/a\x01b", b"x")).await;
    assert_eq!(status, 400);
    let stats = r.stats().await;
    assert_eq!(stats["processed_uploads"], 0);
    assert!(stats["rejected_uploads"].as_u64().unwrap() >= 14, "{stats}");
    assert_eq!(cluster.tasks().await, Vec::<String>::new());
    assert_eq!(cluster.size("1").await.used(), 0);
    // A 256-byte limit is a flag away.
    r.stop().await;
    let r = cluster
        .start(CoordinatorConfig {
            max_name_len: 300,
            ..quick()
        })
        .await;
    r.ready().await;
    let Answer { status, .. } = request(r.addr, &raw_put(&long, b"x")).await;
    assert_eq!(status, 200);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_level_after_1000_uploads_from_two_coordinators_equals_the_bytes() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-fill", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    // The original may have left a null: it counts as 0.
    cluster
        .set_size("1", r#"{"capacity":1073741824,"current":null}"#)
        .await;
    let a = cluster.start(quick()).await;
    let b = cluster.start(quick()).await;
    a.ready().await;
    b.ready().await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut total = 0u64;
    let mut jobs = Vec::new();
    for w in 0..16u64 {
        let client = client.clone();
        let url = if w % 2 == 0 { a.url("") } else { b.url("") };
        jobs.push(tokio::spawn(async move {
            let mut bytes = 0;
            for i in 0..(1000 / 16 + u64::from(w < 1000 % 16)) {
                // Never 0: hyper (under reqwest) sends no Content-Length for an empty body.
                let len = 1 + ((w * 7919 + i * 104_729) % 3000) as usize;
                let resp = client
                    .put(format!("{url}/w{w}/f{i}"))
                    .body(vec![b'x'; len])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                bytes += len as u64;
            }
            bytes
        }));
    }
    for j in jobs {
        total += j.await.unwrap();
    }
    eprintln!("1000 uploads in {:?}", started.elapsed());
    let (sa, sb) = (a.stats().await, b.stats().await);
    assert_eq!(
        sa["processed_uploads"].as_u64().unwrap() + sb["processed_uploads"].as_u64().unwrap(),
        1000
    );
    assert_eq!(
        sa["processed_bytes"].as_u64().unwrap() + sb["processed_bytes"].as_u64().unwrap(),
        total
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            cluster.size("1").await.current == Some(total)
        })
        .await,
        "fill level {:?} != {total} bytes uploaded",
        cluster.size("1").await
    );
    assert_eq!(cluster.tasks().await.len(), 1000);

    // /stats: the original's fields, and ours.
    let s = a.stats().await;
    for field in [
        "uptime",
        "processed_uploads",
        "processed_bytes",
        "failed_uploads",
        "total_size",
        "used_size",
        "usage_ratio",
        "available_space",
        "total_shards",
        "writable_shards",
        "queue_length",
        "failed_bytes",
    ] {
        assert!(s.get(field).is_some(), "/stats lacks {field}: {s}");
    }
    assert_eq!(s["total_size"], 1u64 << 30);
    assert_eq!(s["total_shards"], 1);
    assert_eq!(s["writable_shards"], 1);
    assert_eq!(s["queue_length"], 1000);
    assert!(
        eventually(Duration::from_secs(2), || async {
            a.stats().await["used_size"] == total
        })
        .await
    );
    let s = a.stats().await;
    assert_eq!(s["available_space"], (1u64 << 30) - total);
    let ratio = ((total as f64 / (1u64 << 30) as f64) * 10_000.0).round() / 10_000.0;
    assert_eq!(s["usage_ratio"].as_f64().unwrap(), ratio);

    // /metrics: the same figures in Prometheus text.
    let resp = reqwest::get(a.url("/metrics")).await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = resp.text().await.unwrap();
    let n = sa["processed_uploads"].as_u64().unwrap();
    for line in [
        format!("backpack_coordinator_uploads_total{{result=\"ok\"}} {n}"),
        format!("backpack_coordinator_upload_duration_seconds_count {n}"),
        format!("backpack_coordinator_upload_duration_seconds_bucket{{le=\"+Inf\"}} {n}"),
        format!("backpack_coordinator_shard_used_bytes{{shard=\"1\",writable=\"true\"}} {total}"),
        "backpack_coordinator_shard_capacity_bytes{shard=\"1\",writable=\"true\"} 1073741824"
            .into(),
        "backpack_coordinator_queue_length 1000".into(),
        "backpack_coordinator_ready 1".into(),
    ] {
        assert!(m.lines().any(|l| l == line), "/metrics lacks {line}:\n{m}");
    }
    assert!(m.contains("backpack_coordinator_queue_oldest_age_seconds "));
    assert!(m.contains("# TYPE backpack_coordinator_upload_duration_seconds histogram"));
    let health = reqwest::get(a.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    a.stop().await;
    b.stop().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_to_their_names_first_node_and_count_when_they_cannot() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("coord-first", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let r = cluster.start(quick()).await;
    r.ready().await;
    let client = reqwest::Client::new();
    let metrics_url = r.url("/metrics");
    let metric = |reason: &'static str| {
        let url = metrics_url.clone();
        async move {
            let m = reqwest::get(url).await.unwrap().text().await.unwrap();
            let line =
                format!("backpack_coordinator_uploads_unordered_total{{reason=\"{reason}\"}} ");
            m.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map(|v| v.to_string())
        }
    };
    // Every upload of a name lands on its first node, whichever coordinator.
    for k in 0..10 {
        let name = name_first_on("1", &["1", "2"], &format!("on1-{k}"));
        assert_eq!(put(&client, &r, &name, b"x".to_vec()).await.0, 200);
        assert_eq!(
            holders(&cluster, &name)
                .await
                .keys()
                .next()
                .map(|s| s.as_str()),
            Some("1"),
            "{name}"
        );
    }
    assert_eq!(metric("off_first_node").await.as_deref(), Some("0"));
    assert_eq!(metric("peer_not_probed").await.as_deref(), Some("0"));
    // Its first node down: stored on the other, and counted.
    cluster.node("1").down().await;
    let name = name_first_on("1", &["1", "2"], "down");
    assert_eq!(put(&client, &r, &name, b"x".to_vec()).await.0, 200);
    assert_eq!(metric("off_first_node").await.as_deref(), Some("1"));
    assert_eq!(metric("peer_not_probed").await.as_deref(), Some("0"));
    // On its first node, but the other could not say what it holds.
    let other = name_first_on("2", &["1", "2"], "up");
    assert_eq!(put(&client, &r, &other, b"x".to_vec()).await.0, 200);
    assert_eq!(metric("off_first_node").await.as_deref(), Some("1"));
    assert_eq!(metric("peer_not_probed").await.as_deref(), Some("1"));
    let stats: serde_json::Value = reqwest::get(r.url("/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats["uploads_unordered"],
        serde_json::json!({"off_first_node": 1, "peer_not_probed": 1})
    );
    r.stop().await;
}
