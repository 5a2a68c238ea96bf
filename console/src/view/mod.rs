//! Rendering: `impl Widget for &State`. No IO and no mutation; the clock
//! is the one the state was last updated with. Only the visible rows of a
//! table are built, so 1,000 shards cost what a screenful does.
//!
//! The rooms, top to bottom of the screen: `header` (where, the
//! connection, the figures, the tab bar), `tables` and `queue` (the
//! views' bodies), `details` (the lines under a table and the Enter
//! overlay), `bar` (the result line and the key bar), `overlays`
//! (help, forms, questions); `theme` styles them all. Sizes come from
//! [`crate::layout`], which the state pages with too.

mod bar;
mod details;
mod header;
mod overlays;
mod queue;
mod tables;
mod theme;

pub use details::detail_text;
pub use overlays::HELP;
pub use tables::daemon_summary;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Paragraph, Widget};

use crate::layout::{DETAIL, HEADER, KEY_BAR, STATUS, TAB_BAR};
use crate::state::{Mode, State, Tab};
use theme::Theme;

impl Widget for &State {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme {
            color: self.config.color,
        };
        let [header, tabs, body, detail, status, keys] = Layout::vertical([
            Constraint::Length(HEADER),
            Constraint::Length(TAB_BAR),
            Constraint::Min(0),
            Constraint::Length(DETAIL),
            Constraint::Length(STATUS),
            Constraint::Length(KEY_BAR),
        ])
        .areas(area);
        header::render_header(self, theme, header, buf);
        header::render_tabs(self, theme, tabs, buf);
        let stale = !self.connected();
        match self.tab {
            Tab::Shards => tables::render_shards(self, theme, body, buf),
            Tab::Servers => tables::render_servers(self, theme, body, buf),
            Tab::Queue => queue::render_queue(self, theme, body, buf),
            Tab::Daemons => tables::render_daemons(self, theme, body, buf),
            Tab::Events => tables::render_events(self, theme, body, buf),
        }
        if stale && self.cluster.conn.is_some() {
            // The last known state, dimmed while the session is away.
            buf.set_style(body, Style::new().add_modifier(Modifier::DIM));
        }
        Paragraph::new(details::detail_lines(self, theme))
            .style(theme.dim().remove_modifier(Modifier::DIM))
            .render(detail, buf);
        bar::render_status(self, theme, status, buf);
        Paragraph::new(bar::key_bar(self, theme, keys.width as usize)).render(keys, buf);
        match &self.mode {
            Mode::Help => overlays::render_help(self, theme, area, buf),
            Mode::Details => details::render_details(self, theme, area, buf),
            Mode::Form(f) => overlays::render_form(self, theme, f, area, buf),
            Mode::Confirm(c) => overlays::render_confirm(theme, c, area, buf),
            Mode::Normal | Mode::Filter | Mode::Command(_) => {}
        }
    }
}
