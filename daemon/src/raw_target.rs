//! The request target exactly as the client sent it, before hyper parses it.
//!
//! hyper hands the service an `http::Uri`: a `#` and what follows are cut
//! off as a fragment (so `/photo#1.jpg` and `/photo#2.jpg` would both reach
//! us as `/photo`), and a target it cannot parse (raw bytes from 0x80,
//! `<`, a space) is answered `400` with an empty body before our code
//! runs. A file's name is the target's bytes, so [`RawTargets`] sits
//! between the socket and hyper and sees every request head first: it
//! keeps the target's bytes and overwrites them, in hyper's own read
//! buffer, with a placeholder of the same length (`/aaaa`) that hyper
//! always accepts. HTTP/1.1 answers requests in order, so the service
//! takes the raw targets in order ([`Lines::take`], which also checks the
//! placeholder's length) and judges them itself: every refusal is ours,
//! with its JSON error.
//!
//! Bytes are read straight into hyper's buffer (no copy, no extra read);
//! only a head split across reads is held back until it is whole. To find
//! the next head it follows the framing: Content-Length bytes of body pass
//! through. A request with Transfer-Encoding (which the API refuses
//! anyway) ends the watch: its answer closes the connection. A head that
//! cannot be read (no three-part request line, a header hyper would refuse,
//! over [`MAX_HEAD`] bytes) is replaced by a bodiless stand-in whose answer
//! is our 400 (or 431) and closes the connection; nothing after it is read.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// The largest Content-Length hyper accepts (its `DecodedLength::MAX_LEN`).
const HYPER_MAX_LENGTH: u64 = u64::MAX - 2;
/// Room made for each read while a head is held back.
const READ_CHUNK: usize = 4 * 1024;

/// What the service learns about one request from its raw head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// The request target's bytes, as sent.
    pub target: Vec<u8>,
    /// The connection must close after this answer (the framing after it
    /// is not followed).
    pub close: bool,
    /// Why the head is refused as a whole (it was replaced by a stand-in).
    pub refused: Option<HeadError>,
    /// Length of the placeholder target hyper was given for it.
    placeholder: usize,
}

/// A request head the coordinator cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error(
        "the request line must be `METHOD /<name> HTTP/1.1`, three parts separated by single spaces (a space in a file name is sent percent-encoded as %20)"
    )]
    RequestLine,
    #[error(
        "the request line and headers are over {MAX_HEAD} bytes; send shorter headers (a file name is at most 255 bytes by default)"
    )]
    TooLarge,
    #[error("malformed request head: {0}")]
    Malformed(String),
    #[error(
        "a Content-Length of {0} bytes is over anything this server takes (its --max-body sets the limit)"
    )]
    LengthTooLarge(u64),
}

/// The raw heads of one connection's requests, in order.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Mutex<VecDeque<RawRequest>>,
}

impl Lines {
    /// The raw head of the next request, whose target hyper parsed as
    /// `hyper_target`; `None` when that is not its placeholder (never,
    /// unless the framing was lost).
    pub fn take(&self, hyper_target: &str) -> Option<RawRequest> {
        let next = self.lock().pop_front()?;
        let ours = hyper_target.len() == next.placeholder
            && hyper_target.starts_with('/')
            && hyper_target.bytes().skip(1).all(|b| b == b'a');
        ours.then_some(next)
    }

    fn put(&self, req: RawRequest) {
        self.lock().push_back(req);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RawRequest>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a request head.
    Head,
    /// This many body bytes still to pass through.
    Body(u64),
    /// Framing not followed any more: bytes pass through untouched (the
    /// request's answer closes the connection).
    Through,
    /// After a stand-in: no more bytes for hyper.
    Ended,
}

/// The connection's read side, watched; writes go straight through.
pub struct RawTargets<S> {
    inner: S,
    lines: Arc<Lines>,
    state: State,
    /// A head begun but not complete, held back from hyper.
    held: BytesMut,
    /// Bytes for hyper before anything else (a held head once whole, with
    /// what followed it, or a stand-in).
    out: Bytes,
}

impl<S> RawTargets<S> {
    pub fn new(inner: S) -> (RawTargets<S>, Arc<Lines>) {
        let lines = Arc::new(Lines::default());
        let me = RawTargets {
            inner,
            lines: lines.clone(),
            state: State::Head,
            held: BytesMut::new(),
            out: Bytes::new(),
        };
        (me, lines)
    }

    /// Walks `bytes` (just read, about to reach hyper): passes bodies,
    /// rewrites whole heads in place. Returns how many bytes hyper may
    /// have; the rest is an unfinished head to hold back, or, after a
    /// refused head (state `Ended`, stand-in in `out`), to drop.
    fn scan(&mut self, bytes: &mut [u8]) -> usize {
        let mut at = 0;
        loop {
            match self.state {
                State::Through => return bytes.len(),
                State::Ended => return at,
                State::Body(left) => {
                    let n = ((bytes.len() - at) as u64).min(left);
                    at += n as usize;
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Body(left - n)
                    };
                    if at == bytes.len() {
                        return at;
                    }
                }
                State::Head => {
                    // Blank lines before a request are allowed (RFC 9112
                    // 2.2); hyper skips them too.
                    while at < bytes.len() && matches!(bytes[at], b'\r' | b'\n') {
                        at += 1;
                    }
                    let rest = &mut bytes[at..];
                    if rest.is_empty() {
                        return at;
                    }
                    let complete = head_len(rest);
                    let Some(len) = complete.filter(|&len| len <= MAX_HEAD) else {
                        // Unfinished, or finished but too large (it may
                        // have arrived in one read): refused either way
                        // once over the limit.
                        if rest.len() > MAX_HEAD {
                            let target = rest
                                .split(|&b| b == b' ')
                                .nth(1)
                                .map(|t| t[..t.len().min(1024)].to_vec())
                                .unwrap_or_default();
                            self.stand_in(target, HeadError::TooLarge);
                        }
                        return at;
                    };
                    match judge(&mut rest[..len]) {
                        Ok((target, framing)) => {
                            let close = framing.is_none();
                            self.lines.put(RawRequest {
                                placeholder: target.len().max(1),
                                target,
                                close,
                                refused: None,
                            });
                            self.state = match framing {
                                Some(0) => State::Head,
                                Some(n) => State::Body(n),
                                None => State::Through,
                            };
                            at += len;
                        }
                        Err((target, error)) => {
                            self.stand_in(target, error);
                            return at;
                        }
                    }
                }
            }
        }
    }

    /// Queues a bodiless request hyper will pass to the service, which
    /// answers with `error`; nothing after it is read.
    fn stand_in(&mut self, target: Vec<u8>, error: HeadError) {
        self.lines.put(RawRequest {
            target,
            close: true,
            refused: Some(error),
            placeholder: 1,
        });
        self.out =
            Bytes::from_static(b"GET / HTTP/1.1\r\nhost: coordinator\r\nconnection: close\r\n\r\n");
        self.held.clear();
        self.state = State::Ended;
    }
}

/// Judges a whole head: keeps its target and overwrites it with the
/// placeholder; returns the target and the body's length (`None`: not
/// followed, Transfer-Encoding), or the target and why the head is refused.
#[allow(clippy::type_complexity)]
fn judge(head: &mut [u8]) -> Result<(Vec<u8>, Option<u64>), (Vec<u8>, HeadError)> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        // A space inside the target gives four parts: keep what we can.
        let target = parts.get(1).map(|t| t.to_vec()).unwrap_or_default();
        return Err((target, HeadError::RequestLine));
    };
    let target = target.to_vec();
    if method.is_empty() || target.is_empty() || !version.starts_with(b"HTTP/") {
        return Err((target, HeadError::RequestLine));
    }
    let start = method.len() + 1;
    let placeholder = &mut head[start..start + target.len()];
    placeholder[0] = b'/';
    placeholder[1..].fill(b'a');

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err((target, HeadError::Malformed("incomplete head".into())));
        }
        Err(e) => return Err((target, HeadError::Malformed(e.to_string()))),
    }
    let mut length: Option<u64> = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok((target, None));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (value, length) {
                // hyper refuses these itself, with an empty 431, before
                // our code could answer.
                (Some(v), _) if v > HYPER_MAX_LENGTH => {
                    return Err((target, HeadError::LengthTooLarge(v)));
                }
                (Some(v), None) => length = Some(v),
                (Some(v), Some(prev)) if v == prev => {}
                _ => {
                    return Err((
                        target,
                        HeadError::Malformed("Content-Length must be one number of bytes".into()),
                    ));
                }
            }
        }
    }
    Ok((target, Some(length.unwrap_or(0))))
}

/// The length of the head at the front of `buf` (through its blank line),
/// if complete. A bare LF ends lines too, as httparse allows.
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + p + 1;
        match buf.get(at..) {
            Some([b'\n', ..]) => return Some(at + 1),
            Some([b'\r', b'\n', ..]) => return Some(at + 2),
            _ => i = at,
        }
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for RawTargets<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if !me.out.is_empty() {
                let n = me.out.len().min(buf.remaining());
                buf.put_slice(&me.out.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match me.state {
                State::Ended => return Poll::Ready(Ok(())),
                State::Through if me.held.is_empty() => {
                    return Pin::new(&mut me.inner).poll_read(cx, buf);
                }
                _ => {}
            }
            if !me.held.is_empty() {
                // An unfinished head: read more of it here, hyper gets it
                // once it is whole (with whatever followed it).
                me.held.reserve(READ_CHUNK);
                let n = ready!(poll_read_buf(Pin::new(&mut me.inner), cx, &mut me.held))?;
                if n == 0 {
                    // End of input: hand over what there is (hyper closes
                    // on a partial head) and end.
                    me.out = me.held.split().freeze();
                    me.state = State::Ended;
                    continue;
                }
                let mut held = std::mem::take(&mut me.held);
                let pass = me.scan(&mut held);
                if me.state != State::Ended {
                    me.held = held.split_off(pass);
                }
                held.truncate(pass);
                // What passed, then a stand-in if the scan made one.
                held.extend_from_slice(&std::mem::take(&mut me.out));
                me.out = held.freeze();
                continue;
            }
            // Straight into hyper's buffer.
            let start = buf.filled().len();
            ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                return Poll::Ready(Ok(()));
            }
            let pass = me.scan(&mut buf.filled_mut()[start..end]);
            if pass < end - start {
                if me.state != State::Ended {
                    me.held.extend_from_slice(&buf.filled()[start + pass..end]);
                }
                buf.set_filled(start + pass);
            }
            if pass > 0 {
                return Poll::Ready(Ok(()));
            }
            // Nothing for hyper yet (an unfinished head, or a stand-in):
            // go on from what is held.
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RawTargets<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Gives its input `step` bytes a read, as a slow client's packets.
    struct Trickle<'a> {
        input: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self.step.min(self.input.len()).min(buf.remaining());
            buf.put_slice(&self.input[..n]);
            self.input = &self.input[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// Everything hyper would read from `input` given `step` bytes at a
    /// time, and the raw requests in order.
    async fn through(input: &[u8], step: usize) -> (String, Vec<RawRequest>) {
        let (mut guarded, lines) = RawTargets::new(Trickle { input, step });
        let mut seen = Vec::new();
        guarded.read_to_end(&mut seen).await.unwrap();
        let raws = lines.lock().drain(..).collect();
        (String::from_utf8_lossy(&seen).into_owned(), raws)
    }

    /// Every way of cutting `input` into reads gives the same result.
    async fn check(input: &[u8], seen: &str, raws: &[RawRequest]) {
        for step in [1, 2, 3, 7, 16, 64, 4096, 1 << 20] {
            let (s, r) = through(input, step).await;
            assert_eq!(s, seen, "step {step}");
            assert_eq!(r, raws, "step {step}");
        }
    }

    fn ok(target: &[u8], close: bool) -> RawRequest {
        RawRequest {
            target: target.to_vec(),
            close,
            refused: None,
            placeholder: target.len(),
        }
    }

    fn refused(target: &[u8], error: HeadError) -> RawRequest {
        RawRequest {
            target: target.to_vec(),
            close: true,
            refused: Some(error),
            placeholder: 1,
        }
    }

    const STAND_IN: &str = "GET / HTTP/1.1\r\nhost: coordinator\r\nconnection: close\r\n\r\n";

    #[tokio::test]
    async fn targets_are_kept_and_replaced_by_a_placeholder_of_their_length() {
        check(
            b"PUT /a#b\"<\xc3\xa9 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\nGET /1:x HTTP/1.1\r\n\r\n",
            "PUT /aaaaaaa HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\nGET /aaa HTTP/1.1\r\n\r\n",
            &[ok(b"/a#b\"<\xc3\xa9", false), ok(b"/1:x", false)],
        )
        .await;
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_head_is_a_body() {
        let body = "GET /evil HTTP/1.1\r\n\r\n";
        let input = format!(
            "PUT /x HTTP/1.1\r\ncontent-length: {}\r\n\r\n{body}GET /y HTTP/1.1\n\n",
            body.len()
        );
        let seen = input.replace("/x", "/a").replace("/y", "/a");
        check(
            input.as_bytes(),
            &seen,
            &[ok(b"/x", false), ok(b"/y", false)],
        )
        .await;
    }

    #[tokio::test]
    async fn chunked_ends_the_watch_and_closes() {
        check(
            b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /a#b HTTP/1.1\r\n\r\n",
            "PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /a#b HTTP/1.1\r\n\r\n",
            &[ok(b"/x", true)],
        )
        .await;
    }

    #[tokio::test]
    async fn unreadable_heads_get_a_stand_in_and_nothing_after() {
        let first = "GET /ok HTTP/1.1\r\n\r\n";
        for (bad, target, error) in [
            (
                &b"PUT /a b HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"[..],
                &b"/a"[..],
                HeadError::RequestLine,
            ),
            (
                b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                b"/a",
                HeadError::Malformed("Content-Length must be one number of bytes".into()),
            ),
            (
                b"PUT /a HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                b"/a",
                HeadError::Malformed("Content-Length must be one number of bytes".into()),
            ),
            (
                b"PUT /a HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
                b"/a",
                HeadError::LengthTooLarge(u64::MAX),
            ),
            (
                b"PUT /a HTTP/1.1\r\nbad header\r\n\r\n",
                b"/a",
                HeadError::Malformed("invalid header name".into()),
            ),
        ] {
            let mut input = first.as_bytes().to_vec();
            input.extend_from_slice(bad);
            check(
                &input,
                &format!("{}{STAND_IN}", first.replace("/ok", "/aa")),
                &[ok(b"/ok", false), refused(target, error)],
            )
            .await;
        }
    }

    #[tokio::test]
    async fn a_huge_head_is_refused() {
        let mut unfinished = b"GET /x HTTP/1.1\r\nx-big: ".to_vec();
        unfinished.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let mut whole = unfinished.clone();
        whole.extend_from_slice(b"\r\n\r\n");
        for input in [unfinished, whole] {
            for step in [1000, 1 << 20] {
                let (seen, raws) = through(&input, step).await;
                assert_eq!(seen, STAND_IN, "step {step}");
                assert_eq!(raws, [refused(b"/x", HeadError::TooLarge)]);
            }
        }
    }

    #[test]
    fn the_service_takes_targets_in_order_by_placeholder() {
        let lines = Lines::default();
        lines.put(ok(b"/a#b", false));
        lines.put(ok(b"/c", false));
        assert_eq!(lines.take("/aaa"), Some(ok(b"/a#b", false)));
        // Not the placeholder of the next one: the framing was lost.
        assert_eq!(lines.take("/aaa"), None);
    }

    #[test]
    fn heads_end_at_a_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r"), None);
    }
}
