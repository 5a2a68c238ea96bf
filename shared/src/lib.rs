//! backpack-shared
