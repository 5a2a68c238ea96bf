//! `backpack-replicator <zk_servers> </zk/root> [concurrency]`: copies queued
//! files to every node of their shard. See `backpack_daemon::replicator`.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    backpack_daemon::runtime::init_tracing();
    let args = backpack_daemon::replicator::cli::Args::parse();
    match backpack_daemon::replicator::cli::main(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backpack-replicator: {e:#}");
            ExitCode::FAILURE
        }
    }
}
