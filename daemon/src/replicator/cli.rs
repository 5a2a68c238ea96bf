//! Command line of `backpack-replicator`.

use std::time::Duration;

use anyhow::Context as _;
use backpack_shared::cli::ZkArgs;
use clap::Parser;

use super::{Replicator, ReplicatorConfig};

/// backpack replicator: copies every file the coordinators queued to the
/// nodes of its shard that lack it, streaming GET from a node that has it
/// into PUT on the one that does not. Run as many as the load needs.
#[derive(Debug, Parser)]
#[command(name = "backpack-replicator", version)]
pub struct Args {
    #[command(flatten)]
    pub zk: ZkArgs,
    /// Copies running at once
    #[arg(default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub concurrency: u16,
    /// Failed attempts after which a task whose file is on none of its
    /// source nodes (404 everywhere) moves to the dead-letter set (see
    /// backpack-replicator-dead); 0 turns dead letters off entirely
    #[arg(long, env = "BACKPACK_REPLICATOR_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u64,
    /// How long a task that fails for reasons that can heal (a node down or
    /// unreachable) keeps being retried, counted from when it was first
    /// queued: a number with s, m, h or d (e.g. 90m, 24h)
    #[arg(
        long,
        env = "BACKPACK_REPLICATOR_MAX_AGE",
        default_value = "24h",
        value_parser = parse_age,
        value_name = "AGE"
    )]
    pub max_age: Duration,
    /// Serve Prometheus metrics on http://<host:port>/metrics
    #[arg(
        long,
        env = "BACKPACK_REPLICATOR_METRICS_LISTEN",
        value_name = "HOST:PORT"
    )]
    pub metrics_listen: Option<String>,
    /// Seconds shutdown (SIGTERM) lets in-flight copies finish before it
    /// cuts them and releases their locks
    #[arg(
        long,
        env = "BACKPACK_REPLICATOR_SHUTDOWN_DEADLINE",
        default_value_t = 30,
        value_name = "SECS"
    )]
    pub shutdown_deadline: u64,
    /// How often every shard is checked (every node holds every file at
    /// its newest version) and repaired, by the one replicator elected
    /// for it; a number with s, m, h or d; 0 checks only on request (the
    /// console's check keys)
    #[arg(
        long,
        env = "BACKPACK_REPLICATOR_CHECK_INTERVAL",
        default_value = "24h",
        value_parser = parse_age,
        value_name = "AGE"
    )]
    pub check_interval: Duration,
    /// Never take part in the checks' election
    #[arg(long, env = "BACKPACK_REPLICATOR_NO_CHECKS")]
    pub no_checks: bool,
}

/// `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an age; write a number with s, m, h or d, like 24h"))?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?}; use s, m, h or d, like 24h"
            ));
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

impl Args {
    pub fn config(&self) -> ReplicatorConfig {
        let mut c = ReplicatorConfig::new(usize::from(self.concurrency));
        c.max_attempts = self.max_attempts;
        c.max_age = self.max_age;
        c.shutdown_deadline = Duration::from_secs(self.shutdown_deadline);
        c.checker = (!self.no_checks).then(|| super::checker::CheckerConfig {
            interval: self.check_interval,
            ..Default::default()
        });
        c
    }
}

/// The whole command: connect, say ready, run until SIGTERM or Ctrl-C.
pub async fn main(args: Args) -> anyhow::Result<()> {
    let zk = args.zk.connect_initialized().await?;
    let mut replicator = Replicator::new(args.config(), zk);
    if let Some(addr) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .with_context(|| {
                format!("cannot listen on {addr} for --metrics-listen; give a free host:port")
            })?;
        replicator = replicator.with_metrics(listener);
    }
    crate::runtime::say("Replicator is ready!");
    let started = replicator.started();
    tokio::spawn(async move {
        started.cancelled().await;
        crate::runtime::say("Replicator started!");
    });
    let shutdown = crate::runtime::shutdown_on_signal();
    replicator.run(shutdown).await;
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
        let a = Args::try_parse_from(["backpack-replicator", "zk:2181", "/backpack"]);
        assert!(matches!(a, Ok(ref a) if a.concurrency == 1 && a.config().concurrency == 1));
        let a = Args::try_parse_from(["backpack-replicator", "zk:2181", "/backpack", "16"]);
        assert!(matches!(a, Ok(ref a) if a.config().concurrency == 16));
        let a = Args::try_parse_from(["backpack-replicator", "zk:2181", "/backpack", "0"]);
        assert!(a.is_err());
        let a = Args::try_parse_from(["backpack-replicator", "zk:2181"]);
        assert!(a.is_err());
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_age("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_age("45"), Ok(Duration::from_secs(45)));
        assert!(parse_age("1w").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_age("soon").is_err_and(|e| e.contains("like 24h")));
        let a = Args::try_parse_from(["backpack-replicator", "zk", "/b", "--max-age", "3h"]);
        assert!(matches!(a, Ok(ref a) if a.config().max_age == Duration::from_secs(3 * 3600)));
    }
}
