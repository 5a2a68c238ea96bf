//! The upload path: `PUT /<name>`.
//!
//! 1. Check the name (see [`Name`]) and Content-Length (411), in
//!    [`super::http`]; then the size limit (413); answer 503 until the
//!    configuration is read or when no writable shard has room for the
//!    file.
//! 2. Pick a writable shard with room, weighted by free bytes (counting
//!    the increments not yet flushed).
//! 3. Hold the body (memory or a temporary file, see [`super::body`]),
//!    meanwhile asking the shard's other nodes which version they hold
//!    ([`super::nodes::Nodes::probe`]).
//! 4. Write the body to the shard's nodes in the name's rendezvous order
//!    until one takes it (502 when none does); that node gives the copy a
//!    version later than its own copy's and the probed ones.
//! 5. Count the bytes in the shard's fill level (batched, see
//!    [`super::fill`]).
//! 6. Queue one replication task per other node of the shard, in one push
//!    (503 when the queue cannot take them: the file is on one node only).
//! 7. Answer `200 {"shard_id":"<id>"}`, with the version in
//!    `X-Backpack-Time` and `X-Backpack-Hash`, and `X-Backpack-Unordered:
//!    <reason>` when the upload was stored without the ordering guarantee
//!    (see [`Unordered`]).

use std::collections::BTreeMap;
use std::time::Instant;

use backpack_shared::model::{
    HostPort, Name, ReplicationTask, ShardSize, ShardsMap, Version, choose_shard, shard_chances,
};
use hyper::body::Incoming;

use super::App;
use super::error::ApiError;
use super::stats::Unordered;

/// What a successful upload answers with.
pub struct Uploaded {
    pub shard: String,
    /// The version the node assigned, when it said.
    pub version: Option<Version>,
    /// Why the upload is not ordered after every earlier one, if it is not.
    pub unordered: Option<Unordered>,
}

/// Handles one upload of `name` (already checked, see [`Name`]) whose
/// body has `len` bytes (its Content-Length); returns the shard it went
/// to.
pub async fn upload(app: &App, name: Name, len: u64, body: Incoming) -> Result<Uploaded, ApiError> {
    if len > app.config.max_body {
        return Err(ApiError::TooLarge {
            len,
            max: app.config.max_body,
        });
    }
    if app.shutting_down.is_cancelled() {
        return Err(ApiError::ShuttingDown);
    }
    if !app.view.borrow().ready {
        return Err(ApiError::NotReady);
    }
    if let Some(servers) = app.queue_evicting() {
        return Err(ApiError::QueueEvicts(servers));
    }
    // Before reading the body: refuse at once what cannot be placed.
    let Some(early) = pick_shard(app, len) else {
        return Err(ApiError::NoWritableShard { len });
    };
    // A short wait for a slot, then 503 with Retry-After: a client is
    // told at once rather than left hanging behind slow uploads.
    let _slot =
        match tokio::time::timeout(app.config.upload_slot_wait, app.upload_slots.acquire()).await {
            Ok(slot) => slot.map_err(|_| ApiError::ShuttingDown)?,
            Err(_) => {
                app.stats.busy();
                return Err(ApiError::Busy {
                    max: app.config.max_uploads,
                });
            }
        };
    // The shard's other nodes say which versions they hold while the body
    // arrives (see `Nodes::probe`).
    let (held, early_probe) = tokio::join!(
        app.holder.receive(body, len),
        app.nodes.probe(&name, shard_nodes(app, &early)),
    );
    let held = held.map_err(ApiError::Body)?;
    if held.spilled() {
        app.stats.spilled();
    }

    // The shard picked before is kept unless it lost its room or its
    // place in the maps meanwhile.
    let (shard_id, probe) = if still_fits(app, &early, len) {
        (early, early_probe)
    } else {
        let Some(id) = pick_shard(app, len) else {
            return Err(ApiError::NoWritableShard { len });
        };
        let probe = app.nodes.probe(&name, shard_nodes(app, &id)).await;
        (id, probe)
    };
    let targets = shard_nodes(app, &shard_id);
    if targets.is_empty() {
        return Err(ApiError::NoWritableShard { len });
    }
    let view = app.view.borrow().clone();
    let Some(shard) = view.shards.get(&shard_id) else {
        return Err(ApiError::NoWritableShard { len });
    };
    let written = app
        .nodes
        .write(targets, &name, &held, probe.newest, |failed| {
            app.stats.node_write_failed();
            tracing::warn!(shard = %shard_id, node = %failed.id, addr = %failed.addr, error = %failed.error, name = %name, "node write failed; trying the next node");
        })
        .await
        .map_err(|attempts| ApiError::AllNodesFailed {
            shard: shard_id.clone(),
            attempts,
        })?;
    let unordered = if !written.on_first {
        Some(Unordered::OffFirstNode)
    } else if !probe.unanswered.is_empty() {
        tracing::debug!(shard = %shard_id, nodes = ?probe.unanswered, name = %name, "stored without the versions of every other node of the shard");
        Some(Unordered::PeerNotProbed)
    } else {
        None
    };
    if let Some(why) = unordered {
        app.stats.unordered(why);
    }
    let writer = written.node;
    drop(held);
    app.fill.add(&shard_id, len);

    let mut others: Vec<&String> = shard.nodes.iter().filter(|n| **n != writer).collect();
    others.sort();
    others.dedup();
    let tasks: Vec<String> = others
        .into_iter()
        .map(|to| {
            ReplicationTask {
                from: vec![writer.clone()],
                to: to.clone(),
                path: name.as_str().to_string(),
            }
            .encode()
        })
        .collect();
    if !tasks.is_empty() {
        let Some(queue) = view.queue.clone() else {
            app.stats.queue_push_failed();
            return Err(ApiError::QueueUnconfigured { node: writer });
        };
        if let Err(e) = queue.push_many(&tasks).await {
            app.stats.queue_push_failed();
            return Err(ApiError::QueuePush {
                node: writer,
                error: e.to_string(),
            });
        }
        app.stats.tasks_queued(tasks.len() as u64);
    }
    Ok(Uploaded {
        shard: shard_id,
        version: written.version,
        unordered,
    })
}

/// The shard's nodes with their addresses (those the servers map knows).
fn shard_nodes(app: &App, shard: &str) -> Vec<(String, HostPort)> {
    let view = app.view.borrow();
    let Some(shard) = view.shards.get(shard) else {
        return Vec::new();
    };
    shard
        .nodes
        .iter()
        .filter_map(|id| view.node(id).map(|addr| (id.clone(), addr.clone())))
        .collect()
}

/// Picks a writable shard with room for `len` bytes, weighted by free
/// bytes, counting the increments not flushed yet.
pub fn pick_shard(app: &App, len: u64) -> Option<String> {
    let (writable, sizes) = candidates(app);
    choose_shard(&writable, &sizes, len, &mut rand::rng())
}

/// `shard` is still writable with room for `len` bytes.
fn still_fits(app: &App, shard: &str, len: u64) -> bool {
    let (writable, sizes) = candidates(app);
    shard_chances(&writable, &sizes, len)
        .iter()
        .any(|c| c.id == shard && c.free > 0)
}

/// The writable shards and their sizes, counting the increments not
/// flushed yet.
fn candidates(app: &App) -> (ShardsMap, BTreeMap<String, ShardSize>) {
    let view = app.view.borrow().clone();
    let sizes: BTreeMap<String, ShardSize> = view
        .writable
        .keys()
        .filter_map(|id| {
            view.sizes.get(id).map(|s| {
                (
                    id.clone(),
                    ShardSize {
                        capacity: s.capacity,
                        current: Some(app.fill.used(id, s.used())),
                    },
                )
            })
        })
        .collect();
    (view.writable.clone(), sizes)
}

/// Milliseconds since `start`, for logs and statsd timings.
pub fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
