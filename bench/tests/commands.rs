//! The benchmark commands run end to end on a small load (their own
//! Redis, ZooKeeper, nodes and coordinator), so the benchmarks the figures
//! in bench/README.md come from keep working. The daemons are another
//! package's binaries: `cargo build --workspace --bins` first (`.ci/run`
//! does), [`bin`] finds them.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use backpack_tests::{RedisServer, ZkServer, bin, require};

fn servers_installed() -> bool {
    require(
        "ZooKeeper (Debian package zookeeper)",
        ZkServer::installed(),
    ) && require(
        "Redis (Debian package redis-server)",
        RedisServer::installed(),
    )
}

#[test]
fn coordinator_benchmark_runs_on_a_small_load() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backpack-bench-coordinator"))
        .args(["--files", "40", "--file-size", "2000", "--concurrency", "4"])
        .args(["--rounds", "1", "--latency-files", "10"])
        .arg("--node-bin")
        .arg(bin("backpack-node"))
        .arg("--coordinator-bin")
        .arg(bin("backpack-coordinator"))
        .arg("--dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "throughput at concurrency 4: node ",
        "median latency at concurrency 1: node ",
        "coordinator memory: VmRSS max ",
        "coordinator CPU: ",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn replicator_benchmark_runs_on_a_small_load() {
    if !servers_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backpack-bench-replicator"))
        .args([
            "--files",
            "60",
            "--file-size",
            "3000",
            "--rounds",
            "2",
            "--slices",
            "3",
            "--others",
            "1,4",
            "--other-files",
            "20",
            "--warmup-files",
            "0",
            "--latency-rate",
            "40",
            "--latency-secs",
            "0.5",
        ])
        .arg("--node-bin")
        .arg(bin("backpack-node"))
        .arg("--coordinator-bin")
        .arg(bin("backpack-coordinator"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Both sides of every comparison, with a ratio, at every concurrency.
    for c in ["c=16", "c=1 ", "c=4 "] {
        let plain = format!("plain copy {c}");
        let repl = format!("replicator {c}");
        assert!(stdout.contains(&plain), "no {plain:?} line:\n{stdout}");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&repl) && l.contains("ratio")),
            "no {repl:?} line with its ratio:\n{stdout}"
        );
    }
    assert!(stdout.contains("median of the rounds' ratios"), "{stdout}");
    assert!(
        stdout.contains("latency at") && stdout.contains("through backpack-coordinator"),
        "{stdout}"
    );
    // The benchmark cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn node_benchmarks_run_on_a_small_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_backpack-bench-node"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(!stdout.contains("NaN"), "{stdout}");
        stdout
    };
    let index = run(&["index", "--files", "20000"]);
    assert!(index.contains("20000 files indexed in "), "{index}");
    let d = dir.path().to_str().unwrap();
    let open = run(&["open", "--dir", d, "--files", "300", "--file-size", "1000"]);
    assert!(open.contains("Store::open: "), "{open}");
    let nginx = "/usr/sbin/nginx";
    if require(
        "nginx (Debian package nginx)",
        std::path::Path::new(nginx).exists(),
    ) {
        let node = bin("backpack-node");
        let http = run(&[
            "http",
            "--nginx",
            nginx,
            "--node-bin",
            node.to_str().unwrap(),
            "--dir",
            d,
            "--files",
            "50",
            "--file-size",
            "2000",
            "--gets",
            "100",
            "--concurrency",
            "4",
            "--rounds",
            "1",
        ]);
        for want in [
            "| 2000 B | 4 | GET | ",
            "| 2000 B | 4 | PUT | ",
            " node PUT ",
            " node GET ",
        ] {
            assert!(http.contains(want), "no {want:?} in:\n{http}");
        }
    }
    // Every run cleans up after itself (nginx and its workers stopped
    // before their directory went).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
