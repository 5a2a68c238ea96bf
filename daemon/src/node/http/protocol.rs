//! The node's HTTP/1.1 server: request heads, responses, keep-alive,
//! request bodies and `sendfile`. It knows HTTP and nothing of files: a
//! [`Service`] (the node's API, `api.rs`) answers each request.
//!
//! Why not hyper: serving a cached file with `sendfile` (page cache to
//! socket, no copy through user space) is what lets GETs keep up with
//! nginx, and hyper owns the socket writes. The server is deliberately
//! narrow: requests are parsed with `httparse`, bodies must have a
//! Content-Length (no chunked uploads), responses always carry one;
//! keep-alive and pipelining work; a connection whose request body was
//! not read is closed after the answer.

use crate::node_client::{AFTER_HEADER, TIME_HEADER};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::{self, ErrorKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;
/// How long an idle keep-alive connection or a partial request head may
/// wait.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What answers the requests of a connection (garage's `ApiHandler`, for
/// the one API the node has).
pub trait Service: Send + Sync + 'static {
    /// Answers `req`, its errors included, and says whether the
    /// connection may take another request.
    fn handle(
        &self,
        conn: &mut Conn,
        req: Request,
    ) -> impl Future<Output = io::Result<Next>> + Send;
}

/// A request the protocol itself refuses, or a body that did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers")]
    HeadTooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error("body ended after {got} of the {expected} bytes announced by Content-Length")]
    ShortBody { got: u64, expected: u64 },
    #[error("the body stalled for more than {0:?} (--body-timeout)")]
    Timeout(Duration),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::BadRequest(_) | HttpError::ShortBody { .. } => 400,
            HttpError::Timeout(_) => 408,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "",
    }
}

/// The `Date` header value, formatted at most once a second.
fn http_date() -> String {
    static CACHE: Mutex<(u64, String)> = Mutex::new((u64::MAX, String::new()));
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if c.0 != secs {
        *c = (secs, httpdate::fmt_http_date(now));
    }
    c.1.clone()
}

/// A response head: status line and headers, Content-Length included.
pub struct ResponseHead {
    buf: Vec<u8>,
}

impl ResponseHead {
    pub fn new(status: u16, content_length: u64) -> ResponseHead {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(
            format!(
                "HTTP/1.1 {status} {}\r\nDate: {}\r\nContent-Length: {content_length}\r\n",
                reason(status),
                http_date()
            )
            .as_bytes(),
        );
        ResponseHead { buf }
    }

    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.buf
            .extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        self
    }

    pub fn finish(mut self, close: bool) -> Vec<u8> {
        if close {
            self.buf.extend_from_slice(b"Connection: close\r\n");
        }
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// What the API needs of a request head.
pub struct Request {
    pub method: String,
    /// The request target, exactly as received.
    pub target: String,
    pub keep_alive: bool,
    pub content_length: Option<Result<u64, ()>>,
    pub chunked: bool,
    pub expect_continue: bool,
    /// `X-Backpack-Time`: the version's time of a copy.
    pub time: Option<Result<u64, ()>>,
    /// `X-Backpack-After`: the assigned version must exceed it.
    pub after: Option<Result<u64, ()>>,
}

impl Request {
    /// A request with no headers seen yet.
    pub fn new(method: &str, target: &str, http11: bool) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            keep_alive: http11,
            content_length: None,
            chunked: false,
            expect_continue: false,
            time: None,
            after: None,
        }
    }

    /// Takes what the API needs from one header (either server's heads
    /// are read through this).
    pub fn header(&mut self, name: &str, value: &[u8]) {
        let value = std::str::from_utf8(value).unwrap_or("").trim();
        let number = || value.parse::<u64>().map_err(|_| ());
        if name.eq_ignore_ascii_case("content-length") {
            self.content_length = Some(match self.content_length {
                // Repeated: fine only if identical (RFC 9110 8.6).
                Some(prev) if prev != number() => Err(()),
                _ => number(),
            });
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                self.keep_alive = false;
            } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                self.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case(TIME_HEADER) {
            self.time = Some(number());
        } else if name.eq_ignore_ascii_case(AFTER_HEADER) {
            self.after = Some(number());
        }
    }

    pub fn has_body(&self) -> bool {
        self.chunked
            || matches!(self.content_length, Some(Ok(n)) if n > 0)
            || matches!(self.content_length, Some(Err(())))
    }
}

/// What to do with the connection after a response.
#[derive(PartialEq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// Serves connections on `listener` with `service` until `shutdown`, then
/// waits up to `deadline` for the requests in flight (the daemons' one
/// accept loop, [`crate::accept`]). `timeout` bounds each stall of a body
/// read and of a write.
pub async fn serve<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    timeout: Duration,
    deadline: Duration,
    shutdown: CancellationToken,
) {
    crate::accept::serve(listener, &shutdown, deadline, |stream| {
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            timeout,
        };
        let service = service.clone();
        let shutdown = shutdown.clone();
        async move {
            if let Err(e) = conn.run(&*service, &shutdown).await {
                debug!(error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read but not yet used (the next request head, a body start).
    buf: BytesMut,
    /// How long a body read or a write may stall.
    timeout: Duration,
}

impl Conn {
    async fn run(
        &mut self,
        service: &impl Service,
        shutdown: &CancellationToken,
    ) -> io::Result<()> {
        loop {
            let req = tokio::select! {
                r = self.read_head() => r,
                // Idle between requests: close at once on shutdown. A
                // request being received or handled is finished first.
                _ = shutdown.cancelled(), if self.buf.is_empty() => return Ok(()),
            };
            let req = match req {
                Ok(Some(req)) => req,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = self
                        .respond_error(e.status(), &e.to_string(), &[], false, true)
                        .await;
                    return Ok(());
                }
            };
            let next = service.handle(self, req).await?;
            if next == Next::Close || shutdown.is_cancelled() {
                let _ = self.stream.shutdown().await;
                return Ok(());
            }
        }
    }

    /// Reads and parses the next request head. `None`: the client closed
    /// the connection between requests (or stayed idle too long).
    async fn read_head(&mut self) -> Result<Option<Request>, HttpError> {
        loop {
            if !self.buf.is_empty() {
                if let Some((req, used)) = parse_head(&self.buf)? {
                    self.buf.advance(used);
                    return Ok(Some(req));
                }
                if self.buf.len() >= MAX_HEAD {
                    return Err(HttpError::HeadTooLarge);
                }
            }
            let read =
                tokio::time::timeout(HEAD_TIMEOUT, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) | Err(_) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) => {
                    return Err(HttpError::BadRequest(
                        "connection closed inside the request head".into(),
                    ));
                }
                Err(_) => return Err(HttpError::Timeout(HEAD_TIMEOUT)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(HttpError::BadRequest(format!(
                        "cannot read the request: {e}"
                    )));
                }
            }
        }
    }

    /// Answers with a JSON body (left out for HEAD), after the `extra`
    /// headers.
    pub async fn respond_json(
        &mut self,
        status: u16,
        body: &str,
        extra: &[(&str, &str)],
        head: bool,
        close: bool,
    ) -> io::Result<()> {
        let mut rh =
            ResponseHead::new(status, body.len() as u64).header("Content-Type", "application/json");
        for (name, value) in extra {
            rh = rh.header(name, value);
        }
        let mut out = rh.finish(close);
        if !head {
            out.extend_from_slice(body.as_bytes());
        }
        self.write(&out).await
    }

    /// Answers an error: `{"error": message}`, the way every error of the
    /// project is answered.
    pub async fn respond_error(
        &mut self,
        status: u16,
        message: &str,
        extra: &[(&str, &str)],
        head: bool,
        close: bool,
    ) -> io::Result<()> {
        let body = serde_json::json!({ "error": message }).to_string();
        self.respond_json(status, &body, extra, head, close).await
    }

    /// Tells a client that sent `Expect: 100-continue` to send the body.
    pub async fn send_continue(&mut self) -> io::Result<()> {
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        timed(self.timeout, self.stream.write_all(bytes)).await
    }

    /// The next piece of the request body: buffered bytes first, then the
    /// socket. At most `left` bytes; `got` of `expected` arrived so far.
    pub async fn body_chunk(
        &mut self,
        left: u64,
        got: u64,
        expected: u64,
    ) -> Result<Bytes, HttpError> {
        if !self.buf.is_empty() {
            let n = self.buf.len().min(left as usize);
            return Ok(self.buf.split_to(n).freeze());
        }
        self.buf.reserve(left.min(256 * 1024) as usize);
        let timeout = self.timeout;
        read_body(
            &mut self.stream,
            &mut self.buf,
            left,
            timeout,
            got,
            expected,
        )
        .await?;
        Ok(self.buf.split().freeze())
    }

    /// Reads a whole body of `len` bytes onto the end of `out`: buffered
    /// bytes first, the rest straight from the socket.
    pub async fn read_body_into(&mut self, out: &mut Vec<u8>, len: u64) -> Result<(), HttpError> {
        let start = out.len() as u64;
        let n = self.buf.len().min(len as usize);
        out.extend_from_slice(&self.buf.split_to(n));
        while (out.len() as u64) - start < len {
            let got = out.len() as u64 - start;
            read_body(&mut self.stream, out, len - got, self.timeout, got, len).await?;
        }
        Ok(())
    }

    /// Whether the client has closed (or reset) the connection, seen
    /// without reading from it.
    pub fn peer_gone(&self) -> bool {
        peer_gone(&self.stream)
    }

    async fn writable(&self) -> io::Result<()> {
        timed(self.timeout, self.stream.writable()).await
    }

    /// Sends `bytes` with `MSG_MORE`, so they leave in one segment with what
    /// follows (a head before [`Conn::sendfile`]).
    pub async fn send_more(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.writable().await?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::net::send(&self.stream, bytes, rustix::net::SendFlags::MORE)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset`: the kernel copies page
    /// cache to socket.
    pub async fn sendfile(
        &self,
        file: &std::fs::File,
        mut offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            self.writable().await?;
            let left = (end - offset).min(1 << 30) as usize;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(&self.stream, file, Some(&mut offset), left)
                    .map_err(io::Error::from)
            });
            match sent {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether the peer of `socket` has closed (or reset) the connection,
/// seen without reading from it (`MSG_PEEK`).
pub fn peer_gone(socket: impl std::os::fd::AsFd) -> bool {
    let mut byte = [0u8; 1];
    let peek = rustix::net::recv(
        socket,
        &mut byte[..],
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    );
    match peek {
        // Nothing to read (or the next pipelined request): still there.
        Err(rustix::io::Errno::WOULDBLOCK) | Ok((1.., _)) => false,
        Err(rustix::io::Errno::INTR) => false,
        // End of stream or reset: gone.
        _ => true,
    }
}

/// `op`, or `TimedOut` once it has taken longer than `limit`.
async fn timed<T>(limit: Duration, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(ErrorKind::TimedOut.into()),
    }
}

/// One read of at most `left` body bytes from the socket into `into`: a
/// stall over `timeout` is a 408, an early end a 400.
async fn read_body(
    stream: &mut TcpStream,
    into: &mut impl BufMut,
    left: u64,
    timeout: Duration,
    got: u64,
    expected: u64,
) -> Result<(), HttpError> {
    match tokio::time::timeout(timeout, stream.take(left).read_buf(into)).await {
        Err(_) => Err(HttpError::Timeout(timeout)),
        Ok(Ok(0)) | Ok(Err(_)) => Err(HttpError::ShortBody { got, expected }),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Parses a request head at the start of `buf`: `None` if incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let used = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => {
            return Err(HttpError::BadRequest(format!(
                "malformed request ({e}): a request line is `METHOD /<name> HTTP/1.1`, and a file name holds only printable ASCII (percent-encode other bytes)"
            )));
        }
    };
    let mut req = Request::new(
        parsed.method.unwrap_or(""),
        parsed.path.unwrap_or(""),
        parsed.version == Some(1),
    );
    for h in parsed.headers.iter() {
        req.header(h.name, h.value);
    }
    Ok(Some((req, used)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(s: &str) -> Request {
        parse_head(s.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn heads() {
        let r =
            parse("PUT /a%20b?x=1 HTTP/1.1\r\nContent-Length: 5\r\nX-Backpack-Time: 42\r\n\r\n");
        assert_eq!(r.method, "PUT");
        assert_eq!(r.target, "/a%20b?x=1");
        assert!(r.keep_alive);
        assert_eq!(r.content_length, Some(Ok(5)));
        assert_eq!(r.time, Some(Ok(42)));
        let r = parse("GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let r = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let r = parse("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(r.content_length, Some(Err(())));
        let r = parse("PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.content_length, Some(Ok(5)));
        let r =
            parse("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n");
        assert!(r.chunked && r.expect_continue);
        assert!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").is_err());
    }
}
