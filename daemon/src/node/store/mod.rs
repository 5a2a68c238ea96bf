//! The store: volume files, the index, appends with group commit, reads.
//!
//! This file is the store's API ([`Store`]: open, lookup, small and large
//! uploads, reads, stats, close); `writer.rs` is the writer and sync
//! threads (appends, volume roll-over, group commit); `recovery.rs`
//! rebuilds the index from the volumes at start.
//!
//! Write path. One writer thread owns the tail of the active volume. Every
//! upload is one record (see [`super::record`]). A small upload (up to
//! [`SMALL_MAX`]) is received into memory and sent whole to the writer,
//! which appends it with one positional write. A large one asks the writer
//! to reserve its space and write its header, then streams its data into
//! the reserved space itself, so a 1 GB upload needs only one buffer of
//! memory. Because the writer writes every header in tail order before it
//! syncs, every record below an acknowledged one has at least its header
//! on disk: a scan after a crash can always walk header to header up to the
//! last acknowledged record.
//!
//! Durability. An upload is indexed and acknowledged only after an
//! `fdatasync` of its volume, one sync shared by every upload queued
//! meanwhile (group commit). After a failed sync the node refuses uploads.
//!
//! Recovery. At start every volume is read front to back and every record's
//! checksums verified; the index is rebuilt from the valid `put` records.
//! A torn or corrupt tail (what a crash leaves) is cut off with a warning; a
//! corrupt record in the middle is skipped (never served) and logged.

mod recovery;
mod scrub;
#[cfg(test)]
mod testing;
mod writer;

/// The project's one wall clock, here too for callers of `store::now_ms`.
pub use backpack_shared::clock::now_ms;
pub use recovery::UnknownRecord;
pub use scrub::ScrubSnapshot;

use super::bufpool::{BufPool, PooledBuf};
use super::index::{Index, Listed, Location, Offer};
use super::record::{self, FLAG_CLIENT_TIME, HEADER_LEN, Header, Kind, TRAILER_LEN};
use backpack_shared::model::{ContentHasher, Version, content_hash};
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use tokio::sync::oneshot;
use tracing::{error, warn};
use writer::WriterMsg;

/// Uploads and downloads up to this size are handled in one buffer (one
/// write, one read); larger ones are streamed in chunks of this size.
pub const SMALL_MAX: u64 = 1024 * 1024;

const LOCK_FILE: &str = "LOCK";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "data directory {0} does not exist; create it (mkdir -p {0}) or fix the first argument"
    )]
    DirMissing(PathBuf),
    #[error("data directory {0} is not a directory; fix the first argument")]
    NotADirectory(PathBuf),
    #[error(
        "data directory {path} is not writable ({cause}); fix its permissions or pick another directory"
    )]
    DirNotWritable { path: PathBuf, cause: io::Error },
    #[error(
        "data directory {0} is in use by another backpack-node (its LOCK file is held); stop that node or pick another directory"
    )]
    Locked(PathBuf),
    #[error("{context}: {cause}")]
    Io { context: String, cause: io::Error },
    #[error("{0}")]
    UnknownRecord(String),
    #[error("no space left on the data disk ({0}); free space or add a node")]
    NoSpace(PathBuf),
    #[error(
        "a sync of the volumes failed earlier, so this node refuses uploads; check the disk (see the log) and restart the node"
    )]
    Failed,
    #[error(
        "stored copy at volume {volume} offset {offset} fails its checksum; the disk may be failing"
    )]
    Corrupt { volume: u32, offset: u64 },
    #[error("the node is shutting down")]
    Closed,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    move |cause| StoreError::Io {
        context: context.into(),
        cause,
    }
}

/// One volume file, open for reading and writing. Reads and writes are
/// positional, so any number of tasks share it.
pub struct Volume {
    pub id: u32,
    file: File,
    path: PathBuf,
}

impl Volume {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

type Volumes = Arc<RwLock<Vec<Option<Arc<Volume>>>>>;
/// Large records reserved and still being streamed: (volume, offset) →
/// record length. Entered by the writer before it writes the header, left
/// once the record is final (trailer written, or marked aborted), so the
/// scrub never judges a record half-written.
type Reserved = Arc<Mutex<HashMap<(u32, u64), u64>>>;
type Placed = Result<(Arc<Volume>, u64), StoreError>;

/// Numbers for `/stats`.
pub struct StoreStats {
    pub files: u64,
    pub bytes_stored: u64,
    pub volumes: u64,
    pub volume_bytes: u64,
    pub free_disk_bytes: u64,
    pub index_bytes: u64,
}

/// The store. Shared as `Arc<Store>`.
pub struct Store {
    dir: PathBuf,
    /// Indexed by volume id; ids need not be dense.
    volumes: Volumes,
    index: Arc<RwLock<Index>>,
    reserved: Reserved,
    writer_tx: mpsc::Sender<WriterMsg>,
    /// The writer, then the sync thread (joined in that order: the sync
    /// thread ends once the writer is gone).
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    failed: Arc<AtomicBool>,
    bufs: Arc<BufPool>,
    scrub_stats: Arc<scrub::ScrubStats>,
    scrub_stop: Arc<scrub::StopSignal>,
    /// The scrub thread, once started.
    scrub: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held (flock) while the store is open.
    _lock: File,
}

/// `<dir>/volume-<id, 8 digits>.bpk`.
/// Writes one record per name, each holding `data`, into volumes of at
/// most 1 GiB under `dir`, as the node writes them (times from
/// 2023-11-14 on, one ms apart); returns the volumes' paths. For
/// benchmarks and tests that need millions of files faster than uploads
/// could make them.
pub fn fill_volumes(
    dir: &Path,
    names: impl Iterator<Item = String>,
    data: &[u8],
) -> io::Result<Vec<PathBuf>> {
    use crate::node::record::{FLAG_CLIENT_TIME, Header, Kind, encode_record};
    use std::io::Write;
    const VOLUME: u64 = 1 << 30;
    let (mut id, mut written) = (1u32, 0u64);
    let mut out = io::BufWriter::new(File::create(volume_path(dir, id))?);
    for (i, name) in names.enumerate() {
        let header = Header {
            kind: Kind::Put,
            flags: FLAG_CLIENT_TIME,
            name_len: name.len() as u32,
            time_ms: 1_700_000_000_000 + i as u64,
            data_len: data.len() as u64,
        };
        let record = encode_record(&header, name.as_bytes(), data);
        if written + record.len() as u64 > VOLUME {
            out.flush()?;
            id += 1;
            written = 0;
            out = io::BufWriter::new(File::create(volume_path(dir, id))?);
        }
        out.write_all(&record)?;
        written += record.len() as u64;
    }
    out.flush()?;
    drop(out);
    Ok((1..=id).map(|v| volume_path(dir, v)).collect())
}

pub fn volume_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("volume-{id:08}.bpk"))
}

fn parse_volume_name(name: &str) -> Option<u32> {
    name.strip_prefix("volume-")?
        .strip_suffix(".bpk")?
        .parse()
        .ok()
}

// Poisoned locks only follow a panic elsewhere; the data they guard stays
// consistent (every update is a single assignment), so carry on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Opens (and recovers) the store in `dir`, which must exist. Blocking:
    /// it reads every volume; call it from `spawn_blocking`.
    pub fn open(dir: &Path, volume_size: u64) -> Result<Store, StoreError> {
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::DirMissing(dir.to_owned()));
            }
            Err(e) => return Err(io_err(format!("cannot read {}", dir.display()))(e)),
            Ok(m) if !m.is_dir() => return Err(StoreError::NotADirectory(dir.to_owned())),
            Ok(_) => {}
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(|cause| StoreError::DirNotWritable {
                path: dir.to_owned(),
                cause,
            })?;
        // Tried for up to two seconds: a previous instance may be closing,
        // and a process forked meanwhile (by this program, to run another
        // one) holds a copy of the descriptor until it execs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked(dir.to_owned()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(io_err("cannot lock the data directory")(e.into())),
            }
        }

        let recovered = recovery::recover(dir)?;
        let mut volumes = recovered.volumes;
        let mut tail = recovered.tail;
        let active = match volumes.last().cloned().flatten() {
            Some(v) if tail < volume_size => v,
            last => {
                let id = last.map_or(1, |v| v.id + 1);
                let v = create_volume(dir, id)?;
                set_slot(&mut volumes, v.clone());
                tail = 0;
                v
            }
        };

        let failed = Arc::new(AtomicBool::new(false));
        let volumes: Volumes = Arc::new(RwLock::new(volumes));
        let reserved = Reserved::default();
        let (writer_tx, threads) = writer::start(
            dir,
            volume_size,
            volumes.clone(),
            active,
            tail,
            failed.clone(),
            reserved.clone(),
        )?;

        Ok(Store {
            dir: dir.to_owned(),
            volumes,
            index: Arc::new(RwLock::new(recovered.index)),
            reserved,
            writer_tx,
            threads: Mutex::new(threads),
            bufs: Arc::default(),
            scrub_stats: Arc::default(),
            scrub_stop: Arc::default(),
            scrub: Mutex::new(None),
            failed,
            _lock: lock,
        })
    }

    /// Starts the background scrub ([`scrub`]) reading at most
    /// `rate_bytes_per_sec`; 0 leaves it off. Once only; [`Store::close`]
    /// (or [`Store::stop_scrub`]) stops it.
    pub fn start_scrub(&self, rate_bytes_per_sec: u64) -> Result<(), StoreError> {
        let mut slot = lock(&self.scrub);
        if rate_bytes_per_sec == 0 || slot.is_some() {
            return Ok(());
        }
        let job = scrub::Scrub {
            volumes: self.volumes.clone(),
            index: self.index.clone(),
            reserved: self.reserved.clone(),
            stats: self.scrub_stats.clone(),
            stop: self.scrub_stop.clone(),
            rate: rate_bytes_per_sec,
            known: Mutex::default(),
        };
        let thread = std::thread::Builder::new()
            .name("backpack-scrub".into())
            .spawn(move || job.run())
            .map_err(io_err("cannot start the scrub thread"))?;
        *slot = Some(thread);
        Ok(())
    }

    /// Tells the scrub to stop (at its next read, within one chunk);
    /// does not wait for it.
    pub fn stop_scrub(&self) {
        self.scrub_stop.stop();
    }

    /// The scrub's figures for `/stats`.
    pub fn scrub_stats(&self) -> ScrubSnapshot {
        self.scrub_stats.snapshot()
    }

    /// The current copies of the files in part `part` of the index whose
    /// [`name_key`](backpack_shared::model::name_key) is in `from..=last`,
    /// sorted by key then name. The index is locked only while the part's
    /// matches are copied out, not while they are sorted.
    pub fn list_part(&self, part: usize, from: u64, last: u64) -> Vec<Listed> {
        let mut rows = Vec::new();
        read(&self.index).list_part(part, from, last, &mut rows);
        super::index::sort_listing(&mut rows);
        rows
    }

    /// The current copy of `name`.
    pub fn lookup(&self, name: &str) -> Option<Location> {
        read(&self.index).get(name)
    }

    fn volume(&self, id: u32) -> Result<Arc<Volume>, StoreError> {
        read(&self.volumes)
            .get(id as usize)
            .cloned()
            .flatten()
            .ok_or(StoreError::Corrupt {
                volume: id,
                offset: 0,
            })
    }

    /// A buffer for a small upload: header space and the name, ready for
    /// the data to be appended, then passed to [`Store::put_small`].
    pub fn small_record_buffer(name: &str, data_len: u64) -> Vec<u8> {
        let mut buf = Vec::with_capacity(record::record_len(name.len(), data_len) as usize);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        buf.extend_from_slice(name.as_bytes());
        buf
    }

    /// Stores a small upload: `buf` came from [`Store::small_record_buffer`]
    /// with the data appended. Returns once it is durable and indexed, with
    /// what the index did and the stored copy's version.
    pub async fn put_small(
        self: &Arc<Self>,
        name: &str,
        time_ms: u64,
        client_time: bool,
        mut buf: Vec<u8>,
    ) -> Result<(Offer, Version), StoreError> {
        self.check_writable()?;
        let data_len = (buf.len() - HEADER_LEN - name.len()) as u64;
        let header = put_header(name, time_ms, client_time, data_len);
        buf[..HEADER_LEN].copy_from_slice(&header.encode(name.as_bytes()));
        let hash = content_hash(&buf[HEADER_LEN + name.len()..]);
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());

        let (done, wait) = oneshot::channel();
        self.send(WriterMsg::Append { record: buf, done })?;
        let (volume, offset) = wait.await.map_err(|_| StoreError::Closed)??;
        let loc = location(&header, volume.id, offset, hash);
        Ok((write(&self.index).offer(name, loc), loc.version()))
    }

    /// Starts a large upload: reserves its record and writes the header.
    pub async fn begin_large(
        self: &Arc<Self>,
        name: &str,
        time_ms: u64,
        client_time: bool,
        data_len: u64,
    ) -> Result<LargeUpload, StoreError> {
        self.check_writable()?;
        let header = put_header(name, time_ms, client_time, data_len);
        let mut head = Vec::with_capacity(HEADER_LEN + name.len());
        head.extend_from_slice(&header.encode(name.as_bytes()));
        head.extend_from_slice(name.as_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head);
        let (done, wait) = oneshot::channel();
        self.send(WriterMsg::Reserve {
            head,
            record_len: header.record_len(),
            done,
        })?;
        let (volume, offset) = wait.await.map_err(|_| StoreError::Closed)??;
        Ok(LargeUpload {
            store: self.clone(),
            volume,
            offset,
            name: name.to_owned(),
            header,
            written: 0,
            hasher,
            content: ContentHasher::new(),
            finished: false,
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            Err(StoreError::Failed)
        } else {
            Ok(())
        }
    }

    fn send(&self, msg: WriterMsg) -> Result<(), StoreError> {
        self.writer_tx.send(msg).map_err(|_| StoreError::Closed)
    }

    async fn sync(&self, volume: Arc<Volume>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(WriterMsg::Sync { volume, done })?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads and verifies a whole small record; returns the data. Blocking.
    pub fn read_small(&self, loc: &Location) -> Result<Bytes, StoreError> {
        let volume = self.volume(loc.volume)?;
        let len = record::record_len(loc.name_len as usize, loc.data_len) as usize;
        let mut buf = self.bufs.take(len);
        volume
            .read_exact_at(buf.as_mut_slice(), loc.offset)
            .map_err(io_err(format!("cannot read {}", volume.path.display())))?;
        self.verified(loc, &volume, buf)
    }

    /// A small record's data read from the page cache without blocking;
    /// `None` when not all of it is cached: use [`Store::read_small`] on a
    /// blocking thread, which reaches the disk and verifies the data
    /// checksum.
    ///
    /// This path checks the record's header (against the index and its own
    /// checksum), not the data checksum. Every record's data checksum is
    /// verified by the start-up scan and by reads that take the blocking
    /// path; damage that appears on disk while the node runs can be served
    /// by this path until the next restart (a background scrub is to close
    /// that gap).
    pub fn read_cached(&self, loc: &Location) -> Option<Bytes> {
        let volume = self.volume(loc.volume).ok()?;
        let head_len = HEADER_LEN + loc.name_len as usize;
        let mut head = vec![0u8; head_len];
        read_nowait(&volume.file, &mut head, loc.offset)?;
        let fixed: &[u8; HEADER_LEN] = head[..HEADER_LEN].try_into().ok()?;
        let ok = matches!(Header::parse(fixed), Ok(h) if h.kind == Kind::Put
            && h.data_len == loc.data_len && h.name_len == loc.name_len)
            && Header::verify(fixed, &head[HEADER_LEN..]).is_ok();
        if !ok {
            return None;
        }
        let mut buf = self.bufs.take(usize::try_from(loc.data_len).ok()?);
        read_nowait(
            &volume.file,
            buf.as_mut_slice(),
            loc.offset + head_len as u64,
        )?;
        Some(buf.freeze())
    }

    fn verified(
        &self,
        loc: &Location,
        volume: &Volume,
        buf: PooledBuf,
    ) -> Result<Bytes, StoreError> {
        match record::check_record(buf.as_ref()) {
            Ok(range) => Ok(buf.freeze().slice(range)),
            Err(e) => {
                error!(volume = %volume.path.display(), offset = loc.offset, error = %e, "stored copy is corrupt");
                Err(StoreError::Corrupt {
                    volume: loc.volume,
                    offset: loc.offset,
                })
            }
        }
    }

    /// A reader streaming a large record's data in chunks, verifying the
    /// checksum at the end.
    pub fn read_large(&self, loc: &Location) -> Result<LargeRead, StoreError> {
        Ok(LargeRead {
            volume: self.volume(loc.volume)?,
            loc: *loc,
            pos: 0,
            hasher: crc32fast::Hasher::new(),
        })
    }

    /// Figures for `/stats`.
    pub fn stats(&self) -> StoreStats {
        let (files, bytes_stored, index_bytes) = {
            let idx = read(&self.index);
            (
                idx.len() as u64,
                idx.live_bytes(),
                (idx.entry_bytes() + idx.name_bytes()) as u64,
            )
        };
        let vols: Vec<Arc<Volume>> = read(&self.volumes).iter().flatten().cloned().collect();
        let volume_bytes = vols
            .iter()
            .filter_map(|v| v.file.metadata().ok())
            .map(|m| m.len())
            .sum();
        let free_disk_bytes = rustix::fs::statvfs(&self.dir)
            .map(|s| s.f_bavail * s.f_frsize)
            .unwrap_or(0);
        StoreStats {
            files,
            bytes_stored,
            volumes: vols.len() as u64,
            volume_bytes,
            free_disk_bytes,
            index_bytes,
        }
    }

    /// Stops the scrub, then the writer thread after the pending writes,
    /// and syncs every volume. Blocking.
    pub fn close(&self) {
        self.stop_scrub();
        if let Some(t) = lock(&self.scrub).take() {
            let _ = t.join();
        }
        let _ = self.writer_tx.send(WriterMsg::Stop);
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        for v in read(&self.volumes).iter().flatten() {
            if let Err(e) = v.file.sync_all() {
                error!(volume = %v.path.display(), error = %e, "final sync failed");
            }
        }
    }
}

/// An upload being streamed into its reserved record. Dropped unfinished,
/// it marks the record aborted so scans skip it quietly.
pub struct LargeUpload {
    store: Arc<Store>,
    volume: Arc<Volume>,
    offset: u64,
    name: String,
    header: Header,
    written: u64,
    hasher: crc32fast::Hasher,
    content: ContentHasher,
    finished: bool,
}

impl LargeUpload {
    /// Appends the next piece of data.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if self.written + chunk.len() as u64 > self.header.data_len {
            return Err(StoreError::Io {
                context: "upload longer than announced".into(),
                cause: io::Error::from(ErrorKind::InvalidInput),
            });
        }
        self.hasher.update(&chunk);
        self.content.update(&chunk);
        let at = self.offset + self.header.data_offset() + self.written;
        let len = chunk.len() as u64;
        self.write_at(chunk, at).await?;
        self.written += len;
        Ok(())
    }

    /// Writes the trailer, syncs and indexes the upload; returns what the
    /// index did and the stored copy's version.
    pub async fn finish(mut self) -> Result<(Offer, Version), StoreError> {
        let crc = self.hasher.clone().finalize().to_le_bytes();
        let at = self.offset + self.header.record_len() - TRAILER_LEN as u64;
        self.write_at(crc, at).await?;
        self.store.sync(self.volume.clone()).await?;
        self.finished = true;
        let loc = location(
            &self.header,
            self.volume.id,
            self.offset,
            self.content.finish(),
        );
        Ok((
            write(&self.store.index).offer(&self.name, loc),
            loc.version(),
        ))
    }

    /// Writes `bytes` at `at` in the reserved record, on a blocking thread.
    async fn write_at(
        &self,
        bytes: impl AsRef<[u8]> + Send + 'static,
        at: u64,
    ) -> Result<(), StoreError> {
        let dir = self.store.dir.clone();
        let volume = self.volume.clone();
        tokio::task::spawn_blocking(move || {
            volume
                .file
                .write_all_at(bytes.as_ref(), at)
                .map_err(|e| write_error(&dir, &volume, e))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

impl Drop for LargeUpload {
    fn drop(&mut self) {
        if !self.finished {
            let aborted = Header {
                kind: Kind::Aborted,
                ..self.header
            };
            let bytes = aborted.encode(self.name.as_bytes());
            // Best effort: if this fails too, the scan will find the record's
            // checksum wrong and skip it with a warning instead.
            if let Err(e) = self.volume.file.write_all_at(&bytes, self.offset) {
                warn!(volume = %self.volume.path.display(), error = %e, "cannot mark aborted upload");
            }
        }
        // The record is final now: the scrub may judge it.
        lock(&self.store.reserved).remove(&(self.volume.id, self.offset));
    }
}

/// Fills `buf` from `file` at `offset` only from the page cache
/// (`RWF_NOWAIT`): `None` if any of it would need the disk (or the kernel
/// cannot tell).
fn read_nowait(file: &File, buf: &mut [u8], offset: u64) -> Option<()> {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let mut done = 0;
    while done < buf.len() {
        let mut slices = [io::IoSliceMut::new(&mut buf[done..])];
        match rustix::io::preadv2(
            file,
            &mut slices,
            offset + done as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                UNSUPPORTED.store(true, Ordering::Relaxed);
                return None;
            }
            Err(_) => return None,
        }
    }
    Some(())
}

/// Streams a large record's data; see [`Store::read_large`].
pub struct LargeRead {
    volume: Arc<Volume>,
    loc: Location,
    /// Bytes of the record read so far.
    pos: u64,
    hasher: crc32fast::Hasher,
}

impl LargeRead {
    /// The next chunk of data, or `None` at the end (checksum verified).
    /// Blocking.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let data_start = (HEADER_LEN + self.loc.name_len as usize) as u64;
        let data_end = data_start + self.loc.data_len;
        let corrupt = |v: &Volume, why: &str| {
            error!(volume = %v.path.display(), offset = self.loc.offset, why, "stored copy is corrupt");
            StoreError::Corrupt {
                volume: self.loc.volume,
                offset: self.loc.offset,
            }
        };
        let read_err = io_err(format!("cannot read {}", self.volume.path.display()));
        if self.pos == 0 {
            let mut head = vec![0u8; data_start as usize];
            self.volume
                .read_exact_at(&mut head, self.loc.offset)
                .map_err(read_err)?;
            let fixed: [u8; HEADER_LEN] = head[..HEADER_LEN]
                .try_into()
                .map_err(|_| corrupt(&self.volume, "short header"))?;
            let ok = Header::parse(&fixed)
                .and_then(|_| Header::verify(&fixed, &head[HEADER_LEN..]))
                .is_ok();
            if !ok {
                return Err(corrupt(&self.volume, "bad header"));
            }
            self.hasher.update(&head);
            self.pos = data_start;
            return self.next_chunk();
        }
        if self.pos == data_end {
            let mut t = [0u8; TRAILER_LEN];
            self.volume
                .read_exact_at(&mut t, self.loc.offset + data_end)
                .map_err(read_err)?;
            if self.hasher.clone().finalize() != record::trailer_crc(&t) {
                return Err(corrupt(&self.volume, "checksum mismatch"));
            }
            self.pos += TRAILER_LEN as u64;
            return Ok(None);
        }
        if self.pos > data_end {
            return Ok(None);
        }
        let n = SMALL_MAX.min(data_end - self.pos) as usize;
        let mut buf = vec![0u8; n];
        self.volume
            .read_exact_at(&mut buf, self.loc.offset + self.pos)
            .map_err(read_err)?;
        self.hasher.update(&buf);
        self.pos += n as u64;
        Ok(Some(Bytes::from(buf)))
    }
}

fn create_volume(dir: &Path, id: u32) -> Result<Arc<Volume>, StoreError> {
    let path = volume_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|cause| StoreError::DirNotWritable {
            path: dir.to_owned(),
            cause,
        })?;
    // The new file's directory entry must be durable before any record in
    // it is acknowledged.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("cannot sync {}", dir.display())))?;
    Ok(Arc::new(Volume { id, file, path }))
}

/// Puts `v` in its slot of a volume list (indexed by id), growing it.
fn set_slot(volumes: &mut Vec<Option<Arc<Volume>>>, v: Arc<Volume>) {
    let slot = v.id as usize;
    if volumes.len() <= slot {
        volumes.resize(slot + 1, None);
    }
    volumes[slot] = Some(v);
}

/// A failed write to `volume`: out of space (507 for the client), or
/// logged as the disk error it is.
fn write_error(dir: &Path, volume: &Volume, e: io::Error) -> StoreError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        StoreError::NoSpace(dir.to_owned())
    } else {
        error!(volume = %volume.path.display(), error = %e, "write to volume failed");
        io_err(format!("cannot write to {}", volume.path.display()))(e)
    }
}

/// The header of an upload's `put` record.
fn put_header(name: &str, time_ms: u64, client_time: bool, data_len: u64) -> Header {
    Header {
        kind: Kind::Put,
        flags: if client_time { FLAG_CLIENT_TIME } else { 0 },
        name_len: name.len() as u32,
        time_ms,
        data_len,
    }
}

/// Where the `put` record `header` starts (`offset` in `volume`), for the
/// index.
fn location(header: &Header, volume: u32, offset: u64, content_hash: u64) -> Location {
    Location {
        volume,
        offset,
        name_len: header.name_len,
        data_len: header.data_len,
        time_ms: header.time_ms,
        content_hash,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::testing::{put, rt};
    use super::*;

    #[test]
    fn damage_under_a_running_store_is_caught_by_disk_reads() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
        put(&store, &rt, "/v", &[5u8; 5000]);
        let f = OpenOptions::new()
            .write(true)
            .open(volume_path(dir.path(), 1))
            .unwrap();
        f.write_all_at(&[6], (HEADER_LEN + 2 + 100) as u64).unwrap();
        let loc = store.lookup("/v").unwrap();
        assert!(matches!(
            store.read_small(&loc),
            Err(StoreError::Corrupt {
                volume: 1,
                offset: 0
            })
        ));
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = Store::open(dir.path(), 1 << 20).unwrap();
        let b = Store::open(dir.path(), 1 << 20);
        assert!(matches!(b, Err(StoreError::Locked(_))), "{:?}", b.err());
    }

    #[test]
    fn large_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let data: Vec<u8> = (0..(SMALL_MAX as usize * 2 + 123))
            .map(|i| i as u8)
            .collect();
        let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
        let mut up = rt
            .block_on(store.begin_large("/big", 5, true, data.len() as u64))
            .unwrap();
        for c in data.chunks(300_000) {
            rt.block_on(up.write(Bytes::copy_from_slice(c))).unwrap();
        }
        rt.block_on(up.finish()).unwrap();
        let loc = store.lookup("/big").unwrap();
        assert_eq!(loc.time_ms, 5);
        let mut r = store.read_large(&loc).unwrap();
        let mut got = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            got.extend_from_slice(&c);
        }
        assert_eq!(got, data);
    }

    /// Two copies of one name with the same time: every store keeps the
    /// one with the larger content hash, whichever arrived first, small or
    /// large, and keeps it after a restart.
    #[test]
    fn equal_times_keep_the_larger_content_hash() {
        let rt = rt();
        let a = vec![b'a'; 100];
        let b: Vec<u8> = (0..SMALL_MAX as usize + 10).map(|i| i as u8).collect();
        let winner = if content_hash(&a) > content_hash(&b) {
            &a
        } else {
            &b
        };
        for order in [[&a, &b], [&b, &a]] {
            let dir = tempfile::tempdir().unwrap();
            {
                let store = Arc::new(Store::open(dir.path(), 1 << 30).unwrap());
                for data in order {
                    let (_, version) = if data.len() as u64 <= SMALL_MAX {
                        let mut buf = Store::small_record_buffer("/x", data.len() as u64);
                        buf.extend_from_slice(data);
                        rt.block_on(store.put_small("/x", 7, true, buf)).unwrap()
                    } else {
                        let mut up = rt
                            .block_on(store.begin_large("/x", 7, true, data.len() as u64))
                            .unwrap();
                        rt.block_on(up.write(Bytes::copy_from_slice(data))).unwrap();
                        rt.block_on(up.finish()).unwrap()
                    };
                    assert_eq!(version.content_hash, content_hash(data));
                }
                let loc = store.lookup("/x").unwrap();
                assert_eq!(loc.content_hash, content_hash(winner));
                store.close();
            }
            let store = Store::open(dir.path(), 1 << 30).unwrap();
            let loc = store.lookup("/x").unwrap();
            assert_eq!((loc.time_ms, loc.content_hash), (7, content_hash(winner)));
            assert_eq!(loc.data_len, winner.len() as u64);
        }
    }
}
