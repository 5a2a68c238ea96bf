//! Styles that honour NO_COLOR: without colour only modifiers remain,
//! and every state is written as a word anyway.

use ratatui::style::{Color, Modifier, Style};

use crate::checks::ShardHealth;
use crate::rows::ShardState;

/// Styles that honour NO_COLOR: without colour only modifiers remain, and
/// every state is written as a word anyway.
#[derive(Clone, Copy)]
pub(super) struct Theme {
    pub(super) color: bool,
}

impl Theme {
    pub(super) fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    pub(super) fn good(self) -> Style {
        self.fg(Color::Green)
    }
    pub(super) fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    pub(super) fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    pub(super) fn dim(self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
    pub(super) fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub(super) fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    pub(super) fn header(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    pub(super) fn selected(self) -> Style {
        // A background, not REVERSED: reversing would invert the gauges.
        if self.color {
            Style::new().bg(Color::Indexed(238))
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    pub(super) fn banner(self) -> Style {
        if self.color {
            Style::new()
                .bg(Color::Red)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    pub(super) fn shard(self, s: ShardState) -> Style {
        match s {
            ShardState::Rw => self.good(),
            ShardState::Ro => self.dim(),
            ShardState::Full => self.bad(),
            ShardState::NoSize => self.warn(),
        }
    }
    pub(super) fn health(self, h: ShardHealth) -> Style {
        match h {
            ShardHealth::Whole => self.good(),
            ShardHealth::Unchecked => self.dim(),
            ShardHealth::Rebuilding { .. } => self.warn(),
            ShardHealth::Unreadable
            | ShardHealth::Failed
            | ShardHealth::Damaged { .. }
            | ShardHealth::Missing(_) => self.bad(),
        }
    }
}
