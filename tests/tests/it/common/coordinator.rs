//! The coordinator in-process: on a cluster root with nodes under their
//! ids ([`Cluster`]), started and stopped by the test ([`Running`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use backpack_daemon::coordinator::{self, Coordinator, CoordinatorConfig};
use backpack_shared::model::{ReplicationTask, ShardSize, parse_json, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{RedisServer, shared_redis, unique_root};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::cluster::{init_root, smembers};
use super::http::{Answer, raw_get, request};
use super::node::Node;
use super::{client, get_json};

/// A coordinator in-process on a free loopback port with the default
/// settings, once it has read the configuration.
pub async fn start_coordinator(zk: &Zk, stop: CancellationToken) -> Coordinator {
    start_coordinator_with(zk, CoordinatorConfig::default(), stop).await
}

/// [`start_coordinator`] with other settings.
pub async fn start_coordinator_with(
    zk: &Zk,
    config: CoordinatorConfig,
    stop: CancellationToken,
) -> Coordinator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = coordinator::start(listener, config, zk.config().clone(), stop)
        .await
        .unwrap();
    assert!(c.wait_ready().await);
    c
}

/// A cluster root with nodes, the queue on the shared Redis, and an admin
/// ZooKeeper handle.
pub struct Cluster {
    pub zk: Zk,
    pub zk_addr: String,
    pub root: String,
    pub key: String,
    pub redis: &'static RedisServer,
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub async fn new(name: &str, zk_addr: &str, nodes: usize) -> Option<Cluster> {
        let redis = shared_redis()?;
        let root = unique_root(name);
        let key = format!("q-{}", root.trim_start_matches('/'));
        let zk = init_root(zk_addr, &root, &key, &[redis.addr()]).await;
        let mut c = Cluster {
            zk,
            zk_addr: zk_addr.into(),
            root,
            key,
            redis,
            nodes: Vec::new(),
        };
        for i in 1..=nodes {
            c.add_node(&i.to_string()).await;
        }
        Some(c)
    }

    pub async fn add_node(&mut self, id: &str) {
        let node = Node::start(id).await;
        self.zk
            .apply(&MapOp::AddServer {
                id: id.into(),
                addr: node.addr(),
                replace: false,
            })
            .await
            .unwrap();
        self.nodes.push(node);
    }

    pub fn node(&mut self, id: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    pub async fn add_shard(&self, id: &str, nodes: &[&str], capacity: u64, enable: bool) {
        self.zk
            .apply(&MapOp::AddShard {
                id: id.into(),
                nodes: nodes.iter().map(|s| s.to_string()).collect(),
                capacity,
                replace: false,
            })
            .await
            .unwrap();
        if enable {
            self.enable(id).await;
        }
    }

    pub async fn enable(&self, id: &str) {
        self.zk
            .apply(&MapOp::EnableShard { id: id.into() })
            .await
            .unwrap();
    }

    pub async fn disable(&self, id: &str) {
        self.zk
            .apply(&MapOp::DisableShard { id: id.into() })
            .await
            .unwrap();
    }

    pub async fn set_size(&self, id: &str, json: &str) {
        let path = self.zk.path(&paths::shard_size(id));
        let data = json.as_bytes().to_vec();
        self.zk
            .call(&path.clone(), |c| async move {
                c.set_data(&path, &data, None).await
            })
            .await
            .unwrap();
    }

    pub async fn size(&self, id: &str) -> ShardSize {
        let (data, _) = self.zk.get(&paths::shard_size(id)).await.unwrap().unwrap();
        parse_json("shard-size", &data).unwrap()
    }

    pub fn zk_config(&self) -> ZkConfig {
        ZkConfig::new(&self.zk_addr, &self.root)
    }

    pub async fn start(&self, config: CoordinatorConfig) -> Running {
        self.start_with(config, self.zk_config()).await
    }

    pub async fn start_with(&self, config: CoordinatorConfig, zk: ZkConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let c = coordinator::start(listener, config, zk, stop.clone())
            .await
            .unwrap();
        Running {
            addr: c.local_addr(),
            c: Some(c),
            stop,
        }
    }

    /// Every queued item, sorted.
    pub async fn tasks(&self) -> Vec<String> {
        smembers(self.redis, &self.key).await
    }
}

/// A coordinator started by [`Cluster::start`].
pub struct Running {
    pub addr: SocketAddr,
    c: Option<Coordinator>,
    pub stop: CancellationToken,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn ready(&self) {
        let c = self.c.as_ref().unwrap();
        tokio::time::timeout(Duration::from_secs(10), c.wait_ready())
            .await
            .expect("coordinator ready within 10 s");
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(c) = self.c.take() {
            tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .expect("coordinator stops within 20 s");
        }
    }

    pub async fn stats(&self) -> Value {
        get_json(&client(), &self.url("/stats")).await
    }

    /// Its Prometheus text.
    pub async fn metrics(&self) -> String {
        let resp = client().get(self.url("/metrics")).send().await.unwrap();
        resp.text().await.unwrap()
    }
}

/// PUT through reqwest: (status, JSON answer).
pub async fn put(client: &reqwest::Client, r: &Running, name: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = client.put(r.url(name)).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// The queued task copying `path` from node `from` to node `to`.
pub fn task(from: &str, to: &str, path: &str) -> String {
    ReplicationTask {
        from: vec![from.into()],
        to: to.into(),
        path: path.into(),
    }
    .encode()
}

/// Which nodes hold `name` and with which bytes.
pub async fn holders(cluster: &Cluster, name: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for n in &cluster.nodes {
        if !n.running() {
            continue;
        }
        let Answer { status, body, .. } = request(n.socket_addr(), &raw_get(name)).await;
        if status == 200 {
            out.insert(n.id.clone(), body);
        }
    }
    out
}

/// Test settings: quick fill-level flushes, announcements and node retries.
pub fn quick() -> CoordinatorConfig {
    CoordinatorConfig {
        flush_interval: Duration::from_millis(200),
        shutdown_timeout: Duration::from_secs(5),
        node_retry_after: Duration::from_secs(3),
        announce_every: Duration::from_millis(500),
        ..CoordinatorConfig::default()
    }
}
