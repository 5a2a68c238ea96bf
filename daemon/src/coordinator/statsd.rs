//! Statsd over UDP, when the fifth argument names a server: the original's
//! gauges every interval (`total_size`, `used_size`, `queue_length`,
//! `total_shards`, `available_space`, and per shard
//! `<id>.<rw|ro>.current_size|capacity_size|available_size`), and per
//! upload the counter `add_photo.ok` or `add_photo.error` with its timing.
//!
//! Sending never slows an upload: events go through a bounded channel
//! (dropped when full) to one task that packs them into packets.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::App;
use super::stats::ClusterFigures;
use backpack_shared::model::takes_writes;

/// Largest packet we send (fits a typical MTU).
const MAX_PACKET: usize = 1400;

/// The upload path's side: cheap, never blocks.
pub struct Statsd {
    tx: mpsc::Sender<String>,
    prefix: String,
}

impl Statsd {
    pub fn upload(&self, ok: bool, took: Duration) {
        let name = if ok {
            "add_photo.ok"
        } else {
            "add_photo.error"
        };
        let ms = took.as_secs_f64() * 1000.0;
        let _ = self.tx.try_send(format!(
            "{p}{name}:1|c\n{p}{name}:{ms:.3}|ms",
            p = self.prefix
        ));
    }
}

/// Opens the socket. The address is resolved once, at start.
pub async fn open(target: &str, prefix: &str) -> Result<(Statsd, Sender), String> {
    let bad = |e: String| {
        format!("cannot resolve the statsd address {target} ({e}); give it as host:port")
    };
    let addr = tokio::net::lookup_host(target)
        .await
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".into()))?;
    let any = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(any)
        .await
        .map_err(|e| format!("cannot open a UDP socket for statsd: {e}"))?;
    socket.connect(addr).await.map_err(|e| bad(e.to_string()))?;
    let (tx, rx) = mpsc::channel(4096);
    Ok((
        Statsd {
            tx,
            prefix: prefix.to_string(),
        },
        Sender {
            socket,
            rx,
            prefix: prefix.to_string(),
        },
    ))
}

/// The task's side.
pub struct Sender {
    socket: UdpSocket,
    rx: mpsc::Receiver<String>,
    prefix: String,
}

impl Sender {
    /// Sends events as they come and gauges every `every`, until `stop`.
    pub fn spawn(
        mut self,
        app: std::sync::Weak<App>,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut packet = String::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let Some(app) = app.upgrade() else { break };
                        for line in gauges(&app, &self.prefix).await {
                            self.add(&mut packet, &line).await;
                        }
                        self.send(&mut packet).await;
                    }
                    ev = self.rx.recv() => {
                        let Some(ev) = ev else { break };
                        self.add(&mut packet, &ev).await;
                        // Take what else is waiting, then send.
                        while let Ok(ev) = self.rx.try_recv() {
                            self.add(&mut packet, &ev).await;
                        }
                        self.send(&mut packet).await;
                    }
                }
            }
            self.send(&mut packet).await;
        })
    }

    async fn add(&self, packet: &mut String, lines: &str) {
        if !packet.is_empty() && packet.len() + 1 + lines.len() > MAX_PACKET {
            self.send(packet).await;
        }
        if !packet.is_empty() {
            packet.push('\n');
        }
        packet.push_str(lines);
    }

    async fn send(&self, packet: &mut String) {
        if packet.is_empty() {
            return;
        }
        if let Err(e) = self.socket.send(packet.as_bytes()).await {
            tracing::debug!(error = %e, "statsd packet not sent");
        }
        packet.clear();
    }
}

/// The original's gauges, one line each.
async fn gauges(app: &Arc<App>, prefix: &str) -> Vec<String> {
    let view = app.view.borrow().clone();
    let f = ClusterFigures::of(&view);
    let queue = match &view.queue {
        Some(q) => q.len().await.overall,
        None => None,
    };
    let mut out = vec![
        format!("{prefix}total_size:{}|g", f.total_size),
        format!("{prefix}used_size:{}|g", f.used_size),
        format!("{prefix}total_shards:{}|g", f.total_shards),
        format!("{prefix}available_space:{}|g", f.available_space),
    ];
    if let Some(q) = queue {
        out.push(format!("{prefix}queue_length:{q}|g"));
    }
    for (id, shard) in &view.shards {
        let Some(size) = view.sizes.get(id) else {
            continue;
        };
        let mode = if takes_writes(shard, size) {
            "rw"
        } else {
            "ro"
        };
        out.push(format!(
            "{prefix}{id}.{mode}.current_size:{}|g",
            size.used()
        ));
        out.push(format!(
            "{prefix}{id}.{mode}.capacity_size:{}|g",
            size.capacity
        ));
        out.push(format!(
            "{prefix}{id}.{mode}.available_size:{}|g",
            size.free()
        ));
    }
    out
}
