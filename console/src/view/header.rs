//! The top of the screen: where the console looks, the connection (a
//! banner while it is away), the clock, the cluster's figures at a glance,
//! and the tab bar with the filter being typed.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use backpack_shared::model::format_size;
use backpack_shared::zk::ConnState;

use super::theme::Theme;
use crate::event::Health;
use crate::fmt::{ago, clock, percent, rate_num, short_duration};
use crate::state::{Mode, State, Tab};

pub(super) fn render_header(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
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
            // The clock and the place stay, a space between; the explanation goes if it must.
            let room = width.saturating_sub(s.config.zk_servers.len() + s.config.root.len() + 27);
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
    // A queue Redis that evicts is named here too, first in the queue's
    // figures so that a narrow screen cuts the others; the Queue view says
    // what it means. Where the line is full, it takes the place of the
    // oldest task's age (the Queue view shows that too).
    let evicts = s.keeping.iter().any(|k| k.evicts());
    let queue = |with_oldest: bool| match &s.queue {
        None => vec![Span::raw("   queue …")],
        Some(q) => {
            let len = q.overall.map_or("?".to_string(), |n| n.to_string());
            let oldest = q.oldest.filter(|_| with_oldest).map_or(String::new(), |d| {
                format!(" · oldest {}", short_duration(d))
            });
            let dead = q.dead_count.unwrap_or(0);
            let style = if q.overall.is_none() {
                theme.bad()
            } else if dead > 0 {
                theme.warn()
            } else {
                Style::new()
            };
            let mut spans = vec![Span::styled(format!("   queue {len}"), style)];
            if evicts {
                spans.push(Span::styled(" · evicting", theme.bad()));
            }
            spans.push(Span::styled(format!("{oldest} · {dead} dead"), style));
            spans
        }
    };
    let line2 = |with_oldest: bool| {
        let mut l2 = vec![Span::raw(" "), shards.clone()];
        l2.extend(servers_spans.iter().cloned());
        l2.extend(queue(with_oldest));
        compact(l2, width)
    };
    let mut l2 = line2(true);
    if evicts && l2.iter().map(|sp| sp.width()).sum::<usize>() > width {
        l2 = line2(false);
    }

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
    // The elected checker: who checks and repairs the shards, or that
    // nobody does. Where the line is full, the space used goes first (the
    // Shards view's totals show it too).
    let checker = match &c.checker {
        None => None,
        Some(Some(name)) => Some(Span::raw(format!("   checker {name}"))),
        Some(None) => Some(Span::styled("   no checker", theme.warn())),
    };
    let line3 = |with_used: bool| {
        let mut l3 = vec![
            Span::styled(format!(" coordinators {ncoord}{up_rate}"), coord_style),
            Span::raw(format!("   replicators {nrepl}{copy_rate}")),
        ];
        l3.extend(checker.clone());
        if with_used {
            l3.push(Span::raw(format!(
                "   used {} / {} ({})",
                format_size(t.used),
                format_size(t.capacity),
                percent(ratio)
            )));
        }
        compact(l3, width)
    };
    let mut l3 = line3(true);
    if checker.is_some() && l3.iter().map(|sp| sp.width()).sum::<usize>() > width {
        l3 = line3(false);
    }
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

pub(super) fn render_tabs(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
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
