//! The on-disk record format of a volume file.
//!
//! A volume is a plain sequence of records, each self-describing so that the
//! index can be rebuilt by reading the volumes alone, and so that deletes and
//! compaction can be added later without migrating volumes (new kinds, same
//! framing). All integers are little-endian.
//!
//! ```text
//! offset size field
//!  0      4   magic       b"BKPK"
//!  4      1   version     1
//!  5      1   kind        1 = put, 2 = aborted (space of a failed upload), 3.. reserved (delete)
//!  6      2   flags       bit 0: time was given by the client (X-Backpack-Time)
//!  8      4   name_len    bytes of name, at most MAX_NAME_LEN
//! 12      4   header_crc  crc32 of bytes 0..32 (this field zeroed) and the name
//! 16      8   time_ms     upload time, milliseconds since the Unix epoch
//! 24      8   data_len    bytes of data
//! 32      n   name        the request target, UTF-8, exactly as received
//! 32+n    d   data
//! 32+n+d  4   record_crc  crc32 of header (as written), name and data
//! ```
//!
//! Every later version keeps bytes 0..16 as they are (magic, version, kind,
//! flags, name length, header checksum), so that a binary meeting a record
//! it does not know can tell it from damage: recovery then refuses to start
//! rather than cut a newer release's records ([`unknown_format`]).
//!
//! Two checksums: the header's lets a scan trust `name_len`/`data_len` (and
//! so find the next record) before it has read the data; the record's covers
//! everything and is what proves a record complete after a crash. The trailer
//! sits after the data so that an upload can be streamed to disk and its
//! checksum written last.

use crc32fast::Hasher;

/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 32;
/// Bytes of the trailing checksum.
pub const TRAILER_LEN: usize = 4;
/// Longest name (request target) the node stores, in bytes: a [`Name`]'s
/// limit. The format has room for 4 GiB.
///
/// [`Name`]: backpack_shared::model::Name
pub const MAX_NAME_LEN: usize = backpack_shared::model::Name::MAX_LEN;

const MAGIC: [u8; 4] = *b"BKPK";
/// The record format version this binary writes and reads.
pub const VERSION: u8 = 1;
/// Highest version byte taken for a newer release's record rather than
/// damage (versions are expected to grow one at a time).
const LAST_PLAUSIBLE_VERSION: u8 = 15;

/// Flag bit: `time_ms` came from the client's `X-Backpack-Time`.
pub const FLAG_CLIENT_TIME: u16 = 1;

/// What a record means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Stores `data` under `name`.
    Put,
    /// Space of an upload that failed half-way: skipped by scans.
    Aborted,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Put => 1,
            Kind::Aborted => 2,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        match code {
            1 => Some(Kind::Put),
            2 => Some(Kind::Aborted),
            _ => None,
        }
    }
}

/// The fixed part of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub flags: u16,
    pub name_len: u32,
    pub time_ms: u64,
    pub data_len: u64,
}

/// Why bytes are not a record header.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no record magic")]
    Magic,
    #[error("unknown record format version {0}")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("name length {0} over the limit")]
    NameLen(u32),
    #[error("header checksum mismatch")]
    Checksum,
}

impl Header {
    /// Total bytes of the record this header starts.
    pub fn record_len(&self) -> u64 {
        record_len(self.name_len as usize, self.data_len)
    }

    /// Offset of the data from the start of the record.
    pub fn data_offset(&self) -> u64 {
        (HEADER_LEN + self.name_len as usize) as u64
    }

    /// The 32 header bytes for this header and `name`, checksum included.
    pub fn encode(&self, name: &[u8]) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = self.kind.code();
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.name_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.time_ms.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        let crc = header_crc(&b, name);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses the fixed fields; the checksum needs the name, so it is
    /// checked separately by [`Header::verify`].
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
        if b[0..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != VERSION {
            return Err(HeaderError::Version(b[4]));
        }
        let kind = Kind::from_code(b[5]).ok_or(HeaderError::Kind(b[5]))?;
        let name_len = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if name_len as usize > MAX_NAME_LEN {
            return Err(HeaderError::NameLen(name_len));
        }
        Ok(Header {
            kind,
            flags: u16::from_le_bytes([b[6], b[7]]),
            name_len,
            time_ms: u64_at(b, 16),
            data_len: u64_at(b, 24),
        })
    }

    /// Checks the header checksum of `b` (as read) against `name`.
    pub fn verify(b: &[u8; HEADER_LEN], name: &[u8]) -> Result<(), HeaderError> {
        let stored = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if header_crc(b, name) == stored {
            Ok(())
        } else {
            Err(HeaderError::Checksum)
        }
    }
}

/// Total bytes of a record with this name and data length.
pub fn record_len(name_len: usize, data_len: u64) -> u64 {
    (HEADER_LEN + name_len + TRAILER_LEN) as u64 + data_len
}

/// What a header of a format this binary does not know is (`format version
/// 2`, `kind 3`), when the bytes say it was written by a newer release: our
/// magic with a later version, or our version with an unknown kind whose
/// header checksum holds (`name` is the name its header announces, if it
/// could be read). `None` for our own records and for damage.
pub fn unknown_format(b: &[u8; HEADER_LEN], name: Option<&[u8]>) -> Option<String> {
    if b[0..4] != MAGIC {
        return None;
    }
    match b[4] {
        v if v > VERSION && v <= LAST_PLAUSIBLE_VERSION => Some(format!("format version {v}")),
        VERSION if Kind::from_code(b[5]).is_none() => {
            let name = name?;
            (header_crc(b, name) == u32::from_le_bytes([b[12], b[13], b[14], b[15]]))
                .then(|| format!("kind {}", b[5]))
        }
        _ => None,
    }
}

/// The name length a header announces, whatever its version (bytes 8..12).
pub fn announced_name_len(b: &[u8; HEADER_LEN]) -> usize {
    u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize
}

/// Reads the trailer's stored checksum.
pub fn trailer_crc(t: &[u8; TRAILER_LEN]) -> u32 {
    u32::from_le_bytes(*t)
}

/// crc32 of the header with its checksum field zeroed, then the name.
pub(crate) fn header_crc(b: &[u8; HEADER_LEN], name: &[u8]) -> u32 {
    let mut h = Hasher::new();
    h.update(&b[0..12]);
    h.update(&[0u8; 4]);
    h.update(&b[16..32]);
    h.update(name);
    h.finalize()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// A whole record in memory (header, name, data, trailer): how small
/// uploads are written, in one positional write.
pub fn encode_record(header: &Header, name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(record_len(name.len(), data.len() as u64) as usize);
    buf.extend_from_slice(&header.encode(name));
    buf.extend_from_slice(name);
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Verifies a whole record read back from disk and returns the range of its
/// data inside `buf`.
pub fn check_record(buf: &[u8]) -> Result<std::ops::Range<usize>, RecordError> {
    let fixed: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(RecordError::Short)?;
    let header = Header::parse(fixed)?;
    if header.record_len() != buf.len() as u64 {
        return Err(RecordError::Short);
    }
    let body_end = buf.len() - TRAILER_LEN;
    let stored = u32::from_le_bytes([
        buf[body_end],
        buf[body_end + 1],
        buf[body_end + 2],
        buf[body_end + 3],
    ]);
    if crc32fast::hash(&buf[..body_end]) != stored {
        return Err(RecordError::Checksum);
    }
    Ok(header.data_offset() as usize..body_end)
}

/// Why bytes read back are not a valid whole record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("bad record header: {0}")]
    Header(#[from] HeaderError),
    #[error("record length does not match its header")]
    Short,
    #[error("record checksum mismatch")]
    Checksum,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(name: &[u8], data: &[u8]) -> Header {
        Header {
            kind: Kind::Put,
            flags: FLAG_CLIENT_TIME,
            name_len: name.len() as u32,
            time_ms: 1_700_000_000_123,
            data_len: data.len() as u64,
        }
    }

    #[test]
    fn round_trip() {
        let (name, data) = (b"/a/b?c=%20".as_slice(), b"hello".as_slice());
        let h = header(name, data);
        let rec = encode_record(&h, name, data);
        assert_eq!(rec.len() as u64, h.record_len());
        let fixed: [u8; HEADER_LEN] = rec[..HEADER_LEN].try_into().unwrap();
        assert_eq!(Header::parse(&fixed).unwrap(), h);
        Header::verify(&fixed, name).unwrap();
        let range = check_record(&rec).unwrap();
        assert_eq!(&rec[range], data);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let (name, data) = (b"/n".as_slice(), b"xyz".as_slice());
        let rec = encode_record(&header(name, data), name, data);
        for byte in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << bit;
                assert!(check_record(&bad).is_err(), "flip {byte}:{bit} undetected");
            }
        }
    }

    #[test]
    fn header_checks() {
        fn check(mutate: impl Fn(&mut [u8; HEADER_LEN]), expected: HeaderError) {
            let mut b = header(b"/n", b"").encode(b"/n");
            mutate(&mut b);
            let got = Header::parse(&b).and_then(|_| Header::verify(&b, b"/n"));
            assert_eq!(got, Err(expected));
        }
        check(|b| b[0] = b'X', HeaderError::Magic);
        check(|b| b[4] = 9, HeaderError::Version(9));
        check(|b| b[5] = 0, HeaderError::Kind(0));
        check(
            |b| b[8..12].copy_from_slice(&(MAX_NAME_LEN as u32 + 1).to_le_bytes()),
            HeaderError::NameLen(MAX_NAME_LEN as u32 + 1),
        );
        check(|b| b[20] ^= 1, HeaderError::Checksum);
        // The name is covered by the header checksum too.
        let b = header(b"/n", b"").encode(b"/n");
        assert_eq!(Header::verify(&b, b"/m"), Err(HeaderError::Checksum));
    }
}
