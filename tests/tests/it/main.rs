//! The integration tests: one binary (see ARCHITECTURE.md). Daemons run
//! in-process through their library entry points against real ZooKeeper,
//! Redis and storage nodes; tests that need real processes use
//! `backpack_tests::bin`.
#![allow(clippy::unwrap_used)]

mod clocks;
mod cluster;
mod common;
mod convergence;
mod coordinator;
mod names;
mod queue;
mod replicator;
mod seed;
mod zk;
