//! ZooKeeper access on `zookeeper-client`.
//!
//! [`Zk`] is a cheap-to-clone handle on one logical session that survives
//! what ZooKeeper throws at a long-running daemon:
//! - connection loss: the client reconnects and re-registers watches itself;
//!   we report [`ConnState::Disconnected`] meanwhile;
//! - session expiry: the client is dead; a supervisor task builds a new one
//!   (with backoff), and every watch made with [`Zk::watch_data`] or
//!   [`Zk::watch_children`] re-reads and re-arms on it.
//!
//! Every request is bounded by a timeout (the client waits forever while
//! disconnected), and every map change goes through [`Zk::apply`], the one
//! compare-and-set helper.

mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::watch as chan;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zkc;

pub use watch::{Children, NodeData};

use crate::model::paths;
use crate::ops::{MapOp, OpError, Plan, Snapshot, Write};

/// Settings of a connection; [`ZkConfig::new`] gives sane defaults.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// Comma-separated `host:port` list, as the commands' first argument.
    pub servers: String,
    /// The cluster root, e.g. `/backpack`.
    pub root: String,
    /// How long to try to reach ZooKeeper before giving up (first connect).
    pub connect_timeout: Duration,
    /// The session timeout asked of ZooKeeper.
    pub session_timeout: Duration,
    /// Bound on every single request.
    pub request_timeout: Duration,
}

impl ZkConfig {
    pub fn new(servers: &str, root: &str) -> Self {
        ZkConfig {
            servers: servers.to_string(),
            root: root.to_string(),
            connect_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// ZooKeeper's default jute.maxbuffer (0xfffff): the largest request a
/// server takes; it closes the connection on a larger one.
pub const JUTE_MAXBUFFER: usize = 0xfffff;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ZkError {
    #[error(
        "invalid ZooKeeper server list {0:?}; give host:port[,host:port...], e.g. 127.0.0.1:2181"
    )]
    BadServers(String),
    #[error("invalid ZooKeeper root {0:?}; give an absolute path like /backpack")]
    BadRoot(String),
    #[error(
        "cannot reach ZooKeeper at {servers} within {secs}s ({detail}); check the first argument and the server"
    )]
    Unreachable {
        servers: String,
        secs: u64,
        detail: String,
    },
    #[error(
        "ZooKeeper root {root} is not initialized ({missing} is missing); run backpack-coordinator-init first"
    )]
    NotInitialized { root: String, missing: String },
    #[error("ZooKeeper request on {path} timed out after {secs}s; is ZooKeeper reachable?")]
    Timeout { path: String, secs: u64 },
    #[error("ZooKeeper request on {path} failed: {source}")]
    Request {
        path: String,
        #[source]
        source: zkc::Error,
    },
    #[error("gave up on {path} after {tries} conflicting writes; retry the command")]
    TooManyConflicts { path: String, tries: u32 },
    #[error(
        "the write of {path} would be {bytes} bytes, over ZooKeeper's limit of {limit} bytes per request (jute.maxbuffer, 1 MB by default); nothing was written"
    )]
    TooBig {
        path: String,
        bytes: usize,
        limit: usize,
    },
    #[error(
        "ZooKeeper closed the connection on each of {tries} writes of {path} ({bytes} bytes; last: {last}); a request over the server's jute.maxbuffer does this, check its log; nothing was written"
    )]
    WriteDropped {
        path: String,
        bytes: usize,
        tries: u32,
        last: String,
    },
    #[error("the ZooKeeper handle is closed")]
    Closed,
}

/// What [`Zk::apply`] may fail with.
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] OpError),
    #[error(transparent)]
    Zk(#[from] ZkError),
}

/// The session as seen by users of [`Zk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    Connected {
        session_id: i64,
    },
    /// Connection lost; the client is trying to get back to the same session.
    Disconnected {
        since: Instant,
    },
    /// The session expired (ephemeral znodes and locks are gone); a new one
    /// is being built.
    Expired {
        since: Instant,
    },
    Closed,
}

impl ConnState {
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnState::Connected { .. })
    }
}

struct Inner {
    config: ZkConfig,
    root: String,
    client: chan::Sender<Option<zkc::Client>>,
    state: chan::Sender<ConnState>,
    closed: CancellationToken,
}

/// A handle on the cluster's ZooKeeper session. Clone freely.
#[derive(Clone)]
pub struct Zk {
    inner: Arc<Inner>,
}

/// Normalizes a root path: absolute, no trailing slash, `/` becomes empty.
pub fn normalize_root(root: &str) -> Result<String, ZkError> {
    let bad = || ZkError::BadRoot(root.to_string());
    if !root.starts_with('/')
        || root.contains("//")
        || root.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(bad());
    }
    let trimmed = root.trim_end_matches('/');
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(bad());
    }
    Ok(trimmed.to_string())
}

fn check_servers(servers: &str) -> Result<(), ZkError> {
    let bad = || ZkError::BadServers(servers.to_string());
    if servers.contains('/') || servers.trim().is_empty() {
        return Err(bad());
    }
    for hp in servers.split(',') {
        let (host, port) = hp.trim().rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Errors after which the client is dead and must be rebuilt.
fn is_terminal(e: &zkc::Error) -> bool {
    matches!(
        e,
        zkc::Error::SessionExpired
            | zkc::Error::ClientClosed
            | zkc::Error::AuthFailed
            | zkc::Error::NoHosts
    )
}

impl Zk {
    /// Connects, giving up after `config.connect_timeout`. Does not check
    /// that the root is initialized: see [`Zk::require_initialized`].
    pub async fn connect(config: ZkConfig) -> Result<Zk, ZkError> {
        check_servers(&config.servers)?;
        let root = normalize_root(&config.root)?;
        let client = connect_client(&config).await?;
        let session_id = client.session_id().0;
        let (client_tx, _) = chan::channel(Some(client.clone()));
        let (state_tx, _) = chan::channel(ConnState::Connected { session_id });
        let inner = Arc::new(Inner {
            config,
            root,
            client: client_tx,
            state: state_tx,
            closed: CancellationToken::new(),
        });
        tokio::spawn(supervise(Arc::downgrade(&inner), client));
        Ok(Zk { inner })
    }

    /// Connects and refuses an uninitialized root, naming `init`.
    pub async fn connect_initialized(config: ZkConfig) -> Result<Zk, ZkError> {
        let zk = Zk::connect(config).await?;
        zk.require_initialized().await?;
        Ok(zk)
    }

    pub fn config(&self) -> &ZkConfig {
        &self.inner.config
    }

    /// The normalized root (`""` for `/`).
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// The absolute path of a znode under the root (`""` is the root).
    pub fn path(&self, name: &str) -> String {
        match (self.inner.root.as_str(), name) {
            ("", "") => "/".to_string(),
            (root, "") => root.to_string(),
            (root, name) => format!("{root}/{name}"),
        }
    }

    /// The connection state, updated live.
    pub fn state(&self) -> chan::Receiver<ConnState> {
        self.inner.state.subscribe()
    }

    /// The current client, waiting while a new session is being built.
    pub async fn client(&self) -> Result<zkc::Client, ZkError> {
        let mut rx = self.inner.client.subscribe();
        loop {
            if self.inner.closed.is_cancelled() {
                return Err(ZkError::Closed);
            }
            if let Some(c) = rx.borrow_and_update().clone() {
                return Ok(c);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(ZkError::Closed) },
                _ = self.inner.closed.cancelled() => return Err(ZkError::Closed),
            }
        }
    }

    /// Closes the session now: ephemeral znodes (locks, announcements)
    /// vanish at once instead of at the session timeout.
    pub fn close(&self) {
        self.inner.closed.cancel();
        self.inner.client.send_replace(None);
        self.inner.state.send_replace(ConnState::Closed);
    }

    /// A cancellation token that fires when [`Zk::close`] is called.
    pub fn closed(&self) -> CancellationToken {
        self.inner.closed.clone()
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }

    /// Runs one request with the request timeout.
    pub async fn call<T, F, Fut>(&self, path: &str, f: F) -> Result<T, ZkError>
    where
        F: FnOnce(zkc::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, zkc::Error>>,
    {
        let client = self.client().await?;
        let t = self.request_timeout();
        match tokio::time::timeout(t, f(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(ZkError::Request {
                path: path.to_string(),
                source,
            }),
            Err(_) => Err(ZkError::Timeout {
                path: path.to_string(),
                secs: t.as_secs(),
            }),
        }
    }

    /// Reads a znode under the root: data and version, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<(Vec<u8>, i32)>, ZkError> {
        let path = self.path(name);
        let p = path.clone();
        match self
            .call(&path, |c| async move { c.get_data(&p).await })
            .await
        {
            Ok((data, stat)) => Ok(Some((data, stat.version))),
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists children of a znode under the root (`None` when absent).
    pub async fn children(&self, name: &str) -> Result<Option<Vec<String>>, ZkError> {
        let path = self.path(name);
        let p = path.clone();
        match self
            .call(&path, |c| async move { c.list_children(&p).await })
            .await
        {
            Ok(list) => Ok(Some(list)),
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Refuses a root that `init` has not set up.
    pub async fn require_initialized(&self) -> Result<(), ZkError> {
        for name in [paths::SERVERS_MAP, paths::SHARDS_MAP, paths::QUEUE] {
            if self.get(name).await?.is_none() {
                return Err(ZkError::NotInitialized {
                    root: self.display_root(),
                    missing: name.to_string(),
                });
            }
        }
        Ok(())
    }

    fn display_root(&self) -> String {
        if self.inner.root.is_empty() {
            "/".into()
        } else {
            self.inner.root.clone()
        }
    }

    /// Creates the root and its parents where missing (only `init` does).
    pub async fn create_root(&self) -> Result<(), ZkError> {
        if self.inner.root.is_empty() {
            return Ok(());
        }
        let root = self.inner.root.clone();
        let r = root.clone();
        self.call(&root, |c| async move {
            c.mkdir(
                &r,
                &zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all()),
            )
            .await
        })
        .await
    }

    /// Creates a persistent znode under the root unless it exists; returns
    /// whether it was created.
    pub async fn create_if_missing(&self, name: &str, data: &[u8]) -> Result<bool, ZkError> {
        self.create(name, data, zkc::CreateMode::Persistent).await
    }

    /// Creates a znode under the root in `mode`; false when it exists.
    async fn create(
        &self,
        name: &str,
        data: &[u8],
        mode: zkc::CreateMode,
    ) -> Result<bool, ZkError> {
        let path = self.path(name);
        let p = path.clone();
        let data = data.to_vec();
        let r = self
            .call(&path, |c| async move {
                c.create(&p, &data, &mode.with_acls(zkc::Acls::anyone_all()))
                    .await
            })
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(ZkError::Request {
                source: zkc::Error::NodeExists,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Applies a map change: read, plan, commit atomically with the versions
    /// read; on a conflict or a lost answer, read again and plan again (the
    /// fresh plan is empty when the change already took effect, and fails
    /// when it no longer makes sense). Returns the success line.
    pub async fn apply(&self, op: &MapOp) -> Result<String, ApplyError> {
        const MAX_TRIES: u32 = 50;
        // A server closes the connection on a request over its
        // jute.maxbuffer: the same write lost again and again is that, not a
        // conflict to retry 50 times.
        const MAX_LOST: u32 = 3;
        let mut lost = 0;
        let mut backoff = Duration::from_millis(5);
        for attempt in 1..=MAX_TRIES {
            let mut snapshot = Snapshot::new();
            for name in op.reads() {
                let value = self.get(&name).await?;
                snapshot.insert(name, value);
            }
            let plan = op.plan(&snapshot)?;
            if plan.writes.is_empty() {
                return Ok(plan.message);
            }
            let bytes = self.request_size(&plan);
            if bytes > JUTE_MAXBUFFER {
                return Err(ZkError::TooBig {
                    path: self.written(&plan),
                    bytes,
                    limit: JUTE_MAXBUFFER,
                }
                .into());
            }
            match self.commit(&plan).await {
                Ok(()) => return Ok(plan.message),
                Err(CommitError::Conflict) => {
                    tracing::debug!(
                        attempt,
                        ?op,
                        "map changed meanwhile; planning again on the fresh maps"
                    );
                }
                Err(CommitError::Lost(e)) => {
                    // The write may or may not have been applied: the next
                    // read tells, and an applied change plans nothing.
                    tracing::warn!(error = %e, attempt, "answer to a map write lost; reading again before any retry");
                    lost += 1;
                    if lost >= MAX_LOST {
                        return Err(ZkError::WriteDropped {
                            path: self.written(&plan),
                            bytes,
                            tries: lost,
                            last: e,
                        }
                        .into());
                    }
                }
                Err(CommitError::Fatal(e)) => return Err(e.into()),
            }
            tokio::time::sleep(backoff + Duration::from_millis(rand::random::<u64>() % 10)).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(ZkError::TooManyConflicts {
            path: self.path(&op.reads().join(",")),
            tries: MAX_TRIES,
        }
        .into())
    }

    /// About the bytes of the multi-request committing `plan` (data, paths
    /// and each operation's header), as the server counts against
    /// jute.maxbuffer.
    fn request_size(&self, plan: &Plan) -> usize {
        const PER_OP: usize = 64;
        let checks: usize = plan
            .checks
            .iter()
            .map(|(name, _)| self.path(name).len() + PER_OP)
            .sum();
        let writes: usize = plan
            .writes
            .iter()
            .map(|w| match w {
                Write::Set { name, data, .. } | Write::Create { name, data } => {
                    self.path(name).len() + data.len() + PER_OP
                }
            })
            .sum();
        checks + writes + PER_OP
    }

    /// The znodes a plan writes, for messages.
    fn written(&self, plan: &Plan) -> String {
        plan.writes
            .iter()
            .map(|w| match w {
                Write::Set { name, .. } | Write::Create { name, .. } => self.path(name),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn commit(&self, plan: &Plan) -> Result<(), CommitError> {
        let client = self.client().await.map_err(CommitError::Fatal)?;
        let mut multi = client.new_multi_writer();
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        let what = |e: zkc::Error| {
            CommitError::Fatal(ZkError::Request {
                path: self.path("(multi)"),
                source: e,
            })
        };
        for (name, version) in &plan.checks {
            multi
                .add_check_version(&self.path(name), *version)
                .map_err(what)?;
        }
        for w in &plan.writes {
            match w {
                Write::Set {
                    name,
                    data,
                    version,
                } => multi.add_set_data(&self.path(name), data, Some(*version)),
                Write::Create { name, data } => multi.add_create(&self.path(name), data, &opts),
            }
            .map_err(what)?;
        }
        let t = self.request_timeout();
        match tokio::time::timeout(t, multi.commit()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let e: zkc::Error = e.into();
                match e {
                    zkc::Error::BadVersion | zkc::Error::NodeExists | zkc::Error::NoNode => {
                        Err(CommitError::Conflict)
                    }
                    e if is_terminal(&e) => Err(CommitError::Lost(e.to_string())),
                    zkc::Error::ConnectionLoss | zkc::Error::Custom(_) | zkc::Error::Throttled => {
                        Err(CommitError::Lost(e.to_string()))
                    }
                    e => Err(CommitError::Fatal(ZkError::Request {
                        path: self.path("(multi)"),
                        source: e,
                    })),
                }
            }
            Err(_) => Err(CommitError::Lost(format!(
                "no answer within {}s",
                t.as_secs()
            ))),
        }
    }

    /// Writes `data` to a persistent znode under the root, creating it
    /// (and its parent) when missing. Last writer wins: for documents one
    /// writer owns at a time (the elected checker's results).
    pub async fn put(&self, name: &str, data: &[u8]) -> Result<(), ZkError> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.create_if_missing(parent, b"").await?;
        }
        let path = self.path(name);
        let (p, d) = (path.clone(), data.to_vec());
        match self
            .call(&path, |c| async move { c.set_data(&p, &d, None).await })
            .await
        {
            Ok(_) => Ok(()),
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => {
                if !self.create_if_missing(name, data).await? {
                    // Created meanwhile by another: ours is the later write.
                    let (p, d) = (path.clone(), data.to_vec());
                    self.call(&path, |c| async move { c.set_data(&p, &d, None).await })
                        .await?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a znode under the root; a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), ZkError> {
        let path = self.path(name);
        let p = path.clone();
        match self
            .call(&path, |c| async move { c.delete(&p, None).await })
            .await
        {
            Ok(())
            | Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Leadership through an ephemeral znode: creates `name` with `data`
    /// unless it exists; true while it is this session's (the leader's).
    /// It goes with the session, so a leader that dies or is cut off for
    /// the session timeout hands over to the next caller.
    pub async fn lead(&self, name: &str, data: &[u8]) -> Result<bool, ZkError> {
        if self.create(name, data, zkc::CreateMode::Ephemeral).await? {
            return Ok(true);
        }
        let path = self.path(name);
        let p = path.clone();
        let owner = self
            .call(&path, |c| async move { c.check_stat(&p).await })
            .await?;
        let ours = self.client().await?.session_id().0;
        Ok(owner.is_some_and(|s| s.ephemeral_owner == ours))
    }

    /// Creates or refreshes an ephemeral znode under the root with `data`.
    /// After a session expiry the next call creates it again.
    pub async fn put_ephemeral(&self, name: &str, data: &[u8]) -> Result<(), ZkError> {
        let path = self.path(name);
        let p = path.clone();
        let d = data.to_vec();
        match self
            .call(&path, |c| async move { c.set_data(&p, &d, None).await })
            .await
        {
            Ok(stat) if stat.ephemeral_owner == self.client().await?.session_id().0 => {
                return Ok(());
            }
            Ok(_) => {
                // Left by our previous (expired) session; it goes away by itself,
                // but replace it now so the announcement is ours.
                let p = path.clone();
                let _ = self
                    .call(&path, |c| async move { c.delete(&p, None).await })
                    .await;
            }
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
        let p = path.clone();
        let d = data.to_vec();
        let r = self
            .call(&path, |c| async move {
                c.create(
                    &p,
                    &d,
                    &zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all()),
                )
                .await
            })
            .await;
        match r {
            Ok(_)
            | Err(ZkError::Request {
                source: zkc::Error::NodeExists,
                ..
            }) => Ok(()),
            Err(ZkError::Request {
                source: zkc::Error::NoNode,
                ..
            }) => {
                // The parent (`coordinators/`, `replicators/`) is missing: make it.
                let parent = path
                    .rsplit_once('/')
                    .map(|(p, _)| p.to_string())
                    .unwrap_or_default();
                let pp = parent.clone();
                self.call(&parent, |c| async move {
                    c.mkdir(
                        &pp,
                        &zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all()),
                    )
                    .await
                })
                .await?;
                let p = path.clone();
                let d = data.to_vec();
                self.call(&path, |c| async move {
                    c.create(
                        &p,
                        &d,
                        &zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all()),
                    )
                    .await
                })
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}

enum CommitError {
    Conflict,
    Lost(String),
    Fatal(ZkError),
}

async fn connect_client(config: &ZkConfig) -> Result<zkc::Client, ZkError> {
    let connect = zkc::Client::connector()
        .with_session_timeout(config.session_timeout)
        .connect(&config.servers);
    let unreachable = |detail: String| ZkError::Unreachable {
        servers: config.servers.clone(),
        secs: config.connect_timeout.as_secs(),
        detail,
    };
    match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(format!(
            "{e}; {}",
            diagnose(&config.servers).await
        ))),
        Err(_) => Err(unreachable(diagnose(&config.servers).await)),
    }
}

const CLOSES_AT_ONCE: &str = "it closes new connections at once: too many connections from this host? (maxClientCnxns in zoo.cfg; its log says \"Too many connections\")";

fn closed_at_once(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
}

/// What each server does with a bare TCP connection, for the error of a
/// failed connect: nothing listening, a server that closes new connections
/// at once (its per-host limit, `maxClientCnxns`), or one that accepts and
/// never completes a session.
async fn diagnose(servers: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut said = Vec::new();
    for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let what = match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Err(_) => "no answer to connect".to_string(),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused: nothing listens there".to_string()
            }
            // Accepted and closed at once (the error can show on connect).
            Ok(Err(e)) if closed_at_once(&e) => CLOSES_AT_ONCE.to_string(),
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(mut s)) => {
                // A server waits for our connect request; one that closes
                // before we say anything refuses this host.
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(500), s.read(&mut byte)).await {
                    Ok(Ok(0)) => CLOSES_AT_ONCE.to_string(),
                    Ok(Err(e)) if closed_at_once(&e) => CLOSES_AT_ONCE.to_string(),
                    _ => "it accepts connections but no session was set up (is it a ZooKeeper server, and in its quorum?)".to_string(),
                }
            }
        };
        said.push(format!("{server}: {what}"));
    }
    said.join("; ")
}

/// Follows the session's state; on expiry builds a new client. Ends when
/// every [`Zk`] handle is gone or [`Zk::close`] was called.
async fn supervise(inner: std::sync::Weak<Inner>, mut client: zkc::Client) {
    let mut states = client.state_watcher();
    loop {
        let closed = match inner.upgrade() {
            Some(i) => i.closed.clone(),
            None => return,
        };
        let state = tokio::select! {
            s = states.changed() => s,
            _ = closed.cancelled() => return,
            // Wake up now and then to notice that every handle was dropped.
            _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
        };
        let Some(inner_ref) = inner.upgrade() else {
            return;
        };
        match state {
            zkc::SessionState::Disconnected => {
                tracing::warn!("ZooKeeper connection lost; reconnecting to the same session");
                inner_ref.state.send_replace(ConnState::Disconnected {
                    since: Instant::now(),
                });
            }
            zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly => {
                tracing::info!("ZooKeeper connection back");
                inner_ref.state.send_replace(ConnState::Connected {
                    session_id: client.session_id().0,
                });
            }
            zkc::SessionState::Expired
            | zkc::SessionState::AuthFailed
            | zkc::SessionState::Closed => {
                let since = Instant::now();
                tracing::warn!(?state, "ZooKeeper session ended; building a new session");
                inner_ref.state.send_replace(ConnState::Expired { since });
                inner_ref.client.send_replace(None);
                let config = inner_ref.config.clone();
                drop(inner_ref);
                let mut backoff = Duration::from_millis(100);
                client = loop {
                    if closed.is_cancelled() {
                        return;
                    }
                    match connect_client(&config).await {
                        Ok(c) => break c,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot build a new ZooKeeper session yet");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                };
                let Some(inner_ref) = inner.upgrade() else {
                    return;
                };
                states = client.state_watcher();
                tracing::info!(session = client.session_id().0, "new ZooKeeper session");
                inner_ref.client.send_replace(Some(client.clone()));
                inner_ref.state.send_replace(ConnState::Connected {
                    session_id: client.session_id().0,
                });
            }
        }
    }
}

/// Keeps an ephemeral announcement `<root>/<name>` alive until `stop`:
/// writes `payload()` every `every`, re-creating it after a session
/// expiry, and deletes it on stop (the session's end would too, later).
pub fn spawn_announcer<F>(
    zk: Zk,
    name: String,
    every: Duration,
    payload: F,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Vec<u8> + Send + 'static,
{
    tokio::spawn(async move {
        let mut state = zk.state();
        loop {
            if let Err(error) = zk.put_ephemeral(&name, &payload()).await {
                tracing::debug!(%error, %name, "announcement not written; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                // A new session: announce again at once.
                _ = state.changed() => {}
                _ = stop.cancelled() => break,
            }
        }
        let path = zk.path(&name);
        let p = path.clone();
        let _ = zk
            .call(&path, |c| async move { c.delete(&p, None).await })
            .await;
    })
}
