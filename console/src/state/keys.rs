//! What a key does, by mode: moving and switching in the tables, the
//! filter, details and help; the write keys open a form or a question
//! (see `super::writes`), the `:` key the command line.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{Command, Mode, State, Tab};
use crate::forms::Form;

impl State {
    pub(super) fn on_key(&mut self, k: KeyEvent) -> Vec<Command> {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return vec![Command::Quit];
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.key_normal(k),
            Mode::Filter => {
                self.key_filter(k);
                vec![]
            }
            Mode::Help => {
                // Any key closes the help; the key is not acted on.
                vec![]
            }
            Mode::Details => self.key_details(k),
            Mode::Form(f) => self.key_form(f, k),
            Mode::Confirm(c) => self.key_confirm(c, k),
            Mode::Command(line) => self.key_command(line, k),
        }
    }

    fn key_normal(&mut self, k: KeyEvent) -> Vec<Command> {
        let tab = self.tab;
        match k.code {
            KeyCode::Char('q') => return vec![Command::Quit],
            KeyCode::Char('?') | KeyCode::F(1) => self.mode = Mode::Help,
            KeyCode::Tab => self.tab = Tab::ALL[(tab.index() + 1) % 5],
            KeyCode::BackTab => self.tab = Tab::ALL[(tab.index() + 4) % 5],
            KeyCode::Char(c @ '1'..='5') => self.tab = Tab::ALL[(c as u8 - b'1') as usize],
            KeyCode::Up | KeyCode::Char('k') => self.move_sel(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_sel(1),
            KeyCode::PageUp => self.move_sel(-(self.page() as i64)),
            KeyCode::PageDown | KeyCode::Char(' ') => self.move_sel(self.page() as i64),
            KeyCode::Home | KeyCode::Char('g') => self.move_sel(i64::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_sel(i64::MAX / 2),
            KeyCode::Enter if self.selected(tab).is_some() => self.mode = Mode::Details,
            KeyCode::Esc => {
                let t = &mut self.tables[tab.index()];
                if !t.filter.is_empty() {
                    t.filter.clear();
                } else {
                    self.status = None;
                }
            }
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char(':') => self.mode = Mode::Command(String::new()),
            KeyCode::Char('s') => {
                let n = tab.columns().len();
                let t = &mut self.tables[tab.index()];
                t.sort = (t.sort + 1) % n;
            }
            KeyCode::Char('S') => {
                let t = &mut self.tables[tab.index()];
                t.desc = !t.desc;
            }
            KeyCode::Char('r') => return self.refresh(),
            KeyCode::Char(c) if is_write_key(tab, c) => self.write_key(tab, c),
            _ => {}
        }
        vec![]
    }

    fn key_filter(&mut self, k: KeyEvent) {
        let t = &mut self.tables[self.tab.index()];
        match k.code {
            KeyCode::Enter => return,
            KeyCode::Esc => {
                t.filter.clear();
                return;
            }
            KeyCode::Backspace => {
                t.filter.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => t.filter.clear(),
            KeyCode::Char(c) => t.filter.push(c),
            _ => {}
        }
        t.selected = 0;
        t.selected_key = None;
        self.mode = Mode::Filter;
    }

    fn key_details(&mut self, k: KeyEvent) -> Vec<Command> {
        match k.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => {}
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_sel(-1);
                self.mode = Mode::Details;
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_sel(1);
                self.mode = Mode::Details;
            }
            _ => self.mode = Mode::Details,
        }
        vec![]
    }

    /// a / e / d / c / R (Shards), a / R (Servers), c / u / x (Queue).
    fn write_key(&mut self, tab: Tab, c: char) {
        if self.refuse_read_only() {
            return;
        }
        let cluster = self.cluster.clone();
        match (tab, c) {
            (Tab::Shards, 'a') => self.open_form(Form::add_shard(&cluster), 1),
            (Tab::Servers, 'a') => self.open_form(Form::add_server(&cluster), 1),
            (Tab::Servers, 'R') => {
                if let Some(row) = self.selected_server() {
                    let id = row.id.clone();
                    self.open_replace(&id, "");
                }
            }
            (Tab::Queue, 'c') => self.open_form(Form::set_queue(&cluster), 0),
            (Tab::Shards, 'e' | 'd') => {
                if let Some(row) = self.selected_shard() {
                    let id = row.id.clone();
                    self.ask_enable(&id, c == 'e');
                }
            }
            (Tab::Shards, 'c' | 'R') => {
                if let Some(row) = self.selected_shard() {
                    let id = row.id.clone();
                    self.ask_check(&id, c == 'R');
                }
            }
            (Tab::Queue, 'u' | 'x') => {
                if let Some(task) = self.selected_task().cloned() {
                    self.ask_dead(task, c == 'u');
                }
            }
            _ => {}
        }
    }
}

fn is_write_key(tab: Tab, c: char) -> bool {
    matches!(
        (tab, c),
        (Tab::Shards, 'a' | 'e' | 'd' | 'c' | 'R')
            | (Tab::Servers, 'a' | 'R')
            | (Tab::Queue, 'c' | 'u' | 'x')
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crossterm::event::KeyCode;

    use super::super::testing::{keys, press};
    use super::*;
    use crate::demo;

    #[test]
    fn details_and_help_open_and_close() {
        let mut s = demo::state(100, 30);
        press(&mut s, KeyCode::Enter);
        assert!(matches!(s.mode, Mode::Details));
        keys(&mut s, "j");
        assert!(matches!(s.mode, Mode::Details));
        assert_eq!(s.selected_shard().unwrap().id, "2");
        press(&mut s, KeyCode::Esc);
        assert!(matches!(s.mode, Mode::Normal));
        keys(&mut s, "?");
        assert!(matches!(s.mode, Mode::Help));
        assert!(keys(&mut s, "q").is_empty(), "q closes the help only");
        assert!(matches!(s.mode, Mode::Normal));
    }
}
