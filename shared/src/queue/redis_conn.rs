//! Connections to the queue's Redis servers: one auto-reconnecting
//! `ConnectionManager` per address, kept across queue reconfigurations,
//! every call bounded by a timeout so a dead server never stalls a fan-out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::HostPort;

/// Bound on one Redis call (a dead server can otherwise block ~9 s).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// After a failed call, a server is skipped (answered with its last error
/// at once) for this long, so a dead server costs one slow call per
/// period instead of one per request.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// Whether a call failed on a connection that broke (the server restarted,
/// closed an idle client, `CLIENT KILL`) rather than on the server: worth
/// one more try at once, on the fresh connection the manager makes. Every
/// command we send is safe to repeat (set adds and removes, scripts that
/// check before they write; a repeated `HINCRBY` of a task's tries counts
/// one failure twice at worst).
fn broke<T>(r: &Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> bool {
    matches!(r, Ok(Err(e)) if e.is_connection_dropped() || (e.is_io_error() && !e.is_connection_refusal()))
}

#[derive(Clone)]
pub(crate) struct Server {
    pub addr: HostPort,
    conn: Option<redis::aio::ConnectionManager>,
    error: Option<String>,
    down: Arc<Mutex<Option<(Instant, String)>>>,
}

impl Server {
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.usable()?;
        let mut r = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        if broke(&r) {
            r = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        }
        self.record(r)
    }

    pub async fn pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, String> {
        let mut conn = self.usable()?;
        let mut r = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<T>(&mut conn)).await;
        if broke(&r) {
            r = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<T>(&mut conn)).await;
        }
        self.record(r)
    }

    fn usable(&self) -> Result<redis::aio::ConnectionManager, String> {
        let Some(conn) = &self.conn else {
            return Err(self.error.clone().unwrap_or_default());
        };
        let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((until, error)) = down.as_ref()
            && Instant::now() < *until
        {
            return Err(format!(
                "{error} (skipped for {}s after a failure)",
                DOWN_FOR.as_secs()
            ));
        }
        Ok(conn.clone())
    }

    fn record<T>(
        &self,
        r: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        let r = match r {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", REDIS_TIMEOUT.as_secs())),
        };
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Ok(_) => *down = None,
            Err(e) => *down = Some((Instant::now() + DOWN_FOR, e.clone())),
        }
        r
    }
}

/// Connections by address, shared by every [`super::Queue`] built from it.
#[derive(Clone, Default)]
pub struct RedisPool {
    servers: Arc<Mutex<HashMap<HostPort, Server>>>,
}

fn url(addr: &HostPort) -> String {
    format!("redis://{}:{}/", addr.host, addr.port)
}

impl RedisPool {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn server(&self, addr: &HostPort) -> Server {
        let mut map = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr.clone())
            .or_insert_with(|| {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(REDIS_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(100));
                let conn = redis::Client::open(url(addr))
                    .and_then(|c| redis::aio::ConnectionManager::new_lazy_with_config(c, config));
                match conn {
                    Ok(c) => Server {
                        addr: addr.clone(),
                        conn: Some(c),
                        error: None,
                        down: Default::default(),
                    },
                    Err(e) => Server {
                        addr: addr.clone(),
                        conn: None,
                        error: Some(e.to_string()),
                        down: Default::default(),
                    },
                }
            })
            .clone()
    }
}

/// Wakes idle workers when a push is published on `<key>:wake` on any of
/// the servers. Listens until cancelled, reconnecting with backoff.
#[derive(Clone)]
pub struct WakeListener {
    pub notify: Arc<Notify>,
}

impl WakeListener {
    pub fn start(key: &str, servers: &[HostPort], stop: CancellationToken) -> WakeListener {
        let notify = Arc::new(Notify::new());
        for addr in servers {
            tokio::spawn(listen(
                format!("{key}:wake"),
                addr.clone(),
                notify.clone(),
                stop.clone(),
            ));
        }
        WakeListener { notify }
    }
}

async fn listen(channel: String, addr: HostPort, notify: Arc<Notify>, stop: CancellationToken) {
    let mut pause = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let session = async {
            let client = redis::Client::open(url(&addr)).map_err(|e| e.to_string())?;
            let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| "timeout".to_string())?
                .map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = pubsub.into_on_message();
            while stream.next().await.is_some() {
                notify.notify_waiters();
            }
            Err::<(), String>("subscription closed".into())
        };
        let r = tokio::select! {
            r = session => r,
            _ = stop.cancelled() => return,
        };
        if let Err(error) = r {
            tracing::debug!(%addr, %error, "wake-up subscription lost; the slow poll covers it meanwhile");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
