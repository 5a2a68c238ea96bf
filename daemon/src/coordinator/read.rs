//! The read path: `GET /<shard>:<name>` (and HEAD) serves the file from any
//! node of the shard, trying the next node on 404 or error, as the original
//! README's nginx recipe does. The shard id ends at the first colon, so
//! names may contain colons; the name is the rest of the request target,
//! byte for byte, as it was uploaded (`/1:hi.txt` reads `/hi.txt`).
//! The body streams from the node: nothing is held in memory.

use http_body_util::BodyExt;
use hyper::Response;
use hyper::header::{self, HeaderName};

use backpack_shared::model::Name;

use super::App;
use super::error::ApiError;
use super::nodes::Attempt;
use super::response::Body;
use crate::node_client::{HASH_HEADER, TIME_HEADER};

/// Headers of the node's answer passed on to the reader.
const PASSED: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::LAST_MODIFIED,
];

/// Answers `GET|HEAD /<shard>:<name>` (the name already checked).
pub async fn read(app: &App, shard: &str, name: &Name, head: bool) -> Response<Body> {
    let view = app.view.borrow().clone();
    let Some(nodes) = view.shards.get(shard).map(|s| s.nodes.clone()) else {
        return ApiError::UnknownShard(shard.to_string()).into_response(head);
    };
    let known: Vec<_> = nodes
        .iter()
        .filter_map(|id| view.node(id).map(|addr| (id.clone(), addr.clone())))
        .collect();
    let mut failures = Vec::new();
    for (id, addr) in app.nodes.order(name, known) {
        match app.nodes.get(&addr, name, head).await {
            Ok(resp) if resp.status() == hyper::StatusCode::OK => {
                let mut out = Response::builder().status(hyper::StatusCode::OK);
                for h in PASSED.iter().chain(&[
                    HeaderName::from_static(TIME_HEADER),
                    HeaderName::from_static(HASH_HEADER),
                ]) {
                    if let Some(v) = resp.headers().get(h) {
                        out = out.header(h, v);
                    }
                }
                let body = resp.into_body().boxed_unsync();
                return out.body(body).unwrap_or_else(|e| {
                    ApiError::BadRequest(format!("cannot answer: {e}")).into_response(head)
                });
            }
            Ok(resp) if resp.status() == hyper::StatusCode::NOT_FOUND => {
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

/// Reads a small answer to its end so the connection returns to the pool.
async fn drain(resp: Response<hyper::body::Incoming>) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        resp.into_body().collect(),
    )
    .await;
}
