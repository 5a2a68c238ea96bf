//! `backpack-node`: the storage node, a Haystack-style store with the HTTP
//! API of the original backpack node.
//!
//! Files are appended as self-describing records ([`record`]) to a few
//! large volume files in the data directory; an in-memory [`index`] maps
//! each name to its current copy and is rebuilt by scanning the volumes at
//! start. [`store`] owns the volumes, the group commit (one `fdatasync`
//! shared by concurrent uploads) and recovery; [`http`] is the API, over
//! the node's own HTTP/1.1 server.
//!
//! Entry points: [`run`] (open + serve, for tests and embedding), or
//! [`open_store`] then [`serve`]; [`cli`] is what the binary calls.

pub mod bufpool;
pub mod cli;
pub mod http;
pub mod index;
pub mod record;
pub mod stats;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use http::{TIME_HEADER, serve};
pub use record::MAX_NAME_LEN;

/// The scrub's default rate: 20 MiB/s (a pass over 4 TB in about 2.3
/// days), in bytes per second.
pub const DEFAULT_SCRUB_RATE: u64 = 20 << 20;

/// Settings of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Directory of the volume files; must exist.
    pub data_dir: PathBuf,
    /// Largest accepted upload in bytes (413 above).
    pub max_body: u64,
    /// A volume is closed and a new one started once it would pass this.
    pub volume_size: u64,
    /// How long an upload's body may stall before 408.
    pub body_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// How long a request head may take to arrive, counted from the end
    /// of the previous request on a kept-alive connection (so it is also
    /// the idle keep-alive timeout; hyper's `header_read_timeout`).
    pub head_timeout: Duration,
    /// Connections served at once; one more is answered 503 at once.
    pub max_connections: usize,
    /// The floor under the rate at which clients read files.
    pub send_rule: crate::send_floor::SendRule,
    /// Bytes per second the background scrub reads at most (0: off).
    pub scrub_rate: u64,
}

impl NodeConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            max_body: 1 << 30,
            volume_size: 4 << 30,
            body_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            head_timeout: Duration::from_secs(20),
            max_connections: 4096,
            send_rule: crate::send_floor::SendRule::DEFAULT,
            scrub_rate: DEFAULT_SCRUB_RATE,
        }
    }
}

/// Errors that stop a node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot listen on {addr} ({cause}); check the host and port arguments, or stop the process using that port"
    )]
    Bind { addr: String, cause: std::io::Error },
}

/// Opens the store in the configured data directory, rebuilding the index
/// from the volumes (this reads them all).
pub async fn open_store(config: &NodeConfig) -> Result<Arc<Store>, NodeError> {
    let dir = config.data_dir.clone();
    let size = config.volume_size;
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, size))
        .await
        .map_err(|_| StoreError::Closed)??;
    Ok(Arc::new(store))
}

/// Opens the store and serves it: the whole node.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let store = open_store(&config).await?;
    serve(listener, store, &config, shutdown).await;
    Ok(())
}
