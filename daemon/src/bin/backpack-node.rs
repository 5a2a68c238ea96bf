//! `backpack-node <data_dir> <listen_host> <listen_port>`: the storage node.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    backpack_daemon::runtime::init_tracing();
    let args = backpack_daemon::node::cli::Args::parse();
    match backpack_daemon::node::cli::main(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backpack-node: {e}");
            ExitCode::FAILURE
        }
    }
}
