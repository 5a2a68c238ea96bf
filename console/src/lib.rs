//! backpack-console
