//! Real ZooKeeper and Redis servers for tests.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    // Port 0 asks the kernel; failing here means the machine has no loopback.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// Whether a server program is installed. Without it: under `CI` the test
/// fails; elsewhere it prints why and returns false (the caller returns).
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{what} is not installed and CI is set: install it (apt-get install -y zookeeper redis-server) — .ci/run does"
        );
    }
    eprintln!("SKIPPED: {what} is not installed (apt-get install -y zookeeper redis-server)");
    false
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A server process killed and reaped on drop, with its log shown if the
/// test is failing.
///
/// The server runs under a small `sh` guard that kills it when our end of
/// its stdin closes, so servers held in statics (never dropped) or left by
/// a test process that died still stop when the test process exits.
pub struct Process {
    child: Child,
    guard: Option<std::process::ChildStdin>,
    log: PathBuf,
    name: &'static str,
}

const GUARD: &str = r#""$@" & pid=$!; trap 'kill -9 $pid 2>/dev/null; wait $pid' EXIT; read _; kill -CONT $pid 2>/dev/null"#;

impl Process {
    /// Whether the guard (and so the server) still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Closing the pipe makes the guard kill the server and exit.
        self.guard = None;
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Starts `program` with its output in `<dir>/<name>.log`, under the guard
/// that kills it when the test process exits.
pub fn spawn(name: &'static str, program: &str, args: &[String], dir: &Path) -> Process {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot dup log: {e}"));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(GUARD)
        .arg("sh")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let guard = child.stdin.take();
    Process {
        child,
        guard,
        log,
        name,
    }
}

impl Process {
    /// Sends a signal to the server (the guard's child).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("pkill")
            .arg(format!("-{sig}"))
            .arg("-P")
            .arg(self.child.id().to_string())
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "pkill -{sig} -P {} failed",
            self.child.id()
        );
    }
}

/// A real ZooKeeper server on a free loopback port.
pub struct ZkServer {
    proc: Process,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl ZkServer {
    pub fn installed() -> bool {
        Path::new(ZK_JAR).exists() && Command::new("java").arg("-version").output().is_ok()
    }

    /// Starts a server, or returns `None` (after [`require`]) when not installed.
    pub fn start() -> Option<ZkServer> {
        if !require("ZooKeeper (Debian package zookeeper)", Self::installed()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for _ in 0..3 {
            let port = free_port();
            let cfg = dir.path().join("zoo.cfg");
            let data = dir.path().join("data");
            let _ = std::fs::create_dir_all(&data);
            let text = format!(
                "tickTime=500\nminSessionTimeout=1000\nmaxSessionTimeout=30000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n",
                data.display()
            );
            std::fs::write(&cfg, text).unwrap_or_else(|e| panic!("write zoo.cfg: {e}"));
            let args: Vec<String> = [
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                &format!("{ZK_JAR}:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-simple.jar"),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                &cfg.display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut proc = spawn("zookeeper", "java", &args, dir.path());
            let up = wait_until(Duration::from_secs(30), || {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    return true;
                }
                ruok(port)
            });
            if up && proc.child.try_wait().map(|s| s.is_none()).unwrap_or(false) {
                return Some(ZkServer {
                    proc,
                    port,
                    _dir: dir,
                });
            }
            eprintln!(
                "ZooKeeper did not start on port {port}; retrying:\n{}",
                proc.log_text()
            );
        }
        panic!("ZooKeeper did not start after 3 tries");
    }

    /// `127.0.0.1:<port>`, the form of the commands' first argument.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the server stops answering but keeps its sockets.
    pub fn pause(&self) {
        self.proc.signal("STOP");
    }

    pub fn resume(&self) {
        self.proc.signal("CONT");
    }
}

fn ruok(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf == "imok"
}

/// A real Redis server on a free loopback port, persistence off.
pub struct RedisServer {
    proc: Option<Process>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn installed() -> bool {
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok()
    }

    pub fn start() -> Option<RedisServer> {
        if !require("Redis (Debian package redis-server)", Self::installed()) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = RedisServer {
            proc: None,
            port: 0,
            dir,
        };
        for _ in 0..3 {
            server.port = free_port();
            if server.launch() {
                return Some(server);
            }
        }
        panic!("redis-server did not start after 3 tries");
    }

    fn launch(&mut self) -> bool {
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &self.dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut proc = spawn("redis", "redis-server", &args, self.dir.path());
        let port = self.port;
        let up = wait_until(Duration::from_secs(10), || {
            matches!(proc.child.try_wait(), Ok(Some(_))) || port_open(port)
        });
        let alive = matches!(proc.child.try_wait(), Ok(None));
        if up && alive {
            self.proc = Some(proc);
            true
        } else {
            eprintln!(
                "redis-server did not start on port {port}:\n{}",
                proc.log_text()
            );
            false
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it: its data is gone.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.proc = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

static SHARED_ZK: OnceLock<Option<ZkServer>> = OnceLock::new();
static SHARED_REDIS: OnceLock<Option<RedisServer>> = OnceLock::new();

/// One ZooKeeper for every test of this binary that neither kills nor
/// pauses it. It lives until the test process exits (see [`Process`]).
pub fn shared_zk() -> Option<&'static ZkServer> {
    SHARED_ZK.get_or_init(ZkServer::start).as_ref()
}

/// One Redis for tests that use their own key.
pub fn shared_redis() -> Option<&'static RedisServer> {
    SHARED_REDIS.get_or_init(RedisServer::start).as_ref()
}

/// A ZooKeeper root no other test uses: `/t<pid>-<n>-<name>`.
pub fn unique_root(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/t{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of a binary of this workspace, built by `cargo build --workspace --bins`.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins` (.ci/run does)",
        path.display()
    );
    path
}

/// Runs the admin command `backpack-coordinator-<name>`, which must
/// succeed; returns its standard output.
pub fn admin(name: &str, args: &[&str]) -> String {
    let out = Command::new(bin(&format!("backpack-coordinator-{name}")))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run backpack-coordinator-{name}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
