//! The views' tables: the visible window of rows with the sort column
//! marked, and the Shards (with totals), Servers, Daemons and Events
//! bodies. The Queue body is `super::queue`.

use std::collections::BTreeMap;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Cell, HighlightSpacing, Paragraph, Row, StatefulWidget, Table, TableState, Widget,
};

use backpack_shared::model::format_size;

use super::theme::Theme;
use crate::event::Health;
use crate::fmt::{clock, percent, rate, short_duration};
use crate::rows::{ShardState, flatten};
use crate::state::{LogKind, State, Tab};

/// The header row of a table, marking the sort column.
fn header_row(s: &State, tab: Tab, theme: Theme) -> Row<'static> {
    let t = s.table(tab);
    let cells: Vec<Cell> = tab
        .columns()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if i == t.sort {
                Cell::from(format!("{name}{}", if t.desc { "▼" } else { "▲" }))
            } else {
                Cell::from(name.to_string())
            }
        })
        .collect();
    Row::new(cells).style(theme.header())
}

/// Renders the visible window of a table; `rows` are already that window.
pub(super) fn render_table(
    s: &State,
    tab: Tab,
    theme: Theme,
    rows: Vec<Row<'static>>,
    widths: Vec<Constraint>,
    area: Rect,
    buf: &mut Buffer,
) {
    let t = s.table(tab);
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(header_row(s, tab, theme))
        .column_spacing(1)
        .row_highlight_style(theme.selected())
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut ts = TableState::default();
    if !empty {
        ts.select(Some(t.selected.saturating_sub(t.offset)));
    }
    StatefulWidget::render(table, area, buf, &mut ts);
    if empty && area.height > 1 {
        let msg = if !t.filter.is_empty() {
            format!("  nothing matches /{} (Esc clears the filter)", t.filter)
        } else {
            empty_text(s, tab).to_string()
        };
        let r = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        Paragraph::new(Span::styled(msg, theme.dim())).render(r, buf);
    }
}

fn empty_text(s: &State, tab: Tab) -> &'static str {
    if !s.cluster.ready() {
        return "  waiting for ZooKeeper…";
    }
    match tab {
        Tab::Shards => "  no shards yet: press a to add one",
        Tab::Servers => "  no servers yet: press a to add one",
        Tab::Queue => "  no tasks queued",
        Tab::Daemons => "  no coordinator or replicator announced itself",
        Tab::Events => "  nothing happened yet",
    }
}

pub(super) fn window(s: &State, tab: Tab, page: usize) -> &[usize] {
    let order = &s.order[tab.index()];
    let t = s.table(tab);
    let start = t.offset.min(order.len());
    let end = (start + page).min(order.len());
    &order[start..end]
}

fn gauge(ratio: f64, width: usize) -> String {
    let filled = ((ratio.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

pub(super) fn render_shards(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = s.page_rows(Tab::Shards);
    let w = area.width as usize;
    // marker 2 + ID 5 + STATE 5 + USED/CAP 18 + WRITES 6 + FULL IN 7 +
    // HEALTH 12 + CHECKED 7 + spacing 8 = 70, NODES 9 at least where the
    // gauge fits, and the FILL percentage 5: the gauge takes what is left,
    // and goes below 6 columns (the percentage stays).
    let gauge_w = w.saturating_sub(70 + 9 + 5).min(30);
    let gauge_w = if gauge_w < 6 { 0 } else { gauge_w };
    let fill_cell = |ratio: f64, style: Style| {
        let pct = format!("{:>4}", percent(ratio));
        if gauge_w == 0 {
            Line::from(pct)
        } else {
            Line::from(vec![
                Span::styled(gauge(ratio, gauge_w), style),
                Span::raw(format!(" {pct}")),
            ])
        }
    };
    let rows: Vec<Row> = window(s, Tab::Shards, page)
        .iter()
        .map(|&i| {
            let r = &s.shards[i];
            let st = theme.shard(r.state);
            let mut nodes = Line::from(r.nodes.join(","));
            if !r.down_nodes.is_empty() || !r.unknown_nodes.is_empty() {
                nodes = nodes.style(theme.warn());
            }
            let writes = if r.writes > 0.0 {
                percent(r.writes)
            } else {
                "–".into()
            };
            let full_in = match (r.state, r.full_in) {
                (ShardState::Full, _) => "full".into(),
                (_, Some(secs)) => {
                    short_duration(std::time::Duration::from_secs_f64(secs.min(1e9)))
                }
                _ => "–".into(),
            };
            let used = if r.state == ShardState::NoSize {
                "?".to_string()
            } else {
                format!("{} / {}", format_size(r.used), format_size(r.capacity))
            };
            Row::new(vec![
                Cell::from(r.id.clone()),
                Cell::from(Span::styled(r.state.word(), st)),
                Cell::from(nodes),
                Cell::from(fill_cell(r.fill(), st)),
                Cell::from(used),
                Cell::from(Line::from(writes).right_aligned()),
                Cell::from(Line::from(full_in).right_aligned()),
                Cell::from(Span::styled(r.health.word(), theme.health(r.health))),
                Cell::from(Line::from(r.checked(s.now)).right_aligned()),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Min(5),
        Constraint::Length(if gauge_w == 0 { 4 } else { gauge_w as u16 + 5 }),
        Constraint::Length(18),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(12),
        Constraint::Length(7),
    ];
    let shown = s.order[Tab::Shards.index()].len().min(page).max(1);
    let [table_area, sep, total] = Layout::vertical([
        Constraint::Length(shown as u16 + 1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_table(s, Tab::Shards, theme, rows, widths.clone(), table_area, buf);
    if s.shards.is_empty() {
        return;
    }
    Paragraph::new(Span::styled("─".repeat(w.saturating_sub(2)), theme.dim())).render(
        Rect {
            x: sep.x + 2,
            width: sep.width.saturating_sub(2),
            ..sep
        },
        buf,
    );
    let t = &s.totals;
    let ratio = if t.capacity == 0 {
        0.0
    } else {
        t.used as f64 / t.capacity as f64
    };
    // How many are not whole, else how many are (the rest unchecked).
    let health = if t.lacking > 0 {
        Span::styled(format!("{} not whole", t.lacking), theme.bad())
    } else if t.whole == s.shards.len() {
        Span::styled("all whole", theme.good())
    } else {
        Span::raw(format!("{} whole", t.whole))
    };
    let total_row = Row::new(vec![
        Cell::from("all"),
        Cell::from(""),
        Cell::from(""),
        Cell::from(fill_cell(ratio, Style::new())),
        Cell::from(format!(
            "{} / {}",
            format_size(t.used),
            format_size(t.capacity)
        )),
        Cell::from(Line::from(percent(t.writes.min(1.0))).right_aligned()),
        Cell::from(""),
        Cell::from(health),
        Cell::from(""),
    ])
    .style(theme.header());
    let table = Table::new(vec![total_row], widths)
        .column_spacing(1)
        .highlight_symbol("▶ ")
        .highlight_spacing(HighlightSpacing::Always);
    Widget::render(table, total, buf);
}

pub(super) fn render_servers(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = s.page_rows(Tab::Servers);
    let rows: Vec<Row> = window(s, Tab::Servers, page)
        .iter()
        .map(|&i| {
            let r = &s.servers[i];
            let shards = if r.shards.is_empty() {
                Span::styled("no shard", theme.warn())
            } else {
                Span::raw(r.shards.join(","))
            };
            let (health, latency, gets, puts) = match &r.health {
                None => (
                    Span::styled("?", theme.dim()),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Health::Down { .. }) => (
                    Span::styled("down", theme.bad()),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
                Some(Health::Up {
                    latency_ms,
                    gets,
                    puts,
                    ..
                }) => (
                    Span::styled("up", theme.good()),
                    format!("{latency_ms} ms"),
                    gets.map_or(String::new(), |g| g.to_string()),
                    puts.map_or(String::new(), |g| g.to_string()),
                ),
            };
            Row::new(vec![
                Cell::from(r.id.clone()),
                Cell::from(r.addr.url()),
                Cell::from(shards),
                Cell::from(health),
                Cell::from(Line::from(latency).right_aligned()),
                Cell::from(Line::from(gets).right_aligned()),
                Cell::from(Line::from(puts).right_aligned()),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(5),
        Constraint::Min(18),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    render_table(s, Tab::Servers, theme, rows, widths, area, buf);
}

pub(super) fn render_daemons(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = s.page_rows(Tab::Daemons);
    let rows: Vec<Row> = window(s, Tab::Daemons, page)
        .iter()
        .map(|&i| {
            let r = &s.daemons[i];
            let counters = match (&r.doc.value, &r.doc.error) {
                (_, Some(e)) => Line::styled(e.clone(), theme.bad()),
                (None, None) => Line::styled("(no announcement yet)", theme.dim()),
                (Some(v), None) => Line::from(daemon_summary(v, &r.rates)),
            };
            Row::new(vec![
                Cell::from(r.kind),
                Cell::from(r.name.clone()),
                Cell::from(counters),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(11),
        Constraint::Length(22),
        Constraint::Fill(1),
    ];
    render_table(s, Tab::Daemons, theme, rows, widths, area, buf);
}

/// Fields not worth a place in the one-line summary (they are in Enter).
const QUIET_FIELDS: &[&str] = &[
    "version",
    "address",
    "started",
    "started_ms",
    "pid",
    "updated",
];
const FIRST_FIELDS: &[&str] = &[
    "ready",
    "processed_uploads",
    "failed_uploads",
    "copies_done",
    "copies_failed",
    "dead_lettered",
    "in_flight",
    "processed_bytes",
    "bytes",
];

/// One line about a daemon's announcement, whatever its shape: its
/// fields with byte counts as sizes and counters with their rate.
pub fn daemon_summary(v: &serde_json::Value, rates: &BTreeMap<String, f64>) -> String {
    let mut fields = flatten(v);
    fields.retain(|(k, _)| !QUIET_FIELDS.contains(&k.as_str()));
    // The figures an operator looks for first, then the rest as announced.
    fields.sort_by_key(|(k, _)| {
        FIRST_FIELDS
            .iter()
            .position(|f| f == k)
            .unwrap_or(FIRST_FIELDS.len())
    });
    fields
        .iter()
        .map(|(k, v)| {
            let bytes = k.ends_with("bytes") || k == "bytes";
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if bytes => {
                    n.as_u64().map_or(n.to_string(), format_size)
                }
                other => other.to_string(),
            };
            match rates.get(k) {
                Some(rt) if *rt > 0.0 && bytes => {
                    format!("{k} {text} ({}/s)", format_size(*rt as u64))
                }
                Some(rt) if *rt > 0.0 => format!("{k} {text} ({})", rate(*rt)),
                _ => format!("{k} {text}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

fn log_style(theme: Theme, kind: LogKind) -> Style {
    match kind {
        LogKind::Ok => theme.good(),
        LogKind::Failed | LogKind::Problem => theme.bad(),
        LogKind::Conn => theme.warn(),
        LogKind::Action => theme.key(),
        LogKind::Change => Style::new(),
    }
}

pub(super) fn render_events(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = s.page_rows(Tab::Events);
    let rows: Vec<Row> = window(s, Tab::Events, page)
        .iter()
        .map(|&i| {
            let e = &s.log[i];
            Row::new(vec![
                Cell::from(clock(e.at, s.config.utc_offset_secs)),
                Cell::from(Span::styled(e.kind.word(), log_style(theme, e.kind))),
                Cell::from(e.text.clone()),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Fill(1),
    ];
    render_table(s, Tab::Events, theme, rows, widths, area, buf);
}
