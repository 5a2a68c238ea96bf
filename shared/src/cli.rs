//! Command-line pieces every command shares (clap derive): the ZooKeeper
//! arguments, flattened into each command, and the size notation of flags.
//!
//! The first two arguments of every command are the original's
//! `<zk_servers> </zk/root>`, positional; the timeouts are flags with
//! environment fallbacks. Old flag spellings stay accepted as aliases:
//! `--zk-timeout` (admin commands, replicator) is `--zk-connect-timeout`
//! (coordinator), and `BACKPACK_ZK_TIMEOUT` is still read when
//! `BACKPACK_ZK_CONNECT_TIMEOUT` is not set.

use std::sync::OnceLock;
use std::time::Duration;

use clap::Args;

use crate::zk::{Zk, ZkConfig, ZkError};

/// The ZooKeeper arguments of every command: `#[command(flatten)]` it
/// first, so its two positional arguments come first, as in the original.
#[derive(Debug, Clone, Args)]
pub struct ZkArgs {
    /// ZooKeeper servers, comma-separated host:port (e.g. one.local:2181,two.local:2181)
    #[arg(value_name = "zk_servers")]
    pub zk_servers: String,
    /// The cluster's root znode (e.g. /backpack), set up by backpack-coordinator-init
    #[arg(value_name = "/zk/root")]
    pub root: String,
    /// Seconds to keep trying to reach ZooKeeper at start before giving up
    /// (BACKPACK_ZK_TIMEOUT, the old name of the variable, is read too)
    #[arg(
        long = "zk-connect-timeout",
        visible_alias = "zk-timeout",
        env = "BACKPACK_ZK_CONNECT_TIMEOUT",
        default_value = connect_timeout_default(),
        value_name = "SECS",
        global = true
    )]
    pub connect_timeout: u64,
    /// ZooKeeper session timeout in seconds: how long ZooKeeper keeps this
    /// command's session (and its locks and announcements) after losing it
    #[arg(
        long = "zk-session-timeout",
        env = "BACKPACK_ZK_SESSION_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        global = true
    )]
    pub session_timeout: u64,
}

/// The old variable's value when set (clap checks it like the flag's),
/// else 10 s.
fn connect_timeout_default() -> &'static str {
    static OLD: OnceLock<Option<String>> = OnceLock::new();
    OLD.get_or_init(|| std::env::var("BACKPACK_ZK_TIMEOUT").ok())
        .as_deref()
        .unwrap_or("10")
}

impl ZkArgs {
    /// Where and how to connect (each timeout at least a second).
    pub fn config(&self) -> ZkConfig {
        let mut c = ZkConfig::new(&self.zk_servers, &self.root);
        c.connect_timeout = Duration::from_secs(self.connect_timeout.max(1));
        c.session_timeout = Duration::from_secs(self.session_timeout.max(1));
        c
    }

    /// Connects and refuses an uninitialized root (naming `init`).
    pub async fn connect_initialized(&self) -> Result<Zk, ZkError> {
        Zk::connect_initialized(self.config()).await
    }
}

/// A size flag's value parser (`value_parser = backpack_shared::cli::size`):
/// [`crate::model::parse_size`]'s notation, the one every size in the
/// cluster is written in (1024-based: `1gb` is 1024³ bytes).
pub fn size(s: &str) -> Result<u64, String> {
    crate::model::parse_size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        zk: ZkArgs,
        /// A positional after the ZooKeeper ones, like the original commands'.
        id: Option<String>,
        #[arg(long, value_parser = size)]
        max: Option<u64>,
    }

    fn parse(args: &[&str]) -> Result<Cmd, clap::Error> {
        Cmd::try_parse_from(std::iter::once("cmd").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_valid() {
        Cmd::command().debug_assert();
    }

    #[test]
    fn positional_arguments_come_first() {
        let c = parse(&["one:2181,two:2181", "/backpack", "7"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.zk.zk_servers, "one:2181,two:2181");
        assert_eq!(c.zk.root, "/backpack");
        assert_eq!(c.id.as_deref(), Some("7"));
        assert!(parse(&["one:2181"]).is_err());
    }

    #[test]
    fn old_and_new_flag_spellings() {
        for flag in ["--zk-connect-timeout", "--zk-timeout"] {
            let c = parse(&["zk:2181", "/b", flag, "3"]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.zk.config().connect_timeout, Duration::from_secs(3));
        }
        let c = parse(&["zk:2181", "/b", "--zk-session-timeout", "0"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.zk.config().session_timeout, Duration::from_secs(1));
        assert!(parse(&["zk:2181", "/b", "--zk-timeout", "soon"]).is_err());
    }

    #[test]
    fn sizes_are_shared_notation() {
        let c = parse(&["zk:2181", "/b", "--max", "1GB"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.max, Some(1 << 30));
        let e = parse(&["zk:2181", "/b", "--max", "lots"]).expect_err("lots is no size");
        assert!(e.to_string().contains("e.g. 100gb"), "{e}");
    }
}
