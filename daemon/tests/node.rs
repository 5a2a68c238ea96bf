//! Integration tests of `backpack-node`: the real server in-process on
//! 127.0.0.1:0, plus the real binary for crash (kill -9) and CLI tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use backpack_daemon::node::{self, NodeConfig};
use backpack_tests::{Process, free_port, spawn, wait_until};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A node running in-process.
struct Node {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), node::NodeError>>,
}

impl Node {
    async fn start(config: NodeConfig) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node::run(listener, config, shutdown.clone()));
        let node = Node {
            addr,
            shutdown,
            task,
        };
        wait_ready(addr).await;
        node
    }

    async fn in_dir(dir: &Path) -> Node {
        Node::start(NodeConfig::new(dir)).await
    }

    fn url(&self, name: &str) -> String {
        format!("http://{}{}", self.addr, name)
    }

    /// `/stats`, asked through `c`: on its kept-alive connection, after
    /// the node finished its earlier requests there (a GET is counted once
    /// its answer is sent).
    async fn stats(&self, c: &reqwest::Client) -> serde_json::Value {
        let r = c.get(self.url("/stats")).send().await.unwrap();
        r.json().await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = raw(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if matches!(r, Ok(ref r) if r.status == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "node at {addr} not ready: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|s| s.as_str())
    }

    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["error"].as_str().unwrap().to_owned()
    }
}

/// Sends bytes exactly as given (no client-side normalisation of the
/// target) and reads the response to the end of the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    raw_with(addr, request, false).await
}

async fn raw_with(
    addr: SocketAddr,
    request: &[u8],
    shutdown_write: bool,
) -> std::io::Result<RawResponse> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    if shutdown_write {
        s.shutdown().await?;
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no response head in {buf:?}")))?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(RawResponse {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}

fn put_req(target: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "PUT {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn get_req(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    // Cheap deterministic bytes, different per seed.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn volumes(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bpk"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn put_get_head_stats_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let c = client();

    let body = data(1, 100_000);
    let r = c
        .put(node.url("/photos/a.jpg"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let put_time: u64 = r.headers()[node::TIME_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    let r = c.get(node.url("/photos/a.jpg")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100000");
    assert_eq!(
        r.headers()[node::TIME_HEADER].to_str().unwrap(),
        put_time.to_string()
    );
    assert_eq!(r.bytes().await.unwrap(), body);

    let r = raw(node.addr, &get_req("HEAD", "/photos/a.jpg"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(
        r.header(node::TIME_HEADER),
        Some(put_time.to_string().as_str())
    );
    assert!(r.body.is_empty());

    // Empty file.
    // Clients omit Content-Length for an empty body unless told; the node
    // insists on it (411), as the original did.
    let r = c
        .put(node.url("/empty"))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 411);
    let r = c
        .put(node.url("/empty"))
        .header("content-length", 0)
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.get(node.url("/empty")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());

    // Overwrite points the name at the new copy.
    let r = c
        .put(node.url("/photos/a.jpg"))
        .body("v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        c.get(node.url("/photos/a.jpg"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v2"
    );

    // A large (streamed) file.
    let big = data(2, 3 * 1024 * 1024 + 17);
    let r = c
        .put(node.url("/big"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.get(node.url("/big")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert!(r.bytes().await.unwrap() == big);

    let stats = node.stats(&c).await;
    assert_eq!(stats["puts"]["count"], 4);
    assert_eq!(stats["puts"]["bytes"], 100_000 + 2 + big.len() as u64);
    assert_eq!(stats["gets"]["count"], 4);
    assert!(stats["gets"]["avg"].as_f64().unwrap() > 0.0);
    assert!(stats["puts"]["avg"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["files"], 3);
    assert_eq!(stats["bytes_stored"], 2 + big.len() as u64);
    assert_eq!(stats["volumes"], 1);
    assert!(stats["free_disk_bytes"].as_u64().unwrap() > 0);
    node.stop().await;
}

#[tokio::test]
async fn every_status_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.max_body = 1000;
    config.body_timeout = Duration::from_millis(300);
    let node = Node::start(config).await;
    let a = node.addr;

    let r = raw(a, &put_req("/ok", b"hi", "")).await.unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(raw(a, &get_req("GET", "/ok")).await.unwrap().status, 200);

    let r = raw(a, &get_req("GET", "/missing")).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/missing"), "{}", r.error());
    assert_eq!(
        raw(a, &get_req("HEAD", "/missing")).await.unwrap().status,
        404
    );

    // 411: no Content-Length (chunked).
    let r = raw(
        a,
        b"PUT /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 411);
    assert!(r.error().contains("Content-Length"), "{}", r.error());

    // 400: the body ends (client closes its side) before Content-Length.
    let r = raw_with(
        a,
        b"PUT /short HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("3 of the 10 bytes"), "{}", r.error());
    assert_eq!(raw(a, &get_req("GET", "/short")).await.unwrap().status, 404);

    // 408: the body stalls.
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(b"PUT /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));

    // 413: over --max-body.
    let r = raw(a, &put_req("/big", &[0u8; 1001], "")).await.unwrap();
    assert_eq!(r.status, 413);
    assert!(r.error().contains("1000"), "{}", r.error());
    // Also one that hyper could not even frame.
    let r = raw(
        a,
        b"PUT /huge HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.error().contains("--max-body"), "{}", r.error());

    // 414: name over the limit.
    let long = format!("/{}", "n".repeat(node::MAX_NAME_LEN));
    let r = raw(a, &put_req(&long, b"x", "")).await.unwrap();
    assert_eq!(r.status, 414);

    // 400: the daemons' endpoints and names that cannot be copied as
    // they are (the same rules as the coordinator's).
    for name in backpack_shared::model::name::ENDPOINTS {
        let r = raw(a, &put_req(name, b"x", "")).await.unwrap();
        assert_eq!(r.status, 400, "{name}");
        assert!(r.error().contains("endpoint"), "{}", r.error());
    }
    for (name, says) in [
        ("/a/../b", ". or .. segment"),
        ("/a%zz", "%25"),
        ("/x?\"q\"", "'\"' at byte 3"),
        ("/caf\u{e9}", "0xC3 at byte 4"),
    ] {
        let r = raw(a, &put_req(name, b"x", "")).await.unwrap();
        assert_eq!(r.status, 400, "{name}");
        assert!(r.error().contains(says), "{name}: {}", r.error());
        assert_eq!(
            raw(a, &get_req("GET", name)).await.unwrap().status,
            404,
            "{name}"
        );
    }

    // 400: a bad X-Backpack-Time.
    let r = raw(a, &put_req("/t", b"x", "X-Backpack-Time: yesterday\r\n"))
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("X-Backpack-Time"), "{}", r.error());

    // 405: other methods.
    for m in ["POST", "DELETE", "PATCH", "OPTIONS"] {
        let r = raw(a, &get_req(m, "/ok")).await.unwrap();
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, PUT"));
    }
    node.stop().await;
}

#[tokio::test]
async fn names_are_taken_exactly_as_received() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let long = format!("/{}", "%C3%A4".repeat(2048)); // 12,289 bytes
    let names = [
        "/a/b/c.jpg".to_string(),
        "/a?x=1&y=2".into(),
        "/a?x=1&y=3".into(),
        "/a?".into(),
        "/a".into(),
        "/a%20b".into(),
        "/a%2fb".into(),
        "/a%2Fb".into(),
        "/%E6%97%A5%E6%9C%AC.jpg".into(),
        "/\"json\":{\"a\":[1]}".into(),
        "/x?q='a'\\b{c}|d^e`f".into(),
        long.clone(),
    ];
    // What a replicator could not copy as it is never gets in.
    for name in [
        "/a//b",
        "/a/./b",
        "/a/../b",
        "/日本/ü.jpg",
        "/stats/",
        "/stats?x",
        "/a%2f..%2fb",
    ] {
        let r = raw(node.addr, &put_req(name, b"x", "")).await.unwrap();
        assert_eq!(r.status, 400, "{name}");
        assert!(r.error().contains("file name"), "{name}: {}", r.error());
    }
    for (i, name) in names.iter().enumerate() {
        let r = raw(
            node.addr,
            &put_req(name, format!("file {i}").as_bytes(), ""),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status,
            201,
            "{name}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let check = |node: &Node| {
        let addr = node.addr;
        let names = names.clone();
        async move {
            for (i, name) in names.iter().enumerate() {
                let r = raw(addr, &get_req("GET", name)).await.unwrap();
                assert_eq!(r.status, 200, "{name}");
                assert_eq!(r.body, format!("file {i}").as_bytes(), "{name}");
            }
        }
    };
    check(&node).await;
    assert_eq!(
        raw(node.addr, &get_req("GET", "/b")).await.unwrap().status,
        404
    );
    assert_eq!(
        raw(node.addr, &get_req("GET", "/a%2FB"))
            .await
            .unwrap()
            .status,
        404
    );
    node.stop().await;
    // And the same after a restart.
    let node = Node::in_dir(dir.path()).await;
    check(&node).await;
    node.stop().await;
}

#[tokio::test]
async fn restart_recovers_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.volume_size = 2 << 20; // several volumes
    let node = Node::start(config.clone()).await;
    let c = client();
    let mut files = Vec::new();
    for i in 0..120u64 {
        let len = match i % 4 {
            0 => 0,
            1 => 10,
            2 => 50_000,
            _ => 150_000,
        };
        files.push((format!("/r/{i}?v=1"), data(i, len)));
    }
    files.push(("/r/large".into(), data(999, 2_500_000)));
    futures::future::join_all(files.iter().map(|(n, d)| {
        let c = c.clone();
        let url = node.url(n);
        let d = d.clone();
        async move {
            let len = d.len();
            let r = c
                .put(url)
                .header("content-length", len)
                .body(d)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    }))
    .await;
    node.stop().await;
    assert!(volumes(dir.path()).len() > 2);

    let node = Node::start(config).await;
    for (n, d) in &files {
        let r = c.get(node.url(n)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{n}");
        assert!(r.bytes().await.unwrap() == *d, "{n}");
    }
    let stats = node.stats(&c).await;
    assert_eq!(stats["files"], files.len());
    node.stop().await;
}

/// Writes `n` files one after the other and returns the volume length
/// after each, so a test can cut inside a chosen record.
async fn write_sequence(dir: &Path, n: u64) -> Vec<u64> {
    let node = Node::in_dir(dir).await;
    let c = client();
    let mut ends = Vec::new();
    for i in 0..n {
        let r = c
            .put(node.url(&format!("/s/{i}")))
            .body(data(i, 1000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ends.push(std::fs::metadata(&volumes(dir)[0]).unwrap().len());
    }
    node.stop().await;
    ends
}

async fn expect_files(node: &Node, present: std::ops::Range<u64>, absent: std::ops::Range<u64>) {
    let c = client();
    for i in present {
        let r = c.get(node.url(&format!("/s/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "/s/{i}");
        assert!(r.bytes().await.unwrap() == data(i, 1000), "/s/{i}");
    }
    for i in absent {
        let r = c.get(node.url(&format!("/s/{i}"))).send().await.unwrap();
        assert_eq!(r.status(), 404, "/s/{i}");
    }
}

#[tokio::test]
async fn truncated_tail_recovers_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_sequence(dir.path(), 10).await;
    let vol = volumes(dir.path())[0].clone();
    // Cut the last record in the middle of its data, as a crash would.
    let cut = ends[8] + 600;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&vol)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let node = Node::in_dir(dir.path()).await;
    expect_files(&node, 0..9, 9..10).await;
    assert_eq!(
        std::fs::metadata(&vol).unwrap().len(),
        ends[8],
        "torn tail not cut"
    );
    // New writes after recovery land after the cut and survive a restart.
    let c = client();
    let r = c
        .put(node.url("/s/9"))
        .body(data(9, 1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    node.stop().await;
    let node = Node::in_dir(dir.path()).await;
    expect_files(&node, 0..10, 0..0).await;
    node.stop().await;

    // A torn header: only a few bytes of the last record made it.
    let ends = std::fs::metadata(&vol).unwrap().len();
    let mut bytes = std::fs::read(&vol).unwrap();
    bytes.extend_from_slice(b"BKPK\x01\x01");
    std::fs::write(&vol, &bytes).unwrap();
    let node = Node::in_dir(dir.path()).await;
    expect_files(&node, 0..10, 0..0).await;
    node.stop().await;
    assert_eq!(std::fs::metadata(&vol).unwrap().len(), ends);
}

#[tokio::test]
async fn corrupt_tail_recovers_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let ends = write_sequence(dir.path(), 10).await;
    let vol = volumes(dir.path())[0].clone();
    // Flip a byte inside the last record's data: full length, bad checksum.
    let mut bytes = std::fs::read(&vol).unwrap();
    bytes[ends[8] as usize + 500] ^= 0x55;
    // And append zeros, as a crash after a file extension can leave.
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&vol, &bytes).unwrap();
    let node = Node::in_dir(dir.path()).await;
    expect_files(&node, 0..9, 9..10).await;
    node.stop().await;
    assert_eq!(std::fs::metadata(&vol).unwrap().len(), ends[8]);
}

#[tokio::test]
async fn backpack_time_keeps_the_newer_copy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let c = client();
    let put = |body: &'static str, time: Option<u64>| {
        let mut req = c.put(node.url("/t")).body(body);
        if let Some(t) = time {
            req = req.header(node::TIME_HEADER, t);
        }
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 201);
            r.headers()[node::TIME_HEADER]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    let get = || async {
        let r = c.get(node.url("/t")).send().await.unwrap();
        let t: u64 = r.headers()[node::TIME_HEADER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (r.text().await.unwrap(), t)
    };
    let now = backpack_daemon::node::store::now_ms();
    assert_eq!(put("v200", Some(now + 200_000)).await, now + 200_000);
    // A late replication of an older upload: accepted, but the newer stays.
    assert_eq!(put("v100", Some(now + 100_000)).await, now + 200_000);
    assert_eq!(get().await, ("v200".into(), now + 200_000));
    // Same time: the larger content hash wins, whichever came first.
    let hash = |s: &str| backpack_shared::model::content_hash(s.as_bytes());
    let (low, high) = if hash("v200") < hash("v200b") {
        ("v200", "v200b")
    } else {
        ("v200b", "v200")
    };
    put(high, Some(now + 200_000)).await;
    put(low, Some(now + 200_000)).await;
    assert_eq!(get().await, (high.into(), now + 200_000));
    let r = c.get(node.url("/t")).send().await.unwrap();
    assert_eq!(
        r.headers()["x-backpack-hash"].to_str().unwrap(),
        format!("{:016x}", hash(high))
    );
    // After: the version exceeds the newest copy on other nodes.
    let after = now + 250_000;
    let r = c
        .put(node.url("/t"))
        .header("X-Backpack-After", after)
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()[node::TIME_HEADER].to_str().unwrap(),
        (after + 1).to_string()
    );
    assert_eq!(get().await, ("after".into(), after + 1));
    let r = c
        .put(node.url("/t"))
        .header("X-Backpack-After", "soon")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("X-Backpack-After"));
    put("v300", Some(now + 300_000)).await;
    assert_eq!(get().await, ("v300".into(), now + 300_000));
    // No header: the new copy wins even though the clock is "behind".
    let t = put("plain", None).await;
    assert!(t >= now + 300_000);
    assert_eq!(get().await.0, "plain");
    node.stop().await;
    // The same decision after a restart.
    let node2 = Node::in_dir(dir.path()).await;
    let r = c.get(node2.url("/t")).send().await.unwrap();
    assert_eq!(
        r.headers()[node::TIME_HEADER].to_str().unwrap(),
        t.to_string()
    );
    assert_eq!(r.text().await.unwrap(), "plain");
    node2.stop().await;
}

#[tokio::test]
async fn concurrent_puts_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let c = client();
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let c = c.clone();
            let url = node.url(&format!("/c/{i}"));
            tokio::spawn(async move {
                let r = c.put(url).body(data(i, 20_000)).send().await.unwrap();
                assert_eq!(r.status(), 201);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..64u64 {
        let r = c.get(node.url(&format!("/c/{i}"))).send().await.unwrap();
        assert!(r.bytes().await.unwrap() == data(i, 20_000));
    }
    node.stop().await;
}

// ---- the real binary -------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_backpack-node");

/// The real binary under the fixtures' kill-on-drop guard.
struct NodeProc {
    process: Process,
    _logs: tempfile::TempDir,
}

impl NodeProc {
    fn signal(&self, sig: &str) {
        self.process.signal(sig);
    }

    /// Waits for the node to end; its exit status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(Duration::from_secs(30), || {
            status = self.process.exit_status();
            status.is_some()
        });
        status.expect("backpack-node did not exit")
    }
}

async fn spawn_node(dir: &Path) -> (NodeProc, SocketAddr) {
    let port = free_port();
    let logs = tempfile::tempdir().unwrap();
    let args = [
        dir.display().to_string(),
        "127.0.0.1".to_string(),
        port.to_string(),
    ];
    let process = spawn("backpack-node", BIN, &args, logs.path());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;
    (
        NodeProc {
            process,
            _logs: logs,
        },
        addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_no_acknowledged_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proc, addr) = spawn_node(dir.path()).await;
    let c = client();
    let acked: Arc<Mutex<Vec<(String, u64, usize)>>> = Arc::default();
    let stop = CancellationToken::new();
    let workers: Vec<_> = (0..32u64)
        .map(|w| {
            let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    if stop.is_cancelled() {
                        break;
                    }
                    let seed = w * 1_000_000 + i;
                    let len = [10, 3_000, 60_000, 250_000][(seed % 4) as usize];
                    let name = format!("/k/{w}/{i}");
                    let r = c
                        .put(format!("http://{addr}{name}"))
                        .body(data(seed, len))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 201 => acked.lock().unwrap().push((name, seed, len)),
                        _ => break, // the node died under us
                    }
                }
            })
        })
        .collect();
    // Kill once enough uploads were acknowledged, while more are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proc.signal("KILL");
    proc.wait();
    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} uploads acknowledged",
        acked.len()
    );

    let (_proc, addr) = spawn_node(dir.path()).await;
    for (name, seed, len) in &acked {
        let r = c.get(format!("http://{addr}{name}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name} was acknowledged but is lost");
        assert!(
            r.bytes().await.unwrap() == data(*seed, *len),
            "{name} differs"
        );
    }
}

fn run_bin(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clear_errors_for_a_bad_data_dir_or_a_taken_port() {
    let check = |args: &[&str], expected: &str| {
        let (code, stderr) = run_bin(args);
        assert_ne!(code, 0, "{args:?}");
        assert!(
            stderr.lines().any(|l| l.contains(expected)),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    check(
        &[missing.to_str().unwrap(), "127.0.0.1", "0"],
        "does not exist; create it",
    );
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    check(
        &[file.to_str().unwrap(), "127.0.0.1", "0"],
        "is not a directory",
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    check(
        &[dir.path().to_str().unwrap(), "127.0.0.1", &port],
        "cannot listen on 127.0.0.1:",
    );
    check(
        &[dir.path().to_str().unwrap(), "127.0.0.1", "notaport"],
        "invalid value",
    );
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut proc, addr) = spawn_node(dir.path()).await;
    let r = raw(addr, &put_req("/x", b"hello", "")).await.unwrap();
    assert_eq!(r.status, 201);
    proc.signal("TERM");
    let status = proc.wait();
    assert!(status.success(), "{status:?}");
    let (_proc, addr) = spawn_node(dir.path()).await;
    assert_eq!(
        raw(addr, &get_req("GET", "/x")).await.unwrap().body,
        b"hello"
    );
}

#[tokio::test]
async fn keep_alive_pipelining_and_expect_continue() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    // Expect: 100-continue gets its interim answer before the body is sent.
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 25];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    // The body, then two more requests in the same write (pipelined).
    s.write_all(b"helloGET /e HTTP/1.1\r\nHost: x\r\n\r\nGET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 201 Created\r\n"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
    assert_eq!(text.matches("hello").count(), 2, "{text}");
    node.stop().await;
}

#[tokio::test]
async fn damage_in_the_middle_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let body = data(7, 50_000);
    for name in ["/victim", "/after"] {
        let r = raw(node.addr, &put_req(name, &body, "")).await.unwrap();
        assert_eq!(r.status, 201);
    }
    node.stop().await;
    // Rot a data byte of the first record, as a failing disk might.
    let vol = volumes(dir.path())[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
    use std::os::unix::fs::FileExt;
    let at = 32 + "/victim".len() as u64 + 1000;
    f.write_all_at(&[body[1000] ^ 0xff], at).unwrap();
    drop(f);
    let node = Node::in_dir(dir.path()).await;
    assert_eq!(
        raw(node.addr, &get_req("GET", "/victim"))
            .await
            .unwrap()
            .status,
        404
    );
    let r = raw(node.addr, &get_req("GET", "/after")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    node.stop().await;
}

#[tokio::test]
async fn times_far_ahead_are_refused_so_no_copy_can_freeze_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let c = client();
    let now = backpack_daemon::node::store::now_ms();
    for (header, value) in [
        ("X-Backpack-After", u64::MAX),
        ("X-Backpack-After", now + 25 * 3600 * 1000),
        ("X-Backpack-Time", u64::MAX),
    ] {
        let r = c
            .put(node.url("/frozen"))
            .header(header, value)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{header}: {value}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(header) && text.contains("24 h ahead"),
            "{text}"
        );
    }
    // Nothing was stored; the next plain upload is, with a sane version.
    assert_eq!(
        c.get(node.url("/frozen")).send().await.unwrap().status(),
        404
    );
    let r = c.put(node.url("/frozen")).body("ok").send().await.unwrap();
    assert_eq!(r.status(), 201);
    // A copy 10 minutes ahead (a peer's clock) is still taken.
    let r = c
        .put(node.url("/ahead"))
        .header(node::TIME_HEADER, now + 600_000)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    node.stop().await;
}

/// An upload whose client closed its side of the connection by the time
/// the body is complete is not stored (`still_there`): the coordinator
/// that gave up on this node stored the file elsewhere.
#[tokio::test]
async fn an_upload_whose_client_has_gone_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    // The whole body, then the client's FIN.
    let r = raw_with(node.addr, &put_req("/gone", b"hello", ""), true)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("closed the connection"), "{}", r.error());
    let r = raw(node.addr, &get_req("GET", "/gone")).await.unwrap();
    assert_eq!(r.status, 404);
    let stats = node.stats(&client()).await;
    assert_eq!(stats["abandoned_uploads"], 1, "{stats}");
    node.stop().await;
}

fn range_req(target: &str, range: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nRange: {range}\r\n{extra}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn single_ranges_answer_206_on_small_and_streamed_files() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    // One served from memory, one streamed in chunks (over 1 MiB).
    for (name, len) in [("/small", 10_000usize), ("/large", 3 << 20)] {
        let body = data(len as u64, len);
        assert_eq!(
            raw(node.addr, &put_req(name, &body, ""))
                .await
                .unwrap()
                .status,
            201
        );
        let whole = raw(node.addr, &get_req("GET", name)).await.unwrap();
        assert_eq!(whole.status, 200);
        assert_eq!(whole.header("accept-ranges"), Some("bytes"));
        let etag = whole.header("etag").unwrap().to_owned();
        let n = len as u64;
        for (range, first, last) in [
            ("bytes=0-0".to_string(), 0, 0),
            ("bytes=100-4099".to_string(), 100, 4099),
            (format!("bytes={}-", n - 10), n - 10, n - 1),
            ("bytes=-7".to_string(), n - 7, n - 1),
            (format!("bytes=5-{}", n + 100), 5, n - 1),
            // A resumed download, from past the first chunk.
            (format!("bytes={}-", n / 2 + 3), n / 2 + 3, n - 1),
        ] {
            let r = raw(node.addr, &range_req(name, &range, "")).await.unwrap();
            assert_eq!(r.status, 206, "{name} {range}");
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {first}-{last}/{n}").as_str()),
                "{name} {range}"
            );
            assert!(
                r.body == body[first as usize..=last as usize],
                "{name} {range}: {} bytes",
                r.body.len()
            );
        }
        // Past the end: 416 with the length, and the JSON error.
        let r = raw(node.addr, &range_req(name, &format!("bytes={n}-"), ""))
            .await
            .unwrap();
        assert_eq!(r.status, 416);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{n}").as_str())
        );
        assert!(r.error().contains("outside the file"), "{}", r.error());
        // Several ranges, or an If-Range of another version: the whole file.
        let r = raw(node.addr, &range_req(name, "bytes=0-1,5-6", ""))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (200, len));
        let other = "If-Range: \"1-0000000000000000\"\r\n";
        let r = raw(node.addr, &range_req(name, "bytes=0-1", other))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (200, len));
        let same = format!("If-Range: {etag}\r\n");
        let r = raw(node.addr, &range_req(name, "bytes=0-1", &same))
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (206, 2));
    }
    node.stop().await;
}

#[tokio::test]
async fn damage_at_the_end_of_a_streamed_file_cuts_the_answer_short() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let body = data(9, 3 << 20);
    assert_eq!(
        raw(node.addr, &put_req("/big", &body, ""))
            .await
            .unwrap()
            .status,
        201
    );
    // Rot the last data byte on disk while the node runs (the start-up
    // scan would have caught it otherwise).
    let vol = volumes(dir.path())[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
    use std::os::unix::fs::FileExt;
    let at = 32 + "/big".len() as u64 + body.len() as u64 - 1;
    f.write_all_at(&[body[body.len() - 1] ^ 0xff], at).unwrap();
    f.sync_all().unwrap();
    drop(f);
    for req in [get_req("GET", "/big"), range_req("/big", "bytes=-100", "")] {
        // The checksum is checked at the end, before the last piece goes:
        // never a complete answer with a rotten byte in it.
        let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
        s.write_all(&req).await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(got.len() - head_end < len, "a short body for {head}");
    }
    node.stop().await;
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed_after_the_head_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.head_timeout = Duration::from_secs(1);
    let node = Node::start(config).await;
    // A head trickled a byte every 200 ms: cut, not kept for ever.
    let mut slow = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest).await;
        rest
    };
    let rest = tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .expect("the slow head is cut");
    assert!(rest.is_empty(), "no answer to a head never finished");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // An idle kept-alive connection is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got)).await;
    assert!(closed.is_ok(), "idle connection closed");
    assert!(got.starts_with(b"HTTP/1.1 200"));
    node.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_readers_under_the_floor_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.max_connections = 4;
    config.send_rule = backpack_daemon::send_floor::SendRule {
        min_rate: 256 * 1024,
        grace: Duration::from_secs(1),
    };
    let node = Node::start(config).await;
    let body = data(3, 32 << 20);
    assert_eq!(
        raw(node.addr, &put_req("/big", &body, ""))
            .await
            .unwrap()
            .status,
        201
    );
    // A reader that takes the head and stops, on a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(node.addr).await.unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    // Three more idle connections reach the cap of 4; a fifth is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(node.addr).await.unwrap());
    }
    let refused = raw(node.addr, &get_req("GET", "/health")).await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        refused.error().contains("--max-connections"),
        "{}",
        refused.error()
    );
    drop(held);
    // The stalled reader is cut after its grace; then others are served.
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c.get(node.url("/stats")).send().await
            && r.status() == 200
        {
            let v: serde_json::Value = r.json().await.unwrap();
            if v["slow_readers_cut"] == 1 {
                assert!(v["connections_refused"].as_u64().unwrap() >= 1);
                break;
            }
        }
        assert!(Instant::now() < deadline, "the stalled reader is cut");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest).await;
    assert!(n + rest.len() < body.len(), "cut short");
    let r = raw(node.addr, &get_req("GET", "/big")).await.unwrap();
    assert!(r.body == body);
    node.stop().await;
}

#[tokio::test]
async fn sigterm_stops_a_node_whose_stderr_is_a_broken_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg(dir.path())
        .args(["127.0.0.1", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader of its log goes away (`| head -1` that ended, a broken
    // journald socket): every log line now fails to write.
    drop(child.stderr.take());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;
    let r = raw(addr, &put_req("/x", b"hello", "")).await.unwrap();
    assert_eq!(r.status, 201);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exited = wait_until(Duration::from_secs(15), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "the node still runs 15 s after SIGTERM");
}

/// One file's line of `GET //files`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Listed {
    key: String,
    name: String,
    size: u64,
    time: u64,
    hash: String,
}

/// `GET //files` with this query: the files, and the count of the end
/// line (which must be last). Panics on a listing cut short.
async fn list(node: &Node, query: &str) -> Vec<Listed> {
    let r = client()
        .get(node.url(&format!("//files{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let end: serde_json::Value = serde_json::from_str(lines.pop().expect("no end line")).unwrap();
    assert_eq!(end["end"], true, "last line: {end}");
    let files: Vec<Listed> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(end["files"], files.len(), "{query}");
    files
}

fn key_hex(name: &str) -> String {
    format!("{:016x}", backpack_shared::model::name_key(name))
}

/// The listing is every file with its version, sorted by key, and two
/// ranges split anywhere make the whole; names with odd bytes come back
/// exactly as stored.
#[tokio::test]
async fn listing_by_key_ranges_is_the_whole_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    let mut names: Vec<String> = (0..300).map(|i| format!("/list/{i}.jpg")).collect();
    names.extend(
        [
            "/odd/a%20b.jpg",
            "/odd/c:d:e",
            "/odd/x?q=1&r=%2F%22",
            "/odd/%C3%A9t%C3%A9",
            "/odd/back\\slash\"quote",
        ]
        .map(String::from),
    );
    let mut put = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let body = data(i as u64, 10 + i);
        let r = raw(node.addr, &put_req(name, &body, "")).await.unwrap();
        assert_eq!(
            r.status,
            201,
            "{name}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        let version = (
            r.header("x-backpack-time").unwrap().parse::<u64>().unwrap(),
            r.header("x-backpack-hash").unwrap().to_owned(),
        );
        put.insert(name.clone(), (body.len() as u64, version));
    }

    let all = list(&node, "").await;
    assert_eq!(all.len(), names.len());
    for f in &all {
        let (size, (time, hash)) = &put[&f.name];
        assert_eq!(
            (f.size, f.time, &f.hash),
            (*size, *time, hash),
            "{}",
            f.name
        );
        assert_eq!(f.key, key_hex(&f.name));
    }
    assert!(
        all.windows(2).all(|w| w[0].key < w[1].key),
        "not sorted by key"
    );
    assert_eq!(list(&node, "?from=0000000000000000").await, all);

    // Split at a file's key (from inclusive, to exclusive) and elsewhere.
    for cut in [all[all.len() / 3].key.clone(), "8000000000000000".into()] {
        let low = list(&node, &format!("?to={cut}")).await;
        let high = list(&node, &format!("?from={cut}")).await;
        assert!(low.iter().all(|f| f.key < cut) && high.iter().all(|f| f.key >= cut));
        assert_eq!([low, high].concat(), all, "cut at {cut}");
    }
    let one = &all[7];
    let next = format!("{:016x}", u64::from_str_radix(&one.key, 16).unwrap() + 1);
    let only = list(&node, &format!("?from={}&to={next}", one.key)).await;
    assert_eq!(only, vec![one.clone()]);
    assert_eq!(
        list(&node, &format!("?from={0}&to={0}", one.key)).await,
        vec![]
    );

    // A listed name reads back: it is the stored name, byte for byte.
    for f in all.iter().filter(|f| f.name.starts_with("/odd/")) {
        let r = raw(node.addr, &get_req("GET", &f.name)).await.unwrap();
        assert_eq!(r.status, 200, "{}", f.name);
    }
    node.stop().await;
}

#[tokio::test]
async fn listing_refuses_bad_parameters_and_other_double_slash_paths() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::in_dir(dir.path()).await;
    for (target, status, says) in [
        ("//nope", 404, "//files?from="),
        ("//files/more", 404, "no endpoint"),
        ("//files?from=xyz", 400, "16 lowercase hex digits"),
        (
            "//files?from=00000000000000FF",
            400,
            "16 lowercase hex digits",
        ),
        ("//files?to=12", 400, "16 lowercase hex digits"),
        (
            "//files?from=0000000000000002&to=0000000000000001",
            400,
            "from <= to",
        ),
        ("//files?limit=5", 400, "only from and to"),
    ] {
        let r = raw(node.addr, &get_req("GET", target)).await.unwrap();
        assert_eq!(r.status, status, "{target}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.error().contains(says), "{target}: {}", r.error());
    }
    // Never a file's name either.
    let r = raw(node.addr, &put_req("//files", b"x", "")).await.unwrap();
    assert_eq!(r.status, 400);
    node.stop().await;
}

/// `/stats`' `scrub` object, once `ready` holds for it (bounded wait).
async fn scrub_when(node: &Node, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrub = node.stats(&c).await["scrub"].clone();
        if ready(&scrub) {
            return scrub;
        }
        assert!(Instant::now() < deadline, "scrub never got there: {scrub}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes rotting under a running node are found by the scrub: the current
/// copy leaves the index (404, not listed), an older copy is only
/// counted, and every other file stays.
#[tokio::test]
async fn the_scrub_finds_damage_under_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        scrub_rate: 1 << 30,
        ..NodeConfig::new(dir.path())
    };
    let node = Node::start(config).await;
    let body = data(9, 50_000);
    let newer = data(10, 50_000);
    // Record order in the volume: /victim, /twice (old), the others,
    // /twice (new).
    let mut names = vec!["/victim".to_string(), "/twice".to_string()];
    names.extend((0..20).map(|i| format!("/keep/{i}")));
    for name in &names {
        let r = raw(node.addr, &put_req(name, &body, "")).await.unwrap();
        assert_eq!(r.status, 201);
    }
    let r = raw(node.addr, &put_req("/twice", &newer, ""))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let first = scrub_when(&node, |s| s["passes"].as_u64() >= Some(1)).await;
    assert_eq!(first["damaged"], 0, "{first}");
    assert_eq!(first["rate_bytes_per_sec"], 1u64 << 30);
    assert!(first["last_pass_ms"].as_u64().is_some(), "{first}");

    // Rot a data byte of /victim (the first record) and of /twice's older
    // copy (the second), as a failing disk might.
    use std::os::unix::fs::FileExt;
    let vol = volumes(dir.path())[0].clone();
    let f = std::fs::OpenOptions::new().write(true).open(&vol).unwrap();
    let victim_at = 32 + "/victim".len() as u64 + 1000;
    f.write_all_at(&[body[1000] ^ 0xff], victim_at).unwrap();
    let second = 32 + 7 + 50_000 + 4;
    let twice_at = second + 32 + "/twice".len() as u64 + 10;
    f.write_all_at(&[body[10] ^ 0x01], twice_at).unwrap();
    drop(f);

    let found = scrub_when(&node, |s| s["damaged"] == 2).await;
    assert_eq!(found["damaged"], 2, "{found}");
    let r = raw(node.addr, &get_req("GET", "/victim")).await.unwrap();
    assert_eq!(r.status, 404);
    let r = raw(node.addr, &get_req("GET", "/twice")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == newer);
    let listed: Vec<String> = list(&node, "").await.into_iter().map(|f| f.name).collect();
    assert!(!listed.contains(&"/victim".to_string()));
    assert_eq!(listed.len(), names.len() - 1);
    for name in &names[1..] {
        assert!(listed.contains(name), "{name} not listed");
    }
    // Found once: later passes do not count it again (it is no file's).
    let passes = found["passes"].as_u64().unwrap();
    let later = scrub_when(&node, |s| s["passes"].as_u64() >= Some(passes + 2)).await;
    assert_eq!(later["damaged"], 2, "{later}");
    node.stop().await;
}

/// A large upload still streaming into its reserved space, with records
/// appended after it, is not taken for damage by the scrub (its space
/// holds zeros until the data arrives), and is served once complete.
#[tokio::test]
async fn the_scrub_skips_a_large_upload_still_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        scrub_rate: 1 << 30,
        ..NodeConfig::new(dir.path())
    };
    let node = Node::start(config).await;
    let big = data(11, 3 << 20);
    let mut s = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "PUT /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&big[..1 << 20]).await.unwrap();
    // Wait for the space to be reserved, then append behind it.
    let vol = volumes(dir.path())[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&vol).unwrap().len() == 0 {
        assert!(Instant::now() < deadline, "the upload never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..3 {
        let r = raw(node.addr, &put_req(&format!("/small/{i}"), b"after", ""))
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    let now = scrub_when(&node, |_| true).await["passes"]
        .as_u64()
        .unwrap();
    scrub_when(&node, |s| s["passes"].as_u64() >= Some(now + 2)).await;
    s.write_all(&big[1 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 201"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let now = scrub_when(&node, |_| true).await["passes"]
        .as_u64()
        .unwrap();
    let after = scrub_when(&node, |s| s["passes"].as_u64() >= Some(now + 2)).await;
    assert_eq!(after["damaged"], 0, "{after}");
    let r = raw(node.addr, &get_req("GET", "/big")).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == big);
    node.stop().await;
}
