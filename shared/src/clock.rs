//! The wall clock, read in one place: milliseconds since the Unix epoch,
//! the unit of every time the cluster writes down (announcements, task
//! queue times, start times).
//!
//! Nothing decides across machines by this clock (see ARCHITECTURE.md,
//! versions and clocks): it stamps, it does not order.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now; 0 for a clock set before 1970.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_2020() {
        // 2020-01-01T00:00:00Z
        assert!(now_ms() > 1_577_836_800_000);
    }
}
