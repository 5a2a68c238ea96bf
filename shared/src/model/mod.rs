//! The cluster model: the JSON documents stored in ZooKeeper, exactly as the
//! original backpack-coordinator reads and writes them. No IO here.

mod choice;
mod maps;
mod size;
mod task;

pub use choice::{ShardChance, choose_shard, shard_chances};
pub use maps::{
    HostPort, ModelError, QueueInfo, Server, ServersMap, Shard, ShardSize, ShardsMap, parse_json,
    to_json,
};
pub use size::{SizeError, format_size, parse_size};
pub use task::ReplicationTask;

/// Names of the znodes under the cluster root.
pub mod paths {
    pub const SERVERS_MAP: &str = "servers-map";
    pub const SHARDS_MAP: &str = "shards-map";
    pub const QUEUE: &str = "queue";
    /// Ephemeral children: one per live coordinator (`host:port`).
    pub const COORDINATORS: &str = "coordinators";
    /// Ephemeral children: one per live replicator (`host:pid`).
    pub const REPLICATORS: &str = "replicators";

    /// `shard-size-<id>`.
    pub fn shard_size(id: &str) -> String {
        format!("shard-size-{id}")
    }

    /// The shard id of a `shard-size-<id>` znode name.
    pub fn shard_size_id(name: &str) -> Option<&str> {
        name.strip_prefix("shard-size-")
    }
}
