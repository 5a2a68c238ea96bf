//! One file name from upload to every replica. A request target is either
//! refused by the coordinator with a 4xx JSON error, or, once the queue
//! drains, stored under exactly that name on every node of its shard and
//! read back byte for byte through the coordinator's read path, nginx with
//! the generated configuration and curl; no two accepted names share a
//! file. Real ZooKeeper, Redis, nginx and curl; the coordinator, the
//! replicator and the nodes in-process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backpack_daemon::coordinator::{Coordinator, CoordinatorConfig};
use backpack_shared::model::{Name, QueueInfo, ReplicationTask, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::Zk;
use backpack_tests::{bin, free_port, require, shared_redis, shared_zk, unique_root};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio_util::sync::CancellationToken;

use crate::common::http::{exchange, raw_get, raw_put, request};
use crate::common::{
    Nginx, TestNode, eventually, init_root, nginx_config, start_coordinator, start_replicator,
    two_node_shard,
};

// ---------------------------------------------------------------- fixtures

/// Shard 1 (writable) on nodes 1 and 2, a coordinator, a replicator and
/// nginx in front, on one fresh root.
struct Cluster {
    zk: Zk,
    queue: Queue,
    nodes: (TestNode, TestNode),
    coordinator: Coordinator,
    nginx: (Nginx, u16),
    stop: CancellationToken,
}

impl Cluster {
    /// `None` when a server is missing outside CI.
    async fn start(tag: &str) -> Option<Cluster> {
        let program = crate::common::required_nginx()?;
        let (zks, redis) = (shared_zk()?, shared_redis()?);
        let root = unique_root(tag);
        let key = format!("q{}", root.replace('/', "-"));
        let zk = init_root(&zks.addr(), &root, &key, &[redis.addr()]).await;
        let nodes = two_node_shard(&zk).await;
        zk.apply(&MapOp::EnableShard { id: "1".into() })
            .await
            .unwrap();
        let info: QueueInfo =
            serde_json::from_slice(&zk.get(paths::QUEUE).await.unwrap().unwrap().0).unwrap();
        let queue = Queue::new(&info, &RedisPool::new(), zk.clone());

        let stop = CancellationToken::new();
        let coordinator = start_coordinator(&zk, stop.clone()).await;

        start_replicator(&zks.addr(), &root, 4, stop.clone()).await;

        let port = free_port();
        let generated = nginx_config(
            &zks.addr(),
            &root,
            &["--listen", &format!("127.0.0.1:{port}")],
        );
        let nginx = Nginx::start(program, &generated, port);
        Some(Cluster {
            zk,
            queue,
            nodes,
            coordinator,
            nginx: (nginx, port),
            stop,
        })
    }

    fn front(&self) -> SocketAddr {
        self.coordinator.local_addr()
    }

    fn node_addrs(&self) -> [SocketAddr; 2] {
        [self.nodes.0.addr, self.nodes.1.addr]
    }

    fn nginx_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.nginx.1).into()
    }

    /// Files held by each node (its `/stats`).
    async fn files(&self) -> [u64; 2] {
        let mut out = [0; 2];
        for (i, addr) in self.node_addrs().into_iter().enumerate() {
            let a = request(addr, b"GET /stats HTTP/1.1\r\nhost: n\r\n\r\n").await;
            out[i] = a.json()["files"].as_u64().unwrap();
        }
        out
    }

    async fn close(self) {
        self.stop.cancel();
        self.coordinator.wait().await;
        drop(self.nginx);
        self.zk.close();
    }
}

/// `/1:<name without its />`.
fn read_target(name: &[u8]) -> Vec<u8> {
    let mut t = b"/1:".to_vec();
    t.extend_from_slice(&name[1..]);
    t
}

fn curl() -> Option<&'static str> {
    ["/usr/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// The body curl reads from `url` (`-g`: no globbing of `[]{}`).
fn curl_get(url: &str) -> (String, Vec<u8>) {
    let out = Command::new(curl().unwrap())
        .args([
            "-s",
            "-g",
            "-w",
            "%{http_code}",
            "-o",
            "-",
            "--max-time",
            "10",
        ])
        .arg(url)
        .output()
        .unwrap();
    let mut body = out.stdout;
    let code = body.split_off(body.len().saturating_sub(3));
    (String::from_utf8_lossy(&code).to_string(), body)
}

/// What an upload of `target` did: `Ok(true)` accepted, `Ok(false)`
/// refused the way it must be.
async fn upload(c: &Cluster, target: &[u8], body: &[u8]) -> Result<bool, String> {
    let a = request(c.front(), &raw_put(target, body)).await;
    let shown = String::from_utf8_lossy(target).to_string();
    let valid = Name::parse_limited(target, CoordinatorConfig::default().max_name_len).is_ok();
    match a.status {
        200 => {
            if a.json()["shard_id"] != "1" {
                return Err(format!("{shown:?}: 200 without shard 1: {:?}", a.json()));
            }
            if !valid {
                return Err(format!("{shown:?} accepted but Name refuses it"));
            }
            Ok(true)
        }
        400..=499 => {
            let json_type = a
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json");
            if !json_type || a.error().is_empty() {
                return Err(format!(
                    "{shown:?}: {} without a JSON error: {a:?}",
                    a.status
                ));
            }
            if valid {
                return Err(format!("{shown:?} refused though valid: {}", a.error()));
            }
            Ok(false)
        }
        s => Err(format!("{shown:?}: answered {s}: {a:?}")),
    }
}

/// Waits until both nodes hold `body` under `name`, then reads it through
/// the coordinator, nginx and curl.
async fn check_everywhere(c: &Cluster, name: &[u8], body: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(name).to_string();
    for node in c.node_addrs() {
        let there = eventually(Duration::from_secs(15), || async {
            let a = request(node, &raw_get(name)).await;
            a.status == 200 && a.body == body
        })
        .await;
        if !there {
            let a = request(node, &raw_get(name)).await;
            return Err(format!(
                "{shown:?} not on node {node} byte for byte: {} {:?}; dead letters: {:?}",
                a.status,
                String::from_utf8_lossy(&a.body),
                c.queue.dead(5).await
            ));
        }
    }
    for (via, addr) in [("coordinator", c.front()), ("nginx", c.nginx_addr())] {
        let a = request(addr, &raw_get(read_target(name))).await;
        if a.status != 200 || a.body != body {
            return Err(format!(
                "{shown:?} through {via}: {} {:?}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
    }
    let url = format!(
        "http://{}{}",
        c.nginx_addr(),
        String::from_utf8_lossy(&read_target(name))
    );
    let (code, got) = tokio::task::spawn_blocking(move || curl_get(&url))
        .await
        .unwrap();
    if code != "200" || got != body {
        return Err(format!("{shown:?} through curl and nginx: {code}"));
    }
    Ok(())
}

// ------------------------------------------------------------ the property

/// Pieces of request targets: every byte a request line can carry (not a
/// space, CR or LF, which end or split the line) and the sequences that
/// matter to the rules.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0x21u8..=0x7e).prop_map(|b| vec![b]),
        3 => prop::sample::select(b"#%?/.:\"<>`\\{}|^[]'&=+;,@$!*()~".to_vec())
            .prop_map(|b| vec![b]),
        1 => (0x80u8..=0xff).prop_map(|b| vec![b]),
        1 => prop::sample::select(vec![0x00u8, 0x01, 0x09, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f])
            .prop_map(|b| vec![b]),
        2 => prop::sample::select(vec![
            "%2e", "%2E", "%2f", "%2F", "%41", "%00", "%zz", "%4", "%25", "/.", "/..", "//",
            "..%2f", "%c3%a9", "\u{e9}", "?x=", "#", "/stats",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// Pieces of names that mostly pass: what real names are made of.
fn likely_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(b"abcXYZ0129-_.~".to_vec()).prop_map(|b| vec![b]),
        3 => prop::sample::select(b"!$&'()*+,;=:@/\"{}|\\^[]?".to_vec()).prop_map(|b| vec![b]),
        1 => prop::sample::select(vec!["%2e", "%2F", "%41", "%25", "%c3%a9", "%20"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => piece(),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        3 => prop::collection::vec(likely_piece(), 1..24),
        2 => prop::collection::vec(piece(), 1..24),
    ];
    (prop::bool::weighted(0.97), pieces).prop_map(|(slash, pieces)| {
        let mut t = if slash { vec![b'/'] } else { Vec::new() };
        t.extend(pieces.concat());
        t
    })
}

#[test]
fn every_request_target_is_refused_or_reaches_every_node_byte_for_byte() {
    if !require("curl (Debian package curl)", curl().is_some()) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(c) = rt.block_on(Cluster::start("names-prop")) else {
        return;
    };
    let cases = std::env::var("BACKPACK_NAME_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let accepted = std::sync::Mutex::new(BTreeMap::<Vec<u8>, Vec<u8>>::new());
    let counter = AtomicU64::new(0);
    let (taken, refused) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = runner.run(&target(), |target| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let body = format!("case {n}: {target:02x?}").into_bytes();
        let outcome: Result<bool, String> = rt.block_on(async {
            if upload(&c, &target, &body).await? {
                check_everywhere(&c, &target, &body).await?;
                Ok(true)
            } else {
                Ok(false)
            }
        });
        match outcome {
            Ok(true) => {
                taken.fetch_add(1, Ordering::Relaxed);
                accepted.lock().unwrap().insert(target, body);
                Ok(())
            }
            Ok(false) => {
                refused.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(TestCaseError::fail(e)),
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (taken, refused) = (taken.into_inner(), refused.into_inner());
    eprintln!("{taken} targets accepted, {refused} refused");
    let fifth = u64::from(cases) / 5;
    assert!(taken >= fifth && refused >= fifth, "{taken} / {refused}");

    // Every accepted name still holds its own body everywhere (a later
    // upload under another name never replaced it), and the nodes hold
    // nothing else (no refused upload left a file under a cut name).
    let accepted = accepted.into_inner().unwrap();
    rt.block_on(async {
        for (name, body) in &accepted {
            for addr in c.node_addrs() {
                let a = request(addr, &raw_get(name)).await;
                assert_eq!(
                    (a.status, &a.body),
                    (200, body),
                    "{}",
                    String::from_utf8_lossy(name)
                );
            }
            let a = request(c.front(), &raw_get(read_target(name))).await;
            assert_eq!((a.status, &a.body), (200, body));
        }
        assert_eq!(c.files().await, [accepted.len() as u64; 2]);
        assert_eq!(c.queue.len().await.overall, Some(0));
        assert!(c.queue.dead(5).await.is_empty());
        c.close().await;
    });
}

// ------------------------------------------------------------ named cases

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_of_every_kind_are_refused_with_our_json_or_copied_as_they_are() {
    if !require("curl (Debian package curl)", curl().is_some()) {
        return;
    }
    let Some(c) = Cluster::start("names-named").await else {
        return;
    };

    // A fragment: both would have been stored as /photo.
    for t in [&b"/photo#1.jpg"[..], b"/photo#2.jpg"] {
        let a = request(c.front(), &raw_put(t, b"x")).await;
        assert_eq!(a.status, 400);
        assert!(
            a.error().contains("'#' at byte 6") && a.error().contains("%23"),
            "{}",
            a.error()
        );
    }
    // Raw UTF-8 and bytes hyper refuses: our JSON, not an empty 400.
    for (t, says) in [
        ("/café.jpg".as_bytes(), "0xC3 at byte 4"),
        (b"/x\xff", "0xFF at byte 2"),
        (b"/a<b>", "'<' at byte 2"),
        (b"/x?q=\"a\"", "'\"' at byte 5"),
        (b"/a\x01b", "0x01 at byte 2"),
    ] {
        let a = request(c.front(), &raw_put(t, b"x")).await;
        assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(t));
        assert!(a.error().contains(says), "{}", a.error());
        assert!(a.error().contains("percent-encode"), "{}", a.error());
    }
    // A space splits the request line.
    let a = request(
        c.front(),
        b"PUT /a b.jpg HTTP/1.1\r\ncontent-length: 1\r\n\r\nx",
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.error().contains("%20"), "{}", a.error());
    // A read of a name with a fragment is refused too, never cut.
    let a = request(c.front(), &raw_get(b"/1:photo#1.jpg")).await;
    assert_eq!(a.status, 400);
    assert!(a.error().contains("'#'"), "{}", a.error());
    assert_eq!(c.files().await, [0, 0], "a refused upload stored something");

    // Names the replicator used to dead-letter ("cannot be sent verbatim").
    let names: [&[u8]; 7] = [
        b"/\"quoted\".jpg",
        b"/{braces}.jpg",
        b"/x?q='apostrophe'",
        b"/back\\slash.jpg",
        b"/pipe|caret^[brackets].jpg",
        b"/x?q=`tick`{a}|b\\c",
        b"/%C3%A9t%C3%A9/a%2Fb%20c.jpg?v=1:2",
    ];
    for (i, name) in names.iter().enumerate() {
        let body = format!("named {i}").into_bytes();
        assert_eq!(upload(&c, name, &body).await, Ok(true));
        check_everywhere(&c, name, &body).await.unwrap();
    }
    assert_eq!(c.files().await, [names.len() as u64; 2]);
    assert!(c.queue.dead(5).await.is_empty());
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_targets_keep_their_place_on_a_keep_alive_connection() {
    let Some(c) = Cluster::start("names-pipeline").await else {
        return;
    };
    // Three requests in one write: an upload whose body looks like a
    // request, a read refused for its fragment, a read of the first.
    let fake = b"GET /1:evil#x HTTP/1.1\r\n\r\n";
    let mut bytes = format!(
        "PUT /pipe HTTP/1.1\r\nhost: c\r\ncontent-length: {}\r\n\r\n",
        fake.len()
    )
    .into_bytes();
    bytes.extend_from_slice(fake);
    bytes.extend_from_slice(b"GET /1:pipe#frag HTTP/1.1\r\nhost: c\r\n\r\n");
    bytes.extend_from_slice(b"GET /1:pipe HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n");
    let answers = exchange(c.front(), &bytes).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 400, 200], "{answers:?}");
    assert!(answers[1].error().contains("'#'"));
    assert_eq!(answers[2].body, fake);

    // Heads we cannot read: our JSON, and the connection closes.
    let a = request(
        c.front(),
        b"PUT /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 411);
    assert!(a.error().contains("Content-Length"), "{}", a.error());
    let mut huge = b"GET /stats HTTP/1.1\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let a = request(c.front(), &huge).await;
    assert_eq!(a.status, 431);
    assert!(
        a.error().contains("request line and headers"),
        "{}",
        a.error()
    );
    let a = request(
        c.front(),
        b"PUT /d HTTP/1.1\r\ncontent-length: 18446744073709551616\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(a.error().contains("Content-Length"), "{}", a.error());
    // hyper's own refusal of this one is an empty 431.
    let a = request(
        c.front(),
        b"PUT /d HTTP/1.1\r\ncontent-length: 18446744073709551615\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 413);
    assert!(a.error().contains("--max-body"), "{}", a.error());
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_name_cannot_be_copied_is_a_dead_letter_at_once() {
    let Some(c) = Cluster::start("names-dead").await else {
        return;
    };
    // As an original coordinator (or a hand push) could queue them.
    let items: Vec<String> = ["/a b.jpg", "/café.jpg", "/a/../b", "/x#y"]
        .iter()
        .map(|p| {
            ReplicationTask {
                from: vec!["1".into()],
                to: "2".into(),
                path: p.to_string(),
            }
            .encode()
        })
        .collect();
    c.queue.push_many(&items).await.unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            c.queue.dead(10).await.len() == items.len()
        })
        .await,
        "dead letters: {:?}",
        c.queue.dead(10).await
    );
    for t in c.queue.dead(10).await {
        assert_eq!(t.attempts, 1, "{t:?}");
        let e = t.last_error.unwrap_or_default();
        assert!(e.contains("not a file name our coordinator accepts"), "{e}");
    }
    // The hand-push command refuses them before they are queued.
    let out = Command::new(bin("backpack-replicator-push"))
        .args([
            &c.zk.config().servers,
            &c.zk.config().root,
            "127.0.0.1:1",
            "k",
            "1",
            "2",
            "/a#b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be copied") && err.contains("'#'"),
        "{err}"
    );
    c.close().await;
}
