//! The original README's walkthrough, played on two hosts: network
//! namespaces `one` and `two` joined by a veth pair, each with a hosts file
//! so the names resolve, the seed's ports, ZooKeeper as `one.local`, and the
//! seed's commands with only the install path and its two typos changed.
//! Runs the real binaries (built by `cargo build --workspace --bins`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use backpack_tests::{Process, bin, spawn, wait_until};

const ONE_IP: &str = "10.231.70.1";
const TWO_IP: &str = "10.231.70.2";

fn sh(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The two hosts; removed (with every process in them) on drop.
struct Hosts;

impl Hosts {
    fn create() -> Result<Hosts, String> {
        Hosts::remove();
        let hosts =
            format!("127.0.0.1 localhost\n{ONE_IP} one one.local\n{TWO_IP} two two.local\n");
        for ns in ["one", "two"] {
            let out = sh(&["ip", "netns", "add", ns]);
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts.
            std::fs::create_dir_all(format!("/etc/netns/{ns}")).map_err(|e| e.to_string())?;
            std::fs::write(format!("/etc/netns/{ns}/hosts"), &hosts).map_err(|e| e.to_string())?;
        }
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "ip", "link", "add", "bp-one", "type", "veth", "peer", "name", "bp-two",
            ],
            vec!["ip", "link", "set", "bp-one", "netns", "one"],
            vec!["ip", "link", "set", "bp-two", "netns", "two"],
            vec![
                "ip",
                "-n",
                "one",
                "addr",
                "add",
                "10.231.70.1/24",
                "dev",
                "bp-one",
            ],
            vec![
                "ip",
                "-n",
                "two",
                "addr",
                "add",
                "10.231.70.2/24",
                "dev",
                "bp-two",
            ],
            vec!["ip", "-n", "one", "link", "set", "bp-one", "up"],
            vec!["ip", "-n", "two", "link", "set", "bp-two", "up"],
            vec!["ip", "-n", "one", "link", "set", "lo", "up"],
            vec!["ip", "-n", "two", "link", "set", "lo", "up"],
        ];
        let hosts = Hosts;
        for step in steps {
            let out = sh(&step);
            if !out.status.success() {
                return Err(format!(
                    "{step:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(hosts)
    }

    fn remove() {
        for ns in ["one", "two"] {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        Hosts::remove();
    }
}

/// Runs a command on a host, like `[one] $ ...` in the seed.
fn on(host: &str, program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", host, program])
        .args(args)
        .output()
        .unwrap()
}

fn daemon(host: &str, name: &'static str, program: &str, args: &[&str], logs: &Path) -> Process {
    let mut all = vec![
        "netns".to_string(),
        "exec".into(),
        host.into(),
        program.into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    spawn(name, "ip", &all, logs)
}

fn port_open(host: &str, port: u16) -> bool {
    on(
        host,
        "bash",
        &["-c", &format!("exec 3<>/dev/tcp/{host}/{port}")],
    )
    .status
    .success()
}

#[test]
fn the_seed_walkthrough_on_two_hosts() {
    let is_root = sh(&["id", "-u"]).stdout == b"0\n";
    let have_ip = Command::new("ip").arg("-V").output().is_ok();
    if !(is_root && have_ip) {
        let why = "network namespaces need root and iproute2 (ip)";
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; CI must run as root with iproute2 installed"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let hosts =
        Hosts::create().unwrap_or_else(|e| panic!("cannot create the test hosts one and two: {e}"));
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path();

    // ZooKeeper on one.local:2181; Redis on one:13001 and two:13002.
    std::fs::create_dir_all(dir.join("zk")).unwrap();
    std::fs::write(
        dir.join("zoo.cfg"),
        format!(
            "tickTime=500\ndataDir={}\nclientPort=2181\nadmin.enableServer=false\n",
            dir.join("zk").display()
        ),
    )
    .unwrap();
    let cfg = dir.join("zoo.cfg").display().to_string();
    let _zk = daemon(
        "one",
        "zookeeper",
        "java",
        &[
            "-Xmx256m",
            "-cp",
            "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-api.jar",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            &cfg,
        ],
        dir,
    );
    let _redis =
        [("one", "redis-one", "13001"), ("two", "redis-two", "13002")].map(|(host, name, port)| {
            let args = [
                "--port",
                port,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ];
            daemon(host, name, "redis-server", &args, dir)
        });
    assert!(
        wait_until(Duration::from_secs(30), || port_open("one", 2181)),
        "ZooKeeper did not start"
    );

    // Six storage nodes.
    let node = bin("backpack-node").display().to_string();
    let mut nodes = Vec::new();
    for i in 1..=6u16 {
        let host = if i <= 3 { "one" } else { "two" };
        let data = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        let names = ["node-1", "node-2", "node-3", "node-4", "node-5", "node-6"];
        nodes.push(daemon(
            host,
            names[i as usize - 1],
            &node,
            &[&data.display().to_string(), host, &format!("{}", 10000 + i)],
            dir,
        ));
    }

    let admin = |cmd: &str, args: &[&str]| -> Output {
        let program = bin(&format!("backpack-coordinator-{cmd}"))
            .display()
            .to_string();
        let mut a = vec!["one.local:2181", "/backpack"];
        a.extend(args);
        on("one", &program, &a)
    };
    let ok = |cmd: &str, args: &[&str]| -> String {
        let out = admin(cmd, args);
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    assert_eq!(
        ok("init", &["backpack-queue", "one:13001,two:13002"]),
        "Servers map initialized\nShards map initialized\nQueue initialized\n"
    );
    let coordinator = bin("backpack-coordinator").display().to_string();
    let mut daemons = vec![
        daemon(
            "one",
            "coordinator-one",
            &coordinator,
            &["one.local:2181", "/backpack", "one", "12001"],
            dir,
        ),
        daemon(
            "two",
            "coordinator-two",
            &coordinator,
            &["one.local:2181", "/backpack", "two", "12002"],
            dir,
        ),
    ];
    for (id, url) in [
        ("1", "http://one:10001"),
        ("2", "http://one:10002"),
        ("3", "http://one:10003"),
        ("4", "http://two:10004"),
        ("5", "http://two:10005"),
        ("6", "http://two:10006"),
    ] {
        assert_eq!(
            ok("add-server", &[id, url]),
            format!("Added {url} as {id}\n")
        );
    }
    ok("add-shard", &["1", "1,4", "100gb"]);
    ok("add-shard", &["2", "2,5", "100gb"]);
    // The seed's typo as written is refused...
    let typo = admin("add-shard", &["1", "3,6", "100gb"]);
    assert_eq!(typo.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("shard 1 already exists on nodes 1,4"));
    // ...and the intended command works.
    assert_eq!(
        ok("add-shard", &["3", "3,6", "100gb"]),
        "Made shard 3 of size 100gb that consist of nodes 3,6\n"
    );
    assert_eq!(ok("enable-shard", &["1"]), "Enabled shard 1 for writing\n");

    let replicator = bin("backpack-replicator").display().to_string();
    daemons.push(daemon(
        "one",
        "replicator-one",
        &replicator,
        &["one.local:2181", "/backpack"],
        dir,
    ));
    daemons.push(daemon(
        "two",
        "replicator-two",
        &replicator,
        &["one.local:2181", "/backpack"],
        dir,
    ));

    for (host, port) in [
        ("one", 12001),
        ("two", 12002),
        ("one", 10001),
        ("two", 10004),
    ] {
        assert!(
            wait_until(Duration::from_secs(20), || port_open(host, port)),
            "{host}:{port} does not answer"
        );
    }
    std::fs::write(dir.join("hello.txt"), "hello, backpack!\n").unwrap();
    let hello = dir.join("hello.txt").display().to_string();
    // The coordinator answers 503 until it has read the cluster: retry briefly.
    let mut answer = String::new();
    let uploaded = wait_until(Duration::from_secs(10), || {
        let out = on(
            "one",
            "curl",
            &["-sS", "-X", "PUT", "-T", &hello, "http://two:12002/hi.txt"],
        );
        answer = String::from_utf8_lossy(&out.stdout).into_owned();
        answer.trim_end() == r#"{"shard_id":"1"}"#
    });
    assert!(uploaded, "upload answered {answer:?}");
    // Either node of shard 1 has it at once; after replication both do.
    let both = wait_until(Duration::from_secs(20), || {
        ["http://one:10001/hi.txt", "http://two:10004/hi.txt"]
            .iter()
            .all(|u| on("two", "curl", &["-sf", u]).stdout == b"hello, backpack!\n")
    });
    for d in &mut daemons {
        assert!(d.alive(), "a daemon died: {}", d.log_text());
    }
    assert!(both, "the file did not reach both nodes of shard 1");
    let stats = ok("print-stats", &[]);
    assert!(stats.starts_with("Shards:\n1 [1, 4]: "), "{stats}");
    drop(daemons);
    drop(nodes);
    drop(hosts);
}
