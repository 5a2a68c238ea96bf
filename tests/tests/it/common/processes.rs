//! The workspace's binaries as real processes, for what a test cannot do
//! in-process: kill -9, SIGSTOP, a wall clock shifted by libfaketime; and
//! nginx with the generated configuration. All under
//! [`backpack_tests::Process`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use backpack_tests::{Process, wait_until};

use super::{client, eventually};

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
    process: Option<Process>,
    dir: tempfile::TempDir,
}

impl NodeProcess {
    pub fn start(shift: &str) -> NodeProcess {
        let mut n = NodeProcess {
            port: backpack_tests::free_port(),
            process: None,
            dir: tempfile::tempdir().unwrap(),
        };
        n.launch(shift);
        n
    }

    /// A node on data that `fill` writes into its (empty) data directory
    /// first; waits up to `timeout` for its start-up scan.
    pub fn start_on(fill: impl FnOnce(&Path), timeout: Duration) -> NodeProcess {
        let mut n = NodeProcess {
            port: backpack_tests::free_port(),
            process: None,
            dir: tempfile::tempdir().unwrap(),
        };
        let data = n.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        fill(&data);
        n.launch_within("", timeout);
        n
    }

    fn launch(&mut self, shift: &str) {
        self.launch_within(shift, Duration::from_secs(10));
    }

    fn launch_within(&mut self, shift: &str, timeout: Duration) {
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
            wait_until(timeout, || {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            }),
            "backpack-node did not listen on {} within {timeout:?}",
            self.port
        );
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Its data directory (volumes).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
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
    _process: Process,
    _dir: tempfile::TempDir,
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
        let client = client();
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
            _process: process,
            _dir: dir,
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

/// Debian's nginx for a test that needs it: `None` (the test returns)
/// when it is not installed, except under `CI`, where that fails.
pub fn required_nginx() -> Option<&'static str> {
    let program = nginx();
    backpack_tests::require("nginx (Debian package nginx)", program.is_some())
        .then_some(program)
        .flatten()
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

/// What `backpack-coordinator-nginx-config <zk> <root> <args>` prints (it
/// must succeed).
pub fn nginx_config(zk_addr: &str, root: &str, args: &[&str]) -> String {
    let all: Vec<&str> = [zk_addr, root]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    backpack_tests::admin("nginx-config", &all)
}
