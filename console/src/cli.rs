//! Command-line arguments.

use std::path::PathBuf;

use backpack_shared::cli::ZkArgs;
use clap::{CommandFactory, FromArgMatches, Parser};

/// Watch a backpack cluster live and manage its shards from the keyboard.
///
/// Keys: Tab or 1-5 switch views, ↑↓/j k move, Enter details, / filter,
/// s sort, a add, e enable, d disable, ? help, q quit.
#[derive(Debug, Clone, Parser)]
#[command(name = "backpack-console", version)]
pub struct Args {
    /// `<zk_servers> </zk/root>` (also from BACKPACK_ZK and BACKPACK_ROOT,
    /// see [`Args::command_with_env`]) and the ZooKeeper timeouts.
    #[command(flatten)]
    pub zk: ZkArgs,
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
    /// The command line with the console's environment fallbacks for its
    /// two arguments: `BACKPACK_ZK` and `BACKPACK_ROOT`. Only the console
    /// reads them: the other commands take more positional arguments after
    /// these two, which a missing first one would shift.
    pub fn command_with_env() -> clap::Command {
        Args::command()
            .mut_arg("zk_servers", |a| a.env("BACKPACK_ZK"))
            .mut_arg("root", |a| a.env("BACKPACK_ROOT"))
    }

    /// Parses the process's arguments; exits on an error or `--help`, as
    /// `Parser::parse` does.
    pub fn parse_with_env() -> Args {
        Args::from_arg_matches(&Args::command_with_env().get_matches()).unwrap_or_else(|e| e.exit())
    }

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
        Args::command_with_env().debug_assert();
    }

    #[test]
    fn zookeeper_arguments_fall_back_on_the_environment() {
        let cmd = Args::command_with_env();
        let env = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(env("zk_servers").as_deref(), Some("BACKPACK_ZK"));
        assert_eq!(env("root").as_deref(), Some("BACKPACK_ROOT"));
    }
}
