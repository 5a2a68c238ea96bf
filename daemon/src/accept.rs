//! The accept loop of the daemons' HTTP servers, with its shutdown
//! deadline: accept until the shutdown token is cancelled, run each
//! connection as its own task, then give the connections still open until
//! the deadline to finish their requests.
//!
//! What a connection does on shutdown is its own business (hyper
//! connections shut down gracefully, finishing the request in flight);
//! this loop only stops accepting and waits.
//!
//! At most [`Limit::max`] connections are served at once: one more is
//! answered `503` with a JSON error and `Retry-After` at once and closed
//! (counted in [`Limit::refused`]), so a flood of idle or slow clients
//! cannot take every file descriptor of the daemon.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The cap on connections served at once, and the count of those refused.
#[derive(Debug, Clone)]
pub struct Limit {
    pub max: usize,
    pub refused: Arc<AtomicU64>,
}

impl Limit {
    pub fn new(max: usize) -> Limit {
        Limit {
            max: max.max(1),
            refused: Arc::default(),
        }
    }
}

/// Serves `listener` until `shutdown`, running `connection(stream)` as a
/// task per accepted connection (within `limit`); then closes the listener
/// and waits up to `deadline` for those tasks.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    shutdown: &CancellationToken,
    deadline: Duration,
    limit: &Limit,
    mut connection: F,
) where
    F: FnMut(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let mut failed_accepts: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically out of file descriptors: back off, keep serving,
                // and say so once in a while, not 20 times a second.
                failed_accepts += 1;
                if failed_accepts.is_power_of_two() {
                    tracing::warn!(error = %e, failed_accepts, "accept failed (out of file descriptors? raise the open files limit or lower --max-connections)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small answers go out at once, not after Nagle's delay.
        let _ = stream.set_nodelay(true);
        if tracker.len() >= limit.max {
            let n = limit.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    max = limit.max,
                    refused = n,
                    "connection refused: --max-connections are open"
                );
            }
            // Not tracked: shutdown does not wait for these.
            tokio::spawn(refuse(stream, limit.max));
            continue;
        }
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

/// Answers 503 before reading the request, then reads what the client
/// sent for a moment (closing with unread input would reset the
/// connection, and the client might never see the answer).
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        "{}\n",
        serde_json::json!({
            "error": format!("this server has its {max} connections open (--max-connections); retry in a moment")
        })
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
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
                serve(
                    listener,
                    &shutdown,
                    Duration::from_millis(200),
                    &Limit::new(10),
                    |_stream| {
                        let served = served.clone();
                        async move {
                            served.fetch_add(1, Ordering::SeqCst);
                            // A connection that never finishes by itself.
                            std::future::pending::<()>().await;
                        }
                    },
                )
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

    #[tokio::test]
    async fn a_connection_over_the_limit_gets_503_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shutdown = CancellationToken::new();
        let limit = Limit::new(2);
        let server = {
            let (shutdown, limit) = (shutdown.clone(), limit.clone());
            tokio::spawn(async move {
                serve(
                    listener,
                    &shutdown,
                    Duration::from_millis(100),
                    &limit,
                    |_s| std::future::pending::<()>(),
                )
                .await;
            })
        };
        let _held: Vec<TcpStream> =
            futures::future::join_all((0..2).map(|_| TcpStream::connect(addr)))
                .await
                .into_iter()
                .map(|s| s.unwrap_or_else(|e| panic!("{e}")))
                .collect();
        let mut third = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        third
            .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = String::new();
        third
            .read_to_string(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        assert!(got.contains("retry-after: 1"), "{got}");
        assert!(got.contains("--max-connections"), "{got}");
        assert_eq!(limit.refused.load(Ordering::Relaxed), 1);
        shutdown.cancel();
        server.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
