//! `--metrics-listen`: `GET /metrics` in the Prometheus text format. Queue
//! figures are read from Redis when scraped, each bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use backpack_shared::model::{ShardCheck, parse_json, paths};
use backpack_shared::zk::Zk;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::live::Active;
use super::stats::{QueueFigures, Stats, prometheus};

/// What the endpoint reads.
#[derive(Clone)]
pub struct MetricsState {
    pub stats: Arc<Stats>,
    pub active: watch::Receiver<Option<Arc<Active>>>,
    pub zk: Zk,
    pub concurrency: usize,
}

/// Bound on reading the queue figures for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

async fn queue_figures(active: Option<Arc<Active>>) -> QueueFigures {
    let Some(a) = active else {
        return QueueFigures::default();
    };
    let q = &a.queue;
    let read = async {
        let (len, oldest, dead) = tokio::join!(q.len(), q.oldest_age(), q.dead_len());
        QueueFigures {
            length: len.overall,
            oldest_age: oldest,
            dead: dead.overall,
            servers: len
                .per_server
                .iter()
                .map(|(addr, r)| (addr.to_string(), r.is_ok()))
                .collect(),
            ..QueueFigures::default()
        }
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, read)
        .await
        .unwrap_or_default()
}

/// The shards' last checks, from ZooKeeper.
async fn checks(zk: &Zk) -> Vec<(String, ShardCheck)> {
    let read = async {
        let mut out = Vec::new();
        for id in zk
            .children(paths::CHECKS)
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
        {
            if let Ok(Some((data, _))) = zk.get(&paths::shard_check(&id)).await
                && let Ok(c) = parse_json::<ShardCheck>("shard check", &data)
            {
                out.push((id, c));
            }
        }
        out
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, read)
        .await
        .unwrap_or_default()
}

async fn metrics(State(s): State<MetricsState>) -> impl IntoResponse {
    let active = s.active.borrow().clone();
    let (mut q, checks) = tokio::join!(queue_figures(active), checks(&s.zk));
    q.checks = checks;
    q.now_ms = backpack_shared::clock::now_ms();
    let connected = s.zk.state().borrow().is_connected();
    let body = prometheus(&s.stats.snapshot(), s.concurrency, connected, &q);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Serves `/metrics` until `stop`.
pub async fn serve(listener: TcpListener, state: MetricsState, stop: CancellationToken) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    }
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "metrics endpoint stopped");
    }
}
