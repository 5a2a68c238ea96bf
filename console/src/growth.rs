//! Recent growth of each shard, for the fill-up estimate (FULL IN).
//!
//! Each shard keeps a short history of (time, bytes used): at most one
//! sample per [`SPACING_MS`] and none older than [`WINDOW_MS`], so memory
//! stays bounded (about 120 samples a shard). The rate is measured from the
//! oldest sample to *now*, so a shard that stopped growing sees its rate
//! fall instead of keeping its last burst.

use std::collections::VecDeque;

use crate::event::Millis;

pub const WINDOW_MS: Millis = 3_600_000;
pub const SPACING_MS: Millis = 30_000;
/// Below this much history the rate is too noisy to extrapolate.
pub const MIN_SPAN_MS: Millis = 10_000;

#[derive(Debug, Clone, Default)]
pub struct Growth {
    samples: VecDeque<(Millis, u64)>,
}

impl Growth {
    /// Records the bytes used at `now`.
    pub fn record(&mut self, now: Millis, used: u64) {
        if let Some(&(_, last)) = self.samples.back()
            && last == used
        {
            return;
        }
        if used < self.samples.back().map_or(0, |s| s.1) {
            // The accounting went down (a reset, a re-pointed shard): start over.
            self.samples.clear();
        }
        let n = self.samples.len();
        if n >= 2 && now.saturating_sub(self.samples[n - 2].0) < SPACING_MS {
            self.samples[n - 1] = (now, used);
        } else {
            self.samples.push_back((now, used));
        }
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|s| now.saturating_sub(s.0) > WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the recent window, if known and positive.
    pub fn rate(&self, now: Millis) -> Option<f64> {
        let (t0, u0) = *self.samples.front()?;
        let (_, u1) = *self.samples.back()?;
        let span = now.saturating_sub(t0);
        if span < MIN_SPAN_MS || u1 <= u0 {
            return None;
        }
        Some((u1 - u0) as f64 / (span as f64 / 1000.0))
    }

    /// Bytes added within the window, and over how long (to now).
    pub fn added(&self, now: Millis) -> Option<(u64, Millis)> {
        let (t0, u0) = *self.samples.front()?;
        let (_, u1) = *self.samples.back()?;
        let span = now.saturating_sub(t0);
        (span >= MIN_SPAN_MS && u1 > u0).then_some((u1 - u0, span))
    }

    /// Seconds until `free` bytes are used at the recent rate.
    pub fn full_in(&self, now: Millis, free: u64) -> Option<f64> {
        let rate = self.rate(now)?;
        Some(free as f64 / rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_estimate() {
        let mut g = Growth::default();
        g.record(0, 1000);
        assert_eq!(g.rate(5_000), None, "too little history");
        g.record(60_000, 1000 + 60 * 100);
        // 100 bytes a second over a minute
        let r = g.rate(60_000).unwrap_or_default();
        assert!((r - 100.0).abs() < 1e-9, "{r}");
        assert_eq!(g.full_in(60_000, 1000), Some(10.0));
        // no growth since: the rate falls
        let later = g.rate(120_000).unwrap_or_default();
        assert!((later - 50.0).abs() < 1e-9, "{later}");
    }

    #[test]
    fn bounded_and_resets_on_decrease() {
        let mut g = Growth::default();
        for i in 0..10_000u64 {
            g.record(i * 1000, i * 10);
        }
        assert!(g.samples.len() <= (WINDOW_MS / SPACING_MS) as usize + 6);
        g.record(10_000_001, 5);
        assert_eq!(g.samples.len(), 1);
        assert_eq!(g.rate(10_100_000), None);
    }
}
