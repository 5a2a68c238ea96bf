//! Boxes drawn over the view: help, the forms (validated as typed), and
//! the y/N questions; with the box helpers they share.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::theme::Theme;
use crate::fmt::{ellipsize, wrap};
use crate::forms::{Form, FormState};
use crate::state::{Confirm, State};

/// A centered box of at most `w` x `h`.
pub(super) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// Clears `area` and draws a box titled `title` in `style` (its border
/// without the bold); returns the inside.
pub(super) fn boxed(style: Style, title: &str, area: Rect, buf: &mut Buffer) -> Rect {
    Clear.render(area, buf);
    let block = Block::bordered()
        .title(Span::styled(format!(" {title} "), style))
        .border_style(style.remove_modifier(Modifier::BOLD));
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
    ("c  R", "check / repair the selected shard (Shards)"),
    ("R", "replace the selected server's node (Servers)"),
    ("c", "set the queue's key and Redis servers (Queue)"),
    ("u  x", "requeue / drop the selected dead task (Queue)"),
    (":", "a command, e.g. :enable-shard 4 (admin names)"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit"),
];

pub(super) fn render_help(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let r = centered(area, 70, HELP.len() as u16 + 4);
    let inner = boxed(theme.title(), "Keys", r, buf);
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

pub(super) fn render_form(s: &State, theme: Theme, f: &FormState, area: Rect, buf: &mut Buffer) {
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
                let (text, fresh) = f
                    .form
                    .input(i)
                    .map_or(("", false), |i| (i.text.as_str(), i.fresh));
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
    let inner = boxed(theme.title(), f.form.title(), r, buf);
    Paragraph::new(lines).render(inner, buf);
}

pub(super) fn render_confirm(theme: Theme, c: &Confirm, area: Rect, buf: &mut Buffer) {
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
    let inner = boxed(style, &c.title, r, buf);
    Paragraph::new(lines).render(inner, buf);
}
