//! The replication queue over real Redis servers and a real ZooKeeper: the
//! original's wire format and lock names, and our fixes (pop looks at
//! every server, a dead server does not stall, a push during a copy is not
//! lost, backoffs without a lock, dead letters); claims a batch at a time
//! by several workers at once.

use std::time::{Duration, Instant};

use backpack_shared::model::{QueueInfo, ReplicationTask, paths};
use backpack_shared::queue::{FailOutcome, Queue, RedisPool, lock_name, worker_id};
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{RedisServer, shared_redis, shared_zk, unique_root};

use crate::common::cluster::{queue_info, redis_cmd, smembers};
use crate::common::replicator::env;

async fn zk(root: &str) -> Option<Zk> {
    let server = shared_zk()?;
    let zk = Zk::connect(ZkConfig::new(&server.addr(), root))
        .await
        .unwrap();
    zk.create_root().await.unwrap();
    Some(zk)
}

fn info(key: &str, servers: &[&RedisServer]) -> QueueInfo {
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    queue_info(key, &ports)
}

/// Adds `item` to the set `key` on `server` by hand, as an original
/// coordinator pushes.
async fn sadd(server: &RedisServer, key: &str, item: &str) {
    let _: u64 = redis_cmd(server, &["SADD", key, item]).await;
}

/// Retry at once (no backoff).
fn now(_attempts: u64) -> Duration {
    Duration::ZERO
}

fn task(path: &str) -> String {
    ReplicationTask {
        from: vec!["1".into()],
        to: "4".into(),
        path: path.into(),
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pop_lock_done_failed_across_two_servers_one_killed() {
    let root = unique_root("queue");
    let Some(zk) = zk(&root).await else { return };
    let (Some(a), Some(mut b)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let q = Queue::new(
        &info("backpack-queue", &[&a, &b]),
        &RedisPool::new(),
        zk.clone(),
    );

    // The original's format: the task JSON in the set on every server.
    q.push(&task("/hi.txt")).await.unwrap();
    assert_eq!(
        smembers(&a, "backpack-queue").await,
        vec![r#"{"from":["1"],"to":"4","path":"/hi.txt"}"#]
    );
    assert_eq!(
        smembers(&b, "backpack-queue").await,
        smembers(&a, "backpack-queue").await
    );
    assert_eq!(q.len().await.overall, Some(1));

    // pop locks it with the original's ephemeral znode; a second pop finds
    // nothing else to take.
    let claim = q.pop().await.unwrap().expect("an item");
    assert_eq!(claim.item, task("/hi.txt"));
    let lock = lock_name("backpack-queue", &claim.item);
    assert!(lock.starts_with("backpack-queue") && lock.len() == "backpack-queue".len() + 32);
    let (worker, _) = zk.get(&lock).await.unwrap().expect("lock znode");
    assert!(
        String::from_utf8(worker)
            .unwrap()
            .ends_with(&format!(":{}", std::process::id()))
    );
    assert!(
        q.pop().await.unwrap().is_none(),
        "a locked item is not handed out twice"
    );
    let locks = q.locks().await.unwrap();
    assert_eq!(locks.len(), 1);

    // failed: unlocked, still queued, attempt counted with its error.
    assert_eq!(
        q.failed(&claim, "source 1 answered 404", now, |n, _| n >= 3)
            .await
            .unwrap(),
        FailOutcome::Retry { attempts: 1 }
    );
    assert!(zk.get(&lock).await.unwrap().is_none());
    let sample = q.sample(10).await;
    assert_eq!(sample[0].attempts, 1);
    assert_eq!(
        sample[0].last_error.as_deref(),
        Some("source 1 answered 404")
    );
    assert!(sample[0].first_queued_ms.is_some());
    assert!(q.oldest_age().await.is_some());

    // done: removed from both servers and unlocked.
    let claim = q.pop().await.unwrap().expect("the item again");
    q.done(&claim).await.unwrap();
    assert!(smembers(&a, "backpack-queue").await.is_empty());
    assert!(smembers(&b, "backpack-queue").await.is_empty());
    assert!(zk.get(&lock).await.unwrap().is_none());

    // One server killed: pushes still succeed, nothing is lost, and a dead
    // server does not stall the others.
    b.kill();
    let start = Instant::now();
    for i in 0..20 {
        q.push(&task(&format!("/f{i}"))).await.unwrap();
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "pushes stalled: {:?}",
        start.elapsed()
    );
    let len = q.len().await;
    assert_eq!(len.overall, Some(20));
    assert!(len.per_server.iter().any(|(_, r)| r.is_err()));
    let mut seen = Vec::new();
    while let Some(c) = q.pop().await.unwrap() {
        seen.push(c.item.clone());
        q.done(&c).await.unwrap();
    }
    assert_eq!(seen.len(), 20);
    // Back empty: the items it never had are not resurrected, new pushes reach it.
    b.restart();
    q.push(&task("/after")).await.unwrap();
    let took = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if smembers(&b, "backpack-queue").await.len() == 1 {
                break;
            }
            q.push(&task("/after")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(took.is_ok(), "the restarted server takes pushes again");
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_looks_past_a_server_that_restarted_empty() {
    let root = unique_root("qempty");
    let Some(zk) = zk(&root).await else { return };
    let (Some(a), Some(b)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let q = Queue::new(&info("k", &[&a, &b]), &RedisPool::new(), zk.clone());
    // Only server b holds the item (as after a restart of a).
    sadd(&b, "k", &task("/only-on-b")).await;
    for _ in 0..10 {
        let c = q
            .pop()
            .await
            .unwrap()
            .expect("found on b whatever the order");
        q.release(&c).await;
    }
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failing_too_often_goes_to_the_dead_letters() {
    let root = unique_root("qdead");
    let Some(zk) = zk(&root).await else { return };
    let Some(a) = RedisServer::start() else {
        return;
    };
    let q = Queue::new(&info("k", &[&a]), &RedisPool::new(), zk.clone());
    q.push(&task("/lost")).await.unwrap();
    for attempt in 1..=3 {
        let c = q.pop().await.unwrap().expect("item");
        let outcome = q
            .failed(&c, "no source has it", now, |n, _| n >= 3)
            .await
            .unwrap();
        if attempt < 3 {
            assert_eq!(outcome, FailOutcome::Retry { attempts: attempt });
        } else {
            assert_eq!(outcome, FailOutcome::Dead { attempts: 3 });
        }
    }
    assert!(q.pop().await.unwrap().is_none());
    assert_eq!(q.dead_len().await.overall, Some(1));
    let dead = q.dead(10).await;
    assert_eq!(dead[0].last_error.as_deref(), Some("no source has it"));
    // The original's key holds nothing: an original daemon sees an empty queue.
    assert!(smembers(&a, "k").await.is_empty());
    assert!(q.requeue(&task("/lost")).await.unwrap());
    assert_eq!(q.dead_len().await.overall, Some(0));
    let c = q.pop().await.unwrap().expect("requeued");
    q.failed(&c, "still lost", now, |_, _| true).await.unwrap();
    assert!(q.drop_dead(&task("/lost")).await.unwrap());
    assert_eq!(
        (q.len().await.overall, q.dead_len().await.overall),
        (Some(0), Some(0))
    );
    assert!(!q.drop_dead("nothing").await.unwrap());
    let _ = paths::QUEUE;
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_server_answering_is_an_error_not_an_empty_queue() {
    let root = unique_root("qdown");
    let Some(zk) = zk(&root).await else { return };
    let Some(mut a) = RedisServer::start() else {
        return;
    };
    let q = Queue::new(&info("k", &[&a]), &RedisPool::new(), zk.clone());
    a.kill();
    let err = q.pop().await.unwrap_err();
    assert!(
        err.to_string().contains("no queue Redis server answered"),
        "{err}"
    );
    let err = q.push(&task("/x")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("could not write to any of the 1 queue Redis servers"),
        "{err}"
    );
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_after_a_broken_connection_is_taken_at_once() {
    let root = unique_root("qbroken");
    let Some(zk) = zk(&root).await else { return };
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let q = Queue::new(&info("k", &[&redis]), &RedisPool::new(), zk.clone());
    q.push(&task("/before")).await.unwrap();

    // The server restarted (empty): the next pushes find it back at once.
    redis.restart();
    for i in 0..3 {
        q.push(&task(&format!("/after-restart-{i}"))).await.unwrap();
    }
    // Our connection killed by CLIENT KILL.
    let () = redis_cmd(
        &redis,
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    )
    .await;
    q.push(&task("/after-client-kill")).await.unwrap();
    // Idle connections closed by Redis's own `timeout`, after a lull.
    let () = redis_cmd(&redis, &["CONFIG", "SET", "timeout", "1"]).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    q.push(&task("/after-idle-timeout")).await.unwrap();

    let mut want: Vec<String> = (0..3)
        .map(|i| task(&format!("/after-restart-{i}")))
        .chain([task("/after-client-kill"), task("/after-idle-timeout")])
        .collect();
    want.sort();
    assert_eq!(smembers(&redis, "k").await, want);
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_the_copy_is_copied_again_never_dropped() {
    let root = unique_root("qrepush");
    let Some(zk) = zk(&root).await else { return };
    let (Some(a), Some(b)) = (RedisServer::start(), RedisServer::start()) else {
        return;
    };
    let q = Queue::new(&info("k", &[&a, &b]), &RedisPool::new(), zk.clone());
    let x = task("/x");
    q.push(&x).await.unwrap();
    // A replicator takes it; the file is uploaded again meanwhile (same
    // task, pushed again); then the first copy finishes.
    let first = q.pop().await.unwrap().expect("queued");
    q.push(&x).await.unwrap();
    q.done(&first).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(
            smembers(s, "k").await,
            std::slice::from_ref(&x),
            "the re-push was dropped"
        );
    }
    // Copied again, then gone.
    let batch = q.pop_many(4).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(q.done_many(&batch).await.unwrap(), [true]);
    for s in [&a, &b] {
        assert!(smembers(s, "k").await.is_empty());
        assert!(smembers_of_hash(s, "k:pushes").await.is_empty());
    }

    // An item an original coordinator pushed (no count) is done as before.
    sadd(&a, "k", &task("/old")).await;
    let c = q.pop().await.unwrap().expect("queued");
    q.done(&c).await.unwrap();
    assert!(smembers(&a, "k").await.is_empty());
    zk.close();
}

async fn smembers_of_hash(server: &RedisServer, key: &str) -> Vec<String> {
    redis_cmd(server, &["HKEYS", key]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_waits_out_its_backoff_without_a_lock() {
    let root = unique_root("qbackoff");
    let Some(zk) = zk(&root).await else { return };
    let Some(a) = RedisServer::start() else {
        return;
    };
    let q = Queue::new(&info("k", &[&a]), &RedisPool::new(), zk.clone());
    let (waits, ready) = (task("/waits"), task("/ready"));
    q.push_many(&[waits.clone(), ready.clone()]).await.unwrap();
    // Take /waits (and let /ready go), fail it with an hour of backoff.
    let mut claims = q.pop_many(2).await.unwrap();
    claims.sort_by(|x, y| x.item.cmp(&y.item));
    assert_eq!(claims.len(), 2);
    q.release(&claims[0]).await;
    let hour = |_: u64| Duration::from_secs(3600);
    let outcome = q
        .failed(&claims[1], "destination down", hour, |_, age| {
            age.is_some_and(|a| a > Duration::from_secs(86400))
        })
        .await
        .unwrap();
    assert_eq!(outcome, FailOutcome::Retry { attempts: 1 });
    // Only /ready is handed out; /waits stays queued, unlocked.
    for _ in 0..5 {
        let batch = q.pop_many(8).await.unwrap();
        let items: Vec<&str> = batch.iter().map(|c| c.item.as_str()).collect();
        assert_eq!(items, [ready.as_str()]);
        assert_eq!(q.locks().await.unwrap().len(), 1);
        for c in &batch {
            q.release(c).await;
        }
    }
    assert_eq!(smembers(&a, "k").await.len(), 2);
    // An item an original coordinator pushed (no due time) is adopted.
    sadd(&a, "k", &task("/original")).await;
    let got: Vec<String> = q
        .pop_many(8)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.item)
        .collect();
    assert!(
        got.contains(&task("/original")) && !got.contains(&waits),
        "{got:?}"
    );
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_use_the_original_locks_and_never_overlap() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let env = env(&zks.addr(), "repl-batch", &[], &[redis.port]).await;
    let items: Vec<String> = (0..300).map(|i| format!("item-{i}")).collect();
    env.queue.push_many(&items).await.unwrap();

    // Three workers on their own sessions take batches at the same time.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let zk = Zk::connect(ZkConfig::new(&env.zk_addr, &env.root))
            .await
            .unwrap();
        sessions.push((zk.clone(), Queue::new(&env.info, &RedisPool::new(), zk)));
    }
    let (a, b, c) = tokio::join!(
        sessions[0].1.pop_many(40),
        sessions[1].1.pop_many(40),
        sessions[2].1.pop_many(40)
    );
    let held = [a.unwrap(), b.unwrap(), c.unwrap()];
    assert!(held.iter().all(|h| !h.is_empty()), "every worker got some");
    let mut all: Vec<&str> = held.iter().flatten().map(|c| c.item.as_str()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an item claimed twice");
    // The original's lock znodes, holding the worker id.
    for c in &held[0] {
        let (data, _) = env
            .zk
            .get(&lock_name(&env.info.key, &c.item))
            .await
            .unwrap()
            .expect("lock znode");
        assert_eq!(String::from_utf8(data).unwrap(), worker_id());
    }
    // A lock lost meanwhile: done_many refuses that one and removes the rest.
    let lost = held[1][0].clone();
    env.zk
        .call("lock", |c| {
            let p = env.zk.path(&lock_name(&env.info.key, &lost.item));
            async move { c.delete(&p, None).await }
        })
        .await
        .unwrap();
    let done = sessions[1].1.done_many(&held[1]).await.unwrap();
    assert_eq!(done.iter().filter(|d| !**d).count(), 1);
    assert!(!done[0]);
    let done = sessions[0].1.done_many(&held[0]).await.unwrap();
    assert!(done.iter().all(|d| *d));
    let left = 300 - held[0].len() - (held[1].len() - 1);
    assert_eq!(env.queue.len().await.overall, Some(left as u64));
    let locks = env.queue.locks().await.unwrap();
    assert_eq!(
        locks.len(),
        held[2].len(),
        "only the third worker's locks remain"
    );
    for (zk, _) in sessions {
        zk.close();
    }
    env.zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_claims_find_the_last_free_items_among_their_own() {
    let (Some(zks), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let env = env(&zks.addr(), "repl-tail", &[], &[redis.port]).await;
    let items: Vec<String> = (0..200).map(|i| format!("tail-{i}")).collect();
    env.queue.push_many(&items).await.unwrap();
    // One worker keeps what it takes (copies in flight): at the end of a
    // burst nearly every item in the set is its own. Each batch must still
    // find the free ones, never answer "empty" while some are left (the
    // claimer would sleep until the next poll).
    let mut claimed = Vec::new();
    while claimed.len() < items.len() {
        let got = env.queue.pop_many(16).await.unwrap();
        assert!(
            !got.is_empty(),
            "no claim with {} of {} items free",
            items.len() - claimed.len(),
            items.len()
        );
        claimed.extend(got);
    }
    let mut names: Vec<&str> = claimed.iter().map(|c| c.item.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), items.len(), "an item claimed twice");
    assert!(env.queue.pop_many(16).await.unwrap().is_empty());
    assert!(
        env.queue
            .done_many(&claimed)
            .await
            .unwrap()
            .iter()
            .all(|d| *d)
    );
    assert_eq!(env.queue.len().await.overall, Some(0));
    env.zk.close();
}
