//! Rendering: `impl Widget for &State`. No IO and no mutation; the clock
//! is the one the state was last updated with. Only the visible rows of a
//! table are built, so 1,000 shards cost what a screenful does.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, Paragraph, Row, StatefulWidget, Table, TableState, Widget, Wrap,
};

use backpack_shared::model::format_size;
use backpack_shared::zk::ConnState;

use crate::event::Health;
use crate::fmt::{ago, clock, ellipsize, percent, rate, rate_num, short_duration};
use crate::forms::{Form, FormState};
use crate::rows::{ShardState, flatten};
use crate::state::{
    COMMANDS, CommandSpec, Confirm, LogKind, Mode, State, StatusKind, Tab, command_names,
};

/// Styles that honour NO_COLOR: without colour only modifiers remain, and
/// every state is written as a word anyway.
#[derive(Clone, Copy)]
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn good(self) -> Style {
        self.fg(Color::Green)
    }
    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }
    fn warn(self) -> Style {
        self.fg(Color::Yellow)
    }
    fn dim(self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }
    fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    fn header(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(self) -> Style {
        // A background, not REVERSED: reversing would invert the gauges.
        if self.color {
            Style::new().bg(Color::Indexed(238))
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }
    fn banner(self) -> Style {
        if self.color {
            Style::new()
                .bg(Color::Red)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }
    fn shard(self, s: ShardState) -> Style {
        match s {
            ShardState::Rw => self.good(),
            ShardState::Ro => self.dim(),
            ShardState::Full => self.bad(),
            ShardState::NoSize => self.warn(),
        }
    }
}

/// Lines above and below the body: 3 header lines, the tab bar; 2 detail
/// lines, the result line, the key bar.
const TOP: u16 = 4;
const BOTTOM: u16 = 4;

fn body_height(state: &State) -> usize {
    state.size.1.saturating_sub(TOP + BOTTOM) as usize
}

/// How many Redis servers the Queue view lists above its tasks.
fn queue_server_lines(state: &State) -> usize {
    let n = state.queue.as_ref().map_or(
        state
            .cluster
            .queue
            .value
            .as_ref()
            .map_or(0, |q| q.servers.len()),
        |q| q.per_server.len(),
    );
    n.clamp(1, (body_height(state) / 3).max(1))
}

/// Table rows that fit in a view (what PageDown moves by).
pub fn page_rows(state: &State, tab: Tab) -> usize {
    let body = body_height(state);
    match tab {
        // header, separator, totals
        Tab::Shards => body.saturating_sub(3),
        // servers header + servers + summary + blank + tasks header
        Tab::Queue => body.saturating_sub(queue_server_lines(state) + 4),
        _ => body.saturating_sub(1),
    }
}

impl Widget for &State {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let theme = Theme {
            color: self.config.color,
        };
        let [header, tabs, body, detail, status, keys] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(2),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        render_header(self, theme, header, buf);
        render_tabs(self, theme, tabs, buf);
        let stale = !self.connected();
        match self.tab {
            Tab::Shards => render_shards(self, theme, body, buf),
            Tab::Servers => render_servers(self, theme, body, buf),
            Tab::Queue => render_queue(self, theme, body, buf),
            Tab::Daemons => render_daemons(self, theme, body, buf),
            Tab::Events => render_events(self, theme, body, buf),
        }
        if stale && self.cluster.conn.is_some() {
            // The last known state, dimmed while the session is away.
            buf.set_style(body, Style::new().add_modifier(Modifier::DIM));
        }
        Paragraph::new(detail_lines(self, theme))
            .style(theme.dim().remove_modifier(Modifier::DIM))
            .render(detail, buf);
        render_status(self, theme, status, buf);
        Paragraph::new(key_bar(self, theme, keys.width as usize)).render(keys, buf);
        match &self.mode {
            Mode::Help => render_help(self, theme, area, buf),
            Mode::Details => render_details(self, theme, area, buf),
            Mode::Form(f) => render_form(self, theme, f, area, buf),
            Mode::Confirm(c) => render_confirm(theme, c, area, buf),
            Mode::Normal | Mode::Filter | Mode::Command(_) => {}
        }
    }
}

fn render_header(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let now = clock(s.now, s.config.utc_offset_secs);
    let width = area.width as usize;
    let c = &s.cluster;
    // Line 1: where, the connection, the clock; a banner when disconnected.
    let (conn_text, banner) = match c.conn {
        None => ("● connecting".to_string(), false),
        Some(ConnState::Connected { session_id }) => {
            (format!("● connected (session {session_id:#x})"), false)
        }
        Some(ConnState::Disconnected { .. }) | Some(ConnState::Expired { .. }) => {
            let expired = matches!(c.conn, Some(ConnState::Expired { .. }));
            let seen = s
                .last_change
                .map_or("never".to_string(), |t| format!("{} ago", ago(s.now, t)));
            let what = if expired {
                "session expired, reconnecting"
            } else {
                "reconnecting"
            };
            let long = format!("● {what} (last change seen {seen}) · showing the last known state");
            // The clock and the place stay; the explanation goes if it must.
            let room = width.saturating_sub(s.config.zk_servers.len() + s.config.root.len() + 26);
            if long.chars().count() <= room {
                (long, true)
            } else {
                (format!("● {what} (last change seen {seen})"), true)
            }
        }
        Some(ConnState::Closed) => ("● closed".to_string(), true),
    };
    let mut left = vec![
        Span::styled(" backpack ", theme.title()),
        Span::raw(format!(" zk {} {} ", s.config.zk_servers, s.config.root)),
    ];
    if banner {
        left.push(Span::raw(format!(" {conn_text}")));
    } else {
        let style = if c.conn.is_some() {
            theme.good()
        } else {
            theme.warn()
        };
        left.push(Span::styled(format!(" {conn_text}"), style));
    }
    if s.config.read_only {
        left.push(Span::styled(
            "  READ-ONLY",
            theme.warn().add_modifier(Modifier::BOLD),
        ));
    }
    let used: usize = left.iter().map(|sp| sp.width()).sum();
    let pad = width.saturating_sub(used + now.len() + 1);
    left.push(Span::raw(" ".repeat(pad)));
    left.push(Span::raw(format!("{now} ")));
    let mut line1 = Line::from(left);
    if banner {
        line1 = line1.style(theme.banner());
    }

    // Line 2: shards, servers, queue.
    let t = &s.totals;
    let shards = match (&c.shards.value, &c.shards.error) {
        (_, Some(_)) => Span::styled("shards-map invalid (see Events)", theme.bad()),
        (None, None) => Span::raw("shards …"),
        (Some(m), None) => Span::raw(format!(
            "shards {} ({} rw · {} ro · {} full)",
            m.len(),
            t.rw,
            t.ro,
            t.full
        )),
    };
    let nservers = s.servers.len();
    let up = s
        .servers
        .iter()
        .filter(|r| matches!(r.health, Some(Health::Up { .. })))
        .count();
    let down = s
        .servers
        .iter()
        .filter(|r| matches!(r.health, Some(Health::Down { .. })))
        .count();
    let mut servers_spans = vec![Span::raw(format!("   servers {nservers} ("))];
    if up + down == 0 && nservers > 0 {
        servers_spans.push(Span::raw("checking"));
    } else {
        servers_spans.push(Span::styled(format!("{up} up"), theme.good()));
        if down > 0 {
            servers_spans.push(Span::raw(" · "));
            servers_spans.push(Span::styled(format!("{down} down"), theme.bad()));
        }
    }
    servers_spans.push(Span::raw(")"));
    let queue = match &s.queue {
        None => Span::raw("   queue …"),
        Some(q) => {
            let len = q.overall.map_or("?".to_string(), |n| n.to_string());
            let oldest = q.oldest.map_or(String::new(), |d| {
                format!(" · oldest {}", short_duration(d))
            });
            let dead = q.dead_count.unwrap_or(0);
            let text = format!("   queue {len}{oldest} · {dead} dead");
            if q.overall.is_none() {
                Span::styled(text, theme.bad())
            } else if dead > 0 {
                Span::styled(text, theme.warn())
            } else {
                Span::raw(text)
            }
        }
    };
    let mut l2 = vec![Span::raw(" "), shards];
    l2.extend(servers_spans);
    l2.push(queue);

    // Line 3: daemons and space.
    let ncoord = c.coordinators.len();
    let nrepl = c.replicators.len();
    let up_rate = s
        .upload_rate()
        .map_or(String::new(), |r| format!(" · {} up/s", rate_num(r)));
    let copy_rate = s
        .copy_rate()
        .map_or(String::new(), |r| format!(" · {} copies/s", rate_num(r)));
    let ratio = if t.capacity == 0 {
        0.0
    } else {
        t.used as f64 / t.capacity as f64
    };
    let coord_style = if ncoord == 0 && c.ready() {
        theme.warn()
    } else {
        Style::new()
    };
    let l3 = vec![
        Span::styled(format!(" coordinators {ncoord}{up_rate}"), coord_style),
        Span::raw(format!("   replicators {nrepl}{copy_rate}")),
        Span::raw(format!(
            "   used {} / {} ({})",
            format_size(t.used),
            format_size(t.capacity),
            percent(ratio)
        )),
    ];
    let l2 = compact(l2, width);
    let l3 = compact(l3, width);
    Paragraph::new(vec![line1, Line::from(l2), Line::from(l3)]).render(area, buf);
}

/// Tightens a header line that does not fit: `a · b` → `a·b`, wide gaps
/// narrower, `x / y` → `x/y`.
fn compact(spans: Vec<Span<'static>>, width: usize) -> Vec<Span<'static>> {
    let w: usize = spans.iter().map(|s| s.width()).sum();
    if w <= width {
        return spans;
    }
    spans
        .into_iter()
        .map(|s| {
            let text = s
                .content
                .replace(" · ", "·")
                .replace("   ", "  ")
                .replace(" / ", "/");
            Span::styled(text, s.style)
        })
        .collect()
}

fn render_tabs(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let mut spans = vec![Span::styled("─", theme.dim())];
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let text = format!("[{} {}]", i + 1, tab.title());
        if *tab == s.tab {
            spans.push(Span::styled(
                text,
                theme.title().add_modifier(Modifier::REVERSED),
            ));
        } else {
            spans.push(Span::raw(text));
        }
        spans.push(Span::styled("─", theme.dim()));
    }
    let t = s.table(s.tab);
    let mut right = String::new();
    if !t.filter.is_empty() || matches!(s.mode, Mode::Filter) {
        let cursor = if matches!(s.mode, Mode::Filter) {
            "▏"
        } else {
            ""
        };
        right.push_str(&format!(" /{}{cursor} ", t.filter));
    }
    let used: usize = spans.iter().map(|sp| sp.width()).sum();
    let fill = (area.width as usize).saturating_sub(used + right.chars().count());
    spans.push(Span::styled("─".repeat(fill), theme.dim()));
    if !right.is_empty() {
        spans.push(Span::styled(right, theme.warn()));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

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
fn render_table(
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
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
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

fn window(s: &State, tab: Tab, page: usize) -> &[usize] {
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

fn render_shards(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = page_rows(s, Tab::Shards);
    let w = area.width as usize;
    // marker 2 + ID 5 + STATE 5 + NODES 9 + USED/CAP 19 + WRITES 6 + FULL IN 7 + spacing 7
    let gauge_w = w.saturating_sub(60).clamp(6, 30);
    let rows: Vec<Row> = window(s, Tab::Shards, page)
        .iter()
        .map(|&i| {
            let r = &s.shards[i];
            let st = theme.shard(r.state);
            let mut nodes = Line::from(r.nodes.join(","));
            if !r.down_nodes.is_empty() || !r.unknown_nodes.is_empty() {
                nodes = nodes.style(theme.warn());
            }
            let fill = Line::from(vec![
                Span::styled(gauge(r.fill(), gauge_w), st),
                Span::raw(format!(" {:>4}", percent(r.fill()))),
            ]);
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
                Cell::from(fill),
                Cell::from(used),
                Cell::from(Line::from(writes).right_aligned()),
                Cell::from(Line::from(full_in).right_aligned()),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Min(5),
        Constraint::Length(gauge_w as u16 + 5),
        Constraint::Length(19),
        Constraint::Length(6),
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
    let total_row = Row::new(vec![
        Cell::from("all"),
        Cell::from(""),
        Cell::from(""),
        Cell::from(Line::from(vec![
            Span::raw(gauge(ratio, gauge_w)),
            Span::raw(format!(" {:>4}", percent(ratio))),
        ])),
        Cell::from(format!(
            "{} / {}",
            format_size(t.used),
            format_size(t.capacity)
        )),
        Cell::from(Line::from(percent(t.writes.min(1.0))).right_aligned()),
        Cell::from(""),
    ])
    .style(theme.header());
    let table = Table::new(vec![total_row], widths)
        .column_spacing(1)
        .highlight_symbol("▶ ")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    Widget::render(table, total, buf);
}

fn render_servers(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = page_rows(s, Tab::Servers);
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

fn render_queue(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let nserv = queue_server_lines(s);
    let [top, summary, _, tasks] = Layout::vertical([
        Constraint::Length(nserv as u16 + 1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    let mut lines = vec![Line::styled(
        format!("  {:<24} {:>8}   STATE", "REDIS SERVER", "LENGTH"),
        theme.header(),
    )];
    match &s.queue {
        None => {
            let servers = s
                .cluster
                .queue
                .value
                .as_ref()
                .map(|q| q.servers.clone())
                .unwrap_or_default();
            for a in servers.iter().take(nserv) {
                lines.push(Line::from(format!(
                    "  {:<24} {:>8}   checking",
                    a.to_string(),
                    ""
                )));
            }
        }
        Some(q) => {
            for (addr, r) in q.per_server.iter().take(nserv) {
                let (len, st) = match r {
                    Ok(n) => (n.to_string(), Span::styled("up", theme.good())),
                    Err(e) => (
                        "?".into(),
                        Span::styled(format!("down: {}", ellipsize(e, 40)), theme.bad()),
                    ),
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("  {:<24} {:>8}   ", addr.to_string(), len)),
                    st,
                ]));
            }
        }
    }
    Paragraph::new(lines).render(top, buf);
    let sum = match &s.queue {
        None => "  polling Redis…".to_string(),
        Some(q) => {
            let oldest = q.oldest.map_or("–".to_string(), short_duration);
            let locks = match &q.locks {
                Ok(l) => {
                    let mut workers: Vec<&str> = l.iter().map(|l| l.worker.as_str()).collect();
                    workers.sort_unstable();
                    workers.dedup();
                    if l.is_empty() {
                        "0".to_string()
                    } else {
                        format!("{} ({})", l.len(), ellipsize(&workers.join(", "), 40))
                    }
                }
                Err(e) => format!("? ({})", ellipsize(e, 30)),
            };
            format!(
                "  key {} · oldest task {oldest} · copying now {locks} · dead letter {}",
                q.key,
                q.dead_count.map_or("?".into(), |n| n.to_string())
            )
        }
    };
    Paragraph::new(sum).render(summary, buf);
    let page = page_rows(s, Tab::Queue);
    let rows: Vec<Row> = window(s, Tab::Queue, page)
        .iter()
        .map(|&i| {
            let r = &s.tasks[i];
            let state = match r.state() {
                "dead" => Span::styled("dead", theme.bad()),
                "copying" => Span::styled("copying", theme.good()),
                other => Span::raw(other),
            };
            let (path, to, from) = match &r.task {
                Some(t) => (t.path.clone(), t.to.clone(), t.from.join(",")),
                None => (r.info.item.clone(), String::new(), String::new()),
            };
            Row::new(vec![
                Cell::from(state),
                Cell::from(path),
                Cell::from(to),
                Cell::from(from),
                Cell::from(
                    Line::from(r.age(s.now).map_or("?".into(), |a| ago(a, 0))).right_aligned(),
                ),
                Cell::from(Line::from(r.info.attempts.to_string()).right_aligned()),
                Cell::from(r.info.last_error.clone().unwrap_or_default()),
            ])
        })
        .collect();
    let widths = vec![
        Constraint::Length(7),
        Constraint::Min(16),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Fill(1),
    ];
    render_table(s, Tab::Queue, theme, rows, widths, tasks, buf);
}

fn render_daemons(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = page_rows(s, Tab::Daemons);
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
pub fn daemon_summary(
    v: &serde_json::Value,
    rates: &std::collections::BTreeMap<String, f64>,
) -> String {
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

fn render_events(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let page = page_rows(s, Tab::Events);
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

fn health_text(h: Option<&Health>) -> String {
    match h {
        None => "not checked yet".into(),
        Some(Health::Up { latency_ms, .. }) => format!("up, {latency_ms} ms"),
        Some(Health::Down { error, .. }) => format!("down: {error}"),
    }
}

/// The two lines under the table, about the selected row.
fn detail_lines(s: &State, theme: Theme) -> Vec<Line<'static>> {
    match s.tab {
        Tab::Shards => {
            let Some(r) = s.selected_shard() else {
                return vec![];
            };
            let servers = s.cluster.servers.value.as_ref();
            let nodes: Vec<String> = r
                .nodes
                .iter()
                .map(|n| match servers.and_then(|m| m.get(n)) {
                    None => format!("{n} (not in the servers map!)"),
                    Some(a) => format!("{n} {} ({})", a.url(), health_text(s.health.get(a))),
                })
                .collect();
            let first = format!(" shard {} · nodes {}", r.id, nodes.join(" · "));
            let second = if let Some(e) = &r.size_error {
                Line::styled(format!(" {e}"), theme.bad())
            } else {
                let growth = s.growth.get(&r.id).and_then(|g| g.added(s.now)).map_or(
                    "no growth seen yet".to_string(),
                    |(bytes, span)| {
                        format!(
                            "+{} in the last {}",
                            format_size(bytes),
                            short_duration(std::time::Duration::from_millis(span))
                        )
                    },
                );
                let rt = r
                    .rate
                    .map_or(String::new(), |b| format!(" ({}/s)", format_size(b as u64)));
                let ups = s.upload_rate().map_or(String::new(), |u| {
                    format!(" · {} uploads/s across the cluster", rate_num(u))
                });
                Line::from(format!(" {growth}{rt}{ups}"))
            };
            vec![Line::from(first), second]
        }
        Tab::Servers => {
            let Some(r) = s.selected_server() else {
                return vec![];
            };
            let first = format!(
                " server {} · {} · {}",
                r.id,
                r.addr.url(),
                if r.shards.is_empty() {
                    "in no shard".to_string()
                } else {
                    format!("in shard {}", r.shards.join(","))
                }
            );
            let second = match &r.health {
                None => Line::styled(" health not checked yet", theme.dim()),
                Some(Health::Down { error, at }) => Line::styled(
                    format!(" down ({} ago): {error}", ago(s.now, *at)),
                    theme.bad(),
                ),
                Some(Health::Up {
                    latency_ms,
                    get_avg_ms,
                    put_avg_ms,
                    at,
                    ..
                }) => Line::from(format!(
                    " up · /stats in {latency_ms} ms ({} ago) · GET avg {} · PUT avg {}",
                    ago(s.now, *at),
                    get_avg_ms.map_or("?".into(), |v| format!("{v:.1} ms")),
                    put_avg_ms.map_or("?".into(), |v| format!("{v:.1} ms")),
                )),
            };
            let second = if r.shards.is_empty() && r.health.is_some() {
                Line::from(vec![
                    Span::raw(second.to_string()),
                    Span::styled(" · put it in a shard: Shards view, a", theme.warn()),
                ])
            } else {
                second
            };
            vec![Line::from(first), second]
        }
        Tab::Queue => {
            let Some(r) = s.selected_task() else {
                return vec![];
            };
            let by = r
                .locked_by
                .as_ref()
                .map_or(String::new(), |w| format!(" · copying by {w}"));
            vec![
                Line::from(format!(" {}{by}", r.info.item)),
                match &r.info.last_error {
                    Some(e) => Line::styled(format!(" last error: {e}"), theme.bad()),
                    None => Line::from(""),
                },
            ]
        }
        Tab::Daemons => {
            let Some(r) = s.selected_daemon() else {
                return vec![];
            };
            let text = r
                .doc
                .value
                .as_ref()
                .map_or(String::new(), |v| v.to_string());
            vec![
                Line::from(format!(" {} {}", r.kind, r.name)),
                Line::from(format!(" {text}")),
            ]
        }
        Tab::Events => {
            let Some(e) = s.selected_event() else {
                return vec![];
            };
            vec![Line::from(format!(
                " {} {}: {}",
                clock(e.at, s.config.utc_offset_secs),
                e.kind.word(),
                e.text
            ))]
        }
    }
}

fn render_status(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let Some(st) = &s.status else { return };
    let style = match st.kind {
        StatusKind::Ok => theme.good(),
        StatusKind::Error => theme.bad(),
        StatusKind::Info => Style::new(),
    };
    Paragraph::new(Span::styled(format!(" {}", st.text), style)).render(area, buf);
}

/// The key bar: what the keys do here, as many as fit.
fn key_bar(s: &State, theme: Theme, width: usize) -> Line<'static> {
    if let Mode::Command(line) = &s.mode {
        return command_line(line, theme);
    }
    let items: Vec<(&str, &str)> = match &s.mode {
        Mode::Command(_) => vec![],
        Mode::Filter => vec![("type", "to filter"), ("Enter", "keep"), ("Esc", "clear")],
        Mode::Help => vec![("any key", "close")],
        Mode::Details => vec![("Esc", "back"), ("↑↓", "previous/next")],
        Mode::Form(f) => {
            if matches!(f.form, Form::AddShard { .. }) && f.focus == 1 {
                vec![
                    ("↑↓", "move"),
                    ("Space", "pick"),
                    ("type", "to narrow"),
                    ("Tab", "next field"),
                    ("Enter", "create"),
                    ("Esc", "cancel"),
                ]
            } else {
                vec![("Tab", "next field"), ("Enter", "apply"), ("Esc", "cancel")]
            }
        }
        Mode::Confirm(_) => vec![("y", "yes"), ("any other key", "no")],
        Mode::Normal => {
            let mut v: Vec<(&str, &str)> = vec![];
            if !s.config.read_only {
                match s.tab {
                    Tab::Shards => v.extend([("a", "add"), ("e", "enable"), ("d", "disable")]),
                    Tab::Servers => v.push(("a", "add")),
                    Tab::Queue => v.extend([("c", "set queue"), ("u", "requeue"), ("x", "drop")]),
                    _ => {}
                }
            }
            v.extend([
                ("Enter", "details"),
                ("/", "filter"),
                ("s", "sort"),
                ("?", "help"),
                ("q", "quit"),
                (":", "command"),
                ("Tab", "views"),
                ("r", "refresh"),
            ]);
            v
        }
    };
    let mut spans = vec![Span::raw(" ")];
    let mut used = 1;
    for (k, what) in items {
        let w = k.chars().count() + what.chars().count() + 3;
        if used + w > width {
            break;
        }
        used += w;
        spans.push(Span::styled(k.to_string(), theme.key()));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    Line::from(spans)
}

/// The `:` line being typed, and what the command takes.
fn command_line(line: &str, theme: Theme) -> Line<'static> {
    let first = line.split_whitespace().next().unwrap_or("");
    let matching: Vec<&CommandSpec> = COMMANDS
        .iter()
        .filter(|c| c.names.iter().any(|n| n.starts_with(first)))
        .collect();
    let hint = match matching.as_slice() {
        _ if first.is_empty() => format!("{} · Enter run · Esc cancel", command_names(" ")),
        [] => "no such command · Esc cancel".to_string(),
        [one] => format!(
            ":{} {} · Enter run · Esc cancel",
            one.names[0],
            one.args.join(" ")
        ),
        many => many
            .iter()
            .map(|c| c.names[0])
            .collect::<Vec<_>>()
            .join(" "),
    };
    Line::from(vec![
        Span::styled(format!(" :{line}"), theme.key()),
        Span::raw("▏  "),
        Span::styled(hint, theme.dim()),
    ])
}

/// Word-wraps `text` to lines of at most `width` characters.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(10);
    let mut out = vec![];
    let mut line = String::new();
    for word in text.split(' ') {
        let wl = word.chars().count();
        let ll = line.chars().count();
        if ll > 0 && ll + 1 + wl > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > width {
            let head: String = line.chars().take(width).collect();
            line = line.chars().skip(width).collect();
            out.push(head);
        }
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

/// A centered box of at most `w` x `h`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

fn boxed(theme: Theme, title: &str, area: Rect, buf: &mut Buffer) -> Rect {
    Clear.render(area, buf);
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), theme.title()))
        .border_style(theme.key().remove_modifier(Modifier::BOLD));
    let inner = block.inner(area);
    block.render(area, buf);
    inner
}

pub const HELP: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous view"),
    ("1 2 3 4 5", "Shards, Servers, Queue, Daemons, Events"),
    ("↑ ↓  j k", "move the selection"),
    ("PgUp PgDn  g G", "page up / down, first / last"),
    ("Enter", "details of the selected row"),
    ("Esc", "back out: close, cancel, clear the filter"),
    ("/", "filter the rows (Enter keeps, Esc clears)"),
    ("s  S", "sort by the next column / reverse the order"),
    ("r", "check node health and the queue now"),
    ("a", "add a shard (Shards) or a server (Servers)"),
    ("e  d", "enable / disable the selected shard (Shards)"),
    ("c", "set the queue's key and Redis servers (Queue)"),
    ("u  x", "requeue / drop the selected dead task (Queue)"),
    (":", "a command, e.g. :enable-shard 4 (admin names)"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

fn render_help(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let r = centered(area, 70, HELP.len() as u16 + 4);
    let inner = boxed(theme, "Keys", r, buf);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<16}"), theme.key()),
                Span::raw(what.to_string()),
            ])
        })
        .collect();
    lines.push(Line::styled(
        if s.config.read_only {
            " read-only: a e d c u x are disabled (--read-only)"
        } else {
            " every write asks first and shows its result below"
        },
        theme.dim(),
    ));
    Paragraph::new(lines).render(inner, buf);
}

fn render_details(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let (title, lines) = detail_text(s);
    let r = centered(
        area,
        area.width.saturating_sub(8).max(40),
        lines.len() as u16 + 2,
    );
    let inner = boxed(theme, &title, r, buf);
    Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// Everything known about the selected row, line by line.
pub fn detail_text(s: &State) -> (String, Vec<String>) {
    let mut out = vec![];
    let title;
    match s.tab {
        Tab::Shards => {
            let Some(r) = s.selected_shard() else {
                return ("Shard".into(), out);
            };
            title = format!("Shard {}", r.id);
            out.push(format!("state      {}", r.state.word()));
            out.push(format!(
                "used       {} of {} ({})",
                format_size(r.used),
                format_size(r.capacity),
                percent(r.fill())
            ));
            out.push(format!(
                "writes     {} of new uploads now",
                percent(r.writes)
            ));
            let added = s.growth.get(&r.id).and_then(|g| g.added(s.now));
            out.push(format!(
                "growth     {}",
                match (added, r.rate) {
                    (Some((bytes, span)), Some(b)) => format!(
                        "+{} in the last {} ({}/s)",
                        format_size(bytes),
                        short_duration(std::time::Duration::from_millis(span)),
                        format_size(b as u64)
                    ),
                    _ => "none seen (measured over up to an hour)".into(),
                }
            ));
            out.push(format!(
                "full in    {}",
                r.full_in.map_or("–".into(), |f| short_duration(
                    std::time::Duration::from_secs_f64(f.min(1e9))
                ))
            ));
            let servers = s.cluster.servers.value.as_ref();
            for n in &r.nodes {
                out.push(match servers.and_then(|m| m.get(n)) {
                    None => format!("node {n:<6} not in the servers map: add it with add-server"),
                    Some(a) => {
                        format!("node {n:<6} {} ({})", a.url(), health_text(s.health.get(a)))
                    }
                });
            }
            if let Some(e) = &r.size_error {
                out.push(format!("problem    {e}"));
            }
        }
        Tab::Servers => {
            let Some(r) = s.selected_server() else {
                return ("Server".into(), out);
            };
            title = format!("Server {}", r.id);
            out.push(format!("url        {}", r.addr.url()));
            out.push(format!(
                "shards     {}",
                if r.shards.is_empty() {
                    "none".into()
                } else {
                    r.shards.join(",")
                }
            ));
            out.push(format!("health     {}", health_text(r.health.as_ref())));
            if let Some(Health::Up {
                gets,
                puts,
                get_avg_ms,
                put_avg_ms,
                ..
            }) = &r.health
            {
                out.push(format!(
                    "gets       {} (avg {} ms)",
                    gets.map_or("?".into(), |v| v.to_string()),
                    get_avg_ms.map_or("?".into(), |v| format!("{v:.1}"))
                ));
                out.push(format!(
                    "puts       {} (avg {} ms)",
                    puts.map_or("?".into(), |v| v.to_string()),
                    put_avg_ms.map_or("?".into(), |v| format!("{v:.1}"))
                ));
            }
        }
        Tab::Queue => {
            let Some(r) = s.selected_task() else {
                return ("Task".into(), out);
            };
            title = format!("Task ({})", r.state());
            out.push(format!("item       {}", r.info.item));
            if let Some(t) = &r.task {
                out.push(format!("path       {}", t.path));
                out.push(format!("copy to    node {}", t.to));
                out.push(format!("from       nodes {}", t.from.join(",")));
            }
            out.push(format!(
                "queued     {}",
                r.age(s.now).map_or(
                    "unknown (pushed by an original daemon?)".into(),
                    |a| format!("{} ago", ago(a, 0))
                )
            ));
            out.push(format!("attempts   {}", r.info.attempts));
            if let Some(e) = &r.info.last_error {
                out.push(format!("last error {e}"));
            }
            if let Some(w) = &r.locked_by {
                out.push(format!("copying by {w}"));
            }
            if r.dead {
                out.push("dead letter: u requeues it, x drops it".into());
            }
        }
        Tab::Daemons => {
            let Some(r) = s.selected_daemon() else {
                return ("Daemon".into(), out);
            };
            title = format!("{} {}", r.kind, r.name);
            if let Some(e) = &r.doc.error {
                out.push(format!("problem: {e}"));
            }
            if let Some(v) = &r.doc.value {
                for (k, v) in flatten(v) {
                    let rt = r
                        .rates
                        .get(&k)
                        .filter(|r| **r > 0.0)
                        .map_or(String::new(), |r| format!("  ({})", rate(*r)));
                    out.push(format!("{k:<24} {v}{rt}"));
                }
            }
        }
        Tab::Events => {
            let Some(e) = s.selected_event() else {
                return ("Event".into(), out);
            };
            title = format!("Event at {}", clock(e.at, s.config.utc_offset_secs));
            out.push(format!("{}: {}", e.kind.word(), e.text));
        }
    }
    (title, out)
}

fn render_form(s: &State, theme: Theme, f: &FormState, area: Rect, buf: &mut Buffer) {
    let mut lines: Vec<Line> = vec![];
    let labels = f.form.labels();
    let w = area.width.saturating_sub(4).min(76);
    let inner_w = w.saturating_sub(2) as usize;
    let err_line = |e: &Option<String>, lines: &mut Vec<Line>| {
        if let Some(e) = e {
            for l in wrap(&format!("✗ {e}"), inner_w.saturating_sub(13)) {
                lines.push(Line::styled(format!("           {l}"), theme.bad()));
            }
        }
    };
    for (i, label) in labels.iter().enumerate() {
        let focused = f.focus == i;
        let label_style = if focused { theme.key() } else { Style::new() };
        let error = f.checked.errors.get(i).cloned().flatten();
        match (&f.form, i) {
            (Form::AddShard { nodes, .. }, 1) => {
                let cands = nodes.candidates(&s.cluster);
                let picked = if nodes.picked.is_empty() {
                    "none".to_string()
                } else {
                    nodes.picked.join(",")
                };
                let q = if nodes.query.is_empty() && !focused {
                    String::new()
                } else {
                    format!(
                        "   narrow: {}{}",
                        nodes.query,
                        if focused { "▏" } else { "" }
                    )
                };
                lines.push(Line::from(vec![
                    Span::styled(format!(" {label:<10}"), label_style),
                    Span::raw(format!("picked {picked}{q}")),
                ]));
                let shown = 6usize;
                let start = nodes.cursor.saturating_sub(shown - 1);
                for (j, c) in cands.iter().enumerate().skip(start).take(shown) {
                    let mark = if nodes.picked.contains(&c.id) {
                        "[x]"
                    } else {
                        "[ ]"
                    };
                    let where_ = if c.shards.is_empty() {
                        Span::styled("(in no shard)", theme.good())
                    } else {
                        Span::styled(format!("(shard {})", c.shards.join(",")), theme.dim())
                    };
                    let cursor = focused && j == nodes.cursor;
                    let text = format!(
                        "           {mark} {:<5} {:<24} ",
                        c.id,
                        ellipsize(&c.url, 24)
                    );
                    let mut line = Line::from(vec![Span::raw(text), where_]);
                    if cursor {
                        line = line.style(theme.selected());
                    }
                    lines.push(line);
                }
                if cands.is_empty() {
                    lines.push(Line::styled("           no server matches", theme.dim()));
                } else if cands.len() > shown {
                    lines.push(Line::styled(
                        format!("           {} servers · ↑↓ to see more", cands.len()),
                        theme.dim(),
                    ));
                }
            }
            _ => {
                let input = match (&f.form, i) {
                    (Form::AddServer { id, .. }, 0) => Some(id),
                    (Form::AddServer { url, .. }, 1) => Some(url),
                    (Form::AddShard { id, .. }, 0) => Some(id),
                    (Form::AddShard { capacity, .. }, 2) => Some(capacity),
                    (Form::SetQueue { key, .. }, 0) => Some(key),
                    (Form::SetQueue { servers, .. }, 1) => Some(servers),
                    _ => None,
                };
                let (text, fresh) = input.map_or(("", false), |i| (i.text.as_str(), i.fresh));
                let cursor = if focused { "▏" } else { "" };
                let ok = if error.is_none() { " ✓" } else { "" };
                let value = if text.is_empty() {
                    Span::styled(format!("{cursor}{}", f.form.placeholder(i)), theme.dim())
                } else if fresh && focused {
                    // A suggestion: typing replaces it.
                    Span::styled(
                        text.to_string(),
                        Style::new().add_modifier(Modifier::UNDERLINED),
                    )
                } else {
                    Span::raw(format!("{text}{cursor}"))
                };
                lines.push(Line::from(vec![
                    Span::styled(format!(" {label:<10}"), label_style),
                    value,
                    Span::styled(ok, theme.good()),
                ]));
            }
        }
        err_line(&error, &mut lines);
    }
    lines.push(Line::from(""));
    if let Some(g) = &f.checked.general {
        for l in wrap(g, inner_w.saturating_sub(2)) {
            lines.push(Line::styled(format!(" {l}"), theme.warn()));
        }
    }
    for l in wrap(&f.form.explain(), inner_w.saturating_sub(2)) {
        lines.push(Line::styled(format!(" {l}"), theme.dim()));
    }
    let ready = f.checked.op.is_some();
    lines.push(Line::from(vec![
        Span::raw("              "),
        Span::styled(
            "[ Enter: apply ]",
            if ready { theme.key() } else { theme.dim() },
        ),
        Span::raw("   "),
        Span::styled("[ Esc: cancel ]", theme.key()),
    ]));
    let r = centered(area, w, lines.len() as u16 + 2);
    let inner = boxed(theme, f.form.title(), r, buf);
    Paragraph::new(lines).render(inner, buf);
}

fn render_confirm(theme: Theme, c: &Confirm, area: Rect, buf: &mut Buffer) {
    let w = area.width.saturating_sub(4).min(76);
    let inner_w = w.saturating_sub(4) as usize;
    let mut lines: Vec<Line> = c
        .lines
        .iter()
        .flat_map(|l| wrap(l, inner_w))
        .map(|l| Line::from(format!(" {l}")))
        .collect();
    lines.push(Line::from(""));
    let question = wrap(&format!("{} y/N", c.question), inner_w);
    let last = question.len().saturating_sub(1);
    for (i, q) in question.into_iter().enumerate() {
        if i == last {
            let q = q.strip_suffix("y/N").unwrap_or(&q).to_string();
            lines.push(Line::from(vec![
                Span::styled(format!(" {q}"), theme.header()),
                Span::styled("y/N", theme.key()),
            ]));
        } else {
            lines.push(Line::styled(format!(" {q}"), theme.header()));
        }
    }
    let style = if c.title == "Changed meanwhile" {
        theme.warn()
    } else {
        theme.title()
    };
    let r = centered(area, w, lines.len() as u16 + 2);
    Clear.render(r, buf);
    let block = Block::bordered()
        .title(Span::styled(format!(" {} ", c.title), style))
        .border_style(style.remove_modifier(Modifier::BOLD));
    let inner = block.inner(r);
    block.render(r, buf);
    Paragraph::new(lines).render(inner, buf);
}
