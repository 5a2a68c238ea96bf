//! The replicator's life: start (refused in one clear line), SIGTERM
//! mid-copy (the lock released, not the task done), and ZooKeeper lost
//! mid-copy or frozen under load (nothing marked done from a dead session,
//! nothing lost).

use std::process::Command;
use std::time::{Duration, Instant};

use backpack_shared::zk::ZkConfig;
use backpack_tests::{
    ZkServer, bin, free_port, shared_redis, shared_zk, spawn_with_stdout, unique_root, wait_until,
};

use crate::common::NodeProcess;
use crate::common::cluster::queue_empty;
use crate::common::node::{Node, content, get, put};
use crate::common::replicator::{Running, config, env, eventually, task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_copy_releases_the_lock() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let n1 = Node::start("1").await;
    // The destination is a real process, stopped mid-copy with SIGSTOP.
    let dst = NodeProcess::start("");
    let dst_port = dst.port;
    let n2 = Node::external("2", dst_port);
    let env = env(&zks.addr(), "repl-term", &[&n1, &n2], &[redis.port]).await;
    put(n1.port, "/big.bin", content(3, 4 << 20)).await;

    let dir = tempfile::tempdir().unwrap();
    let args = [&env.zk_addr, &env.root, "1", "--shutdown-deadline", "1"].map(String::from);
    let mut replicator = spawn_with_stdout(
        "backpack-replicator",
        &bin("backpack-replicator").display().to_string(),
        &args,
        dir.path(),
    );
    // Its first two lines of standard output, within 30 s.
    let lines: Vec<String> = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || {
            replicator.stdout_text().matches('\n').count() >= 2
        });
        let text = replicator.stdout_text();
        text.lines().take(2).map(String::from).collect()
    });
    assert_eq!(lines, ["Replicator is ready!", "Replicator started!"]);

    dst.pause();
    env.queue
        .push(&task(&[&n1], &n2, "/big.bin"))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the task locked", || async {
        env.queue.locks().await.unwrap().len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // well into the copy
    assert_eq!(env.queue.locks().await.unwrap().len(), 1, "still copying");

    let asked = Instant::now();
    replicator.signal("TERM");
    let status = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = replicator.exit_status() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "replicator did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let took = asked.elapsed();
    let stderr = replicator.log_text();
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Released, not done: the lock is gone at once (not at the session
    // timeout) and the task waits for the next replicator.
    assert!(
        env.queue.locks().await.unwrap().is_empty(),
        "lock left behind\n{stderr}"
    );
    assert_eq!(env.queue.len().await.overall, Some(1));
    assert!(
        env.queue.sample(1).await[0].attempts == 0,
        "a cut copy is not a failed attempt"
    );
    assert!(stderr.contains("lock released"), "{stderr}");
    dst.resume();

    // The next replicator finishes it.
    let r = Running::start(&env, config(1), None).await;
    eventually(
        Duration::from_secs(15),
        "copied by the next replicator",
        || async { queue_empty(&env.queue).await },
    )
    .await;
    assert_eq!(
        get(dst_port, "/big.bin").await.unwrap().0,
        content(3, 4 << 20)
    );
    r.shutdown().await;
    drop(dst);
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_mid_copy_abandons_it_without_marking_it_done() {
    let Some(redis) = shared_redis() else { return };
    let Some(zks) = ZkServer::start() else { return };
    let n1 = Node::start("1").await;
    let dst = NodeProcess::start("");
    let dst_port = dst.port;
    let n2 = Node::external("2", dst_port);
    let env = env(&zks.addr(), "repl-expiry", &[&n1, &n2], &[redis.port]).await;
    put(n1.port, "/e.bin", content(5, 2 << 20)).await;

    let mut zc = ZkConfig::new(&env.zk_addr, &env.root);
    zc.session_timeout = Duration::from_secs(2);
    let r = Running::start_with(zc, config(1), None).await;
    dst.pause();
    env.queue.push(&task(&[&n1], &n2, "/e.bin")).await.unwrap();
    eventually(Duration::from_secs(10), "the copy in flight", || async {
        r.stats.snapshot().in_flight == 1
    })
    .await;

    // ZooKeeper silent past the session timeout: the session expires and
    // the copy in flight is abandoned, never marked done.
    zks.pause();
    eventually(Duration::from_secs(10), "the copy abandoned", || async {
        r.stats.snapshot().abandoned >= 1
    })
    .await;
    assert_eq!(r.stats.snapshot().copies_done, 0);
    zks.resume();
    dst.resume();
    // A new session takes the task again and finishes it.
    eventually(
        Duration::from_secs(20),
        "copied on the new session",
        || async { queue_empty(&env.queue).await && r.stats.snapshot().copies_done == 1 },
    )
    .await;
    assert_eq!(
        get(dst_port, "/e.bin").await.unwrap().0,
        content(5, 2 << 20)
    );
    r.shutdown().await;
    drop(dst);
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_frozen_past_the_session_timeout_under_load_loses_nothing() {
    let Some(redis) = shared_redis() else { return };
    let Some(zks) = ZkServer::start() else { return };
    let (n1, n2) = (Node::start("1").await, Node::start("2").await);
    let env = env(&zks.addr(), "repl-freeze", &[&n1, &n2], &[redis.port]).await;
    let n = 1500;
    for i in 0..n {
        put(n1.port, &format!("/f/{i}"), content(i, 700)).await;
    }
    let tasks: Vec<String> = (0..n)
        .map(|i| task(&[&n1], &n2, &format!("/f/{i}")))
        .collect();

    let mut zc = ZkConfig::new(&env.zk_addr, &env.root);
    zc.session_timeout = Duration::from_secs(2);
    let r = Running::start_with(zc, config(8), None).await;
    // Frozen while tasks are claimed ahead, copying and waiting to be
    // marked done: every stage holds locks of the session that expires.
    // Whether the server expires the session at the resume or the client
    // reconnects to it first is a race inside ZooKeeper, so the freeze is
    // repeated, a batch of tasks each time, until one lost the session.
    let mut pushed = 0;
    for batch in tasks.chunks(n / 5) {
        let before = r.stats.snapshot().copies_done;
        env.queue.push_many(batch).await.unwrap();
        pushed += batch.len();
        eventually(Duration::from_secs(20), "copies under way", || async {
            r.stats.snapshot().copies_done >= before + 20
        })
        .await;
        zks.pause();
        tokio::time::sleep(Duration::from_secs(4)).await;
        zks.resume();
        eventually(Duration::from_secs(60), "every task done", || async {
            queue_empty(&env.queue).await
        })
        .await;
        if r.stats.snapshot().abandoned > 0 {
            break;
        }
    }
    let s = r.stats.snapshot();
    assert!(
        s.abandoned >= 1,
        "no freeze cost a session with work in flight: {s:?}"
    );
    let n = pushed;
    // Every task was copied at least once: by this session or, when its
    // lock went with the frozen session, again by the next one. (Under
    // heavy load copies_done has been seen a few short of n with as many
    // abandoned; what this test is about, every file on node 2 byte for
    // byte, is checked below.)
    assert!(s.copies_done + s.abandoned >= n as u64, "{s:?}");
    assert_eq!(s.copies_failed, 0, "{s:?}");
    assert!(env.queue.dead(10).await.is_empty());
    for i in 0..n {
        let (body, _) = get(n2.port, &format!("/f/{i}"))
            .await
            .unwrap_or_else(|| panic!("/f/{i} missing on node 2"));
        assert_eq!(body, content(i, 700), "/f/{i}");
    }
    r.shutdown().await;
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_are_one_clear_line() {
    let run = |args: &[&str]| {
        let out = Command::new(bin("backpack-replicator"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let dead = format!("127.0.0.1:{}", free_port());
    let (code, out, err) =
        tokio::task::block_in_place(|| run(&[&dead, "/backpack", "--zk-timeout", "1"]));
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty());
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("backpack-replicator: cannot reach ZooKeeper at 127.0.0.1:"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let Some(zks) = shared_zk() else { return };
    let root = unique_root("repl-uninit");
    let (code, _, err) = tokio::task::block_in_place(|| run(&[&zks.addr(), &root]));
    assert_eq!(code, Some(1), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("is not initialized") && last.contains("backpack-coordinator-init"),
        "{err}"
    );

    let (code, _, err) = tokio::task::block_in_place(|| run(&[&zks.addr(), &root, "0"]));
    assert_ne!(code, Some(0), "{err}");
}
