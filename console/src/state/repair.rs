//! The check, repair and replace questions: `c` and `R` in the Shards
//! view (and `:check-shard`, `:repair-shard`) ask the elected checker,
//! through `check-requests/<id>`, to check a shard or to repair it; `R` in
//! the Servers view (and `:replace-server`) re-points a server to a new,
//! empty node and asks for a repair of its shards. Each after a question
//! that says what it costs and what it changes.

use backpack_shared::model::paths;
use backpack_shared::ops::MapOp;

use super::{Action, Confirm, Mode, State, StatusKind};
use crate::checks::{ShardHealth, count};
use crate::fmt::ago;
use crate::forms::{Form, FormState, Input};
use crate::state::relevant;

impl State {
    /// Asks to check (or repair) shard `id`, saying what it will do.
    pub(super) fn ask_check(&mut self, id: &str, repair: bool) {
        let cluster = self.cluster.clone();
        let Some(shard) = self.shard_or_say(&cluster, id) else {
            return;
        };
        let what = if repair { "repair" } else { "check" };
        let checker = match &cluster.checker {
            Some(Some(name)) => format!(
                "The elected checker ({name}) takes it within seconds; HEALTH shows the result."
            ),
            _ => format!(
                "No replicator runs the checks now (no checker): the request waits for one, or run backpack-coordinator-check-shard {id}{}.",
                if repair { " --repair" } else { "" }
            ),
        };
        // Asked already (as much): say so rather than ask again.
        if let Some(asked) = cluster
            .check_requests
            .get(id)
            .and_then(|d| d.value.as_ref())
            && (asked.repair || !repair)
        {
            let waiting = if matches!(&cluster.checker, Some(Some(_))) {
                "the elected checker takes it within seconds"
            } else {
                "no replicator runs the checks now (no checker)"
            };
            self.set_status(
                StatusKind::Info,
                format!(
                    "a {} of shard {id} was asked {} ago and not taken yet; {waiting}",
                    if asked.repair { "repair" } else { "check" },
                    ago(self.now, asked.asked_ms)
                ),
            );
            return;
        }
        let row = self.shards.iter().find(|r| r.id == id);
        let files = match row.and_then(|r| r.check.as_ref()) {
            Some(c) => format!("~{} files at the last check", count(c.files)),
            None => "never checked: the count is not known".into(),
        };
        let n = shard.nodes.len();
        let mut lines = vec![format!(
            "Its {n} node{} ({}) list every file ({files}) and compare versions.",
            if n == 1 { "" } else { "s" },
            shard.nodes.join(",")
        )];
        if repair {
            lines.push(
                "A copy of each file a node lacks (missing, older or damaged) is queued; the replicators make it while uploads and reads go on."
                    .into(),
            );
            if let Some(r) = row
                && let Some(c) = &r.check
                && matches!(
                    r.health,
                    ShardHealth::Missing(_) | ShardHealth::Damaged { .. }
                )
            {
                lines.push(format!(
                    "The last check ({} ago) found {} copies lacking: about as many to copy.",
                    ago(self.now, c.when_ms),
                    count(c.missing + c.older)
                ));
            }
        } else {
            lines.push("Nothing is copied: R repairs.".into());
        }
        if let Some(r) = row {
            for n in &r.down_nodes {
                lines.push(format!(
                    "Node {n} is down: its listing fails, and the {what} with it."
                ));
            }
            for n in &r.unknown_nodes {
                lines.push(format!(
                    "Node {n} is not in the servers map: the {what} fails."
                ));
            }
        }
        lines.push(checker);
        let action = Action::Check {
            shard: id.to_string(),
            repair,
        };
        self.mode = Mode::Confirm(Confirm {
            title: format!("{} shard {id}", if repair { "Repair" } else { "Check" }),
            lines,
            question: format!(
                "Ask for a {what} of shard {id}? (writes {})",
                paths::check_request(id)
            ),
            check: relevant(&action, &cluster),
            action,
            back: None,
        });
    }
}

impl State {
    /// Opens the replace form of server `id` (the new node's URL).
    pub(super) fn open_replace(&mut self, id: &str, url: &str) {
        self.open_form(
            Form::ReplaceServer {
                id: id.to_string(),
                url: Input::new(url),
            },
            0,
        );
    }

    /// Asks before re-pointing a server, saying what moves, what is
    /// copied and from where; `n` goes back to the form.
    pub(super) fn ask_replace(&mut self, action: Action, form: FormState) {
        let Action::Replace {
            op: MapOp::AddServer { id, addr, .. },
            shards,
        } = &action
        else {
            return;
        };
        let cluster = self.cluster.clone();
        let old = cluster
            .servers
            .value
            .as_ref()
            .and_then(|m| m.get(id))
            .map_or("?".to_string(), |a| a.url());
        let mut lines = vec![format!(
            "Server {id} moves from {old} to {}: its shards read and write there from now on.",
            addr.url()
        )];
        if shards.is_empty() {
            lines.push(format!(
                "Server {id} is in no shard: nothing is copied to it."
            ));
        } else {
            let rows: Vec<_> = self
                .shards
                .iter()
                .filter(|r| shards.contains(&r.id))
                .collect();
            let files = if rows.iter().all(|r| r.check.is_some()) {
                format!(
                    " (~{} files at the last checks)",
                    count(
                        rows.iter()
                            .filter_map(|r| r.check.as_ref())
                            .map(|c| c.files)
                            .sum()
                    )
                )
            } else {
                String::new()
            };
            lines.push(
                "The new node must run backpack-node and hold no file: its /stats is read first."
                    .into(),
            );
            lines.push(format!(
                "Then a repair of shard {} is asked: a copy of every file{files} is queued for the new node, and the replicators make them from the other nodes while uploads and reads go on.",
                shards.join(",")
            ));
            for r in &rows {
                let peers: Vec<&String> = r.nodes.iter().filter(|n| *n != id).collect();
                if peers.is_empty() {
                    lines.push(format!(
                        "Shard {} has no other node: nothing can fill the new one.",
                        r.id
                    ));
                } else if peers.iter().all(|p| r.down_nodes.contains(p)) {
                    lines.push(format!(
                        "Shard {}'s other node{} ({}) {} down: the repair fails until up.",
                        r.id,
                        if peers.len() == 1 { "" } else { "s" },
                        peers
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        if peers.len() == 1 { "is" } else { "are" }
                    ));
                }
            }
            if !matches!(&cluster.checker, Some(Some(_))) {
                lines.push(
                    "No replicator runs the checks now (no checker): the repair waits for one."
                        .into(),
                );
            }
        }
        let writes = if shards.is_empty() {
            "servers-map".to_string()
        } else {
            format!(
                "servers-map, then {}",
                shards
                    .iter()
                    .map(|s| paths::check_request(s))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        self.mode = Mode::Confirm(Confirm {
            title: "Replace server".into(),
            lines,
            question: format!("Replace server {id}'s node? (writes {writes})"),
            check: relevant(&action, &cluster),
            action,
            back: Some(form),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use backpack_shared::model::CheckRequest;
    use crossterm::event::KeyCode;

    use super::super::testing::{cluster_with, keys, press};
    use super::*;
    use crate::demo::{self, T0};
    use crate::event::Event;
    use crate::state::{Command, State};

    #[test]
    fn c_asks_for_a_check_saying_what_it_costs() {
        let mut s = demo::state(100, 30);
        assert!(keys(&mut s, "c").is_empty(), "nothing written before y");
        let Mode::Confirm(c) = &s.mode else {
            panic!("no question: {:?}", s.status)
        };
        assert_eq!(c.title, "Check shard 1");
        assert_eq!(
            c.lines,
            vec![
                "Its 2 nodes (1,4) list every file (~381k files at the last check) and compare versions.",
                "Nothing is copied: R repairs.",
                "The elected checker (one:4121) takes it within seconds; HEALTH shows the result.",
            ]
        );
        assert_eq!(
            c.question,
            "Ask for a check of shard 1? (writes check-requests/1)"
        );
        assert_eq!(
            keys(&mut s, "y"),
            vec![Command::AskCheck {
                id: 1,
                shard: "1".into(),
                request: CheckRequest {
                    repair: false,
                    asked_ms: T0
                }
            }]
        );
        assert_eq!(
            s.status.as_ref().unwrap().text,
            "… ask for a check of shard 1"
        );
        // n (any other key) asks nothing.
        keys(&mut s, "c");
        assert!(keys(&mut s, "n").is_empty());
        assert_eq!(s.status.as_ref().unwrap().text, "Check shard 1: cancelled");
    }

    #[test]
    fn r_asks_for_a_repair_naming_what_lacks_and_the_nodes_down() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "jR");
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(c.title, "Repair shard 2");
        assert!(
            c.lines[1].starts_with("A copy of each file a node lacks"),
            "{:?}",
            c.lines
        );
        assert_eq!(
            c.lines[2],
            "The last check (5m ago) found 3 copies lacking: about as many to copy."
        );
        let cmds = keys(&mut s, "y");
        assert!(
            matches!(&cmds[..], [Command::AskCheck { shard, request, .. }] if shard == "2" && request.repair),
            "{cmds:?}"
        );
        // Shard 3: never checked, node 6 down, and no checker elected.
        s.update(T0, cluster_with(|c| c.checker = Some(None)));
        keys(&mut s, "GR");
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(
            c.lines,
            vec![
                "Its 2 nodes (3,6) list every file (never checked: the count is not known) and compare versions.",
                "A copy of each file a node lacks (missing, older or damaged) is queued; the replicators make it while uploads and reads go on.",
                "Node 6 is down: its listing fails, and the repair with it.",
                "No replicator runs the checks now (no checker): the request waits for one, or run backpack-coordinator-check-shard 3 --repair.",
            ]
        );
    }

    #[test]
    fn a_request_not_yet_taken_is_not_asked_again() {
        let mut s = demo::state(100, 30);
        let asked = |repair| {
            cluster_with(move |c| {
                c.check_requests.insert(
                    "1".into(),
                    demo::doc(CheckRequest {
                        repair,
                        asked_ms: T0 - 12_000,
                    }),
                );
            })
        };
        s.update(T0, asked(false));
        assert_eq!(s.selected_shard().unwrap().checked(T0), "asked");
        assert!(keys(&mut s, "c").is_empty());
        assert!(matches!(s.mode, Mode::Normal));
        assert_eq!(
            s.status.as_ref().unwrap().text,
            "a check of shard 1 was asked 12s ago and not taken yet; the elected checker takes it within seconds"
        );
        // A check asked can still become a repair; a repair covers a check.
        keys(&mut s, "R");
        assert!(matches!(&s.mode, Mode::Confirm(c) if c.title == "Repair shard 1"));
        keys(&mut s, "n");
        s.update(T0, asked(true));
        keys(&mut s, "R");
        assert!(matches!(s.mode, Mode::Normal));
        assert!(
            s.status
                .as_ref()
                .unwrap()
                .text
                .starts_with("a repair of shard 1")
        );
    }

    #[test]
    fn a_shard_re_pointed_meanwhile_is_asked_again() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "R");
        s.update(
            T0,
            cluster_with(|c| {
                c.shards.value.as_mut().unwrap().get_mut("1").unwrap().nodes =
                    vec!["1".into(), "7".into()];
            }),
        );
        assert!(keys(&mut s, "y").is_empty());
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(c.title, "Changed meanwhile");
        assert_eq!(c.question, "Still ask for a repair of shard 1?");
        assert_eq!(keys(&mut s, "y").len(), 1);
    }

    #[test]
    fn replace_a_server_asks_then_re_points_and_repairs_its_shards() {
        let mut s = demo::state(100, 30);
        // Servers view, server 3 (shard 3, with node 6 down).
        keys(&mut s, "2jjR");
        let Mode::Form(f) = &s.mode else {
            panic!("no form: {:?}", s.status)
        };
        assert_eq!(f.form.title(), "Replace server");
        assert!(f.checked.op.is_none(), "no URL yet");
        assert!(press(&mut s, KeyCode::Enter).is_empty());
        keys(&mut s, "http://one:10003");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert!(
            f.checked
                .general
                .as_deref()
                .unwrap_or("")
                .starts_with("already so"),
            "{:?}",
            f.checked
        );
        press(&mut s, KeyCode::Esc);
        keys(&mut s, "R");
        keys(&mut s, "http://three:10003");
        assert!(press(&mut s, KeyCode::Enter).is_empty(), "asks first");
        let Mode::Confirm(c) = &s.mode else { panic!() };
        assert_eq!(c.title, "Replace server");
        assert_eq!(
            c.lines,
            vec![
                "Server 3 moves from http://one:10003 to http://three:10003: its shards read and write there from now on.",
                "The new node must run backpack-node and hold no file: its /stats is read first.",
                "Then a repair of shard 3 is asked: a copy of every file is queued for the new node, and the replicators make them from the other nodes while uploads and reads go on.",
                "Shard 3's other node (6) is down: the repair fails until up.",
            ]
        );
        assert_eq!(
            c.question,
            "Replace server 3's node? (writes servers-map, then check-requests/3)"
        );
        // n goes back to the form, as typed.
        keys(&mut s, "n");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert_eq!(f.form.input(0).unwrap().text, "http://three:10003");
        press(&mut s, KeyCode::Enter);
        let cmds = keys(&mut s, "y");
        assert_eq!(
            cmds,
            vec![Command::Replace {
                id: 1,
                op: MapOp::AddServer {
                    id: "3".into(),
                    addr: backpack_shared::model::HostPort {
                        host: "three".into(),
                        port: 10003
                    },
                    replace: true
                },
                shards: vec!["3".into()],
                asked_ms: T0,
            }]
        );
        assert_eq!(
            s.status.as_ref().unwrap().text,
            "… replace server 3 with http://three:10003"
        );
        // A server in no shard: nothing to copy, said so.
        assert!(command(&mut s, "replace-server 7 http://four:10007").is_empty());
        press(&mut s, KeyCode::Enter);
        let Mode::Confirm(c) = &s.mode else {
            panic!("{:?}", s.status)
        };
        assert_eq!(
            c.lines[1],
            "Server 7 is in no shard: nothing is copied to it."
        );
        assert_eq!(c.question, "Replace server 7's node? (writes servers-map)");
        // An unknown id is refused in the form (Esc: back to the form, out).
        press(&mut s, KeyCode::Esc);
        press(&mut s, KeyCode::Esc);
        command(&mut s, "replace-server 42 http://four:10042");
        let Mode::Form(f) = &s.mode else { panic!() };
        assert!(f.checked.op.is_none());
        assert!(
            f.checked
                .general
                .as_deref()
                .unwrap()
                .contains("server 42 is not in the servers map")
        );
    }

    fn command(s: &mut State, line: &str) -> Vec<Command> {
        keys(s, ":");
        keys(s, line);
        press(s, KeyCode::Enter)
    }

    #[test]
    fn read_only_refuses_check_and_repair() {
        let mut cfg = demo::config();
        cfg.read_only = true;
        let mut s = State::new(cfg, T0);
        s.update(T0, Event::Cluster(std::sync::Arc::new(demo::cluster())));
        for k in ["c", "R", "2R"] {
            assert!(keys(&mut s, k).is_empty());
            assert!(matches!(s.mode, Mode::Normal), "{k}");
            assert!(s.status.as_ref().unwrap().text.starts_with("read-only"));
        }
    }
}
