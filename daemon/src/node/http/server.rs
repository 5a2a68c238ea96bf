//! The API ([`api`](super::api)) over hyper's HTTP/1 server, with the
//! parts hyper does not give taken from elsewhere:
//!
//! - names: the request target exactly as sent, read before hyper parses
//!   it, by [`RawTargets`] (as on the coordinator: hyper's `Uri` cuts `#`
//!   and refuses bytes a name may hold);
//! - `still_there`: hyper owns the socket, so the connection keeps a
//!   second descriptor of it (`dup`) for the `MSG_PEEK` of
//!   [`request::peer_gone`](super::request::peer_gone);
//! - `--body-timeout`: each body frame is awaited at most that long (408);
//! - files: a cached small file is copied from the page cache
//!   ([`Store::read_cached`]), no `sendfile`; one not cached is read on a
//!   blocking thread; a large one is streamed a chunk at a time.
//!
//! `100 Continue` is hyper's: sent when the body is first read, which the
//! API does only after accepting the head, as the own server does.
//!
//! [`Store::read_cached`]: crate::node::store::Store::read_cached

use super::api::{Answer, ApiError, App, ErrorAnswer, UploadBody};
use super::listing::{KeyRange, Listing};
use super::request::{self, HttpError, Part, Request};
use crate::node::NodeConfig;
use crate::node::index::Location;
use crate::node::store::{LargeRead, SMALL_MAX, StoreError};
use crate::node_client::{HASH_HEADER, TIME_HEADER};
use crate::raw_target::{HeadError, Lines, RawRequest, RawTargets};
use crate::send_floor::{SendFloor, SendRule};
use backpack_shared::model::{Version, hash_hex};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Serves connections on `listener` until `shutdown`, then lets requests
/// in flight finish within the shutdown timeout (see [`crate::accept`]).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    config: &NodeConfig,
    shutdown: CancellationToken,
) {
    let limit = app.connections.clone();
    let settings = Settings {
        body_timeout: config.body_timeout,
        head_timeout: config.head_timeout,
        send_rule: config.send_rule,
    };
    crate::accept::serve(
        listener,
        &shutdown,
        config.shutdown_timeout,
        &limit,
        |stream| connection(stream, app.clone(), settings, shutdown.clone()),
    )
    .await
}

/// The connection settings of `NodeConfig`.
#[derive(Clone, Copy)]
struct Settings {
    body_timeout: Duration,
    head_timeout: Duration,
    send_rule: SendRule,
}

/// What every request of one connection shares.
struct Conn {
    app: Arc<App>,
    lines: Arc<Lines>,
    /// The same socket as hyper's, for `MSG_PEEK` only.
    peek: OwnedFd,
    timeout: Duration,
}

async fn connection(
    stream: TcpStream,
    app: Arc<App>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let peek = match rustix::io::dup(&stream) {
        Ok(fd) => fd,
        Err(e) => {
            error!(error = %e, "cannot duplicate a connection's descriptor; closing it");
            return;
        }
    };
    let stream = SendFloor::new(stream, settings.send_rule, app.slow_readers.clone());
    let (stream, lines) = RawTargets::new(stream);
    let conn = Arc::new(Conn {
        app,
        lines,
        peek,
        timeout: settings.body_timeout,
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.head_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut served = std::pin::pin!(served);
    let ended = tokio::select! {
        r = served.as_mut() => r,
        // Finish the request in flight, take no other.
        _ = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "connection ended with an error");
    }
}

impl Conn {
    async fn handle(&self, req: hyper::Request<Incoming>) -> Response<Body> {
        let head = req.method() == Method::HEAD;
        let put = req.method() == Method::PUT;
        let hyper_target = req.uri().path_and_query().map_or("", |p| p.as_str());
        let (answer, close) = match self.lines.take(hyper_target) {
            Some(raw) => (self.answer(&raw, req, head).await, raw.close),
            None => (Err(ApiError::BadRequest(
                "the request head was lost (framing); send the request again on a new connection"
                    .into(),
            )), true),
        };
        let failed = answer.is_err();
        let mut resp = answer.unwrap_or_else(|e| error_response(e, head));
        // After a PUT error the body may be partly read: close.
        if close || (failed && put) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn answer(
        &self,
        raw: &RawRequest,
        req: hyper::Request<Incoming>,
        head: bool,
    ) -> Result<Response<Body>, ApiError> {
        match &raw.refused {
            Some(HeadError::TooLarge) => return Err(HttpError::HeadTooLarge.into()),
            Some(HeadError::LengthTooLarge(len)) => {
                return Err(ApiError::TooLarge {
                    len: *len,
                    max: self.app.max_body(),
                });
            }
            Some(e) => return Err(ApiError::BadRequest(e.to_string())),
            None => {}
        }
        let target = String::from_utf8_lossy(&raw.target);
        let mut api_req = Request::new(
            req.method().as_str(),
            &target,
            req.version() >= hyper::Version::HTTP_11,
        );
        for (name, value) in req.headers() {
            api_req.header(name.as_str(), value.as_bytes());
        }
        match *req.method() {
            Method::GET | Method::HEAD => self.get(&api_req, head).await,
            Method::PUT => {
                let mut body = HyperBody {
                    body: req.into_body(),
                    peek: &self.peek,
                    timeout: self.timeout,
                };
                let kept = self.app.put(&api_req, &mut body).await?;
                Ok(
                    with_version(Response::builder().status(StatusCode::CREATED), kept)
                        .header(header::CONTENT_LENGTH, 0)
                        .body(empty())
                        .map_err(http_failed)?,
                )
            }
            _ => Err(ApiError::Method(api_req.method)),
        }
    }

    async fn get(&self, req: &Request, head: bool) -> Result<Response<Body>, ApiError> {
        let started = Instant::now();
        let loc = match self.app.get(req)? {
            Answer::Json(json) => return Ok(json_response(StatusCode::OK, json, head)),
            Answer::Metrics(text) => {
                return Ok(text_response(StatusCode::OK, text, PROMETHEUS_TEXT, head));
            }
            Answer::Listing(range) => return Ok(self.listing(range, head)),
            Answer::File(loc) => loc,
        };
        let len = loc.data_len;
        let etag = etag(loc.version());
        // A range of another version than the client holds is no use: the
        // whole file instead (an If-Range date is not checked: whole too).
        let range = match &req.if_range {
            Some(v) if *v != etag => None,
            _ => req.range.as_deref(),
        };
        let (status, first, last) = match request::part(range, len) {
            Part::Whole => (StatusCode::OK, 0, len.saturating_sub(1)),
            Part::Bytes { first, last } => (StatusCode::PARTIAL_CONTENT, first, last),
            Part::Unsatisfiable => {
                let mut resp = error_response(
                    ApiError::RangeNotSatisfiable {
                        range: range.unwrap_or_default().to_owned(),
                        len,
                    },
                    head,
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return Ok(resp);
            }
        };
        let count = if len == 0 { 0 } else { last - first + 1 };
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, count)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, &etag);
        if status == StatusCode::PARTIAL_CONTENT {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
        }
        let builder = with_version(builder, loc.version());
        let body = if head {
            empty()
        } else {
            let body = if count == 0 {
                empty()
            } else {
                self.file_body(&loc, first, last).await?
            };
            // Counted once the data is read (hyper sends it after).
            self.app.sent(count, started);
            body
        };
        builder.body(body).map_err(http_failed)
    }

    /// The listing of `range`, streamed a piece at a time; each piece is
    /// made on a blocking thread (it reads a part of the index) only when
    /// hyper asks for it, so a slow reader holds one piece, not the list.
    fn listing(&self, range: KeyRange, head: bool) -> Response<Body> {
        let body = if head {
            empty()
        } else {
            let listing = Listing::new(self.app.store().clone(), range);
            let pieces = futures::stream::unfold(Some(listing), |listing| async move {
                let mut listing = listing?;
                let made = tokio::task::spawn_blocking(move || {
                    let piece = listing.next_piece();
                    (listing, piece)
                })
                .await;
                match made {
                    Ok((listing, Some(piece))) => Some((Ok(Frame::data(piece)), Some(listing))),
                    Ok((_, None)) => None,
                    // No end line: the client sees the listing cut short.
                    Err(e) => Some((Err(io::Error::other(e.to_string())), None)),
                }
            });
            StreamBody::new(pieces).boxed_unsync()
        };
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        resp
    }

    /// Bytes `first..=last` of a stored file's data as a body. A large
    /// file streams, and its last piece is held back until the record's
    /// checksum is verified at its end: damage found then aborts the
    /// connection, so the client sees a short body, never corrupt bytes
    /// presented as complete.
    async fn file_body(&self, loc: &Location, first: u64, last: u64) -> Result<Body, ApiError> {
        let store = self.app.store().clone();
        if loc.data_len <= SMALL_MAX {
            let data = match store.read_cached(loc) {
                Some(data) => data,
                None => {
                    let loc = *loc;
                    tokio::task::spawn_blocking(move || store.read_small(&loc))
                        .await
                        .map_err(|_| StoreError::Closed)??
                }
            };
            let data = data.slice(first as usize..=last as usize);
            return Ok(Full::new(data).map_err(|e| match e {}).boxed_unsync());
        }
        let reader = store.read_large(loc)?;
        let state = Ranged {
            reader: Some(reader),
            pos: 0,
            first,
            last,
            held: None,
        };
        let chunks = futures::stream::unfold(state, |mut st| async move {
            loop {
                let mut reader = st.reader.take()?;
                let read = tokio::task::spawn_blocking(move || {
                    let chunk = reader.next_chunk();
                    (reader, chunk)
                })
                .await;
                let failed = |why: String| {
                    error!(error = %why, "aborting a download");
                    Some((Err(io::Error::other(why)), Ranged::done()))
                };
                match read {
                    Ok((reader, Ok(Some(c)))) => {
                        st.reader = Some(reader);
                        if let Some(out) = st.take(c) {
                            return Some((Ok(Frame::data(out)), st));
                        }
                    }
                    // Verified to the end: the held piece may go.
                    Ok((_, Ok(None))) => {
                        let held = st.held.take()?;
                        return Some((Ok(Frame::data(held)), Ranged::done()));
                    }
                    Ok((_, Err(e))) => return failed(e.to_string()),
                    Err(e) => return failed(e.to_string()),
                }
            }
        });
        Ok(StreamBody::new(chunks).boxed_unsync())
    }
}

/// A large file's stream cut to a range, its last piece held back.
struct Ranged {
    reader: Option<LargeRead>,
    /// Offset in the data of the next chunk.
    pos: u64,
    first: u64,
    last: u64,
    held: Option<Bytes>,
}

impl Ranged {
    fn done() -> Ranged {
        Ranged {
            reader: None,
            pos: 0,
            first: 1,
            last: 0,
            held: None,
        }
    }

    /// Takes the part of `chunk` in the range; returns what may go now
    /// (the previously held piece).
    fn take(&mut self, chunk: Bytes) -> Option<Bytes> {
        let start = self.pos;
        let end = start + chunk.len() as u64; // exclusive
        self.pos = end;
        let from = self.first.max(start);
        let to = (self.last + 1).min(end);
        if from >= to {
            return None;
        }
        let piece = chunk.slice((from - start) as usize..(to - start) as usize);
        self.held.replace(piece)
    }
}

/// An upload's body as hyper hands it over, frame by frame.
struct HyperBody<'a> {
    body: Incoming,
    peek: &'a OwnedFd,
    timeout: Duration,
}

impl UploadBody for HyperBody<'_> {
    async fn proceed(&mut self) -> Result<(), ApiError> {
        // hyper sends `100 Continue` when the body is first read.
        Ok(())
    }

    async fn chunk(&mut self, left: u64, got: u64, expected: u64) -> Result<Bytes, ApiError> {
        let short = || HttpError::ShortBody { got, expected };
        loop {
            let frame = tokio::time::timeout(self.timeout, self.body.frame())
                .await
                .map_err(|_| HttpError::Timeout(self.timeout))?;
            match frame {
                None | Some(Err(_)) => return Err(short().into()),
                Some(Ok(frame)) => {
                    // Trailers (not sent with a Content-Length) are skipped.
                    if let Ok(mut data) = frame.into_data()
                        && !data.is_empty()
                    {
                        // hyper holds a body to its Content-Length; this
                        // only guards the API's count.
                        data.truncate(left as usize);
                        return Ok(data);
                    }
                }
            }
        }
    }

    fn peer_gone(&self) -> bool {
        request::peer_gone(self.peek)
    }
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// The Prometheus text format's content type (version 0.0.4).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// A JSON answer; for HEAD, its length without the body.
fn json_response(status: StatusCode, json: String, head: bool) -> Response<Body> {
    text_response(status, json, "application/json", head)
}

/// An answer of known text; for HEAD, its length without the body.
fn text_response(
    status: StatusCode,
    text: String,
    kind: &'static str,
    head: bool,
) -> Response<Body> {
    let len = text.len();
    let body = if head {
        empty()
    } else {
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn error_response(e: ApiError, head: bool) -> Response<Body> {
    let answer = ErrorAnswer::from(e);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, answer.body, head);
    if let Some(methods) = answer.allow {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(methods));
    }
    resp
}

/// The version of the copy answered: `X-Backpack-Time` and
/// `X-Backpack-Hash`, the headers `node_client` reads.
fn with_version(b: hyper::http::response::Builder, v: Version) -> hyper::http::response::Builder {
    b.header(TIME_HEADER, v.time_ms)
        .header(HASH_HEADER, hash_hex(v.content_hash))
}

/// A strong validator of one version of a file (for `If-Range`).
fn etag(v: Version) -> String {
    format!("\"{}-{}\"", v.time_ms, hash_hex(v.content_hash))
}

/// A response that could not be built (never, with the headers above).
fn http_failed(e: hyper::http::Error) -> ApiError {
    super::api::io_error(io::Error::other(e))
}
