//! backpack-bench: the benchmark commands, kept out of the daemons'
//! library (they are tools, not the product). Each starts what it needs
//! on loopback and compares against a baseline measured in the same run;
//! the figures are in `bench/README.md` and `bench/README-node.md`.
//!
//! - [`node`]: `backpack-bench-node` (HTTP against nginx, index memory,
//!   start-up);
//! - [`coordinator`]: `backpack-bench-coordinator` (uploads through the
//!   coordinator against uploads straight to a node);
//! - [`replicator`]: `backpack-bench-replicator` (the replicator against a
//!   plain copy, and its latency);
//! - [`kit`]: what they share.
//!
//! The daemons they start are the workspace's built binaries, found next
//! to the benchmark's own by default (`cargo build --release --workspace
//! --bins` puts every package's binaries in one `target/release/`).

pub mod coordinator;
pub mod kit;
pub mod node;
pub mod replicator;
