//! A cluster root in ZooKeeper, its shard of storage nodes, and its queue
//! on real Redis servers.

use std::time::Duration;

use backpack_shared::model::{HostPort, QueueInfo, paths, rendezvous_order};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::RedisServer;

use super::{TestNode, eventually};

/// A fresh initialized root on `zk_addr`, with the queue on `redis`.
pub async fn init_root(zk_addr: &str, root: &str, queue_key: &str, redis: &[String]) -> Zk {
    let zk = Zk::connect(ZkConfig::new(zk_addr, root)).await.unwrap();
    zk.create_root().await.unwrap();
    zk.create_if_missing(paths::SERVERS_MAP, b"{}")
        .await
        .unwrap();
    zk.create_if_missing(paths::SHARDS_MAP, b"{}")
        .await
        .unwrap();
    let servers: Vec<String> = redis
        .iter()
        .map(|a| {
            let (h, p) = a.rsplit_once(':').unwrap();
            format!(r#"{{"host":"{h}","port":"{p}"}}"#)
        })
        .collect();
    let queue = format!(
        r#"{{"key":"{queue_key}","servers":[{}]}}"#,
        servers.join(",")
    );
    zk.create_if_missing(paths::QUEUE, queue.as_bytes())
        .await
        .unwrap();
    zk
}

/// Two storage nodes, servers 1 and 2, making up shard 1 (read-only).
pub async fn two_node_shard(zk: &Zk) -> (TestNode, TestNode) {
    let (a, b) = (TestNode::start().await, TestNode::start().await);
    add_shard(zk, &[a.addr.port(), b.addr.port()]).await;
    (a, b)
}

/// Servers 1..=n on 127.0.0.1:`ports`, making up shard 1 (read-only).
pub async fn add_shard(zk: &Zk, ports: &[u16]) {
    let addrs: Vec<HostPort> = ports.iter().map(|p| loopback(*p)).collect();
    add_shard_at(zk, &addrs).await;
}

/// Servers 1..=n at `addrs`, making up shard 1 (read-only).
pub async fn add_shard_at(zk: &Zk, addrs: &[HostPort]) {
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = (i + 1).to_string();
        zk.apply(&MapOp::AddServer {
            id: id.clone(),
            addr: addr.clone(),
            replace: false,
        })
        .await
        .unwrap();
        nodes.push(id);
    }
    zk.apply(&MapOp::AddShard {
        id: "1".into(),
        nodes,
        capacity: 1 << 30,
        replace: false,
    })
    .await
    .unwrap();
}

/// `127.0.0.1:<port>` as the maps hold it.
pub fn loopback(port: u16) -> HostPort {
    HostPort {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A name whose rendezvous order among `ids` starts with `first`.
pub fn name_first_on(first: &str, ids: &[&str], tag: &str) -> String {
    (0..)
        .map(|i| format!("/{tag}/{i}.jpg"))
        .find(|n| {
            let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            rendezvous_order(n, &mut v);
            v[0] == first
        })
        .unwrap()
}

/// The queue document for `key` on the Redis servers at `redis_ports`.
pub fn queue_info(key: &str, redis_ports: &[u16]) -> QueueInfo {
    QueueInfo {
        key: key.into(),
        servers: redis_ports.iter().map(|port| loopback(*port)).collect(),
    }
}

/// The queue of `key` on `redis` servers, as the daemons see it.
pub fn queue_on(zk: &Zk, key: &str, redis_ports: &[u16]) -> Queue {
    Queue::new(&queue_info(key, redis_ports), &RedisPool::new(), zk.clone())
}

/// Whether `q` is empty with no task locked.
pub async fn queue_empty(q: &Queue) -> bool {
    q.len().await.overall == Some(0) && q.locks().await.map(|l| l.is_empty()).unwrap_or(false)
}

/// Waits until `queue` is empty with no task locked (every copy done), and
/// asserts there are no dead letters.
pub async fn drained(queue: &Queue, timeout: Duration) {
    let done = eventually(timeout, || queue_empty(queue)).await;
    assert!(
        done,
        "the queue did not drain: {:?}",
        queue.len().await.per_server
    );
    let dead = queue.dead(5).await;
    assert!(dead.is_empty(), "dead letters: {dead:?}");
}

/// Runs one command on `server`, on a connection of its own.
pub async fn redis_cmd<T: redis::FromRedisValue>(server: &RedisServer, args: &[&str]) -> T {
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

/// The members of the set `key` on `server`, sorted.
pub async fn smembers(server: &RedisServer, key: &str) -> Vec<String> {
    let mut v: Vec<String> = redis_cmd(server, &["SMEMBERS", key]).await;
    v.sort();
    v
}
