//! Command-line arguments.

use std::path::PathBuf;

use clap::Parser;

/// Watch a backpack cluster live and manage its shards from the keyboard.
///
/// Keys: Tab or 1-5 switch views, ↑↓/j k move, Enter details, / filter,
/// s sort, a add, e enable, d disable, ? help, q quit.
#[derive(Debug, Clone, Parser)]
#[command(name = "backpack-console", version)]
pub struct Args {
    /// ZooKeeper servers, host:port[,host:port...]
    #[arg(env = "BACKPACK_ZK")]
    pub zk_servers: String,
    /// The cluster's root znode, e.g. /backpack
    #[arg(env = "BACKPACK_ROOT")]
    pub root: String,
    /// Watch only: every write key is disabled.
    #[arg(long)]
    pub read_only: bool,
    /// Where to log [default: $XDG_STATE_HOME/backpack-console.log, else
    /// /tmp/backpack-console-$USER.log]
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Log filter (tracing syntax), e.g. debug or backpack_console=debug.
    #[arg(long, default_value = "info", env = "BACKPACK_CONSOLE_LOG")]
    pub log: String,
    /// Seconds between two health checks of one node (at least; spread
    /// wider on large clusters).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub health_every: u64,
    /// Most node health checks started per second.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub health_rate: u32,
}

impl Args {
    pub fn log_path(&self) -> PathBuf {
        if let Some(p) = &self.log_file {
            return p.clone();
        }
        match std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("backpack-console.log"),
            None => {
                let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
                PathBuf::from(format!("/tmp/backpack-console-{user}.log"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }
}
