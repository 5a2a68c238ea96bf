//! Reusable read buffers: a file served from disk ([`Store::read_small`])
//! is read into a buffer from here, which comes back once the last
//! `Bytes` of it is dropped (the connection has copied it into its
//! answer), so a GET neither allocates nor zeroes 100 KB each time.
//!
//! [`Store::read_small`]: super::store::Store::read_small

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// Smallest class: 4 KiB; each next class doubles, up to 4 MiB.
const MIN_SHIFT: u32 = 12;
const CLASSES: usize = 11;
/// Bytes a class keeps idle at most.
const KEEP_PER_CLASS: usize = 16 << 20;

#[derive(Default)]
pub struct BufPool {
    classes: [Mutex<Vec<Vec<u8>>>; CLASSES],
}

fn class_of(len: usize) -> Option<usize> {
    let c = len
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .saturating_sub(MIN_SHIFT) as usize;
    (c < CLASSES).then_some(c)
}

impl BufPool {
    /// A buffer of exactly `len` bytes (contents undefined).
    pub fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let reused = class_of(len).and_then(|c| {
            self.classes[c]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
        });
        let mut buf = reused.unwrap_or_else(|| {
            let cap = class_of(len).map_or(len, |c| 1usize << (c as u32 + MIN_SHIFT));
            vec![0u8; cap]
        });
        let cap = buf.len();
        buf.resize(cap.max(len), 0);
        PooledBuf {
            buf,
            len,
            pool: self.clone(),
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        let Some(c) = class_of(buf.len()).filter(|&c| buf.len() == 1 << (c as u32 + MIN_SHIFT))
        else {
            return;
        };
        let mut idle = self.classes[c].lock().unwrap_or_else(|e| e.into_inner());
        if (idle.len() + 1) * buf.len() <= KEEP_PER_CLASS {
            idle.push(buf);
        }
    }
}

/// A buffer on loan from a [`BufPool`].
pub struct PooledBuf {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufPool>,
}

impl PooledBuf {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Freezes it into `Bytes`; the buffer returns to the pool when the
    /// last `Bytes` pointing into it is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        fn check(len: usize, expected: Option<usize>) {
            assert_eq!(class_of(len), expected, "{len}");
        }
        check(0, Some(0));
        check(4096, Some(0));
        check(4097, Some(1));
        check(100_036, Some(5));
        check(4 << 20, Some(10));
        check((4 << 20) + 1, None);
    }

    #[test]
    fn buffers_are_reused() {
        let pool = Arc::new(BufPool::default());
        let mut b = pool.take(100_000);
        b.as_mut_slice()[0] = 7;
        let ptr = b.as_ref().as_ptr();
        let bytes = b.freeze().slice(10..20);
        assert_eq!(bytes.len(), 10);
        drop(bytes);
        let again = pool.take(90_000);
        assert_eq!(again.as_ref().as_ptr(), ptr);
        assert_eq!(again.as_ref().len(), 90_000);
    }
}
