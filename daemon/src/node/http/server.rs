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
use super::request::{self, HttpError, Request};
use crate::node::index::Location;
use crate::node::store::{SMALL_MAX, StoreError};
use crate::node_client::{HASH_HEADER, TIME_HEADER};
use crate::raw_target::{HeadError, Lines, RawRequest, RawTargets};
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
/// in flight finish within `deadline` (see [`crate::accept`]). `timeout`
/// bounds each stall of a request body.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    timeout: Duration,
    deadline: Duration,
    shutdown: CancellationToken,
) {
    crate::accept::serve(listener, &shutdown, deadline, |stream| {
        connection(stream, app.clone(), timeout, shutdown.clone())
    })
    .await
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
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let peek = match rustix::io::dup(&stream) {
        Ok(fd) => fd,
        Err(e) => {
            error!(error = %e, "cannot duplicate a connection's descriptor; closing it");
            return;
        }
    };
    let (stream, lines) = RawTargets::new(stream);
    let conn = Arc::new(Conn {
        app,
        lines,
        peek,
        timeout,
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(conn.handle(req).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .timer(TokioTimer::new())
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
            Answer::File(loc) => loc,
        };
        let builder = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, loc.data_len);
        let builder = with_version(builder, loc.version());
        let body = if head {
            empty()
        } else {
            let body = self.file_body(&loc).await?;
            // Counted once the data is read (hyper sends it after).
            self.app.sent(loc.data_len, started);
            body
        };
        builder.body(body).map_err(http_failed)
    }

    /// A stored file's data as a body. A failure after the answer began
    /// aborts the connection (the client sees a short body, never corrupt
    /// bytes presented as complete).
    async fn file_body(&self, loc: &Location) -> Result<Body, ApiError> {
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
            return Ok(Full::new(data).map_err(|e| match e {}).boxed_unsync());
        }
        let reader = store.read_large(loc)?;
        let chunks = futures::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            let read = tokio::task::spawn_blocking(move || {
                let chunk = reader.next_chunk();
                (reader, chunk)
            })
            .await;
            let failed = |why: String| {
                error!(error = %why, "aborting a download");
                Some((Err(io::Error::other(why)), None))
            };
            match read {
                Ok((reader, Ok(Some(c)))) => Some((Ok(Frame::data(c)), Some(reader))),
                Ok((_, Ok(None))) => None,
                Ok((_, Err(e))) => failed(e.to_string()),
                Err(e) => failed(e.to_string()),
            }
        });
        Ok(StreamBody::new(chunks).boxed_unsync())
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

/// A JSON answer; for HEAD, its length without the body.
fn json_response(status: StatusCode, json: String, head: bool) -> Response<Body> {
    let len = json.len();
    let body = if head {
        empty()
    } else {
        Full::new(Bytes::from(json))
            .map_err(|e| match e {})
            .boxed_unsync()
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
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

/// A response that could not be built (never, with the headers above).
fn http_failed(e: hyper::http::Error) -> ApiError {
    super::api::io_error(io::Error::other(e))
}
