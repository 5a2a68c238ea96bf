//! zk tests
