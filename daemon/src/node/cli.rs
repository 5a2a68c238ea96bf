//! Command line of `backpack-node`.

use super::{NodeConfig, NodeError};
use backpack_shared::cli::size;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// backpack storage node: keeps files in append-only volume files and
/// serves them over HTTP (PUT, GET, HEAD /<name>; GET /stats).
#[derive(Debug, Parser)]
#[command(name = "backpack-node", version)]
pub struct Args {
    /// Directory of the volume files; must exist and be writable.
    pub data_dir: PathBuf,
    /// Address to listen on (127.0.0.1, 0.0.0.0, ::1, a host name).
    pub listen_host: String,
    /// Port to listen on.
    pub listen_port: u16,
    /// Largest accepted upload (b, kb, mb, gb, tb; 1024-based).
    #[arg(long, env = "BACKPACK_NODE_MAX_BODY", default_value = "1gb", value_parser = size)]
    pub max_body: u64,
    /// Size at which a volume file is closed and the next one started (b,
    /// kb, mb, gb, tb; 1024-based).
    #[arg(long, env = "BACKPACK_NODE_VOLUME_SIZE", default_value = "4gb", value_parser = size)]
    pub volume_size: u64,
    /// Seconds an upload's body may stall before the node answers 408.
    #[arg(long, env = "BACKPACK_NODE_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout: u64,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, env = "BACKPACK_NODE_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Seconds a request head may take to arrive whole, counted from the
    /// connection's start or its previous answer (so also how long an idle
    /// kept-alive connection stays open); the connection is then closed.
    /// Keep it above the pool idle time of the clients (coordinators and
    /// replicators keep idle connections 10 s).
    #[arg(long, env = "BACKPACK_NODE_HEAD_TIMEOUT", default_value_t = 20)]
    pub head_timeout: u64,
    /// Connections served at once; one more is answered 503 with
    /// Retry-After at once (each takes a file descriptor; the node raises
    /// its soft limit to the hard one at start).
    #[arg(long, env = "BACKPACK_NODE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Most the background scrub reads to verify every stored record's
    /// checksum, in MB/s (1 MB = 1,048,576 bytes; fractions allowed); 0
    /// turns it off. A damaged current copy leaves the index (GET 404) and
    /// is counted in /stats (`scrub`).
    #[arg(long, env = "BACKPACK_NODE_SCRUB_RATE", default_value = "20", value_parser = mb_per_sec)]
    pub scrub_rate: u64,
    #[command(flatten)]
    pub send: crate::send_floor::SendArgs,
}

/// A rate in MB/s (1024-based, like the sizes) as bytes per second.
fn mb_per_sec(s: &str) -> Result<u64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok((r * (1u64 << 20) as f64) as u64),
        _ => Err(format!(
            "{s:?} is not a rate in MB/s; give a number such as 20, 0.5, or 0 to turn the scrub off"
        )),
    }
}

impl Args {
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            data_dir: self.data_dir.clone(),
            max_body: self.max_body,
            volume_size: self.volume_size,
            body_timeout: Duration::from_secs(self.body_timeout),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            head_timeout: Duration::from_secs(self.head_timeout.max(1)),
            max_connections: self.max_connections,
            send_rule: self.send.rule(),
            scrub_rate: self.scrub_rate,
        }
    }
}

/// The whole `backpack-node` command: open the store, listen, serve until
/// SIGTERM or Ctrl-C.
pub async fn main(args: Args) -> Result<(), NodeError> {
    let config = args.config();
    // Connections, volumes and the index's files, with room to spare.
    crate::runtime::raise_fd_limit(config.max_connections as u64 + 256);
    let store = super::open_store(&config).await?;
    let addr = format!("{}:{}", args.listen_host, args.listen_port);
    let listener = tokio::net::TcpListener::bind((args.listen_host.as_str(), args.listen_port))
        .await
        .map_err(|cause| NodeError::Bind { addr, cause })?;
    let shutdown = crate::runtime::shutdown_on_signal();
    super::serve(listener, store, &config, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_valid() {
        Args::command().debug_assert();
    }

    /// Sizes are the project's notation (`shared::cli::size`,
    /// 1024-based), and the defaults are `NodeConfig`'s.
    #[test]
    fn sizes() {
        fn check(extra: &[&str], max_body: u64, volume_size: u64) {
            let args = ["backpack-node", "/data", "127.0.0.1", "10001"];
            let a = Args::try_parse_from(args.iter().chain(extra)).unwrap();
            assert_eq!(
                (a.max_body, a.volume_size),
                (max_body, volume_size),
                "{extra:?}"
            );
        }
        let defaults = NodeConfig::new("/data");
        check(&[], defaults.max_body, defaults.volume_size);
        check(&["--max-body", "1GB"], 1 << 30, 4 << 30);
        check(
            &["--max-body", "100kb", "--volume-size", "1.5gb"],
            102_400,
            3 << 29,
        );
        let bad =
            Args::try_parse_from(["backpack-node", "/d", "h", "1", "--max-body", "10 parsecs"]);
        assert!(bad.is_err());
    }

    #[test]
    fn scrub_rate_is_mb_per_second() {
        fn check(extra: &[&str], expected: Option<u64>) {
            let args = ["backpack-node", "/data", "127.0.0.1", "10001"];
            let got = Args::try_parse_from(args.iter().chain(extra)).map(|a| a.config().scrub_rate);
            assert_eq!(got.ok(), expected, "{extra:?}");
        }
        check(&[], Some(NodeConfig::new("/d").scrub_rate));
        check(&["--scrub-rate", "20"], Some(20 << 20));
        check(&["--scrub-rate", "0.5"], Some(1 << 19));
        check(&["--scrub-rate", "0"], Some(0));
        check(&["--scrub-rate", "-1"], None);
        check(&["--scrub-rate", "fast"], None);
    }
}
