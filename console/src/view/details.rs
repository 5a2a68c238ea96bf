//! About the selected row: the two lines under its table, and everything
//! known about it in the Enter overlay.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use backpack_shared::model::format_size;

use super::overlays::{boxed, centered};
use super::theme::Theme;
use crate::checks;
use crate::event::Health;
use crate::fmt::{ago, clock, percent, rate, rate_num, short_duration};
use crate::rows::flatten;
use crate::state::{State, Tab};

fn health_text(h: Option<&Health>) -> String {
    match h {
        None => "not checked yet".into(),
        Some(Health::Up { latency_ms, .. }) => format!("up, {latency_ms} ms"),
        Some(Health::Down { error, .. }) => format!("down: {error}"),
    }
}

/// The two lines under the table, about the selected row.
pub(super) fn detail_lines(s: &State, theme: Theme) -> Vec<Line<'static>> {
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

pub(super) fn render_details(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let (title, lines) = detail_text(s);
    let r = centered(
        area,
        area.width.saturating_sub(8).max(40),
        lines.len() as u16 + 2,
    );
    let inner = boxed(theme.title(), &title, r, buf);
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
            out.extend(checks::detail_lines(
                s.cluster.checks.get(&r.id),
                r.asked.as_ref(),
                s.now,
            ));
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
