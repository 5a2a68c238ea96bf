//! Helpers shared by the integration tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use backpack_daemon::node::{self, NodeConfig};
use backpack_shared::model::{HostPort, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{Process, wait_until};
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
    add_shard(zk, &[a.addr.port(), b.addr.port()]).await;
    (a, b)
}

/// Servers 1..=n on 127.0.0.1:`ports`, making up shard 1 (read-only).
pub async fn add_shard(zk: &backpack_shared::zk::Zk, ports: &[u16]) {
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let id = (i + 1).to_string();
        let addr = HostPort {
            host: "127.0.0.1".into(),
            port: *port,
        };
        zk.apply(&MapOp::AddServer {
            id: id.clone(),
            addr,
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

/// libfaketime (Debian package faketime), if installed.
pub fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
}

/// Whether libfaketime is there (under `CI`: must be).
pub fn require_faketime() -> bool {
    backpack_tests::require(
        "faketime (Debian package faketime)",
        libfaketime().is_some(),
    )
}

/// Starts a binary of the workspace with its wall clock shifted by `shift`
/// (libfaketime's offsets: `+10m`, `-600s`; empty for the true clock). The
/// monotonic clock is left alone, so timeouts keep working. Run through
/// `env`, so the process the guard signals is the program itself.
pub fn spawn_clocked(
    name: &'static str,
    program: &str,
    shift: &str,
    args: &[String],
    dir: &Path,
) -> Process {
    let mut all = Vec::new();
    if !shift.is_empty() {
        let lib = libfaketime().expect("libfaketime is installed (require_faketime)");
        all.push(format!("LD_PRELOAD={}", lib.display()));
        all.push(format!("FAKETIME={shift}"));
        all.push("FAKETIME_DONT_FAKE_MONOTONIC=1".into());
    }
    all.push(backpack_tests::bin(program).display().to_string());
    all.extend(args.iter().cloned());
    backpack_tests::spawn(name, "env", &all, dir)
}

/// A `backpack-node` process on a fixed loopback port with its own data
/// directory, kept across restarts.
pub struct NodeProcess {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Process>,
}

impl NodeProcess {
    pub fn start(shift: &str) -> NodeProcess {
        let mut n = NodeProcess {
            port: backpack_tests::free_port(),
            dir: tempfile::tempdir().unwrap(),
            process: None,
        };
        n.launch(shift);
        n
    }

    fn launch(&mut self, shift: &str) {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let args = [
            data.display().to_string(),
            "127.0.0.1".into(),
            self.port.to_string(),
        ];
        self.process = Some(spawn_clocked(
            "backpack-node",
            "backpack-node",
            shift,
            &args,
            self.dir.path(),
        ));
        assert!(
            wait_listening(self.port),
            "backpack-node did not listen on {}",
            self.port
        );
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Kills it (SIGKILL: what it acknowledged is on disk already).
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Kills it and starts it again on the same port and data, its clock
    /// shifted by `shift`.
    pub fn restart(&mut self, shift: &str) {
        self.kill();
        self.launch(shift);
    }

    /// SIGSTOP: it keeps its connections and answers nothing.
    pub fn pause(&self) {
        if let Some(p) = &self.process {
            p.signal("STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(p) = &self.process {
            p.signal("CONT");
        }
    }
}

/// A `backpack-coordinator` process on a free loopback port.
pub struct CoordinatorProcess {
    pub port: u16,
    _dir: tempfile::TempDir,
    _process: Process,
}

impl CoordinatorProcess {
    /// Starts one for `zk_addr`/`root` with its clock shifted by `shift`
    /// and `extra` options; returns once `/health` answers 200.
    pub async fn start(zk_addr: &str, root: &str, shift: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = backpack_tests::free_port();
        let mut args = vec![
            zk_addr.to_string(),
            root.to_string(),
            "127.0.0.1".into(),
            port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let process = spawn_clocked(
            "backpack-coordinator",
            "backpack-coordinator",
            shift,
            &args,
            dir.path(),
        );
        let health = format!("http://127.0.0.1:{port}/health");
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let ready = eventually(Duration::from_secs(20), || async {
            client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(ready, "coordinator not ready: {}", process.log_text());
        CoordinatorProcess {
            port,
            _dir: dir,
            _process: process,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

pub fn nginx() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// nginx on a free port with the generated configuration included.
pub struct Nginx {
    _process: Process,
    _dir: tempfile::TempDir,
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
        // One process (no master and worker): killing it leaves no worker
        // behind holding the port.
        let conf = format!(
            "{user}\nmaster_process off;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/backpack.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let args = [
            "-p".to_string(),
            d.to_string(),
            "-c".into(),
            path("nginx.conf"),
            "-e".into(),
            path("error.log"),
        ];
        let process = backpack_tests::spawn("nginx", program, &args, dir.path());
        if !wait_listening(port) {
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            panic!("nginx did not start: {log}\nconfig:\n{generated}");
        }
        Nginx {
            _process: process,
            _dir: dir,
        }
    }
}

/// Waits up to 10 s for a server to listen on 127.0.0.1:`port`.
pub fn wait_listening(port: u16) -> bool {
    wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
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

/// The queue of `key` on `redis` servers, as the daemons see it.
pub fn queue_on(zk: &Zk, key: &str, redis_ports: &[u16]) -> backpack_shared::queue::Queue {
    let info = backpack_shared::model::QueueInfo {
        key: key.into(),
        servers: redis_ports
            .iter()
            .map(|port| HostPort {
                host: "127.0.0.1".into(),
                port: *port,
            })
            .collect(),
    };
    backpack_shared::queue::Queue::new(&info, &backpack_shared::queue::RedisPool::new(), zk.clone())
}

/// Waits until `queue` is empty with no task locked (every copy done), and
/// asserts there are no dead letters.
pub async fn drained(queue: &backpack_shared::queue::Queue, timeout: Duration) {
    let done = eventually(timeout, || async {
        queue.len().await.overall == Some(0) && queue.locks().await.is_ok_and(|l| l.is_empty())
    })
    .await;
    assert!(
        done,
        "the queue did not drain: {:?}",
        queue.len().await.per_server
    );
    let dead = queue.dead(5).await;
    assert!(dead.is_empty(), "dead letters: {dead:?}");
}

/// A name whose rendezvous order among `ids` starts with `first`.
pub fn name_first_on(first: &str, ids: &[&str], tag: &str) -> String {
    (0..)
        .map(|i| format!("/{tag}/{i}.jpg"))
        .find(|n| {
            let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
            backpack_shared::model::rendezvous_order(n, &mut v);
            v[0] == first
        })
        .unwrap()
}
