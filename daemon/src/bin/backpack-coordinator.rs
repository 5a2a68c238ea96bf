//! `backpack-coordinator <zk_servers> </zk/root> <listen_host> <listen_port> [<statsd_host:port>]`:
//! the upload coordinator.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    backpack_daemon::runtime::init_tracing();
    let args = backpack_daemon::coordinator::cli::Args::parse();
    match backpack_daemon::coordinator::cli::main(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backpack-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
