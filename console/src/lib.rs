//! backpack-console: the cluster's terminal console.
//!
//! Code map (tokio-console's layout):
//! - [`cli`]: arguments; [`app`]: the loop and the background pollers;
//!   [`term`]: the terminal guard (restores on exit, error and panic).
//! - [`event`]: the one closed [`event::Event`] enum every source feeds.
//! - [`state`]: `State::update(now, event) -> Vec<Command>`, no IO.
//! - [`rows`], [`forms`], [`growth`]: pure pieces of the state.
//! - [`view`]: `impl Widget for &State`, no IO.
//! - [`demo`]: made-up clusters for tests, snapshots and measurements.
//!
//! Logs go to a file (`--log-file`), never to the terminal drawn on.

pub mod app;
pub mod cli;
pub mod demo;
pub mod event;
pub mod fmt;
pub mod forms;
pub mod growth;
pub mod rows;
pub mod state;
pub mod term;
pub mod view;

pub use app::main_entry;
