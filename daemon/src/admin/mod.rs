//! The admin commands, with the original's names, positional arguments and
//! output, so existing scripts keep working. Each binary in `src/bin` is
//! `admin::main::<Command>()`.
//!
//! Behaviour every command shares:
//! - too few arguments: the original's usage line on stderr, exit 1;
//!   `--help` exits 0;
//! - errors: one line `error: ...` naming the problem and the fix, exit 1,
//!   no backtrace; nothing half-written (map changes go through
//!   [`backpack_shared::zk::Zk::apply`]);
//! - ZooKeeper unreachable: give up after `--zk-connect-timeout` (alias
//!   `--zk-timeout`) seconds; every request is bounded by the same time
//!   (at most 10 s).

/// Prints a line on stdout; a closed pipe (`| head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
    }};
}

mod check;
mod commands;

use std::time::Duration;

use clap::Parser;

pub use check::{CheckShard, ReplaceServer};
pub use commands::{
    AddServer, AddShard, DisableShard, DumpShards, EnableShard, Init, NginxConfig, PrintStats,
    RemoveServer, ReplicatorPush, SetQueue, nginx_config,
};

pub use backpack_shared::cli::ZkArgs;
use backpack_shared::zk::{Zk, ZkConfig};

/// An admin command's connection settings: a one-shot command waits on
/// each request as long as it waits to connect (at most 10 s).
fn zk_config(args: &ZkArgs) -> ZkConfig {
    let mut c = args.config();
    c.request_timeout = Duration::from_secs(args.connect_timeout.clamp(1, 10));
    c
}

/// Connects and refuses an uninitialized root (naming `init`).
async fn connect(args: &ZkArgs) -> anyhow::Result<Zk> {
    Ok(Zk::connect_initialized(zk_config(args)).await?)
}

/// A check found a shard not whole (exit status 2; the report says how).
#[derive(Debug, thiserror::Error)]
#[error("not every shard is whole")]
pub struct NotWhole;

/// An admin command: a clap parser with the original's usage line.
pub trait AdminCommand: Parser {
    /// The original's usage line, printed when arguments are missing.
    const USAGE: &'static str;
    fn run(self) -> impl std::future::Future<Output = anyhow::Result<()>>;
}

/// Parses the arguments, runs the command, and exits as the original does.
pub fn main<C: AdminCommand>() {
    crate::runtime::init_tracing_quiet();
    let code = match C::try_parse() {
        Ok(cmd) => run_to_exit(cmd),
        Err(e) => usage_error::<C>(e),
    };
    std::process::exit(code);
}

fn usage_error<C: AdminCommand>(e: clap::Error) -> i32 {
    use clap::error::ErrorKind::*;
    match e.kind() {
        DisplayHelp | DisplayVersion => {
            let _ = e.print();
            0
        }
        MissingRequiredArgument | DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("{}", C::USAGE);
            eprintln!("Run with --help for details.");
            1
        }
        _ => {
            let _ = e.print();
            eprintln!("{}", C::USAGE);
            1
        }
    }
}

fn run_to_exit<C: AdminCommand>(cmd: C) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(cmd.run()) {
        Ok(()) => 0,
        // Said in the command's own report.
        Err(e) if e.is::<NotWhole>() => 2,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            1
        }
    }
}

/// The error and its causes on one line.
fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
