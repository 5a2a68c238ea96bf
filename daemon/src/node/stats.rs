//! Request counters for `/stats`: count, bytes and the mean latency of the
//! last 1000 requests, as the original node reported them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const WINDOW: usize = 1000;

/// Counters of one kind of request (GETs or PUTs).
#[derive(Default)]
pub struct OpStats {
    count: AtomicU64,
    bytes: AtomicU64,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    ms: Vec<f64>,
    next: usize,
}

/// What `/stats` shows for one kind of request.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct OpSnapshot {
    pub count: u64,
    pub bytes: u64,
    /// Mean milliseconds over the last 1000 requests (0 when none).
    pub avg: f64,
}

impl OpStats {
    pub fn record(&self, bytes: u64, took: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let ms = took.as_secs_f64() * 1000.0;
        if r.ms.len() < WINDOW {
            r.ms.push(ms);
        } else {
            let i = r.next;
            r.ms[i] = ms;
        }
        r.next = (r.next + 1) % WINDOW;
    }

    pub fn snapshot(&self) -> OpSnapshot {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let avg = if r.ms.is_empty() {
            0.0
        } else {
            r.ms.iter().sum::<f64>() / r.ms.len() as f64
        };
        OpSnapshot {
            count: self.count.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            avg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_covers_the_last_thousand() {
        let s = OpStats::default();
        assert_eq!(s.snapshot().avg, 0.0);
        for _ in 0..1000 {
            s.record(1, Duration::from_millis(10));
        }
        for _ in 0..1000 {
            s.record(2, Duration::from_millis(2));
        }
        let snap = s.snapshot();
        assert_eq!(snap.count, 2000);
        assert_eq!(snap.bytes, 3000);
        assert!((snap.avg - 2.0).abs() < 1e-9, "{}", snap.avg);
    }
}
