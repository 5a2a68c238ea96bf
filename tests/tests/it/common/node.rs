//! Storage nodes in-process, alone or under a server id, and what a test
//! asks of a node over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use backpack_daemon::node::{self, NodeConfig, TIME_HEADER};
use backpack_shared::model::HostPort;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{client, cluster::loopback, get_json};

/// A storage node running in-process on a free loopback port.
pub struct TestNode {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        TestNode::start_on("127.0.0.1:0").await
    }

    /// On `bind` (`[::1]:0` for IPv6).
    pub async fn start_on(bind: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut node = TestNode {
            addr: ([127, 0, 0, 1], 0).into(),
            stop: CancellationToken::new(),
            task: None,
            dir,
        };
        node.launch(TcpListener::bind(bind).await.unwrap());
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

    /// Whether it runs (not stopped).
    pub fn running(&self) -> bool {
        self.task.is_some()
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

/// A storage node of the cluster under its server id: in-process
/// ([`TestNode`], stoppable and restartable on the same port and data), or
/// a real process the test runs itself (to SIGSTOP it).
pub struct Node {
    pub id: String,
    pub port: u16,
    inner: Option<TestNode>,
}

impl Node {
    pub async fn start(id: &str) -> Node {
        let t = TestNode::start().await;
        Node {
            id: id.into(),
            port: t.addr.port(),
            inner: Some(t),
        }
    }

    pub fn external(id: &str, port: u16) -> Node {
        Node {
            id: id.into(),
            port,
            inner: None,
        }
    }

    /// Stops it (in-process only); its port is closed when this returns.
    pub async fn down(&mut self) {
        if let Some(t) = &mut self.inner {
            t.stop().await;
        }
    }

    pub async fn up(&mut self) {
        if let Some(t) = &mut self.inner {
            t.restart().await;
        }
    }

    /// Whether it runs (an external node is taken to).
    pub fn running(&self) -> bool {
        self.inner.as_ref().is_none_or(TestNode::running)
    }

    /// Its address as the servers map holds it.
    pub fn addr(&self) -> HostPort {
        loopback(self.port)
    }

    pub fn socket_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

/// Stores `body` as `path` on the node at `port` directly (as a coordinator
/// does), which must answer 201.
pub async fn put(port: u16, path: &str, body: Vec<u8>) {
    // Explicit Content-Length: reqwest leaves it out for an empty body.
    let r = client()
        .put(format!("http://127.0.0.1:{port}{path}"))
        .header(reqwest::header::CONTENT_LENGTH, body.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "PUT {path} on {port}");
}

/// Body and `X-Backpack-Time` of a file, `None` on 404.
pub async fn get(port: u16, path: &str) -> Option<(Vec<u8>, String)> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200, "GET {path} on {port}");
    let time = r
        .headers()
        .get(TIME_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((r.bytes().await.unwrap().to_vec(), time))
}

/// How many PUTs the node at `port` has stored (its `/stats`).
pub async fn puts_count(port: u16) -> u64 {
    let v = get_json(&client(), &format!("http://127.0.0.1:{port}/stats")).await;
    v["puts"]["count"].as_u64().unwrap()
}

/// Deterministic content of file `i`, `len` bytes.
pub fn content(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
