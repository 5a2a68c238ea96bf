//! The coordinator's announcement: the ephemeral znode
//! `<root>/coordinators/<host:port>` holding JSON (version, start time,
//! pid, counters), refreshed every few seconds, so the console shows live
//! coordinators. It vanishes with the session (a crash) or is deleted on
//! shutdown. The original daemons ignore it.

use std::net::SocketAddr;
use std::sync::Weak;
use std::time::Duration;

use backpack_shared::model::paths;
use backpack_shared::zk::{Zk, spawn_announcer};
use tokio_util::sync::CancellationToken;

use super::App;
use backpack_shared::clock::now_ms;

/// The name under `coordinators/`: `--announce-as`, else the listening
/// address, with the machine's host name for a wildcard address.
pub fn announce_name(configured: Option<&str>, addr: SocketAddr) -> String {
    if let Some(name) = configured {
        return name.to_string();
    }
    if addr.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The announcement's JSON now.
pub fn payload(app: &App, name: &str) -> serde_json::Value {
    let c = app.stats.counters();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "address": name,
        "started": app.stats.started_ms(),
        "pid": std::process::id(),
        "updated": now_ms(),
        "ready": app.view.borrow().ready,
        "processed_uploads": c.processed_uploads,
        "processed_bytes": c.processed_bytes,
        "failed_uploads": c.failed_uploads,
        "failed_bytes": c.failed_bytes,
        "rejected_uploads": c.rejected_uploads,
        "pending_fill_bytes": app.fill.pending_total(),
    })
}

/// Keeps the announcement alive until `stop` (then deletes it).
pub fn spawn(
    zk: Zk,
    app: Weak<App>,
    name: String,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let znode = format!("{}/{name}", paths::COORDINATORS);
    spawn_announcer(
        zk,
        znode,
        every,
        move || match app.upgrade() {
            Some(app) => payload(&app, &name).to_string().into_bytes(),
            None => b"{}".to_vec(),
        },
        stop,
    )
}
