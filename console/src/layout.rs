//! The screen's layout maths, in one place for both halves: the state
//! (how far PageDown moves, what scrolling keeps in sight) and the view
//! (where it draws). Neither imports the other for it; both read this.

use crate::fmt::wrap;
use crate::rows::KeepingWarning;
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

/// The Queue view's warnings about its servers, line by line as drawn on
/// a terminal `columns` wide: a mark (`✗` evicts, `!` the lesser one),
/// the text wrapped under it, and at most a third of the body, so the
/// tasks keep their room. Each line says whether it is an eviction's.
pub fn queue_warning_lines(
    warnings: &[KeepingWarning],
    columns: u16,
    body: usize,
) -> Vec<(bool, String)> {
    let mut out = vec![];
    for w in warnings {
        let mark = if w.evicts { "✗" } else { "!" };
        // "  ✗ " before the text, one column spare at the right.
        let lines = wrap(&w.text, (columns as usize).saturating_sub(5));
        for (i, line) in lines.into_iter().enumerate() {
            let lead = if i == 0 {
                format!("  {mark} ")
            } else {
                "    ".into()
            };
            out.push((w.evicts, format!("{lead}{line}")));
        }
    }
    out.truncate(body / 3);
    out
}

/// Table rows that fit in a view of `body` rows (what PageDown moves by).
/// `queue_above` is what the Queue view lists above its summary: its
/// server lines and warning lines.
pub fn page_rows(tab: Tab, body: usize, queue_above: usize) -> usize {
    match tab {
        // header, separator, totals
        Tab::Shards => body.saturating_sub(3),
        // servers header + servers + summary + warnings + blank + tasks header
        Tab::Queue => body.saturating_sub(queue_above + 4),
        _ => body.saturating_sub(1),
    }
}
