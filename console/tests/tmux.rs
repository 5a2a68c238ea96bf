//! The real binary in a real terminal (tmux) against a real ZooKeeper:
//! grow a cluster with keystrokes only, check the znodes, see a change made
//! with an admin command appear, quit and find the terminal restored.
//!
//! Needs tmux, ZooKeeper and Redis with redis-cli (skipped with a message
//! when missing, failing under CI) and the admin commands built by
//! `cargo build --workspace --bins` (.ci/run does).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{
    RedisServer, admin, free_port, require, shared_redis, shared_zk, spawn, unique_root, wait_until,
};

const CONSOLE: &str = env!("CARGO_BIN_EXE_backpack-console");

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str, w: u16, h: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("backpack-console-test-{}-{n}", std::process::id());
        let t = Tmux { socket };
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "console",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            cmd,
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Keep the pane after the program exits, to read what it left.
        t.run(&["set-option", "-t", "console", "remain-on-exit", "on"]);
        t
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout)
            .into_owned()
    }

    /// Types literal text.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "console", "-l", text]);
    }

    /// Sends named keys (Enter, Space, Escape, ...).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`; fails with the screen.
    fn wait_for(&self, text: &str) {
        let ok = wait_until(Duration::from_secs(10), || self.screen().contains(text));
        assert!(ok, "never saw {text:?} on screen:\n{}", self.screen());
    }

    fn format(&self, what: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "console", what]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- screen ---\n{}", self.screen());
        }
        self.run(&["kill-server"]);
    }
}

/// The console in tmux against `zk_addr` and `root`, with `env` set and
/// logging to `log`; `; echo` shows its exit status once it is gone.
fn console(env: &str, zk_addr: &str, root: &str, log: &Path, w: u16, h: u16) -> Tmux {
    let cmd = format!(
        "{env} {CONSOLE} {zk_addr} {root} --log-file {}; echo console exited with $?",
        log.display()
    );
    Tmux::start(cmd.trim_start(), w, h)
}

fn tmux_installed() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

fn znode(rt: &tokio::runtime::Runtime, zk: &Zk, name: &str) -> serde_json::Value {
    let (data, _) = rt.block_on(zk.get(name)).unwrap().unwrap();
    serde_json::from_slice(&data).unwrap()
}

#[test]
fn grow_a_cluster_with_keystrokes_only() {
    if !require("tmux", tmux_installed()) {
        return;
    }
    let (Some(zk_server), Some(redis)) = (shared_zk(), shared_redis()) else {
        return;
    };
    let zk_addr = zk_server.addr();
    let root = unique_root("console");
    admin("init", &[&zk_addr, &root, "backpack-queue", &redis.addr()]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let t = console("", &zk_addr, &root, &log, 120, 40);
    t.wait_for("● connected");
    t.wait_for("no shards yet");
    assert_eq!(
        t.format("#{alternate_on}"),
        "1",
        "draws on the alternate screen"
    );

    // Add a server: Servers view, a, type the URL (the id comes as 1).
    t.keys(&["2", "a"]);
    t.wait_for("Add server");
    t.type_text("http://127.0.0.1:10999");
    t.keys(&["Enter"]);
    t.wait_for("✓ Added http://127.0.0.1:10999 as 1");
    // And seen back from ZooKeeper (the header counts it): a form opened
    // before that would rightly ask "changed meanwhile?" at Enter.
    t.wait_for("servers 1 (");

    // Add a shard on it: Shards view, a, Space picks server 1, Enter.
    t.keys(&["1", "a"]);
    t.wait_for("Add shard");
    t.wait_for("(in no shard)");
    t.keys(&["Space"]);
    t.wait_for("picked 1");
    t.keys(&["Enter"]);
    t.wait_for("✓ Made shard 1 of size 100gb that consist of nodes 1");

    // Enable it: e asks first, y confirms.
    t.wait_for("0b / 100gb");
    t.keys(&["e"]);
    t.wait_for("Enable shard 1? It will take ~100% of new writes.");
    t.keys(&["y"]);
    t.wait_for("✓ Enabled shard 1 for writing");
    // Seen back from ZooKeeper before anything else changes it.
    t.wait_for("shards 1 (1 rw");

    // The znodes say the same.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let zk = rt
        .block_on(Zk::connect(ZkConfig::new(&zk_addr, &root)))
        .unwrap();
    assert_eq!(
        znode(&rt, &zk, "servers-map"),
        serde_json::json!({"1": {"host": "127.0.0.1", "port": "10999"}})
    );
    assert_eq!(
        znode(&rt, &zk, "shards-map"),
        serde_json::json!({"1": {"nodes": ["1"]}})
    );
    assert_eq!(
        znode(&rt, &zk, "shard-size-1"),
        serde_json::json!({"capacity": 107374182400u64, "current": 0})
    );

    // Changes made with the admin commands show up live.
    admin(
        "add-server",
        &[&zk_addr, &root, "2", "http://127.0.0.1:10998"],
    );
    admin("disable-shard", &[&zk_addr, &root, "1"]);
    let shard_row_ro = wait_until(Duration::from_secs(10), || {
        t.screen()
            .lines()
            .any(|l| l.trim_start_matches(['▶', ' ']).starts_with("1") && l.contains(" ro "))
    });
    assert!(shard_row_ro, "shard 1 not shown read-only:\n{}", t.screen());
    t.keys(&["2"]);
    t.wait_for("http://127.0.0.1:10998");
    t.keys(&["5"]);
    t.wait_for("server 2 added: http://127.0.0.1:10998");
    t.wait_for("shard 1 disabled (read-only)");

    // The command line, as the admin command is typed: :enable-shard 1.
    t.type_text(":enable-shard 1");
    t.wait_for(":enable-shard 1▏");
    t.keys(&["Enter"]);
    t.wait_for("Enable shard 1?");
    t.keys(&["y"]);
    t.wait_for("shards 1 (1 rw");
    assert_eq!(
        znode(&rt, &zk, "shards-map"),
        serde_json::json!({"1": {"nodes": ["1"]}}),
        "enabled again: no read_only"
    );

    // Check and repair: c asks first, y writes check-requests/1 for the
    // elected checker; the checker, its result (checks/1) and the request
    // taken show live.
    let shard_row = |t: &Tmux| {
        t.screen()
            .lines()
            .find(|l| l.trim_start_matches(['▶', ' ']).starts_with("1 "))
            .unwrap_or_default()
            .to_string()
    };
    t.keys(&["1"]);
    t.wait_for("no checker");
    assert!(shard_row(&t).contains("unchecked"), "{}", t.screen());
    t.keys(&["c"]);
    t.wait_for("Ask for a check of shard 1? (writes check-requests/1)");
    t.keys(&["y"]);
    t.wait_for("✓ check of shard 1 asked (check-requests/1)");
    assert_eq!(znode(&rt, &zk, "check-requests/1")["repair"], false);
    assert!(
        wait_until(Duration::from_secs(10), || shard_row(&t).ends_with("asked")),
        "{}",
        t.screen()
    );
    let check = serde_json::json!({
        "when_ms": backpack_shared::clock::now_ms() - 120_000, "files": 10, "bytes": 100,
        "missing": 2, "older": 1, "damaged": 0, "queued": 0, "by": "one:4121",
    });
    rt.block_on(async {
        zk.put("checker", b"one:4121").await.unwrap();
        zk.put("checks/1", check.to_string().as_bytes())
            .await
            .unwrap();
        zk.delete("check-requests/1").await.unwrap();
    });
    t.wait_for("checker one:4121");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let row = shard_row(&t);
            row.contains("3 missing") && row.ends_with("2m ago")
        }),
        "{}",
        t.screen()
    );
    t.keys(&["R"]);
    t.wait_for("The last check (2m ago) found 3 copies lacking");
    t.keys(&["y"]);
    t.wait_for("✓ repair of shard 1 asked (check-requests/1)");
    assert_eq!(znode(&rt, &zk, "check-requests/1")["repair"], true);

    // Replace server 1's node: R in the Servers view asks, reads the new
    // node's /stats (refused: nothing answers), then re-points the server
    // and asks for a repair of shard 1.
    rt.block_on(zk.delete("check-requests/1")).unwrap();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    t.keys(&["2", "g", "R"]);
    t.wait_for("Replace server");
    t.type_text(&nobody);
    t.keys(&["Enter"]);
    t.wait_for("Replace server 1's node? (writes servers-map, then check-requests/1)");
    t.keys(&["y"]);
    t.wait_for(&format!("✗ the new node at {nobody} cannot be reached"));
    assert_eq!(
        znode(&rt, &zk, "servers-map")["1"],
        serde_json::json!({"host": "127.0.0.1", "port": "10999"}),
        "unchanged"
    );
    let port = free_port();
    std::fs::create_dir(dir.path().join("node")).unwrap();
    let _node = spawn(
        "node",
        backpack_tests::bin("backpack-node").to_str().unwrap(),
        &[
            dir.path().join("node").display().to_string(),
            "127.0.0.1".into(),
            port.to_string(),
        ],
        dir.path(),
    );
    assert!(wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }));
    let url = format!("http://127.0.0.1:{port}");
    t.keys(&["R"]);
    t.wait_for("Replace server");
    t.type_text(&url);
    t.keys(&["Enter"]);
    t.wait_for("Replace server 1's node?");
    t.keys(&["y"]);
    t.wait_for("repair of shard 1 asked: the replicators fill the new node");
    assert_eq!(
        znode(&rt, &zk, "servers-map")["1"],
        serde_json::json!({"host": "127.0.0.1", "port": port.to_string()})
    );
    assert_eq!(znode(&rt, &zk, "check-requests/1")["repair"], true);

    // q quits, restoring the terminal.
    t.keys(&["q"]);
    t.wait_for("console exited with 0");
    assert_eq!(
        t.format("#{alternate_on}"),
        "0",
        "the alternate screen was left"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("key-to-screen"), "{log}");
    rt.block_on(async { zk.close() });
}

fn redis_cli_installed() -> bool {
    Command::new("redis-cli").arg("--version").output().is_ok()
}

/// Runs `redis-cli` against `redis`; the answer must be OK.
fn redis_cli(redis: &RedisServer, args: &[&str]) {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK",
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_queue_redis_that_can_lose_tasks_is_named_until_fixed() {
    if !require("tmux", tmux_installed())
        || !require(
            "redis-cli (Debian package redis-tools)",
            redis_cli_installed(),
        )
    {
        return;
    }
    let Some(zk_server) = shared_zk() else { return };
    // A Redis of its own: this test changes its settings.
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The fixture runs without appendonly; eviction is set here.
    redis_cli(
        &redis,
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    );
    let zk_addr = zk_server.addr();
    let root = unique_root("evicting");
    admin("init", &[&zk_addr, &root, "backpack-queue", &redis.addr()]);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    // NO_COLOR: the warnings must read as words. Wide enough that each
    // warning stays on one line.
    let t = console("NO_COLOR=1", &zk_addr, &root, &log, 140, 30);
    t.wait_for("● connected");
    t.keys(&["3"]);
    let addr = redis.addr();
    t.wait_for("up · evicts: allkeys-lru · no appendonly");
    t.wait_for(&format!(
        "✗ Redis {addr} evicts: allkeys-lru — queued copies can be lost; set maxmemory-policy noeviction"
    ));
    t.wait_for(&format!(
        "! Redis {addr} has no appendonly: a restart loses the queue; set appendonly yes"
    ));
    t.wait_for("queue 0 · evicting ·");

    // Fixed on the server, then r: the console reads the settings again.
    redis_cli(&redis, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    t.keys(&["r"]);
    let gone = wait_until(Duration::from_secs(10), || {
        !t.screen().contains("evicts: allkeys-lru")
    });
    assert!(gone, "the eviction warning stayed:\n{}", t.screen());
    t.wait_for(&format!("! Redis {addr} has no appendonly"));
    t.keys(&["5"]);
    t.wait_for(&format!(
        "Redis {addr} no longer evicts (maxmemory-policy noeviction)"
    ));

    t.keys(&["q"]);
    t.wait_for("console exited with 0");
}

#[test]
fn refuses_to_start_without_a_terminal() {
    let out = Command::new(CONSOLE)
        .args(["127.0.0.1:1", "/backpack"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a terminal"), "{err}");
    assert!(out.stdout.is_empty(), "nothing drawn");
}

#[test]
fn an_error_or_a_panic_restores_the_terminal() {
    if !require("tmux", tmux_installed()) {
        return;
    }
    let Some(zk_server) = shared_zk() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("c.log");
    // A panic while drawing: the hook restores the screen, then reports.
    let root = unique_root("panic");
    admin("init", &[&zk_server.addr(), &root, "q", "127.0.0.1:1"]);
    let t = console(
        "RUST_BACKTRACE=0 BACKPACK_CONSOLE_TEST_PANIC=1",
        &zk_server.addr(),
        &root,
        &log,
        100,
        20,
    );
    t.wait_for("console exited with 101");
    assert!(
        t.screen().contains("BACKPACK_CONSOLE_TEST_PANIC"),
        "{}",
        t.screen()
    );
    assert_eq!(t.format("#{alternate_on}"), "0");
    drop(t);
    // An error (nothing listens on port 1): a message on the normal screen.
    let t = console("", "127.0.0.1:1", "/backpack", &log, 100, 20);
    let ok = wait_until(Duration::from_secs(20), || {
        t.screen().contains("console exited with 1")
    });
    assert!(ok, "{}", t.screen());
    assert!(
        t.screen().contains("cannot reach ZooKeeper"),
        "{}",
        t.screen()
    );
    assert_eq!(t.format("#{alternate_on}"), "0");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("panic"), "the panic is in the log: {log}");
}
