//! The coordinator's upload path, in-process against a real ZooKeeper, a
//! real Redis and in-process storage nodes: where uploads land (their
//! name's first node), the tasks they queue (in the original's wire
//! format), node failures, every refusal, and what /stats, the
//! announcement and statsd report of them.

use std::time::{Duration, Instant};

use backpack_daemon::coordinator::CoordinatorConfig;
use backpack_shared::model::paths;
use backpack_tests::shared_zk;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::coordinator::{Cluster, holders, put, quick, task};
use crate::common::http::{Answer, raw_get, raw_put, request};
use crate::common::{client, eventually, name_first_on};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_servers_map_entry_is_skipped_and_uploads_go_on() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("coord-bad-entry", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    // An entry no shard uses, with a port that is not a number: written by
    // hand, as zkCli would.
    let path = cluster.zk.path(paths::SERVERS_MAP);
    let (data, _) = cluster.zk.get(paths::SERVERS_MAP).await.unwrap().unwrap();
    let mut map: serde_json::Value = serde_json::from_slice(&data).unwrap();
    map["9"] = serde_json::json!({"host": "spare", "port": "eighty"});
    let bytes = serde_json::to_vec(&map).unwrap();
    cluster
        .zk
        .call(&path.clone(), |c| async move {
            c.set_data(&path, &bytes, None).await
        })
        .await
        .unwrap();
    // A coordinator started now becomes ready, takes uploads, and reports
    // the skipped entry.
    let r = cluster.start(quick()).await;
    r.ready().await;
    let (status, v) = put(&client(), &r, "/after-bad-entry", b"hi".to_vec()).await;
    assert_eq!(status, 200, "{v}");
    let metrics = r.metrics().await;
    assert!(
        metrics.contains("backpack_coordinator_map_entries_skipped{map=\"servers-map\"} 1\n"),
        "{metrics}"
    );
    r.stop().await;
}
