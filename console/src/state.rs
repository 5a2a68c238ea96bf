//! The console's state and its one entry point, [`State::update`]: an
//! event in, the state changed and a list of [`Command`]s out. No IO here,
//! and the clock is an argument, so every behaviour is tested without a
//! terminal, ZooKeeper or Redis.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use backpack_shared::live::{ClusterState, Doc};
use backpack_shared::model::{HostPort, ReplicationTask, Shard, ShardsMap, shard_chances};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::describe_item;
use backpack_shared::zk::ConnState;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::event::{Event, Health, Millis, QueueReport};
use crate::fmt::percent;
use crate::forms::{Form, FormState, Input};
use crate::growth::Growth;
use crate::rows::{
    self, DaemonRow, ServerRow, ShardRow, ShardState, ShardTotals, TaskRow, flatten, order,
};

/// How the console was started.
#[derive(Debug, Clone)]
pub struct Config {
    pub zk_servers: String,
    pub root: String,
    pub read_only: bool,
    /// False under NO_COLOR: states are words anyway.
    pub color: bool,
    /// The local time zone's offset, for the clock and the Events view.
    pub utc_offset_secs: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Shards,
    Servers,
    Queue,
    Daemons,
    Events,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Shards,
        Tab::Servers,
        Tab::Queue,
        Tab::Daemons,
        Tab::Events,
    ];
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn title(self) -> &'static str {
        match self {
            Tab::Shards => "Shards",
            Tab::Servers => "Servers",
            Tab::Queue => "Queue",
            Tab::Daemons => "Daemons",
            Tab::Events => "Events",
        }
    }
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Tab::Shards => &rows::SHARD_COLUMNS,
            Tab::Servers => &rows::SERVER_COLUMNS,
            Tab::Queue => &rows::TASK_COLUMNS,
            Tab::Daemons => &rows::DAEMON_COLUMNS,
            Tab::Events => &rows::EVENT_COLUMNS,
        }
    }
}

/// What the console asks the loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A map change through the shared code path ([`backpack_shared::zk::Zk::apply`]).
    Apply {
        id: u64,
        op: MapOp,
    },
    Requeue {
        id: u64,
        item: String,
    },
    DropDead {
        id: u64,
        item: String,
    },
    /// Check node health and poll the queue now.
    Refresh,
    Quit,
}

/// A write the operator is asked to confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Op(MapOp),
    Requeue(String),
    DropDead(String),
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Op(MapOp::AddServer { id, addr, .. }) => {
                format!("add server {id} ({})", addr.url())
            }
            Action::Op(MapOp::AddShard { id, nodes, .. }) => {
                format!("add shard {id} on nodes {}", nodes.join(","))
            }
            Action::Op(MapOp::EnableShard { id }) => format!("enable shard {id}"),
            Action::Op(MapOp::DisableShard { id }) => format!("disable shard {id}"),
            Action::Op(MapOp::SetQueue(q)) => format!("set queue {}", q.key),
            Action::Requeue(item) => format!("requeue {}", describe_item(item)),
            Action::DropDead(item) => format!("drop {}", describe_item(item)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    pub question: String,
    pub action: Action,
    /// The part of the cluster the action depends on, as it was when asked.
    pub check: Vec<(String, String)>,
    /// Where `n` / Esc goes back to (the form the action came from).
    pub back: Option<FormState>,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    /// Typing into the current view's filter.
    Filter,
    Help,
    Details,
    Form(FormState),
    Confirm(Confirm),
    /// Typing a `:` command (the text after the colon).
    Command(String),
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Info,
    Ok,
    Error,
}

/// The one-line result at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A change seen in ZooKeeper.
    Change,
    /// An action started from the console.
    Action,
    Ok,
    Failed,
    /// The ZooKeeper connection, Redis or a node.
    Conn,
    /// A document that cannot be read.
    Problem,
}

impl LogKind {
    pub fn word(self) -> &'static str {
        match self {
            LogKind::Change => "change",
            LogKind::Action => "action",
            LogKind::Ok => "done",
            LogKind::Failed => "failed",
            LogKind::Conn => "conn",
            LogKind::Problem => "problem",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub at: Millis,
    pub kind: LogKind,
    pub text: String,
}

/// Selection, scrolling, sorting and filter of one view's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableView {
    pub selected: usize,
    pub offset: usize,
    pub sort: usize,
    pub desc: bool,
    pub filter: String,
    /// The selected row's key, so the selection follows its row when rows
    /// come, go or move.
    pub selected_key: Option<String>,
}

pub const LOG_LIMIT: usize = 1000;
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

pub struct State {
    pub config: Config,
    /// The clock of the last update: what the screen shows as now.
    pub now: Millis,
    /// Terminal size (columns, rows).
    pub size: (u16, u16),
    pub cluster: Arc<ClusterState>,
    /// When the ZooKeeper connection was lost, while it is.
    pub conn_lost_at: Option<Millis>,
    /// When the last cluster change arrived.
    pub last_change: Option<Millis>,
    ready_seen: bool,
    pub tab: Tab,
    pub tables: [TableView; 5],
    pub mode: Mode,
    pub status: Option<Status>,
    pub log: VecDeque<LogEntry>,
    log_seq: u64,
    pub growth: HashMap<String, Growth>,
    pub health: HashMap<HostPort, Health>,
    pub queue: Option<QueueReport>,
    pub queue_at: Option<Millis>,
    daemon_prev: HashMap<(&'static str, String), (Millis, serde_json::Value)>,
    daemon_rates: HashMap<(&'static str, String), BTreeMap<String, f64>>,
    pub pending: BTreeMap<u64, Action>,
    next_id: u64,
    // Derived rows, rebuilt after changes.
    pub shards: Vec<ShardRow>,
    pub totals: ShardTotals,
    pub servers: Vec<ServerRow>,
    pub tasks: Vec<TaskRow>,
    pub daemons: Vec<DaemonRow>,
    /// Row order of each view after filter and sort.
    pub order: [Vec<usize>; 5],
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

impl State {
    pub fn new(config: Config, now: Millis) -> State {
        let mut s = State {
            config,
            now,
            size: (80, 24),
            cluster: Arc::new(ClusterState::default()),
            conn_lost_at: None,
            last_change: None,
            ready_seen: false,
            tab: Tab::Shards,
            tables: Default::default(),
            mode: Mode::Normal,
            status: None,
            log: VecDeque::new(),
            log_seq: 0,
            growth: HashMap::new(),
            health: HashMap::new(),
            queue: None,
            queue_at: None,
            daemon_prev: HashMap::new(),
            daemon_rates: HashMap::new(),
            pending: BTreeMap::new(),
            next_id: 1,
            shards: vec![],
            totals: ShardTotals::default(),
            servers: vec![],
            tasks: vec![],
            daemons: vec![],
            order: Default::default(),
        };
        // Events newest first by default.
        s.tables[Tab::Events.index()].desc = true;
        s
    }

    /// Handles one event at time `now`; returns what the loop must do.
    pub fn update(&mut self, now: Millis, event: Event) -> Vec<Command> {
        self.now = now;
        let logged = self.log_seq;
        // Only what an event can change is rebuilt: a key press re-sorts
        // one view, a health batch rebuilds servers and shards, and so on.
        let cmds = match event {
            Event::Key(k) => {
                if k.kind == KeyEventKind::Release {
                    return vec![];
                }
                let cmds = self.on_key(k);
                self.refresh_form();
                self.reorder(self.tab);
                cmds
            }
            Event::Resize(w, h) => {
                self.size = (w, h);
                self.reorder_all();
                vec![]
            }
            Event::Cluster(c) => {
                self.on_cluster(c);
                self.rebuild_shards();
                self.rebuild_servers();
                self.daemons = rows::daemon_rows(&self.cluster, &self.daemon_rates);
                self.reorder(Tab::Daemons);
                self.refresh_form();
                vec![]
            }
            Event::Queue(report) => {
                self.on_queue(report);
                self.tasks = rows::task_rows(self.queue.as_ref());
                self.reorder(Tab::Queue);
                vec![]
            }
            Event::Health(batch) => {
                for (addr, h) in batch {
                    self.health.insert(addr, h);
                }
                self.rebuild_servers();
                self.rebuild_shards();
                vec![]
            }
            Event::Done { id, result } => {
                let action = self.pending.remove(&id);
                let what = action.as_ref().map(Action::describe).unwrap_or_default();
                match result {
                    Ok(line) => {
                        self.set_status(StatusKind::Ok, format!("✓ {line}"));
                        self.push_log(LogKind::Ok, format!("{what}: {line}"));
                    }
                    Err(e) => {
                        self.set_status(StatusKind::Error, format!("✗ {e}"));
                        self.push_log(LogKind::Failed, format!("{what}: {e}"));
                    }
                }
                vec![]
            }
            Event::Tick => {
                // The fill-up estimates move with the clock (ages are
                // computed when drawing).
                self.rebuild_shards();
                vec![]
            }
            Event::Quit => vec![Command::Quit],
        };
        if self.log_seq != logged {
            self.reorder(Tab::Events);
        }
        cmds
    }

    // ----- cluster, queue, health ---------------------------------------

    fn on_cluster(&mut self, new: Arc<ClusterState>) {
        let old = std::mem::replace(&mut self.cluster, new.clone());
        // Connection state.
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
        self.last_change = Some(self.now);
        // Growth history.
        for (id, d) in &new.sizes {
            if let Some(v) = &d.value {
                self.growth
                    .entry(id.clone())
                    .or_default()
                    .record(self.now, v.used());
            }
        }
        self.growth.retain(|id, _| new.sizes.contains_key(id));
        // Daemon counter rates.
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
        // The Events view.
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
                for (kind, text) in problems(&ClusterState::default(), &new) {
                    self.push_log(kind, text);
                }
            }
        } else {
            for (kind, text) in diff_cluster(&old, &new) {
                self.push_log(kind, text);
            }
        }
    }

    fn on_queue(&mut self, report: QueueReport) {
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

    fn rebuild_shards(&mut self) {
        self.shards = rows::shard_rows(&self.cluster, &self.growth, &self.health, self.now);
        self.totals = rows::shard_totals(&self.shards);
        self.reorder(Tab::Shards);
    }

    fn rebuild_servers(&mut self) {
        self.servers = rows::server_rows(&self.cluster, &self.health);
        self.reorder(Tab::Servers);
    }

    fn reorder_all(&mut self) {
        for tab in Tab::ALL {
            self.reorder(tab);
        }
    }

    /// Recomputes a view's order, keeps the selection on its row, and
    /// scrolls so that it is visible.
    fn reorder(&mut self, tab: Tab) {
        let t = &self.tables[tab.index()];
        let (sort, desc, filter) = (t.sort, t.desc, t.filter.clone());
        let idx = match tab {
            Tab::Shards => order(
                &self.shards,
                &filter,
                ShardRow::text,
                |r| r.sort_key(sort),
                desc,
            ),
            Tab::Servers => order(
                &self.servers,
                &filter,
                ServerRow::text,
                |r| r.sort_key(sort),
                desc,
            ),
            Tab::Queue => order(
                &self.tasks,
                &filter,
                TaskRow::text,
                |r| r.sort_key(sort),
                desc,
            ),
            Tab::Daemons => order(
                &self.daemons,
                &filter,
                DaemonRow::text,
                |r| r.sort_key(sort),
                desc,
            ),
            Tab::Events => {
                let log: Vec<&LogEntry> = self.log.iter().collect();
                order(
                    &log,
                    &filter,
                    |e| format!("{} {}", e.kind.word(), e.text),
                    |e| rows::Key::Num(e.seq as f64),
                    desc,
                )
            }
        };
        let keys: Vec<String> = idx.iter().map(|&i| self.row_key(tab, i)).collect();
        let page = crate::view::page_rows(self, tab).max(1);
        let t = &mut self.tables[tab.index()];
        if tab == Tab::Events && t.selected == 0 && t.desc {
            // At the top of the newest-first log: stay on the newest entry.
            t.selected_key = None;
        }
        if let Some(k) = &t.selected_key
            && let Some(pos) = keys.iter().position(|x| x == k)
        {
            t.selected = pos;
        }
        t.selected = t.selected.min(keys.len().saturating_sub(1));
        t.selected_key = keys.get(t.selected).cloned();
        if t.selected < t.offset {
            t.offset = t.selected;
        }
        if t.selected >= t.offset + page {
            t.offset = t.selected + 1 - page;
        }
        t.offset = t.offset.min(keys.len().saturating_sub(page));
        self.order[tab.index()] = idx;
    }

    fn row_key(&self, tab: Tab, i: usize) -> String {
        match tab {
            Tab::Shards => self.shards[i].key().to_string(),
            Tab::Servers => self.servers[i].key().to_string(),
            Tab::Queue => self.tasks[i].key().to_string(),
            Tab::Daemons => self.daemons[i].key(),
            Tab::Events => self.log[i].seq.to_string(),
        }
    }

    // ----- selection helpers for the views -----------------------------

    pub fn table(&self, tab: Tab) -> &TableView {
        &self.tables[tab.index()]
    }

    /// Index (into the view's rows) of the selected row.
    pub fn selected(&self, tab: Tab) -> Option<usize> {
        self.order[tab.index()]
            .get(self.tables[tab.index()].selected)
            .copied()
    }

    pub fn selected_shard(&self) -> Option<&ShardRow> {
        self.selected(Tab::Shards).map(|i| &self.shards[i])
    }
    pub fn selected_server(&self) -> Option<&ServerRow> {
        self.selected(Tab::Servers).map(|i| &self.servers[i])
    }
    pub fn selected_task(&self) -> Option<&TaskRow> {
        self.selected(Tab::Queue).map(|i| &self.tasks[i])
    }
    pub fn selected_daemon(&self) -> Option<&DaemonRow> {
        self.selected(Tab::Daemons).map(|i| &self.daemons[i])
    }
    pub fn selected_event(&self) -> Option<&LogEntry> {
        self.selected(Tab::Events).map(|i| &self.log[i])
    }

    /// Uploads per second across the coordinators, from their counters.
    pub fn upload_rate(&self) -> Option<f64> {
        counter_rate(&self.daemons, "coordinator", UPLOAD_COUNTERS)
    }
    pub fn copy_rate(&self) -> Option<f64> {
        counter_rate(&self.daemons, "replicator", COPY_COUNTERS)
    }

    pub fn connected(&self) -> bool {
        self.cluster.conn.is_some_and(|c| c.is_connected())
    }

    // ----- log and status ----------------------------------------------

    fn push_log(&mut self, kind: LogKind, text: String) {
        tracing::info!(kind = kind.word(), "{text}");
        self.log_seq += 1;
        self.log.push_back(LogEntry {
            seq: self.log_seq,
            at: self.now,
            kind,
            text,
        });
        while self.log.len() > LOG_LIMIT {
            self.log.pop_front();
        }
    }

    fn set_status(&mut self, kind: StatusKind, text: String) {
        self.status = Some(Status { kind, text });
    }

    // ----- keys ----------------------------------------------------------

    fn on_key(&mut self, k: KeyEvent) -> Vec<Command> {
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
            KeyCode::Char('r') => {
                self.set_status(StatusKind::Info, "refreshing node health and queue…".into());
                return vec![Command::Refresh];
            }
            KeyCode::Char(c) if is_write_key(tab, c) => {
                if self.config.read_only {
                    self.set_status(
                        StatusKind::Error,
                        "read-only: started with --read-only, so nothing can be changed here"
                            .into(),
                    );
                } else {
                    self.write_key(tab, c);
                }
            }
            _ => {}
        }
        vec![]
    }

    fn page(&self) -> usize {
        crate::view::page_rows(self, self.tab).max(1)
    }

    fn move_sel(&mut self, delta: i64) {
        let n = self.order[self.tab.index()].len();
        let t = &mut self.tables[self.tab.index()];
        let pos = (t.selected as i64).saturating_add(delta);
        t.selected = pos.clamp(0, n.saturating_sub(1) as i64) as usize;
        t.selected_key = None;
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

    /// a / e / d (Shards), a (Servers), c / u / x (Queue).
    fn write_key(&mut self, tab: Tab, c: char) {
        let cluster = self.cluster.clone();
        match (tab, c) {
            (Tab::Shards, 'a') => self.open_form(Form::add_shard(&cluster), 1),
            (Tab::Servers, 'a') => self.open_form(Form::add_server(&cluster), 1),
            (Tab::Queue, 'c') => self.open_form(Form::set_queue(&cluster), 0),
            (Tab::Shards, 'e' | 'd') => {
                if let Some(row) = self.selected_shard() {
                    let id = row.id.clone();
                    self.ask_enable(&id, c == 'e');
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

    /// Opens a form with the cursor on field `focus`.
    fn open_form(&mut self, form: Form, focus: usize) {
        self.mode = Mode::Form(FormState {
            checked: form.check(&self.cluster),
            form,
            focus,
            base: self.cluster.clone(),
        });
    }

    /// Asks to enable (or disable) shard `id`, saying what changes.
    fn ask_enable(&mut self, id: &str, enable: bool) {
        let cluster = self.cluster.clone();
        let Some(shards) = &cluster.shards.value else {
            self.set_status(
                StatusKind::Error,
                "the shards map is not read yet; wait for the connection".into(),
            );
            return;
        };
        let Some(shard) = shards.get(id) else {
            self.set_status(
                StatusKind::Error,
                format!("shard {id} does not exist; the Shards view lists them"),
            );
            return;
        };
        if shard.writable() == enable {
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
    fn ask_dead(&mut self, task: TaskRow, requeue: bool) {
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

    // ----- the command line -----------------------------------------------

    fn key_command(&mut self, mut line: String, k: KeyEvent) -> Vec<Command> {
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
        let Some((&first, args)) = words.split_first() else {
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
        if args.len() != spec.args.len() {
            self.set_status(
                StatusKind::Error,
                format!("usage: :{} {}", spec.names[0], spec.args.join(" ")),
            );
            return vec![];
        }
        if spec.writes && self.config.read_only {
            self.set_status(
                StatusKind::Error,
                "read-only: started with --read-only, so nothing can be changed here".into(),
            );
            return vec![];
        }
        let cluster = self.cluster.clone();
        match (spec.names[0], args) {
            ("quit", []) => return vec![Command::Quit],
            ("help", []) => self.mode = Mode::Help,
            ("refresh", []) => {
                self.set_status(StatusKind::Info, "refreshing node health and queue…".into());
                return vec![Command::Refresh];
            }
            ("enable-shard", [id]) => self.ask_enable(id, true),
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

    fn key_form(&mut self, mut f: FormState, k: KeyEvent) -> Vec<Command> {
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
                let action = Action::Op(op);
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

    fn key_confirm(&mut self, c: Confirm, k: KeyEvent) -> Vec<Command> {
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
    fn start(&mut self, action: Action) -> Vec<Command> {
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
        };
        self.pending.insert(id, action);
        vec![cmd]
    }

    fn refresh_form(&mut self) {
        if let Mode::Form(f) = &mut self.mode {
            f.checked = f.form.check(&self.cluster);
        }
    }

    /// Synthesizes a key press (tests and the loop's helpers).
    pub fn press(&mut self, now: Millis, code: KeyCode) -> Vec<Command> {
        self.update(now, Event::Key(key(code)))
    }
}

fn is_write_key(tab: Tab, c: char) -> bool {
    matches!(
        (tab, c),
        (Tab::Shards, 'a' | 'e' | 'd') | (Tab::Servers, 'a') | (Tab::Queue, 'c' | 'u' | 'x')
    )
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

fn counter_rate(daemons: &[DaemonRow], kind: &str, names: &[&str]) -> Option<f64> {
    let mut total = None;
    for d in daemons.iter().filter(|d| d.kind == kind) {
        if let Some(r) = names.iter().find_map(|n| d.rates.get(*n)) {
            *total.get_or_insert(0.0) += r;
        }
    }
    total
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
        Action::Op(MapOp::EnableShard { id } | MapOp::DisableShard { id }) => {
            vec![(format!("shard {id}"), shard(id))]
        }
        Action::Op(MapOp::SetQueue(_)) => vec![(
            "queue".into(),
            c.queue.value.as_ref().map_or("absent".into(), |q| {
                format!(
                    "key {} on {}",
                    q.key,
                    q.servers
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }),
        )],
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
        if !was.is_full() && is.is_full() {
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
            b.servers
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(",")
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
    use super::*;
    use crate::demo::{self, T0};
    use backpack_shared::model::ShardSize;

    fn keys(s: &mut State, text: &str) -> Vec<Command> {
        let mut out = vec![];
        for c in text.chars() {
            out.extend(s.press(T0, KeyCode::Char(c)));
        }
        out
    }

    fn press(s: &mut State, code: KeyCode) -> Vec<Command> {
        s.press(T0, code)
    }

    fn cluster_with(f: impl FnOnce(&mut ClusterState)) -> Event {
        let mut c = demo::cluster();
        c.generation = 9;
        f(&mut c);
        Event::Cluster(Arc::new(c))
    }

    fn last_log(s: &State) -> String {
        s.log.back().map(|e| e.text.clone()).unwrap_or_default()
    }

    #[test]
    fn views_switch_and_selection_moves() {
        let mut s = demo::state(100, 30);
        assert_eq!(s.tab, Tab::Shards);
        assert_eq!(s.selected_shard().unwrap().id, "1");
        keys(&mut s, "jj");
        assert_eq!(s.selected_shard().unwrap().id, "3");
        keys(&mut s, "j");
        assert_eq!(s.selected_shard().unwrap().id, "3", "stops at the end");
        keys(&mut s, "g");
        assert_eq!(s.selected_shard().unwrap().id, "1");
        press(&mut s, KeyCode::Down);
        assert_eq!(s.selected_shard().unwrap().id, "2");
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.tab, Tab::Servers);
        press(&mut s, KeyCode::BackTab);
        assert_eq!(s.tab, Tab::Shards);
        for (k, tab) in ['1', '2', '3', '4', '5'].iter().zip(Tab::ALL) {
            keys(&mut s, &k.to_string());
            assert_eq!(s.tab, tab);
        }
        assert_eq!(keys(&mut s, "q"), vec![Command::Quit]);
    }

    #[test]
    fn filter_sort_and_selection_follows_its_row() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "2");
        keys(&mut s, "/no shard");
        assert!(matches!(s.mode, Mode::Filter));
        press(&mut s, KeyCode::Enter);
        assert!(matches!(s.mode, Mode::Normal));
        let shown: Vec<&str> = s.order[1]
            .iter()
            .map(|&i| s.servers[i].id.as_str())
            .collect();
        assert_eq!(shown, vec!["7"]);
        press(&mut s, KeyCode::Esc);
        assert_eq!(s.order[1].len(), 7, "Esc clears the filter");
        assert_eq!(
            s.selected_server().unwrap().id,
            "7",
            "the selection stayed on its row"
        );
        // Select server 3, sort by URL descending: the selection stays on 3.
        keys(&mut s, "gjj");
        assert_eq!(s.selected_server().unwrap().id, "3");
        keys(&mut s, "sS");
        assert_eq!(s.table(Tab::Servers).sort, 1);
        assert!(s.table(Tab::Servers).desc);
        assert_eq!(s.selected_server().unwrap().id, "3");
        let first = s.order[1][0];
        assert_eq!(s.servers[first].addr.url(), "http://two:10006");
    }

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

    #[test]
    fn paging_scrolls_a_large_table() {
        let mut s = State::new(demo::config(), T0);
        s.update(T0, Event::Resize(80, 24));
        s.update(T0, Event::Cluster(Arc::new(demo::large(1000, 3000))));
        assert_eq!(s.shards.len(), 1000);
        let page = crate::view::page_rows(&s, Tab::Shards);
        assert_eq!(page, 13);
        press(&mut s, KeyCode::PageDown);
        press(&mut s, KeyCode::PageDown);
        let t = s.table(Tab::Shards);
        assert_eq!(t.selected, 26);
        assert_eq!(t.offset, 26 + 1 - page);
        keys(&mut s, "G");
        assert_eq!(s.selected_shard().unwrap().id, "1000");
        assert_eq!(s.table(Tab::Shards).offset, 1000 - page);
    }
}
