//! `backpack-coordinator-check-shard`: the check (and repair) of shards,
//! as a command (see [`crate::check`]).

use std::io::IsTerminal;

use anyhow::bail;
use clap::Parser;

use backpack_shared::model::{
    HostPort, MapDoc, QueueInfo, Shard, format_size, id_order, parse_json, paths,
};
use backpack_shared::queue::{Queue, RedisPool};

use super::{AdminCommand, NotWhole, ZkArgs, connect};
use crate::check::{CheckOptions, Progress, ShardReport, check_shard};
use crate::node_client::NodeClient;

/// Checks that every node of a shard holds every file of the shard at its
/// newest version (merging the nodes' listings page by page: memory does
/// not grow with the file count), prints what each node lacks, and with
/// --repair queues the copies that make the shard whole (the replicators
/// do them). Exit status: 0 whole (or every copy queued with --repair), 2
/// not whole, 1 the check could not run.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-check-shard", version)]
pub struct CheckShard {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Shard ids to check (e.g. 1 4); none with --all
    pub ids: Vec<String>,
    /// Check every shard
    #[arg(long)]
    pub all: bool,
    /// Queue a replication task for each file a node lacks or holds older
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// With --repair: wait while the queue holds more tasks than this
    #[arg(long, default_value_t = 100_000)]
    pub max_queue: u64,
    /// Files per page of the listings, about (memory is about 200 bytes a file per node)
    #[arg(long, default_value_t = 10_000)]
    pub page_files: u64,
}

impl AdminCommand for CheckShard {
    const USAGE: &'static str = "Usage: backpack-coordinator-check-shard <zk_servers> </zk/root> <id>... | --all [--repair] [--json]";

    async fn run(self) -> anyhow::Result<()> {
        if self.all != self.ids.is_empty() {
            bail!("name the shards to check (e.g. 1 4), or pass --all (not both)");
        }
        let zk = connect(&self.zk).await?;
        let doc = |name: &'static str| {
            let zk = zk.clone();
            async move {
                let (data, _) = zk.get(name).await?.unwrap_or_default();
                anyhow::Ok(data)
            }
        };
        let servers =
            MapDoc::<HostPort>::parse(paths::SERVERS_MAP, &doc(paths::SERVERS_MAP).await?)?;
        let shards = MapDoc::<Shard>::parse(paths::SHARDS_MAP, &doc(paths::SHARDS_MAP).await?)?;
        let (servers, shards) = (servers.valid(), shards.valid());
        let mut ids: Vec<String> = if self.all {
            shards.keys().cloned().collect()
        } else {
            self.ids.clone()
        };
        ids.sort_by(|a, b| id_order(a, b));
        let queue = if self.repair {
            let data = doc(paths::QUEUE).await?;
            let info: QueueInfo = parse_json(paths::QUEUE, &data)?;
            Some(Queue::new(&info, &RedisPool::new(), zk.clone()))
        } else {
            None
        };
        let opts = CheckOptions {
            repair: self.repair,
            page_files: self.page_files,
            max_queue: self.max_queue,
            ..CheckOptions::default()
        };
        let client = NodeClient::new(std::time::Duration::from_secs(5));
        let terminal = std::io::stderr().is_terminal();
        let mut reports = Vec::new();
        for id in &ids {
            let Some(shard) = shards.get(id) else {
                bail!(
                    "shard {id} is not in shards-map; list the shards with backpack-coordinator-dump-shards"
                );
            };
            let mut nodes = Vec::new();
            for n in &shard.nodes {
                let Some(addr) = servers.get(n) else {
                    bail!(
                        "shard {id} names server {n}, which is not in servers-map (or its entry is invalid); fix it with backpack-coordinator-add-server"
                    );
                };
                nodes.push((n.clone(), addr.clone()));
            }
            let report = check_shard(&client, id, &nodes, queue.as_ref(), &opts, |p| {
                if terminal {
                    match p {
                        Progress::Page { done, of, files } => {
                            eprint!("\rshard {id}: page {done}/{of}, {files} files   ")
                        }
                        Progress::QueueFull { length } => eprint!(
                            "\rshard {id}: waiting for the queue ({length} tasks > --max-queue)   "
                        ),
                    }
                }
            })
            .await;
            if terminal {
                eprint!("\r\x1b[K");
            }
            let report = report?;
            crate::check::record(&zk, id, &report.to_check("check-shard")).await?;
            if !self.json {
                print!("{}", text(&report));
            }
            reports.push(report);
        }
        zk.close();
        if self.json {
            println!(
                "{}",
                serde_json::json!({
                    "shards": reports.iter().map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["whole"] = r.whole().into();
                        v
                    }).collect::<Vec<_>>(),
                    // What the check needed: memory is a page's listings,
                    // whatever the file count.
                    "peak_rss_bytes": peak_rss(),
                })
            );
        }
        let not_whole = reports.iter().filter(|r| !r.whole()).count();
        if not_whole > 0 && !self.repair {
            return Err(NotWhole.into());
        }
        Ok(())
    }
}

/// The report of one shard, as printed.
fn text(r: &ShardReport) -> String {
    let ids: Vec<&str> = r.nodes.iter().map(|n| n.id.as_str()).collect();
    let mut out = format!(
        "shard {}: {} files ({}) on nodes {}: {}\n",
        r.shard,
        r.files,
        format_size(r.bytes),
        ids.join(", "),
        if r.whole() { "whole" } else { "NOT WHOLE" }
    );
    for n in &r.nodes {
        let damaged = match n.damaged {
            Some(d) if d > 0 => format!(", {d} damaged copies found by its scrub"),
            _ => String::new(),
        };
        if n.missing == 0 && n.older == 0 {
            if !damaged.is_empty() {
                out += &format!("  node {}: {} files{damaged}\n", n.id, n.files);
            }
            continue;
        }
        out += &format!(
            "  node {}: {} files, {} missing, {} older{damaged} (e.g. {})\n",
            n.id,
            n.files,
            n.missing,
            n.older,
            n.examples.join(", ")
        );
    }
    if r.queued > 0 {
        out += &format!("  queued {} copies; the replicators make them\n", r.queued);
    }
    out
}

/// Re-points a server id to a new, empty storage node (one lost for good
/// is replaced) and fills it from its shard peers: the new node must
/// answer and hold no file (unless --force); the servers map changes by
/// compare-and-set; then every shard of the id is checked and its missing
/// copies queued (the replicators make them while uploads and reads go on:
/// reads move past the new node until it has each file).
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-replace-server", version)]
pub struct ReplaceServer {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Node id to re-point (e.g. 3)
    pub id: String,
    /// The new node's URL (e.g. http://three-b:10003)
    pub url: String,
    /// Use the new node even if it already holds files
    #[arg(long)]
    pub force: bool,
    /// Wait while the queue holds more tasks than this
    #[arg(long, default_value_t = 100_000)]
    pub max_queue: u64,
}

impl AdminCommand for ReplaceServer {
    const USAGE: &'static str =
        "Usage: backpack-coordinator-replace-server <zk_servers> </zk/root> <id> <url>";

    async fn run(self) -> anyhow::Result<()> {
        backpack_shared::ops::validate_id("server", &self.id)?;
        let addr = HostPort::parse_url(&self.url)?;
        let zk = connect(&self.zk).await?;
        let (data, _) = zk.get(paths::SERVERS_MAP).await?.unwrap_or_default();
        let servers = MapDoc::<HostPort>::parse(paths::SERVERS_MAP, &data)?;
        let Some(old) = servers.entries.get(&self.id) else {
            bail!(
                "server {} is not in servers-map; register a new node with backpack-coordinator-add-server",
                self.id
            );
        };
        if old.value.as_ref().is_ok_and(|a| *a == addr) {
            bail!(
                "server {} is already at {}; give the new node's URL",
                self.id,
                addr.url()
            );
        }
        // The new node: ours, answering, and empty.
        let client = NodeClient::new(std::time::Duration::from_secs(5));
        let asked = client.get_resource(&addr, "/stats", 1 << 20);
        let stats = match tokio::time::timeout(std::time::Duration::from_secs(10), asked).await {
            Ok(Ok((status, body))) if status.is_success() => body,
            Ok(Ok((status, body))) => bail!(
                "the new node at {} {}; start backpack-node there first",
                addr.url(),
                crate::node_client::answered(status, &body)
            ),
            Ok(Err(e)) => bail!(
                "the new node at {} cannot be reached ({}); start backpack-node there first",
                addr.url(),
                e.detail
            ),
            Err(_) => bail!("the new node at {} does not answer within 10 s", addr.url()),
        };
        let v: serde_json::Value = serde_json::from_slice(&stats).unwrap_or_default();
        let Some(files) = v["files"].as_u64() else {
            bail!(
                "{} does not look like a backpack-node (its /stats has no file count); the replacement must be one, to be filled and checked",
                addr.url()
            );
        };
        if files > 0 && !self.force {
            bail!(
                "the new node at {} already holds {files} files; give an empty node, or pass --force to use it anyway",
                addr.url()
            );
        }
        let said = zk
            .apply(&backpack_shared::ops::MapOp::AddServer {
                id: self.id.clone(),
                addr: addr.clone(),
                replace: true,
            })
            .await?;
        say!("{said}");
        // Fill it: check its shards and queue what it lacks.
        let (data, _) = zk.get(paths::SHARDS_MAP).await?.unwrap_or_default();
        let shards: Vec<String> = MapDoc::<Shard>::parse(paths::SHARDS_MAP, &data)?
            .valid()
            .into_iter()
            .filter(|(_, s)| s.nodes.contains(&self.id))
            .map(|(id, _)| id)
            .collect();
        if shards.is_empty() {
            say!("server {} is in no shard: nothing to copy to it", self.id);
            zk.close();
            return Ok(());
        }
        let opts = CheckOptions {
            repair: true,
            max_queue: self.max_queue,
            ..CheckOptions::default()
        };
        let done =
            crate::check::check_all(&zk, &client, Some(&shards), &opts, "replace-server").await?;
        zk.close();
        for (id, c) in &done {
            match &c.error {
                Some(e) => bail!(
                    "shard {id} could not be checked ({e}); run backpack-coordinator-check-shard {id} --repair once it can"
                ),
                None => say!(
                    "shard {id}: queued {} copies ({}) to fill server {}; follow with backpack-coordinator-check-shard {id}",
                    c.queued,
                    format_size(c.queued_bytes),
                    self.id
                ),
            }
        }
        Ok(())
    }
}

/// This process's peak resident size (VmHWM), bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}
