//! The order of the stored copies of one name, the same on every node.
//!
//! A copy's version is its upload time (ms since the Unix epoch, assigned by
//! the node that first stored the upload, or sent by an original coordinator
//! in `X-Backpack-Time`), then its content hash: two copies with the same
//! time are ordered by the XXH3-64 of their bytes, so every node keeps the
//! same one whatever order they arrive in. Equal versions mean equal bytes
//! (up to a 64-bit hash collision).
//!
//! The hash is XXH3-64 with seed 0 (the xxHash specification), a function
//! of the data alone: every node computes it on the bytes it receives, and
//! recovery computes it again while it reads each record to check its CRC,
//! so records carry no new field for it.

use std::cmp::Ordering;
use std::fmt;

use xxhash_rust::xxh3::{Xxh3Default, xxh3_64};

/// A stored copy's place in the order of its name's copies: the later
/// version is the one every node keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// Upload time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// XXH3-64 of the data ([`content_hash`]).
    pub content_hash: u64,
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time_ms, self.content_hash).cmp(&(other.time_ms, other.content_hash))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    /// `<time_ms>/<hash as 16 hex digits>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.time_ms, hash_hex(self.content_hash))
    }
}

/// The content hash of `data`: XXH3-64, seed 0.
pub fn content_hash(data: &[u8]) -> u64 {
    xxh3_64(data)
}

/// A content hash as sent in `X-Backpack-Hash`: 16 lowercase hex digits.
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Parses [`hash_hex`]'s form (any case); `None` if it is not 1 to 16 hex
/// digits.
pub fn parse_hash_hex(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// [`content_hash`] over data that arrives in pieces; the result is the
/// same as hashing the pieces joined.
#[derive(Clone, Default)]
pub struct ContentHasher(Box<Xxh3Default>);

impl ContentHasher {
    pub fn new() -> ContentHasher {
        ContentHasher::default()
    }

    pub fn update(&mut self, piece: &[u8]) {
        self.0.update(piece);
    }

    pub fn finish(&self) -> u64 {
        self.0.digest()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn time_first_then_hash() {
        let v = |time_ms, content_hash| Version {
            time_ms,
            content_hash,
        };
        assert!(v(2, 0) > v(1, u64::MAX));
        assert!(v(1, 7) > v(1, 6));
        assert_eq!(v(1, 7).cmp(&v(1, 7)), Ordering::Equal);
    }

    #[test]
    fn pieces_hash_like_the_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for cut in [0, 1, 63, 64, 65, 240, 1024, 99_999, 300_000] {
            let mut h = ContentHasher::new();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            assert_eq!(h.finish(), content_hash(&data), "cut at {cut}");
        }
    }

    #[test]
    fn known_values() {
        // From the xxHash reference implementation (XXH3_64bits, seed 0).
        assert_eq!(content_hash(b""), 0x2d06800538d394c2);
        assert_eq!(hash_hex(0xab), "00000000000000ab");
        assert_eq!(parse_hash_hex("00000000000000AB"), Some(0xab));
        assert_eq!(parse_hash_hex(""), None);
        assert_eq!(parse_hash_hex("0123456789abcdef0"), None);
        assert_eq!(parse_hash_hex("xyz"), None);
    }
}
