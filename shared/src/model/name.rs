//! A file's name, and the one set of rules for it.
//!
//! A name is the request target of its upload (path and optional query),
//! byte for byte: `PUT /photos/a%20b.jpg?v=2` stores `/photos/a%20b.jpg?v=2`.
//! The same bytes are the request target of every PUT and GET on a storage
//! node, the record's name on disk, the `path` of a replication task's JSON,
//! the part after `<shard>:` in the read path `/<shard>:<name>` (the name's
//! leading `/` dropped) and what nginx forwards from `$request_uri`. Nothing
//! on the way decodes, re-encodes or normalises it.
//!
//! So a name holds only what every one of them carries unchanged: our
//! HTTP server and client (hyper and the `http` crate), the storage node,
//! nginx with the generated configuration, and curl on the read path.
//! Measured with Debian 12's curl 7.88 and nginx 1.22 and http 1.5:
//!
//! - printable ASCII only (0x21-0x7E): a space, CR or LF ends the target,
//!   other control bytes and DEL are refused by HTTP parsers, and curl
//!   percent-encodes bytes from 0x80 up in a path (so raw UTF-8 would be
//!   read back under another name);
//! - no `#`: every client cuts the target there (a fragment) and hyper
//!   drops the rest, so `/a#1` and `/a#2` would both be stored as `/a`;
//! - no `<`, `>` or `` ` `` in the path, and no `"`, `<` or `>` in the
//!   query: the `http` crate refuses them there;
//! - in the path, `%` starts two hex digits and is not `%00`: nginx answers
//!   400 otherwise (it decodes the path to route it);
//! - no `.` or `..` segment, also percent-encoded (`%2e`, `..%2f`): curl
//!   and URL libraries resolve them, nginx refuses those that climb above
//!   the root;
//! - no empty segment (`//`, a trailing `/`): many HTTP stacks merge or
//!   redirect them (nginx's `$uri`, web frameworks, SDKs), and they were
//!   never accepted;
//! - not an endpoint of a daemon (`/stats`, `/metrics`, `/health`, with
//!   any query), and at most [`Name::MAX_LEN`] bytes (the coordinator's
//!   `--max-name-len` is lower, 255 by default).
//!
//! Every refusal names the byte, where it is and the fix (usually: write
//! it percent-encoded, which is then part of the name as written).

use std::fmt;

/// A checked file name; see the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Paths the daemons answer themselves (any query); never file names.
pub const ENDPOINTS: [&str; 3] = ["/stats", "/metrics", "/health"];

/// Why a name is refused: the message says what and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the file name is empty; PUT to /<name>")]
    Empty,
    #[error("the request target must start with / (send the path, not an absolute URL)")]
    NotOrigin,
    #[error("the file name has {len} bytes, over the limit of {max} bytes; use a shorter name")]
    TooLong { len: usize, max: usize },
    #[error(
        "the file name has {} at byte {at}: {}; percent-encode it as %{byte:02X}",
        describe_byte(*.byte),
        .rule.why()
    )]
    Byte { at: usize, byte: u8, rule: ByteRule },
    #[error(
        "the file name has a % at byte {at} not followed by two hex digits: nginx refuses such a path; write a literal % as %25"
    )]
    Percent { at: usize },
    #[error(
        "the file name has %00 at byte {at}: nginx refuses a path with an encoded NUL byte; leave it out"
    )]
    EncodedNul { at: usize },
    #[error(
        "the file name has an empty segment (//, or a trailing /): HTTP stacks merge or redirect them; leave it out"
    )]
    EmptySegment,
    #[error(
        "the file name has a . or .. segment (also when percent-encoded): curl and URL libraries resolve it and nginx refuses it; leave it out"
    )]
    DotSegment,
    #[error("{0} is an endpoint of the daemons, not a file name")]
    Endpoint(String),
}

/// Which rule a refused byte breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRule {
    /// A space, a control byte or DEL.
    NotPrintable,
    /// 0x80 and up.
    NotAscii,
    /// `#`.
    Fragment,
    /// `<`, `>` or `` ` `` in the path.
    NotInPath,
    /// `"`, `<` or `>` in the query.
    NotInQuery,
}

impl ByteRule {
    fn why(self) -> &'static str {
        match self {
            ByteRule::NotPrintable => "a request line cannot carry it",
            ByteRule::NotAscii => {
                "curl and browsers send such bytes percent-encoded, so the file would be read back under another name"
            }
            ByteRule::Fragment => {
                "HTTP clients and servers cut the name there (the rest is a fragment, never sent)"
            }
            ByteRule::NotInPath => "HTTP parsers refuse it in a path",
            ByteRule::NotInQuery => "HTTP parsers refuse it in a query",
        }
    }
}

fn describe_byte(b: u8) -> String {
    match b {
        b' ' => "a space".into(),
        0x21..=0x7e => format!("'{}'", b as char),
        _ => format!("the byte 0x{b:02X}"),
    }
}

impl Name {
    /// Longest name, in bytes: what a storage node stores (its record
    /// format has room for more; this keeps a request line within HTTP
    /// servers' buffers).
    pub const MAX_LEN: usize = 16 * 1024;

    /// Checks a request target (path and optional query, as sent).
    pub fn parse(target: &[u8]) -> Result<Name, NameError> {
        Name::parse_limited(target, Name::MAX_LEN)
    }

    /// [`Name::parse`] with a lower length limit (bytes).
    pub fn parse_limited(target: &[u8], max_len: usize) -> Result<Name, NameError> {
        if target.first() != Some(&b'/') {
            return Err(if target.is_empty() {
                NameError::Empty
            } else {
                NameError::NotOrigin
            });
        }
        let max = max_len.min(Name::MAX_LEN);
        if target.len() > max {
            return Err(NameError::TooLong {
                len: target.len(),
                max,
            });
        }
        let path_end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        for (at, &byte) in target.iter().enumerate() {
            if let Some(rule) = byte_rule(byte, at >= path_end) {
                return Err(NameError::Byte { at, byte, rule });
            }
        }
        // Only ASCII is left: the bytes are a valid str.
        let text = String::from_utf8_lossy(target).into_owned();
        let path = &text[..path_end];
        check_path(path)?;
        Ok(Name(text))
    }

    /// The name as the request target, the record's name on disk and the
    /// task's `path`: always the same bytes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The read path of this name on `shard`: `/<shard>:<name without its
    /// leading />`, e.g. `/1:photos/a.jpg` for `/photos/a.jpg`.
    pub fn read_target(&self, shard: &str) -> String {
        format!("/{shard}:{}", &self.0[1..])
    }

    /// The name itself, for moving it out.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name's place in the order every storage node lists its files in:
/// the XXH3-64 (seed 0, as [`content_hash`](super::content_hash)) of the
/// name's bytes as stored, leading `/` included. A node lists by ranges
/// of this key (`GET //files?from=..&to=..`), so lists of a shard's nodes
/// merge-join without sorting names; a stable hash, not name order, so a
/// node can page through tens of millions of names without sorting them.
pub fn name_key(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// Splits a read path `/<shard>:<rest>` into the shard id and the stored
/// name's bytes `/<rest>` (unchecked). The shard id ends at the first
/// colon, so names may hold colons; it has no `/` or `?`. `None` when the
/// target is not a read path.
pub fn split_read_target(target: &[u8]) -> Option<(&str, Vec<u8>)> {
    let rest = target.strip_prefix(b"/")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let shard = std::str::from_utf8(&rest[..colon]).ok()?;
    if shard.is_empty() || shard.contains(['/', '?']) {
        return None;
    }
    let mut name = Vec::with_capacity(rest.len() - colon);
    name.push(b'/');
    name.extend_from_slice(&rest[colon + 1..]);
    Some((shard, name))
}

/// The same split for nginx: patterns over `$request_uri` (the raw request
/// target) that capture the shard id and the name without its leading `/`.
pub mod nginx {
    /// Captures `shard`.
    pub const SHARD_PATTERN: &str = "~^/(?<shard>[^:/?]+):";
    /// Captures `file`: forwarded as `/$file`, the name byte for byte.
    pub const FILE_PATTERN: &str = "~^/[^:/?]+:(?<file>.*)$";
}

/// The rule `byte` breaks, in the path or (`in_query`) the query.
fn byte_rule(byte: u8, in_query: bool) -> Option<ByteRule> {
    match byte {
        0x00..=0x20 | 0x7f => Some(ByteRule::NotPrintable),
        0x80..=0xff => Some(ByteRule::NotAscii),
        b'#' => Some(ByteRule::Fragment),
        b'<' | b'>' => Some(if in_query {
            ByteRule::NotInQuery
        } else {
            ByteRule::NotInPath
        }),
        b'`' if !in_query => Some(ByteRule::NotInPath),
        b'"' if in_query => Some(ByteRule::NotInQuery),
        _ => None,
    }
}

/// The path's rules: percent escapes, segments, endpoints.
fn check_path(path: &str) -> Result<(), NameError> {
    if path == "/" {
        return Err(NameError::Empty);
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |j: usize| bytes.get(j).and_then(|&b| (b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(NameError::Percent { at: i });
        };
        let value = (hi * 16 + lo) as u8;
        if value == 0 {
            return Err(NameError::EncodedNul { at: i });
        }
        decoded.push(value);
        i += 3;
    }
    if path[1..].split('/').any(str::is_empty) {
        return Err(NameError::EmptySegment);
    }
    // nginx decodes before it resolves segments: `..%2f` is `../`.
    if decoded[1..]
        .split(|&b| b == b'/')
        .any(|s| s == b"." || s == b"..")
    {
        return Err(NameError::DotSegment);
    }
    if ENDPOINTS.contains(&path) {
        return Err(NameError::Endpoint(path.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn name_key_is_xxh3_of_the_stored_bytes() {
        // XXH3-64 seed 0 of the bytes, leading `/` included (the same
        // function as the content hash, so one known value checks both).
        assert_eq!(name_key(""), 0x2d06800538d394c2);
        assert_eq!(name_key("/a.jpg"), super::super::content_hash(b"/a.jpg"));
        assert_ne!(name_key("/a.jpg"), name_key("a.jpg"));
    }

    fn ok(target: &str) {
        let name = Name::parse(target.as_bytes());
        assert_eq!(name.as_ref().map(Name::as_str), Ok(target), "{target}");
    }

    fn err(target: &[u8], expected: NameError) {
        assert_eq!(
            Name::parse(target),
            Err(expected),
            "{}",
            String::from_utf8_lossy(target)
        );
    }

    fn byte(at: usize, byte: u8, rule: ByteRule) -> NameError {
        NameError::Byte { at, byte, rule }
    }

    #[test]
    fn accepts_what_travels_byte_for_byte() {
        ok("/hi.txt");
        ok("/a/b/c.jpg");
        ok("/a%20b?x=1&y='2'");
        ok("/photos/%2Fx%2F?size=big");
        ok("/statsx?x=1");
        ok("/stats/x");
        ok("/x?a//b");
        ok("/x?a/../b");
        ok("/...");
        ok("/.a/b.");
        ok("/%C3%A9");
        ok("/\"json\":{\"a\":[1]}");
        ok("/a\\b|c^d[e]f{g}h~i!j$k&l'm(n)o*p+q,r;s=t@u:v");
        ok("/x?q=`a`{b}|c\\d^e[f]g'h'");
        ok("/x?%zz%00%");
        ok("/1:x");
        ok(&format!("/{}", "a".repeat(Name::MAX_LEN - 1)));
    }

    #[test]
    fn refuses_what_some_hop_would_change() {
        err(b"", NameError::Empty);
        err(b"/", NameError::Empty);
        err(b"/?x=1", NameError::Empty);
        err(b"http://h/x", NameError::NotOrigin);
        err(b"*", NameError::NotOrigin);
        err(b"/a b", byte(2, b' ', ByteRule::NotPrintable));
        err(b"/a\tb", byte(2, b'\t', ByteRule::NotPrintable));
        err(b"/a\x7f", byte(2, 0x7f, ByteRule::NotPrintable));
        err("/é".as_bytes(), byte(1, 0xc3, ByteRule::NotAscii));
        err(b"/x?\xff", byte(3, 0xff, ByteRule::NotAscii));
        err(b"/photo#1.jpg", byte(6, b'#', ByteRule::Fragment));
        err(b"/x?a#b", byte(4, b'#', ByteRule::Fragment));
        err(b"/a<b", byte(2, b'<', ByteRule::NotInPath));
        err(b"/a>b", byte(2, b'>', ByteRule::NotInPath));
        err(b"/a`b", byte(2, b'`', ByteRule::NotInPath));
        err(b"/a?\"", byte(3, b'"', ByteRule::NotInQuery));
        err(b"/a?<", byte(3, b'<', ByteRule::NotInQuery));
        err(b"/a%", NameError::Percent { at: 2 });
        err(b"/a%4", NameError::Percent { at: 2 });
        err(b"/a%zz", NameError::Percent { at: 2 });
        err(b"/a%00b", NameError::EncodedNul { at: 2 });
        err(b"/a//b", NameError::EmptySegment);
        err(b"//a", NameError::EmptySegment);
        err(b"/a/", NameError::EmptySegment);
        err(b"/a/?x", NameError::EmptySegment);
        err(b"/a/./b", NameError::DotSegment);
        err(b"/a/..", NameError::DotSegment);
        err(b"/..", NameError::DotSegment);
        err(b"/a/%2e%2E/b", NameError::DotSegment);
        err(b"/.%2e", NameError::DotSegment);
        err(b"/a/..%2fx", NameError::DotSegment);
        err(b"/a%2f%2e%2e%2fx", NameError::DotSegment);
        err(b"/photos/%2F..%2Fx?size=big", NameError::DotSegment);
        err(b"/stats", NameError::Endpoint("/stats".into()));
        err(b"/metrics?x", NameError::Endpoint("/metrics".into()));
        err(b"/health", NameError::Endpoint("/health".into()));
        err(
            format!("/{}", "a".repeat(Name::MAX_LEN)).as_bytes(),
            NameError::TooLong {
                len: Name::MAX_LEN + 1,
                max: Name::MAX_LEN,
            },
        );
        assert_eq!(
            Name::parse_limited(b"/abcd", 4),
            Err(NameError::TooLong { len: 5, max: 4 })
        );
    }

    #[test]
    fn messages_name_the_byte_and_the_fix() {
        let e = Name::parse(b"/photo#1.jpg").unwrap_err().to_string();
        assert!(e.contains("'#' at byte 6"), "{e}");
        assert!(e.contains("%23"), "{e}");
        let e = Name::parse("/é".as_bytes()).unwrap_err().to_string();
        assert!(e.contains("0xC3 at byte 1") && e.contains("%C3"), "{e}");
        let e = Name::parse(b"/a b").unwrap_err().to_string();
        assert!(e.contains("a space") && e.contains("%20"), "{e}");
    }

    #[test]
    fn read_targets_split_at_the_first_colon() {
        let name = Name::parse(b"/a:b/c?x=1:2").unwrap();
        assert_eq!(name.read_target("12"), "/12:a:b/c?x=1:2");
        assert_eq!(
            split_read_target(name.read_target("12").as_bytes()),
            Some(("12", name.as_str().as_bytes().to_vec()))
        );
        assert_eq!(
            split_read_target(b"/1:hi.txt"),
            Some(("1", b"/hi.txt".to_vec()))
        );
        assert_eq!(split_read_target(b"/hi.txt"), None);
        assert_eq!(split_read_target(b"/:x"), None);
        assert_eq!(split_read_target(b"/a/b:c"), None);
        assert_eq!(split_read_target(b"/a?b:c"), None);
    }

    #[test]
    fn every_single_byte_after_a_slash_is_decided_by_one_rule() {
        // A one-byte name is accepted exactly when the byte is printable
        // ASCII other than the refused ones (and not the start of a
        // broken escape, a dot segment or a query with an empty path).
        for b in 0..=255u8 {
            let accepted = Name::parse(&[b'/', b]).is_ok();
            let expected = (0x21..=0x7e).contains(&b) && !b"#<>`%./?".contains(&b);
            assert_eq!(accepted, expected, "byte 0x{b:02X}");
        }
    }
}
