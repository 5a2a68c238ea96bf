//! The fixtures themselves: servers start, answer, and stop.
#![allow(clippy::unwrap_used)]

use std::net::TcpStream;
use std::time::Duration;

use backpack_tests::{RedisServer, ZkServer, wait_until};

#[test]
fn zookeeper_starts_pauses_and_stops() {
    let Some(zk) = ZkServer::start() else { return };
    let port = zk.port;
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    zk.pause();
    zk.resume();
    drop(zk);
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", port)
    )
    .is_err()));
}

#[test]
fn redis_restarts_empty_on_the_same_port() {
    let Some(mut r) = RedisServer::start() else {
        return;
    };
    let port = r.port;
    r.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    r.restart();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
}
