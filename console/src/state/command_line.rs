//! The `:` command line: the admin commands' names and arguments
//! (without the ZooKeeper ones), so what an operator types in a shell works
//! here too. Writes fill in the same forms and questions as their keys.

use backpack_shared::model::ReplicationTask;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{Command, Mode, State, StatusKind, Tab};
use crate::forms::{Form, Input};
use crate::rows::TaskRow;

/// The `:` commands' names, joined with `sep`.
pub fn command_names(sep: &str) -> String {
    COMMANDS
        .iter()
        .map(|c| c.names[0])
        .collect::<Vec<_>>()
        .join(sep)
}

/// A `:` command: its names (the first is shown), its arguments.
pub struct CommandSpec {
    pub names: &'static [&'static str],
    pub args: &'static [&'static str],
    pub writes: bool,
}

/// The `:` commands: the admin commands' names and arguments (without the
/// ZooKeeper ones), so what an operator types in a shell works here too.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        names: &["add-server"],
        args: &["<id>", "<http://host:port>"],
        writes: true,
    },
    CommandSpec {
        names: &["add-shard"],
        args: &["<id>", "<node1,node2,..>", "<size (ex: 100gb)>"],
        writes: true,
    },
    CommandSpec {
        names: &["enable-shard", "enable"],
        args: &["<id>"],
        writes: true,
    },
    CommandSpec {
        names: &["disable-shard", "disable"],
        args: &["<id>"],
        writes: true,
    },
    CommandSpec {
        names: &["check-shard", "check"],
        args: &["<id>"],
        writes: true,
    },
    CommandSpec {
        names: &["repair-shard", "repair"],
        args: &["<id>"],
        writes: true,
    },
    CommandSpec {
        names: &["replace-server"],
        args: &["<id>", "<new url>"],
        writes: true,
    },
    CommandSpec {
        names: &["set-queue"],
        args: &["<key>", "<host1:port1,host2:port2,..>"],
        writes: true,
    },
    CommandSpec {
        names: &["requeue"],
        args: &["<path or task>"],
        writes: true,
    },
    CommandSpec {
        names: &["drop"],
        args: &["<path or task>"],
        writes: true,
    },
    CommandSpec {
        names: &["refresh"],
        args: &[],
        writes: false,
    },
    CommandSpec {
        names: &["help"],
        args: &[],
        writes: false,
    },
    CommandSpec {
        names: &["quit", "q"],
        args: &[],
        writes: false,
    },
];

impl State {
    pub(super) fn key_command(&mut self, mut line: String, k: KeyEvent) -> Vec<Command> {
        match k.code {
            KeyCode::Esc => return vec![],
            KeyCode::Enter => return self.run_command(&line),
            // Backspace on an empty line leaves it, as in vi.
            KeyCode::Backspace if line.is_empty() => return vec![],
            KeyCode::Backspace => {
                line.pop();
            }
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => line.clear(),
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => line.push(c),
            _ => {}
        }
        self.mode = Mode::Command(line);
        vec![]
    }

    /// Runs a `:` command. Writes go through the same forms and
    /// confirmations as their keys: the command fills them in.
    fn run_command(&mut self, line: &str) -> Vec<Command> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&first, mut args)) = words.split_first() else {
            return vec![];
        };
        // The admin commands' full names work too.
        let name = first
            .strip_prefix("backpack-coordinator-")
            .or_else(|| first.strip_prefix("backpack-replicator-"))
            .unwrap_or(first);
        let Some(spec) = COMMANDS.iter().find(|c| c.names.contains(&name)) else {
            self.set_status(
                StatusKind::Error,
                format!(
                    "unknown command :{first}; the commands are {}",
                    command_names(", ")
                ),
            );
            return vec![];
        };
        // `check-shard <id> --repair`, as the admin command takes it.
        let repair_flag = spec.names[0] == "check-shard" && args.last() == Some(&"--repair");
        if repair_flag {
            args = &args[..args.len() - 1];
        }
        if args.len() != spec.args.len() {
            self.set_status(
                StatusKind::Error,
                format!("usage: :{} {}", spec.names[0], spec.args.join(" ")),
            );
            return vec![];
        }
        if spec.writes && self.refuse_read_only() {
            return vec![];
        }
        let cluster = self.cluster.clone();
        match (spec.names[0], args) {
            ("quit", []) => return vec![Command::Quit],
            ("help", []) => self.mode = Mode::Help,
            ("refresh", []) => return self.refresh(),
            ("enable-shard", [id]) => self.ask_enable(id, true),
            ("check-shard", [id]) => {
                self.tab = Tab::Shards;
                self.ask_check(id, repair_flag);
            }
            ("replace-server", [id, url]) => {
                self.tab = Tab::Servers;
                self.open_replace(id, url);
            }
            ("repair-shard", [id]) => {
                self.tab = Tab::Shards;
                self.ask_check(id, true);
            }
            ("disable-shard", [id]) => self.ask_enable(id, false),
            ("add-server", [id, url]) => {
                self.tab = Tab::Servers;
                self.open_form(
                    Form::AddServer {
                        id: Input::new(*id),
                        url: Input::new(*url),
                    },
                    1,
                );
            }
            ("add-shard", [id, nodes, size]) => {
                self.tab = Tab::Shards;
                let mut form = Form::add_shard(&cluster);
                if let Form::AddShard {
                    id: i,
                    nodes: n,
                    capacity,
                } = &mut form
                {
                    *i = Input::new(*id);
                    n.picked = nodes
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect();
                    *capacity = Input::new(*size);
                }
                self.open_form(form, 2);
            }
            ("set-queue", [key, servers]) => {
                self.tab = Tab::Queue;
                self.open_form(
                    Form::SetQueue {
                        key: Input::new(*key),
                        servers: Input::new(*servers),
                    },
                    1,
                );
            }
            ("requeue" | "drop", [what]) => {
                let requeue = spec.names[0] == "requeue";
                // The exact item, or the file's path as the admin command takes it.
                let found = self
                    .queue
                    .as_ref()
                    .into_iter()
                    .flat_map(|q| q.dead.iter())
                    .find(|t| {
                        t.item == *what
                            || ReplicationTask::decode(&t.item).is_ok_and(|d| d.path == *what)
                    })
                    .cloned();
                match found {
                    Some(info) => self.ask_dead(
                        TaskRow {
                            dead: true,
                            task: ReplicationTask::decode(&info.item).ok(),
                            info,
                            locked_by: None,
                        },
                        requeue,
                    ),
                    None => self.set_status(
                        StatusKind::Error,
                        format!(
                            "no dead-letter task for {what}; give its path or whole item as the Queue view lists it"
                        ),
                    ),
                }
            }
            _ => {}
        }
        vec![]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use backpack_shared::ops::MapOp;

    use super::super::testing::{keys, press};
    use super::*;
    use crate::demo;

    /// Types `:` and `line`, then Enter.
    fn command(s: &mut State, line: &str) -> Vec<Command> {
        keys(s, ":");
        keys(s, line);
        press(s, KeyCode::Enter)
    }

    #[test]
    fn command_line_asks_like_the_keys_do() {
        let mut s = demo::state(100, 30);
        // Shard 3 is read-only in the demo: enabling it asks first.
        assert!(command(&mut s, "enable-shard 3").is_empty());
        let Mode::Confirm(c) = &s.mode else {
            panic!("no confirmation: {:?}", s.status)
        };
        assert!(c.question.starts_with("Enable shard 3?"), "{}", c.question);
        let cmds = keys(&mut s, "y");
        assert!(
            matches!(&cmds[..], [Command::Apply { op: MapOp::EnableShard { id }, .. }] if id == "3"),
            "{cmds:?}"
        );
        // The admin command's full name and the short one work too.
        command(&mut s, "backpack-coordinator-disable-shard 1");
        assert!(matches!(&s.mode, Mode::Confirm(c) if c.title == "Disable shard"));
        press(&mut s, KeyCode::Esc);
        command(&mut s, "disable 1");
        assert!(matches!(&s.mode, Mode::Confirm(c) if c.title == "Disable shard"));
        press(&mut s, KeyCode::Esc);

        // Dead letters by path, as backpack-replicator-dead takes them.
        command(&mut s, "requeue /photos/2026/11/24/lost.jpg");
        let Mode::Confirm(c) = &s.mode else {
            panic!("no confirmation: {:?}", s.status)
        };
        assert_eq!(c.title, "Requeue task");
        let cmds = keys(&mut s, "y");
        assert!(
            matches!(&cmds[..], [Command::Requeue { item, .. }] if item.contains("lost.jpg")),
            "{cmds:?}"
        );
    }

    #[test]
    fn command_line_checks_and_repairs_like_c_and_r() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "2");
        for (line, title) in [
            ("check-shard 2", "Check shard 2"),
            (
                "backpack-coordinator-check-shard 2 --repair",
                "Repair shard 2",
            ),
            ("repair-shard 3", "Repair shard 3"),
            ("check 1", "Check shard 1"),
        ] {
            assert!(command(&mut s, line).is_empty());
            assert_eq!(s.tab, Tab::Shards);
            let Mode::Confirm(c) = &s.mode else {
                panic!("{line}: no question: {:?}", s.status)
            };
            assert_eq!(c.title, title, "{line}");
            press(&mut s, KeyCode::Esc);
        }
        command(&mut s, "repair-shard 3");
        let cmds = keys(&mut s, "y");
        assert!(
            matches!(&cmds[..], [Command::AskCheck { shard, request, .. }] if shard == "3" && request.repair),
            "{cmds:?}"
        );
        // --repair belongs to check-shard only.
        command(&mut s, "enable-shard 3 --repair");
        assert_eq!(s.status.clone().unwrap().text, "usage: :enable-shard <id>");
        s.config.read_only = true;
        command(&mut s, "check-shard 1");
        assert!(matches!(s.mode, Mode::Normal));
        assert!(s.status.clone().unwrap().text.starts_with("read-only"));
    }

    #[test]
    fn command_line_fills_in_the_forms() {
        let mut s = demo::state(100, 30);
        command(&mut s, "add-shard 9 7,6 50gb");
        assert_eq!(s.tab, Tab::Shards);
        let Mode::Form(f) = &s.mode else {
            panic!("no form: {:?}", s.status)
        };
        let Some(MapOp::AddShard {
            id,
            nodes,
            capacity,
            ..
        }) = &f.checked.op
        else {
            panic!("not valid: {:?}", f.checked)
        };
        assert_eq!(
            (id.as_str(), nodes.clone(), *capacity),
            ("9", vec!["7".to_string(), "6".to_string()], 50 << 30)
        );
        // Nothing is written until Enter in the form.
        let cmds = press(&mut s, KeyCode::Enter);
        assert!(
            matches!(
                &cmds[..],
                [Command::Apply {
                    op: MapOp::AddShard { .. },
                    ..
                }]
            ),
            "{cmds:?}"
        );

        // A bad value shows in the form, as if typed there.
        command(&mut s, "add-server 9 one:10009");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert!(f.checked.op.is_none());
        assert!(
            press(&mut s, KeyCode::Enter).is_empty(),
            "invalid: no write"
        );
        press(&mut s, KeyCode::Esc);

        command(&mut s, "set-queue q2 127.0.0.1:6380,127.0.0.1:6381");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert!(
            matches!(&f.checked.op, Some(MapOp::SetQueue(q)) if q.key == "q2" && q.servers.len() == 2)
        );
    }

    #[test]
    fn command_line_errors_say_what_to_type() {
        let mut s = demo::state(100, 30);
        let error = |s: &State| {
            assert!(matches!(s.mode, Mode::Normal), "{:?}", s.mode);
            let st = s.status.clone().unwrap();
            assert_eq!(st.kind, StatusKind::Error);
            st.text
        };
        command(&mut s, "frobnicate");
        let e = error(&s);
        assert!(e.contains(":frobnicate") && e.contains("add-shard"), "{e}");
        command(&mut s, "add-shard 9");
        assert_eq!(
            error(&s),
            "usage: :add-shard <id> <node1,node2,..> <size (ex: 100gb)>"
        );
        command(&mut s, "enable-shard 42");
        assert!(error(&s).contains("shard 42 does not exist"));
        command(&mut s, "drop /nowhere.jpg");
        assert!(error(&s).contains("no dead-letter task for /nowhere.jpg"));
        // Esc leaves without running; Backspace on an empty line too.
        keys(&mut s, ":enable-shard 3");
        press(&mut s, KeyCode::Esc);
        assert!(matches!(s.mode, Mode::Normal));
        keys(&mut s, ":");
        press(&mut s, KeyCode::Backspace);
        assert!(matches!(s.mode, Mode::Normal));
        assert_eq!(command(&mut s, "q"), vec![Command::Quit]);
    }

    #[test]
    fn command_line_writes_nothing_when_read_only() {
        let mut s = demo::state(100, 30);
        s.config.read_only = true;
        command(&mut s, "enable-shard 3");
        assert!(matches!(s.mode, Mode::Normal));
        assert!(s.status.clone().unwrap().text.starts_with("read-only"));
        assert_eq!(command(&mut s, "refresh"), vec![Command::Refresh]);
    }
}
