//! The Queue view's body: each Redis server with its length and state
//! (and whether it can lose tasks: evicting, no appendonly), a summary
//! line (key, oldest task, copies under way, dead letters), the warnings
//! naming the servers that can lose tasks, and the tasks (queued, being
//! copied, dead).

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Widget};

use backpack_shared::model::HostPort;

use super::tables::{render_table, window};
use super::theme::Theme;
use crate::fmt::{ago, ellipsize, short_duration};
use crate::state::{State, Tab};

pub(super) fn render_queue(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let nserv = s.queue_server_lines();
    let warnings = s.queue_warning_lines();
    let [top, summary, warn, _, tasks] = Layout::vertical([
        Constraint::Length(nserv as u16 + 1),
        Constraint::Length(1),
        Constraint::Length(warnings.len() as u16),
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
                let mut spans = vec![
                    Span::raw(format!("  {:<24} {:>8}   ", addr.to_string(), len)),
                    st,
                ];
                if r.is_ok() {
                    spans.extend(keeping_spans(s, theme, addr));
                }
                lines.push(Line::from(spans));
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
    let warnings: Vec<Line> = warnings
        .into_iter()
        .map(|(evicts, text)| {
            let style = if evicts { theme.bad() } else { theme.warn() };
            Line::styled(text, style)
        })
        .collect();
    Paragraph::new(warnings).render(warn, buf);
    let page = s.page_rows(Tab::Queue);
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

/// After a server's `up`: whether it can lose tasks, in short (the
/// warning lines under the summary say what it means and the fix).
fn keeping_spans(s: &State, theme: Theme, addr: &HostPort) -> Vec<Span<'static>> {
    let Some(k) = s.keeping.iter().find(|k| &k.addr == addr) else {
        return vec![];
    };
    let mut out = vec![];
    if let Some(policy) = k.policy.as_deref().filter(|_| k.evicts()) {
        out.push(Span::styled(format!(" · evicts: {policy}"), theme.bad()));
    }
    if k.appendonly == Some(false) {
        out.push(Span::styled(" · no appendonly", theme.warn()));
    }
    out
}
