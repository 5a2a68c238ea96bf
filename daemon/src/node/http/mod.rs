//! The node's HTTP API, served by hyper. (A hand-written HTTP/1.1 server
//! with `sendfile` served it until measured against hyper in one run:
//! it did not win by the 15% that protocol code of our own must earn, and
//! hyper used less CPU per 100 KB GET; `bench/README-node.md`.)
//!
//! - `PUT /<name>`: 201 once durable; 411 without Content-Length, 400 when
//!   the body ends early, 413 over `--max-body`, 414 for a name over
//!   [`MAX_NAME_LEN`], 400 for any other name that is not a valid
//!   [`Name`] (the same rules as the coordinator's: a file stored here can
//!   always be copied to the shard's other nodes), 408 when the body stalls.
//! - `GET /<name>`, `HEAD /<name>`: 200 with Content-Length and
//!   `X-Backpack-Time`, 404 when unknown.
//! - `GET /stats`: counters and store figures (the scrub's under `scrub`);
//!   `GET /health`: readiness.
//! - `GET //files?from=&to=`: the files held, streamed in key order
//!   ([`listing`]); any other `//` path: 404.
//! - Anything else: 405.
//!
//! The name is the request target exactly as received (path and query,
//! percent-encoding untouched). Errors are JSON `{"error": "..."}`; 5xx
//! are also logged.
//!
//! Rooms: `api.rs` is the API (names, versions, the store calls, stats,
//! error answers) and knows nothing of hyper; `request.rs` what it needs
//! of a request head; `server.rs` carries it over hyper (connections,
//! bodies, files as response bodies).
//!
//! [`MAX_NAME_LEN`]: super::MAX_NAME_LEN
//! [`Name`]: backpack_shared::model::Name

mod api;
pub mod listing;
mod request;
mod server;

use super::NodeConfig;
use super::store::Store;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

pub use crate::node_client::TIME_HEADER;

/// Serves an opened store on `listener` until `shutdown` is cancelled;
/// returns after in-flight requests finished (or the configured deadline
/// passed) and the store is closed.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    config: &NodeConfig,
    shutdown: CancellationToken,
) {
    let app = Arc::new(api::App::new(store.clone(), config));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, data_dir = %config.data_dir.display(), "backpack-node listening");
    }
    if let Err(e) = store.start_scrub(config.scrub_rate) {
        error!(error = %e, "the scrub did not start; stored records are verified only at start-up and by reads");
    }
    // The scrub stops at shutdown's start, not after the requests drain.
    let scrub_store = store.clone();
    let scrub_shutdown = shutdown.clone();
    let stop_scrub = tokio::spawn(async move {
        scrub_shutdown.cancelled().await;
        scrub_store.stop_scrub();
    });
    server::serve(listener, app, config, shutdown).await;
    stop_scrub.abort();
    if tokio::task::spawn_blocking(move || store.close())
        .await
        .is_err()
    {
        error!("closing the store panicked");
    }
    info!("backpack-node stopped");
}
