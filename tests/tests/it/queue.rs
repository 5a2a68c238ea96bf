//! queue tests
