//! Real ZooKeeper and Redis servers for tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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
/// The server is the test process's own child (so its exit status is
/// always ours to read), watched by a small `sh` guard that kills it when
/// our end of the guard's stdin closes: servers held in statics (never
/// dropped) or left by a test process that died still stop when the test
/// process exits. Once the server is known to have ended, the guard is
/// told so and leaves its pid alone (it may be reused).
pub struct Process {
    child: Child,
    guard: Option<Child>,
    log: PathBuf,
    out: Option<PathBuf>,
    name: String,
    ended: Option<ExitStatus>,
}

/// `$1` is the server's pid; a line `done` disarms the guard, end of input
/// (the test process is gone, or dropped the server) fires it.
const GUARD: &str = r#"read line; [ "$line" = done ] || kill -9 "$1" 2>/dev/null"#;

impl Process {
    /// Whether the server still runs.
    pub fn alive(&mut self) -> bool {
        self.exit_status().is_none()
    }

    pub fn log_text(&self) -> String {
        read_text(&self.log)
    }

    /// What the server wrote to its standard output, when started with
    /// [`spawn_with_stdout`] (otherwise it is in the log).
    pub fn stdout_text(&self) -> String {
        self.out.as_deref().map(read_text).unwrap_or_default()
    }

    /// The server's pid; `None` once it has ended (the pid may be reused).
    pub fn pid(&self) -> Option<u32> {
        self.ended.is_none().then(|| self.child.id())
    }

    /// How the server ended, once it has; `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.ended.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.ended = Some(status);
            self.disarm();
        }
        self.ended
    }

    /// Tells the guard the server is gone, and waits for it.
    fn disarm(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            if let Some(mut stdin) = guard.stdin.take() {
                let _ = stdin.write_all(b"done\n");
            }
            let _ = guard.wait();
        }
    }
}

fn read_text(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.ended = Some(status);
            }
        }
        self.disarm();
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
pub fn spawn(name: &str, program: &str, args: &[String], dir: &Path) -> Process {
    let mut cmd = Command::new(program);
    cmd.args(args);
    spawn_command(name, &cmd, dir)
}

/// [`spawn`] for a prepared command: its program, arguments, environment
/// and working directory (its standard streams are the guard's and the
/// log's).
pub fn spawn_command(name: &str, cmd: &Command, dir: &Path) -> Process {
    launch(name, cmd, dir, false)
}

/// [`spawn`], with the standard output apart in `<dir>/<name>.out`
/// ([`Process::stdout_text`]) and only the standard error in the log: for
/// a test that checks what a program prints.
pub fn spawn_with_stdout(name: &str, program: &str, args: &[String], dir: &Path) -> Process {
    let mut cmd = Command::new(program);
    cmd.args(args);
    launch(name, &cmd, dir, true)
}

fn launch(name: &str, cmd: &Command, dir: &Path, stdout_apart: bool) -> Process {
    let create = |path: &Path| {
        std::fs::File::create(path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    let log = dir.join(format!("{name}.log"));
    let err = create(&log);
    let (out, stdout) = if stdout_apart {
        let path = dir.join(format!("{name}.out"));
        let file = create(&path);
        (Some(path), file)
    } else {
        let dup = err
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot dup log: {e}"));
        (None, dup)
    };
    let mut server = Command::new(cmd.get_program());
    server.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => server.env(key, value),
            None => server.env_remove(key),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        server.current_dir(d);
    }
    let child = server
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let guard = Command::new("sh")
        .args(["-c", GUARD, "sh", &child.id().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the guard of {name}: {e}"));
    Process {
        child,
        guard: Some(guard),
        log,
        out,
        name: name.to_string(),
        ended: None,
    }
}

impl Process {
    /// Sends a signal to the server (`STOP`, `CONT`, `KILL`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "kill -{sig} {pid} failed"
        );
    }
}

/// A real ZooKeeper server on a free loopback port.
pub struct ZkServer {
    proc: Process,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// How [`ZkServer::try_start`] runs ZooKeeper. The default is the tests'
/// (short ticks, a JVM that starts fast); [`ZkOptions::production`] is a
/// production server's settings, for benchmarks.
#[derive(Debug, Clone)]
pub struct ZkOptions {
    /// ZooKeeper's jar.
    pub jar: PathBuf,
    /// Where its data (transaction log, snapshots) goes, created if
    /// missing [default: in the server's temporary directory].
    pub data_dir: Option<PathBuf>,
    /// `zoo.cfg` lines besides the port, the address, the data directory
    /// and the limits every server here gets.
    pub settings: Vec<String>,
    /// The JVM's options.
    pub jvm: Vec<String>,
}

impl Default for ZkOptions {
    fn default() -> ZkOptions {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ZkOptions {
            jar: ZK_JAR.into(),
            data_dir: None,
            settings: strings(&[
                "tickTime=500",
                "minSessionTimeout=1000",
                "maxSessionTimeout=30000",
            ]),
            jvm: strings(&["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]),
        }
    }
}

impl ZkOptions {
    /// ZooKeeper's defaults (`tickTime=2000`, the transaction log
    /// fsync'd) and a JVM that compiles in full, as in production.
    pub fn production() -> ZkOptions {
        ZkOptions {
            settings: vec!["tickTime=2000".into()],
            jvm: vec!["-Xmx512m".into()],
            ..ZkOptions::default()
        }
    }
}

impl ZkServer {
    pub fn installed() -> bool {
        Path::new(ZK_JAR).exists() && java_installed()
    }

    /// Starts a server, or returns `None` (after [`require`]) when not installed.
    pub fn start() -> Option<ZkServer> {
        if !require("ZooKeeper (Debian package zookeeper)", Self::installed()) {
            return None;
        }
        Some(Self::try_start(&ZkOptions::default()).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts a server as `opts` say, once it answers `ruok`; an error
    /// when ZooKeeper is not installed or does not start (3 tries).
    pub fn try_start(opts: &ZkOptions) -> anyhow::Result<ZkServer> {
        anyhow::ensure!(
            opts.jar.exists() && java_installed(),
            "ZooKeeper ({}) or java is not installed: apt-get install -y zookeeper",
            opts.jar.display()
        );
        let dir = tempfile::tempdir()?;
        let data = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let cfg = dir.path().join("zoo.cfg");
            let _ = std::fs::create_dir_all(&data);
            let mut text = format!(
                "dataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=*\nmaxClientCnxns=0\n",
                data.display()
            );
            // After ours: in a properties file the last value of a key wins.
            text.extend(opts.settings.iter().map(|l| format!("{l}\n")));
            std::fs::write(&cfg, text).map_err(|e| anyhow::anyhow!("write zoo.cfg: {e}"))?;
            let mut args = opts.jvm.clone();
            args.extend([
                "-cp".to_string(),
                format!(
                    "{}:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-simple.jar",
                    opts.jar.display()
                ),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain".to_string(),
                cfg.display().to_string(),
            ]);
            let mut proc = spawn("zookeeper", "java", &args, dir.path());
            let up = wait_until(Duration::from_secs(30), || {
                proc.exit_status().is_some() || ruok(port)
            });
            if up && proc.exit_status().is_none() {
                return Ok(ZkServer {
                    proc,
                    port,
                    _dir: dir,
                });
            }
            log = proc.log_text();
            eprintln!("ZooKeeper did not start on port {port}; retrying:\n{log}");
        }
        anyhow::bail!("ZooKeeper did not start after 3 tries; its log:\n{log}")
    }

    /// The server's pid (see [`Process::pid`]).
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
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

fn java_installed() -> bool {
    Command::new("java").arg("-version").output().is_ok()
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
    program: PathBuf,
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
        Some(Self::try_start(Path::new("redis-server")).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts `program` (a `redis-server`) once it listens; an error when
    /// it cannot run or does not start (3 tries).
    pub fn try_start(program: &Path) -> anyhow::Result<RedisServer> {
        anyhow::ensure!(
            Command::new(program).arg("--version").output().is_ok(),
            "cannot run {}: apt-get install -y redis-server",
            program.display()
        );
        let mut server = RedisServer {
            proc: None,
            port: 0,
            dir: tempfile::tempdir()?,
            program: program.into(),
        };
        for _ in 0..3 {
            server.port = free_port();
            if server.launch() {
                return Ok(server);
            }
        }
        anyhow::bail!("redis-server did not start after 3 tries")
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
        let mut cmd = Command::new(&self.program);
        cmd.args(&args);
        let mut proc = spawn_command("redis", &cmd, self.dir.path());
        let port = self.port;
        let up = wait_until(Duration::from_secs(10), || {
            proc.exit_status().is_some() || port_open(port)
        });
        let alive = proc.exit_status().is_none();
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

    /// The server's pid (see [`Process::pid`]); `None` while killed.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref()?.pid()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exited(p: &mut Process) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(Duration::from_secs(10), || {
            status = p.exit_status();
            status.is_some()
        });
        status
    }

    #[test]
    fn a_prepared_command_runs_with_its_environment_and_reports_its_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo \"$GREETING\"; exit 3"])
            .env("GREETING", "hello");
        let mut p = spawn_command("greeter", &cmd, dir.path());
        assert_eq!(exited(&mut p).and_then(|s| s.code()), Some(3));
        assert_eq!(p.log_text(), "hello\n");
    }

    #[test]
    fn a_running_server_has_a_pid_and_no_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn("sleeper", "sleep", &["30".to_string()], dir.path());
        assert!(wait_until(Duration::from_secs(10), || p.pid().is_some()));
        let pid = p.pid().unwrap();
        // The server's pid, not the guard's (once it has exec'd: until
        // then the child still bears the test thread's name).
        let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert!(
            wait_until(Duration::from_secs(10), || comm().trim() == "sleep"),
            "{}",
            comm()
        );
        assert_eq!(p.exit_status(), None);
        p.signal("TERM");
        assert_eq!(
            exited(&mut p).and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            Some(15)
        );
        assert_eq!(p.pid(), None, "an ended server has no pid to signal");
        drop(p);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn the_guard_kills_the_server_when_the_test_process_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = spawn("sleeper", "sleep", &["30".to_string()], dir.path());
        let pid = p.pid().unwrap();
        // What the test process's death does: the guard's stdin closes.
        let mut guard = p.guard.take().unwrap();
        drop(guard.stdin.take());
        guard.wait().unwrap();
        assert_eq!(
            exited(&mut p).and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
            Some(9)
        );
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
