//! replicator tests
