//! Recovery: the index rebuilt from the volumes at start.
//!
//! Every volume is read front to back and every record's checksums
//! verified; the index is rebuilt from the valid `put` records. A torn or
//! corrupt tail (what a crash leaves) is cut off with a warning; a corrupt
//! record in the middle is skipped (never served) and logged. A record of
//! a format this binary does not know is never cut: the node refuses to
//! start ([`UnknownRecord`]).

use super::{StoreError, Volume, io_err, location, parse_volume_name, set_slot, volume_path};
use crate::node::index::Index;
use crate::node::record::{self, HEADER_LEN, Header, Kind, MAX_NAME_LEN, TRAILER_LEN};
use backpack_shared::model::ContentHasher;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

const SCAN_BUFFER: usize = 4 * 1024 * 1024;

/// What the volumes hold, as read at start.
pub(super) struct Recovered {
    pub index: Index,
    /// Indexed by volume id; ids need not be dense.
    pub volumes: Vec<Option<Arc<Volume>>>,
    /// The valid length of the last volume (0 when there is none).
    pub tail: u64,
}

/// Opens every volume in `dir` and scans it, in id order. Blocking: it
/// reads them all.
pub(super) fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let mut ids = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("cannot list {}", dir.display())))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_volume_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();

    let started = std::time::Instant::now();
    let mut index = Index::new();
    let mut volumes: Vec<Option<Arc<Volume>>> = Vec::new();
    let mut last_tail = 0;
    for &id in &ids {
        let path = volume_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|cause| StoreError::DirNotWritable {
                path: path.clone(),
                cause,
            })?;
        last_tail = scan_volume(&file, id, &path, &mut index).map_err(|e| {
            match e.get_ref().and_then(|i| i.downcast_ref::<UnknownRecord>()) {
                Some(u) => StoreError::UnknownRecord(u.to_string()),
                None => io_err(format!("cannot read volume {}", path.display()))(e),
            }
        })?;
        set_slot(&mut volumes, Arc::new(Volume { id, file, path }));
    }
    if !ids.is_empty() {
        info!(
            volumes = ids.len(),
            files = index.len(),
            bytes = index.live_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "index rebuilt from the volumes"
        );
    }
    Ok(Recovered {
        index,
        volumes,
        tail: last_tail,
    })
}

/// Reads one volume front to back, offering every valid record to the
/// index, and cuts off a torn tail. Returns the volume's valid length.
fn scan_volume(file: &File, id: u32, path: &Path, index: &mut Index) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut pos = 0u64;
    let mut valid_end = 0u64;
    let mut fixed = [0u8; HEADER_LEN];
    let mut name = Vec::new();
    while pos < len {
        let header = if len - pos < HEADER_LEN as u64 {
            None
        } else {
            read_exact(&mut r, &mut fixed)?;
            match Header::parse(&fixed) {
                Ok(h) if len - pos >= h.record_len() => {
                    name.resize(h.name_len as usize, 0);
                    read_exact(&mut r, &mut name)?;
                    Header::verify(&fixed, &name).ok().map(|_| h)
                }
                Ok(_) => None,
                Err(_) => {
                    refuse_unknown(file, &fixed, pos, len, path)?;
                    None
                }
            }
        };
        let Some(h) = header else {
            // Not a valid header here: a torn tail, or damage in the middle
            // if a valid record follows.
            match find_next_header(file, pos + 1, len)? {
                Some(next) => {
                    warn!(volume = %path.display(), from = pos, to = next, "skipping damaged bytes inside the volume");
                    pos = next;
                    r.seek(io::SeekFrom::Start(pos))?;
                    continue;
                }
                None => break,
            }
        };
        let rec_len = h.record_len();
        match h.kind {
            Kind::Aborted => {
                r.seek_relative((h.data_len + TRAILER_LEN as u64) as i64)?;
                valid_end = pos + rec_len;
            }
            Kind::Put => {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(&fixed);
                hasher.update(&name);
                // Records carry no content hash: it is computed here, on
                // the pass that checks the CRC anyway.
                let mut content = ContentHasher::new();
                let mut left = h.data_len;
                while left > 0 {
                    let buf = r.fill_buf()?;
                    if buf.is_empty() {
                        return Err(ErrorKind::UnexpectedEof.into());
                    }
                    let take = buf.len().min(left as usize);
                    hasher.update(&buf[..take]);
                    content.update(&buf[..take]);
                    r.consume(take);
                    left -= take as u64;
                }
                let mut t = [0u8; TRAILER_LEN];
                read_exact(&mut r, &mut t)?;
                let name_str = std::str::from_utf8(&name).ok();
                match name_str {
                    Some(n) if hasher.finalize() == record::trailer_crc(&t) => {
                        index.offer(n, location(&h, id, pos, content.finish()));
                        valid_end = pos + rec_len;
                    }
                    _ => {
                        // Logged now; if it turns out to be the tail it is
                        // cut below, otherwise it stays, never indexed.
                        warn!(volume = %path.display(), offset = pos, "record fails its checksum, not indexed");
                    }
                }
            }
        }
        pos += rec_len;
    }
    if valid_end < len {
        warn!(
            volume = %path.display(),
            valid_bytes = valid_end,
            cut_bytes = len - valid_end,
            "torn or corrupt tail (an interrupted write); cutting it off"
        );
        file.set_len(valid_end)?;
        file.sync_all()?;
    }
    Ok(valid_end)
}

/// A record of a format this binary does not know, at `pos`.
#[derive(Debug, thiserror::Error)]
#[error(
    "volume {path} holds a record of {what} at offset {offset}, which this backpack-node (record format {known}) does not know: it was written by a newer release. Nothing was changed; run that release on this data directory (or, if no newer release ever ran here, the record is damaged: move the volume aside and restore it from the shard's other nodes)"
)]
pub struct UnknownRecord {
    pub path: String,
    pub offset: u64,
    pub what: String,
    pub known: u8,
}

/// Fails the scan if the header at `pos` (which this binary cannot parse)
/// is a newer release's record rather than damage: cutting it would delete
/// that release's files.
fn refuse_unknown(
    file: &File,
    fixed: &[u8; HEADER_LEN],
    pos: u64,
    len: u64,
    path: &Path,
) -> io::Result<()> {
    match unknown_format_at(file, fixed, pos, len) {
        Some(what) => Err(io::Error::new(
            ErrorKind::InvalidData,
            UnknownRecord {
                path: path.display().to_string(),
                offset: pos,
                what,
                known: record::VERSION,
            },
        )),
        None => Ok(()),
    }
}

/// What the header `fixed` at `pos` is when a newer release wrote it
/// ([`record::unknown_format`]), reading the name it announces (which its
/// checksum covers) if that fits before `len`.
fn unknown_format_at(file: &File, fixed: &[u8; HEADER_LEN], pos: u64, len: u64) -> Option<String> {
    let n = record::announced_name_len(fixed);
    let mut name = vec![0u8; n.min(MAX_NAME_LEN)];
    let readable = n <= MAX_NAME_LEN
        && pos + (HEADER_LEN + n) as u64 <= len
        && file
            .read_exact_at(&mut name, pos + HEADER_LEN as u64)
            .is_ok();
    record::unknown_format(fixed, readable.then_some(&name[..]))
}

fn read_exact(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf)
}

/// The offset of the next valid record header at or after `from`.
pub(super) fn find_next_header(file: &File, from: u64, len: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at + (HEADER_LEN as u64) <= len {
        let n = CHUNK.min((len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        for i in 0..n.saturating_sub(3) {
            if &buf[i..i + 4] != b"BKPK" {
                continue;
            }
            let cand = at + i as u64;
            if cand + HEADER_LEN as u64 > len {
                return Ok(None);
            }
            let mut fixed = [0u8; HEADER_LEN];
            file.read_exact_at(&mut fixed, cand)?;
            let Ok(h) = Header::parse(&fixed) else {
                // A newer release's record after the damage: stop here, so
                // the scan meets it (and refuses) instead of cutting it.
                if unknown_format_at(file, &fixed, cand, len).is_some() {
                    return Ok(Some(cand));
                }
                continue;
            };
            if cand + h.record_len() > len || h.name_len as usize > MAX_NAME_LEN {
                continue;
            }
            let mut name = vec![0u8; h.name_len as usize];
            file.read_exact_at(&mut name, cand + HEADER_LEN as u64)?;
            if Header::verify(&fixed, &name).is_ok() {
                return Ok(Some(cand));
            }
        }
        // Overlap so a magic split across chunks is still seen.
        at += (n as u64).saturating_sub(3).max(1);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{get, put, rt};
    use super::super::{Store, StoreError, now_ms};
    use super::*;
    use bytes::Bytes;
    use std::path::PathBuf;

    #[test]
    fn reopen_and_damage_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
            for i in 0..10 {
                put(
                    &store,
                    &rt,
                    &format!("/f{i}"),
                    format!("data {i}").as_bytes(),
                );
            }
            store.close();
        }
        // Damage record 3's header: the scan must resync and keep the rest.
        let path = volume_path(dir.path(), 1);
        let bytes = std::fs::read(&path).unwrap();
        let rec = record::record_len(3, 6) as usize;
        let mut damaged = bytes.clone();
        damaged[3 * rec] = b'X';
        // And flip a data byte of record 5: skipped, never served.
        damaged[5 * rec + HEADER_LEN + 3 + 2] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        for i in 0..10 {
            let got = get(&store, &format!("/f{i}"));
            if i == 3 || i == 5 {
                assert_eq!(got, None, "/f{i}");
            } else {
                assert_eq!(got.unwrap(), format!("data {i}").as_bytes());
            }
        }
        // Nothing in the middle was cut.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
    }

    /// A volume with `/a`, `/b`, `/c`, closed; its path and bytes, and
    /// the length of one record.
    fn three_records(dir: &Path) -> (PathBuf, Vec<u8>, usize) {
        let rt = rt();
        let store = Arc::new(Store::open(dir, 1 << 30).unwrap());
        for n in ["/a", "/b", "/c"] {
            put(&store, &rt, n, b"data");
        }
        store.close();
        let path = volume_path(dir, 1);
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes, record::record_len(2, 4) as usize)
    }

    fn refuses_without_a_change(dir: &Path, path: &Path, volume: &[u8], says: &str) {
        std::fs::write(path, volume).unwrap();
        match Store::open(dir, 1 << 30) {
            Err(StoreError::UnknownRecord(m)) => {
                assert!(m.contains(says) && m.contains("newer release"), "{m}")
            }
            Err(e) => panic!("another error: {e}"),
            Ok(_) => panic!("opened a volume with a record it does not know"),
        }
        assert_eq!(
            std::fs::read(path).unwrap(),
            volume,
            "the volume was changed"
        );
    }

    #[test]
    fn records_of_a_newer_format_are_refused_never_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes, rec) = three_records(dir.path());

        // The last record as a later format version wrote it.
        let mut v2 = bytes.clone();
        v2[2 * rec + 4] = 2;
        refuses_without_a_change(dir.path(), &path, &v2, "format version 2");

        // A kind this binary does not know, its header checksum right.
        let mut kind = bytes.clone();
        let at = 2 * rec;
        kind[at + 5] = 3;
        let mut fixed = [0u8; HEADER_LEN];
        fixed.copy_from_slice(&kind[at..at + HEADER_LEN]);
        let crc = record::header_crc(&fixed, &kind[at + HEADER_LEN..at + HEADER_LEN + 2]);
        kind[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
        refuses_without_a_change(dir.path(), &path, &kind, "kind 3");

        // After damage in the middle, the resync stops at it too.
        let mut after_damage = v2.clone();
        after_damage[rec] = b'X';
        refuses_without_a_change(dir.path(), &path, &after_damage, "format version 2");

        // An unknown kind whose checksum fails is damage, as before: the
        // torn tail is cut and the rest served.
        let mut damaged = bytes.clone();
        damaged[2 * rec + 5] = 3;
        std::fs::write(&path, &damaged).unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(get(&store, "/a").unwrap(), b"data");
        assert_eq!(get(&store, "/c"), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * rec as u64);
    }

    #[test]
    fn aborted_upload_is_skipped_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
            put(&store, &rt, "/before", b"1");
            let mut up = rt
                .block_on(store.begin_large("/big", now_ms(), false, 10))
                .unwrap();
            rt.block_on(up.write(Bytes::from_static(b"abc"))).unwrap();
            drop(up);
            put(&store, &rt, "/after", b"2");
            store.close();
        }
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(get(&store, "/before").unwrap(), b"1");
        assert_eq!(get(&store, "/after").unwrap(), b"2");
        assert!(store.lookup("/big").is_none());
    }
}
