//! Everything that can happen to the console, as one closed enum.
//!
//! Every source (keyboard, ZooKeeper watches, the Redis and node-health
//! pollers, finished actions, the clock) feeds the loop in [`crate::app`],
//! which hands each event to [`crate::state::State::update`].

use std::sync::Arc;
use std::time::Duration;

use backpack_shared::live::ClusterState;
use backpack_shared::model::HostPort;
use backpack_shared::queue::{Keeping, Lock, TaskInfo};
use crossterm::event::KeyEvent;

/// Unix time in milliseconds: the console's only clock, passed in.
pub type Millis = u64;

#[derive(Debug, Clone)]
pub enum Event {
    Key(KeyEvent),
    /// The terminal's new size (columns, rows).
    Resize(u16, u16),
    /// A new snapshot of the cluster from the ZooKeeper watches.
    Cluster(Arc<ClusterState>),
    /// One round of the Redis poller.
    Queue(QueueReport),
    /// How each queue Redis keeps items (`maxmemory-policy`, `appendonly`):
    /// read when the queue changes, on `r` and every 30 s, not every round
    /// (`CONFIG GET` is not free, and these settings rarely change).
    Keeping(Vec<Keeping>),
    /// Results of node `/stats` checks (a batch, not every server).
    Health(Vec<(HostPort, Health)>),
    /// An action started by a [`crate::state::Command`] finished.
    Done {
        id: u64,
        result: Result<String, String>,
    },
    /// The clock moved (once a second): ages and the header clock follow.
    Tick,
    /// A signal asked the console to stop.
    Quit,
}

/// What one node's `GET /stats` said.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Up {
        /// Round trip of the `/stats` request.
        latency_ms: u32,
        gets: Option<u64>,
        puts: Option<u64>,
        /// Mean milliseconds of the node's last 1000 GETs and PUTs.
        get_avg_ms: Option<f64>,
        put_avg_ms: Option<f64>,
        at: Millis,
    },
    Down {
        error: String,
        at: Millis,
    },
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up { .. })
    }
    pub fn at(&self) -> Millis {
        match self {
            Health::Up { at, .. } | Health::Down { at, .. } => *at,
        }
    }
}

/// One round of the Redis poller: what the queue looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReport {
    pub key: String,
    /// Length per Redis server, or why it did not answer.
    pub per_server: Vec<(HostPort, Result<u64, String>)>,
    pub overall: Option<u64>,
    pub oldest: Option<Duration>,
    pub dead_count: Option<u64>,
    /// A sample of queued items.
    pub sample: Vec<TaskInfo>,
    /// Dead-letter items (up to a limit).
    pub dead: Vec<TaskInfo>,
    /// Locks held now, or why they could not be listed.
    pub locks: Result<Vec<Lock>, String>,
}
