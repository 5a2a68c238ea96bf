//! `backpack-coordinator-check-shard`: finding what a node of a shard
//! lacks, and repairing it through the queue, on real nodes, ZooKeeper,
//! Redis and a replicator.

use std::process::Command;
use std::time::Duration;

use backpack_tests::{bin, shared_zk};
use tokio_util::sync::CancellationToken;

use crate::common::coordinator::{Cluster, holders};
use crate::common::http::{raw_put, request};
use crate::common::{drained, queue_on, start_replicator};

/// Runs the check: (exit code, stdout, stderr).
fn check(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("backpack-coordinator-check-shard"))
        .arg(&c.zk_addr)
        .arg(&c.root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_finds_what_a_node_lacks_and_repair_makes_the_shard_whole() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("check-repair", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    // As after a queue Redis restarted empty: 30 files on node 1 only; 20
    // on both; 5 of those 20 newer on node 1 than on node 2. Odd names too.
    let names: Vec<String> = (0..50)
        .map(|i| match i % 5 {
            0 => format!("/odd%20name:{i}?q='x'"),
            _ => format!("/photos/{i}.jpg"),
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        if i >= 30 {
            // An old copy (a version from 1970: older whatever the clocks).
            let mut put = raw_put(name, b"old");
            let at = put.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
            put.splice(at..at, b"x-backpack-time: 1000\r\n".iter().copied());
            let old = request(cluster.node("2").socket_addr(), &put).await;
            assert_eq!(old.status, 201, "{name}");
        }
        let body = format!("bytes of {name}");
        let a = request(
            cluster.node("1").socket_addr(),
            &raw_put(name, body.as_bytes()),
        )
        .await;
        assert_eq!(a.status, 201, "{name}");
        if (30..45).contains(&i) {
            // The same version on node 2, as a replicator would copy it.
            let time = a.head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-backpack-time: ")
                    .map(str::to_string)
            });
            let mut put = raw_put(name, body.as_bytes());
            let at = put.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
            let header = format!("x-backpack-time: {}\r\n", time.unwrap().trim());
            put.splice(at..at, header.bytes());
            let b = request(cluster.node("2").socket_addr(), &put).await;
            assert_eq!(b.status, 201, "{name}");
        }
    }
    // Small pages, so the merge crosses many.
    let (code, out, err) = check(&cluster, &["1", "--page-files", "4"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("shard 1: 50 files"), "{out}");
    assert!(out.contains("NOT WHOLE"), "{out}");
    assert!(
        out.contains("node 2: 20 files, 30 missing, 5 older"),
        "{out}"
    );
    assert!(!out.contains("node 1:"), "{out}");

    let (code, out, err) = check(&cluster, &["--all", "--json", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["shards"][0]["queued"], 35, "{report}");
    assert_eq!(report["shards"][0]["whole"], false);

    // The replicators make the copies; then every node holds every file,
    // byte for byte, and the check says whole.
    let stop = CancellationToken::new();
    let replicator = start_replicator(&cluster.zk_addr, &cluster.root, 4, stop.clone()).await;
    let queue = queue_on(&cluster.zk, &cluster.key, &[cluster.redis.port]);
    drained(&queue, Duration::from_secs(30)).await;
    stop.cancel();
    replicator.await.unwrap();
    for name in &names {
        let held = holders(&cluster, name).await;
        assert_eq!(held.len(), 2, "{name}: {:?}", held.keys());
        assert_eq!(held["1"], format!("bytes of {name}").into_bytes(), "{name}");
        assert_eq!(held["1"], held["2"], "{name}");
    }
    let (code, out, err) = check(&cluster, &["1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("shard 1: 50 files") && out.contains(": whole"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_says_clearly_what_it_cannot_do() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("check-errors", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let (code, _, err) = check(&cluster, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("or pass --all"), "{err}");
    let (code, _, err) = check(&cluster, &["9"]);
    assert_eq!(code, 1);
    assert!(err.contains("shard 9 is not in shards-map"), "{err}");
    // A node down: the check cannot run, and says which node.
    cluster.node("2").down().await;
    let (code, _, err) = check(&cluster, &["1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("node 2"), "{err}");
}

/// The elected checker's last check of shard 1, if any: (by, queued).
async fn last_check(c: &Cluster) -> Option<backpack_shared::model::ShardCheck> {
    let (data, _) = c.zk.get("checks/1").await.ok()??;
    serde_json::from_slice(&data).ok()
}

/// A replicator process that checks every shard every 2 s, on a short
/// ZooKeeper session (so a killed one hands over quickly).
fn checking_replicator(
    c: &Cluster,
    dir: &std::path::Path,
    name: &'static str,
) -> backpack_tests::Process {
    let args = [
        c.zk_addr.as_str(),
        c.root.as_str(),
        "2",
        "--check-interval",
        "2s",
        "--zk-session-timeout",
        "3",
    ]
    .map(String::from);
    backpack_tests::spawn(
        name,
        &bin("backpack-replicator").display().to_string(),
        &args,
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elected_checker_repairs_by_itself_and_fails_over_when_killed() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("check-elected", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    // A file on node 1 only, its task lost.
    let a = request(cluster.node("1").socket_addr(), &raw_put("/lost-1", b"one")).await;
    assert_eq!(a.status, 201);
    // A request for a shard that is not in the map is answered too (taken
    // away), not asked again at every tick.
    cluster
        .zk
        .put("check-requests/9", br#"{"repair":true,"asked_ms":1}"#)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut first = checking_replicator(&cluster, dir.path(), "replicator-a");
    let mut second = checking_replicator(&cluster, dir.path(), "replicator-b");
    // One of them checks, queues the copy, and the copy is made.
    assert!(
        crate::common::eventually(Duration::from_secs(60), || async {
            holders(&cluster, "/lost-1").await.len() == 2 && last_check(&cluster).await.is_some()
        })
        .await,
        "the lost copy is made by the checks, and the check kept"
    );
    assert!(
        crate::common::eventually(Duration::from_secs(30), || async {
            cluster.zk.get("check-requests/9").await.unwrap().is_none()
        })
        .await,
        "the request for shard 9 is taken"
    );
    let leader = last_check(&cluster).await.unwrap().by;
    // Kill the leader outright: the other takes over after the session
    // timeout and repairs what is lost next.
    let (killed, survivor) = if first
        .pid()
        .is_some_and(|p| leader.ends_with(&format!(":{p}")))
    {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    killed.signal("KILL");
    let b = request(cluster.node("1").socket_addr(), &raw_put("/lost-2", b"two")).await;
    assert_eq!(b.status, 201);
    assert!(
        crate::common::eventually(Duration::from_secs(60), || async {
            holders(&cluster, "/lost-2").await.len() == 2
        })
        .await,
        "the survivor's checks make the copy"
    );
    assert!(
        crate::common::eventually(Duration::from_secs(30), || async {
            last_check(&cluster).await.is_some_and(|c| c.by != leader)
        })
        .await,
        "another replicator checks now"
    );
    assert!(survivor.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_for_good_is_replaced_and_filled_while_uploads_go_on() {
    let Some(zk) = shared_zk() else { return };
    let Some(mut cluster) = Cluster::new("check-replace", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let coordinator = cluster.start(crate::common::coordinator::quick()).await;
    coordinator.ready().await;
    let stop = CancellationToken::new();
    let replicator = start_replicator(&cluster.zk_addr, &cluster.root, 4, stop.clone()).await;
    let http = crate::common::client();
    let base = coordinator.url("");
    let upload = move |name: String| {
        let (http, url) = (http.clone(), format!("{base}{name}"));
        async move {
            let r = http
                .put(url)
                .body(format!("bytes of {name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
        }
    };
    for i in 0..30 {
        upload(format!("/before/{i}")).await;
    }
    let queue = queue_on(&cluster.zk, &cluster.key, &[cluster.redis.port]);
    drained(&queue, Duration::from_secs(30)).await;

    // Node 2 is lost with its disk; a new empty node takes its id while
    // uploads go on.
    cluster.node("2").down().await;
    let fresh = crate::common::node::Node::start("2").await;
    let fresh_url = format!("http://{}", fresh.socket_addr());
    cluster.nodes.push(fresh);
    let during = tokio::spawn({
        let upload = upload.clone();
        async move {
            for i in 0..20 {
                upload(format!("/during/{i}")).await;
            }
        }
    });
    let out = Command::new(bin("backpack-coordinator-replace-server"))
        .args([&cluster.zk_addr, &cluster.root, "2", &fresh_url])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("shard 1: queued"), "{stdout}");
    during.await.unwrap();
    drained(&queue, Duration::from_secs(60)).await;
    // Uploads made while it was down may have queued copies to the old
    // address before the map changed: the check finds whatever is left.
    let (code, out, err) = check(&cluster, &["1", "--repair"]);
    assert_eq!(code, 0, "{out}{err}");
    drained(&queue, Duration::from_secs(60)).await;
    let names = (0..30)
        .map(|i| format!("/before/{i}"))
        .chain((0..20).map(|i| format!("/during/{i}")));
    for name in names {
        let held = holders(&cluster, &name).await;
        assert_eq!(held.len(), 2, "{name}: {:?}", held.keys());
        assert_eq!(held["2"], format!("bytes of {name}").into_bytes(), "{name}");
        assert_eq!(held["1"], held["2"], "{name}");
    }
    let (code, out, err) = check(&cluster, &["1"]);
    assert_eq!(code, 0, "{out}{err}");
    // An occupied replacement is refused unless forced.
    let out = Command::new(bin("backpack-coordinator-replace-server"))
        .args([&cluster.zk_addr, &cluster.root, "1", &fresh_url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stop.cancel();
    replicator.await.unwrap();
    coordinator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_over_a_million_files_stays_within_a_fixed_memory_bound() {
    use crate::common::NodeProcess;
    let Some(zks) = shared_zk() else { return };
    let files = 1_000_000usize;
    let data = [5u8; 16];
    let name = |i: usize| format!("/m/{i:07}.jpg");
    // Written straight into volumes: node 2 lacks every 1000th file.
    let full = NodeProcess::start_on(
        |dir| {
            backpack_daemon::node::store::fill_volumes(dir, (0..files).map(name), &data).unwrap();
        },
        Duration::from_secs(120),
    );
    let gappy = NodeProcess::start_on(
        |dir| {
            let names = (0..files).filter(|i| i % 1000 != 7).map(name);
            backpack_daemon::node::store::fill_volumes(dir, names, &data).unwrap();
        },
        Duration::from_secs(120),
    );
    let root = backpack_tests::unique_root("check-million");
    let zk = crate::common::init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    crate::common::add_shard(&zk, &[full.port, gappy.port]).await;
    let out = Command::new(bin("backpack-coordinator-check-shard"))
        .args([zks.addr().as_str(), root.as_str(), "1", "--json"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let shard = &report["shards"][0];
    assert_eq!(shard["files"], files as u64);
    assert_eq!(shard["nodes"][0]["missing"], 0);
    assert_eq!(shard["nodes"][1]["missing"], (files / 1000) as u64);
    assert_eq!(shard["nodes"][1]["files"], (files - files / 1000) as u64);
    assert!(shard["pages"].as_u64().unwrap() >= 128, "{shard}");
    // Two listings of a million names each would take hundreds of MB; a
    // page at a time stays small.
    let peak = report["peak_rss_bytes"].as_u64().unwrap();
    assert!(peak < 64 << 20, "the check peaked at {} MB", peak >> 20);
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_rotten_on_disk_is_found_by_the_scrub_and_restored_by_repair() {
    use crate::common::NodeProcess;
    let (Some(zks), Some(redis)) = (shared_zk(), backpack_tests::shared_redis()) else {
        return;
    };
    let one = NodeProcess::start("");
    let two = NodeProcess::start("");
    let root = backpack_tests::unique_root("check-rot");
    let key = format!("q-{}", root.trim_start_matches('/'));
    let zk = crate::common::init_root(&zks.addr(), &root, &key, &[redis.addr()]).await;
    crate::common::add_shard(&zk, &[one.port, two.port]).await;
    // The same copy on both nodes.
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let a = request(one.addr(), &raw_put("/rot.jpg", &body)).await;
    assert_eq!(a.status, 201);
    let time = a
        .head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-backpack-time: ")
                .map(str::to_string)
        })
        .unwrap();
    let mut copy = raw_put("/rot.jpg", &body);
    let at = copy.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    copy.splice(
        at..at,
        format!("x-backpack-time: {}\r\n", time.trim()).bytes(),
    );
    assert_eq!(request(two.addr(), &copy).await.status, 201);
    // A byte of node 2's copy rots while it runs.
    let volume = backpack_daemon::node::store::volume_path(&two.data_dir(), 1);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&volume)
            .unwrap();
        let at = 32 + "/rot.jpg".len() as u64 + 5_000;
        f.write_all_at(&[body[5_000] ^ 0x55], at).unwrap();
        f.sync_all().unwrap();
    }
    let http = crate::common::client();
    let stats = format!("http://{}/stats", two.addr());
    assert!(
        crate::common::eventually(Duration::from_secs(30), || async {
            let v = crate::common::get_json(&http, &stats).await;
            v["scrub"]["damaged"] == 1
        })
        .await,
        "the scrub finds the damage"
    );
    let metrics = http
        .get(format!("http://{}//metrics", two.addr()))
        .send()
        .await
        .unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let metrics = metrics.text().await.unwrap();
    for line in [
        "backpack_node_scrub_damaged_total 1",
        "backpack_node_files 0",
        "backpack_node_requests_total{op=\"put\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let get = request(two.addr(), &crate::common::http::raw_get("/rot.jpg")).await;
    assert_eq!(get.status, 404, "a damaged copy is never served");
    // The check sees it missing and the repair copies the sound one back.
    let out = Command::new(bin("backpack-coordinator-check-shard"))
        .args([zks.addr().as_str(), root.as_str(), "1", "--repair"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("1 missing") && stdout.contains("damaged"),
        "{stdout}"
    );
    let stop = CancellationToken::new();
    let replicator = start_replicator(&zks.addr(), &root, 1, stop.clone()).await;
    let queue = queue_on(&zk, &key, &[redis.port]);
    drained(&queue, Duration::from_secs(30)).await;
    stop.cancel();
    replicator.await.unwrap();
    let get = request(two.addr(), &crate::common::http::raw_get("/rot.jpg")).await;
    assert_eq!(get.status, 200);
    assert!(get.body == body, "the sound bytes are back");
    zk.close();
}
