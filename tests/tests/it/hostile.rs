//! Clients that misbehave on purpose, written here as raw sockets: bodies
//! that trickle, readers that stop reading, uploads that together do not
//! fit the spill directory. None may take the coordinator down or leave a
//! normal client hanging.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backpack_daemon::coordinator::CoordinatorConfig;
use backpack_daemon::send_floor::SendRule;
use backpack_tests::shared_zk;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::coordinator::{Cluster, Running, put, quick};
use crate::common::http::Answer;
use crate::common::{client, eventually};

/// An upload that announces `len` bytes and sends one every `every`
/// until the coordinator answers; returns that answer and when it came.
async fn trickle(addr: SocketAddr, name: String, len: u64, every: Duration) -> (Answer, Instant) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!("PUT {name} HTTP/1.1\r\nhost: c\r\ncontent-length: {len}\r\n\r\n");
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        while wr.write_all(b"x").await.is_ok() {
            tokio::time::sleep(every).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the answer's head and JSON body are in (the server may keep
    // the connection half open).
    let answered = loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break Instant::now(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.ends_with(b"}\n") {
            break Instant::now();
        }
    };
    writer.abort();
    let text = String::from_utf8_lossy(&got).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer");
    let answer = Answer {
        status: head[9..12].parse().unwrap(),
        head: head.to_string(),
        body: body.as_bytes().to_vec(),
    };
    (answer, answered)
}

async fn slots_free(r: &Running) -> u64 {
    r.stats().await["upload_slots_free"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_flood_is_refused_at_once_then_cut_by_the_body_min_rate() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("hostile-trickle", &zk.addr(), 2).await else {
        return;
    };
    cluster.add_shard("1", &["1", "2"], 1 << 30, true).await;
    let slots = 8;
    let r = cluster
        .start(CoordinatorConfig {
            max_uploads: slots,
            upload_slot_wait: Duration::from_millis(300),
            body_grace: Duration::from_secs(2),
            // A byte per 200 ms keeps the stall timer (60 s) happy for ever.
            body_timeout: Duration::from_secs(60),
            ..quick()
        })
        .await;
    r.ready().await;
    let addr = r.addr;
    let flood_started = Instant::now();
    let flood: Vec<_> = (0..slots)
        .map(|i| {
            tokio::spawn(trickle(
                addr,
                format!("/slow-{i}"),
                100_000,
                Duration::from_millis(200),
            ))
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            slots_free(&r).await == 0
        })
        .await,
        "the flood takes every slot"
    );

    // A normal upload meanwhile: 503 with Retry-After at once, not a hang.
    let http = client();
    let started = Instant::now();
    let resp = http
        .put(r.url("/normal"))
        .body(vec![1u8; 1000])
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let error = resp.json::<serde_json::Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("--max-uploads"), "{error}");
    assert!(took < Duration::from_secs(3), "refused after {took:?}");
    assert_eq!(r.stats().await["busy_uploads"], 1);

    // The trickles are cut once under 1 KB/s after the 2 s grace: 408.
    for t in flood {
        let (answer, at) = t.await.unwrap();
        assert_eq!(answer.status, 408, "{}", answer.head);
        assert!(
            answer.error().contains("--body-min-rate"),
            "{}",
            answer.error()
        );
        let after = at - flood_started;
        assert!(after < Duration::from_secs(10), "cut after {after:?}");
    }
    // And the normal upload goes through again.
    let (status, v) = put(&http, &r, "/normal", vec![1u8; 1000]).await;
    assert_eq!(status, 200, "{v}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_a_download_is_cut() {
    let Some(zk) = shared_zk() else { return };
    let Some(cluster) = Cluster::new("hostile-reader", &zk.addr(), 1).await else {
        return;
    };
    cluster.add_shard("1", &["1"], 1 << 30, true).await;
    let r = cluster
        .start(CoordinatorConfig {
            send_rule: SendRule {
                min_rate: 256 * 1024,
                grace: Duration::from_secs(1),
            },
            ..quick()
        })
        .await;
    r.ready().await;
    let http = client();
    // Larger than every socket buffer on the way (node to coordinator,
    // coordinator to client), so the coordinator has to wait on the reader.
    let size = 48 << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let (status, v) = put(&http, &r, "/big", data.clone()).await;
    assert_eq!(status, 200, "{v}");

    // A reader at full speed gets every byte.
    let got = http.get(r.url("/1:big")).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == data);
    assert_eq!(r.stats().await["slow_readers_cut"], 0);

    // One that reads the head and stops is cut after the grace.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(r.addr).await.unwrap();
    s.write_all(b"GET /1:big HTTP/1.1\r\nhost: c\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 512];
    let n = s.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));
    assert!(
        eventually(Duration::from_secs(30), || async {
            r.stats().await["slow_readers_cut"] == 1
        })
        .await,
        "the stalled reader is cut"
    );
    // What it reads now ends before the whole file.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.len() + n < size, "got {} bytes", rest.len() + n);
    // Others are still served.
    let got = http.get(r.url("/1:big")).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);
    r.stop().await;
}

/// A tmpfs of `size` bytes mounted on a new directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}")])
            .arg("tmpfs")
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir }),
            other => {
                let why = format!("cannot mount a tmpfs (needs root): {other:?}");
                assert!(std::env::var_os("CI").is_none(), "{why}; CI runs as root");
                eprintln!("SKIPPED: {why}");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_that_do_not_fit_the_spill_directory_together_are_refused_at_once() {
    let Some(zk) = shared_zk() else { return };
    let Some(disk) = SmallDisk::mount(3 << 20) else {
        return;
    };
    let Some(cluster) = Cluster::new("hostile-spill", &zk.addr(), 1).await else {
        return;
    };
    cluster.add_shard("1", &["1"], 1 << 30, true).await;
    let r = cluster
        .start(CoordinatorConfig {
            memory_threshold: 64 * 1024,
            spill_dir: disk.dir.path().to_path_buf(),
            ..quick()
        })
        .await;
    r.ready().await;
    let len = 2 << 20;
    // One upload in progress: its head and a first piece of its body.
    let mut first = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    first
        .write_all(
            format!("PUT /one HTTP/1.1\r\nhost: c\r\ncontent-length: {len}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    first.write_all(&vec![1u8; 1024]).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            r.stats().await["spill_bytes"] == len
        })
        .await
    );
    // A second one of the same size does not fit beside it: refused before
    // its body is sent (it waits for 100-continue), not after.
    let second = crate::common::http::request(
        r.addr,
        format!(
            "PUT /two HTTP/1.1\r\nhost: c\r\nexpect: 100-continue\r\ncontent-length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(second.status, 507, "{}", second.head);
    assert!(second.error().contains("right now"), "{}", second.error());
    assert!(
        second.head.to_lowercase().contains("retry-after: 1"),
        "{}",
        second.head
    );
    // One that could never fit says so (no use retrying it).
    let never = crate::common::http::request(
        r.addr,
        b"PUT /never HTTP/1.1\r\nhost: c\r\nexpect: 100-continue\r\ncontent-length: 4194304\r\n\r\n",
    )
    .await;
    assert_eq!(never.status, 507, "{}", never.head);
    assert!(never.error().contains("can never fit"), "{}", never.error());
    // The first completes.
    first.write_all(&vec![1u8; len - 1024]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}\n") {
        let n = first.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // Then the second fits.
    let (status, v) = put(&client(), &r, "/two", vec![2u8; len]).await;
    assert_eq!(status, 200, "{v}");
    r.stop().await;
}
