//! Fill levels: the coordinator counts what it stores per shard and writes
//! it to the shard's size znode, from two coordinators at once without
//! losing bytes; full and disabled shards are never chosen, and new ones
//! are used at once. /stats and /metrics report the same figures.

use std::time::{Duration, Instant};

use backpack_tests::shared_zk;
use serde_json::Value;

use crate::common::coordinator::{Cluster, put, quick};
use crate::common::eventually;

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
    // rounded up to 4 decimals, as the original
    let ratio = ((total as f64 / (1u64 << 30) as f64) * 10_000.0).ceil() / 10_000.0;
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
