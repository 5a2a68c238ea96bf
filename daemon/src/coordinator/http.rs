//! The HTTP API, on plain hyper. Requests are routed by the request
//! target exactly as the client sent it, taken from the connection before
//! hyper parses it (see [`crate::raw_target`]): no router, no
//! normalisation, and a name hyper would cut or refuse gets our answer.
//!
//! - `PUT /<name>`: an upload (see [`super::upload`]).
//! - `GET /stats`: the original's JSON figures plus ours.
//! - `GET /metrics`: Prometheus text.
//! - `GET /health`: 200 when uploads can be taken; 503 while starting,
//!   shutting down, or when the queue cannot take their copies (no queue
//!   Redis answers, or one may evict them).
//! - `GET|HEAD /<shard>:<name>`: the file, from any node of the shard (see
//!   [`super::read`]).
//! - Other paths: 404; other methods: 405.
//!
//! Errors answer JSON `{"error": "..."}` through [`ApiError`] (see
//! [`super::error`]); 5xx are also logged. Bodies end with a newline, like
//! the original's (see [`super::response`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use backpack_shared::model::name::split_read_target;
use backpack_shared::model::{Name, hash_hex};

use super::App;
use super::error::ApiError;
use super::response::{Body, json_response, text_response};
use super::stats::{Snapshot, metrics_text, stats_json};
use super::{read, upload};
use crate::node_client::{HASH_HEADER, TIME_HEADER, UNORDERED_HEADER};
use crate::raw_target::{Lines, RawRequest, RawTargets};
use crate::send_floor::SendFloor;

/// Accepts connections until `shutdown`, then lets in-flight requests
/// finish within `deadline` (see [`crate::accept`]).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: CancellationToken,
    deadline: Duration,
) {
    let limit = app.connections.clone();
    crate::accept::serve(listener, &shutdown, deadline, &limit, |stream| {
        serve_connection(stream, app.clone(), shutdown.clone())
    })
    .await;
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Arc<App>,
    shutdown: CancellationToken,
) {
    let stream = SendFloor::new(stream, app.config.send_rule, app.stats.slow_readers.clone());
    let (stream, lines) = RawTargets::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let lines = lines.clone();
        async move { Ok::<_, Infallible>(handle(&app, &lines, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(app: &App, lines: &Lines, req: Request<Incoming>) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let numbered = req.uri().path_and_query().map_or("", |p| p.as_str());
    let Some(raw) = lines.take(numbered) else {
        let mut resp = ApiError::LostRequestLine.into_response(head);
        close(&mut resp);
        return resp;
    };
    let mut resp = route(app, &raw, req, head).await;
    if raw.close {
        close(&mut resp);
    }
    resp
}

fn close(resp: &mut Response<Body>) {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

async fn route(app: &App, raw: &RawRequest, req: Request<Incoming>, head: bool) -> Response<Body> {
    if let Some(e) = &raw.refused {
        app.stats.bad_head();
        return ApiError::BadHead(e.clone()).into_response(head);
    }
    let target = raw.target.as_slice();
    match *req.method() {
        Method::PUT => put(app, target, req).await,
        Method::GET | Method::HEAD => {
            let path = target.split(|&b| b == b'?').next().unwrap_or(target);
            match path {
                b"/stats" => stats(app, head).await,
                b"/metrics" => metrics(app, head).await,
                b"/health" => health(app, head),
                other => match split_read_target(target) {
                    Some((shard, name)) => match Name::parse(&name) {
                        Ok(name) => read::read(app, shard, &name, head, req.headers()).await,
                        Err(e) => ApiError::BadName(e).into_response(head),
                    },
                    None => ApiError::NotFound(String::from_utf8_lossy(other).into_owned())
                        .into_response(head),
                },
            }
        }
        ref other => ApiError::Method(other.clone()).into_response(head),
    }
}

async fn put(app: &App, target: &[u8], req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    // The Content-Length, once known, for the counters.
    let mut len = 0;
    let result = match name_and_length(app, target, &req) {
        Ok((name, n)) => {
            len = n;
            upload::upload(app, name, len, req.into_body()).await
        }
        Err(e) => Err(e),
    };
    let took = started.elapsed();
    let (status, resp) = match result {
        Ok(done) => {
            let mut resp = json_response(
                StatusCode::OK,
                &serde_json::json!({ "shard_id": done.shard }),
                false,
            );
            // The stored copy's version, as the node said it.
            if let Some(v) = done.version {
                let h = resp.headers_mut();
                h.insert(TIME_HEADER, HeaderValue::from(v.time_ms));
                if let Ok(hash) = HeaderValue::from_str(&hash_hex(v.content_hash)) {
                    h.insert(HASH_HEADER, hash);
                }
            }
            if let Some(why) = done.unordered {
                resp.headers_mut()
                    .insert(UNORDERED_HEADER, HeaderValue::from_static(why.label()));
            }
            (StatusCode::OK, resp)
        }
        Err(e) => (e.status(), e.into_response(false)),
    };
    app.stats.upload(status.as_u16(), len, took);
    if let Some(statsd) = &app.statsd {
        statsd.upload(status == StatusCode::OK, took);
    }
    resp
}

/// An upload's name (the request target, as sent) and length
/// (Content-Length), checked in this order.
fn name_and_length(
    app: &App,
    target: &[u8],
    req: &Request<Incoming>,
) -> Result<(Name, u64), ApiError> {
    let name = Name::parse_limited(target, app.config.max_name_len).map_err(ApiError::BadName)?;
    let mut values = req.headers().get_all(header::CONTENT_LENGTH).iter();
    let Some(v) = values.next() else {
        return Err(ApiError::LengthRequired);
    };
    let len = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| ApiError::BadRequest("Content-Length must be a number of bytes".into()))?;
    Ok((name, len))
}

/// Renders the counters with what they need from outside, read now: the
/// queue's figures from Redis, the live view, the queue servers' settings.
async fn report<T>(app: &App, render: impl FnOnce(&Snapshot<'_>) -> T) -> T {
    let queue = app.view.borrow().queue.clone();
    let (queue_length, queue_oldest) = match queue {
        Some(queue) => tokio::join!(async { queue.len().await.overall }, queue.oldest_age()),
        None => (None, None),
    };
    let view = app.view.borrow().clone();
    render(&Snapshot {
        stats: &app.stats,
        view: &view,
        queue_length,
        queue_oldest,
        queue_servers: app.queue_check.servers(),
        pending_fill: app.fill.pending_total(),
        zk_connected: app.zk_connected(),
        upload_slots_free: app.upload_slots.available_permits(),
        connections_refused: app
            .connections
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        spill_bytes: app
            .holder
            .spilled_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}

async fn stats(app: &App, head: bool) -> Response<Body> {
    let value = report(app, stats_json).await;
    json_response(StatusCode::OK, &value, head)
}

async fn metrics(app: &App, head: bool) -> Response<Body> {
    let text = report(app, metrics_text).await;
    text_response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
        head,
    )
}

fn health(app: &App, head: bool) -> Response<Body> {
    let ready = app.view.borrow().ready;
    let shutting_down = app.shutting_down.is_cancelled();
    let evicting = app.queue_evicting();
    let unreachable = app.queue_check.unreachable();
    // Worst first: what stops every upload before what stops some.
    let (status, text) = if shutting_down {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !ready {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if unreachable.is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads fail: no queue Redis answers, so their copies cannot be queued",
        )
    } else if evicting.is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "uploads refused: a queue Redis may evict queued copies",
        )
    } else {
        (StatusCode::OK, "ok")
    };
    let servers: Vec<serde_json::Value> = app
        .queue_check
        .servers()
        .iter()
        .map(|r| {
            serde_json::json!({
                "server": r.addr().to_string(),
                "reachable": r.reachable,
                "since_ms": r.since_ms,
                "error": r.error,
            })
        })
        .collect();
    json_response(
        status,
        &serde_json::json!({
            "status": text,
            "ready": ready,
            "zookeeper_connected": app.zk_connected(),
            "queue_evicting": evicting,
            "queue_unreachable": unreachable,
            "queue_servers": servers,
        }),
        head,
    )
}
