//! Command line of `backpack-node`.

use super::{NodeConfig, NodeError};
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
    /// Largest accepted upload: bytes, or with a unit (512MiB, 2GB).
    #[arg(long, env = "BACKPACK_NODE_MAX_BODY", default_value = "1GiB", value_parser = parse_size)]
    pub max_body: u64,
    /// Size at which a volume file is closed and the next one started.
    #[arg(long, env = "BACKPACK_NODE_VOLUME_SIZE", default_value = "4GiB", value_parser = parse_size)]
    pub volume_size: u64,
    /// Seconds an upload's body may stall before the node answers 408.
    #[arg(long, env = "BACKPACK_NODE_BODY_TIMEOUT", default_value_t = 60)]
    pub body_timeout: u64,
    /// Seconds shutdown waits for in-flight requests.
    #[arg(long, env = "BACKPACK_NODE_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
}

impl Args {
    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            data_dir: self.data_dir.clone(),
            max_body: self.max_body,
            volume_size: self.volume_size,
            body_timeout: Duration::from_secs(self.body_timeout),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
        }
    }
}

/// Parses `123`, `100KB`, `1.5GiB` (k/M/G/T: powers of 1000; Ki/Mi/Gi/Ti:
/// powers of 1024; a trailing B is optional).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = unit.strip_suffix(['B', 'b']).unwrap_or(unit);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1000,
        "m" => 1000_u64.pow(2),
        "g" => 1000_u64.pow(3),
        "t" => 1000_u64.pow(4),
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown size unit in {s:?}; use e.g. 1048576, 512MiB, 2GB"
            ));
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 1048576, 512MiB, 2GB"))?;
    Ok((n * mult as f64).round() as u64)
}

/// The whole `backpack-node` command: open the store, listen, serve until
/// SIGTERM or Ctrl-C.
pub async fn main(args: Args) -> Result<(), NodeError> {
    let config = args.config();
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
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn sizes() {
        fn check(s: &str, expected: Option<u64>) {
            assert_eq!(parse_size(s).ok(), expected, "{s}");
        }
        check("123", Some(123));
        check("100KB", Some(100_000));
        check("1GiB", Some(1 << 30));
        check("1.5 MiB", Some(1_572_864));
        check("4gi", Some(4 << 30));
        check("10 parsecs", None);
        check("", None);
    }
}
