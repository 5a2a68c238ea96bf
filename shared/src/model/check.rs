//! The documents of shard checks, kept in ZooKeeper under our own znodes
//! (the original never reads them): the last check of each shard, and
//! checks an operator asked for.

use serde::{Deserialize, Serialize};

/// `checks/<id>`: the last check of a shard, written by whoever ran it
/// (the elected checker, or `backpack-coordinator-check-shard`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheck {
    /// When it finished, ms since the Unix epoch.
    pub when_ms: u64,
    /// Distinct files on any node of the shard, and their newest copies'
    /// bytes.
    pub files: u64,
    pub bytes: u64,
    /// Copies missing, summed over the shard's nodes.
    pub missing: u64,
    /// Copies older than the newest, summed over the nodes.
    pub older: u64,
    /// Damaged records the nodes' scrubs have found (since they started).
    pub damaged: u64,
    /// Replication tasks queued to repair it (0 without repair), and the
    /// bytes they copy.
    pub queued: u64,
    #[serde(default)]
    pub queued_bytes: u64,
    /// Bytes of the newest copies the nodes lack (missing or older).
    #[serde(default)]
    pub to_go_bytes: u64,
    /// The check before this one, while the shard was not whole: when
    /// (ms) and how many copies were lacking then; the rebuild's rate and
    /// ETA come from the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// Who ran it (a replicator's name, or `check-shard`).
    pub by: String,
    /// Why it could not run to the end, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An earlier check of a shard being repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub when_ms: u64,
    /// Copies lacking then (missing + older).
    pub to_go: u64,
}

impl ShardCheck {
    /// Every node held every file at its newest version.
    pub fn whole(&self) -> bool {
        self.error.is_none() && self.missing == 0 && self.older == 0
    }

    /// Copies lacking: missing plus older.
    pub fn to_go(&self) -> u64 {
        self.missing + self.older
    }

    /// Copies made per second between the previous check and this one
    /// (`None` without a previous check, or when none was made).
    pub fn rate_per_sec(&self) -> Option<f64> {
        let p = self.previous?;
        let secs = self.when_ms.checked_sub(p.when_ms)? as f64 / 1000.0;
        let made = p.to_go.checked_sub(self.to_go())?;
        (secs > 0.0 && made > 0).then(|| made as f64 / secs)
    }

    /// Seconds until the last copy at that rate.
    pub fn eta_secs(&self) -> Option<u64> {
        let rate = self.rate_per_sec()?;
        Some((self.to_go() as f64 / rate).ceil() as u64)
    }

    /// What a new check `next` of the same shard keeps of this one: this
    /// as its previous point while copies were lacking.
    pub fn followed_by(&self, mut next: ShardCheck) -> ShardCheck {
        if self.error.is_none() && self.to_go() > 0 && next.to_go() > 0 {
            next.previous = Some(Previous {
                when_ms: self.when_ms,
                to_go: self.to_go(),
            });
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(when_ms: u64, missing: u64) -> ShardCheck {
        ShardCheck {
            when_ms,
            missing,
            ..ShardCheck::default()
        }
    }

    #[test]
    fn a_rebuild_has_a_rate_and_an_eta_from_two_checks() {
        let first = at(1_000, 1_000);
        assert_eq!(first.rate_per_sec(), None);
        let second = first.followed_by(at(11_000, 600));
        assert_eq!(
            second.previous,
            Some(Previous {
                when_ms: 1_000,
                to_go: 1_000
            })
        );
        assert_eq!(second.rate_per_sec(), Some(40.0));
        assert_eq!(second.eta_secs(), Some(15));
        // Whole: nothing kept.
        assert_eq!(second.followed_by(at(20_000, 0)).previous, None);
        // No progress: no rate.
        assert_eq!(second.followed_by(at(21_000, 600)).rate_per_sec(), None);
    }
}

/// `check-requests/<id>`: check shard `<id>` soon (and repair it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub repair: bool,
    /// When asked, ms since the Unix epoch.
    pub asked_ms: u64,
}
