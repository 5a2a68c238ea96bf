//! The writer and sync threads: appends at the tail of the active volume,
//! volume roll-over, and group commit.
//!
//! One writer thread owns the tail. It writes every record (or a large
//! record's header, reserving its space) in the order requests arrive,
//! then hands the batch to the sync thread, so the next records reach the
//! page cache while the previous sync runs. The sync thread takes every
//! batch queued so far, runs one `fdatasync` per volume involved, and only
//! then answers them all: concurrent uploads share one sync, and the
//! uploads that queue up during a sync share the next one. If a sync ever
//! fails, the node refuses further uploads: after a failed fsync the
//! kernel may have dropped the dirty pages, so retrying could report
//! success for lost data.

use super::{
    Placed, Reserved, StoreError, Volume, Volumes, create_volume, io_err, lock, set_slot, write,
    write_error,
};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tracing::{error, info};

/// Requests to the writer thread.
pub(super) enum WriterMsg {
    /// Append a whole record; answered after it is synced.
    Append {
        record: Vec<u8>,
        done: oneshot::Sender<Placed>,
    },
    /// Reserve a large record and write its first bytes (header and
    /// name); answered at once, without a sync.
    Reserve {
        head: Vec<u8>,
        record_len: u64,
        done: oneshot::Sender<Placed>,
    },
    /// Sync a volume a large record was streamed into.
    Sync {
        volume: Arc<Volume>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Stop,
}

/// The writer thread's state: the tail it appends at.
struct Writer {
    dir: PathBuf,
    volume_size: u64,
    volumes: Volumes,
    active: Arc<Volume>,
    tail: u64,
    failed: Arc<AtomicBool>,
    reserved: Reserved,
}

/// Starts the writer thread, appending at `tail` of `active`, and the sync
/// thread behind it. Returns the writer's queue and both threads, the
/// writer first (the sync thread ends once the writer is gone).
pub(super) fn start(
    dir: &Path,
    volume_size: u64,
    volumes: Volumes,
    active: Arc<Volume>,
    tail: u64,
    failed: Arc<AtomicBool>,
    reserved: Reserved,
) -> Result<(mpsc::Sender<WriterMsg>, Vec<JoinHandle<()>>), StoreError> {
    let (writer_tx, writer_rx) = mpsc::channel();
    let mut writer = Writer {
        dir: dir.to_owned(),
        volume_size,
        volumes,
        active,
        tail,
        failed: failed.clone(),
        reserved,
    };
    let (sync_tx, sync_rx) = mpsc::channel();
    let sync_thread = std::thread::Builder::new()
        .name("backpack-sync".into())
        .spawn(move || sync_loop(sync_rx, &failed))
        .map_err(io_err("cannot start the sync thread"))?;
    let writer_thread = std::thread::Builder::new()
        .name("backpack-writer".into())
        .spawn(move || writer.run(writer_rx, sync_tx))
        .map_err(io_err("cannot start the writer thread"))?;
    Ok((writer_tx, vec![writer_thread, sync_thread]))
}

/// Writes done, waiting for the sync that makes them durable.
#[derive(Default)]
struct SyncJob {
    volumes: Vec<Arc<Volume>>,
    appends: Vec<(oneshot::Sender<Placed>, Placed)>,
    syncs: Vec<oneshot::Sender<Result<(), StoreError>>>,
}

impl SyncJob {
    fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.syncs.is_empty()
    }
}

impl Writer {
    /// Writes what arrives and hands it to the sync thread, so the next
    /// records reach the page cache while the previous sync is running.
    fn run(&mut self, rx: mpsc::Receiver<WriterMsg>, sync_tx: mpsc::Sender<SyncJob>) {
        loop {
            let mut job = SyncJob::default();
            let mut stop = false;
            let mut next = rx.recv().ok();
            if next.is_none() {
                return;
            }
            while let Some(msg) = next {
                match msg {
                    WriterMsg::Append { record, done } => {
                        let placed = self.append(&record, record.len() as u64, false);
                        if let Ok((v, _)) = &placed {
                            note_volume(&mut job.volumes, v);
                        }
                        job.appends.push((done, placed));
                    }
                    WriterMsg::Reserve {
                        head,
                        record_len,
                        done,
                    } => {
                        let _ = done.send(self.append(&head, record_len, true));
                    }
                    WriterMsg::Sync { volume, done } => {
                        note_volume(&mut job.volumes, &volume);
                        job.syncs.push(done);
                    }
                    WriterMsg::Stop => stop = true,
                }
                next = rx.try_recv().ok();
            }
            if !job.is_empty() && sync_tx.send(job).is_err() {
                return;
            }
            if stop {
                return;
            }
        }
    }

    /// Writes `bytes` at the tail and advances it by `len` (at least
    /// `bytes.len()`; more for a reserved large record, which is entered
    /// in `reserved` before its header is written: see [`Reserved`]).
    fn append(&mut self, bytes: &[u8], len: u64, reserve: bool) -> Placed {
        if self.failed.load(Ordering::Relaxed) {
            return Err(StoreError::Failed);
        }
        if self.tail > 0 && self.tail + len > self.volume_size {
            self.roll_over()?;
        }
        let offset = self.tail;
        let key = (self.active.id, offset);
        if reserve {
            lock(&self.reserved).insert(key, len);
        }
        if let Err(e) = self.active.file.write_all_at(bytes, offset) {
            lock(&self.reserved).remove(&key);
            // The tail stays: the next record overwrites what was written.
            return Err(write_error(&self.dir, &self.active, e));
        }
        self.tail = offset + len;
        Ok((self.active.clone(), offset))
    }

    fn roll_over(&mut self) -> Result<(), StoreError> {
        let id = self.active.id + 1;
        let v = create_volume(&self.dir, id)?;
        set_slot(&mut write(&self.volumes), v.clone());
        info!(volume = %v.path.display(), "new volume");
        self.active = v;
        self.tail = 0;
        Ok(())
    }
}

/// The sync thread: one `fdatasync` per volume for all jobs queued so far
/// (group commit), then the answers.
fn sync_loop(rx: mpsc::Receiver<SyncJob>, failed: &AtomicBool) {
    while let Ok(mut job) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            for v in &more.volumes {
                note_volume(&mut job.volumes, v);
            }
            job.appends.extend(more.appends);
            job.syncs.extend(more.syncs);
        }
        // Once a sync failed, later ones prove nothing about the lost pages.
        let mut synced = !failed.load(Ordering::Relaxed);
        if synced {
            for v in &job.volumes {
                if let Err(e) = v.file.sync_data() {
                    error!(volume = %v.path.display(), error = %e, "fdatasync failed; refusing further uploads");
                    failed.store(true, Ordering::Relaxed);
                    synced = false;
                }
            }
        }
        for (done, placed) in job.appends {
            let _ = done.send(match placed {
                Ok(p) if synced => Ok(p),
                Ok(_) => Err(StoreError::Failed),
                Err(e) => Err(e),
            });
        }
        for done in job.syncs {
            let _ = done.send(if synced {
                Ok(())
            } else {
                Err(StoreError::Failed)
            });
        }
    }
}

fn note_volume(list: &mut Vec<Arc<Volume>>, v: &Arc<Volume>) {
    if !list.iter().any(|x| x.id == v.id) {
        list.push(v.clone());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::Store;
    use super::super::testing::{get, put, rt};
    use std::sync::Arc;

    #[test]
    fn rolls_over_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let store = Arc::new(Store::open(dir.path(), 1000).unwrap());
            for i in 0..20 {
                put(&store, &rt, &format!("/r{i}"), &[i as u8; 300]);
            }
            assert!(store.stats().volumes >= 7);
            store.close();
        }
        let store = Store::open(dir.path(), 1000).unwrap();
        for i in 0..20 {
            assert_eq!(get(&store, &format!("/r{i}")).unwrap(), vec![i as u8; 300]);
        }
    }
}
