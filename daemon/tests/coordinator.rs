//! `backpack-coordinator` as a real process: the original's two ready
//! lines, a clean exit on SIGTERM, and one clear line (exit 1, no panic)
//! for each way it cannot start.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backpack_shared::model::paths;
use backpack_shared::zk::{Zk, ZkConfig};
use backpack_tests::{free_port, shared_zk, unique_root};

const BIN: &str = env!("CARGO_BIN_EXE_backpack-coordinator");

/// Runs the command, which must fail: exit 1, nothing on stdout, no panic.
fn fails(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    stderr
}

fn init_root(zk_addr: &str, root: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let zk = Zk::connect(ZkConfig::new(zk_addr, root)).await.unwrap();
        zk.create_root().await.unwrap();
        for n in [paths::SERVERS_MAP, paths::SHARDS_MAP] {
            zk.create_if_missing(n, b"{}").await.unwrap();
        }
        zk.create_if_missing(paths::QUEUE, br#"{"key":"q","servers":[]}"#)
            .await
            .unwrap();
        zk.close();
    });
}

#[test]
fn too_few_arguments_print_the_usage_line() {
    for args in [&[][..], &["127.0.0.1:2181", "/backpack", "127.0.0.1"][..]] {
        let e = fails(args);
        assert!(
            e.starts_with(
                "Usage: backpack-coordinator <zk_servers> </zk/root> <listen_host> <listen_port>"
            ),
            "{e}"
        );
    }
}

#[test]
fn cannot_start_says_why_in_one_line() {
    let port = free_port();
    let e = fails(&[
        &format!("127.0.0.1:{port}"),
        "/backpack",
        "127.0.0.1",
        "0",
        "--zk-connect-timeout",
        "1",
    ]);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!(
            "backpack-coordinator: cannot reach ZooKeeper at 127.0.0.1:{port}"
        )),
        "{e}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = fails(&[
        "127.0.0.1:2181",
        "/backpack",
        "127.0.0.1",
        &port.to_string(),
    ]);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with(&format!(
            "backpack-coordinator: cannot listen on 127.0.0.1:{port}"
        )),
        "{e}"
    );

    let Some(zk) = shared_zk() else { return };
    let root = unique_root("coord-cli-uninit");
    let e = fails(&[&zk.addr(), &root, "127.0.0.1", "0"]);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("is not initialized"), "{e}");
    assert!(e.contains("run backpack-coordinator-init first"), "{e}");
}

#[test]
fn prints_the_ready_lines_serves_and_stops_on_sigterm() {
    let Some(zk) = shared_zk() else { return };
    let root = unique_root("coord-cli");
    init_root(&zk.addr(), &root);
    let port = free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .args([&zk.addr(), &root, "127.0.0.1", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    for _ in 0..2 {
        lines.push(rx.recv_timeout(Duration::from_secs(20)).unwrap());
    }
    assert_eq!(
        lines,
        [
            "coordinator is ready!".to_string(),
            format!("Listening to http://127.0.0.1:{port}/")
        ]
    );

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("backpack-coordinator stopped"), "{stderr}");
}

/// The admin commands' spelling of the ZooKeeper timeout works here too
/// (one `ZkArgs` for every command).
#[test]
fn takes_the_old_zookeeper_timeout_spelling() {
    let port = free_port();
    let start = Instant::now();
    let e = fails(&[
        &format!("127.0.0.1:{port}"),
        "/backpack",
        "127.0.0.1",
        "0",
        "--zk-timeout",
        "1",
    ]);
    assert!(
        e.contains("cannot reach ZooKeeper") && e.contains("within 1s"),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}
