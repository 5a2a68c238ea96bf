//! `backpack-replicator-dead <zk_servers> </zk/root> list|requeue|drop`: the
//! replication queue's dead-letter set. See
//! `backpack_daemon::replicator::dead`.

use backpack_daemon::replicator::dead;
use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    backpack_daemon::runtime::init_tracing_quiet();
    let args = match dead::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind::*;
            let code = match e.kind() {
                DisplayHelp | DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            if code == 1 {
                eprintln!("{}", dead::USAGE);
            }
            return ExitCode::from(code);
        }
    };
    match dead::main(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
