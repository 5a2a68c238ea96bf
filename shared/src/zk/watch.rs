//! Live views of znodes that survive connection loss and session expiry.
//!
//! Each watch is a task: read with a one-shot watch, publish, wait for the
//! watch to fire, read again. A session that ends (the watch fires with a
//! terminal state, or a request fails with one) makes the task wait for
//! the supervisor's new session, then read and re-arm there. The task ends
//! when every receiver is dropped or the [`Zk`] handle is closed.

use std::time::Duration;

use tokio::sync::watch as chan;
use zookeeper_client as zkc;

use super::{Zk, is_terminal};

/// The last known content of a watched znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeData {
    /// Not read yet (or never could be).
    Unknown,
    Missing,
    Present {
        data: Vec<u8>,
        version: i32,
    },
}

/// The last known children of a watched znode (names, sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Children {
    Unknown,
    Missing,
    Present(Vec<String>),
}

enum Step<T> {
    /// Publish this and wait for the watcher.
    Value(T, zkc::OneshotWatcher),
    /// The session is gone: wait for a new one.
    SessionLost,
    /// A transient failure: retry after a pause.
    Retry(String),
}

impl Zk {
    /// Follows the data of `<root>/<name>`.
    pub fn watch_data(&self, name: &str) -> chan::Receiver<NodeData> {
        let (tx, rx) = chan::channel(NodeData::Unknown);
        let path = self.path(name);
        tokio::spawn(follow(self.clone(), tx, move |client: zkc::Client| {
            let path = path.clone();
            async move {
                match client.get_and_watch_data(&path).await {
                    Ok((data, stat, w)) => Step::Value(
                        NodeData::Present {
                            data,
                            version: stat.version,
                        },
                        w,
                    ),
                    Err(zkc::Error::NoNode) => match client.check_and_watch_stat(&path).await {
                        // Created between the two calls: the watch fires at once.
                        Ok((_, w)) => Step::Value(NodeData::Missing, w),
                        Err(e) => classify(e),
                    },
                    Err(e) => classify(e),
                }
            }
        }));
        rx
    }

    /// Follows the children of `<root>/<name>`.
    pub fn watch_children(&self, name: &str) -> chan::Receiver<Children> {
        let (tx, rx) = chan::channel(Children::Unknown);
        let path = self.path(name);
        tokio::spawn(follow(self.clone(), tx, move |client: zkc::Client| {
            let path = path.clone();
            async move {
                match client.list_and_watch_children(&path).await {
                    Ok((mut list, w)) => {
                        list.sort();
                        Step::Value(Children::Present(list), w)
                    }
                    Err(zkc::Error::NoNode) => match client.check_and_watch_stat(&path).await {
                        Ok((_, w)) => Step::Value(Children::Missing, w),
                        Err(e) => classify(e),
                    },
                    Err(e) => classify(e),
                }
            }
        }));
        rx
    }
}

fn classify<T>(e: zkc::Error) -> Step<T> {
    if is_terminal(&e) {
        Step::SessionLost
    } else {
        Step::Retry(e.to_string())
    }
}

async fn follow<T, F, Fut>(zk: Zk, tx: chan::Sender<T>, read: F)
where
    T: PartialEq,
    F: Fn(zkc::Client) -> Fut,
    Fut: std::future::Future<Output = Step<T>>,
{
    let closed = zk.closed();
    let mut pause = Duration::from_millis(50);
    loop {
        let client = tokio::select! {
            c = zk.client() => match c { Ok(c) => c, Err(_) => return },
            _ = tx.closed() => return,
        };
        let session = client.session_id();
        let step = tokio::select! {
            r = tokio::time::timeout(zk.request_timeout(), read(client)) => {
                r.unwrap_or_else(|_| Step::Retry("no answer".into()))
            }
            _ = tx.closed() => return,
            _ = closed.cancelled() => return,
        };
        match step {
            Step::Value(value, watcher) => {
                pause = Duration::from_millis(50);
                tx.send_if_modified(|old| {
                    if *old == value {
                        false
                    } else {
                        *old = value;
                        true
                    }
                });
                let event = tokio::select! {
                    e = watcher.changed() => e,
                    _ = tx.closed() => return,
                    _ = closed.cancelled() => return,
                };
                if event.session_state.is_terminated() {
                    wait_new_session(&zk, session).await;
                }
            }
            Step::SessionLost => wait_new_session(&zk, session).await,
            Step::Retry(error) => {
                tracing::debug!(%error, "watch read failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Waits until the supervisor has replaced the session `old`.
async fn wait_new_session(zk: &Zk, old: zkc::SessionId) {
    let mut rx = zk.inner.client.subscribe();
    loop {
        if zk.inner.closed.is_cancelled() {
            return;
        }
        if let Some(c) = rx.borrow_and_update().as_ref()
            && c.session_id() != old
        {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = zk.inner.closed.cancelled() => return,
            // The supervisor may not have noticed yet; look again soon.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
