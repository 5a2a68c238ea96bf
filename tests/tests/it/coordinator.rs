//! coordinator tests
