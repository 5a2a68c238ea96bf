//! What a cluster snapshot or a queue report changed: the connection
//! (lost, back), the growth history behind FULL IN, the daemons' counter
//! rates, the queue servers that can lose tasks, and the lines of the
//! Events view (the cluster diff).

use std::collections::HashMap;
use std::sync::Arc;

use backpack_shared::live::{ClusterState, Doc};
use backpack_shared::queue::Keeping;
use backpack_shared::zk::ConnState;

use super::{LogKind, State};
use crate::checks::check_events;
use crate::event::{Millis, QueueReport};
use crate::fmt::addr_list;
use crate::rows::{self, DaemonRow, evicts_text, flatten, no_appendonly_text};

/// An announcement unchanged this long means its counters stand still.
const RATE_IDLE_MS: Millis = 10_000;

/// Names of announcement counters counted as uploads / copies in the header.
const UPLOAD_COUNTERS: &[&str] = &["processed_uploads", "uploads", "uploads.ok"];
const COPY_COUNTERS: &[&str] = &["copies_done", "copied", "copies", "copies.ok"];
/// Numeric fields of announcements that are not counters (no rate).
pub const NOT_COUNTERS: &[&str] = &[
    "updated",
    "started",
    "started_ms",
    "pid",
    "in_flight",
    "pending_fill_bytes",
    "concurrency",
    "max_attempts",
];

impl State {
    pub(super) fn on_cluster(&mut self, new: Arc<ClusterState>) {
        let old = std::mem::replace(&mut self.cluster, new.clone());
        self.follow_conn(&old, &new);
        self.last_change = Some(self.now);
        self.follow_growth(&new);
        self.follow_rates(&new);
        self.log_changes(&old, &new);
    }

    /// Remembers when the ZooKeeper connection went, and logs it.
    fn follow_conn(&mut self, old: &ClusterState, new: &ClusterState) {
        let was = old.conn;
        let is = new.conn;
        match (was.map(|c| c.is_connected()), is) {
            (Some(true), Some(ConnState::Disconnected { .. })) => {
                self.conn_lost_at = Some(self.now);
                self.push_log(
                    LogKind::Conn,
                    "ZooKeeper connection lost; reconnecting".into(),
                );
            }
            (Some(prev), Some(ConnState::Expired { .. }))
                if !matches!(was, Some(ConnState::Expired { .. })) =>
            {
                if prev {
                    self.conn_lost_at = Some(self.now);
                }
                self.push_log(
                    LogKind::Conn,
                    "ZooKeeper session expired; building a new one".into(),
                );
            }
            (Some(false), Some(ConnState::Connected { session_id })) => {
                self.conn_lost_at = None;
                self.push_log(
                    LogKind::Conn,
                    format!("ZooKeeper connection back (session {session_id:#x})"),
                );
            }
            _ => {}
        }
        if is.is_some_and(|c| c.is_connected()) {
            self.conn_lost_at = None;
        }
    }

    /// Records each shard's used bytes, for FULL IN.
    fn follow_growth(&mut self, new: &ClusterState) {
        for (id, d) in &new.sizes {
            if let Some(v) = &d.value {
                self.growth
                    .entry(id.clone())
                    .or_default()
                    .record(self.now, v.used());
            }
        }
        self.growth.retain(|id, _| new.sizes.contains_key(id));
    }

    /// The daemons' counters per second, from two announcements.
    fn follow_rates(&mut self, new: &ClusterState) {
        for (kind, map) in [
            ("coordinator", &new.coordinators),
            ("replicator", &new.replicators),
        ] {
            for (name, doc) in map {
                let Some(v) = &doc.value else { continue };
                let k = (kind, name.clone());
                match self.daemon_prev.get(&k) {
                    // Unchanged: rates fall to 0 once it stayed so a while.
                    Some((t, prev)) if prev == v && self.now.saturating_sub(*t) < RATE_IDLE_MS => {}
                    Some((t, prev)) => {
                        let dt = self.now.saturating_sub(*t) as f64 / 1000.0;
                        if dt > 0.0 {
                            let before: HashMap<String, f64> = flatten(prev)
                                .into_iter()
                                .filter_map(|(k, v)| v.as_f64().map(|f| (k, f)))
                                .collect();
                            let rates = flatten(v)
                                .into_iter()
                                .filter_map(|(f, v)| {
                                    let now = v.as_f64()?;
                                    let was = *before.get(&f)?;
                                    if NOT_COUNTERS.contains(&f.as_str()) {
                                        return None;
                                    }
                                    (now >= was).then(|| (f, (now - was) / dt))
                                })
                                .collect();
                            self.daemon_rates.insert(k.clone(), rates);
                        }
                        self.daemon_prev.insert(k, (self.now, v.clone()));
                    }
                    None => {
                        self.daemon_prev.insert(k, (self.now, v.clone()));
                    }
                }
            }
        }
        let live = |kind: &str, name: &String| match kind {
            "coordinator" => new.coordinators.contains_key(name),
            _ => new.replicators.contains_key(name),
        };
        self.daemon_prev.retain(|(k, n), _| live(k, n));
        self.daemon_rates.retain(|(k, n), _| live(k, n));
    }

    /// The Events view: what the cluster looked like at first, then what changed.
    fn log_changes(&mut self, old: &ClusterState, new: &ClusterState) {
        if !self.ready_seen {
            if new.ready() {
                self.ready_seen = true;
                let servers = new.servers.value.as_ref().map_or(0, |m| m.len());
                let shards = new.shards.value.as_ref().map_or(0, |m| m.len());
                self.push_log(
                    LogKind::Conn,
                    format!(
                        "watching {}{} : {shards} shards, {servers} servers",
                        self.config.zk_servers, self.config.root
                    ),
                );
                for (kind, text) in problems(&ClusterState::default(), new) {
                    self.push_log(kind, text);
                }
            }
        } else {
            for (kind, text) in diff_cluster(old, new) {
                self.push_log(kind, text);
            }
        }
        for (bad, text) in check_events(old, new, self.now) {
            self.push_log(
                if bad {
                    LogKind::Problem
                } else {
                    LogKind::Change
                },
                text,
            );
        }
    }

    pub(super) fn on_queue(&mut self, report: QueueReport) {
        if let Some(old) = self.queue.take() {
            for ((addr, was), (_, is)) in old.per_server.iter().zip(&report.per_server) {
                match (was, is) {
                    (Ok(_), Err(e)) => {
                        self.push_log(LogKind::Conn, format!("Redis {addr} not answering: {e}"))
                    }
                    (Err(_), Ok(_)) => {
                        self.push_log(LogKind::Conn, format!("Redis {addr} answering again"))
                    }
                    _ => {}
                }
            }
            if let (Some(was), Some(is)) = (old.dead_count, report.dead_count)
                && is > was
            {
                self.push_log(
                    LogKind::Problem,
                    format!(
                        "{} task{} moved to the dead-letter set ({is} now)",
                        is - was,
                        if is - was == 1 { "" } else { "s" }
                    ),
                );
            }
        }
        self.queue = Some(report);
        self.queue_at = Some(self.now);
    }

    /// A new reading of how the queue's servers keep items: Events says
    /// when a server starts or stops being able to lose tasks.
    pub(super) fn on_keeping(&mut self, now: Vec<Keeping>) {
        for k in &now {
            let before = self.keeping.iter().find(|b| b.addr == k.addr);
            let was_evicting = before.is_some_and(Keeping::evicts);
            let had_no_appendonly = before.is_some_and(|b| b.appendonly == Some(false));
            match &k.policy {
                Some(policy) if k.evicts() && !was_evicting => {
                    self.push_log(LogKind::Problem, evicts_text(&[&k.addr], policy));
                }
                // Only a policy read back says it stopped; an unreadable one says nothing.
                Some(policy) if !k.evicts() && was_evicting => self.push_log(
                    LogKind::Change,
                    format!(
                        "Redis {} no longer evicts (maxmemory-policy {policy})",
                        k.addr
                    ),
                ),
                _ => {}
            }
            match k.appendonly {
                Some(false) if !had_no_appendonly => {
                    self.push_log(LogKind::Problem, no_appendonly_text(&[&k.addr]));
                }
                Some(true) if had_no_appendonly => self.push_log(
                    LogKind::Change,
                    format!(
                        "Redis {} has appendonly on: the queue survives a restart",
                        k.addr
                    ),
                ),
                _ => {}
            }
        }
        self.keeping_warnings = rows::keeping_warnings(&now);
        self.keeping = now;
    }

    /// Uploads per second across the coordinators, from their counters.
    pub fn upload_rate(&self) -> Option<f64> {
        counter_rate(&self.daemons, "coordinator", UPLOAD_COUNTERS)
    }
    pub fn copy_rate(&self) -> Option<f64> {
        counter_rate(&self.daemons, "replicator", COPY_COUNTERS)
    }
}

fn counter_rate(daemons: &[DaemonRow], kind: &str, names: &[&str]) -> Option<f64> {
    let mut total = None;
    for d in daemons.iter().filter(|d| d.kind == kind) {
        if let Some(r) = names.iter().find_map(|n| d.rates.get(*n)) {
            *total.get_or_insert(0.0) += r;
        }
    }
    total
}

/// Problems of documents: what is invalid or missing in `new` but was not
/// in `old`, and what got fixed.
fn problems(old: &ClusterState, new: &ClusterState) -> Vec<(LogKind, String)> {
    fn doc<T>(out: &mut Vec<(LogKind, String)>, what: &str, old: &Doc<T>, new: &Doc<T>) {
        match (&old.error, &new.error) {
            (None, Some(e)) => out.push((LogKind::Problem, e.clone())),
            (Some(_), None) if new.seen => {
                out.push((LogKind::Change, format!("{what} readable again")))
            }
            (Some(a), Some(b)) if a != b => out.push((LogKind::Problem, b.clone())),
            _ => {}
        }
        // A map's invalid entries: skipped (the rest is used), then fixed.
        for e in new.skipped.iter().filter(|e| !old.skipped.contains(e)) {
            out.push((
                LogKind::Problem,
                format!("{what}: {e}; the rest of the map is used (replace or remove the entry)"),
            ));
        }
        for e in old.skipped.iter().filter(|e| !new.skipped.contains(e)) {
            out.push((
                LogKind::Change,
                format!("{what}: entry {:?} no longer invalid", e.id),
            ));
        }
    }
    let mut out = vec![];
    doc(&mut out, "servers-map", &old.servers, &new.servers);
    doc(&mut out, "shards-map", &old.shards, &new.shards);
    doc(&mut out, "queue", &old.queue, &new.queue);
    let empty = Doc::default();
    for (id, d) in &new.sizes {
        doc(
            &mut out,
            &format!("shard-size-{id}"),
            old.sizes.get(id).unwrap_or(&empty),
            d,
        );
    }
    let none = Doc::default();
    for (kind, o, n) in [
        ("coordinators", &old.coordinators, &new.coordinators),
        ("replicators", &old.replicators, &new.replicators),
    ] {
        for (name, d) in n {
            doc(
                &mut out,
                &format!("{kind}/{name}"),
                o.get(name).unwrap_or(&none),
                d,
            );
        }
    }
    out
}

/// What changed between two snapshots, for the Events view. Sizes moving
/// are not events; a shard becoming full is.
pub fn diff_cluster(old: &ClusterState, new: &ClusterState) -> Vec<(LogKind, String)> {
    let mut out = problems(old, new);
    let ch = |t: String| (LogKind::Change, t);
    if let (Some(a), Some(b)) = (&old.servers.value, &new.servers.value)
        && a != b
    {
        for (id, addr) in b {
            match a.get(id) {
                None => out.push(ch(format!("server {id} added: {}", addr.url()))),
                Some(was) if was != addr => out.push(ch(format!(
                    "server {id} moved: {} → {}",
                    was.url(),
                    addr.url()
                ))),
                _ => {}
            }
        }
        for id in a.keys().filter(|id| !b.contains_key(*id)) {
            out.push(ch(format!("server {id} removed")));
        }
    }
    if let (Some(a), Some(b)) = (&old.shards.value, &new.shards.value)
        && a != b
    {
        for (id, s) in b {
            match a.get(id) {
                None => out.push(ch(format!(
                    "shard {id} added ({}) on nodes {}",
                    if s.read_only { "read-only" } else { "writable" },
                    s.nodes.join(",")
                ))),
                Some(was) => {
                    if was.read_only != s.read_only {
                        out.push(ch(if s.read_only {
                            format!("shard {id} disabled (read-only)")
                        } else {
                            format!("shard {id} enabled for writing")
                        }));
                    }
                    if was.nodes != s.nodes {
                        out.push(ch(format!(
                            "shard {id} re-pointed: nodes {} → {}",
                            was.nodes.join(","),
                            s.nodes.join(",")
                        )));
                    }
                }
            }
        }
        for id in a.keys().filter(|id| !b.contains_key(*id)) {
            out.push(ch(format!("shard {id} removed")));
        }
    }
    for (id, d) in &new.sizes {
        let (Some(was), Some(is)) = (old.sizes.get(id).and_then(|d| d.value), d.value) else {
            continue;
        };
        if was.has_room() && !is.has_room() {
            out.push((LogKind::Problem, format!("shard {id} is full")));
        }
        if was.capacity != is.capacity {
            out.push(ch(format!(
                "shard {id} capacity {} → {}",
                backpack_shared::model::format_size(was.capacity),
                backpack_shared::model::format_size(is.capacity)
            )));
        }
    }
    if let (Some(a), Some(b)) = (&old.queue.value, &new.queue.value)
        && a != b
    {
        out.push(ch(format!(
            "queue set to key {} on {}",
            b.key,
            addr_list(&b.servers)
        )));
    }
    for (kind, o, n) in [
        ("coordinator", &old.coordinators, &new.coordinators),
        ("replicator", &old.replicators, &new.replicators),
    ] {
        for name in n.keys().filter(|k| !o.contains_key(*k)) {
            out.push((LogKind::Conn, format!("{kind} {name} up")));
        }
        for name in o.keys().filter(|k| !n.contains_key(*k)) {
            out.push((LogKind::Conn, format!("{kind} {name} gone")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{cluster_with, last_log};
    use super::*;
    use crate::demo::{self, T0};
    use crate::event::Event;
    use crate::rows::{KeepingWarning, ShardState};
    use crate::state::Tab;
    use backpack_shared::model::{HostPort, ShardSize};

    #[test]
    fn changes_seen_become_events() {
        let mut s = demo::state(100, 30);
        let n = s.log.len();
        s.update(
            T0,
            cluster_with(|c| {
                c.servers.value.as_mut().unwrap().insert(
                    "8".into(),
                    HostPort {
                        host: "three".into(),
                        port: 10008,
                    },
                );
                c.shards
                    .value
                    .as_mut()
                    .unwrap()
                    .get_mut("3")
                    .unwrap()
                    .read_only = false;
                c.sizes.get_mut("2").unwrap().value = Some(ShardSize {
                    capacity: 100 * demo::GIB,
                    current: Some(100 * demo::GIB),
                });
                c.replicators.remove("two:977");
            }),
        );
        let texts: Vec<&str> = s.log.iter().skip(n).map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "server 8 added: http://three:10008",
                "shard 3 enabled for writing",
                "shard 2 is full",
                "replicator two:977 gone"
            ]
        );
        assert_eq!(s.shards[1].state, ShardState::Full);
    }

    #[test]
    fn bad_json_is_an_error_on_its_item_and_the_rest_stays() {
        let mut s = demo::state(100, 30);
        s.update(
            T0,
            cluster_with(|c| {
                c.shards.error = Some("shards-map does not hold valid JSON (...)".into());
                c.sizes.get_mut("2").unwrap().error =
                    Some("shard-size-2 does not hold valid JSON".into());
            }),
        );
        assert_eq!(s.shards.len(), 3, "the last good map stays");
        assert_eq!(
            s.shards[1].size_error.as_deref(),
            Some("shard-size-2 does not hold valid JSON")
        );
        assert!(s.log.iter().any(|e| e.kind == LogKind::Problem
            && e.text.starts_with("shards-map does not hold valid JSON")));
    }

    #[test]
    fn an_invalid_map_entry_is_a_problem_until_it_is_fixed() {
        let mut s = demo::state(100, 30);
        let bad = backpack_shared::model::SkippedEntry {
            id: "9".into(),
            reason: "port must be a number from 1 to 65535".into(),
        };
        s.update(T0, cluster_with(|c| c.servers.skipped = vec![bad.clone()]));
        assert!(
            s.log.iter().any(|e| e.kind == LogKind::Problem
                && e.text
                    .starts_with("servers-map: entry \"9\" skipped: port must be")),
            "{:?}",
            s.log
        );
        s.update(T0 + 1000, cluster_with(|c| c.servers.skipped.clear()));
        assert!(
            s.log.iter().any(|e| e.kind == LogKind::Change
                && e.text == "servers-map: entry \"9\" no longer invalid")
        );
    }

    #[test]
    fn connection_loss_is_remembered_and_logged() {
        let mut s = demo::state(100, 30);
        s.update(
            T0 + 1000,
            cluster_with(|c| {
                c.conn = Some(ConnState::Disconnected {
                    since: std::time::Instant::now(),
                })
            }),
        );
        assert_eq!(s.conn_lost_at, Some(T0 + 1000));
        assert!(!s.connected());
        assert_eq!(last_log(&s), "ZooKeeper connection lost; reconnecting");
        s.update(T0 + 9000, cluster_with(|_| {}));
        assert_eq!(s.conn_lost_at, None);
        assert_eq!(last_log(&s), "ZooKeeper connection back (session 0x1a2b)");
    }

    #[test]
    fn full_in_comes_from_the_recent_growth() {
        let s = demo::state(100, 30);
        // Shard 1 grew 0.5 GiB in the 10 s seen: 61.5 GiB left at 0.05 GiB/s.
        let r = &s.shards[0];
        assert_eq!(r.full_in.map(|f| f.round()), Some(1230.0));
        assert_eq!(s.shards[1].full_in, None, "shard 2 did not grow");
        assert_eq!(s.shards[2].full_in, None, "read-only");
    }

    #[test]
    fn daemon_rates_and_header_figures() {
        let s = demo::state(100, 30);
        // 1030 + 1030 uploads and 995 + 995 copies in 5 s
        assert_eq!(s.upload_rate().map(|r| r.round()), Some(412.0));
        assert_eq!(s.copy_rate().map(|r| r.round()), Some(398.0));
        assert_eq!(s.totals.rw, 2);
        assert_eq!(s.totals.ro, 1);
    }

    fn kept(host: &str, port: u16, policy: Option<&str>, appendonly: Option<bool>) -> Keeping {
        Keeping {
            addr: HostPort {
                host: host.into(),
                port,
            },
            policy: policy.map(String::from),
            appendonly,
            error: policy
                .is_none()
                .then(|| "Connection refused (os error 111)".into()),
        }
    }

    fn new_lines(s: &State, since: usize) -> Vec<(LogKind, &str)> {
        s.log
            .iter()
            .skip(since)
            .map(|e| (e.kind, e.text.as_str()))
            .collect()
    }

    #[test]
    fn queue_servers_that_can_lose_tasks_are_named() {
        let mut s = demo::state(80, 24);
        let page = s.page_rows(Tab::Queue);
        let n = s.log.len();
        s.update(T0, demo::keeping_at_risk());
        let evicts = "Redis one:13001 evicts: allkeys-lru — queued copies can be lost; set maxmemory-policy noeviction";
        let no_aof =
            "Redis two:13002 has no appendonly: a restart loses the queue; set appendonly yes";
        assert_eq!(
            new_lines(&s, n),
            vec![(LogKind::Problem, evicts), (LogKind::Problem, no_aof)]
        );
        assert_eq!(
            s.keeping_warnings,
            vec![
                KeepingWarning {
                    evicts: true,
                    text: evicts.into()
                },
                KeepingWarning {
                    evicts: false,
                    text: no_aof.into()
                },
            ]
        );
        // Each wraps to two lines at 80 columns, taken from the tasks.
        assert_eq!(s.queue_warning_lines().len(), 4);
        assert_eq!(s.page_rows(Tab::Queue), page - 4);

        // The same reading 30 s later: nothing new to say.
        let n = s.log.len();
        s.update(T0 + 30_000, demo::keeping_at_risk());
        assert_eq!(new_lines(&s, n), vec![]);

        // Fixed: said once, and the warnings go.
        s.update(
            T0 + 60_000,
            Event::Keeping(vec![
                kept("one", 13001, Some("noeviction"), Some(true)),
                kept("two", 13002, Some("noeviction"), Some(true)),
            ]),
        );
        assert_eq!(
            new_lines(&s, n),
            vec![
                (
                    LogKind::Change,
                    "Redis one:13001 no longer evicts (maxmemory-policy noeviction)"
                ),
                (
                    LogKind::Change,
                    "Redis two:13002 has appendonly on: the queue survives a restart"
                ),
            ]
        );
        assert!(s.keeping_warnings.is_empty());
        assert_eq!(s.page_rows(Tab::Queue), page);

        // Several servers with one problem: one warning naming them all.
        s.update(
            T0 + 90_000,
            Event::Keeping(vec![
                kept("one", 13001, Some("allkeys-lfu"), Some(true)),
                kept("two", 13002, Some("allkeys-lfu"), Some(true)),
            ]),
        );
        assert_eq!(
            s.keeping_warnings,
            vec![KeepingWarning {
                evicts: true,
                text: "Redis one:13001,two:13002 evict: allkeys-lfu — queued copies can be lost; set maxmemory-policy noeviction".into()
            }]
        );

        // A server that stops answering is not said to be fixed, nor named.
        let n = s.log.len();
        s.update(
            T0 + 120_000,
            Event::Keeping(vec![
                kept("one", 13001, None, None),
                kept("two", 13002, Some("volatile-lru"), Some(true)),
            ]),
        );
        assert_eq!(
            new_lines(&s, n),
            vec![(
                LogKind::Change,
                "Redis two:13002 no longer evicts (maxmemory-policy volatile-lru)"
            )]
        );
        assert!(
            s.keeping_warnings.is_empty(),
            "volatile-* leaves the queue alone"
        );
    }
}
