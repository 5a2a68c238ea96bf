//! The state's vocabulary: the views ([`Tab`]), what the console asks
//! the loop to do ([`Command`]), the writes it asks about ([`Action`],
//! [`Confirm`]), the input [`Mode`], the result line and the Events log.

use backpack_shared::model::CheckRequest;
use backpack_shared::ops::MapOp;
use backpack_shared::queue::describe_item;

use crate::event::Millis;
use crate::forms::FormState;
use crate::rows;

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
    /// Ask the elected checker to check (and repair) a shard: write
    /// `check-requests/<shard>`.
    AskCheck {
        id: u64,
        shard: String,
        request: CheckRequest,
    },
    /// Re-point a server to a new node once it answers and holds no file,
    /// then write `check-requests/<shard>` (repair) for each of `shards`.
    Replace {
        id: u64,
        op: MapOp,
        shards: Vec<String>,
        asked_ms: u64,
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
    /// Ask for a check of a shard, with repair or not.
    Check {
        shard: String,
        repair: bool,
    },
    /// Re-point a server (`op`: add-server with replace) to a new, empty
    /// node, then ask for a repair of `shards`, the shards that use it.
    Replace {
        op: MapOp,
        shards: Vec<String>,
    },
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Op(MapOp::AddServer { id, addr, .. }) => {
                format!("add server {id} ({})", addr.url())
            }
            Action::Op(MapOp::AddShard { id, nodes, .. }) => {
                format!("add shard {id} on nodes {}", nodes.join(","))
            }
            Action::Op(MapOp::RemoveServer { id }) => format!("remove server {id}"),
            Action::Op(MapOp::EnableShard { id }) => format!("enable shard {id}"),
            Action::Op(MapOp::DisableShard { id }) => format!("disable shard {id}"),
            Action::Op(MapOp::SetQueue(q)) => format!("set queue {}", q.key),
            Action::Requeue(item) => format!("requeue {}", describe_item(item)),
            Action::DropDead(item) => format!("drop {}", describe_item(item)),
            Action::Replace {
                op: MapOp::AddServer { id, addr, .. },
                ..
            } => format!("replace server {id} with {}", addr.url()),
            Action::Replace { op, .. } => format!("replace ({op:?})"),
            Action::Check { shard, repair } => format!(
                "ask for a {} of shard {shard}",
                if *repair { "repair" } else { "check" }
            ),
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
