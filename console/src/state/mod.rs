//! The console's state and its one entry point, [`State::update`]: an
//! event in, the state changed and a list of [`Command`]s out. No IO here,
//! and the clock is an argument, so every behaviour is tested without a
//! terminal, ZooKeeper or Redis.
//!
//! The rooms: `types` (the vocabulary), `changes` (what a cluster
//! snapshot or queue report changed: connection, growth, rates, Events),
//! `tables` (rows, order, selection, scrolling), `keys` (what a key
//! does in each mode), `writes` (forms, questions and the actions they
//! start), `repair` (the check and repair questions), `command_line`
//! (the `:` commands).

mod changes;
mod command_line;
mod keys;
mod repair;
mod tables;
#[cfg(test)]
mod testing;
mod types;
mod writes;

pub use changes::{NOT_COUNTERS, diff_cluster};
pub use command_line::{COMMANDS, CommandSpec, command_names};
pub use types::{
    Action, Command, Confirm, LOG_LIMIT, LogEntry, LogKind, Mode, Status, StatusKind, Tab,
    TableView,
};
pub use writes::{relevant, share_after};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use backpack_shared::live::ClusterState;
use backpack_shared::model::HostPort;
use backpack_shared::queue::Keeping;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::event::{Event, Health, Millis, QueueReport};
use crate::growth::Growth;
use crate::rows::{self, DaemonRow, KeepingWarning, ServerRow, ShardRow, ShardTotals, TaskRow};

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
    /// How each queue Redis keeps items, from the last check.
    pub keeping: Vec<Keeping>,
    /// The servers among them that can lose tasks, named.
    pub keeping_warnings: Vec<KeepingWarning>,
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
            keeping: vec![],
            keeping_warnings: vec![],
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
            Event::Keeping(keeping) => {
                self.on_keeping(keeping);
                // Warning lines take room from the Queue view's tasks.
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

    /// Under `--read-only`, says why a write is refused and returns true.
    fn refuse_read_only(&mut self) -> bool {
        if self.config.read_only {
            self.set_status(
                StatusKind::Error,
                "read-only: started with --read-only, so nothing can be changed here".into(),
            );
        }
        self.config.read_only
    }

    /// `r` and `:refresh`: node health and the queue, checked now.
    fn refresh(&mut self) -> Vec<Command> {
        self.set_status(StatusKind::Info, "refreshing node health and queue…".into());
        vec![Command::Refresh]
    }

    /// Synthesizes a key press (tests and the loop's helpers).
    pub fn press(&mut self, now: Millis, code: KeyCode) -> Vec<Command> {
        self.update(now, Event::Key(key(code)))
    }
}
