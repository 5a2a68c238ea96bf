//! The admin commands, run as real binaries against a real ZooKeeper: the
//! seed walkthrough, the original's output formats, and every bad input.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{shared_zk, unique_root};
use serde_json::{Value, json};

fn run(cmd: &str, args: &[&str]) -> Output {
    let path = match cmd {
        "init" => env!("CARGO_BIN_EXE_backpack-coordinator-init"),
        "add-server" => env!("CARGO_BIN_EXE_backpack-coordinator-add-server"),
        "remove-server" => env!("CARGO_BIN_EXE_backpack-coordinator-remove-server"),
        "add-shard" => env!("CARGO_BIN_EXE_backpack-coordinator-add-shard"),
        "enable-shard" => env!("CARGO_BIN_EXE_backpack-coordinator-enable-shard"),
        "disable-shard" => env!("CARGO_BIN_EXE_backpack-coordinator-disable-shard"),
        "dump-shards" => env!("CARGO_BIN_EXE_backpack-coordinator-dump-shards"),
        "print-stats" => env!("CARGO_BIN_EXE_backpack-coordinator-print-stats"),
        "set-queue" => env!("CARGO_BIN_EXE_backpack-coordinator-set-queue"),
        "replicator-push" => env!("CARGO_BIN_EXE_backpack-replicator-push"),
        "nginx-config" => env!("CARGO_BIN_EXE_backpack-coordinator-nginx-config"),
        other => panic!("unknown command {other}"),
    };
    Command::new(path)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail: exit 1, one clear line, no panic.
fn fails(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{cmd} {args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{cmd} printed on failure: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn znode(zk: &Zk, name: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        zk.get(name)
            .await
            .unwrap()
            .map(|(d, _)| serde_json::from_slice(&d).unwrap())
    })
    .unwrap_or(Value::Null)
}

fn connect(addr: &str, root: &str) -> (tokio::runtime::Runtime, Zk) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let zk = rt.block_on(Zk::connect(ZkConfig::new(addr, root))).unwrap();
    (rt, zk)
}

fn seed(z: &str, root: &str) {
    let out = ok("init", &[z, root, "backpack-queue", "one:13001,two:13002"]);
    assert_eq!(
        out,
        "Servers map initialized\nShards map initialized\nQueue initialized\n"
    );
    for (id, url) in [
        ("1", "http://one:10001"),
        ("2", "http://one:10002"),
        ("3", "http://one:10003"),
        ("4", "http://two:10004"),
        ("5", "http://two:10005"),
        ("6", "http://two:10006"),
    ] {
        assert_eq!(
            ok("add-server", &[z, root, id, url]),
            format!("Added {url} as {id}\n")
        );
    }
    assert_eq!(
        ok("add-shard", &[z, root, "1", "1,4", "100gb"]),
        "Made shard 1 of size 100gb that consist of nodes 1,4\n"
    );
    assert_eq!(
        ok("add-shard", &[z, root, "2", "2,5", "100gb"]),
        "Made shard 2 of size 100gb that consist of nodes 2,5\n"
    );
    assert_eq!(
        ok("add-shard", &[z, root, "3", "3,6", "100gb"]),
        "Made shard 3 of size 100gb that consist of nodes 3,6\n"
    );
    assert_eq!(
        ok("enable-shard", &[z, root, "1"]),
        "Enabled shard 1 for writing\n"
    );
}

#[test]
fn seed_walkthrough_writes_the_originals_znodes() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    // A root two levels deep: init creates the parents.
    let root = format!("{}/backpack", unique_root("seed"));
    seed(z, &root);
    let (_rt, zk) = connect(z, &root);
    assert_eq!(
        znode(&zk, "servers-map"),
        json!({"1":{"host":"one","port":"10001"},"2":{"host":"one","port":"10002"},"3":{"host":"one","port":"10003"},"4":{"host":"two","port":"10004"},"5":{"host":"two","port":"10005"},"6":{"host":"two","port":"10006"}})
    );
    assert_eq!(
        znode(&zk, "shards-map"),
        json!({"1":{"nodes":["1","4"]},"2":{"read_only":true,"nodes":["2","5"]},"3":{"read_only":true,"nodes":["3","6"]}})
    );
    for id in 1..=3 {
        assert_eq!(
            znode(&zk, &format!("shard-size-{id}")),
            json!({"capacity":107374182400u64,"current":0})
        );
    }
    assert_eq!(
        znode(&zk, "queue"),
        json!({"key":"backpack-queue","servers":[{"host":"one","port":"13001"},{"host":"two","port":"13002"}]})
    );

    // init again changes nothing and says so.
    let again = ok("init", &[z, &root, "other-key", "x:1"]);
    assert_eq!(
        again,
        "Servers map already initialized\nShards map already initialized\nQueue already initialized\n"
    );
    assert_eq!(znode(&zk, "queue")["key"], "backpack-queue");

    // The seed's typo as written is refused, and shards-map is unchanged.
    let before = znode(&zk, "shards-map");
    let err = fails("add-shard", &[z, &root, "1", "3,6", "100gb"]);
    assert_eq!(
        err,
        "error: shard 1 already exists on nodes 1,4; pick another id, or pass --replace to re-point it to 3,6 (files on its old nodes are then no longer found)\n"
    );
    assert_eq!(znode(&zk, "shards-map"), before);

    assert_eq!(
        ok("print-stats", &[z, &root]),
        "Shards:\n1 [1, 4]: 0b / 100gb (0%) rw\n2 [2, 5]: 0b / 100gb (0%) r\n3 [3, 6]: 0b / 100gb (0%) r\nOverall: 0b / 300gb (0%)\n"
    );
    let dump: Value = serde_json::from_str(&ok("dump-shards", &[z, &root])).unwrap();
    assert_eq!(
        dump["1"],
        json!({"enabled": true, "nodes": {"1": {"host":"one","port":"10001"}, "4": {"host":"two","port":"10004"}}})
    );
    assert_eq!(dump["3"]["enabled"], json!(false));
    assert!(
        ok("dump-shards", &[z, &root]).starts_with("{\n    \"1\": {\n        \"enabled\": true,")
    );

    assert_eq!(
        ok("disable-shard", &[z, &root, "1"]),
        "Shard 1 is read-only now\n"
    );
    assert_eq!(
        znode(&zk, "shards-map")["1"],
        json!({"read_only": true, "nodes": ["1","4"]})
    );
    assert_eq!(
        ok("set-queue", &[z, &root, "q2", "127.0.0.1:6390"]),
        "Queue info updated!\n"
    );
    assert_eq!(
        znode(&zk, "queue"),
        json!({"key":"q2","servers":[{"host":"127.0.0.1","port":"6390"}]})
    );
    zk.close();
}

#[test]
fn reads_a_cluster_written_by_the_original() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    let root = unique_root("orig");
    ok("init", &[z, &root, "backpack-queue", "one:13001"]);
    let (rt, zk) = connect(z, &root);
    rt.block_on(async {
        let set = |name: &'static str, v: &'static str| {
            let zk = zk.clone();
            async move {
                let path = zk.path(name);
                if zk.get(name).await.unwrap().is_some() {
                    zk.call(&path, |c| {
                        let p = path.clone();
                        async move { c.set_data(&p, v.as_bytes(), None).await }
                    })
                    .await
                    .unwrap();
                } else {
                    zk.create_if_missing(name, v.as_bytes()).await.unwrap();
                }
            }
        };
        set(
            "servers-map",
            r#"{"1":{"host":"one","port":"10001"},"3":{"host":"one","port":10003}}"#,
        )
        .await;
        set(
            "shards-map",
            r#"{"1":{"nodes":["1","3"]},"2":{"read_only":true,"nodes":["1"]}}"#,
        )
        .await;
        set(
            "shard-size-1",
            r#"{"capacity":107374182400,"current":41339060224}"#,
        )
        .await;
        set("shard-size-2", r#"{"capacity":1610612736,"current":null}"#).await;
    });
    let out = run("print-stats", &[z, &root]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "Shards:\n1 [1, 3]: 38.5gb / 100gb (39%) rw\n2 [1]: 0b / 1.5gb (0%) r\nOverall: 38.5gb / 101.5gb (38%)\n"
    );
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("\"current\": null")
    );
    let dump: Value = serde_json::from_str(&ok("dump-shards", &[z, &root])).unwrap();
    assert_eq!(
        dump["1"]["nodes"]["3"],
        json!({"host":"one","port":"10003"})
    );
    // Our write of a map the original wrote changes only the entry it is
    // about, like the original's JSON.parse/stringify: entry 3 keeps its
    // numeric port (both readers take it), entry 4 is written the
    // original's way.
    ok("add-server", &[z, &root, "4", "http://two:10004"]);
    assert_eq!(
        znode(&zk, "servers-map")["3"],
        json!({"host":"one","port":10003})
    );
    assert_eq!(
        znode(&zk, "servers-map")["4"],
        json!({"host":"two","port":"10004"})
    );
    zk.close();
}

#[test]
fn bad_input_gets_one_clear_line_and_writes_nothing() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    let root = unique_root("bad");
    let none = unique_root("uninit");

    // Too few arguments: the original's usage line, exit 1.
    let out = run("add-shard", &[z, &root]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr).unwrap().starts_with(
        "Usage: backpack-coordinator-add-shard <zk_servers> </zk/root> <id> <node1,node2,node3,..> <size (ex: 100gb)>\n"
    ));
    let out = run("init", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("Usage: backpack-coordinator-init ")
    );
    for cmd in [
        "init",
        "add-server",
        "add-shard",
        "enable-shard",
        "disable-shard",
        "dump-shards",
        "print-stats",
        "set-queue",
        "replicator-push",
    ] {
        let out = run(cmd, &["--help"]);
        assert_eq!(out.status.code(), Some(0), "{cmd} --help");
        assert!(
            String::from_utf8(out.stdout).unwrap().contains("Usage:"),
            "{cmd} --help"
        );
    }

    // An uninitialized root is refused by every command but init, naming init.
    for (cmd, args) in [
        ("add-server", vec!["1", "http://one:1"]),
        ("add-shard", vec!["1", "1", "1gb"]),
        ("enable-shard", vec!["1"]),
        ("disable-shard", vec!["1"]),
        ("dump-shards", vec![]),
        ("print-stats", vec![]),
        ("nginx-config", vec![]),
        ("set-queue", vec!["k", "one:1"]),
        ("replicator-push", vec!["one:1", "k", "1", "2", "/a"]),
    ] {
        let mut a = vec![z.as_str(), none.as_str()];
        a.extend(args);
        let err = fails(cmd, &a);
        assert!(
            err.contains("is not initialized")
                && err.contains("run backpack-coordinator-init first"),
            "{cmd}: {err}"
        );
    }

    ok("init", &[z, &root, "q", "127.0.0.1:1"]);
    ok("add-server", &[z, &root, "1", "http://one:10001"]);
    let (_rt, zk) = connect(z, &root);
    let before = (znode(&zk, "servers-map"), znode(&zk, "shards-map"));

    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "add-server",
            vec!["2", "one:10002"],
            "does not start with http://",
        ),
        ("add-server", vec!["2", "http://one"], "the port is missing"),
        (
            "add-server",
            vec!["2", "http://one:99999"],
            "the port is not a number",
        ),
        (
            "add-server",
            vec!["2", "http://one:1/x"],
            "a node URL has no path",
        ),
        (
            "add-server",
            vec!["a b", "http://one:1"],
            "invalid server id",
        ),
        (
            "add-server",
            vec!["1", "http://one:10009"],
            "server 1 already exists as http://one:10001",
        ),
        (
            "add-shard",
            vec!["1", "1,9", "100gb"],
            "node 9 is not in the servers map",
        ),
        ("add-shard", vec!["1", "1", "100 parsecs"], "invalid size"),
        // Not clap's "to pass '-5gb' as a value" tip and usage: one line.
        (
            "add-shard",
            vec!["7", "1", "-5gb"],
            "invalid size \"-5gb\": it is negative",
        ),
        (
            "add-shard",
            vec!["1", "1", "0gb"],
            "capacity must be above 0",
        ),
        ("add-shard", vec!["1", ",", "1gb"], "at least one node"),
        ("add-shard", vec!["1", "1,1", "1gb"], "listed twice"),
        ("enable-shard", vec!["7"], "shard 7 does not exist"),
        ("disable-shard", vec!["7"], "shard 7 does not exist"),
        ("set-queue", vec!["k", "nohost"], "the port is missing"),
        ("set-queue", vec!["", "h:1"], "queue key is empty"),
        (
            "replicator-push",
            vec!["127.0.0.1:1", "k", "1", "2", "no-slash"],
            "does not start with /",
        ),
        (
            "replicator-push",
            vec!["127.0.0.1:1", "k", "1", "2", "/a"],
            "could not write to any of the 1 queue Redis servers",
        ),
    ];
    for (cmd, args, expected) in cases {
        let mut a = vec![z.as_str(), root.as_str()];
        a.extend(args.iter().copied());
        let err = fails(cmd, &a);
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{cmd} {args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{cmd} {args:?}: {err}");
    }
    assert_eq!(
        (znode(&zk, "servers-map"), znode(&zk, "shards-map")),
        before
    );

    // Bad ZooKeeper addresses and roots, and an unreachable ZooKeeper.
    let err = fails("print-stats", &["nonsense", &root]);
    assert!(err.contains("invalid ZooKeeper server list"), "{err}");
    let err = fails("print-stats", &[z, "relative"]);
    assert!(err.contains("invalid ZooKeeper root"), "{err}");
    let dead = format!("127.0.0.1:{}", backpack_tests::free_port());
    let start = std::time::Instant::now();
    let err = fails("enable-shard", &[&dead, &root, "1", "--zk-timeout", "1"]);
    assert!(
        err.contains("cannot reach ZooKeeper") && err.contains("check the first argument"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    zk.close();
}

/// Every command takes the same ZooKeeper flags
/// (`backpack_shared::cli::ZkArgs`): `--zk-connect-timeout`, and the admin
/// commands' old spelling `--zk-timeout`.
#[test]
fn zookeeper_timeout_flag_new_and_old_spelling() {
    let dead = format!("127.0.0.1:{}", backpack_tests::free_port());
    for flag in ["--zk-connect-timeout", "--zk-timeout"] {
        let start = std::time::Instant::now();
        let err = fails("print-stats", &[&dead, "/backpack", flag, "1"]);
        assert!(
            err.contains("cannot reach ZooKeeper") && err.contains("within 1s"),
            "{err}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}

/// Writes `data` to a znode under `root` as zkCli would (no checks).
fn set_raw(zk: &Zk, name: &str, data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_, version) = zk.get(name).await.unwrap().unwrap();
        let path = zk.path(name);
        let (p, data) = (path.clone(), data.to_vec());
        zk.call(&path, |c| async move {
            c.set_data(&p, &data, Some(version)).await
        })
        .await
        .unwrap();
    });
}

/// One invalid servers-map entry (a port that is no number) no longer
/// blocks the admin commands: others work and leave it untouched, and
/// add-server --replace repairs it.
#[test]
fn an_invalid_map_entry_is_kept_and_repaired_with_replace() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    let root = unique_root("invalid-entry");
    ok("init", &[z, &root, "q", "127.0.0.1:1"]);
    ok("add-server", &[z, &root, "1", "http://one:10001"]);
    let (_rt, zk) = connect(z, &root);
    set_raw(
        &zk,
        "servers-map",
        br#"{"1":{"host":"one","port":"10001"},"9":{"host":"nine","port":"x"}}"#,
    );
    ok("add-server", &[z, &root, "2", "http://one:10002"]);
    ok("add-shard", &[z, &root, "1", "1,2", "1gb"]);
    // Commands that read the maps leave the entry out and say so.
    for cmd in ["dump-shards", "print-stats"] {
        let out = run(cmd, &[z, &root]);
        assert!(out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("entry \"9\" skipped"), "{cmd}: {err}");
    }
    assert_eq!(
        znode(&zk, "servers-map")["9"],
        json!({"host":"nine","port":"x"})
    );
    let err = fails("add-server", &[z, &root, "9", "http://nine:10009"]);
    assert_eq!(
        err,
        "error: server 9's entry in servers-map is invalid (port must be a number from 1 to 65535); pass --replace to overwrite it\n"
    );
    let err = fails("add-shard", &[z, &root, "2", "9", "1gb"]);
    assert!(err.contains("add-server --replace 9"), "{err}");
    assert_eq!(
        ok(
            "add-server",
            &[z, &root, "9", "http://nine:10009", "--replace"]
        ),
        "Added http://nine:10009 as 9\n"
    );
    assert_eq!(
        znode(&zk, "servers-map")["9"],
        json!({"host":"nine","port":"10009"})
    );
    // Or removed: refused while a shard uses the server, else gone.
    let err = fails("remove-server", &[z, &root, "2"]);
    assert!(err.contains("node of shard(s) 1"), "{err}");
    assert_eq!(
        ok("remove-server", &[z, &root, "9"]),
        "Removed server 9
"
    );
    assert!(znode(&zk, "servers-map").get("9").is_none());
    assert_eq!(
        ok("remove-server", &[z, &root, "9"]),
        "Server 9 is not in servers-map
"
    );
    zk.close();
}

/// disable-shard appends `read_only` to the shard's keys, as the original
/// (`map[id].read_only = true`); a new shard has it first.
#[test]
fn disable_shard_writes_read_only_after_nodes() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    let root = unique_root("disable-order");
    ok("init", &[z, &root, "q", "127.0.0.1:1"]);
    ok("add-server", &[z, &root, "1", "http://one:10001"]);
    ok("add-shard", &[z, &root, "1", "1", "1gb"]);
    let (rt, zk) = connect(z, &root);
    let raw =
        |zk: &Zk| String::from_utf8(rt.block_on(zk.get("shards-map")).unwrap().unwrap().0).unwrap();
    assert_eq!(raw(&zk), r#"{"1":{"read_only":true,"nodes":["1"]}}"#);
    ok("enable-shard", &[z, &root, "1"]);
    ok("disable-shard", &[z, &root, "1"]);
    assert_eq!(raw(&zk), r#"{"1":{"nodes":["1"],"read_only":true}}"#);
    zk.close();
}

/// A shards map past ZooKeeper's request limit fails at once with the size
/// and the limit, and leaves the znode as it was (it used to retry 50
/// lost writes for 24 s and blame conflicts).
#[test]
fn a_map_too_big_for_zookeeper_fails_at_once_with_the_size() {
    let Some(server) = shared_zk() else { return };
    let z = &server.addr();
    let root = unique_root("too-big");
    ok("init", &[z, &root, "q", "127.0.0.1:1"]);
    ok("add-server", &[z, &root, "1", "http://one:10001"]);
    let (_rt, zk) = connect(z, &root);
    // Just under the limit: 1,040,000 bytes or so of shards.
    let mut map = String::from("{");
    let mut i = 100_000u64;
    while map.len() < 1_040_000 {
        map += &format!(r#""{i}":{{"nodes":["1"]}},"#);
        i += 1;
    }
    map.pop();
    map.push('}');
    set_raw(&zk, "shards-map", map.as_bytes());
    let before = znode(&zk, "shards-map");
    let start = std::time::Instant::now();
    // A long node list pushes it over.
    let nodes: Vec<String> = (0..2000).map(|n| format!("node-{n}")).collect();
    let mut servers = String::from(r#"{"1":{"host":"one","port":"10001"}"#);
    for n in &nodes {
        servers += &format!(r#","{n}":{{"host":"h","port":"1"}}"#);
    }
    servers.push('}');
    set_raw(&zk, "servers-map", servers.as_bytes());
    let err = fails("add-shard", &[z, &root, "x", &nodes.join(","), "1gb"]);
    assert!(
        err.starts_with("error: the write of ")
            && err.contains("over ZooKeeper's limit of 1048575 bytes per request (jute.maxbuffer")
            && err.ends_with("nothing was written\n"),
        "{err}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(znode(&zk, "shards-map"), before);
    assert_eq!(znode(&zk, "shard-size-x"), Value::Null);
    zk.close();
}
