//! `GET //files?from=<key>&to=<key>`: the node's files, streamed as
//! NDJSON in the order every node shares, so a checker can merge-join the
//! listings of a shard's nodes.
//!
//! A target starting with `//` can never be a file's name (names have no
//! empty segment, [`backpack_shared::model::name`]), so this interface
//! cannot collide with one. The order is the name's
//! [`name_key`](backpack_shared::model::name_key) (XXH3-64 of the name),
//! then the name; `from` is inclusive, `to` exclusive, both 16 lowercase
//! hex digits (`from` omitted: 0; `to` omitted: to the end of the key
//! space, `ffffffffffffffff` included). Each line is
//! `{"key":"..","name":"/a.jpg","size":123,"time":1700000000000,"hash":".."}`
//! (`time` the version's ms, `hash` its content hash as in
//! `X-Backpack-Hash`), then `{"end":true,"files":<count>}`: a listing
//! without that line was cut short.
//!
//! Memory: the index is read one part ([`PARTS`]) at a time, so a listing
//! holds one part's matches (about 1/256 of the files), whatever the range.

use super::api::ApiError;
use crate::node::index::{Listed, PARTS, part_of};
use crate::node::store::Store;
use backpack_shared::model::hash_hex;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// The listing's path.
pub const PATH: &str = "//files";

/// Bytes of NDJSON sent at a time (a part's lines are cut into pieces of
/// about this size).
const PIECE: usize = 256 * 1024;

/// The keys asked for: `from..=last`, or nothing when the range is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub from: u64,
    /// Last key included; `None` for an empty range (`from == to`).
    pub last: Option<u64>,
}

/// Reads a `//...` target: the listing's range, or the error answered
/// (404 for another path, 400 for bad parameters).
pub fn parse(target: &str) -> Result<KeyRange, ApiError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != PATH {
        return Err(ApiError::NoEndpoint(path.to_owned()));
    }
    let (mut from, mut to) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "from" => &mut from,
            "to" => &mut to,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {k:?} of {PATH}; it takes only from and to (16 lowercase hex digits each)"
                )));
            }
        };
        if slot.is_some() {
            return Err(ApiError::BadRequest(format!(
                "parameter {k} given twice; give it once"
            )));
        }
        *slot = Some(key(k, v)?);
    }
    let from = from.unwrap_or(0);
    let last = match to {
        None => Some(u64::MAX),
        Some(to) if to < from => {
            return Err(ApiError::BadRequest(format!(
                "from {from:016x} is after to {to:016x}; give from <= to (to is exclusive)"
            )));
        }
        Some(to) => to.checked_sub(1).filter(|_| to > from),
    };
    Ok(KeyRange { from, last })
}

fn key(param: &str, v: &str) -> Result<u64, ApiError> {
    let ok = v.len() == 16 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match u64::from_str_radix(v, 16) {
        Ok(k) if ok => Ok(k),
        _ => Err(ApiError::BadRequest(format!(
            "{param}={v:?} is not a key; give 16 lowercase hex digits, such as 8000000000000000"
        ))),
    }
}

/// A listing being produced, a piece at a time.
pub struct Listing {
    store: Arc<Store>,
    range: KeyRange,
    /// The next part to read, once `rows` are sent.
    next_part: usize,
    rows: std::vec::IntoIter<Listed>,
    files: u64,
    ended: bool,
}

impl Listing {
    pub fn new(store: Arc<Store>, range: KeyRange) -> Listing {
        let next_part = match range.last {
            Some(_) => part_of(range.from),
            None => PARTS,
        };
        Listing {
            store,
            range,
            next_part,
            rows: Vec::new().into_iter(),
            files: 0,
            ended: false,
        }
    }

    /// The next piece of NDJSON, the end line last; `None` after it.
    /// Blocking: it reads the index a part at a time (under its lock only
    /// while copying the part's matches out).
    pub fn next_piece(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        while out.len() < PIECE {
            if let Some(row) = self.rows.next() {
                line(&mut out, &row);
                self.files += 1;
                continue;
            }
            match self.range.last {
                Some(last) if self.next_part <= part_of(last) => {
                    let rows = self.store.list_part(self.next_part, self.range.from, last);
                    self.rows = rows.into_iter();
                    self.next_part += 1;
                }
                _ if self.ended => break,
                _ => {
                    out.put_slice(
                        format!("{{\"end\":true,\"files\":{}}}\n", self.files).as_bytes(),
                    );
                    self.ended = true;
                    break;
                }
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

/// One file's line.
fn line(out: &mut BytesMut, row: &Listed) {
    let name = serde_json::Value::String(row.name.clone()).to_string();
    out.put_slice(
        format!(
            "{{\"key\":\"{}\",\"name\":{name},\"size\":{},\"time\":{},\"hash\":\"{}\"}}\n",
            hash_hex(row.key),
            row.loc.data_len,
            row.loc.time_ms,
            hash_hex(row.loc.content_hash)
        )
        .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        fn check(target: &str, expected: Result<(u64, Option<u64>), u16>) {
            let got = parse(target)
                .map(|r| (r.from, r.last))
                .map_err(|e| e.status());
            assert_eq!(got, expected, "{target}");
        }
        let k = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
        check("//files", Ok((0, Some(u64::MAX))));
        check("//files?", Ok((0, Some(u64::MAX))));
        check("//files?from=00000000000000ff", Ok((255, Some(u64::MAX))));
        check(
            "//files?from=0000000000000010&to=8000000000000000",
            Ok((16, Some(k("7fffffffffffffff")))),
        );
        check("//files?to=0000000000000001", Ok((0, Some(0))));
        check("//files?to=0000000000000000", Ok((0, None)));
        check(
            "//files?from=0000000000000005&to=0000000000000005",
            Ok((5, None)),
        );
        check(
            "//files?from=ffffffffffffffff",
            Ok((u64::MAX, Some(u64::MAX))),
        );
        for bad in [
            "//files?from=FFFFFFFFFFFFFFFF",
            "//files?from=ff",
            "//files?from=0x00000000000000",
            "//files?from=+000000000000001",
            "//files?from=",
            "//files?from=0000000000000002&to=0000000000000001",
            "//files?from=0000000000000000&from=0000000000000000",
            "//files?limit=10",
        ] {
            check(bad, Err(400));
        }
        check("//nope", Err(404));
        check("//files/x", Err(404));
        check("//", Err(404));
    }
}
