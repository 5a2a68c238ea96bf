//! The action forms (add server, add shard, set queue): their fields, the
//! validation done as the operator types (the same rules as the admin
//! commands, through [`MapOp::plan`] on the maps the console sees), and the
//! [`MapOp`] they produce.

use std::sync::Arc;

use backpack_shared::live::ClusterState;
use backpack_shared::model::{HostPort, QueueInfo, format_size, parse_size};
use backpack_shared::ops::{MapOp, OpError, Snapshot, validate_id};

use crate::fmt::{addr_list, id_key};
use crate::rows::node_shards;

/// A one-line text input. A prefilled value is "fresh" (shown as a
/// suggestion): the first character typed replaces it, Backspace clears
/// it, → or End keeps it for editing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub text: String,
    pub fresh: bool,
}

impl Input {
    /// An input holding `text` as typed.
    pub fn new(text: impl Into<String>) -> Self {
        Input {
            text: text.into(),
            fresh: false,
        }
    }

    /// An input suggesting `text`.
    pub fn suggest(text: impl Into<String>) -> Self {
        Input {
            text: text.into(),
            fresh: true,
        }
    }

    pub fn type_char(&mut self, c: char) {
        if self.fresh {
            self.text.clear();
            self.fresh = false;
        }
        self.text.push(c);
    }

    pub fn backspace(&mut self) {
        if self.fresh {
            self.text.clear();
            self.fresh = false;
        } else {
            self.text.pop();
        }
    }

    pub fn keep(&mut self) {
        self.fresh = false;
    }
}

/// The node picker of the add-shard form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Picker {
    /// Typed text narrowing the list (id or URL substring).
    pub query: String,
    /// Position in the filtered candidate list.
    pub cursor: usize,
    /// Picked node ids, in the order picked (the shard's node order).
    pub picked: Vec<String>,
}

/// One server offered by the picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub url: String,
    /// Shards that already use it.
    pub shards: Vec<String>,
}

impl Picker {
    /// Servers matching the query: servers in no shard first, then by id.
    pub fn candidates(&self, cluster: &ClusterState) -> Vec<Candidate> {
        let Some(servers) = &cluster.servers.value else {
            return vec![];
        };
        let uses = node_shards(cluster);
        let q = self.query.to_lowercase();
        let mut out: Vec<Candidate> = servers
            .iter()
            .map(|(id, addr)| Candidate {
                id: id.clone(),
                url: addr.url(),
                shards: uses.get(id).cloned().unwrap_or_default(),
            })
            .filter(|c| q.is_empty() || c.id.to_lowercase().contains(&q) || c.url.contains(&q))
            .collect();
        out.sort_by(|a, b| {
            (!a.shards.is_empty(), id_key(&a.id)).cmp(&(!b.shards.is_empty(), id_key(&b.id)))
        });
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    AddServer {
        id: Input,
        url: Input,
    },
    AddShard {
        id: Input,
        nodes: Picker,
        capacity: Input,
    },
    SetQueue {
        key: Input,
        servers: Input,
    },
    /// Re-point server `id` to a new, empty node (a node lost for good):
    /// `add-server --replace`, then a repair of its shards.
    ReplaceServer {
        id: String,
        url: Input,
    },
}

/// A form being filled in, with the cluster as it was when it opened (to
/// tell the operator what changed meanwhile before writing).
#[derive(Debug, Clone)]
pub struct FormState {
    pub form: Form,
    pub focus: usize,
    pub base: Arc<ClusterState>,
    /// [`Form::check`] against the current maps, kept fresh by the state.
    pub checked: Checked,
}

/// Validation of a form against the current maps: one message per field
/// (or none), and the operation when every field is good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub errors: Vec<Option<String>>,
    /// A problem that is no single field's (the maps themselves).
    pub general: Option<String>,
    pub op: Option<MapOp>,
}

/// The next free numeric id of a map's keys (max + 1).
pub fn next_id<'a>(ids: impl Iterator<Item = &'a String>) -> String {
    let max = ids.filter_map(|k| k.parse::<u64>().ok()).max().unwrap_or(0);
    (max + 1).to_string()
}

/// What the maps look like to [`MapOp::plan`], rebuilt from the live view
/// (versions do not matter for validation).
fn snapshot(cluster: &ClusterState) -> Snapshot {
    let mut s = Snapshot::new();
    let json = |v: &serde_json::Value| Some((v.to_string().into_bytes(), 0));
    if let Some(v) = &cluster.servers.value {
        s.insert(
            "servers-map".into(),
            serde_json::to_value(v).ok().as_ref().and_then(json),
        );
    }
    if let Some(v) = &cluster.shards.value {
        s.insert(
            "shards-map".into(),
            serde_json::to_value(v).ok().as_ref().and_then(json),
        );
    }
    if let Some(v) = &cluster.queue.value {
        s.insert(
            "queue".into(),
            serde_json::to_value(v).ok().as_ref().and_then(json),
        );
    }
    for (id, d) in &cluster.sizes {
        if let Some(v) = &d.value {
            s.insert(
                format!("shard-size-{id}"),
                serde_json::to_value(v).ok().as_ref().and_then(json),
            );
        }
    }
    s
}

/// Which field of a form is which text input, written once for
/// [`Form::input`] and [`Form::input_mut`] (the match gives `&` or `&mut`).
macro_rules! field_input {
    ($form:expr, $i:expr) => {
        match ($form, $i) {
            (Form::AddServer { id, .. }, 0) => Some(id),
            (Form::AddServer { url, .. }, 1) => Some(url),
            (Form::AddShard { id, .. }, 0) => Some(id),
            (Form::AddShard { capacity, .. }, 2) => Some(capacity),
            (Form::SetQueue { key, .. }, 0) => Some(key),
            (Form::SetQueue { servers, .. }, 1) => Some(servers),
            (Form::ReplaceServer { url, .. }, 0) => Some(url),
            _ => None,
        }
    };
}

impl Form {
    pub fn add_server(cluster: &ClusterState) -> Form {
        // No map yet: the first id, as with an empty one.
        let id = next_id(cluster.servers.value.iter().flat_map(|m| m.keys()));
        Form::AddServer {
            id: Input::suggest(id),
            url: Input::default(),
        }
    }

    pub fn add_shard(cluster: &ClusterState) -> Form {
        // No map yet: the first id, as with an empty one.
        let id = next_id(cluster.shards.value.iter().flat_map(|m| m.keys()));
        // The capacity of the newest shard is the likeliest wanted.
        let capacity = cluster
            .sizes
            .iter()
            .filter_map(|(id, d)| d.value.map(|v| (id_key(id), v.capacity)))
            .max()
            .map(|(_, c)| c)
            .map_or("100gb".to_string(), format_size);
        Form::AddShard {
            id: Input::suggest(id),
            nodes: Picker::default(),
            capacity: Input::suggest(capacity),
        }
    }

    pub fn set_queue(cluster: &ClusterState) -> Form {
        let (key, servers) = cluster
            .queue
            .value
            .as_ref()
            .map_or(("backpack-queue".to_string(), String::new()), |q| {
                (q.key.clone(), addr_list(&q.servers))
            });
        Form::SetQueue {
            key: Input::suggest(key),
            servers: Input::suggest(servers),
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Form::AddServer { .. } => "Add server",
            Form::AddShard { .. } => "Add shard",
            Form::SetQueue { .. } => "Set queue",
            Form::ReplaceServer { .. } => "Replace server",
        }
    }

    /// What an empty field expects.
    pub fn placeholder(&self, i: usize) -> &'static str {
        match (self, i) {
            (Form::AddServer { .. }, 1) => "http://host:port",
            (Form::AddShard { .. }, 2) => "100gb",
            (Form::SetQueue { .. }, 1) => "host:port,host:port",
            (Form::ReplaceServer { .. }, 0) => "http://host:port of the new, empty node",
            _ => "",
        }
    }

    pub fn labels(&self) -> &'static [&'static str] {
        match self {
            Form::AddServer { .. } => &["id", "url"],
            Form::AddShard { .. } => &["id", "nodes", "capacity"],
            Form::SetQueue { .. } => &["key", "servers"],
            Form::ReplaceServer { .. } => &["new url"],
        }
    }

    /// What Enter does, said before it is done.
    pub fn explain(&self) -> String {
        match self {
            Form::AddServer { id, .. } => format!(
                "Registers node {} in the servers map. Put it in a shard with a (Shards view).",
                id.text
            ),
            Form::AddShard { id, .. } => {
                format!(
                    "Creates shard {} read-only. Enable it with e when ready.",
                    id.text
                )
            }
            Form::SetQueue { .. } => {
                "Points every coordinator and replicator at this queue.".to_string()
            }
            Form::ReplaceServer { id, .. } => format!(
                "Re-points server {id} to a new, empty node, then asks for a repair of its shards: their other nodes fill it. Asks first."
            ),
        }
    }

    /// The text input of field `i`, if it is one.
    pub fn input(&self, i: usize) -> Option<&Input> {
        field_input!(self, i)
    }

    pub fn input_mut(&mut self, i: usize) -> Option<&mut Input> {
        field_input!(self, i)
    }

    pub fn picker_mut(&mut self, i: usize) -> Option<&mut Picker> {
        match (self, i) {
            (Form::AddShard { nodes, .. }, 1) => Some(nodes),
            _ => None,
        }
    }

    /// Validates every field against the current maps.
    pub fn check(&self, cluster: &ClusterState) -> Checked {
        match self {
            Form::AddServer { id, url } => {
                let id_err = validate_id("server", id.text.trim())
                    .err()
                    .map(|e| e.to_string());
                let addr = HostPort::parse_url(&url.text);
                let mut errors = vec![id_err, addr.as_ref().err().map(|e| e.to_string())];
                let op = match (&errors[..], addr) {
                    ([None, None], Ok(addr)) => Some(MapOp::AddServer {
                        id: id.text.trim().to_string(),
                        addr,
                        replace: false,
                    }),
                    _ => None,
                };
                finish(cluster, op, &mut errors, |e| match e {
                    OpError::ServerExists { .. } | OpError::InvalidId { .. } => Some(0),
                    _ => None,
                })
            }
            Form::AddShard {
                id,
                nodes,
                capacity,
            } => {
                let id_err = validate_id("shard", id.text.trim())
                    .err()
                    .map(|e| e.to_string());
                let nodes_err = nodes
                    .picked
                    .is_empty()
                    .then(|| "pick at least one node (Space)".to_string());
                let cap = parse_size(&capacity.text);
                let cap_err = match &cap {
                    Err(e) => Some(e.to_string()),
                    Ok(0) => Some(OpError::ZeroCapacity.to_string()),
                    Ok(_) => None,
                };
                let mut errors = vec![id_err, nodes_err, cap_err];
                let op = match (&errors[..], cap) {
                    ([None, None, None], Ok(capacity)) => Some(MapOp::AddShard {
                        id: id.text.trim().to_string(),
                        nodes: nodes.picked.clone(),
                        capacity,
                        replace: false,
                    }),
                    _ => None,
                };
                finish(cluster, op, &mut errors, |e| match e {
                    OpError::ShardExists { .. } | OpError::InvalidId { .. } => Some(0),
                    OpError::UnknownNodes { .. }
                    | OpError::DuplicateNode { .. }
                    | OpError::NoNodes => Some(1),
                    OpError::ZeroCapacity => Some(2),
                    _ => None,
                })
            }
            Form::SetQueue { key, servers } => {
                let key_err = key
                    .text
                    .trim()
                    .is_empty()
                    .then(|| OpError::EmptyQueueKey.to_string());
                let list = HostPort::parse_list(&servers.text);
                let mut errors = vec![key_err, list.as_ref().err().map(|e| e.to_string())];
                let op = match (&errors[..], list) {
                    ([None, None], Ok(servers)) => Some(MapOp::SetQueue(QueueInfo {
                        key: key.text.trim().to_string(),
                        servers,
                    })),
                    _ => None,
                };
                finish(cluster, op, &mut errors, |e| match e {
                    OpError::EmptyQueueKey => Some(0),
                    _ => None,
                })
            }
            Form::ReplaceServer { id, url } => {
                let addr = HostPort::parse_url(&url.text);
                let mut errors = vec![addr.as_ref().err().map(|e| e.to_string())];
                let known = cluster
                    .servers
                    .value
                    .as_ref()
                    .is_some_and(|m| m.contains_key(id));
                if !known {
                    return Checked {
                        errors,
                        general: Some(format!(
                            "server {id} is not in the servers map; register a new node with a"
                        )),
                        op: None,
                    };
                }
                let op = addr.ok().map(|addr| MapOp::AddServer {
                    id: id.clone(),
                    addr,
                    replace: true,
                });
                finish(cluster, op, &mut errors, |_| None)
            }
        }
    }
}

/// Plans a fully typed operation on the maps the console sees, so that
/// every rule of the admin commands (an id in use, unknown nodes ...) shows
/// while typing, on the field it concerns.
fn finish(
    cluster: &ClusterState,
    op: Option<MapOp>,
    errors: &mut Vec<Option<String>>,
    field_of: impl Fn(&OpError) -> Option<usize>,
) -> Checked {
    let mut general = None;
    let op = op.and_then(|op| match op.plan(&snapshot(cluster)) {
        Ok(plan) if plan.writes.is_empty() => {
            general = Some(format!("already so: {}", plan.message));
            None
        }
        Ok(_) => Some(op),
        Err(e) => {
            match field_of(&e) {
                Some(i) => errors[i] = Some(e.to_string()),
                None => general = Some(e.to_string()),
            }
            None
        }
    });
    Checked {
        errors: std::mem::take(errors),
        general,
        op,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use backpack_shared::live::Doc;
    use backpack_shared::model::{ServersMap, Shard, ShardsMap};

    fn doc<T>(v: T) -> Doc<T> {
        Doc {
            value: Some(v),
            error: None,
            seen: true,
            skipped: Vec::new(),
        }
    }

    fn cluster() -> ClusterState {
        let mut servers = ServersMap::new();
        for (id, port) in [("1", 10001), ("4", 10004), ("7", 10007)] {
            servers.insert(
                id.into(),
                HostPort {
                    host: "one".into(),
                    port,
                },
            );
        }
        let mut shards = ShardsMap::new();
        shards.insert(
            "1".into(),
            Shard {
                read_only: false,
                nodes: vec!["1".into(), "4".into()],
            },
        );
        ClusterState {
            servers: doc(servers),
            shards: doc(shards),
            ..Default::default()
        }
    }

    fn check(form: &Form) -> (Vec<Option<String>>, Option<String>, bool) {
        let c = form.check(&cluster());
        (c.errors, c.general, c.op.is_some())
    }

    #[test]
    fn add_server_validates_as_typed() {
        let c = cluster();
        let Form::AddServer { id, .. } = Form::add_server(&c) else {
            panic!()
        };
        assert_eq!(id.text, "8");
        let form = |id: &str, url: &str| Form::AddServer {
            id: Input::new(id),
            url: Input::new(url),
        };
        let (e, _, ok) = check(&form("8", "http://two:10008"));
        assert_eq!(e, vec![None, None]);
        assert!(ok);
        let (e, _, ok) = check(&form("1", "http://two:10008"));
        assert!(e[0].as_deref().unwrap().contains("already exists"), "{e:?}");
        assert!(!ok);
        let (e, _, _) = check(&form("8", "two:10008"));
        assert!(e[1].as_deref().unwrap().contains("http://"), "{e:?}");
        let (e, _, _) = check(&form("a b", "http://two:1"));
        assert!(
            e[0].as_deref().unwrap().contains("invalid server id"),
            "{e:?}"
        );
        let (_, general, ok) = check(&form("1", "http://one:10001"));
        assert!(general.unwrap().starts_with("already so"));
        assert!(!ok);
    }

    #[test]
    fn add_shard_validates_as_typed() {
        let form = |id: &str, nodes: &[&str], cap: &str| Form::AddShard {
            id: Input::new(id),
            nodes: Picker {
                picked: nodes.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            capacity: Input::new(cap),
        };
        let (e, _, ok) = check(&form("2", &["7"], "100gb"));
        assert_eq!(e, vec![None, None, None]);
        assert!(ok);
        let (e, _, _) = check(&form("1", &["7"], "100gb"));
        assert!(e[0].as_deref().unwrap().contains("already exists"), "{e:?}");
        let (e, _, _) = check(&form("2", &[], "100gb"));
        assert!(e[1].is_some());
        let (e, _, _) = check(&form("2", &["9"], "100gb"));
        assert!(
            e[1].as_deref().unwrap().contains("not in the servers map"),
            "{e:?}"
        );
        let (e, _, _) = check(&form("2", &["7"], "100 parsecs"));
        assert!(e[2].as_deref().unwrap().contains("invalid size"), "{e:?}");
        let (e, _, _) = check(&form("2", &["7"], "0gb"));
        assert!(e[2].as_deref().unwrap().contains("above 0"), "{e:?}");
    }

    #[test]
    fn picker_offers_free_nodes_first() {
        let p = Picker::default();
        let ids: Vec<String> = p.candidates(&cluster()).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["7", "1", "4"]);
        let p = Picker {
            query: "10004".into(),
            ..Default::default()
        };
        let ids: Vec<String> = p.candidates(&cluster()).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["4"]);
    }

    #[test]
    fn set_queue_validates() {
        let form = |k: &str, s: &str| Form::SetQueue {
            key: Input::new(k),
            servers: Input::new(s),
        };
        let (e, g, ok) = check(&form("q", "one:13001"));
        // No queue znode in this cluster: the maps themselves are the problem.
        assert_eq!(e, vec![None, None]);
        assert!(g.unwrap().contains("init"));
        assert!(!ok);
        let (e, _, _) = check(&form("", "one"));
        assert!(e[0].is_some() && e[1].is_some());
    }
}
