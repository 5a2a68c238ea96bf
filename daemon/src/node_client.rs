//! The one HTTP client for storage-node traffic: the coordinator's writes
//! and reads, the replicator's copies.
//!
//! hyper's pooled HTTP/1.1 client, not reqwest: reqwest builds its request
//! from a `url::Url`, which re-encodes a path (`"`, `{`, `'` in a query,
//! `\` ...), while a file's [`Name`] must reach the node byte for byte.
//! Here the name is the request target as is (a [`Name`] only holds bytes
//! that the `http` crate carries unchanged). Connections are kept alive
//! and not capped per node: the original's cap of 5 per node held its
//! coordinator at a sixth of a node's speed and deadlocked its replicator
//! (GETs holding every connection while their PUTs waited).
//!
//! No timeouts here: each caller bounds its requests as its job needs (a
//! whole write for the coordinator, a stall for the replicator's copies).

use std::time::Duration;

use backpack_shared::model::{HostPort, Name, Version, parse_hash_hex};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Header carrying a copy's time (ms since the Unix epoch) to and from
/// the node.
pub const TIME_HEADER: &str = "x-backpack-time";

/// Header on an upload to the node that versions it: the newest time (ms)
/// the shard's other nodes hold for the name, which the new version must
/// exceed (`shared::model::Version`; the coordinator's probe).
pub const AFTER_HEADER: &str = "x-backpack-after";

/// Header carrying a copy's content hash (16 hex digits of XXH3-64, see
/// [`backpack_shared::model::Version`]) from the node, on GET, HEAD and 201.
pub const HASH_HEADER: &str = "x-backpack-hash";

/// Header on the coordinator's answer to an upload stored without the
/// ordering guarantee, naming why (`coordinator::stats::Unordered`). Not
/// node traffic; here so that every `X-Backpack-*` name is in one place.
pub const UNORDERED_HEADER: &str = "x-backpack-unordered";

/// How the node versions a PUT.
#[derive(Debug, Clone)]
pub enum Versioning {
    /// A new upload: the node assigns the version, later than its own copy
    /// and than `after` (ms), the newest time the shard's other nodes hold.
    Assign { after: Option<u64> },
    /// A copy of another node's file: its time (`X-Backpack-Time` as that
    /// node gave it), kept as is.
    Copy(HeaderValue),
}

/// A request body sent to a node.
pub type NodeBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a request to a node failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError {
    /// What happened, for logs and error answers.
    pub detail: String,
    /// The node is to blame (no connection, 5xx), not the request (4xx).
    pub node_fault: bool,
}

/// The pooled client; cheap to clone (one pool).
#[derive(Clone)]
pub struct NodeClient {
    client: Client<HttpConnector, NodeBody>,
}

impl NodeClient {
    /// `connect_timeout` bounds the TCP connect to a node.
    pub fn new(connect_timeout: Duration) -> NodeClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            // Below the node's --head-timeout (20 s), which closes idle
            // connections: a request never goes out on one being closed.
            .pool_idle_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        NodeClient { client }
    }

    /// `PUT http://<node>/<name>` with `len` bytes of `body` and how to
    /// version it; `Ok` on 201 or 204, with the version the
    /// node holds after it (`None` from an original node, which does not
    /// say). The answer's body is read so the connection goes back to the
    /// pool.
    pub async fn put(
        &self,
        node: &HostPort,
        name: &Name,
        len: u64,
        versioning: Versioning,
        body: NodeBody,
    ) -> Result<Option<Version>, NodeError> {
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri(uri(node, name)?)
            .header(header::CONTENT_LENGTH, HeaderValue::from(len));
        match versioning {
            Versioning::Copy(t) => req = req.header(TIME_HEADER, t),
            Versioning::Assign { after: Some(t) } => req = req.header(AFTER_HEADER, t),
            Versioning::Assign { after: None } => {}
        }
        let req = req.body(body).map_err(cannot_make)?;
        let resp = self.client.request(req).await.map_err(failed)?;
        let status = resp.status();
        let held = version_of(resp.headers());
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        match status {
            StatusCode::CREATED | StatusCode::NO_CONTENT => Ok(held),
            s => Err(NodeError {
                detail: answered(s, &text),
                node_fault: s.is_server_error(),
            }),
        }
    }

    /// `GET` (or `HEAD`) `http://<node>/<name>`: the answer once its
    /// headers arrived, whatever its status; the body streams after.
    pub async fn get(
        &self,
        node: &HostPort,
        name: &Name,
        head: bool,
    ) -> Result<Response<Incoming>, NodeError> {
        self.get_with(node, name, head, &HeaderMap::new()).await
    }

    /// [`NodeClient::get`] with `extra` request headers (a reader's
    /// `Range` and `If-Range`, passed on by the coordinator).
    pub async fn get_with(
        &self,
        node: &HostPort,
        name: &Name,
        head: bool,
        extra: &HeaderMap,
    ) -> Result<Response<Incoming>, NodeError> {
        let mut req = Request::builder()
            .method(if head { Method::HEAD } else { Method::GET })
            .uri(uri(node, name)?);
        for (h, v) in extra {
            req = req.header(h, v);
        }
        let req = req
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(cannot_make)?;
        self.client.request(req).await.map_err(failed)
    }
}

impl NodeClient {
    /// `GET http://<node><target>` of one of the node's own resources
    /// (`/stats`, `//files?...`: never a file's name): its status and whole
    /// body, at most `max_body` bytes.
    pub async fn get_resource(
        &self,
        node: &HostPort,
        target: &str,
        max_body: usize,
    ) -> Result<(StatusCode, Bytes), NodeError> {
        let url = node.url();
        let authority = url.strip_prefix("http://").unwrap_or(&url);
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(target)
            .build()
            .map_err(cannot_make)?;
        let req = Request::builder()
            .uri(uri)
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .map_err(cannot_make)?;
        let resp = self.client.request(req).await.map_err(failed)?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| NodeError {
                detail: format!("reading its answer: {e}"),
                node_fault: true,
            })?
            .to_bytes();
        Ok((status, body))
    }
}

/// The version a node's answer names in `X-Backpack-Time` and
/// `X-Backpack-Hash`, if it names both.
pub fn version_of(headers: &hyper::HeaderMap) -> Option<Version> {
    let text = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
    Some(Version {
        time_ms: text(TIME_HEADER)?.parse().ok()?,
        content_hash: parse_hash_hex(text(HASH_HEADER)?)?,
    })
}

/// `answered 500 Internal Server Error: <the first 300 bytes of the body>`.
pub fn answered(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_string();
    if text.is_empty() {
        format!("answered {status}")
    } else {
        format!("answered {status}: {text}")
    }
}

/// The node's URL with the name as its request target, verbatim.
fn uri(node: &HostPort, name: &Name) -> Result<Uri, NodeError> {
    let url = node.url();
    let authority = url.strip_prefix("http://").unwrap_or(&url);
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(name.as_str())
        .build()
        .map_err(cannot_make)
}

fn cannot_make(e: impl std::fmt::Display) -> NodeError {
    NodeError {
        detail: format!("cannot make a request to it: {e}"),
        node_fault: false,
    }
}

/// A failed request, with its cause chain ("connection refused").
fn failed(e: hyper_util::client::legacy::Error) -> NodeError {
    use std::error::Error as _;
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    NodeError {
        detail: parts.join(": "),
        node_fault: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_are_request_targets_as_they_are() {
        let node = HostPort {
            host: "::1".into(),
            port: 8080,
        };
        for name in [
            "/hi.txt",
            "/\"json\":{\"a\":1}",
            "/x?q='a'\\b{c}|d^e`f",
            "/a%2Fb%20c",
        ] {
            let name = Name::parse(name.as_bytes()).unwrap();
            let u = uri(&node, &name).unwrap();
            assert_eq!(u.authority().map(|a| a.as_str()), Some("[::1]:8080"));
            assert_eq!(u.path_and_query().map(|p| p.as_str()), Some(name.as_str()));
        }
    }
}
