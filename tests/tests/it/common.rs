//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backpack_daemon::node::{self, NodeConfig};
use backpack_shared::model::{HostPort, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::wait_until;
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

/// Two storage nodes, servers 1 and 2, making up shard 1 (read-only).
pub async fn two_node_shard(zk: &backpack_shared::zk::Zk) -> (TestNode, TestNode) {
    let (a, b) = (TestNode::start().await, TestNode::start().await);
    for (id, n) in [("1", &a), ("2", &b)] {
        let addr = HostPort {
            host: "127.0.0.1".into(),
            port: n.addr.port(),
        };
        zk.apply(&MapOp::AddServer {
            id: id.into(),
            addr,
            replace: false,
        })
        .await
        .unwrap();
    }
    let nodes = vec!["1".into(), "2".into()];
    zk.apply(&MapOp::AddShard {
        id: "1".into(),
        nodes,
        capacity: 1 << 30,
        replace: false,
    })
    .await
    .unwrap();
    (a, b)
}

pub fn nginx() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// nginx on a free port with the generated configuration included.
pub struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// `generated` must listen on 127.0.0.1:`port`.
    pub fn start(program: &str, generated: &str, port: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("backpack.conf"), generated).unwrap();
        let user = if Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout == b"0\n")
            .unwrap_or(false)
        {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/backpack.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new(program)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut n = Nginx { child, dir };
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            let log = std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default();
            let _ = n.child.kill();
            panic!("nginx did not start: {log}\nconfig:\n{generated}");
        }
        n
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator in-process on a free loopback port with the default
/// settings, once it has read the configuration.
pub async fn start_coordinator(
    zk: &Zk,
    stop: CancellationToken,
) -> backpack_daemon::coordinator::Coordinator {
    use backpack_daemon::coordinator::{self, CoordinatorConfig};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = coordinator::start(
        listener,
        CoordinatorConfig::default(),
        zk.config().clone(),
        stop,
    )
    .await
    .unwrap();
    assert!(c.wait_ready().await);
    c
}

/// What `backpack-coordinator-nginx-config <zk> <root> <args>` prints (it
/// must succeed).
pub fn nginx_config(zk_addr: &str, root: &str, args: &[&str]) -> String {
    let out = Command::new(backpack_tests::bin("backpack-coordinator-nginx-config"))
        .args([zk_addr, root])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A replicator in-process on its own session to `zk_addr`/`root`, with
/// quick backoffs (50 ms doubling to 300 ms) and a name of its own; runs
/// until `stop`. Returns once it has started.
pub async fn start_replicator(
    zk_addr: &str,
    root: &str,
    concurrency: usize,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<backpack_daemon::replicator::Counters> {
    use backpack_daemon::replicator::{Replicator, ReplicatorConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut config = ReplicatorConfig::new(concurrency);
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(300);
    config.retry_min = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(300);
    config.destination_retry_max = Duration::from_millis(300);
    config.name = format!(
        "{}-common-{}",
        backpack_shared::queue::worker_id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let zk = Zk::connect_initialized(ZkConfig::new(zk_addr, root))
        .await
        .unwrap();
    let replicator = Replicator::new(config, zk);
    let started = replicator.started();
    let running = tokio::spawn(replicator.run(stop));
    tokio::time::timeout(Duration::from_secs(10), started.cancelled())
        .await
        .expect("replicator started");
    running
}
