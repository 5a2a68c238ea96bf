//! The integration tests: one binary (see ARCHITECTURE.md), a module per
//! topic, what they set up in `common`. Daemons run in-process through
//! their library entry points against real ZooKeeper, Redis and storage
//! nodes; tests that need real processes run the workspace's binaries
//! (`backpack_tests::bin`) under `backpack_tests::Process`.
#![allow(clippy::unwrap_used)]

mod check;
mod clocks;
mod common;
mod convergence;
mod fill;
mod health;
mod hostile;
mod lifecycle;
mod names;
mod queue;
mod read;
mod replicator;
mod seed;
mod upload;
mod zk;
