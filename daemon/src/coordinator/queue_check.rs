//! Whether the queue's Redis servers can lose queued copies.
//!
//! A queue Redis whose `maxmemory-policy` evicts any key (`allkeys-*`)
//! drops the whole queue set under memory pressure from anything else it
//! holds: every queued copy gone, its file left on one node, nothing
//! warned. The coordinator reads each server's policy and persistence at
//! start, when the queue changes and every `queue_check_every`, and, unless
//! `--allow-evicting-queue`, refuses uploads while one evicts (503: the
//! file would be acknowledged with its copies at risk), saying why in the
//! log, `/health` and `/metrics`.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use backpack_shared::queue::Keeping;
use tokio_util::sync::CancellationToken;

use super::App;

/// The last reading of each queue server.
#[derive(Debug, Default)]
pub struct QueueCheck {
    last: Mutex<Vec<Keeping>>,
}

impl QueueCheck {
    /// The last reading.
    pub fn servers(&self) -> Vec<Keeping> {
        self.lock().clone()
    }

    /// The servers that evict, as `host:port (policy)`, if any.
    pub fn evicting(&self) -> Option<String> {
        let list: Vec<String> = self
            .lock()
            .iter()
            .filter(|k| k.evicts())
            .map(|k| format!("{} ({})", k.addr, k.policy.as_deref().unwrap_or("?")))
            .collect();
        (!list.is_empty()).then(|| list.join(", "))
    }

    fn set(&self, now: Vec<Keeping>) {
        let mut last = self.lock();
        for k in &now {
            let before = last.iter().find(|b| b.addr == k.addr);
            let changed =
                before.is_none_or(|b| b.policy != k.policy || b.appendonly != k.appendonly);
            if !changed {
                continue;
            }
            if k.evicts() {
                tracing::error!(server = %k.addr, policy = ?k.policy, "queue Redis may evict queued copies under memory pressure; set maxmemory-policy noeviction on it (uploads are refused meanwhile unless --allow-evicting-queue)");
            } else if k.appendonly == Some(false) {
                tracing::warn!(server = %k.addr, "queue Redis does not persist (appendonly no): a restart empties it and its queued copies are lost; set appendonly yes");
            } else if k.policy.is_some() {
                tracing::info!(server = %k.addr, policy = ?k.policy, appendonly = ?k.appendonly, "queue Redis keeps its items");
            } else if let Some(e) = &k.error {
                tracing::debug!(server = %k.addr, error = %e, "cannot read the queue Redis's settings");
            }
        }
        *last = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Keeping>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads the servers' settings now, when the queue changes and every
/// `every`, until `stop`.
pub fn spawn(app: Weak<App>, check: Arc<QueueCheck>, every: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let Some(mut view) = app.upgrade().map(|a| a.view.clone()) else {
            return;
        };
        loop {
            let queue = view.borrow_and_update().queue.clone();
            if let Some(queue) = queue {
                check.set(queue.keeping().await);
            }
            tokio::select! {
                r = view.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}
