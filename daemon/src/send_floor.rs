//! A floor under the rate at which a client takes what we send.
//!
//! A client that reads a download a byte at a time holds its connection,
//! its task and (on the coordinator's read path) a node's connection for
//! as long as it likes: hyper writes only as fast as the socket drains
//! and has no rule of its own. [`SendFloor`] wraps the socket and measures
//! the client only while the client is the bottleneck: a *backlog* starts
//! when a write finds the socket full and lasts while every following
//! write has to wait too; it ends as soon as a write goes through without
//! waiting. During a backlog the client must take `min_rate` bytes/s on
//! average after a grace period: the backlog fails at
//! `start + grace + bytes_taken / min_rate` (the rule of Apache's
//! mod_reqtimeout `MinRate`, applied to the sending side), and the write
//! then ends with `TimedOut`, which closes the connection.
//!
//! Time spent waiting for something to send (a slow node upstream, an idle
//! keep-alive) never counts against the client: no write is pending then.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The floor: `min_rate` bytes/s after `grace` (`min_rate` 0: no floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRule {
    pub min_rate: u64,
    pub grace: Duration,
}

impl SendRule {
    /// The defaults of every daemon's `--send-min-rate` and `--send-grace`.
    pub const DEFAULT: SendRule = SendRule {
        min_rate: 1024,
        grace: Duration::from_secs(10),
    };
}

/// `--send-min-rate` and `--send-grace`, shared by the daemons that serve
/// downloads (coordinator, node).
#[derive(Debug, Clone, clap::Args)]
pub struct SendArgs {
    /// Lowest rate, per second (b, kb, mb; 0 turns it off), at which a
    /// client must take an answer while it is the bottleneck, once
    /// --send-grace has passed; a slower reader's connection is closed
    /// (counted as slow_readers_cut in /stats).
    #[arg(long, env = "BACKPACK_SEND_MIN_RATE", default_value = "1kb", value_parser = backpack_shared::cli::size)]
    pub send_min_rate: u64,
    /// Seconds a client that stops reading is given before --send-min-rate
    /// applies.
    #[arg(long, env = "BACKPACK_SEND_GRACE", default_value_t = 10)]
    pub send_grace: u64,
}

impl SendArgs {
    pub fn rule(&self) -> SendRule {
        SendRule {
            min_rate: self.send_min_rate,
            grace: Duration::from_secs(self.send_grace),
        }
    }
}

/// A socket whose writes fail once its reader falls under a [`SendRule`].
pub struct SendFloor<S> {
    inner: S,
    rule: SendRule,
    /// Start of the current backlog and the bytes taken since.
    backlog: Option<(Instant, u64)>,
    /// The last write had to wait.
    waited: bool,
    timer: Option<Pin<Box<Sleep>>>,
    /// Counts the connections cut.
    cut: Arc<AtomicU64>,
}

impl<S> SendFloor<S> {
    pub fn new(inner: S, rule: SendRule, cut: Arc<AtomicU64>) -> SendFloor<S> {
        SendFloor {
            inner,
            rule,
            backlog: None,
            waited: false,
            timer: None,
            cut,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn deadline(&self) -> Option<Instant> {
        let (start, taken) = self.backlog?;
        (self.rule.min_rate > 0).then(|| {
            start
                + self.rule.grace
                + Duration::from_secs_f64(taken as f64 / self.rule.min_rate as f64)
        })
    }

    fn too_slow(&mut self) -> io::Error {
        self.cut.fetch_add(1, Ordering::Relaxed);
        let (start, taken) = self.backlog.unwrap_or((Instant::now(), 0));
        tracing::info!(
            taken,
            secs = start.elapsed().as_secs(),
            min_rate = self.rule.min_rate,
            "closing a connection whose client reads slower than --send-min-rate"
        );
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client took {taken} bytes in {} s, under {} bytes/s",
                start.elapsed().as_secs(),
                self.rule.min_rate
            ),
        )
    }
}

impl<S: AsyncWrite + Unpin> SendFloor<S> {
    fn write_with(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Ok(n)) => {
                let n64 = n as u64;
                if self.waited {
                    if let Some((_, taken)) = &mut self.backlog {
                        *taken += n64;
                    }
                } else {
                    // Went through at once: the client keeps up.
                    self.backlog = None;
                    self.timer = None;
                }
                self.waited = false;
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                self.waited = true;
                let now = Instant::now();
                self.backlog.get_or_insert((now, 0));
                let Some(deadline) = self.deadline() else {
                    return Poll::Pending;
                };
                if now >= deadline {
                    return Poll::Ready(Err(self.too_slow()));
                }
                // Woken at the deadline to judge the backlog again.
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(self.too_slow()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendFloor<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendFloor<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A socket's flush is immediate: it says nothing of the reader.
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RULE: SendRule = SendRule {
        min_rate: 64 * 1024,
        grace: Duration::from_millis(300),
    };

    /// A pipe whose far end reads `per_tick` bytes every 10 ms.
    async fn send_to_reader(per_tick: usize, total: usize) -> (io::Result<()>, u64, Duration) {
        let (near, mut far) = tokio::io::duplex(16 * 1024);
        let cut = Arc::new(AtomicU64::new(0));
        let mut w = SendFloor::new(near, RULE, cut.clone());
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; per_tick];
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        });
        let data = vec![7u8; total];
        let started = Instant::now();
        let r = w.write_all(&data).await;
        let took = started.elapsed();
        drop(w);
        reader.abort();
        (r, cut.load(Ordering::Relaxed), took)
    }

    #[tokio::test]
    async fn a_reader_above_the_floor_gets_everything() {
        // 8 KB per 10 ms = 800 KB/s, well over 64 KB/s.
        let (r, cut, _) = send_to_reader(8 * 1024, 1 << 20).await;
        r.unwrap();
        assert_eq!(cut, 0);
    }

    #[tokio::test]
    async fn a_trickling_reader_is_cut_after_the_grace() {
        // 16 bytes per 10 ms = 1.6 KB/s: under the floor.
        let (r, cut, took) = send_to_reader(16, 1 << 20).await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert_eq!(cut, 1);
        // Cut at the grace (the backlog took a few KB), not much later.
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[tokio::test]
    async fn waiting_for_something_to_send_does_not_count() {
        let (near, mut far) = tokio::io::duplex(1024);
        let cut = Arc::new(AtomicU64::new(0));
        let mut w = SendFloor::new(near, RULE, cut.clone());
        // Idle far longer than the grace between writes that go through.
        for _ in 0..3 {
            w.write_all(b"hello").await.unwrap();
            let mut got = [0u8; 5];
            far.read_exact(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        assert_eq!(cut.load(Ordering::Relaxed), 0);
    }
}
