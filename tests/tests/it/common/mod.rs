//! Helpers shared by the integration tests, by what they set up:
//!
//! - [`cluster`]: a cluster root in ZooKeeper (maps, shard, queue) and the
//!   queue's Redis servers;
//! - [`node`]: storage nodes in-process, and what a test asks of a node;
//! - [`coordinator`], [`replicator`]: those daemons in-process, with the
//!   settings and helpers their tests share;
//! - [`processes`]: the workspace's binaries as real processes (to kill,
//!   pause or shift the clock of) and nginx, under [`backpack_tests::Process`];
//! - [`http`]: raw HTTP/1.1 exchanges, for what no client library sends.
//!
//! What several families use is re-exported here.

use std::time::{Duration, Instant};

pub mod cluster;
pub mod coordinator;
pub mod http;
pub mod node;
pub mod processes;
pub mod replicator;

pub use cluster::{
    add_shard, add_shard_at, drained, init_root, name_first_on, queue_on, two_node_shard,
};
pub use coordinator::start_coordinator;
pub use node::TestNode;
pub use processes::{
    CoordinatorProcess, Nginx, NodeProcess, nginx_config, require_faketime, required_nginx,
};
pub use replicator::start_replicator;

/// Polls an async condition every 20 ms until true or `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client for the test's servers (loopback: never through a proxy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The JSON a GET of `url` answers (a daemon's `/stats`).
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}
