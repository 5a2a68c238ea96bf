//! What the node's API needs of a request, read from hyper's head with
//! the raw target beside it, and the refusals of the HTTP layer.

use crate::node_client::{AFTER_HEADER, TIME_HEADER};
use crate::raw_target::MAX_HEAD;
use std::time::Duration;

/// A request the protocol itself refuses, or a body that did not arrive.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("request head over {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("body ended after {got} of the {expected} bytes announced by Content-Length")]
    ShortBody { got: u64, expected: u64 },
    #[error("the body stalled for more than {0:?} (--body-timeout)")]
    Timeout(Duration),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge => 431,
            HttpError::ShortBody { .. } => 400,
            HttpError::Timeout(_) => 408,
        }
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
