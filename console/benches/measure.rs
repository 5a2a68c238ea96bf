//! Measurements for issue 6's performance goals (a benchmark, not a test):
//! `scripts/measure-console.sh`, or
//! `cargo bench -p backpack-console --bench measure [large|idle]`
//!
//! - `large_cluster`: 1,000 shards and 3,000 servers in a real ZooKeeper:
//!   key-to-screen in process (update + render), key-to-screen of the real
//!   binary seen through tmux, its memory (RSS) and its CPU while it checks
//!   3,000 nodes' health.
//! - `idle_demo_cluster`: the README's cluster (6 real storage nodes, 3
//!   shards, a coordinator, a replicator): the console's CPU when idle.
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backpack_console::demo::{self, T0};
use backpack_console::event::Event;
use backpack_console::state::State;
use backpack_shared::model::{HostPort, ServersMap, Shard, ShardSize, ShardsMap};
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{RedisServer, ZkServer, admin, bin, free_port, wait_until};
use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const CONSOLE: &str = env!("CARGO_BIN_EXE_backpack-console");

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let n = v.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "n={n} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(v[n / 2]),
        ms(v[n * 9 / 10]),
        ms(v[(n * 99 / 100).min(n - 1)]),
        ms(v[n - 1])
    )
}

struct Tmux(String);

impl Tmux {
    fn start(cmd: &str, w: u16, h: u16) -> Tmux {
        let t = Tmux(format!("backpack-console-measure-{}", std::process::id()));
        let out = t.run(&[
            "new-session",
            "-d",
            "-s",
            "m",
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
            cmd,
        ]);
        assert!(out.status.success());
        t
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "m"]).stdout).into_owned()
    }
    fn pid(&self) -> u32 {
        let out = self.run(&["display-message", "-p", "-t", "m", "#{pane_pid}"]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// (RSS, peak RSS) in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// CPU seconds used by a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the command.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn cpu_percent(pid: u32, over: Duration) -> f64 {
    let c0 = cpu_secs(pid);
    let t0 = Instant::now();
    std::thread::sleep(over);
    (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0
}

async fn set(zk: &Zk, name: &str, data: Vec<u8>) {
    let path = zk.path(name);
    let p = path.clone();
    zk.call(&path, |c| async move { c.set_data(&p, &data, None).await })
        .await
        .unwrap();
}

fn large_cluster() {
    // 1. In process: update + render of a key press on a 200x50 screen.
    let mut s = State::new(demo::config(), T0);
    s.update(T0, Event::Resize(200, 50));
    let cluster = Arc::new(demo::large(1000, 3000));
    let t = Instant::now();
    s.update(T0, Event::Cluster(cluster.clone()));
    let first = t.elapsed();
    let mut term = Terminal::new(TestBackend::new(200, 50)).unwrap();
    let keys = [
        KeyCode::Char('j'),
        KeyCode::PageDown,
        KeyCode::Char('k'),
        KeyCode::Char('s'),
        KeyCode::Tab,
        KeyCode::Char('j'),
        KeyCode::PageDown,
        KeyCode::BackTab,
        KeyCode::End,
        KeyCode::Home,
    ];
    let mut times = vec![];
    for i in 0..500 {
        let t = Instant::now();
        s.press(T0, keys[i % keys.len()]);
        term.draw(|f| f.render_widget(&s, f.area())).unwrap();
        times.push(t.elapsed());
    }
    let mut updates = vec![];
    for i in 0..50u64 {
        let mut c = (*cluster).clone();
        c.generation = 100 + i;
        if let Some(d) = c.sizes.get_mut("5") {
            d.value = Some(ShardSize {
                capacity: 100 * demo::GIB,
                current: Some(i * 1000),
            });
        }
        let c = Arc::new(c);
        let t = Instant::now();
        s.update(T0 + i * 100, Event::Cluster(c));
        term.draw(|f| f.render_widget(&s, f.area())).unwrap();
        updates.push(t.elapsed());
    }
    println!("in process, 1000 shards / 3000 servers, 200x50:");
    println!("  first snapshot: {:.2} ms", first.as_secs_f64() * 1000.0);
    println!("  key -> rendered buffer: {}", percentiles(times));
    println!("  size change -> rendered buffer: {}", percentiles(updates));

    // 2. The real binary against a real ZooKeeper holding that cluster.
    let Some(zk_server) = ZkServer::start() else {
        return;
    };
    let root = "/measure";
    admin("init", &[&zk_server.addr(), root, "q", "127.0.0.1:1"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let zk = Zk::connect(ZkConfig::new(&zk_server.addr(), root))
            .await
            .unwrap();
        // Nodes on closed loopback ports: every health check is refused.
        let mut servers = ServersMap::new();
        for i in 1..=3000u16 {
            servers.insert(
                i.to_string(),
                HostPort {
                    host: "127.0.0.1".into(),
                    port: 20000 + i,
                },
            );
        }
        let mut shards = ShardsMap::new();
        for i in 1..=1000usize {
            shards.insert(
                i.to_string(),
                Shard {
                    read_only: i % 3 == 0,
                    nodes: vec![(2 * i - 1).to_string(), (2 * i).to_string()],
                },
            );
        }
        set(&zk, "servers-map", serde_json::to_vec(&servers).unwrap()).await;
        let sizes = futures::future::join_all((1..=1000u64).map(|i| {
            let zk = zk.clone();
            async move {
                let size = ShardSize {
                    capacity: 100 * demo::GIB,
                    current: Some(i * 7919 % 100 * demo::GIB),
                };
                zk.create_if_missing(
                    &format!("shard-size-{i}"),
                    &serde_json::to_vec(&size).unwrap(),
                )
                .await
                .unwrap();
            }
        }));
        sizes.await;
        set(&zk, "shards-map", serde_json::to_vec(&shards).unwrap()).await;
        zk.close();
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let t = Tmux::start(
        &format!(
            "exec {CONSOLE} {} {root} --log-file {}",
            zk_server.addr(),
            log.display()
        ),
        200,
        50,
    );
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || t
            .screen()
            .contains("shards 1000 (667 rw")),
        "{}",
        t.screen()
    );
    println!("real binary, 1000 shards / 3000 servers, 200x50:");
    println!(
        "  start to full screen: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let pid = t.pid();
    std::thread::sleep(Duration::from_secs(3));
    // Key to screen through tmux: press j, poll the screen for the move.
    let mut seen = vec![];
    for i in 0..60 {
        let before = t.screen();
        let t0 = Instant::now();
        t.run(&["send-keys", "-t", "m", if i % 2 == 0 { "j" } else { "k" }]);
        while t.screen() == before && t0.elapsed() < Duration::from_secs(2) {}
        seen.push(t0.elapsed());
    }
    println!(
        "  key -> screen seen through tmux (includes tmux's own delays): {}",
        percentiles(seen)
    );
    let cpu = cpu_percent(pid, Duration::from_secs(15));
    let (rss, peak) = memory(pid);
    println!("  memory: RSS {rss:.1} MiB, peak {peak:.1} MiB");
    println!("  CPU while checking 3000 nodes' health (all refused): {cpu:.1}%");
    t.run(&["send-keys", "-t", "m", "q"]);
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .map(|l| l.contains("stopped"))
            .unwrap_or(false)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    if let Some(line) = text.lines().find(|l| l.contains("key-to-screen")) {
        println!("  from the console's log (key read to frame drawn): {line}");
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idle_demo_cluster() {
    let (Some(zk_server), Some(redis)) = (ZkServer::start(), RedisServer::start()) else {
        return;
    };
    let zk = zk_server.addr();
    let root = "/demo";
    admin("init", &[&zk, root, "backpack-queue", &redis.addr()]);
    let dir = tempfile::tempdir().unwrap();
    let mut procs = vec![];
    let mut ports = vec![];
    for i in 1..=6 {
        let port = free_port();
        let data = dir.path().join(format!("node-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        procs.push(Proc(
            Command::new(bin("backpack-node"))
                .arg(&data)
                .arg("127.0.0.1")
                .arg(port.to_string())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        ));
        admin(
            "add-server",
            &[
                &zk,
                root,
                &i.to_string(),
                &format!("http://127.0.0.1:{port}"),
            ],
        );
        ports.push(port);
    }
    for (id, nodes) in [("1", "1,4"), ("2", "2,5"), ("3", "3,6")] {
        admin("add-shard", &[&zk, root, id, nodes, "100gb"]);
    }
    admin("enable-shard", &[&zk, root, "1"]);
    admin("enable-shard", &[&zk, root, "2"]);
    let cport = free_port();
    procs.push(Proc(
        Command::new(bin("backpack-coordinator"))
            .args([&zk, root, "127.0.0.1", &cport.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    procs.push(Proc(
        Command::new(bin("backpack-replicator"))
            .args([&zk, root, "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let log = dir.path().join("console.log");
    let t = Tmux::start(
        &format!("exec {CONSOLE} {zk} {root} --log-file {}", log.display()),
        100,
        30,
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = t.screen();
            s.contains("servers 6 (6 up)") && s.contains("coordinators 1")
        }),
        "{}",
        t.screen()
    );
    let pid = t.pid();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_percent(pid, Duration::from_secs(30));
    let (rss, peak) = memory(pid);
    println!("idle on the demo cluster (6 nodes, 3 shards, 1 coordinator, 1 replicator), 100x30:");
    println!("  CPU over 30 s: {cpu:.2}%");
    println!("  memory: RSS {rss:.1} MiB, peak {peak:.1} MiB");
    assert!(cpu < 5.0, "idle CPU {cpu:.2}%");
}

fn main() {
    // `cargo bench` passes `--bench`; any other word picks one measurement.
    let pick: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| pick.is_empty() || pick.iter().any(|p| name.starts_with(p.as_str()));
    if wants("large") {
        large_cluster();
    }
    if wants("idle") {
        idle_demo_cluster();
    }
}
