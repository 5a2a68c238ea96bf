//! Destination nodes that are down, and until when their tasks wait.
//!
//! When a node fails as a destination (unreachable, 5xx, stalled), every
//! other task for it would fail the same way. So the replicator remembers
//! it for a backoff of its own (doubling from `retry_min` up to
//! `destination_retry_max`), and while it lasts the claimers postpone that
//! node's tasks instead of locking them: 100,000 tasks for a node under
//! maintenance cost neither ZooKeeper locks nor the copy rate of the
//! others. Times are the monotonic clock's (a wall clock stepping does not
//! move a backoff); the queue's due times are each Redis server's. When
//! the backoff ends, one task for it goes through as the
//! probe while the others keep waiting; a copy that succeeds clears the
//! node, a failure doubles its backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a probe may stay unanswered (its claim lost, say) before
/// another task is let through.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Down {
    /// Tasks wait until then.
    until: Instant,
    /// The backoff that set `until`.
    backoff: Duration,
    /// When a probe was let through, if one is out.
    probe: Option<Instant>,
}

/// Per node id, what is known of it as a destination that failed.
#[derive(Debug)]
pub(crate) struct Destinations {
    min: Duration,
    max: Duration,
    down: Mutex<HashMap<String, Down>>,
}

impl Destinations {
    pub fn new(min: Duration, max: Duration) -> Destinations {
        Destinations {
            min,
            max: max.max(min),
            down: Mutex::default(),
        }
    }

    /// How much longer a task for `node` waits, or `None` to take it now:
    /// the node is not known to be down, or its backoff ended and this
    /// task is the probe.
    pub fn wait_for(&self, node: &str) -> Option<Duration> {
        let mut down = self.lock();
        let d = down.get_mut(node)?;
        let now = Instant::now();
        if now < d.until {
            return Some(d.until - now);
        }
        match d.probe {
            Some(at) if now < at + PROBE_TIMEOUT => Some(self.min),
            _ => {
                d.probe = Some(now);
                None
            }
        }
    }

    /// `node` failed as a destination: down for twice the last backoff.
    pub fn failed(&self, node: &str) {
        let mut down = self.lock();
        let backoff = match down.get(node) {
            Some(d) => (d.backoff * 2).min(self.max),
            None => self.min,
        };
        down.insert(
            node.to_string(),
            Down {
                until: Instant::now() + backoff,
                backoff,
                probe: None,
            },
        );
    }

    /// A task for `node` failed for another reason (its source, say): the
    /// node is neither proven up nor down, so let the next task probe it.
    pub fn unsettled(&self, node: &str) {
        if let Some(d) = self.lock().get_mut(node) {
            d.probe = None;
        }
    }

    /// A copy to `node` succeeded: it is up.
    pub fn ok(&self, node: &str) {
        let mut down = self.lock();
        if down.remove(node).is_some() {
            tracing::info!(node, "destination node back; its tasks are copied again");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_node_waits_longer_each_time_until_a_copy_succeeds() {
        let d = Destinations::new(Duration::from_secs(1), Duration::from_secs(4));
        assert_eq!(d.wait_for("4"), None);
        let at = |d: &Destinations| d.wait_for("4").map(|t| t.as_millis());
        d.failed("4");
        assert!(at(&d).is_some_and(|ms| (900..=1000).contains(&ms)));
        d.failed("4");
        assert!(at(&d).is_some_and(|ms| (1900..=2000).contains(&ms)));
        d.failed("4");
        d.failed("4");
        assert!(at(&d).is_some_and(|ms| (3900..=4000).contains(&ms)));
        assert_eq!(d.wait_for("5"), None);
        d.ok("4");
        assert_eq!(d.wait_for("4"), None);
    }

    #[test]
    fn when_the_backoff_ends_one_task_probes_and_the_others_wait() {
        let d = Destinations::new(Duration::from_millis(1), Duration::from_millis(1));
        d.failed("4");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.wait_for("4"), None, "the probe");
        assert!(d.wait_for("4").is_some(), "the others wait for it");
        assert!(d.wait_for("4").is_some());
        d.failed("4");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.wait_for("4"), None, "the next probe");
        d.ok("4");
        assert_eq!(d.wait_for("4"), None);
        assert_eq!(d.wait_for("4"), None);
    }
}
