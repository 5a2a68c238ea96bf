//! Self-healing: one replicator, elected through ZooKeeper (the ephemeral
//! `checker` znode: whoever holds it leads; it goes with its session, so
//! a replicator killed or cut off hands over within the session timeout),
//! checks and repairs every shard whose last check (`checks/<id>`) is
//! older than `--check-interval`, and any shard an operator asked for
//! (`check-requests/<id>`, written by the console). See [`crate::check`].

use std::time::Duration;

use backpack_shared::model::{CheckRequest, ShardCheck, parse_json, paths};
use backpack_shared::zk::Zk;
use tokio_util::sync::CancellationToken;

use crate::check::{CheckOptions, check_all};
use crate::node_client::NodeClient;

/// How the elected checker works.
#[derive(Debug, Clone)]
pub struct CheckerConfig {
    /// A shard is checked again once its last check is this old (zero:
    /// never on a schedule; requests are still taken).
    pub interval: Duration,
    /// How often the replicator tries to lead and looks for work.
    pub tick: Duration,
    /// A shard whose last check found it not whole (copies queued, a
    /// node being filled) is checked again this soon: its record then
    /// shows the rebuild's progress, and what a lost task left out is
    /// queued again (the queue is a set: a task already there is not
    /// doubled).
    pub recheck: Duration,
    /// The check's settings (repair on).
    pub check: CheckOptions,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        CheckerConfig {
            interval: Duration::from_secs(24 * 3600),
            tick: Duration::from_secs(5),
            recheck: Duration::from_secs(60),
            check: CheckOptions {
                repair: true,
                // 10,000 files a page: at most about 100,000 files/s asked
                // of a shard's nodes.
                page_pause: Duration::from_millis(100),
                ..CheckOptions::default()
            },
        }
    }
}

/// Runs until `shutdown`: leads when it can, and checks what is due.
pub async fn run(zk: Zk, name: String, config: CheckerConfig, shutdown: CancellationToken) {
    let client = NodeClient::new(Duration::from_secs(5));
    let mut leading = false;
    // A shard never checked is due an interval after this replicator began
    // to lead (not at once: a fresh deployment does not check everything
    // in its first minute).
    let mut since_ms = 0;
    'ticks: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(config.tick) => {}
        }
        let now_leading = match zk.lead(paths::CHECKER, name.as_bytes()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach ZooKeeper to lead the checks");
                false
            }
        };
        if now_leading != leading {
            leading = now_leading;
            if leading {
                since_ms = backpack_shared::clock::now_ms();
                tracing::info!("this replicator now checks the shards (elected checker)");
            }
        }
        if !leading {
            continue;
        }
        let work = tokio::select! {
            _ = shutdown.cancelled() => break,
            w = due(&zk, &config, since_ms) => w,
        };
        for (shards, repair) in work {
            let opts = CheckOptions {
                repair,
                ..config.check.clone()
            };
            let checked = tokio::select! {
                _ = shutdown.cancelled() => break 'ticks,
                r = check_all(&zk, &client, Some(&shards), &opts, &name) => r,
            };
            match checked {
                // Every request of these shards is answered, also one for a
                // shard no longer in the map (else it would be asked for
                // again at every tick).
                Ok(_) => {
                    for id in &shards {
                        let _ = zk.delete(&paths::check_request(id)).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot keep a check's result in ZooKeeper"),
            }
        }
    }
    // Hand over at once rather than after the session timeout.
    if leading {
        let _ = zk.delete(paths::CHECKER).await;
    }
}

/// The shards to check now: first those an operator asked for (with
/// their repair wish), then, with repair, those whose last check is older
/// than the interval (one never checked counts from `since_ms`).
async fn due(zk: &Zk, config: &CheckerConfig, since_ms: u64) -> Vec<(Vec<String>, bool)> {
    let mut work = Vec::new();
    let asked = zk
        .children(paths::CHECK_REQUESTS)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    for id in asked {
        let repair = match zk.get(&paths::check_request(&id)).await {
            Ok(Some((data, _))) => parse_json::<CheckRequest>("check request", &data)
                .map(|r| r.repair)
                .unwrap_or(false),
            _ => continue,
        };
        work.push((vec![id], repair));
    }
    if config.interval.is_zero() {
        return work;
    }
    let shards = zk
        .get(paths::SHARDS_MAP)
        .await
        .ok()
        .flatten()
        .and_then(|(d, _)| {
            backpack_shared::model::MapDoc::<backpack_shared::model::Shard>::parse(
                paths::SHARDS_MAP,
                &d,
            )
            .ok()
        })
        .map(|d| d.valid().into_keys().collect::<Vec<_>>())
        .unwrap_or_default();
    let now = backpack_shared::clock::now_ms();
    let mut stale = Vec::new();
    for id in shards {
        let last = match zk.get(&paths::shard_check(&id)).await {
            Ok(Some((data, _))) => parse_json::<ShardCheck>("shard check", &data).ok(),
            _ => None,
        };
        let (when, every) = match &last {
            Some(c) if !c.whole() => (c.when_ms, config.recheck.min(config.interval)),
            Some(c) => (c.when_ms, config.interval),
            None => (since_ms, config.interval),
        };
        if now.saturating_sub(when) >= every.as_millis() as u64 {
            stale.push(id);
        }
    }
    if !stale.is_empty() {
        work.push((stale, true));
    }
    work
}
