//! One struct per admin command: its arguments (clap derive, doc comments
//! are the help text) and what it does.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Map, Value, json};

use backpack_shared::model::name::nginx;
use backpack_shared::model::{
    HostPort, MapDoc, MapEntry, Name, QueueInfo, ReplicationTask, ServersMap, ShardsMap, id_order,
    parse_json, parse_size, paths, print_stats, to_json,
};
use backpack_shared::ops::{MapOp, validate_id};
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::{Zk, ZkError};

use super::{AdminCommand, ZkArgs, connect, zk_config};

/// Initializes a cluster's root in ZooKeeper: creates the root (and its
/// parents), an empty servers map, an empty shards map and the queue info,
/// each only where missing.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-init", version)]
pub struct Init {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Redis key of the replication queue (e.g. backpack-queue)
    pub queue_key: String,
    /// Redis servers of the queue, comma-separated host:port (e.g. one:13001,two:13002)
    #[arg(value_name = "redis_host1:port1,...")]
    pub redis_servers: String,
}

impl AdminCommand for Init {
    const USAGE: &'static str = "Usage: backpack-coordinator-init <zk_servers> </zk/root> <queue_key> <redis_host1:port1,redis_host2:port2,..>";

    async fn run(self) -> anyhow::Result<()> {
        let servers = HostPort::parse_list(&self.redis_servers)?;
        if self.queue_key.trim().is_empty() {
            bail!("the queue key is empty; give a Redis key like backpack-queue");
        }
        let zk = Zk::connect(zk_config(&self.zk)).await?;
        zk.create_root().await?;
        let queue = QueueInfo {
            key: self.queue_key.clone(),
            servers,
        };
        for (name, label, data) in [
            (paths::SERVERS_MAP, "Servers map", b"{}".to_vec()),
            (paths::SHARDS_MAP, "Shards map", b"{}".to_vec()),
            (paths::QUEUE, "Queue", to_json(&queue)),
        ] {
            if zk.create_if_missing(name, &data).await? {
                say!("{label} initialized");
            } else {
                say!("{label} already initialized");
            }
        }
        zk.close();
        Ok(())
    }
}

/// Registers a storage node: its id and its URL (http://host:port).
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-add-server", version)]
pub struct AddServer {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Node id (e.g. 1)
    pub id: String,
    /// Node URL (e.g. http://one:10001)
    pub url: String,
    /// Change the address of an existing node id
    #[arg(long)]
    pub replace: bool,
}

impl AdminCommand for AddServer {
    const USAGE: &'static str =
        "Usage: backpack-coordinator-add-server <zk_servers> </zk/root> <id> <url>";

    async fn run(self) -> anyhow::Result<()> {
        validate_id("server", &self.id)?;
        let addr = HostPort::parse_url(&self.url)?;
        apply(
            &self.zk,
            MapOp::AddServer {
                id: self.id,
                addr,
                replace: self.replace,
            },
        )
        .await
    }
}

/// Removes a storage node that no shard uses (also the way to clear an
/// entry of servers-map that is not valid).
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-remove-server", version)]
pub struct RemoveServer {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Node id (e.g. 9)
    pub id: String,
}

impl AdminCommand for RemoveServer {
    const USAGE: &'static str =
        "Usage: backpack-coordinator-remove-server <zk_servers> </zk/root> <id>";

    async fn run(self) -> anyhow::Result<()> {
        apply(&self.zk, MapOp::RemoveServer { id: self.id }).await
    }
}

/// Creates a shard of existing nodes with a capacity. New shards are
/// read-only: enable them with backpack-coordinator-enable-shard.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-add-shard", version)]
pub struct AddShard {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Shard id (e.g. 1)
    pub id: String,
    /// Node ids, comma-separated (e.g. 1,4)
    #[arg(value_name = "node1,node2,..")]
    pub nodes: String,
    /// Capacity: a number with b, kb, mb, gb or tb (e.g. 100gb)
    // A value like -5gb reaches parse_size, which says what is wrong,
    // instead of clap's "unexpected argument" tip.
    #[arg(value_name = "size (ex: 100gb)", allow_hyphen_values = true)]
    pub size: String,
    /// Re-point an existing shard to these nodes (files on its old nodes are then no longer found)
    #[arg(long)]
    pub replace: bool,
}

impl AdminCommand for AddShard {
    const USAGE: &'static str = "Usage: backpack-coordinator-add-shard <zk_servers> </zk/root> <id> <node1,node2,node3,..> <size (ex: 100gb)>";

    async fn run(self) -> anyhow::Result<()> {
        validate_id("shard", &self.id)?;
        let nodes: Vec<String> = self
            .nodes
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let capacity = parse_size(&self.size)?;
        apply(
            &self.zk,
            MapOp::AddShard {
                id: self.id,
                nodes,
                capacity,
                replace: self.replace,
            },
        )
        .await
    }
}

/// Makes a shard writable: coordinators start sending uploads to it.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-enable-shard", version)]
pub struct EnableShard {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Shard id
    pub id: String,
}

impl AdminCommand for EnableShard {
    const USAGE: &'static str =
        "Usage: backpack-coordinator-enable-shard <zk_servers> </zk/root> <id>";

    async fn run(self) -> anyhow::Result<()> {
        apply(&self.zk, MapOp::EnableShard { id: self.id }).await
    }
}

/// Makes a shard read-only: coordinators stop sending uploads to it.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-disable-shard", version)]
pub struct DisableShard {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Shard id
    pub id: String,
}

impl AdminCommand for DisableShard {
    const USAGE: &'static str =
        "Usage: backpack-coordinator-disable-shard <zk_servers> </zk/root> <id>";

    async fn run(self) -> anyhow::Result<()> {
        apply(&self.zk, MapOp::DisableShard { id: self.id }).await
    }
}

/// Replaces the queue's Redis key and servers.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-set-queue", version)]
pub struct SetQueue {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Redis key of the replication queue
    pub key: String,
    /// Redis servers, comma-separated host:port
    #[arg(value_name = "host1:port1,...")]
    pub servers: String,
}

impl AdminCommand for SetQueue {
    const USAGE: &'static str = "Usage: backpack-coordinator-set-queue <zk_servers> </zk/root> <key> <host1:port1,host2:port2,..>";

    async fn run(self) -> anyhow::Result<()> {
        let servers = HostPort::parse_list(&self.servers)?;
        apply(
            &self.zk,
            MapOp::SetQueue(QueueInfo {
                key: self.key,
                servers,
            }),
        )
        .await
    }
}

async fn apply(args: &ZkArgs, op: MapOp) -> anyhow::Result<()> {
    let zk = connect(args).await?;
    let message = zk.apply(&op).await?;
    say!("{message}");
    zk.close();
    Ok(())
}

/// A map znode's valid entries; each invalid one is skipped with a warning
/// on stderr naming it and the fix (as the daemons skip it).
async fn read_map<T: MapEntry + Clone>(
    zk: &Zk,
    name: &'static str,
) -> anyhow::Result<BTreeMap<String, T>> {
    let (data, _) = zk.get(name).await?.ok_or_else(|| ZkError::NotInitialized {
        root: zk.root().to_string(),
        missing: name.to_string(),
    })?;
    let doc = MapDoc::<T>::parse(name, &data)?;
    for skipped in doc.skipped() {
        eprintln!(
            "warning: {name}: {skipped}; left out here (repair it with add-server --replace, add-shard --replace or remove-server)"
        );
    }
    Ok(doc.valid())
}

/// Prints every shard with its state and its nodes' addresses, as JSON.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-dump-shards", version)]
pub struct DumpShards {
    #[command(flatten)]
    pub zk: ZkArgs,
}

impl AdminCommand for DumpShards {
    const USAGE: &'static str = "Usage: backpack-coordinator-dump-shards <zk_servers> </zk/root>";

    async fn run(self) -> anyhow::Result<()> {
        let zk = connect(&self.zk).await?;
        let servers: ServersMap = read_map(&zk, paths::SERVERS_MAP).await?;
        let shards: ShardsMap = read_map(&zk, paths::SHARDS_MAP).await?;
        zk.close();
        let mut ids: Vec<&String> = shards.keys().collect();
        ids.sort_by(|a, b| id_order(a, b));
        let mut out = Map::new();
        for id in ids {
            let shard = &shards[id];
            let mut nodes = Map::new();
            for n in &shard.nodes {
                match servers.get(n) {
                    Some(s) => {
                        nodes.insert(n.clone(), serde_json::to_value(s)?);
                    }
                    // The original's JSON.stringify drops such a node; say so.
                    None => eprintln!(
                        "warning: shard {id} lists node {n}, which is not in the servers map"
                    ),
                }
            }
            out.insert(
                id.clone(),
                json!({"enabled": shard.enabled(), "nodes": Value::Object(nodes)}),
            );
        }
        say!("{}", pretty4(&Value::Object(out))?);
        Ok(())
    }
}

/// JSON indented by 4 spaces, as the original prints.
fn pretty4(v: &Value) -> anyhow::Result<String> {
    use serde::Serialize;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// Prints each shard's fill level and the total, in the original's format.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-print-stats", version)]
pub struct PrintStats {
    #[command(flatten)]
    pub zk: ZkArgs,
}

impl AdminCommand for PrintStats {
    const USAGE: &'static str = "Usage: backpack-coordinator-print-stats <zk_servers> </zk/root>";

    async fn run(self) -> anyhow::Result<()> {
        let zk = connect(&self.zk).await?;
        let shards: ShardsMap = read_map(&zk, paths::SHARDS_MAP).await?;
        // Read for its warnings: a shard on an invalid server entry.
        let _: ServersMap = read_map(&zk, paths::SERVERS_MAP).await?;
        let mut sizes = BTreeMap::new();
        for id in shards.keys() {
            let name = paths::shard_size(id);
            match zk.get(&name).await? {
                Some((data, _)) => {
                    let size: backpack_shared::model::ShardSize = parse_json(&name, &data)?;
                    if size.current_was_null() {
                        eprintln!(
                            "warning: {name} has \"current\": null (left by the original coordinator); counted as 0"
                        );
                    }
                    sizes.insert(id.clone(), size);
                }
                None => eprintln!("warning: {name} is missing; shard {id} counted as 0 / 0"),
            }
        }
        zk.close();
        say!("{}", print_stats(&shards, &sizes).trim_end());
        Ok(())
    }
}

/// Pushes one replication task to the queue by hand.
#[derive(Debug, Parser)]
#[command(name = "backpack-replicator-push", version)]
pub struct ReplicatorPush {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Redis servers, comma-separated host:port
    #[arg(value_name = "redis_servers")]
    pub redis_servers: String,
    /// Redis key of the queue
    pub redis_key: String,
    /// Ids of the nodes that have the file, comma-separated
    pub from_ids: String,
    /// Id of the node to copy to
    pub to_id: String,
    /// The file's name on the nodes, starting with /
    #[arg(value_name = "/path")]
    pub path: String,
}

impl AdminCommand for ReplicatorPush {
    const USAGE: &'static str = "Usage: backpack-replicator-push <zk_servers> </zk/root> <redis_servers> <redis_key> <from_ids> <to_id> </path>";

    async fn run(self) -> anyhow::Result<()> {
        let servers = HostPort::parse_list(&self.redis_servers)?;
        let from: Vec<String> = self
            .from_ids
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if from.is_empty() {
            bail!("no source node ids given; list the ids that have the file, like 1,4");
        }
        for id in from.iter().chain(std::iter::once(&self.to_id)) {
            validate_id("node", id)?;
        }
        if !self.path.starts_with('/') {
            bail!(
                "the path {:?} does not start with /; give the file's name as stored on the nodes, e.g. /hi.txt",
                self.path
            );
        }
        // A task for a name no replicator can copy would only become a
        // dead letter.
        if let Err(e) = Name::parse(self.path.as_bytes()) {
            bail!("the path {:?} cannot be copied: {e}", self.path);
        }
        let zk = connect(&self.zk).await?;
        let queue = Queue::new(
            &QueueInfo {
                key: self.redis_key,
                servers,
            },
            &RedisPool::new(),
            zk.clone(),
        );
        let task = ReplicationTask {
            from,
            to: self.to_id,
            path: self.path,
        };
        queue
            .push(&task.encode())
            .await
            .context("the task was not queued")?;
        zk.close();
        say!("Pushed!");
        Ok(())
    }
}

/// Prints an nginx configuration that serves `GET /<shard>:<name>` from
/// any node of the shard, trying the next node on 404 or error (the
/// original README's recipe, for the current shards map). Include it in
/// nginx's `http` block.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator-nginx-config", version)]
pub struct NginxConfig {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// What nginx listens on (nginx `listen` syntax: port or host:port)
    #[arg(long, default_value = "80")]
    pub listen: String,
    /// nginx `server_name`
    #[arg(long, default_value = "_")]
    pub server_name: String,
}

impl AdminCommand for NginxConfig {
    const USAGE: &'static str = "Usage: backpack-coordinator-nginx-config <zk_servers> </zk/root> [--listen 80] [--server-name one]";

    async fn run(self) -> anyhow::Result<()> {
        let zk = connect(&self.zk).await?;
        let servers: ServersMap = read_map(&zk, paths::SERVERS_MAP).await?;
        let shards: ShardsMap = read_map(&zk, paths::SHARDS_MAP).await?;
        zk.close();
        say!(
            "{}",
            nginx_config(&servers, &shards, &self.listen, &self.server_name).trim_end()
        );
        Ok(())
    }
}

/// The nginx configuration text. The shard id and the name are taken from
/// the raw request target (`$request_uri`) with the patterns of
/// [`backpack_shared::model::name::nginx`], so names keep their exact
/// bytes (percent-encoding, query string) and may contain colons: the
/// shard id ends at the first colon.
pub fn nginx_config(
    servers: &ServersMap,
    shards: &ShardsMap,
    listen: &str,
    server_name: &str,
) -> String {
    let mut ids: Vec<&String> = shards.keys().collect();
    ids.sort_by(|a, b| id_order(a, b));
    let mut out = String::from(
        "# Generated by backpack-coordinator-nginx-config for the current shards map.\n",
    );
    let mut known = Vec::new();
    for id in ids {
        let nodes: Vec<&backpack_shared::model::Server> = shards[id]
            .nodes
            .iter()
            .filter_map(|n| servers.get(n))
            .collect();
        if nodes.is_empty() {
            out.push_str(&format!(
                "# shard {id}: none of its nodes is in the servers map; skipped\n"
            ));
            continue;
        }
        out.push_str(&format!("upstream backpack-shard-{id} {{\n"));
        for s in nodes {
            out.push_str(&format!(
                "    server {} max_fails=3 fail_timeout=5s;\n",
                s.authority()
            ));
        }
        out.push_str("}\n\n");
        known.push(id);
    }
    // The read path's split, as `Name` defines it: the shard id ends at
    // the first colon; the rest is the name without its leading /.
    out.push_str(&format!(
        "map $request_uri $backpack_shard {{\n    \"{}\" $shard;\n    default \"\";\n}}\n\n",
        nginx::SHARD_PATTERN
    ));
    out.push_str(&format!(
        "map $request_uri $backpack_file {{\n    \"{}\" $file;\n    default \"\";\n}}\n\n",
        nginx::FILE_PATTERN
    ));
    out.push_str("map $backpack_shard $backpack_upstream {\n");
    for id in known {
        out.push_str(&format!("    {id} backpack-shard-{id};\n"));
    }
    out.push_str("    default \"\";\n}\n\n");
    out.push_str(&format!(
        r#"server {{
    listen {listen};
    server_name {server_name};

    proxy_connect_timeout 5s;
    proxy_send_timeout 5s;
    proxy_read_timeout 10s;
    # retry on the next node if one failed, answered 404 (not copied there
    # yet) or an error (a damaged copy, a failing disk, shutting down)
    proxy_next_upstream error timeout http_404 http_500 http_502 http_503 http_504;

    # nobody uploads through the front
    if ($request_method !~ ^(GET|HEAD)$) {{
        return 403;
    }}

    location / {{
        if ($backpack_upstream = "") {{
            return 404;
        }}
        proxy_pass http://$backpack_upstream/$backpack_file;
    }}
}}
"#
    ));
    out
}
