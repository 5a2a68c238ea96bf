//! backpack-tests: fixtures
