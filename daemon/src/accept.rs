//! The accept loop of the daemons' HTTP servers, with its shutdown
//! deadline: accept until the shutdown token is cancelled, run each
//! connection as its own task, then give the connections still open until
//! the deadline to finish their requests.
//!
//! What a connection does on shutdown is its own business (the
//! coordinator's hyper connections shut down gracefully, finishing the
//! request in flight); this loop only stops accepting and waits.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `listener` until `shutdown`, running `connection(stream)` as a
/// task per accepted connection; then closes the listener and waits up to
/// `deadline` for those tasks.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: &CancellationToken,
    deadline: Duration,
    mut connection: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small answers go out at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(stream));
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "requests still running at the shutdown deadline; dropping them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[tokio::test]
    async fn serves_until_shutdown_then_waits_up_to_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let served = Arc::new(AtomicUsize::new(0));
        let server = {
            let (shutdown, served) = (shutdown.clone(), served.clone());
            tokio::spawn(async move {
                serve(listener, &shutdown, Duration::from_millis(200), |_stream| {
                    let served = served.clone();
                    async move {
                        served.fetch_add(1, Ordering::SeqCst);
                        // A connection that never finishes by itself.
                        std::future::pending::<()>().await;
                    }
                })
                .await;
            })
        };
        let _a = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _b = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        while served.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = Instant::now();
        shutdown.cancel();
        server.await.unwrap_or_else(|e| panic!("{e}"));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // The listener is closed: nobody accepts any more.
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
