//! The bottom of the screen: the result of the last action, and the key
//! bar (what the keys do here, or the `:` line with the usage of the
//! command being typed).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::theme::Theme;
use crate::forms::Form;
use crate::state::{COMMANDS, CommandSpec, Mode, State, StatusKind, Tab, command_names};

pub(super) fn render_status(s: &State, theme: Theme, area: Rect, buf: &mut Buffer) {
    let Some(st) = &s.status else { return };
    let style = match st.kind {
        StatusKind::Ok => theme.good(),
        StatusKind::Error => theme.bad(),
        StatusKind::Info => Style::new(),
    };
    Paragraph::new(Span::styled(format!(" {}", st.text), style)).render(area, buf);
}

/// The key bar: what the keys do here, as many as fit.
pub(super) fn key_bar(s: &State, theme: Theme, width: usize) -> Line<'static> {
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
                    Tab::Shards => v.extend([
                        ("a", "add"),
                        ("e", "enable"),
                        ("d", "disable"),
                        ("c", "check"),
                        ("R", "repair"),
                    ]),
                    Tab::Servers => v.extend([("a", "add"), ("R", "replace")]),
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
    let item_width = |(k, what): &(&str, &str)| k.chars().count() + what.chars().count() + 3;
    // Where not every key fits, `? help` (which lists them all) stays, last.
    let help = ("?", "help");
    let mut items = items;
    let mut reserve = 0;
    let help_fits = {
        let mut used = 1;
        items
            .iter()
            .take_while(|i| {
                used += item_width(i);
                used <= width
            })
            .any(|i| *i == help)
    };
    if !help_fits && items.contains(&help) {
        items.retain(|i| *i != help);
        reserve = item_width(&help);
    }
    let mut spans = vec![Span::raw(" ")];
    let mut used = 1 + reserve;
    let mut shown = vec![];
    for item in items {
        let w = item_width(&item);
        if used + w > width {
            break;
        }
        used += w;
        shown.push(item);
    }
    if reserve > 0 && reserve < width {
        shown.push(help);
    }
    for (k, what) in shown {
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
