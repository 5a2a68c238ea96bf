//! backpack-tests: fixtures that start real servers for tests.
//!
//! - [`ZkServer`] runs Debian's ZooKeeper (`/usr/share/java/zookeeper.jar`),
//!   [`RedisServer`] runs `redis-server`; each on a free loopback port, in a
//!   temp dir, persistence off, readiness by polling, killed and waited for
//!   on drop, its log printed when the test fails.
//! - [`shared_zk`] / [`shared_redis`] are one server per test binary for
//!   tests that only need *a* server: each such test takes its own root
//!   ([`unique_root`]) and Redis key. A test that kills or pauses a server
//!   starts its own.
//! - [`ZkServer::try_start`] and [`RedisServer::try_start`] start one with
//!   other settings ([`ZkOptions`]: a production ZooKeeper, its data on
//!   another device) and return errors: the benchmarks (`bench/`) use them.
//! - A missing server binary skips with a message, except when `CI` is set:
//!   then it fails.
//! - [`bin`] finds the workspace's built binaries (for tests that need real
//!   processes: kill -9, tmux): `.ci/run` builds them first with
//!   `cargo build --workspace --bins`.

pub mod servers;

pub use servers::{
    Process, RedisServer, ZkOptions, ZkServer, admin, bin, free_port, require, shared_redis,
    shared_zk, spawn, spawn_command, spawn_with_stdout, unique_root, wait_until,
};
