//! The in-memory index: name → where the current copy lives.
//!
//! Sized for tens of millions of small files, so it avoids per-file heap
//! allocations and fat pointers:
//! - names are copied into an arena of 1 MiB chunks (no per-name
//!   allocation, no growth by copying);
//! - entries (48 bytes: name reference, volume, offset, length, time,
//!   content hash) live in fixed-size segments, so growth never doubles a
//!   large buffer;
//! - the hash table holds only a `u32` entry number per bucket (4 bytes + 1
//!   control byte), hashing names through the arena.
//!
//! That is about 48 + 5/load-factor ≈ 54–60 bytes per file plus the name
//! bytes; `backpack-bench-node index` measures it.
//!
//! Which copy is current is decided by [`Version`] order (time, then content
//! hash), the same rule live, when rebuilding from the volumes and on every
//! other node of the shard, so a restart always lands on the copy that was
//! being served and replicas converge on the same bytes. An equal version is
//! the same bytes: the copy already current stays.

use backpack_shared::model::Version;
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

const NAME_CHUNK: usize = 1 << 20;
const SEGMENT: usize = 1 << 16;

/// Where a stored copy is, and when it was uploaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub volume: u32,
    /// Offset of the record (not the data) in the volume.
    pub offset: u64,
    pub name_len: u32,
    pub data_len: u64,
    pub time_ms: u64,
    /// XXH3-64 of the data ([`backpack_shared::model::content_hash`]).
    pub content_hash: u64,
}

impl Location {
    /// The order deciding which copy of a name is current.
    pub fn version(&self) -> Version {
        Version {
            time_ms: self.time_ms,
            content_hash: self.content_hash,
        }
    }
}

/// One file of the index. 48 bytes.
#[derive(Clone, Copy)]
struct Entry {
    /// Arena chunk (high 32 bits) and offset inside it (low 32 bits).
    name_at: u64,
    name_len: u32,
    volume: u32,
    offset: u64,
    data_len: u64,
    time_ms: u64,
    content_hash: u64,
}

/// What [`Index::offer`] did with a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// First copy of the name.
    Inserted,
    /// Replaced an older copy of `data_len` bytes.
    Replaced { old_len: u64 },
    /// An equal or newer copy is current; nothing changed.
    Kept,
}

/// The index. Not synchronised: the store wraps it in a lock.
pub struct Index {
    table: HashTable<u32>,
    segments: Vec<Vec<Entry>>,
    len: usize,
    names: Vec<Vec<u8>>,
    hasher: DefaultHashBuilder,
    live_bytes: u64,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

impl Index {
    pub fn new() -> Index {
        Index {
            table: HashTable::new(),
            segments: Vec::new(),
            len: 0,
            names: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            live_bytes: 0,
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sum of the data lengths of the current copies.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Heap bytes held for the entries and the hash table, names excluded.
    pub fn entry_bytes(&self) -> usize {
        self.table.allocation_size()
            + self.segments.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self
                .segments
                .iter()
                .map(|s| s.capacity() * std::mem::size_of::<Entry>())
                .sum::<usize>()
    }

    /// Heap bytes held for the names (arena chunks).
    pub fn name_bytes(&self) -> usize {
        self.names.iter().map(|c| c.capacity()).sum()
    }

    /// The current copy of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Location> {
        let hash = self.hasher.hash_one(name.as_bytes());
        let &i = self
            .table
            .find(hash, |&i| self.name_of(i) == name.as_bytes())?;
        let e = self.entry(i);
        Some(Location {
            volume: e.volume,
            offset: e.offset,
            name_len: e.name_len,
            data_len: e.data_len,
            time_ms: e.time_ms,
            content_hash: e.content_hash,
        })
    }

    /// Makes `loc` the current copy of `name` unless an equal or newer
    /// version is current.
    pub fn offer(&mut self, name: &str, loc: Location) -> Offer {
        let hash = self.hasher.hash_one(name.as_bytes());
        let Index {
            table,
            segments,
            names,
            hasher,
            ..
        } = self;
        let found = table.find(hash, |&i| {
            name_in(names, entry_in(segments, i)) == name.as_bytes()
        });
        if let Some(&i) = found {
            let e = entry_mut(segments, i);
            let cur = Version {
                time_ms: e.time_ms,
                content_hash: e.content_hash,
            };
            if loc.version() <= cur {
                return Offer::Kept;
            }
            let old_len = e.data_len;
            e.volume = loc.volume;
            e.offset = loc.offset;
            e.data_len = loc.data_len;
            e.time_ms = loc.time_ms;
            e.content_hash = loc.content_hash;
            self.live_bytes = self.live_bytes - old_len + loc.data_len;
            return Offer::Replaced { old_len };
        }
        let name_at = push_name(names, name.as_bytes());
        let i = self.len as u32;
        if segments.last().is_none_or(|s| s.len() == SEGMENT) {
            segments.push(Vec::with_capacity(SEGMENT));
        }
        if let Some(seg) = segments.last_mut() {
            seg.push(Entry {
                name_at,
                name_len: name.len() as u32,
                volume: loc.volume,
                offset: loc.offset,
                data_len: loc.data_len,
                time_ms: loc.time_ms,
                content_hash: loc.content_hash,
            });
        }
        let segs = &*segments;
        let names = &*names;
        table.insert_unique(hash, i, |&j| {
            hasher.hash_one(name_in(names, entry_in(segs, j)))
        });
        self.len += 1;
        self.live_bytes += loc.data_len;
        Offer::Inserted
    }

    fn entry(&self, i: u32) -> &Entry {
        entry_in(&self.segments, i)
    }

    fn name_of(&self, i: u32) -> &[u8] {
        name_in(&self.names, self.entry(i))
    }
}

fn entry_in(segments: &[Vec<Entry>], i: u32) -> &Entry {
    let i = i as usize;
    &segments[i / SEGMENT][i % SEGMENT]
}

fn entry_mut(segments: &mut [Vec<Entry>], i: u32) -> &mut Entry {
    let i = i as usize;
    &mut segments[i / SEGMENT][i % SEGMENT]
}

fn name_in<'a>(names: &'a [Vec<u8>], e: &Entry) -> &'a [u8] {
    let chunk = (e.name_at >> 32) as usize;
    let at = (e.name_at & 0xffff_ffff) as usize;
    &names[chunk][at..at + e.name_len as usize]
}

/// Copies a name into the arena and returns its reference.
fn push_name(names: &mut Vec<Vec<u8>>, name: &[u8]) -> u64 {
    let fits = names
        .last()
        .is_some_and(|c| c.capacity() - c.len() >= name.len());
    if !fits {
        // Names are at most MAX_NAME_LEN (16 KiB), so a chunk always holds one.
        names.push(Vec::with_capacity(NAME_CHUNK.max(name.len())));
    }
    let chunk = names.len() - 1;
    let c = &mut names[chunk];
    let at = c.len();
    c.extend_from_slice(name);
    ((chunk as u64) << 32) | at as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn loc(volume: u32, offset: u64, time_ms: u64, data_len: u64) -> Location {
        hashed(volume, offset, time_ms, data_len, data_len)
    }

    fn hashed(volume: u32, offset: u64, time_ms: u64, data_len: u64, hash: u64) -> Location {
        Location {
            volume,
            offset,
            name_len: 2, // "/x"
            data_len,
            time_ms,
            content_hash: hash,
        }
    }

    #[test]
    fn entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn newest_version_wins_in_any_order() {
        let a = hashed(1, 100, 5, 10, 7);
        let b = hashed(1, 50, 5, 20, 9); // same time, larger hash: wins over a
        let c = hashed(1, 10, 9, 30, 1); // newer time: wins over all
        let a_again = hashed(2, 0, 5, 10, 7); // a's bytes, later in the volumes
        let mut idx = Index::new();
        assert_eq!(idx.offer("/x", a), Offer::Inserted);
        assert_eq!(idx.offer("/x", a_again), Offer::Kept);
        assert_eq!(idx.offer("/x", b), Offer::Replaced { old_len: 10 });
        assert_eq!(idx.offer("/x", a), Offer::Kept);
        assert_eq!(idx.offer("/x", c), Offer::Replaced { old_len: 20 });
        assert_eq!(idx.offer("/x", b), Offer::Kept);
        assert_eq!(idx.get("/x"), Some(c));
        assert_eq!(idx.live_bytes(), 30);
        assert_eq!(idx.len(), 1);
        // Every arrival order (a rebuild sees volume order, another node
        // its own) ends on the same copy.
        let copies = [a, b, c, a_again];
        for perm in permutations(&copies) {
            let mut other = Index::new();
            for l in perm {
                other.offer("/x", l);
            }
            assert_eq!(other.get("/x"), Some(c));
        }
        for perm in permutations(&[a, b, a_again]) {
            let mut other = Index::new();
            for l in perm {
                other.offer("/x", l);
            }
            assert_eq!(other.get("/x"), Some(b));
        }
    }

    fn permutations(items: &[Location]) -> Vec<Vec<Location>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first);
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn many_names() {
        let mut idx = Index::new();
        let n = 200_000u64;
        for i in 0..n {
            let name = format!("/f/{i}?q={}", "x".repeat((i % 50) as usize));
            idx.offer(&name, loc(1, i, i, i % 7));
        }
        assert_eq!(idx.len(), n as usize);
        for i in (0..n).step_by(997) {
            let name = format!("/f/{i}?q={}", "x".repeat((i % 50) as usize));
            assert_eq!(idx.get(&name).map(|l| l.offset), Some(i));
        }
        assert_eq!(idx.get("/f/missing"), None);
        let per_file = idx.entry_bytes() as f64 / n as f64;
        // 48-byte entries in 64 Ki-entry segments plus the table: about 70
        // at this count (a per-file allocation would be well over 100).
        assert!(per_file < 80.0, "{per_file} bytes per file");
    }

    #[test]
    fn long_names_get_their_own_chunk() {
        let mut idx = Index::new();
        let long = "/".to_string() + &"é".repeat(8000);
        for i in 0..300 {
            idx.offer(&format!("{long}{i}"), loc(1, i, 0, 0));
        }
        assert_eq!(idx.get(&format!("{long}299")).map(|l| l.offset), Some(299));
    }
}
