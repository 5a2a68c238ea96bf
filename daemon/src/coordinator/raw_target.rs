//! The request target exactly as the client sent it, before hyper parses it.
//!
//! hyper hands the service an `http::Uri`: a `#` and what follows are cut
//! off as a fragment (so `/photo#1.jpg` and `/photo#2.jpg` would both reach
//! us as `/photo`), and a target it cannot parse (raw bytes from 0x80,
//! `<`, a space) is answered `400` with an empty body before our code
//! runs. A file's name is the target's bytes, so [`RawTargets`] sits
//! between the socket and hyper: it reads each request head first, keeps
//! the target's bytes, and hands hyper the same head with the target
//! replaced by `/<n>`, the request's number on the connection. The service
//! takes the bytes back by that number ([`Lines::take`]) and judges them
//! itself, so every refusal is ours, with its JSON error.
//!
//! To find the next head it follows the framing: a body of Content-Length
//! bytes passes through uncopied when it can. A request with
//! Transfer-Encoding (which the API refuses anyway) ends the watch: its
//! answer closes the connection. A head that cannot be read (no three-part
//! request line, a header hyper would refuse, over [`MAX_HEAD`] bytes) is
//! replaced by a bodiless stand-in whose answer is our 400 (or 431) and
//! closes the connection; nothing after it is read.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

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
}

/// A request head the coordinator cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error(
        "the request line must be `METHOD /<name> HTTP/1.1` with single spaces; a space in a file name must be sent percent-encoded as %20"
    )]
    RequestLine,
    #[error("the request head is over {MAX_HEAD} bytes; send shorter headers")]
    TooLarge,
    #[error("malformed request head: {0}")]
    Malformed(String),
}

/// The raw heads of one connection's requests, by number.
#[derive(Debug, Default)]
pub struct Lines {
    pending: Mutex<HashMap<u64, RawRequest>>,
}

impl Lines {
    /// The raw head behind hyper's target `/<n>`; `None` when the target
    /// is not one of ours (never, unless the framing was lost).
    pub fn take(&self, hyper_target: &str) -> Option<RawRequest> {
        let n: u64 = hyper_target.strip_prefix('/')?.parse().ok()?;
        self.lock().remove(&n)
    }

    fn put(&self, n: u64, req: RawRequest) {
        self.lock().insert(n, req);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RawRequest>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum State {
    /// Reading a request head into `head`.
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
    /// Bytes read but not yet judged (a partial head, or what followed it).
    head: BytesMut,
    /// Bytes for hyper (a rewritten head, or body bytes read with a head).
    out: Bytes,
    next: u64,
}

impl<S> RawTargets<S> {
    pub fn new(inner: S) -> (RawTargets<S>, Arc<Lines>) {
        let lines = Arc::new(Lines::default());
        let me = RawTargets {
            inner,
            lines: lines.clone(),
            state: State::Head,
            head: BytesMut::new(),
            out: Bytes::new(),
            next: 0,
        };
        (me, lines)
    }

    /// Judges a complete head (`len` bytes at the front of `head`).
    fn take_head(&mut self, len: usize) {
        let raw = self.head.split_to(len);
        let n = self.next;
        self.next += 1;
        match rewrite(&raw, n) {
            Ok((mut rewritten, target, framing)) => {
                let close = matches!(framing, Framing::Unknown);
                // The body's first bytes go with the head in one read:
                // hyper shrinks its read buffer after two short reads in
                // a row, and would then take the rest of the body in
                // small pieces.
                let framing = match framing {
                    Framing::Length(len) => {
                        let first = (self.head.len() as u64).min(len) as usize;
                        rewritten.extend_from_slice(&self.head.split_to(first));
                        Framing::Length(len - first as u64)
                    }
                    Framing::Unknown => Framing::Unknown,
                };
                self.lines.put(
                    n,
                    RawRequest {
                        target,
                        close,
                        refused: None,
                    },
                );
                self.out = rewritten.into();
                self.state = match framing {
                    Framing::Length(len) => State::Body(len),
                    Framing::Unknown => State::Through,
                };
            }
            Err((target, error)) => self.stand_in(n, target, error),
        }
    }

    /// Replaces a head we refuse by a bodiless request hyper will pass to
    /// the service, which answers with `error`; then ends the input.
    fn stand_in(&mut self, n: u64, target: Vec<u8>, error: HeadError) {
        self.lines.put(
            n,
            RawRequest {
                target,
                close: true,
                refused: Some(error),
            },
        );
        self.out = Bytes::from(format!(
            "GET /{n} HTTP/1.1\r\nhost: coordinator\r\nconnection: close\r\n\r\n"
        ));
        self.head.clear();
        self.state = State::Ended;
    }
}

enum Framing {
    Length(u64),
    Unknown,
}

/// `(head with the target replaced by /n, the target, the body's framing)`,
/// or the target (as far as known) and why the head is refused.
#[allow(clippy::type_complexity)]
fn rewrite(raw: &[u8], n: u64) -> Result<(Vec<u8>, Vec<u8>, Framing), (Vec<u8>, HeadError)> {
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = raw[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&raw[..line_end]);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        // A space inside the target gives four parts: keep what we can.
        let target = parts.get(1).map(|t| t.to_vec()).unwrap_or_default();
        return Err((target, HeadError::RequestLine));
    };
    if method.is_empty() || target.is_empty() || !version.starts_with(b"HTTP/") {
        return Err((target.to_vec(), HeadError::RequestLine));
    }
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(method);
    out.extend_from_slice(format!(" /{n} ").as_bytes());
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&raw[(line_end + 1).min(raw.len())..]);

    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&out) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err((
                target.to_vec(),
                HeadError::Malformed("incomplete head".into()),
            ));
        }
        Err(e) => return Err((target.to_vec(), HeadError::Malformed(e.to_string()))),
    }
    let mut length: Option<u64> = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok((out, target.to_vec(), Framing::Unknown));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match (value, length) {
                (Some(v), None) => length = Some(v),
                (Some(v), Some(prev)) if v == prev => {}
                _ => {
                    return Err((
                        target.to_vec(),
                        HeadError::Malformed("Content-Length must be one number of bytes".into()),
                    ));
                }
            }
        }
    }
    Ok((out, target.to_vec(), Framing::Length(length.unwrap_or(0))))
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
                State::Through => {
                    if !me.head.is_empty() {
                        me.out = me.head.split().freeze();
                        continue;
                    }
                    return Pin::new(&mut me.inner).poll_read(cx, buf);
                }
                State::Body(0) => me.state = State::Head,
                State::Body(left) => {
                    if !me.head.is_empty() {
                        let n = (me.head.len() as u64).min(left) as usize;
                        me.out = me.head.split_to(n).freeze();
                        me.state = State::Body(left - n as u64);
                        continue;
                    }
                    if (buf.remaining() as u64) <= left {
                        // Straight into hyper's buffer: it cannot hold
                        // more than the body.
                        let before = buf.filled().len();
                        ready!(Pin::new(&mut me.inner).poll_read(cx, buf))?;
                        let n = buf.filled().len() - before;
                        me.state = State::Body(left - n as u64);
                        return Poll::Ready(Ok(()));
                    }
                    // The body's tail: a window of `left` bytes of hyper's
                    // buffer, so the next head stays ours to read. (Only
                    // here: making the window zeroes it, 10 µs a 100 KB.)
                    let room = left as usize;
                    let mut window = ReadBuf::new(buf.initialize_unfilled_to(room));
                    ready!(Pin::new(&mut me.inner).poll_read(cx, &mut window))?;
                    let n = window.filled().len();
                    buf.advance(n);
                    me.state = State::Body(left - n as u64);
                    return Poll::Ready(Ok(()));
                }
                State::Head => {
                    // Blank lines between requests are allowed (RFC 9112 2.2).
                    let blank = me
                        .head
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    me.head.advance(blank);
                    if let Some(len) = head_len(&me.head) {
                        me.take_head(len);
                        continue;
                    }
                    if me.head.len() > MAX_HEAD {
                        let n = me.next;
                        me.next += 1;
                        let target = me.head[..]
                            .split(|&b| b == b' ')
                            .nth(1)
                            .map(|t| t[..t.len().min(1024)].to_vec())
                            .unwrap_or_default();
                        me.stand_in(n, target, HeadError::TooLarge);
                        continue;
                    }
                    let mut tmp = [0u8; 8192];
                    let mut more = ReadBuf::new(&mut tmp);
                    ready!(Pin::new(&mut me.inner).poll_read(cx, &mut more))?;
                    if more.filled().is_empty() {
                        // End of input: hand over what there is (hyper
                        // closes on a partial head) and end.
                        me.out = me.head.split().freeze();
                        me.state = State::Ended;
                        continue;
                    }
                    me.head.extend_from_slice(more.filled());
                }
            }
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

    /// Everything hyper would read from `input`, and the raw requests.
    async fn through(input: &[u8]) -> (Vec<u8>, Vec<RawRequest>) {
        let (mut guarded, lines) = RawTargets::new(input);
        let mut seen = Vec::new();
        guarded.read_to_end(&mut seen).await.unwrap();
        let mut raws = Vec::new();
        for n in 0.. {
            match lines.take(&format!("/{n}")) {
                Some(r) => raws.push(r),
                None => break,
            }
        }
        (seen, raws)
    }

    fn ok(target: &[u8], close: bool) -> RawRequest {
        RawRequest {
            target: target.to_vec(),
            close,
            refused: None,
        }
    }

    #[tokio::test]
    async fn targets_are_kept_and_replaced_by_their_number() {
        let input = b"PUT /a#b\"<\xc3\xa9 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\r\nGET /1:x HTTP/1.1\r\n\r\n";
        let (seen, raws) = through(input).await;
        assert_eq!(
            String::from_utf8_lossy(&seen),
            "PUT /0 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /1 HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            raws,
            vec![ok(b"/a#b\"<\xc3\xa9", false), ok(b"/1:x", false)]
        );
    }

    #[tokio::test]
    async fn a_body_that_looks_like_a_head_is_a_body() {
        let body = b"GET /evil HTTP/1.1\r\n\r\n";
        let mut input =
            format!("PUT /x HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET /y HTTP/1.1\n\n");
        let (seen, raws) = through(&input).await;
        assert!(seen.windows(body.len()).any(|w| w == body));
        assert_eq!(raws, vec![ok(b"/x", false), ok(b"/y", false)]);
    }

    #[tokio::test]
    async fn chunked_ends_the_watch_and_closes() {
        let input =
            b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /a HTTP/1.1\r\n\r\n";
        let (seen, raws) = through(input).await;
        assert!(seen.ends_with(b"5\r\nGET /a HTTP/1.1\r\n\r\n"));
        assert_eq!(raws, vec![ok(b"/x", true)]);
    }

    #[tokio::test]
    async fn unreadable_heads_get_a_stand_in_and_nothing_after() {
        for (input, target, error) in [
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
                b"PUT /a HTTP/1.1\r\nbad header\r\n\r\n",
                b"/a",
                HeadError::Malformed("invalid header name".into()),
            ),
        ] {
            let (seen, raws) = through(input).await;
            assert_eq!(
                String::from_utf8_lossy(&seen),
                "GET /0 HTTP/1.1\r\nhost: coordinator\r\nconnection: close\r\n\r\n"
            );
            assert_eq!(
                raws,
                vec![RawRequest {
                    target: target.to_vec(),
                    close: true,
                    refused: Some(error)
                }]
            );
        }
    }

    #[tokio::test]
    async fn a_huge_head_is_refused() {
        let mut input = b"GET /x HTTP/1.1\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let (_, raws) = through(&input).await;
        assert_eq!(raws.len(), 1);
        assert_eq!(raws[0].refused, Some(HeadError::TooLarge));
        assert_eq!(raws[0].target, b"/x");
    }

    #[test]
    fn heads_end_at_a_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_len(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r"), None);
    }
}
