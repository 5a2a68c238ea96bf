//! What the API answers with: the body type, and the answers of known
//! bytes (JSON documents, the metrics text). Files read from a node stream
//! through the same [`Body`] (see [`super::read`]).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

/// Answers are small JSON documents or files streamed from a node.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// Why a streamed answer broke off (hyper then closes the connection, so
/// the client sees a short body).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A body of known bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON answer, ending with a newline like the original's; for HEAD,
/// the same headers without the body.
pub fn json_response(status: StatusCode, value: &serde_json::Value, head: bool) -> Response<Body> {
    let mut text = value.to_string();
    text.push('\n');
    text_response(status, "application/json", text, head)
}

/// An answer of known bytes with their type and length; for HEAD, the
/// same headers without the body.
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    text: String,
    head: bool,
) -> Response<Body> {
    let len = text.len();
    let mut resp = Response::new(if head { full(Bytes::new()) } else { full(text) });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
