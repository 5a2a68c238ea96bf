//! The API ([`api`](super::api)) over the node's own HTTP/1.1 server
//! ([`protocol`](super::protocol)): a cached file goes out with
//! `sendfile`, page cache to socket.

use super::api::{Answer, ApiError, App, ErrorAnswer, UploadBody, io_error};
use super::protocol::{Conn, Next, Request, ResponseHead, Service};
use crate::node::index::Location;
use crate::node::store::{SMALL_MAX, StoreError};
use crate::node_client::{HASH_HEADER, TIME_HEADER};
use backpack_shared::model::{Version, hash_hex};
use bytes::Bytes;
use std::io;
use std::time::Instant;
use tracing::error;

impl Service for App {
    async fn handle(&self, conn: &mut Conn, req: Request) -> io::Result<Next> {
        let head = req.method == "HEAD";
        // An unread body would be taken for the next request: close then.
        let unread_body = req.has_body();
        let result = match req.method.as_str() {
            "GET" | "HEAD" => get(self, conn, &req).await,
            "PUT" => {
                let mut body = OwnBody {
                    conn: &mut *conn,
                    expect_continue: req.expect_continue,
                };
                match self.put(&req, &mut body).await {
                    Ok(kept) => created(conn, kept, &req).await.map(|()| Next::KeepAlive),
                    Err(e) => Err(e),
                }
            }
            other => Err(ApiError::Method(other.to_owned())),
        };
        // A GET or HEAD carrying a body (odd, but legal) leaves it unread.
        let close_anyway = !req.keep_alive || (unread_body && req.method != "PUT");
        match result {
            Ok(Next::KeepAlive) if !close_anyway => Ok(Next::KeepAlive),
            Ok(_) => Ok(Next::Close),
            Err(e) => {
                // After a PUT error the body may be partly read: close.
                let close = close_anyway || unread_body || req.method == "PUT";
                let answer = ErrorAnswer::from(e);
                let allow: &[(&str, &str)] = match answer.allow {
                    Some(methods) => &[("Allow", methods)],
                    None => &[],
                };
                conn.respond_json(answer.status, &answer.body, allow, head, close)
                    .await?;
                Ok(if close { Next::Close } else { Next::KeepAlive })
            }
        }
    }
}

/// An upload's body, read from the connection.
struct OwnBody<'a> {
    conn: &'a mut Conn,
    expect_continue: bool,
}

impl UploadBody for OwnBody<'_> {
    async fn proceed(&mut self) -> Result<(), ApiError> {
        if self.expect_continue {
            self.conn.send_continue().await.map_err(io_error)?;
        }
        Ok(())
    }

    async fn chunk(&mut self, left: u64, got: u64, expected: u64) -> Result<Bytes, ApiError> {
        Ok(self.conn.body_chunk(left, got, expected).await?)
    }

    async fn read_into(&mut self, out: &mut Vec<u8>, len: u64) -> Result<(), ApiError> {
        Ok(self.conn.read_body_into(out, len).await?)
    }

    fn peer_gone(&self) -> bool {
        self.conn.peer_gone()
    }
}

async fn get(app: &App, conn: &mut Conn, req: &Request) -> Result<Next, ApiError> {
    let started = Instant::now();
    let head = req.method == "HEAD";
    let loc = match app.get(req)? {
        Answer::Json(json) => {
            conn.respond_json(200, &json, &[], head, false)
                .await
                .map_err(io_error)?;
            return Ok(Next::KeepAlive);
        }
        Answer::File(loc) => loc,
    };
    let out_head =
        ResponseHead::new(200, loc.data_len).header("Content-Type", "application/octet-stream");
    let out_head = with_version(out_head, loc.version()).finish(!req.keep_alive);
    if head {
        conn.write(&out_head).await.map_err(io_error)?;
        return Ok(Next::KeepAlive);
    }
    send_file(app, conn, &loc, out_head).await?;
    app.sent(loc.data_len, started);
    Ok(Next::KeepAlive)
}

/// Sends a stored file after `head`. Once the head is out, a failure can
/// only abort the connection (the client sees a short body, never corrupt
/// bytes presented as complete).
async fn send_file(
    app: &App,
    conn: &mut Conn,
    loc: &Location,
    head: Vec<u8>,
) -> Result<(), ApiError> {
    let store = app.store().clone();
    if loc.data_len <= SMALL_MAX {
        if let Some((volume, data_offset)) = store.probe_cached(loc) {
            // Head with MSG_MORE so it leaves in one segment with the
            // first file bytes; then the kernel copies page cache to
            // socket.
            conn.send_more(&head).await.map_err(io_error)?;
            return conn
                .sendfile(volume.file(), data_offset, loc.data_len)
                .await
                .map_err(io_error);
        }
        let loc = *loc;
        let data = tokio::task::spawn_blocking(move || store.read_small(&loc))
            .await
            .map_err(|_| StoreError::Closed)??;
        let mut out = head;
        out.extend_from_slice(&data);
        return conn.write(&out).await.map_err(io_error);
    }
    let mut reader = store.read_large(loc)?;
    conn.write(&head).await.map_err(io_error)?;
    loop {
        let (r, chunk) = tokio::task::spawn_blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        reader = r;
        match chunk {
            Ok(Some(c)) => conn.write(&c).await.map_err(io_error)?,
            Ok(None) => return Ok(()),
            Err(e) => {
                error!(error = %e, "aborting a download");
                return Err(io_error(io::Error::other(e.to_string())));
            }
        }
    }
}

/// Answers 201 with the version the node now holds for the name.
async fn created(conn: &mut Conn, kept: Version, req: &Request) -> Result<(), ApiError> {
    let out = with_version(ResponseHead::new(201, 0), kept).finish(!req.keep_alive);
    conn.write(&out).await.map_err(io_error)
}

/// The version of the copy answered: `X-Backpack-Time` and
/// `X-Backpack-Hash`, the headers `node_client` reads.
fn with_version(head: ResponseHead, v: Version) -> ResponseHead {
    head.header(TIME_HEADER, v.time_ms)
        .header(HASH_HEADER, hash_hex(v.content_hash))
}
