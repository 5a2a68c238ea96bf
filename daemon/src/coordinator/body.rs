//! Holding an upload's body until a node has it.
//!
//! The body is read whole before the first node write, so that a failed
//! node can be replaced by the next one without asking the client again.
//! Small bodies stay in memory, within a budget shared by every upload
//! (`--memory-budget`); a body over `--memory-threshold`, or one that does
//! not fit in the budget right now, goes to an unnamed temporary file
//! (deleted by the kernel when dropped, even on a crash).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Size of the pieces written to and read from a temporary file.
pub const CHUNK: usize = 256 * 1024;

/// A received body.
pub enum Held {
    /// The pieces as received (no copy: they are sent to the node as is).
    Memory {
        chunks: Vec<Bytes>,
        len: u64,
        /// Our share of the memory budget, given back on drop.
        _permit: Option<OwnedSemaphorePermit>,
    },
    File {
        file: Arc<std::fs::File>,
        len: u64,
        /// Its room in the spill directory, counted until dropped.
        _room: Room,
    },
}

/// Bytes of the spill directory held by one upload, counted in
/// [`Holder::spilled_bytes`] until dropped.
pub struct Room {
    len: u64,
    count: Arc<AtomicU64>,
}

impl Room {
    fn take(count: &Arc<AtomicU64>, len: u64) -> Room {
        count.fetch_add(len, Ordering::Relaxed);
        Room {
            len,
            count: count.clone(),
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.count.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl Held {
    pub fn len(&self) -> u64 {
        match self {
            Held::Memory { len, .. } => *len,
            Held::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn spilled(&self) -> bool {
        matches!(self, Held::File { .. })
    }
}

/// Why a body could not be held.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(
        "the body ended after {got} of the {expected} bytes announced by Content-Length{detail}"
    )]
    Short {
        got: u64,
        expected: u64,
        /// The reading error, if any (` (reset by peer)`).
        detail: String,
    },
    #[error("the body is longer than its Content-Length of {0} bytes")]
    Long(u64),
    #[error("the body stalled for more than {0:?} (--body-timeout)")]
    Stalled(Duration),
    #[error(
        "the body arrived slower than {min_rate} bytes/s ({got} bytes in {secs} s; --body-min-rate, after --body-grace)"
    )]
    TooSlow { got: u64, secs: u64, min_rate: u64 },
    #[error("cannot write the upload to a temporary file in {dir}: {error}; check --spill-dir")]
    Spill { dir: String, error: String },
    #[error("{}", no_room(.dir, *.len, *.total, *.held))]
    NoSpillRoom {
        dir: String,
        len: u64,
        /// The spill file system's size, bytes, if known.
        total: Option<u64>,
        /// Bytes held by uploads in progress.
        held: u64,
    },
}

fn no_room(dir: &str, len: u64, total: Option<u64>, held: u64) -> String {
    match total {
        Some(total) if len > total => format!(
            "this upload's {len} bytes can never fit the spill directory {dir}, whose file system holds {total} bytes in all; give --spill-dir more space or lower --max-body"
        ),
        _ => format!(
            "no room for this upload's {len} bytes in the spill directory {dir} right now ({held} bytes held by uploads in progress); retry in a moment (Retry-After), or give --spill-dir more space"
        ),
    }
}

/// Where and how bodies are held.
pub struct Holder {
    pub memory_threshold: u64,
    pub budget: Arc<Semaphore>,
    pub spill_dir: std::path::PathBuf,
    pub body_timeout: Duration,
    /// Lowest average rate of a body, in bytes/s, once `body_grace` has
    /// passed (0: no floor). A body must have arrived in full by
    /// `start + body_grace + received / body_min_rate`, the rule of
    /// Apache's mod_reqtimeout `MinRate`: a slow link that keeps sending
    /// keeps its upload, a trickle of a byte every few seconds does not
    /// hold a slot for long.
    pub body_min_rate: u64,
    pub body_grace: Duration,
    /// Bytes of the spill directory held by uploads in progress.
    pub spilled_bytes: Arc<AtomicU64>,
}

impl Holder {
    /// Reads exactly `len` bytes of `body`.
    pub async fn receive(&self, mut body: Incoming, len: u64) -> Result<Held, BodyError> {
        let started = Instant::now();
        let permit = if len == 0 {
            None
        } else if len <= self.memory_threshold {
            u32::try_from(len)
                .ok()
                .and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok())
        } else {
            None
        };
        if len == 0 || permit.is_some() {
            let mut chunks = Vec::new();
            let mut got = 0u64;
            while let Some(data) = self.next(&mut body, got, len, started).await? {
                got += data.len() as u64;
                if got > len {
                    return Err(BodyError::Long(len));
                }
                if !data.is_empty() {
                    chunks.push(data);
                }
            }
            if got < len {
                return Err(BodyError::Short {
                    got,
                    expected: len,
                    detail: String::new(),
                });
            }
            return Ok(Held::Memory {
                chunks,
                len,
                _permit: permit,
            });
        }
        self.spill(body, len, started).await
    }

    async fn spill(
        &self,
        mut body: Incoming,
        len: u64,
        started: Instant,
    ) -> Result<Held, BodyError> {
        let dir = self.spill_dir.clone();
        let spill_err = |error: String| BodyError::Spill {
            dir: self.spill_dir.display().to_string(),
            error,
        };
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&dir))
            .await
            .map_err(|e| spill_err(e.to_string()))?
            .map_err(|e| spill_err(e.to_string()))?;
        // The whole body's room is taken before its first byte is read, so
        // that uploads at once that do not fit together are refused at
        // once, never after their bytes arrived (a file system without
        // fallocate goes on unreserved).
        let f = file.try_clone().map_err(|e| spill_err(e.to_string()))?;
        match tokio::task::spawn_blocking(move || reserve(&f, len)).await {
            Ok(Err(e)) if e == rustix::io::Errno::NOSPC || e == rustix::io::Errno::DQUOT => {
                let total = rustix::fs::statvfs(&self.spill_dir)
                    .ok()
                    .map(|v| v.f_blocks.saturating_mul(v.f_frsize));
                return Err(BodyError::NoSpillRoom {
                    dir: self.spill_dir.display().to_string(),
                    len,
                    total,
                    held: self.spilled_bytes.load(Ordering::Relaxed),
                });
            }
            Ok(Err(e)) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Ok(Err(e)) => return Err(spill_err(e.to_string())),
            Ok(Ok(())) => {}
            Err(e) => return Err(spill_err(e.to_string())),
        }
        let room = Room::take(&self.spilled_bytes, len);
        let file = Arc::new(file);
        let mut got = 0u64;
        let mut pending = BytesMut::with_capacity(CHUNK);
        let mut written = 0u64;
        loop {
            let data = self.next(&mut body, got, len, started).await?;
            if let Some(d) = &data {
                got += d.len() as u64;
                if got > len {
                    return Err(BodyError::Long(len));
                }
                pending.extend_from_slice(d);
            }
            if pending.len() >= CHUNK || (data.is_none() && !pending.is_empty()) {
                let chunk = pending.split().freeze();
                let f = Arc::clone(&file);
                let at = written;
                written += chunk.len() as u64;
                tokio::task::spawn_blocking(move || write_at(&f, &chunk, at))
                    .await
                    .map_err(|e| spill_err(e.to_string()))?
                    .map_err(|e| spill_err(e.to_string()))?;
            }
            if data.is_none() {
                break;
            }
        }
        if got < len {
            return Err(BodyError::Short {
                got,
                expected: len,
                detail: String::new(),
            });
        }
        Ok(Held::File {
            file,
            len,
            _room: room,
        })
    }

    async fn next(
        &self,
        body: &mut Incoming,
        got: u64,
        expected: u64,
        started: Instant,
    ) -> Result<Option<Bytes>, BodyError> {
        // The later of the two bounds that applies: a stall of
        // `body_timeout`, or the body falling under the minimum rate.
        let stall = Instant::now() + self.body_timeout;
        let slow = (self.body_min_rate > 0).then(|| {
            started
                + self.body_grace
                + Duration::from_secs_f64(got as f64 / self.body_min_rate as f64)
        });
        let deadline = slow.map_or(stall, |s| s.min(stall));
        loop {
            match tokio::time::timeout_at(deadline.into(), body.frame()).await {
                Err(_) if slow == Some(deadline) && deadline < stall => {
                    return Err(BodyError::TooSlow {
                        got,
                        secs: started.elapsed().as_secs(),
                        min_rate: self.body_min_rate,
                    });
                }
                Err(_) => return Err(BodyError::Stalled(self.body_timeout)),
                Ok(None) => return Ok(None),
                // The connection ended or broke before Content-Length bytes.
                Ok(Some(Err(e))) => {
                    use std::error::Error as _;
                    let cause = e.source().map(|s| s.to_string()).unwrap_or(e.to_string());
                    return Err(BodyError::Short {
                        got,
                        expected,
                        detail: format!(" ({cause})"),
                    });
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

fn reserve(file: &std::fs::File, len: u64) -> Result<(), rustix::io::Errno> {
    if len == 0 {
        return Ok(());
    }
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len)
}

fn write_at(file: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(data, offset)
}

/// Whether a spill directory is usable (checked at start).
pub fn check_spill_dir(dir: &Path) -> Result<(), String> {
    tempfile::tempfile_in(dir)
        .map(|_| ())
        .map_err(|e| format!("cannot create temporary files in {}: {e}", dir.display()))
}
