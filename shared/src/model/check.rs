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
    /// Who ran it (a replicator's name, or `check-shard`).
    pub by: String,
    /// Why it could not run to the end, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ShardCheck {
    /// Every node held every file at its newest version.
    pub fn whole(&self) -> bool {
        self.error.is_none() && self.missing == 0 && self.older == 0
    }
}

/// `check-requests/<id>`: check shard `<id>` soon (and repair it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub repair: bool,
    /// When asked, ms since the Unix epoch.
    pub asked_ms: u64,
}
