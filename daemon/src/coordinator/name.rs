//! Which upload names the coordinator accepts.
//!
//! A file's name is the request target exactly as received (path and
//! query, percent-encoding untouched); it is forwarded to the storage nodes
//! and written into replication tasks byte for byte, as the original does.
//! Names that some HTTP library on the way (a proxy, a client, the
//! replicator's) could rewrite are refused, so the name stored is the name
//! asked for: dot segments (`.`, `..`, also percent-encoded), empty
//! segments, control characters. So are our own endpoints and names longer
//! than the original node's log can hold (255 bytes by default).
//!
//! A fragment (`#...`) never reaches us: HTTP clients do not send it and
//! the request parser drops it.

/// Paths the coordinator answers itself; never file names.
pub const ENDPOINTS: [&str; 3] = ["/stats", "/metrics", "/health"];

/// Why a name is refused (the 400 answer's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the file name is empty; PUT to /<name>")]
    Empty,
    #[error("the request target must start with / (send the path, not an absolute URL)")]
    NotOrigin,
    #[error("the file name has {len} bytes, over the limit of {max} (--max-name-len)")]
    TooLong { len: usize, max: usize },
    #[error("the file name has a control character at byte {0}")]
    Control(usize),
    #[error(
        "the file name has an empty segment (//, or a trailing /); HTTP libraries may rewrite it"
    )]
    EmptySegment,
    #[error("the file name has a . or .. segment; HTTP libraries may rewrite it")]
    DotSegment,
    #[error("{0} is an endpoint of the coordinator, not a file name")]
    Endpoint(String),
}

/// The path part of a request target (before `?`).
pub fn path_part(target: &str) -> &str {
    target.split_once('?').map_or(target, |(p, _)| p)
}

/// Checks an upload's request target; `Ok` means it is stored as is.
pub fn check(target: &str, max_len: usize) -> Result<(), NameError> {
    if !target.starts_with('/') {
        return Err(if target.is_empty() {
            NameError::Empty
        } else {
            NameError::NotOrigin
        });
    }
    if let Some(i) = target.bytes().position(|b| b < 0x20 || b == 0x7f) {
        return Err(NameError::Control(i));
    }
    let path = path_part(target);
    if path == "/" {
        return Err(NameError::Empty);
    }
    if target.len() > max_len {
        return Err(NameError::TooLong {
            len: target.len(),
            max: max_len,
        });
    }
    if ENDPOINTS.contains(&path) {
        return Err(NameError::Endpoint(path.to_string()));
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(NameError::EmptySegment);
        }
        if is_dot_segment(segment) {
            return Err(NameError::DotSegment);
        }
    }
    Ok(())
}

/// `.` or `..`, also written with `%2e` (which URL parsers decode first).
fn is_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "." || decoded == ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ok(target: &str) {
        assert_eq!(check(target, 255), Ok(()), "{target}");
    }

    fn check_err(target: &str, expected: NameError) {
        assert_eq!(check(target, 255), Err(expected), "{target}");
    }

    #[test]
    fn accepts_what_nodes_store_as_is() {
        check_ok("/hi.txt");
        check_ok("/a/b/c.jpg");
        check_ok("/a%20b?x=1&y='2'");
        check_ok("/photos/%2F..%2F?size=big");
        check_ok("/statsx?x=1");
        check_ok("/stats/x");
        check_ok("/x?a//b");
        check_ok("/...");
        check_ok("/é");
        check_ok(&format!("/{}", "a".repeat(254)));
    }

    #[test]
    fn refuses_what_could_be_rewritten() {
        check_err("", NameError::Empty);
        check_err("/", NameError::Empty);
        check_err("/?x=1", NameError::Empty);
        check_err("http://h/x", NameError::NotOrigin);
        check_err("*", NameError::NotOrigin);
        check_err("/a//b", NameError::EmptySegment);
        check_err("//a", NameError::EmptySegment);
        check_err("/a/", NameError::EmptySegment);
        check_err("/a/./b", NameError::DotSegment);
        check_err("/a/..", NameError::DotSegment);
        check_err("/..", NameError::DotSegment);
        check_err("/a/%2e%2E/b", NameError::DotSegment);
        check_err("/.%2e", NameError::DotSegment);
        check_err("/a\tb", NameError::Control(2));
        check_err("/a\x7f", NameError::Control(2));
        check_err("/stats", NameError::Endpoint("/stats".into()));
        check_err("/metrics?x", NameError::Endpoint("/metrics".into()));
        check_err("/health", NameError::Endpoint("/health".into()));
        check_err(
            &format!("/{}", "a".repeat(255)),
            NameError::TooLong { len: 256, max: 255 },
        );
        assert_eq!(
            check("/abcd", 4),
            Err(NameError::TooLong { len: 5, max: 4 })
        );
    }
}
