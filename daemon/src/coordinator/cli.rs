//! Command line of `backpack-coordinator`: the original's arguments
//! (`<zk_servers> </zk/root> <listen_host> <listen_port> [<statsd_host:port>]`)
//! and flags, with environment fallbacks, for everything else.

use std::path::PathBuf;
use std::time::Duration;

use backpack_shared::cli::{ZkArgs, size};
use clap::Parser;

use super::{CoordinatorConfig, CoordinatorError};

/// backpack coordinator: takes uploads (PUT /<name>), stores each on a
/// node of a writable shard and queues its copies to the shard's other
/// nodes; GET /stats, /metrics and /health report on it.
#[derive(Debug, Parser)]
#[command(name = "backpack-coordinator", version)]
pub struct Args {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Address to listen on (127.0.0.1, 0.0.0.0, a host name).
    pub listen_host: String,
    /// Port to listen on.
    pub listen_port: u16,
    /// Statsd server host:port: send gauges every 10 s and upload counters.
    pub statsd: Option<String>,

    /// Longest accepted file name in bytes (original nodes break above 255).
    #[arg(long, env = "BACKPACK_COORDINATOR_MAX_NAME_LEN", default_value_t = 255)]
    pub max_name_len: usize,
    /// Largest accepted upload (b, kb, mb, gb, tb; 1024-based).
    #[arg(long, env = "BACKPACK_COORDINATOR_MAX_BODY", default_value = "1gb", value_parser = size)]
    pub max_body: u64,
    /// Uploads up to this size are held in memory, larger ones in a temporary file.
    #[arg(long, env = "BACKPACK_COORDINATOR_MEMORY_THRESHOLD", default_value = "1mb", value_parser = size)]
    pub memory_threshold: u64,
    /// Memory for the bodies of all uploads together; beyond it bodies go to temporary files.
    #[arg(long, env = "BACKPACK_COORDINATOR_MEMORY_BUDGET", default_value = "64mb", value_parser = size)]
    pub memory_budget: u64,
    /// Directory of the temporary files (default: the system's temp dir).
    #[arg(long, env = "BACKPACK_COORDINATOR_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Uploads handled at once; one more waits up to --upload-slot-wait-ms
    /// for a slot, then is refused with 503 and Retry-After.
    #[arg(long, env = "BACKPACK_COORDINATOR_MAX_UPLOADS", default_value_t = 1024)]
    pub max_uploads: usize,
    /// Milliseconds an upload waits for one of the --max-uploads slots
    /// before it is refused with 503 and Retry-After.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_UPLOAD_SLOT_WAIT_MS",
        default_value_t = 1000
    )]
    pub upload_slot_wait_ms: u64,
    /// Seconds an upload's body may stall (no byte at all) before it is
    /// refused (408).
    #[arg(long, env = "BACKPACK_COORDINATOR_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout: u64,
    /// Lowest average rate of an upload's body once --body-grace has
    /// passed, per second (b, kb, mb; 0 turns it off): a body must have
    /// arrived by grace + bytes received / rate, or it is refused (408). A
    /// slow link that keeps sending keeps its upload; a trickle does not
    /// hold an upload slot for long.
    #[arg(long, env = "BACKPACK_COORDINATOR_BODY_MIN_RATE", default_value = "1kb", value_parser = size)]
    pub body_min_rate: u64,
    /// Seconds every body is given before --body-min-rate applies.
    #[arg(long, env = "BACKPACK_COORDINATOR_BODY_GRACE", default_value_t = 10)]
    pub body_grace: u64,
    #[command(flatten)]
    pub send: crate::send_floor::SendArgs,
    /// Connections served at once; one more is answered 503 with
    /// Retry-After at once (each takes a file descriptor; the daemon raises
    /// its soft limit to the hard one at start).
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_MAX_CONNECTIONS",
        default_value_t = 8192
    )]
    pub max_connections: usize,
    /// Seconds one write to a storage node may take before the next node is
    /// tried (reads: --node-read-timeout-ms).
    #[arg(long, env = "BACKPACK_COORDINATOR_NODE_TIMEOUT", default_value_t = 60)]
    pub node_timeout: u64,
    /// Milliseconds to connect to a storage node.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_NODE_CONNECT_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub node_connect_timeout_ms: u64,
    /// Milliseconds a read waits for a storage node's answer to begin (its
    /// status line and headers) before the next node is asked; the body then
    /// streams without this bound.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_NODE_READ_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub node_read_timeout_ms: u64,
    /// Milliseconds to wait for a storage node to say which version of a
    /// name it holds, asked before each upload is written to another node
    /// of its shard; without an answer the upload is stored anyway and
    /// counted in /metrics (uploads_unordered_total).
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_NODE_PROBE_TIMEOUT_MS",
        default_value_t = 1000
    )]
    pub node_probe_timeout_ms: u64,
    /// Seconds a node that failed is tried last.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_NODE_RETRY_AFTER",
        default_value_t = 5
    )]
    pub node_retry_after: u64,
    /// Milliseconds between fill-level writes to ZooKeeper.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_FLUSH_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub flush_interval_ms: u64,
    /// Seconds shutdown waits for in-flight uploads.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_SHUTDOWN_TIMEOUT",
        default_value_t = 30
    )]
    pub shutdown_timeout: u64,
    /// Name of this coordinator under <root>/coordinators/ (default: host:port).
    #[arg(long, env = "BACKPACK_COORDINATOR_ANNOUNCE_AS")]
    pub announce_as: Option<String>,
    /// Prefix of statsd metric names (e.g. "backpack.").
    #[arg(long, env = "BACKPACK_COORDINATOR_STATSD_PREFIX", default_value = "")]
    pub statsd_prefix: String,
    /// Seconds between statsd gauge reports.
    #[arg(
        long,
        env = "BACKPACK_COORDINATOR_STATSD_INTERVAL",
        default_value_t = 10
    )]
    pub statsd_interval: u64,
    /// Accept uploads while a queue Redis may evict queued copies
    /// (maxmemory-policy allkeys-*); by default they are refused with 503
    /// until the policy is noeviction.
    #[arg(long, env = "BACKPACK_COORDINATOR_ALLOW_EVICTING_QUEUE")]
    pub allow_evicting_queue: bool,
}

/// The original's usage line, printed (with exit code 1) when arguments
/// are missing.
pub const USAGE: &str = "Usage: backpack-coordinator <zk_servers> </zk/root> <listen_host> <listen_port> [<statsd_host:port>]";

/// Parses the command line like the original: missing arguments print the
/// usage line and give exit code 1 (clap's own errors also exit 1).
pub fn parse() -> Result<Args, i32> {
    use clap::error::ErrorKind::*;
    match Args::try_parse() {
        Ok(a) => Ok(a),
        Err(e) => match e.kind() {
            DisplayHelp | DisplayVersion => {
                let _ = e.print();
                Err(0)
            }
            MissingRequiredArgument | DisplayHelpOnMissingArgumentOrSubcommand => {
                eprintln!("{USAGE}");
                eprintln!("Run with --help for the flags.");
                Err(1)
            }
            _ => {
                let _ = e.print();
                Err(1)
            }
        },
    }
}

impl Args {
    pub fn config(&self) -> CoordinatorConfig {
        let d = CoordinatorConfig::default();
        CoordinatorConfig {
            max_name_len: self.max_name_len,
            max_body: self.max_body,
            memory_threshold: self.memory_threshold,
            memory_budget: self.memory_budget,
            spill_dir: self.spill_dir.clone().unwrap_or(d.spill_dir),
            max_uploads: self.max_uploads,
            upload_slot_wait: Duration::from_millis(self.upload_slot_wait_ms),
            body_timeout: Duration::from_secs(self.body_timeout),
            body_min_rate: self.body_min_rate,
            body_grace: Duration::from_secs(self.body_grace),
            send_rule: self.send.rule(),
            max_connections: self.max_connections,
            node_connect_timeout: Duration::from_millis(self.node_connect_timeout_ms),
            node_timeout: Duration::from_secs(self.node_timeout),
            node_probe_timeout: Duration::from_millis(self.node_probe_timeout_ms),
            node_read_timeout: Duration::from_millis(self.node_read_timeout_ms),
            node_retry_after: Duration::from_secs(self.node_retry_after),
            flush_interval: Duration::from_millis(self.flush_interval_ms.max(10)),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            allow_evicting_queue: self.allow_evicting_queue,
            announce_as: self.announce_as.clone(),
            announce_every: d.announce_every,
            statsd: self.statsd.clone(),
            statsd_prefix: self.statsd_prefix.clone(),
            statsd_every: Duration::from_secs(self.statsd_interval.max(1)),
            queue_check_every: d.queue_check_every,
        }
    }
}

/// The whole command: listen, connect, print the original's two lines once
/// ready, serve until SIGTERM or Ctrl-C.
pub async fn main(args: Args) -> Result<(), CoordinatorError> {
    // A connection to a node (and maybe a spill file) per client connection.
    crate::runtime::raise_fd_limit(2 * args.max_connections as u64 + 256);
    let addr = format!("{}:{}", args.listen_host, args.listen_port);
    // Listen first: a taken port is reported at once.
    let listener = tokio::net::TcpListener::bind((args.listen_host.as_str(), args.listen_port))
        .await
        .map_err(|cause| CoordinatorError::Bind {
            addr: addr.clone(),
            cause,
        })?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(args.listen_port);
    let shutdown = crate::runtime::shutdown_on_signal();
    let coordinator =
        super::start(listener, args.config(), args.zk.config(), shutdown.clone()).await?;
    if coordinator.wait_ready().await {
        // The original's lines, on stdout: scripts wait for them.
        crate::runtime::say("coordinator is ready!");
        crate::runtime::say(&format!("Listening to http://{}:{port}/", args.listen_host));
    }
    coordinator.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn original_arguments() {
        let a = Args::try_parse_from([
            "backpack-coordinator",
            "127.0.0.1:2181",
            "/backpack",
            "two",
            "12002",
            "stats:8125",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.listen_port, 12002);
        assert_eq!(a.statsd.as_deref(), Some("stats:8125"));
        let c = a.config();
        assert_eq!(c.max_name_len, 255);
        assert_eq!(c.max_body, 1 << 30);
        assert!(Args::try_parse_from(["backpack-coordinator", "a:1", "/b", "h"]).is_err());
    }
}
