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
    /// `Range` and `If-Range`, as sent.
    pub range: Option<String>,
    pub if_range: Option<String>,
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
            range: None,
            if_range: None,
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
        } else if name.eq_ignore_ascii_case("range") {
            self.range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("if-range") {
            self.if_range = Some(value.to_owned());
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

/// What a GET answers for a file of `len` bytes given its `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// 200, the whole file: no range, several ranges (RFC 9110 allows
    /// the whole instead), a unit other than bytes or a malformed header.
    Whole,
    /// 206, bytes `first..=last`.
    Bytes { first: u64, last: u64 },
    /// 416: no byte of the file is in the range.
    Unsatisfiable,
}

/// Reads one `Range: bytes=...` against a file of `len` bytes (RFC 9110
/// 14.1.2: `a-b`, `a-`, `-n`; a last position past the end is cut).
pub fn part(range: Option<&str>, len: u64) -> Part {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Part::Whole;
    };
    if spec.contains(',') {
        return Part::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Part::Whole;
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    match (a.trim().is_empty(), num(a), num(b)) {
        // The last n bytes.
        (true, _, Some(n)) if n == 0 || len == 0 => Part::Unsatisfiable,
        (true, _, Some(n)) => Part::Bytes {
            first: len.saturating_sub(n),
            last: len - 1,
        },
        (false, Some(first), _) if first >= len => Part::Unsatisfiable,
        (false, Some(first), None) if b.trim().is_empty() => Part::Bytes {
            first,
            last: len - 1,
        },
        (false, Some(first), Some(last)) if last >= first => Part::Bytes {
            first,
            last: last.min(len - 1),
        },
        _ => Part::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_like_rfc_9110() {
        let b = |first, last| Part::Bytes { first, last };
        for (range, want) in [
            (None, Part::Whole),
            (Some("bytes=0-0"), b(0, 0)),
            (Some("bytes=10-19"), b(10, 19)),
            (Some("bytes=10-"), b(10, 99)),
            (Some("bytes=-10"), b(90, 99)),
            (Some("bytes=-1000"), b(0, 99)),
            (Some("bytes=90-1000"), b(90, 99)),
            (Some("bytes=100-"), Part::Unsatisfiable),
            (Some("bytes=100-200"), Part::Unsatisfiable),
            (Some("bytes=-0"), Part::Unsatisfiable),
            (Some("bytes=0-1,5-6"), Part::Whole),
            (Some("bytes=5-1"), Part::Whole),
            (Some("items=0-1"), Part::Whole),
            (Some("bytes=x-1"), Part::Whole),
        ] {
            assert_eq!(part(range, 100), want, "{range:?}");
        }
        assert_eq!(part(Some("bytes=0-"), 0), Part::Unsatisfiable);
    }
}
