//! The read path: `GET /<shard>:<name>` through the coordinator, and nginx
//! in front of the storage nodes with the configuration
//! `backpack-coordinator-nginx-config` prints; a node down or a file not
//! yet copied is read from another node of the shard.

use std::time::Duration;

use backpack_tests::{free_port, shared_zk, unique_root};

use crate::common::{
    Nginx, eventually, init_root, nginx_config, start_coordinator, two_node_shard,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_a_shard_with_one_node_down() {
    let Some(program) = crate::common::required_nginx() else {
        return;
    };
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("nginx");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    let (mut a, b) = two_node_shard(&zk).await;

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let generated = nginx_config(
        &zks.addr(),
        &root,
        &["--listen", &listen, "--server-name", "one"],
    );
    assert!(
        generated.contains(&format!("server {}", a.addr))
            && generated.contains(&format!("server {}", b.addr))
    );
    let nginx = Nginx::start(program, &generated, port);
    let front = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    // The file only on node 2 (replication not done yet): node 1's 404 makes
    // nginx try node 2.
    let name = "/hi.txt?v=1:%20x";
    let put = http
        .put(format!("{}{name}", b.url()))
        .body("hello, backpack!\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    for _ in 0..4 {
        let r = http
            .get(format!("{front}/1:hi.txt?v=1:%20x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hello, backpack!\n");
    }
    // A file no node has: 404 after trying both.
    assert_eq!(status(http.get(format!("{front}/1:nothing"))).await, 404);
    // Node 2 holds it, node 1 is down: still served.
    a.stop().await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            let r = http.get(format!("{front}/1:hi.txt?v=1:%20x")).send().await;
            matches!(r, Ok(r) if r.status() == 200)
        })
        .await
    );
    // Unknown shard: 404; uploads through the front: 403.
    assert_eq!(status(http.get(format!("{front}/9:hi.txt"))).await, 404);
    assert_eq!(
        status(http.put(format!("{front}/1:x")).body("x")).await,
        403
    );
    drop((b, nginx));
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_serves_reads_from_any_node_of_the_shard() {
    let Some(zks) = shared_zk() else { return };
    let Some(redis) = backpack_tests::shared_redis() else {
        return;
    };
    let root = unique_root("read");
    let zk = init_root(&zks.addr(), &root, "readq", &[redis.addr()]).await;
    let (mut a, b) = two_node_shard(&zk).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let c = start_coordinator(&zk, stop.clone()).await;
    let front = format!("http://{}", c.local_addr());
    let http = reqwest::Client::new();

    // Only on node 2, with a colon in its name: found after node 1's 404.
    let name = "/photos/a:b.jpg?size=2%20x";
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        http.put(format!("{}{name}", b.url()))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    for _ in 0..4 {
        let r = http
            .get(format!("{front}/1:photos/a:b.jpg?size=2%20x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "200000");
        assert!(r.headers().contains_key("x-backpack-time"));
        assert_eq!(r.bytes().await.unwrap().to_vec(), body);
    }
    let h = http
        .head(format!("{front}/1:photos/a:b.jpg?size=2%20x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            h.status().as_u16(),
            h.headers()["content-length"].to_str().unwrap()
        ),
        (200, "200000")
    );
    // A node down: still served by the other.
    a.stop().await;
    let r = http
        .get(format!("{front}/1:photos/a:b.jpg?size=2%20x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Nowhere: 502 while a node is down (it might hold it), 404 when every node said so.
    let r = http.get(format!("{front}/1:nothing")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("no node of shard 1 could answer")
    );
    a.restart().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            matches!(http.get(format!("{front}/1:nothing")).send().await, Ok(r) if r.status() == 404)
        })
        .await
    );
    let r = http.get(format!("{front}/7:hi.txt")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("shard 7 does not exist"));
    assert_eq!(status(http.get(format!("{front}/1:a//b"))).await, 400);
    assert_eq!(status(http.get(format!("{front}/hi.txt"))).await, 404);
    stop.cancel();
    c.wait().await;
    drop((b, a));
    zk.close();
}

/// The status of a request's answer.
async fn status(req: reqwest::RequestBuilder) -> reqwest::StatusCode {
    req.send().await.unwrap().status()
}

/// A peer that answers every request `500` (a damaged copy, a failing
/// disk): the generated nginx configuration moves on to the next node.
async fn always_500() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_moves_past_a_node_answering_500_to_an_ipv6_node() {
    use backpack_shared::model::HostPort;
    let Some(program) = crate::common::required_nginx() else {
        return;
    };
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("nginx-500");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    let failing = always_500().await;
    let v6 = crate::common::TestNode::start_on("[::1]:0").await;
    let host = |host: &str, port| HostPort {
        host: host.into(),
        port,
    };
    crate::common::add_shard_at(
        &zk,
        &[
            host("127.0.0.1", failing.port()),
            host("::1", v6.addr.port()),
        ],
    )
    .await;

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let generated = nginx_config(
        &zks.addr(),
        &root,
        &["--listen", &listen, "--server-name", "v6"],
    );
    assert!(
        generated.contains(&format!("server [::1]:{} ", v6.addr.port())),
        "{generated}"
    );
    let _nginx = Nginx::start(program, &generated, port);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let put = http
        .put(format!("http://[::1]:{}/a.jpg", v6.addr.port()))
        .body("from the IPv6 node")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    // nginx takes the upstream's servers in turn: half the reads meet the
    // failing node first and must move on.
    for _ in 0..6 {
        let r = http
            .get(format!("http://127.0.0.1:{port}/1:a.jpg"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "from the IPv6 node");
    }
    // nginx passes a Range on and the node's 206 back: downloads resume.
    let r = http
        .get(format!("http://127.0.0.1:{port}/1:a.jpg"))
        .header("range", "bytes=9-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 9-17/18");
    assert_eq!(r.text().await.unwrap(), "IPv6 node");
    zk.close();
}

/// A peer that accepts connections, sends `prefix` on each (nothing: a
/// hung machine; a head and part of a body: one that froze mid-file) and
/// then never sends another byte.
async fn hung_peer(prefix: Vec<u8>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            if !prefix.is_empty() {
                // The request first: an answer before it is no answer.
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&prefix).await;
            }
            held.push(s);
        }
    });
    addr
}

async fn never_answers() -> std::net::SocketAddr {
    hung_peer(Vec::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_moves_past_a_hung_node_within_its_read_timeout() {
    use backpack_daemon::coordinator::CoordinatorConfig;
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("read-hung");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    let hung = never_answers().await;
    let good = crate::common::TestNode::start().await;
    crate::common::add_shard(&zk, &[hung.port(), good.addr.port()]).await;
    // The name's first node is the hung one: a read asks it first.
    let name = crate::common::name_first_on("1", &["1", "2"], "hung");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let put = http
        .put(format!("{}{name}", good.url()))
        .body("here")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    let stop = tokio_util::sync::CancellationToken::new();
    let config = CoordinatorConfig {
        node_read_timeout: Duration::from_millis(500),
        node_retry_after: Duration::from_secs(1),
        ..CoordinatorConfig::default()
    };
    let c = crate::common::coordinator::start_coordinator_with(&zk, config, stop.clone()).await;
    let url = format!("http://{}/1:{}", c.local_addr(), &name[1..]);
    // First read: the hung node's time is its read timeout, not the write
    // timeout (60 s).
    let started = std::time::Instant::now();
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "here");
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(500) && first < Duration::from_secs(5),
        "{first:?}"
    );
    // Then it is asked last for a while: the next reads do not wait on it,
    // also past --node-retry-after (1 s here): a node that timed out is
    // asked last for twice as long as one that refused.
    for pause in [Duration::ZERO, Duration::from_millis(1300)] {
        tokio::time::sleep(pause).await;
        let started = std::time::Instant::now();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "after {pause:?}: {:?}",
            started.elapsed()
        );
    }
    stop.cancel();
    c.wait().await;
    zk.close();
}

/// nginx serving `dir` as a storage node, as the original's nodes are:
/// `GET /<name>` is the file `<dir>/<name>`, with nginx's own handling of
/// `Range` and `If-Range`.
fn nginx_node(program: &str, dir: &std::path::Path) -> (Nginx, u16) {
    let port = free_port();
    let conf = format!(
        "server {{\n  listen 127.0.0.1:{port};\n  root {};\n  location / {{ }}\n}}\n",
        dir.display()
    );
    (Nginx::start(program, &conf, port), port)
}

/// A GET of `url` with `headers`: (status, headers, body).
async fn get_with(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http.get(url);
    for (h, v) in headers {
        req = req.header(*h, *v);
    }
    let r = req.send().await.unwrap();
    let (status, h) = (r.status().as_u16(), r.headers().clone());
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_through_the_coordinator_gets_the_nodes_206_and_416() {
    let Some(program) = crate::common::required_nginx() else {
        return;
    };
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("read-range");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    // Two nginx nodes; the file is on the second only, and the name's
    // first node is the first: every read meets a 404 before the file.
    let (empty, full) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, port_a) = nginx_node(program, empty.path());
    let (_b, port_b) = nginx_node(program, full.path());
    crate::common::add_shard(&zk, &[port_a, port_b]).await;
    let name = crate::common::name_first_on("1", &["1", "2"], "range");
    let file = crate::common::node::content(7, 4 << 20);
    let len = file.len();
    let path = full.path().join(&name[1..]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &file).unwrap();

    let stop = tokio_util::sync::CancellationToken::new();
    let c = start_coordinator(&zk, stop.clone()).await;
    let url = format!("http://{}/1:{}", c.local_addr(), &name[1..]);
    let http = crate::common::client();

    // Whole: 200, and it says ranges are taken.
    let (status, h, body) = get_with(&http, &url, &[]).await;
    assert_eq!((status, header(&h, "accept-ranges")), (200, Some("bytes")));
    assert!(body == file, "the whole file");

    // One range: the node's 206 with its Content-Range.
    let (status, h, body) = get_with(&http, &url, &[("range", "bytes=100-199")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 100-199/{len}").as_str())
    );
    assert_eq!(header(&h, "content-length"), Some("100"));
    assert_eq!(header(&h, "accept-ranges"), Some("bytes"));
    assert!(body == file[100..200]);

    // A suffix: the last 500 bytes.
    let (status, h, body) = get_with(&http, &url, &[("range", "bytes=-500")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes {}-{}/{len}", len - 500, len - 1).as_str())
    );
    assert!(body == file[len - 500..]);

    // Open: from a position to the end.
    let from = len - 1000;
    let (status, h, body) = get_with(&http, &url, &[("range", &format!("bytes={from}-"))]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes {from}-{}/{len}", len - 1).as_str())
    );
    assert!(body == file[from..]);

    // Past the end: 416, with the length and our JSON saying what to ask.
    let (status, h, body) = get_with(&http, &url, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(status, 416);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let error = error["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("bytes={len}-")) && error.contains(&format!("0-{}", len - 1)),
        "{error}"
    );

    // Several ranges: the whole file, 200 (RFC 9110 lets a server ignore
    // Range).
    let (status, h, body) = get_with(&http, &url, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((status, header(&h, "content-range")), (200, None));
    assert!(body == file);

    // HEAD ignores Range: the whole file's length.
    let r = http
        .head(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(r.headers(), "content-length"),
        Some(&*len.to_string())
    );

    // A download cut short, then resumed from where it stopped, with
    // If-Range: the pieces make the file.
    let mut r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let validator = header(r.headers(), "last-modified").unwrap().to_string();
    let mut got = Vec::new();
    while got.len() < 64 << 10 {
        got.extend_from_slice(&r.chunk().await.unwrap().unwrap());
    }
    drop(r);
    assert!(got.len() < len, "the first part is a part");
    let (status, h, rest) = get_with(
        &http,
        &url,
        &[
            ("range", &format!("bytes={}-", got.len())),
            ("if-range", &validator),
        ],
    )
    .await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes {}-{}/{len}", got.len(), len - 1).as_str())
    );
    got.extend_from_slice(&rest);
    assert!(got == file, "first part and rest are the file");

    // If-Range passed on: a validator the node does not have gets the
    // whole file.
    let (status, _, body) = get_with(
        &http,
        &url,
        &[("range", "bytes=10-"), ("if-range", "\"not-this-copy\"")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(body == file);

    stop.cancel();
    c.wait().await;
    zk.close();
}

/// A node that ignores `Range` (ours, for now): every GET is answered 200
/// with the whole `body`; the request heads it received go to `heads`.
async fn ignores_range(
    body: &'static [u8],
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.write_all(body).await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_ignores_range_gives_the_whole_file_with_200() {
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("read-range-200");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    const BODY: &[u8] = b"0123456789abcdefghij";
    let (node, heads) = ignores_range(BODY).await;
    crate::common::add_shard(&zk, &[node.port()]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let c = start_coordinator(&zk, stop.clone()).await;
    let url = format!("http://{}/1:file.bin", c.local_addr());
    let http = crate::common::client();
    for range in ["bytes=5-9", "bytes=-3", "bytes=10-"] {
        heads.lock().unwrap().clear();
        let (status, h, body) = get_with(&http, &url, &[("range", range)]).await;
        // The range reached the node, and its whole answer is passed on
        // as a whole (200, no Content-Range): never a 206 of other bytes.
        assert!(
            heads.lock().unwrap()[0].contains(&format!("\r\nrange: {range}\r\n")),
            "{:?}",
            heads.lock().unwrap()
        );
        assert_eq!(
            (status, header(&h, "content-range")),
            (200, None),
            "{range}"
        );
        assert_eq!(body, BODY, "{range}");
    }
    stop.cancel();
    c.wait().await;
    zk.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_hangs_mid_file_does_not_hold_the_reader_for_ever() {
    use backpack_daemon::coordinator::CoordinatorConfig;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(zks) = shared_zk() else { return };
    let root = unique_root("read-mid-hang");
    let zk = init_root(&zks.addr(), &root, "q", &["127.0.0.1:1".into()]).await;
    // Its head and 64 KiB of a 1 MiB body, then nothing.
    let mut prefix = b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n".to_vec();
    prefix.extend_from_slice(&[7u8; 65536]);
    let node = hung_peer(prefix).await;
    crate::common::add_shard(&zk, &[node.port()]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let config = CoordinatorConfig {
        node_read_timeout: Duration::from_millis(500),
        ..CoordinatorConfig::default()
    };
    let c = crate::common::coordinator::start_coordinator_with(&zk, config, stop.clone()).await;
    let mut s = tokio::net::TcpStream::connect(c.local_addr())
        .await
        .unwrap();
    s.write_all(b"GET /1:f.jpg HTTP/1.1\r\nhost: c\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "the reader's connection is closed, not held");
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        got.len() - head_end,
        65536,
        "what the node sent, then the cut"
    );
    stop.cancel();
    c.wait().await;
    zk.close();
}
