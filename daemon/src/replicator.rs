//! replicator (work in progress)
