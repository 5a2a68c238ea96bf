//! Helpers for the state's unit tests: keys typed at the demo clock, a
//! changed demo cluster, the last Events line.

use std::sync::Arc;

use backpack_shared::live::ClusterState;
use crossterm::event::KeyCode;

use super::{Command, State};
use crate::demo::{self, T0};
use crate::event::Event;

pub(super) fn keys(s: &mut State, text: &str) -> Vec<Command> {
    let mut out = vec![];
    for c in text.chars() {
        out.extend(s.press(T0, KeyCode::Char(c)));
    }
    out
}

pub(super) fn press(s: &mut State, code: KeyCode) -> Vec<Command> {
    s.press(T0, code)
}

pub(super) fn cluster_with(f: impl FnOnce(&mut ClusterState)) -> Event {
    let mut c = demo::cluster();
    c.generation = 9;
    f(&mut c);
    Event::Cluster(Arc::new(c))
}

pub(super) fn last_log(s: &State) -> String {
    s.log.back().map(|e| e.text.clone()).unwrap_or_default()
}
