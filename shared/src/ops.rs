//! Map changes as pure operations.
//!
//! Each [`MapOp`] names the znodes it reads and, given their current
//! contents, either plans the writes (each guarded by the version it read)
//! or refuses with an [`OpError`] that names the fix. The ZooKeeper side
//! ([`crate::zk::Zk::apply`]) reads, plans, commits atomically and, on a
//! version conflict or a lost answer, reads again and plans again: an
//! operation that no longer makes sense on the fresh maps fails instead of
//! overwriting, and one that already took effect plans no write.
//!
//! Operations are idempotent: applying one whose effect is already there
//! plans nothing and reports the same success line.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::model::{
    HostPort, MapDoc, MapEntry, ModelError, QueueInfo, Server, Shard, ShardSize, format_size,
    parse_json, paths, to_json,
};

/// A znode's content as read: data and version, or absent.
pub type Snapshot = BTreeMap<String, Option<(Vec<u8>, i32)>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// add-server: register (or, with `replace`, move) a storage node.
    AddServer {
        id: String,
        addr: HostPort,
        replace: bool,
    },
    /// add-shard: a new read-only shard on existing nodes. `replace`
    /// re-points an existing shard to other nodes (the original always did).
    AddShard {
        id: String,
        nodes: Vec<String>,
        capacity: u64,
        replace: bool,
    },
    /// remove-server: drop a storage node no shard uses (its entry may be
    /// invalid: the way to clear one).
    RemoveServer {
        id: String,
    },
    EnableShard {
        id: String,
    },
    DisableShard {
        id: String,
    },
    SetQueue(QueueInfo),
}

/// One write of a plan, relative to the cluster root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Set {
        name: String,
        data: Vec<u8>,
        version: i32,
    },
    Create {
        name: String,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Znodes read but not written, whose version must not have changed.
    pub checks: Vec<(String, i32)>,
    pub writes: Vec<Write>,
    /// The success line (the original's wording).
    pub message: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpError {
    #[error("invalid {what} id {id:?}: {reason}")]
    InvalidId {
        what: &'static str,
        id: String,
        reason: &'static str,
    },
    #[error(
        "server {id} already exists as {existing}; pick another id, or pass --replace to move it to {wanted}"
    )]
    ServerExists {
        id: String,
        existing: String,
        wanted: String,
    },
    #[error(
        "shard {id} already exists on nodes {existing}; pick another id, or pass --replace to re-point it to {wanted} (files on its old nodes are then no longer found)"
    )]
    ShardExists {
        id: String,
        existing: String,
        wanted: String,
    },
    #[error("shard {id} does not exist; list the shards with backpack-coordinator-dump-shards")]
    UnknownShard { id: String },
    #[error(
        "server {id} is a node of shard(s) {shards}: its files are read from it; re-point those shards first (backpack-coordinator-add-shard --replace), or move the server with add-server --replace"
    )]
    ServerInUse { id: String, shards: String },
    #[error("{} not in the servers map; add {} first with backpack-coordinator-add-server", plural_nodes(.ids), if .ids.len() == 1 { "it" } else { "them" })]
    UnknownNodes { ids: Vec<String> },
    #[error("node {id} is listed twice; list each node of a shard once")]
    DuplicateNode { id: String },
    #[error("a shard needs at least one node; list node ids like 1,4")]
    NoNodes,
    #[error("a shard's capacity must be above 0; give a size like 100gb")]
    ZeroCapacity,
    #[error("the queue key is empty; give a Redis key like backpack-queue")]
    EmptyQueueKey,
    #[error(
        "the ZooKeeper root is not initialized ({missing} is missing); run backpack-coordinator-init first"
    )]
    NotInitialized { missing: String },
    #[error("{0}; nothing was written")]
    BadDocument(String),
    #[error("{what} {id}'s entry in {map} is invalid ({reason}); {fix}")]
    InvalidEntry {
        what: &'static str,
        map: &'static str,
        id: String,
        reason: String,
        fix: String,
    },
}

impl From<ModelError> for OpError {
    fn from(e: ModelError) -> Self {
        OpError::BadDocument(e.to_string())
    }
}

fn plural_nodes(ids: &[String]) -> String {
    if ids.len() == 1 {
        format!("node {} is", ids[0])
    } else {
        format!("nodes {} are", ids.join(","))
    }
}

/// Checks an id given on the command line: it becomes a JSON key, a znode
/// name suffix (`shard-size-<id>`) and an element of comma lists.
pub fn validate_id(what: &'static str, id: &str) -> Result<(), OpError> {
    let err = |reason| OpError::InvalidId {
        what,
        id: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(err("it is empty"));
    }
    if id.len() > 64 {
        return Err(err("it is longer than 64 bytes"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id == "."
        || id == ".."
    {
        return Err(err("use letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

impl MapOp {
    /// The znodes (names under the root) this operation reads.
    pub fn reads(&self) -> Vec<String> {
        match self {
            MapOp::AddServer { .. } => vec![paths::SERVERS_MAP.into()],
            MapOp::RemoveServer { .. } => {
                vec![paths::SERVERS_MAP.into(), paths::SHARDS_MAP.into()]
            }
            MapOp::AddShard { id, .. } => {
                vec![
                    paths::SERVERS_MAP.into(),
                    paths::SHARDS_MAP.into(),
                    paths::shard_size(id),
                ]
            }
            MapOp::EnableShard { .. } | MapOp::DisableShard { .. } => {
                vec![paths::SHARDS_MAP.into()]
            }
            MapOp::SetQueue(_) => vec![paths::QUEUE.into()],
        }
    }

    /// Plans the writes against the current contents of [`MapOp::reads`].
    pub fn plan(&self, snapshot: &Snapshot) -> Result<Plan, OpError> {
        match self {
            MapOp::AddServer { id, addr, replace } => {
                validate_id("server", id)?;
                let (mut servers, version) = doc::<Server>(snapshot, paths::SERVERS_MAP)?;
                let message = format!("Added {} as {id}", addr.url());
                match servers.entries.get(id).map(|e| &e.value) {
                    Some(Ok(existing)) if existing == addr => return Ok(nothing(message)),
                    Some(Ok(existing)) if !replace => {
                        return Err(OpError::ServerExists {
                            id: id.clone(),
                            existing: existing.url(),
                            wanted: addr.url(),
                        });
                    }
                    Some(Err(reason)) if !replace => {
                        return Err(OpError::InvalidEntry {
                            what: "server",
                            map: paths::SERVERS_MAP,
                            id: id.clone(),
                            reason: reason.clone(),
                            fix: "pass --replace to overwrite it".into(),
                        });
                    }
                    _ => {}
                }
                servers.set(id, addr.clone());
                Ok(set_doc(paths::SERVERS_MAP, &servers, version, message))
            }
            MapOp::AddShard {
                id,
                nodes,
                capacity,
                replace,
            } => {
                validate_id("shard", id)?;
                if nodes.is_empty() {
                    return Err(OpError::NoNodes);
                }
                for (i, n) in nodes.iter().enumerate() {
                    validate_id("node", n)?;
                    if nodes[..i].contains(n) {
                        return Err(OpError::DuplicateNode { id: n.clone() });
                    }
                }
                if *capacity == 0 {
                    return Err(OpError::ZeroCapacity);
                }
                let (servers, servers_version) = doc::<Server>(snapshot, paths::SERVERS_MAP)?;
                let unknown: Vec<String> = nodes
                    .iter()
                    .filter(|n| !servers.entries.contains_key(*n))
                    .cloned()
                    .collect();
                if !unknown.is_empty() {
                    return Err(OpError::UnknownNodes { ids: unknown });
                }
                for n in nodes {
                    if let Some(Err(reason)) = servers.entries.get(n).map(|e| &e.value) {
                        return Err(OpError::InvalidEntry {
                            what: "node",
                            map: paths::SERVERS_MAP,
                            id: n.clone(),
                            reason: reason.clone(),
                            fix: format!(
                                "repair it first with backpack-coordinator-add-server --replace {n} http://host:port"
                            ),
                        });
                    }
                }
                let (mut shards, shards_version) = doc::<Shard>(snapshot, paths::SHARDS_MAP)?;
                let message = format!(
                    "Made shard {id} of size {} that consist of nodes {}",
                    format_size(*capacity),
                    nodes.join(",")
                );
                let size_name = paths::shard_size(id);
                let size = match snapshot.get(&size_name) {
                    Some(Some((data, version))) => {
                        Some((parse_json::<ShardSize>(&size_name, data)?, *version))
                    }
                    _ => None,
                };
                let mut plan = Plan {
                    checks: vec![(paths::SERVERS_MAP.into(), servers_version)],
                    writes: vec![],
                    message,
                };
                let existing = shards.entries.get(id).map(|e| e.value.clone());
                let read_only = match existing {
                    Some(Ok(existing)) if &existing.nodes == nodes => None,
                    Some(Ok(existing)) if !replace => {
                        return Err(OpError::ShardExists {
                            id: id.clone(),
                            existing: existing.nodes.join(","),
                            wanted: nodes.join(","),
                        });
                    }
                    Some(Ok(existing)) => Some(existing.read_only),
                    Some(Err(reason)) if !replace => {
                        return Err(OpError::InvalidEntry {
                            what: "shard",
                            map: paths::SHARDS_MAP,
                            id: id.clone(),
                            reason,
                            fix: "pass --replace to overwrite it (read-only)".into(),
                        });
                    }
                    // An invalid entry overwritten, or a new shard: read-only.
                    Some(Err(_)) | None => Some(true),
                };
                if let Some(read_only) = read_only {
                    shards.set(
                        id,
                        Shard {
                            read_only,
                            nodes: nodes.clone(),
                        },
                    );
                    plan.writes.push(Write::Set {
                        name: paths::SHARDS_MAP.into(),
                        data: shards.to_json(),
                        version: shards_version,
                    });
                }
                match size {
                    None => plan.writes.push(Write::Create {
                        name: size_name,
                        data: to_json(&ShardSize::new(*capacity)),
                    }),
                    // The used bytes stay; only a different capacity is written.
                    Some((size, version))
                        if size.capacity != *capacity && (*replace || !plan.writes.is_empty()) =>
                    {
                        let new = ShardSize {
                            capacity: *capacity,
                            current: Some(size.used()),
                        };
                        plan.writes.push(Write::Set {
                            name: size_name,
                            data: to_json(&new),
                            version,
                        });
                    }
                    Some((_, version)) => plan.checks.push((size_name, version)),
                }
                if plan.writes.is_empty() {
                    plan.checks.clear();
                }
                Ok(plan)
            }
            MapOp::RemoveServer { id } => {
                let (mut servers, version) = doc::<Server>(snapshot, paths::SERVERS_MAP)?;
                let (shards, shards_version) = doc::<Shard>(snapshot, paths::SHARDS_MAP)?;
                let message = format!("Removed server {id}");
                if !servers.entries.contains_key(id) {
                    return Ok(nothing(format!("Server {id} is not in servers-map")));
                }
                let users: Vec<String> = shards
                    .valid()
                    .into_iter()
                    .filter(|(_, s)| s.nodes.contains(id))
                    .map(|(sid, _)| sid)
                    .collect();
                if !users.is_empty() {
                    return Err(OpError::ServerInUse {
                        id: id.clone(),
                        shards: users.join(", "),
                    });
                }
                servers.remove(id);
                let mut plan = set_doc(paths::SERVERS_MAP, &servers, version, message);
                // A shard added meanwhile on this server must not be missed.
                plan.checks.push((paths::SHARDS_MAP.into(), shards_version));
                Ok(plan)
            }
            MapOp::EnableShard { id } | MapOp::DisableShard { id } => {
                let enable = matches!(self, MapOp::EnableShard { .. });
                let (mut shards, version) = doc::<Shard>(snapshot, paths::SHARDS_MAP)?;
                let message = if enable {
                    format!("Enabled shard {id} for writing")
                } else {
                    format!("Shard {id} is read-only now")
                };
                let mut shard = match shards.entries.get(id).map(|e| &e.value) {
                    None => return Err(OpError::UnknownShard { id: id.clone() }),
                    Some(Err(reason)) => {
                        return Err(OpError::InvalidEntry {
                            what: "shard",
                            map: paths::SHARDS_MAP,
                            id: id.clone(),
                            reason: reason.clone(),
                            fix: format!(
                                "re-create it with backpack-coordinator-add-shard --replace {id} <nodes> <size>"
                            ),
                        });
                    }
                    Some(Ok(shard)) => shard.clone(),
                };
                if shard.read_only != enable {
                    return Ok(nothing(message));
                }
                shard.read_only = !enable;
                // Edited like the original: `read_only` set goes after `nodes`.
                shards.set(id, shard);
                Ok(set_doc(paths::SHARDS_MAP, &shards, version, message))
            }
            MapOp::SetQueue(info) => {
                if info.key.trim().is_empty() {
                    return Err(OpError::EmptyQueueKey);
                }
                let message = "Queue info updated!".to_string();
                match snapshot.get(paths::QUEUE) {
                    Some(Some((data, version))) => {
                        // A queue znode holding garbage may be repaired by set-queue.
                        if parse_json::<QueueInfo>(paths::QUEUE, data).ok().as_ref() == Some(info) {
                            return Ok(nothing(message));
                        }
                        Ok(set(paths::QUEUE, info, *version, message))
                    }
                    _ => Err(OpError::NotInitialized {
                        missing: paths::QUEUE.into(),
                    }),
                }
            }
        }
    }
}

fn nothing(message: String) -> Plan {
    Plan {
        checks: vec![],
        writes: vec![],
        message,
    }
}

fn set<T: serde::Serialize>(name: &str, value: &T, version: i32, message: String) -> Plan {
    Plan {
        checks: vec![],
        writes: vec![Write::Set {
            name: name.into(),
            data: to_json(value),
            version,
        }],
        message,
    }
}

fn set_doc<T: MapEntry + Clone>(
    name: &str,
    doc: &MapDoc<T>,
    version: i32,
    message: String,
) -> Plan {
    Plan {
        checks: vec![],
        writes: vec![Write::Set {
            name: name.into(),
            data: doc.to_json(),
            version,
        }],
        message,
    }
}

/// A map znode entry by entry: an invalid entry is no reason to refuse a
/// change elsewhere in the map, and is written back untouched.
fn doc<T: MapEntry + Clone>(snapshot: &Snapshot, name: &str) -> Result<(MapDoc<T>, i32), OpError> {
    match snapshot.get(name) {
        Some(Some((data, version))) => Ok((MapDoc::parse(name, data)?, *version)),
        _ => Err(OpError::NotInitialized {
            missing: name.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn snap(entries: &[(&str, &str, i32)]) -> Snapshot {
        entries
            .iter()
            .map(|(n, d, v)| (n.to_string(), Some((d.as_bytes().to_vec(), *v))))
            .collect()
    }

    fn servers() -> Snapshot {
        snap(&[
            (
                "servers-map",
                r#"{"1":{"host":"one","port":"10001"},"4":{"host":"two","port":"10004"}}"#,
                3,
            ),
            ("shards-map", r#"{"1":{"nodes":["1","4"]}}"#, 7),
        ])
    }

    fn add_shard(id: &str, nodes: &[&str], replace: bool) -> MapOp {
        MapOp::AddShard {
            id: id.into(),
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            capacity: 100 << 30,
            replace,
        }
    }

    #[test]
    fn add_shard_creates_read_only_shard_and_size() {
        let plan = add_shard("2", &["4", "1"], false).plan(&servers()).unwrap();
        assert_eq!(
            plan.message,
            "Made shard 2 of size 100gb that consist of nodes 4,1"
        );
        assert_eq!(plan.checks, vec![("servers-map".to_string(), 3)]);
        assert_eq!(
            plan.writes,
            vec![
                Write::Set {
                    name: "shards-map".into(),
                    data: br#"{"1":{"nodes":["1","4"]},"2":{"read_only":true,"nodes":["4","1"]}}"#
                        .to_vec(),
                    version: 7
                },
                Write::Create {
                    name: "shard-size-2".into(),
                    data: br#"{"capacity":107374182400,"current":0}"#.to_vec()
                },
            ]
        );
    }

    #[test]
    fn add_shard_refuses_the_seed_typo_and_unknown_nodes() {
        let e = add_shard("1", &["4"], false).plan(&servers()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("shard 1 already exists on nodes 1,4"),
            "{e}"
        );
        let e = add_shard("2", &["4", "9", "8"], false)
            .plan(&servers())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nodes 9,8 are not in the servers map; add them first with backpack-coordinator-add-server"
        );
        assert_eq!(
            add_shard("2", &["4", "4"], false)
                .plan(&servers())
                .unwrap_err(),
            OpError::DuplicateNode { id: "4".into() }
        );
        assert_eq!(
            add_shard("2", &[], false).plan(&servers()).unwrap_err(),
            OpError::NoNodes
        );
        assert!(matches!(
            add_shard("a/b", &["1"], false)
                .plan(&servers())
                .unwrap_err(),
            OpError::InvalidId { .. }
        ));
        let e = add_shard("2", &["1"], false)
            .plan(&Snapshot::new())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("run backpack-coordinator-init first"),
            "{e}"
        );
    }

    #[test]
    fn add_shard_is_idempotent_and_replace_keeps_state() {
        let mut s = servers();
        s.insert(
            "shard-size-1".into(),
            Some((br#"{"capacity":107374182400,"current":5}"#.to_vec(), 2)),
        );
        let plan = add_shard("1", &["1", "4"], false).plan(&s).unwrap();
        assert!(plan.writes.is_empty());
        let plan = add_shard("1", &["4"], true).plan(&s).unwrap();
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "shards-map".into(),
                data: br#"{"1":{"nodes":["4"]}}"#.to_vec(),
                version: 7
            }]
        );
        assert_eq!(
            plan.checks,
            vec![
                ("servers-map".to_string(), 3),
                ("shard-size-1".to_string(), 2)
            ]
        );
    }

    #[test]
    fn enable_and_disable() {
        let s = servers();
        let plan = MapOp::EnableShard { id: "1".into() }.plan(&s).unwrap();
        assert!(plan.writes.is_empty());
        assert_eq!(plan.message, "Enabled shard 1 for writing");
        let plan = MapOp::DisableShard { id: "1".into() }.plan(&s).unwrap();
        assert_eq!(plan.message, "Shard 1 is read-only now");
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "shards-map".into(),
                // the original appends `read_only` to the shard's keys
                data: br#"{"1":{"nodes":["1","4"],"read_only":true}}"#.to_vec(),
                version: 7
            }]
        );
        let e = MapOp::EnableShard { id: "9".into() }.plan(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shard 9 does not exist; list the shards with backpack-coordinator-dump-shards"
        );
    }

    #[test]
    fn add_server_refuses_a_taken_id() {
        let s = servers();
        let op = |port, replace| MapOp::AddServer {
            id: "1".into(),
            addr: HostPort {
                host: "one".into(),
                port,
            },
            replace,
        };
        assert!(op(10001, false).plan(&s).unwrap().writes.is_empty());
        let e = op(10009, false).plan(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "server 1 already exists as http://one:10001; pick another id, or pass --replace to move it to http://one:10009"
        );
        assert_eq!(op(10009, true).plan(&s).unwrap().writes.len(), 1);
    }

    #[test]
    fn remove_server_drops_an_unused_or_invalid_entry_and_refuses_a_used_one() {
        let s = snap(&[
            (
                "servers-map",
                r#"{"1":{"host":"one","port":"10001"},"4":{"host":"two","port":"10004"},"9":{"host":"nine","port":"x"}}"#,
                3,
            ),
            ("shards-map", r#"{"1":{"nodes":["1","4"]}}"#, 7),
        ]);
        let rm = |id: &str| MapOp::RemoveServer { id: id.into() };
        let e = rm("4").plan(&s).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("server 4 is a node of shard(s) 1:"),
            "{e}"
        );
        let plan = rm("9").plan(&s).unwrap();
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "servers-map".into(),
                data: br#"{"1":{"host":"one","port":"10001"},"4":{"host":"two","port":"10004"}}"#
                    .to_vec(),
                version: 3
            }]
        );
        assert_eq!(plan.checks, vec![("shards-map".to_string(), 7)]);
        let again = rm("7").plan(&s).unwrap();
        assert!(again.writes.is_empty());
        assert_eq!(again.message, "Server 7 is not in servers-map");
    }

    #[test]
    fn an_invalid_entry_is_kept_untouched_and_can_be_replaced() {
        let bad = r#"{"1":{"host":"one","port":"10001"},"9":{"host":"nine","port":"x"}}"#;
        let s = snap(&[
            ("servers-map", bad, 3),
            (
                "shards-map",
                r#"{"1":{"nodes":["1"]},"5":{"nodes":"oops"}}"#,
                7,
            ),
        ]);
        let add = |id: &str, port, replace| MapOp::AddServer {
            id: id.into(),
            addr: HostPort {
                host: "h".into(),
                port,
            },
            replace,
        };
        // Another id: written, the invalid entry byte for byte.
        let plan = add("2", 10002, false).plan(&s).unwrap();
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "servers-map".into(),
                data: br#"{"1":{"host":"one","port":"10001"},"2":{"host":"h","port":"10002"},"9":{"host":"nine","port":"x"}}"#.to_vec(),
                version: 3
            }]
        );
        // The invalid id: refused with the fix, then repaired with --replace.
        assert_eq!(
            add("9", 10009, false).plan(&s).unwrap_err().to_string(),
            "server 9's entry in servers-map is invalid (port must be a number from 1 to 65535); pass --replace to overwrite it"
        );
        let plan = add("9", 10009, true).plan(&s).unwrap();
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "servers-map".into(),
                data: br#"{"1":{"host":"one","port":"10001"},"9":{"host":"h","port":"10009"}}"#
                    .to_vec(),
                version: 3
            }]
        );
        // A shard on the broken node: refused, naming the repair.
        let e = add_shard("2", &["9"], false).plan(&s).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "repair it first with backpack-coordinator-add-server --replace 9 http://host:port"
            ),
            "{e}"
        );
        // Disabling shard 1 leaves the broken shard 5 as it was.
        let plan = MapOp::DisableShard { id: "1".into() }.plan(&s).unwrap();
        assert_eq!(
            plan.writes,
            vec![Write::Set {
                name: "shards-map".into(),
                data: br#"{"1":{"nodes":["1"],"read_only":true},"5":{"nodes":"oops"}}"#.to_vec(),
                version: 7
            }]
        );
        let e = MapOp::EnableShard { id: "5".into() }.plan(&s).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("shard 5's entry in shards-map is invalid"),
            "{e}"
        );
        // add-shard --replace repairs it, read-only.
        let plan = add_shard("5", &["1"], true).plan(&s).unwrap();
        assert_eq!(
            plan.writes[0],
            Write::Set {
                name: "shards-map".into(),
                // `nodes` keeps its place, `read_only` goes last
                data: br#"{"1":{"nodes":["1"]},"5":{"nodes":["1"],"read_only":true}}"#.to_vec(),
                version: 7
            }
        );
    }

    #[test]
    fn bad_json_is_named_and_nothing_written() {
        let s = snap(&[("shards-map", "{oops", 1)]);
        let e = MapOp::EnableShard { id: "1".into() }.plan(&s).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("shards-map does not hold valid JSON"),
            "{e}"
        );
        assert!(e.to_string().ends_with("nothing was written"), "{e}");
    }
}
