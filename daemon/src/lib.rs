//! backpack-daemon: the cluster's daemons (storage node, coordinator,
//! replicator) and the admin commands. Every binary in `src/bin` is a thin
//! `main` over one function of this library, so tests run the real code
//! in-process.

pub mod accept;
pub mod admin;
pub mod check;
pub mod coordinator;
pub mod node;
pub mod node_client;
pub mod prometheus;
pub mod raw_target;
pub mod replicator;
pub mod runtime;
pub mod send_floor;
