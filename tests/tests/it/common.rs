//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backpack_daemon::node::{self, NodeConfig};
use backpack_shared::model::paths;
use backpack_shared::zk::{Zk, ZkConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Polls an async condition every 20 ms until true or `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A storage node running in-process on a free loopback port.
pub struct TestNode {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut node = TestNode {
            addr: ([127, 0, 0, 1], 0).into(),
            stop: CancellationToken::new(),
            task: None,
            dir,
        };
        node.launch(TcpListener::bind("127.0.0.1:0").await.unwrap());
        node
    }

    fn launch(&mut self, listener: TcpListener) {
        self.addr = listener.local_addr().unwrap();
        let mut config = NodeConfig::new(self.dir.path());
        config.volume_size = 64 << 20;
        config.shutdown_timeout = Duration::from_secs(2);
        self.stop = CancellationToken::new();
        let s = self.stop.clone();
        self.task = Some(tokio::spawn(async move {
            node::run(listener, config, s).await.unwrap();
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the node; its port is closed when this returns.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.launch(listener);
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

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
