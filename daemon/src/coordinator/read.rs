//! The read path: `GET /<shard>:<name>` (and HEAD) serves the file from any
//! node of the shard, trying the next node on 404 or error, as the original
//! README's nginx recipe does. The shard id ends at the first colon, so
//! names may contain colons; the name is the rest of the request target,
//! byte for byte, as it was uploaded (`/1:hi.txt` reads `/hi.txt`).
//! The body streams from the node: nothing is held in memory.
//!
//! Ranges (RFC 9110 §14): a GET with one range (`Range: bytes=0-99`,
//! `bytes=100-`, `bytes=-100`) is passed on to the node with its
//! `If-Range`; the node's 206 (with `Content-Range`) comes back as is, and
//! its 416 as our JSON error with the node's `Content-Range: bytes */<len>`.
//! A node that ignores `Range` answers 200 with the whole file, which is
//! passed on whole: a correct answer to a range request (§14.2), which a
//! resuming client takes as "start again". Every file answer says
//! `Accept-Ranges: bytes`.

use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use backpack_shared::model::Name;

use super::App;
use super::error::ApiError;
use super::nodes::Attempt;
use super::response::Body;
use crate::node_client::{HASH_HEADER, TIME_HEADER};

/// Headers of the node's answer passed on to the reader.
const PASSED: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::LAST_MODIFIED,
    // The node's validator, so that a client's If-Range can match it; a
    // copy on another node has its own, and a mismatch only costs the
    // whole file.
    header::ETAG,
    header::CONTENT_RANGE,
];

/// Answers `GET|HEAD /<shard>:<name>` (the name already checked);
/// `request` holds the reader's headers (`Range`, `If-Range`).
pub async fn read(
    app: &App,
    shard: &str,
    name: &Name,
    head: bool,
    request: &HeaderMap,
) -> Response<Body> {
    let view = app.view.borrow().clone();
    let Some(nodes) = view.shards.get(shard).map(|s| s.nodes.clone()) else {
        return ApiError::UnknownShard(shard.to_string()).into_response(head);
    };
    let known: Vec<_> = nodes
        .iter()
        .filter_map(|id| view.node(id).map(|addr| (id.clone(), addr.clone())))
        .collect();
    let range = if head { None } else { wanted_range(request) };
    let mut extra = HeaderMap::new();
    if let Some(r) = &range {
        extra.insert(header::RANGE, r.clone());
        if let Some(v) = request.get(header::IF_RANGE) {
            extra.insert(header::IF_RANGE, v.clone());
        }
    }
    let ranged = range.is_some();
    let mut failures = Vec::new();
    for (id, addr) in app.nodes.order(name, known) {
        match app.nodes.get(&addr, name, head, &extra).await {
            Ok(resp) if resp.status() == StatusCode::OK => {
                return pass(app, resp, StatusCode::OK, head);
            }
            Ok(resp)
                if ranged
                    && resp.status() == StatusCode::PARTIAL_CONTENT
                    && resp.headers().contains_key(header::CONTENT_RANGE) =>
            {
                return pass(app, resp, StatusCode::PARTIAL_CONTENT, head);
            }
            Ok(resp) if ranged && resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                let content_range = resp.headers().get(header::CONTENT_RANGE).cloned();
                drain(resp).await;
                return not_satisfiable(name, &extra, content_range);
            }
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                // Not there (yet): replication may not have reached this node.
                drain(resp).await;
            }
            Ok(resp) => {
                let status = resp.status();
                drain(resp).await;
                failures.push(Attempt {
                    id,
                    addr,
                    error: format!("answered {status}"),
                });
            }
            Err(error) => failures.push(Attempt { id, addr, error }),
        }
    }
    if failures.is_empty() {
        ApiError::FileNotFound {
            shard: shard.to_string(),
            name: name.to_string(),
        }
        .into_response(head)
    } else {
        ApiError::ReadFailed {
            shard: shard.to_string(),
            name: name.to_string(),
            attempts: failures,
        }
        .into_response(head)
    }
}

/// The node's answer, streamed, with its headers in [`PASSED`] and ours.
fn pass(
    app: &App,
    resp: Response<hyper::body::Incoming>,
    status: StatusCode,
    head: bool,
) -> Response<Body> {
    let mut out = Response::builder()
        .status(status)
        .header(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for h in PASSED.iter().chain(&[
        HeaderName::from_static(TIME_HEADER),
        HeaderName::from_static(HASH_HEADER),
    ]) {
        if let Some(v) = resp.headers().get(h) {
            out = out.header(h, v);
        }
    }
    let body = Stalling::new(resp.into_body(), app.config.node_read_timeout).boxed_unsync();
    out.body(body)
        .unwrap_or_else(|e| ApiError::BadRequest(format!("cannot answer: {e}")).into_response(head))
}

/// 416: the range asked for (`extra`'s `Range`) is past the file's end;
/// `content_range` is the node's `bytes */<len>`, passed on.
fn not_satisfiable(
    name: &Name,
    extra: &HeaderMap,
    content_range: Option<HeaderValue>,
) -> Response<Body> {
    let asked = extra
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let len = content_range
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes */"))
        .and_then(|n| n.trim().parse().ok());
    let mut resp = ApiError::RangeNotSatisfiable {
        name: name.to_string(),
        range: asked,
        len,
    }
    .into_response(false);
    let h = resp.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(v) = content_range {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// The one byte range a GET asks for, as the `Range` value to pass on
/// (`bytes=<first>-<last>`, `bytes=<first>-`, `bytes=-<suffix length>`),
/// or `None` to answer the whole file: no `Range`, another unit, a value
/// we cannot read, or several ranges. RFC 9110 §14.2 lets a server ignore
/// `Range`; we do for several ranges rather than pass on a
/// `multipart/byteranges` answer built differently by every kind of node.
fn wanted_range(request: &HeaderMap) -> Option<HeaderValue> {
    let mut values = request.get_all(header::RANGE).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    HeaderValue::from_str(&single_range(value)?).ok()
}

/// `bytes=<one range>` normalised, or `None` (see [`wanted_range`]).
fn single_range(value: &str) -> Option<String> {
    let (unit, set) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    // A list may hold empty elements (RFC 9110 §5.6.1).
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let spec = specs.next()?;
    if specs.next().is_some() {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let pos = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok()
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => return None,
        // A suffix; `-0` is unsatisfiable, which the node says (416).
        (true, false) => {
            pos(last)?;
        }
        (false, true) => {
            pos(first)?;
        }
        // `last < first` is invalid, not unsatisfiable: ignored.
        (false, false) => {
            if pos(first)? > pos(last)? {
                return None;
            }
        }
    }
    Some(format!("bytes={first}-{last}"))
}

/// Reads a small answer to its end so the connection returns to the pool.
async fn drain(resp: Response<hyper::body::Incoming>) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        resp.into_body().collect(),
    )
    .await;
}

/// A node's body, broken off when no byte comes for `limit` (the node hung
/// mid-file): the reader's connection is closed rather than held for ever.
struct Stalling {
    inner: hyper::body::Incoming,
    limit: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Stalling {
    fn new(inner: hyper::body::Incoming, limit: std::time::Duration) -> Stalling {
        Stalling {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl hyper::body::Body for Stalling {
    type Data = bytes::Bytes;
    type Error = super::response::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.limit;
                self.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    tracing::warn!(limit = ?self.limit, "a node stopped sending a file mid-way; the reader's answer is cut short");
                    return Poll::Ready(Some(Err(format!(
                        "the node sent nothing for {:?} (--node-read-timeout-ms)",
                        self.limit
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Option<&str>) {
        assert_eq!(single_range(value).as_deref(), expected, "{value}");
    }

    #[test]
    fn one_range_is_passed_on_and_the_rest_read_whole() {
        check("bytes=0-99", Some("bytes=0-99"));
        check("bytes=100-", Some("bytes=100-"));
        check("bytes=-100", Some("bytes=-100"));
        check("Bytes = 5-5 ,", Some("bytes=5-5"));
        check("bytes=-0", Some("bytes=-0"));
        // Several ranges: the whole file.
        check("bytes=0-1,5-6", None);
        // Invalid, or not ours to read: the whole file.
        check("bytes=9-1", None);
        check("bytes=-", None);
        check("bytes=a-b", None);
        check("bytes=+1-2", None);
        check("bytes=99999999999999999999-", None);
        check("items=0-1", None);
        check("bytes 0-1", None);
    }

    #[test]
    fn several_range_headers_are_ignored() {
        let mut h = HeaderMap::new();
        assert_eq!(wanted_range(&h), None);
        h.append(header::RANGE, HeaderValue::from_static("bytes=0-1"));
        assert_eq!(
            wanted_range(&h),
            Some(HeaderValue::from_static("bytes=0-1"))
        );
        h.append(header::RANGE, HeaderValue::from_static("bytes=2-3"));
        assert_eq!(wanted_range(&h), None);
    }
}
