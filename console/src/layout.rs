//! The screen's layout maths, in one place for both halves: the state
//! (how far PageDown moves, what scrolling keeps in sight) and the view
//! (where it draws). Neither imports the other for it; both read this.

use crate::state::Tab;

/// The header: where, the connection and the clock; then two lines of figures.
pub const HEADER: u16 = 3;
/// The view names, `[1 Shards]` ...
pub const TAB_BAR: u16 = 1;
/// The two lines about the selected row, under the table.
pub const DETAIL: u16 = 2;
/// The one-line result of the last action.
pub const STATUS: u16 = 1;
/// What the keys do here.
pub const KEY_BAR: u16 = 1;

/// Rows left for a view's body on a terminal `rows` high.
pub fn body_height(rows: u16) -> usize {
    rows.saturating_sub(HEADER + TAB_BAR + DETAIL + STATUS + KEY_BAR) as usize
}

/// How many of the queue's `servers` the Queue view lists above its
/// tasks: all of them, up to a third of the body, and at least one line.
pub fn queue_server_lines(body: usize, servers: usize) -> usize {
    servers.clamp(1, (body / 3).max(1))
}

/// Table rows that fit in a view of `body` rows (what PageDown moves by).
pub fn page_rows(tab: Tab, body: usize, queue_server_lines: usize) -> usize {
    match tab {
        // header, separator, totals
        Tab::Shards => body.saturating_sub(3),
        // servers header + servers + summary + blank + tasks header
        Tab::Queue => body.saturating_sub(queue_server_lines + 4),
        _ => body.saturating_sub(1),
    }
}
