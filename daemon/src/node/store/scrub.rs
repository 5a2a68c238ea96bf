//! The scrub: a background thread that reads every record of every volume
//! at a throttled rate (`--scrub-rate`) and verifies its checksums, so
//! damage that appears on disk while the node runs is found before a
//! reader meets it.
//!
//! A damaged record that is its name's current copy leaves the index at
//! once: GET answers 404 and readers move to the shard's next node. Every
//! damaged record (current or an older copy) is counted (`/stats`) and
//! logged with its volume, offset and name (when its header can still be
//! trusted).
//!
//! It never races the writers: a pass reads each volume only up to its
//! length when the pass reaches it, and a record found unsound is judged
//! only after a second read, unless it is a large upload still being
//! streamed into its reserved space ([`Reserved`]), which is skipped. It
//! holds the index lock only to remove a damaged copy, never while reading.

use super::{Reserved, Volume, Volumes, lock, read, recovery, write};
use crate::node::index::Index;
use crate::node::record::{self, HEADER_LEN, Header, Kind, TRAILER_LEN};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Bytes read at a time, and so the step of the throttle.
const CHUNK: usize = 1 << 20;
/// Pause between passes, so an empty or tiny store is not re-read in a
/// loop.
const BETWEEN_PASSES: Duration = Duration::from_secs(1);

/// The scrub's counters, shown in `/stats` as `scrub`.
#[derive(Default)]
pub struct ScrubStats {
    /// The configured rate, bytes per second (0: off).
    rate: AtomicU64,
    passes: AtomicU64,
    bytes_checked: AtomicU64,
    damaged: AtomicU64,
    /// When the last whole pass ended, ms since the Unix epoch (0: never).
    last_pass_ms: AtomicU64,
}

/// What `/stats` shows of the scrub.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ScrubSnapshot {
    /// Bytes per second read at most (0: the scrub is off).
    pub rate_bytes_per_sec: u64,
    /// Whole passes over every volume completed since start.
    pub passes: u64,
    /// Bytes read by the pass under way.
    pub bytes_checked: u64,
    /// Damaged records found since start (current copies and older ones),
    /// each counted once.
    pub damaged: u64,
    /// When the last whole pass ended, ms since the Unix epoch.
    pub last_pass_ms: Option<u64>,
}

impl ScrubStats {
    pub fn snapshot(&self) -> ScrubSnapshot {
        let last = self.last_pass_ms.load(Ordering::Relaxed);
        ScrubSnapshot {
            rate_bytes_per_sec: self.rate.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            bytes_checked: self.bytes_checked.load(Ordering::Relaxed),
            damaged: self.damaged.load(Ordering::Relaxed),
            last_pass_ms: (last != 0).then_some(last),
        }
    }
}

/// Tells the scrub thread to stop; wakes it from its pauses.
#[derive(Default)]
pub(super) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    pub(super) fn stop(&self) {
        *lock(&self.stopped) = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *lock(&self.stopped)
    }

    /// Waits until `until` or a stop; true if stopped.
    fn wait_until(&self, until: Instant) -> bool {
        let mut stopped = lock(&self.stopped);
        loop {
            let now = Instant::now();
            if *stopped || now >= until {
                return *stopped;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// What the scrub thread works on: the store's shared parts.
pub(super) struct Scrub {
    pub volumes: Volumes,
    pub index: Arc<RwLock<Index>>,
    pub reserved: Reserved,
    pub stats: Arc<ScrubStats>,
    pub stop: Arc<StopSignal>,
    /// Bytes per second; more than 0.
    pub rate: u64,
    /// Damaged records found so far (volume, offset): counted and logged
    /// once, not again on every pass. Damage is rare, so this stays small.
    pub known: Mutex<HashSet<(u32, u64)>>,
}

/// The reads of one volume up to a length, paced to the rate.
struct Paced<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    /// When the next read may start.
    next: Instant,
    scrub: &'a Scrub,
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.scrub.stop.wait_until(self.next) {
            return Err(io::Error::other(Stopped));
        }
        let n = (buf.len() as u64).min(self.end.saturating_sub(self.pos)) as usize;
        let n = self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        self.scrub
            .stats
            .bytes_checked
            .fetch_add(n as u64, Ordering::Relaxed);
        // No credit for time spent elsewhere: never a burst over the rate.
        let cost = Duration::from_secs_f64(n as f64 / self.scrub.rate as f64);
        self.next = self.next.max(Instant::now()) + cost;
        Ok(n)
    }
}

impl Seek for Paced<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(d) => self.end.checked_add_signed(d),
        }
        .ok_or(io::ErrorKind::InvalidInput)?;
        Ok(self.pos)
    }
}

/// The scrub was told to stop (carried as an IO error out of a read).
#[derive(Debug, thiserror::Error)]
#[error("scrub stopped")]
struct Stopped;

fn stopped(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Stopped>())
}

/// What one record at a position is.
enum Found {
    /// Sound (or the space of an aborted upload): its length.
    Sound(u64),
    /// Runs past the length read: written after the pass reached the
    /// volume, or still being written. Checked next pass.
    Incomplete,
    /// Its header holds (so its name and length are known) but its
    /// checksum fails.
    BadData { name: String, len: u64 },
    /// No valid header here.
    BadHeader,
}

impl Scrub {
    /// Runs passes until stopped.
    pub(super) fn run(self) {
        self.stats.rate.store(self.rate, Ordering::Relaxed);
        info!(
            rate_bytes_per_sec = self.rate,
            "scrub started: every record's checksum is verified in the background"
        );
        loop {
            let started = Instant::now();
            let vols: Vec<Arc<Volume>> = read(&self.volumes).iter().flatten().cloned().collect();
            for v in &vols {
                match self.volume(v) {
                    Ok(()) => {}
                    Err(e) if stopped(&e) => return,
                    Err(e) => {
                        error!(volume = %v.path.display(), error = %e, "scrub cannot read a volume; the disk may be failing");
                    }
                }
            }
            self.stats.passes.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_pass_ms
                .store(super::now_ms(), Ordering::Relaxed);
            let bytes = self.stats.bytes_checked.swap(0, Ordering::Relaxed);
            info!(
                bytes,
                volumes = vols.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "scrub pass done"
            );
            if self.stop.wait_until(Instant::now() + BETWEEN_PASSES) {
                return;
            }
        }
    }

    /// Checks every record of `v` up to its present length.
    fn volume(&self, v: &Volume) -> io::Result<()> {
        let end = v.file.metadata()?.len();
        let mut r = BufReader::with_capacity(
            CHUNK,
            Paced {
                file: &v.file,
                pos: 0,
                end,
                next: Instant::now(),
                scrub: self,
            },
        );
        let mut pos = 0u64;
        while pos < end {
            if self.stop.is_stopped() {
                return Err(io::Error::other(Stopped));
            }
            let mut found = check(&mut r, pos, end)?;
            if !matches!(found, Found::Sound(_) | Found::Incomplete) {
                // A large upload still streaming into its space: not yet
                // a record to judge.
                if let Some(&len) = lock(&self.reserved).get(&(v.id, pos)) {
                    pos += len;
                    r.seek(io::SeekFrom::Start(pos))?;
                    continue;
                }
                // Judged on a second read: a write may have just finished.
                r.seek(io::SeekFrom::Start(pos))?;
                found = check(&mut r, pos, end)?;
            }
            match found {
                Found::Sound(len) => pos += len,
                Found::Incomplete => break,
                Found::BadData { name, len } => {
                    self.damaged(v, pos, pos + len, Some(name));
                    pos += len;
                    r.seek(io::SeekFrom::Start(pos))?;
                }
                Found::BadHeader => {
                    let next = recovery::find_next_header(&v.file, pos + 1, end)?.unwrap_or(end);
                    self.damaged(v, pos, next, None);
                    pos = next;
                    r.seek(io::SeekFrom::Start(pos))?;
                }
            }
        }
        Ok(())
    }

    /// Counts and logs damage in `from..to` of `v`, and takes the current
    /// copies stored there out of the index. `name` is the record's name
    /// when its header holds; otherwise the index says which copy, if
    /// any, started in the stretch.
    fn damaged(&self, v: &Volume, from: u64, to: u64, name: Option<String>) {
        if !lock(&self.known).insert((v.id, from)) {
            return;
        }
        self.stats.damaged.fetch_add(1, Ordering::Relaxed);
        let names = match &name {
            Some(n) => vec![n.clone()],
            None => read(&self.index).names_in(v.id, from..to),
        };
        let mut removed = Vec::new();
        for n in &names {
            if write(&self.index).remove_at(n, v.id, from).is_some() {
                removed.push(n.as_str());
            }
        }
        let name = name.as_deref().unwrap_or("(unreadable header)");
        if removed.is_empty() {
            warn!(volume = %v.path.display(), offset = from, bytes = to - from, name,
                "scrub found a damaged record that is not a current copy (an older copy, or no file's); counted, nothing else to do");
        } else {
            error!(volume = %v.path.display(), offset = from, bytes = to - from, name, removed = ?removed,
                "scrub found a damaged current copy; it left the index (GET answers 404, readers move to the shard's other nodes); repair it from them");
        }
    }
}

/// Reads and checks the record at `pos` (where `r` stands), up to `end`.
fn check(r: &mut BufReader<Paced<'_>>, pos: u64, end: u64) -> io::Result<Found> {
    if end - pos < HEADER_LEN as u64 {
        return Ok(Found::Incomplete);
    }
    let mut fixed = [0u8; HEADER_LEN];
    r.read_exact(&mut fixed)?;
    let Ok(h) = Header::parse(&fixed) else {
        return Ok(Found::BadHeader);
    };
    let len = h.record_len();
    if end - pos < len {
        return Ok(Found::Incomplete);
    }
    let mut name = vec![0u8; h.name_len as usize];
    r.read_exact(&mut name)?;
    if Header::verify(&fixed, &name).is_err() {
        return Ok(Found::BadHeader);
    }
    if h.kind == Kind::Aborted {
        r.seek_relative((h.data_len + TRAILER_LEN as u64) as i64)?;
        return Ok(Found::Sound(len));
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fixed);
    crc.update(&name);
    let mut left = h.data_len;
    let mut buf = vec![0u8; CHUNK.min(left as usize)];
    while left > 0 {
        let n = buf.len().min(left as usize);
        r.read_exact(&mut buf[..n])?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    let mut t = [0u8; TRAILER_LEN];
    r.read_exact(&mut t)?;
    if crc.finalize() == record::trailer_crc(&t) {
        return Ok(Found::Sound(len));
    }
    Ok(Found::BadData {
        name: String::from_utf8_lossy(&name).into_owned(),
        len,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Store;
    use super::super::testing::{put, rt};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A store holding about `mib` MiB in files of 256 KiB.
    fn store_of(dir: &std::path::Path, mib: usize) -> Arc<Store> {
        let rt = rt();
        let store = Arc::new(Store::open(dir, 1 << 30).unwrap());
        for i in 0..mib * 4 {
            put(&store, &rt, &format!("/f{i}"), &vec![i as u8; 256 << 10]);
        }
        store
    }

    fn wait_passes(store: &Store, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.scrub_stats().passes < n {
            assert!(Instant::now() < deadline, "{:?}", store.scrub_stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn reads_no_faster_than_its_rate_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(dir.path(), 4);
        let started = Instant::now();
        store.start_scrub(8 << 20).unwrap();
        wait_passes(&store, 1);
        // 4 MiB at 8 MiB/s, the first 1 MiB chunk without a wait.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(370), "{took:?}");
        let s = store.scrub_stats();
        assert_eq!((s.damaged, s.rate_bytes_per_sec), (0, 8 << 20));
        assert!(s.last_pass_ms.is_some());

        // At 1 MiB/s a pass takes seconds; closing does not wait for it.
        let dir = tempfile::tempdir().unwrap();
        let store = store_of(dir.path(), 4);
        store.start_scrub(1 << 20).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let stopping = Instant::now();
        store.close();
        assert!(stopping.elapsed() < Duration::from_millis(500));
        assert_eq!(store.scrub_stats().passes, 0);
    }
}
