//! backpack-console: the cluster's terminal console.
//!
//! Code map (tokio-console's layout):
//! - [`cli`]: arguments; [`app`]: the loop and the background pollers;
//!   [`term`]: the terminal guard (restores on exit, error and panic).
//! - [`event`]: the one closed [`event::Event`] enum every source feeds.
//! - [`state`]: `State::update(now, event) -> Vec<Command>`, no IO; its
//!   rooms are types, changes (the cluster diff), tables, keys, writes and
//!   the command line.
//! - [`rows`], [`forms`], [`growth`], [`checks`] (a shard's health from
//!   its last check): pure pieces of the state.
//! - [`view`]: `impl Widget for &State`, no IO; theme, header, tables,
//!   queue, details, bar (result line and keys), overlays.
//! - [`layout`]: the screen's sizes, read by both the state (paging) and
//!   the view (drawing), so neither imports the other.
//! - [`demo`]: made-up clusters for tests, snapshots and measurements.
//!
//! Logs go to a file (`--log-file`), never to the terminal drawn on.

pub mod app;
pub mod checks;
pub mod cli;
pub mod demo;
pub mod event;
pub mod fmt;
pub mod forms;
pub mod growth;
pub mod layout;
pub mod rows;
pub mod state;
pub mod term;
pub mod view;

pub use app::main_entry;
