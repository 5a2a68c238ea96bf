//! backpack-shared: what every part of backpack-cluster shares.
//!
//! - [`cli`]: what every command's line shares: the ZooKeeper arguments
//!   ([`cli::ZkArgs`]) and the size notation of flags.
//! - [`clock`]: the wall clock in milliseconds, read in one place.
//! - [`model`]: the cluster's ZooKeeper JSON documents, size notation, the
//!   shard choice and the replication task. Pure: no IO.
//! - [`ops`]: the map changes (add server, add shard, enable, ...) as pure
//!   validations over the current maps, shared by the admin commands and the
//!   console.
//! - [`zk`]: ZooKeeper access: sessions that survive expiry, watches,
//!   the compare-and-set helper that applies [`ops`].
//! - [`live`]: the whole cluster configuration followed live from ZooKeeper
//!   watches (servers, shards, sizes, queue, live daemons).
//! - [`queue`]: the replication queue over several Redis servers, in the
//!   original's wire format, plus our documented additions.

pub mod cli;
pub mod clock;
pub mod live;
pub mod model;
pub mod ops;
pub mod queue;
pub mod zk;
