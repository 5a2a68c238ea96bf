//! Writes, asked before they are done: the forms (add server, add shard,
//! set queue), the y/N questions (enable, disable, requeue, drop), the
//! "changed meanwhile" check against what the operator decided on, and the
//! [`Command`] that starts the write.

use std::collections::HashMap;

use backpack_shared::live::ClusterState;
use backpack_shared::model::{CheckRequest, Shard, ShardsMap, shard_chances};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::describe_item;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{Action, Command, Confirm, LogKind, Mode, State, StatusKind};
use crate::fmt::{addr_list, percent};
use crate::forms::{Form, FormState};
use crate::rows::{self, ShardState, TaskRow};

impl State {
    /// Opens a form with the cursor on field `focus`.
    pub(super) fn open_form(&mut self, form: Form, focus: usize) {
        self.mode = Mode::Form(FormState {
            checked: form.check(&self.cluster),
            form,
            focus,
            base: self.cluster.clone(),
        });
    }

    /// Shard `id` of `cluster`'s map, or `None` with the status saying why
    /// (the map not read yet, no such shard).
    pub(super) fn shard_or_say<'c>(
        &mut self,
        cluster: &'c ClusterState,
        id: &str,
    ) -> Option<&'c Shard> {
        let Some(shards) = &cluster.shards.value else {
            self.set_status(
                StatusKind::Error,
                "the shards map is not read yet; wait for the connection".into(),
            );
            return None;
        };
        let shard = shards.get(id);
        if shard.is_none() {
            self.set_status(
                StatusKind::Error,
                format!("shard {id} does not exist; the Shards view lists them"),
            );
        }
        shard
    }

    /// Asks to enable (or disable) shard `id`, saying what changes.
    pub(super) fn ask_enable(&mut self, id: &str, enable: bool) {
        let cluster = self.cluster.clone();
        let Some(shard) = self.shard_or_say(&cluster, id) else {
            return;
        };
        if shard.enabled() == enable {
            self.set_status(
                StatusKind::Info,
                format!(
                    "shard {id} is {} already",
                    if enable { "writable" } else { "read-only" }
                ),
            );
            return;
        }
        let (op, question, lines) = if enable {
            let share = match share_after(&cluster, id, true) {
                Some(share) => format!("It will take ~{} of new writes.", percent(share)),
                None => "Its size is not read yet, so its share of writes is unknown.".to_string(),
            };
            (
                MapOp::EnableShard { id: id.into() },
                format!("Enable shard {id}? {share}"),
                vec![format!("nodes {}", shard.nodes.join(","))],
            )
        } else {
            let now = self
                .shards
                .iter()
                .find(|r| r.id == id)
                .map_or(0.0, |r| r.writes);
            let others = self
                .shards
                .iter()
                .filter(|r| r.id != id && r.state == ShardState::Rw)
                .count();
            let consequence = if others == 0 {
                "No other shard takes writes: uploads fail until one is enabled.".to_string()
            } else {
                "The other writable shards take them over.".to_string()
            };
            (
                MapOp::DisableShard { id: id.into() },
                format!(
                    "Disable shard {id}? It takes {} of new writes now.",
                    percent(now)
                ),
                vec![consequence],
            )
        };
        let action = Action::Op(op);
        self.mode = Mode::Confirm(Confirm {
            title: if enable {
                "Enable shard".into()
            } else {
                "Disable shard".into()
            },
            lines,
            question,
            check: relevant(&action, &cluster),
            action,
            back: None,
        });
    }

    /// Asks to requeue (or drop) a dead-letter task.
    pub(super) fn ask_dead(&mut self, task: TaskRow, requeue: bool) {
        if !task.dead {
            self.set_status(
                StatusKind::Info,
                "only dead-letter tasks can be requeued or dropped; queued ones are being retried"
                    .into(),
            );
            return;
        }
        let item = task.info.item.clone();
        let (title, action, question) = if requeue {
            (
                "Requeue task",
                Action::Requeue(item.clone()),
                "Put it back in the queue with a fresh attempt count?",
            )
        } else {
            (
                "Drop task",
                Action::DropDead(item.clone()),
                "Drop it for good? It will not be copied.",
            )
        };
        let mut lines = vec![describe_item(&item)];
        if let Some(e) = &task.info.last_error {
            lines.push(format!("last error: {e}"));
        }
        self.mode = Mode::Confirm(Confirm {
            title: title.into(),
            lines,
            question: question.into(),
            check: vec![],
            action,
            back: None,
        });
    }

    pub(super) fn key_form(&mut self, mut f: FormState, k: KeyEvent) -> Vec<Command> {
        let nfields = f.form.labels().len();
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let in_picker = f.form.picker_mut(f.focus).is_some();
        match k.code {
            KeyCode::Esc => {
                self.set_status(StatusKind::Info, format!("{}: cancelled", f.form.title()));
                return vec![];
            }
            KeyCode::Tab => f.focus = (f.focus + 1) % nfields,
            KeyCode::BackTab => f.focus = (f.focus + nfields - 1) % nfields,
            KeyCode::Down if !in_picker => f.focus = (f.focus + 1) % nfields,
            KeyCode::Up if !in_picker => f.focus = (f.focus + nfields - 1) % nfields,
            KeyCode::Enter => {
                f.checked = f.form.check(&self.cluster);
                let Some(op) = f.checked.op.clone() else {
                    self.mode = Mode::Form(f);
                    return vec![];
                };
                let action = match &f.form {
                    Form::ReplaceServer { id, .. } => Action::Replace {
                        op,
                        shards: rows::node_shards(&self.cluster)
                            .remove(id)
                            .unwrap_or_default(),
                    },
                    _ => Action::Op(op),
                };
                if matches!(action, Action::Replace { .. }) {
                    // The form says what; the question says what it does,
                    // on the maps as they are now.
                    self.ask_replace(action, f);
                    return vec![];
                }
                let then = relevant(&action, &f.base);
                let now = relevant(&action, &self.cluster);
                if then != now {
                    let lines = diff_lines(&then, &now);
                    let question = format!("Still {}?", action.describe());
                    f.base = self.cluster.clone();
                    self.mode = Mode::Confirm(Confirm {
                        title: "Changed meanwhile".into(),
                        lines,
                        question,
                        check: now,
                        action,
                        back: Some(f),
                    });
                    return vec![];
                }
                return self.start(action);
            }
            _ => {
                let cluster = self.cluster.clone();
                let focus = f.focus;
                if let Some(p) = f.form.picker_mut(focus) {
                    let cands = p.candidates(&cluster);
                    match k.code {
                        KeyCode::Up => p.cursor = p.cursor.saturating_sub(1),
                        KeyCode::Down => {
                            p.cursor = (p.cursor + 1).min(cands.len().saturating_sub(1))
                        }
                        KeyCode::PageUp => p.cursor = p.cursor.saturating_sub(5),
                        KeyCode::PageDown => {
                            p.cursor = (p.cursor + 5).min(cands.len().saturating_sub(1))
                        }
                        KeyCode::Char(' ') => {
                            if let Some(c) = cands.get(p.cursor) {
                                if let Some(pos) = p.picked.iter().position(|x| *x == c.id) {
                                    p.picked.remove(pos);
                                } else {
                                    p.picked.push(c.id.clone());
                                }
                            }
                        }
                        KeyCode::Backspace => {
                            p.query.pop();
                            p.cursor = 0;
                        }
                        KeyCode::Char('u') if ctrl => {
                            p.query.clear();
                            p.cursor = 0;
                        }
                        KeyCode::Char(c) if !ctrl => {
                            p.query.push(c);
                            p.cursor = 0;
                        }
                        _ => {}
                    }
                } else if let Some(input) = f.form.input_mut(focus) {
                    match k.code {
                        KeyCode::Backspace => input.backspace(),
                        KeyCode::Char('u') if ctrl => {
                            input.text.clear();
                            input.keep();
                        }
                        KeyCode::Char(c) if !ctrl => input.type_char(c),
                        KeyCode::Right | KeyCode::End => input.keep(),
                        _ => {}
                    }
                }
            }
        }
        self.mode = Mode::Form(f);
        vec![]
    }

    pub(super) fn key_confirm(&mut self, c: Confirm, k: KeyEvent) -> Vec<Command> {
        match k.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => {
                let now = relevant(&c.action, &self.cluster);
                if now != c.check {
                    let lines = diff_lines(&c.check, &now);
                    let question = format!("Still {}?", c.action.describe());
                    self.mode = Mode::Confirm(Confirm {
                        title: "Changed meanwhile".into(),
                        lines,
                        question,
                        check: now,
                        ..c
                    });
                    return vec![];
                }
                self.start(c.action)
            }
            _ => {
                match c.back {
                    Some(f) => self.mode = Mode::Form(f),
                    None => {
                        self.set_status(StatusKind::Info, format!("{}: cancelled", c.title));
                    }
                }
                vec![]
            }
        }
    }

    /// Starts an action: the loop runs it and answers with [`Event::Done`].
    pub(super) fn start(&mut self, action: Action) -> Vec<Command> {
        let id = self.next_id;
        self.next_id += 1;
        let what = action.describe();
        self.set_status(StatusKind::Info, format!("… {what}"));
        self.push_log(LogKind::Action, what);
        let cmd = match &action {
            Action::Op(op) => Command::Apply { id, op: op.clone() },
            Action::Requeue(item) => Command::Requeue {
                id,
                item: item.clone(),
            },
            Action::DropDead(item) => Command::DropDead {
                id,
                item: item.clone(),
            },
            Action::Replace { op, shards } => Command::Replace {
                id,
                op: op.clone(),
                shards: shards.clone(),
                asked_ms: self.now,
            },
            Action::Check { shard, repair } => Command::AskCheck {
                id,
                shard: shard.clone(),
                request: CheckRequest {
                    repair: *repair,
                    asked_ms: self.now,
                },
            },
        };
        self.pending.insert(id, action);
        vec![cmd]
    }

    pub(super) fn refresh_form(&mut self) {
        if let Mode::Form(f) = &mut self.mode {
            f.checked = f.form.check(&self.cluster);
        }
    }
}

/// The share of new writes shard `id` would get with `enable` applied
/// (`None` while its size is unknown).
pub fn share_after(cluster: &ClusterState, id: &str, enable: bool) -> Option<f64> {
    let shards = cluster.shards.value.as_ref()?;
    let sizes = cluster.size_values();
    sizes.get(id)?;
    let mut shards: ShardsMap = shards.clone();
    if let Some(s) = shards.get_mut(id) {
        s.read_only = !enable;
    }
    shard_chances(&shards, &sizes, 0)
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.chance)
}

fn shard_text(s: Option<&Shard>) -> String {
    match s {
        None => "absent".into(),
        Some(s) => format!(
            "{} on nodes {}",
            if s.read_only { "read-only" } else { "writable" },
            s.nodes.join(",")
        ),
    }
}

/// The part of the cluster an action depends on, as comparable text: what
/// the operator saw when deciding. A change there means asking again.
pub fn relevant(action: &Action, c: &ClusterState) -> Vec<(String, String)> {
    let server = |id: &str| {
        c.servers
            .value
            .as_ref()
            .and_then(|m| m.get(id))
            .map_or("absent".to_string(), |a| a.url())
    };
    let shard = |id: &str| shard_text(c.shards.value.as_ref().and_then(|m| m.get(id)));
    match action {
        Action::Op(MapOp::AddServer { id, addr, .. }) => {
            let mut out = vec![(format!("server {id}"), server(id))];
            let same: Vec<String> = c
                .servers
                .value
                .iter()
                .flatten()
                .filter(|(_, a)| *a == addr)
                .map(|(i, _)| i.clone())
                .collect();
            out.push((
                format!("servers at {}", addr.url()),
                if same.is_empty() {
                    "none".into()
                } else {
                    same.join(",")
                },
            ));
            out
        }
        Action::Op(MapOp::AddShard { id, nodes, .. }) => {
            let uses = rows::node_shards(c);
            let mut out = vec![(format!("shard {id}"), shard(id))];
            out.push((
                format!("shard-size-{id}"),
                c.sizes
                    .get(id)
                    .and_then(|d| d.value)
                    .map_or("absent".into(), |s| {
                        format!("{} / {}", s.used(), s.capacity)
                    }),
            ));
            for n in nodes {
                let in_shards = uses
                    .get(n)
                    .map_or("no shard".into(), |v| format!("shard {}", v.join(",")));
                out.push((
                    format!("server {n}"),
                    format!("{} in {in_shards}", server(n)),
                ));
            }
            out
        }
        Action::Op(MapOp::RemoveServer { id }) => {
            let uses = rows::node_shards(c);
            vec![(
                format!("server {id}"),
                format!(
                    "{} in {}",
                    server(id),
                    uses.get(id)
                        .map_or("no shard".into(), |v| format!("shard {}", v.join(",")))
                ),
            )]
        }
        Action::Op(MapOp::EnableShard { id } | MapOp::DisableShard { id })
        | Action::Check { shard: id, .. } => {
            vec![(format!("shard {id}"), shard(id))]
        }
        Action::Op(MapOp::SetQueue(_)) => vec![(
            "queue".into(),
            c.queue.value.as_ref().map_or("absent".into(), |q| {
                format!("key {} on {}", q.key, addr_list(&q.servers))
            }),
        )],
        Action::Replace { op, .. } => {
            let mut out = relevant(&Action::Op(op.clone()), c);
            if let MapOp::AddServer { id, .. } = op {
                out.push((
                    format!("shards of server {id}"),
                    rows::node_shards(c)
                        .get(id)
                        .map_or("none".into(), |v| v.join(",")),
                ));
            }
            out
        }
        Action::Requeue(_) | Action::DropDead(_) => vec![],
    }
}

fn diff_lines(then: &[(String, String)], now: &[(String, String)]) -> Vec<String> {
    let before: HashMap<&str, &str> = then.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out: Vec<String> = now
        .iter()
        .filter(|(k, v)| before.get(k.as_str()) != Some(&v.as_str()))
        .map(|(k, v)| {
            format!(
                "{k}: {} → {v}",
                before.get(k.as_str()).copied().unwrap_or("?")
            )
        })
        .collect();
    if out.is_empty() {
        out.push("the maps changed while you were editing".into());
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use backpack_shared::model::HostPort;

    use super::super::testing::{cluster_with, keys, last_log, press};
    use super::*;
    use crate::demo::{self, T0};
    use crate::event::Event;
    use crate::state::Status;

    #[test]
    fn add_server_from_keys_to_command_to_result() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "2a");
        let Mode::Form(f) = &s.mode else {
            panic!("no form")
        };
        assert_eq!(
            f.focus, 1,
            "the id comes prefilled; typing starts at the URL"
        );
        assert!(f.checked.op.is_none());
        assert!(
            press(&mut s, KeyCode::Enter).is_empty(),
            "invalid: no write"
        );
        keys(&mut s, "http://three:10008");
        let cmds = press(&mut s, KeyCode::Enter);
        let [Command::Apply { id, op }] = &cmds[..] else {
            panic!("{cmds:?}")
        };
        assert_eq!(
            op,
            &MapOp::AddServer {
                id: "8".into(),
                addr: HostPort {
                    host: "three".into(),
                    port: 10008
                },
                replace: false
            }
        );
        assert!(matches!(s.mode, Mode::Normal));
        assert_eq!(s.pending.len(), 1);
        s.update(
            T0,
            Event::Done {
                id: *id,
                result: Ok("Added http://three:10008 as 8".into()),
            },
        );
        assert!(s.pending.is_empty());
        assert_eq!(
            s.status,
            Some(Status {
                kind: StatusKind::Ok,
                text: "✓ Added http://three:10008 as 8".into()
            })
        );
        assert!(last_log(&s).contains("Added http://three:10008 as 8"));
    }

    #[test]
    fn a_typed_id_replaces_the_suggestion() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "2a");
        press(&mut s, KeyCode::BackTab);
        keys(&mut s, "x9");
        press(&mut s, KeyCode::Tab);
        keys(&mut s, "http://h:1");
        let cmds = press(&mut s, KeyCode::Enter);
        assert!(
            matches!(&cmds[..], [Command::Apply { op: MapOp::AddServer { id, .. }, .. }] if id == "x9"),
            "{cmds:?}"
        );
    }

    #[test]
    fn add_shard_with_the_node_picker() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "a");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert_eq!(f.focus, 1, "starts in the node picker");
        // Server 7 (in no shard) is offered first.
        press(&mut s, KeyCode::Char(' '));
        press(&mut s, KeyCode::Down);
        press(&mut s, KeyCode::Char(' '));
        let cmds = press(&mut s, KeyCode::Enter);
        assert_eq!(
            cmds,
            vec![Command::Apply {
                id: 1,
                op: MapOp::AddShard {
                    id: "4".into(),
                    nodes: vec!["7".into(), "1".into()],
                    capacity: 100 * demo::GIB,
                    replace: false
                }
            }]
        );
    }

    #[test]
    fn enable_asks_with_the_share_it_will_take() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "G");
        assert!(keys(&mut s, "e").is_empty());
        let Mode::Confirm(c) = &s.mode else { panic!() };
        // 100 GiB free of 100 + 62 + 76.8: about 42%.
        assert_eq!(
            c.question,
            "Enable shard 3? It will take ~42% of new writes."
        );
        assert!(keys(&mut s, "n").is_empty());
        assert!(matches!(s.mode, Mode::Normal));
        assert_eq!(s.status.as_ref().unwrap().text, "Enable shard: cancelled");
        keys(&mut s, "e");
        assert_eq!(
            keys(&mut s, "y"),
            vec![Command::Apply {
                id: 1,
                op: MapOp::EnableShard { id: "3".into() }
            }]
        );
        // Disabling the last writable shard says what it means.
        let mut s = demo::state(100, 30);
        s.update(
            T0,
            cluster_with(|c| {
                c.shards
                    .value
                    .as_mut()
                    .unwrap()
                    .get_mut("2")
                    .unwrap()
                    .read_only = true;
            }),
        );
        keys(&mut s, "d");
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert!(c.lines[0].contains("uploads fail"), "{:?}", c.lines);
    }

    #[test]
    fn a_change_made_elsewhere_meanwhile_is_shown_and_asked_again() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "G");
        keys(&mut s, "e");
        // Someone re-points shard 3 while the question is open.
        s.update(
            T0,
            cluster_with(|c| {
                c.shards.value.as_mut().unwrap().get_mut("3").unwrap().nodes =
                    vec!["3".into(), "7".into()];
            }),
        );
        assert!(
            keys(&mut s, "y").is_empty(),
            "nothing written on the old view"
        );
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(c.title, "Changed meanwhile");
        assert_eq!(
            c.lines,
            vec!["shard 3: read-only on nodes 3,6 → read-only on nodes 3,7"]
        );
        assert_eq!(c.question, "Still enable shard 3?");
        assert_eq!(keys(&mut s, "y").len(), 1, "asked again, then applied");
    }

    #[test]
    fn a_form_whose_nodes_changed_meanwhile_asks_again_and_goes_back() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "a");
        press(&mut s, KeyCode::Char(' ')); // node 7
        s.update(
            T0,
            cluster_with(|c| {
                c.shards.value.as_mut().unwrap().insert(
                    "9".into(),
                    Shard {
                        read_only: true,
                        nodes: vec!["7".into()],
                    },
                );
            }),
        );
        assert!(press(&mut s, KeyCode::Enter).is_empty());
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(
            c.lines,
            vec!["server 7: http://one:10007 in no shard → http://one:10007 in shard 9"]
        );
        press(&mut s, KeyCode::Esc);
        let Mode::Form(f) = &s.mode else {
            panic!("back to the form")
        };
        assert!(matches!(&f.form, Form::AddShard { nodes, .. } if nodes.picked == ["7"]));
        // Confirming now applies (the form's base was updated).
        assert_eq!(press(&mut s, KeyCode::Enter).len(), 1);
    }

    #[test]
    fn read_only_refuses_every_write_key() {
        let mut cfg = demo::config();
        cfg.read_only = true;
        let mut s = State::new(cfg, T0);
        s.update(T0, Event::Cluster(Arc::new(demo::cluster())));
        s.update(T0, demo::queue());
        for (tab, k) in [
            ("1", "a"),
            ("1", "e"),
            ("1", "d"),
            ("2", "a"),
            ("3", "c"),
            ("3", "u"),
        ] {
            keys(&mut s, tab);
            assert!(keys(&mut s, k).is_empty());
            assert!(matches!(s.mode, Mode::Normal), "{tab}{k}");
            assert!(s.status.as_ref().unwrap().text.starts_with("read-only"));
        }
    }

    #[test]
    fn dead_letters_are_requeued_or_dropped_after_asking() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "3");
        assert_eq!(s.selected_task().unwrap().state(), "dead");
        keys(&mut s, "u");
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert!(c.lines[1].contains("404"));
        let cmds = keys(&mut s, "y");
        assert!(
            matches!(&cmds[..], [Command::Requeue { item, .. }] if item.contains("lost.jpg")),
            "{cmds:?}"
        );
        keys(&mut s, "x");
        assert!(matches!(&keys(&mut s, "y")[..], [Command::DropDead { .. }]));
        // A queued (not dead) task cannot be dropped.
        keys(&mut s, "j");
        assert!(keys(&mut s, "x").is_empty());
        assert!(matches!(s.mode, Mode::Normal));
    }
}
