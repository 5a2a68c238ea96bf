//! What every daemon binary shares: logging set-up and the shutdown signal.
//!
//! Library entry points take a [`CancellationToken`] as their shutdown; only
//! `main` turns SIGTERM / Ctrl-C into a cancellation, through
//! [`shutdown_on_signal`].

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so a
/// supervisor (systemd, the local cluster script) collects them; coloured
/// only on a terminal (never in a log file), and never with `NO_COLOR`.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        // Its own report of a failed write is an eprintln!, which panics
        // when stderr is a broken pipe: the task that logged (the signal
        // handler, say) would die with it.
        .log_internal_errors(false)
        .try_init();
}

/// Prints a line on stdout for whoever started the daemon (the original's
/// "ready" lines); a closed stdout is not an error (println! would panic).
pub fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Whether stderr is a terminal and `NO_COLOR` is unset.
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// For the admin commands: their output is the original's lines, so only
/// warnings and errors are logged (to stderr), unless `RUST_LOG` says more.
pub fn init_tracing_quiet() {
    init_tracing_filtered("warn");
}

/// Logs to stderr without timestamps, filtered by `RUST_LOG` or else by
/// `default` (an `EnvFilter` directive such as `warn,zookeeper_client=error`).
pub fn init_tracing_filtered(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .without_time()
        .log_internal_errors(false)
        .try_init();
}

/// Raises the soft limit on open files to the hard limit (systemd's
/// default soft limit is 1024, below a daemon's connection cap) and
/// returns it; logs when it stays below `want`.
pub fn raise_fd_limit(want: u64) -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    if let Some(n) = now
        && n < want
    {
        tracing::warn!(
            limit = n,
            want,
            "the open files limit is below what the connection cap needs; raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower --max-connections"
        );
    }
    now
}

/// Returns a token cancelled on the first SIGTERM or SIGINT. A second
/// signal exits at once (exit code 130), for an operator who does not want
/// to wait for the graceful path.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, finishing in-flight work");
        child.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal, exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Cannot install handlers (should not happen on Unix): fall back to Ctrl-C.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
