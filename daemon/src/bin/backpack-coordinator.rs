//! `backpack-coordinator <zk_servers> </zk/root> <listen_host> <listen_port> [<statsd_host:port>]`:
//! the upload coordinator. See `backpack_daemon::coordinator`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    backpack_daemon::runtime::init_tracing();
    let args = match backpack_daemon::coordinator::cli::parse() {
        Ok(a) => a,
        Err(code) => return ExitCode::from(code as u8),
    };
    match backpack_daemon::coordinator::cli::main(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backpack-coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
