//! ZooKeeper access: the compare-and-set helper under concurrent writers,
//! and watches that survive a forced session expiry.

use std::time::Duration;

use backpack_shared::live::watch_cluster;
use backpack_shared::model::{HostPort, ServersMap, parse_json, paths};
use backpack_shared::ops::MapOp;
use backpack_shared::zk::{ConnState, NodeData, Zk, ZkConfig};
use backpack_tests::{ZkServer, shared_zk, unique_root};

async fn init(addr: &str, root: &str) -> Zk {
    crate::common::init_root(addr, root, "q", &[]).await
}

fn add_server(id: usize) -> MapOp {
    MapOp::AddServer {
        id: id.to_string(),
        addr: HostPort {
            host: "h".into(),
            port: 1000 + id as u16,
        },
        replace: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update() {
    let Some(server) = shared_zk() else { return };
    let root = unique_root("cas");
    let first = init(&server.addr(), &root).await;
    // 8 independent sessions each add 10 servers at the same time.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let zk = Zk::connect(ZkConfig::new(&server.addr(), &root))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                zk.apply(&add_server(w * 10 + i)).await.unwrap();
            }
            zk.close();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (data, version) = first.get(paths::SERVERS_MAP).await.unwrap().unwrap();
    let map: ServersMap = parse_json("servers-map", &data).unwrap();
    assert_eq!(map.len(), 80);
    assert_eq!(version, 80, "one write per server added");

    // Two writers racing for the same id: one wins, the other is refused
    // on the fresh map instead of overwriting.
    let a = MapOp::AddServer {
        id: "x".into(),
        addr: HostPort {
            host: "a".into(),
            port: 1,
        },
        replace: false,
    };
    let b = MapOp::AddServer {
        id: "x".into(),
        addr: HostPort {
            host: "b".into(),
            port: 2,
        },
        replace: false,
    };
    let other = Zk::connect(ZkConfig::new(&server.addr(), &root))
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(first.apply(&a), other.apply(&b));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one wins: {ra:?} {rb:?}");
    let loser = match (ra, rb) {
        (Err(e), _) | (_, Err(e)) => e,
        _ => unreachable!(),
    };
    assert!(
        loser.to_string().contains("server x already exists"),
        "{loser}"
    );
    first.close();
    other.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_session_expiry() {
    // This test freezes its ZooKeeper: it gets its own.
    let Some(server) = ZkServer::start() else {
        return;
    };
    let root = unique_root("expiry");
    let mut config = ZkConfig::new(&server.addr(), &root);
    config.session_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(2);
    let writer = init(&server.addr(), &root).await;
    let zk = Zk::connect(config).await.unwrap();
    let mut state = zk.state();
    let mut servers = zk.watch_data(paths::SERVERS_MAP);
    let mut cluster = watch_cluster(&zk, true);
    zk.put_ephemeral("coordinators/me", b"{}").await.unwrap();
    let first_session = match *state.borrow() {
        ConnState::Connected { session_id } => session_id,
        other => panic!("not connected: {other:?}"),
    };
    wait_for(&mut servers, |d| matches!(d, NodeData::Present { .. })).await;

    // Freeze ZooKeeper past the session timeout: the client declares the
    // session expired; then let ZooKeeper run again.
    server.pause();
    tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| matches!(s, ConnState::Expired { .. })),
    )
    .await
    .expect("expiry reported")
    .unwrap();
    server.resume();
    let s = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| s.is_connected()),
    )
    .await
    .unwrap()
    .unwrap();
    let ConnState::Connected { session_id } = *s else {
        unreachable!()
    };
    assert_ne!(session_id, first_session, "a new session was built");
    drop(s);

    // A change made elsewhere after the expiry reaches the re-armed watches.
    let writer = {
        // The writer's own session may have expired too: use a fresh one.
        writer.close();
        Zk::connect(ZkConfig::new(&server.addr(), &root))
            .await
            .unwrap()
    };
    writer.apply(&add_server(42)).await.unwrap();
    wait_for(&mut servers, |d| matches!(d, NodeData::Present { data, .. } if String::from_utf8_lossy(data).contains("\"42\""))).await;
    tokio::time::timeout(
        Duration::from_secs(10),
        cluster.wait_for(|c| {
            c.servers
                .value
                .as_ref()
                .is_some_and(|m| m.contains_key("42"))
        }),
    )
    .await
    .expect("the live cluster view follows after expiry")
    .unwrap();
    // Our ephemeral znode vanished with the old session; writing it again works.
    zk.put_ephemeral("coordinators/me", b"{\"again\":1}")
        .await
        .unwrap();
    assert!(writer.get("coordinators/me").await.unwrap().is_some());
    zk.close();
    writer.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_keeps_the_last_good_map() {
    let Some(server) = shared_zk() else { return };
    let root = unique_root("badjson");
    let zk = init(&server.addr(), &root).await;
    zk.apply(&add_server(1)).await.unwrap();
    let mut cluster = watch_cluster(&zk, false);
    tokio::time::timeout(
        Duration::from_secs(10),
        cluster.wait_for(|c| c.ready() && c.servers.value.as_ref().is_some_and(|m| m.len() == 1)),
    )
    .await
    .unwrap()
    .unwrap();
    let path = zk.path(paths::SERVERS_MAP);
    let p = path.clone();
    zk.call(
        &path,
        |c| async move { c.set_data(&p, b"{broken", None).await },
    )
    .await
    .unwrap();
    let c = tokio::time::timeout(
        Duration::from_secs(10),
        cluster.wait_for(|c| c.servers.error.is_some()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        c.servers.value.as_ref().map(|m| m.len()),
        Some(1),
        "last good map kept"
    );
    assert!(
        c.servers
            .error
            .as_deref()
            .unwrap_or("")
            .contains("servers-map does not hold valid JSON")
    );
    drop(c);
    // A map change on invalid JSON is refused; nothing is written.
    let err = zk.apply(&add_server(2)).await.unwrap_err();
    assert!(err.to_string().contains("nothing was written"), "{err}");
    zk.close();
}

async fn wait_for(rx: &mut tokio::sync::watch::Receiver<NodeData>, f: impl Fn(&NodeData) -> bool) {
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|d| f(d)))
        .await
        .expect("watch delivered")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limit_reads_as_such_not_as_a_server_down() {
    let opts = backpack_tests::ZkOptions {
        settings: vec!["maxClientCnxns=2".into()],
        ..backpack_tests::ZkOptions::default()
    };
    if !backpack_tests::require(
        "ZooKeeper (Debian package zookeeper)",
        ZkServer::installed(),
    ) {
        return;
    }
    let server = ZkServer::try_start(&opts).unwrap();
    let config = |secs| {
        let mut c = ZkConfig::new(&server.addr(), "/");
        c.connect_timeout = Duration::from_secs(secs);
        c
    };
    // Two sessions take this host's two connections.
    let _a = Zk::connect(config(30)).await.unwrap();
    let _b = Zk::connect(config(30)).await.unwrap();
    let Err(e) = Zk::connect(config(3)).await else {
        panic!("a third session within a limit of two")
    };
    let e = e.to_string();
    assert!(e.contains("maxClientCnxns"), "{e}");
    assert!(e.contains("closes new connections at once"), "{e}");
    // Nothing listening reads differently.
    let free = backpack_tests::free_port();
    let mut nobody = ZkConfig::new(&format!("127.0.0.1:{free}"), "/");
    nobody.connect_timeout = Duration::from_secs(2);
    let Err(e) = Zk::connect(nobody).await else {
        panic!("a session with nobody listening")
    };
    let e = e.to_string();
    assert!(e.contains("nothing listens there"), "{e}");
}
