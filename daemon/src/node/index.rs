//! The in-memory index: name → where the current copy lives.
//!
//! Sized for tens of millions of small files, so it avoids per-file heap
//! allocations and fat pointers:
//! - names are copied into an arena of 1 MiB chunks (no per-name
//!   allocation, no growth by copying);
//! - entries (48 bytes: name reference, volume, offset, length, time,
//!   content hash) live in segments of [`SEGMENT`] entries, so growth never
//!   doubles a large buffer;
//! - each hash table holds only a `u32` entry number per bucket (4 bytes +
//!   1 control byte), hashing names through the arena.
//!
//! That is about 48 + 5/load-factor ≈ 54–60 bytes per file plus the name
//! bytes; `backpack-bench-node index` measures it.
//!
//! The index is split into [`PARTS`] parts by the top bits of the name's
//! [`name_key`], each its own table and entries. A listing of a key range
//! ([`Index::list_part`]) then scans only the parts the range overlaps and
//! sorts one part's matches at a time, never the whole index; the store
//! takes its lock once per part, so writers wait for one part's scan at
//! most. The tables hash with a seeded hasher, not `name_key`: names come
//! from clients, and a fixed hash would let them pick colliding names.
//!
//! Which copy is current is decided by [`Version`] order (time, then content
//! hash), the same rule live, when rebuilding from the volumes and on every
//! other node of the shard, so a restart always lands on the copy that was
//! being served and replicas converge on the same bytes. An equal version is
//! the same bytes: the copy already current stays.

use backpack_shared::model::{Version, name_key};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

const NAME_CHUNK: usize = 1 << 20;
/// Entries per segment. Small enough that the partly filled last segment
/// of every part (256 of them) wastes little (at most 48 MB in all), large
/// enough that the list of segments costs nothing per file. A part's first
/// segment grows by doubling, so a small index stays small.
const SEGMENT: usize = 1 << 12;
/// Parts of the index: the top [`PART_BITS`] bits of a name's key.
pub const PARTS: usize = 1 << PART_BITS;
const PART_BITS: u32 = 8;

/// The part holding the names whose [`name_key`] is `key`.
pub fn part_of(key: u64) -> usize {
    (key >> (64 - PART_BITS)) as usize
}

/// The first key of part `p` (its keys run to the next part's first).
pub fn part_start(p: usize) -> u64 {
    (p as u64) << (64 - PART_BITS)
}

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

impl Entry {
    fn location(&self) -> Location {
        Location {
            volume: self.volume,
            offset: self.offset,
            name_len: self.name_len,
            data_len: self.data_len,
            time_ms: self.time_ms,
            content_hash: self.content_hash,
        }
    }
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

/// One part: the names whose key starts with its bits. Entry numbers are
/// dense (`0..len`): a removal moves the last entry into the hole.
#[derive(Default)]
struct Part {
    table: HashTable<u32>,
    segments: Vec<Vec<Entry>>,
    len: usize,
}

/// One file of a listing, copied out of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// [`name_key`] of the name.
    pub key: u64,
    pub name: String,
    pub loc: Location,
}

/// The index. Not synchronised: the store wraps it in a lock.
pub struct Index {
    parts: Vec<Part>,
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
            parts: (0..PARTS).map(|_| Part::default()).collect(),
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

    /// Sum of the data lengths of the current copies, in bytes.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Heap bytes held for the entries and the hash tables, names excluded.
    pub fn entry_bytes(&self) -> usize {
        self.parts.capacity() * std::mem::size_of::<Part>()
            + self
                .parts
                .iter()
                .map(|p| {
                    p.table.allocation_size()
                        + p.segments.capacity() * std::mem::size_of::<Vec<Entry>>()
                        + p.segments
                            .iter()
                            .map(|s| s.capacity() * std::mem::size_of::<Entry>())
                            .sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Heap bytes held for the names (arena chunks).
    pub fn name_bytes(&self) -> usize {
        self.names.iter().map(|c| c.capacity()).sum()
    }

    /// The current copy of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Location> {
        let part = &self.parts[part_of(name_key(name))];
        let hash = self.hasher.hash_one(name.as_bytes());
        let &i = part.table.find(hash, |&i| {
            name_in(&self.names, entry_in(&part.segments, i)) == name.as_bytes()
        })?;
        Some(entry_in(&part.segments, i).location())
    }

    /// Makes `loc` the current copy of `name` unless an equal or newer
    /// version is current.
    pub fn offer(&mut self, name: &str, loc: Location) -> Offer {
        let hash = self.hasher.hash_one(name.as_bytes());
        let Index {
            parts,
            names,
            hasher,
            ..
        } = self;
        let Part {
            table,
            segments,
            len,
        } = &mut parts[part_of(name_key(name))];
        let found = table.find(hash, |&i| {
            name_in(names, entry_in(segments, i)) == name.as_bytes()
        });
        if let Some(&i) = found {
            let e = entry_mut(segments, i);
            if loc.version() <= e.location().version() {
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
        let i = *len as u32;
        if segments.last().is_none_or(|s| s.len() == SEGMENT) {
            // The first segment grows by doubling (up to SEGMENT, a power
            // of two, so never past it); later ones are made whole.
            let cap = if segments.is_empty() { 0 } else { SEGMENT };
            segments.push(Vec::with_capacity(cap));
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
        *len += 1;
        self.len += 1;
        self.live_bytes += loc.data_len;
        Offer::Inserted
    }

    /// Removes `name` if its current copy is the record at `offset` of
    /// `volume` (a damaged record found by the scrub: a newer copy stored
    /// meanwhile stays). Returns the removed copy.
    pub fn remove_at(&mut self, name: &str, volume: u32, offset: u64) -> Option<Location> {
        let hash = self.hasher.hash_one(name.as_bytes());
        let Index {
            parts,
            names,
            hasher,
            ..
        } = self;
        let part = &mut parts[part_of(name_key(name))];
        let Ok(slot) = part.table.find_entry(hash, |&i| {
            name_in(names, entry_in(&part.segments, i)) == name.as_bytes()
        }) else {
            return None;
        };
        let i = *slot.get();
        let removed = entry_in(&part.segments, i).location();
        if (removed.volume, removed.offset) != (volume, offset) {
            return None;
        }
        slot.remove();
        // Keep the entry numbers dense: the last entry takes the hole, and
        // its table slot is re-pointed. (The name's arena bytes stay: rare.)
        let last = (part.len - 1) as u32;
        if i != last {
            let moved = *entry_in(&part.segments, last);
            *entry_mut(&mut part.segments, i) = moved;
            let moved_hash = hasher.hash_one(name_in(names, &moved));
            if let Some(s) = part.table.find_mut(moved_hash, |&j| j == last) {
                *s = i;
            }
        }
        if let Some(seg) = part.segments.last_mut() {
            seg.pop();
            if seg.is_empty() {
                part.segments.pop();
            }
        }
        part.len -= 1;
        self.len -= 1;
        self.live_bytes -= removed.data_len;
        Some(removed)
    }

    /// The names whose current copy starts in `volume` at an offset in
    /// `range`: what a damaged stretch of a volume held. Scans the whole
    /// index (damage is rare).
    pub fn names_in(&self, volume: u32, range: std::ops::Range<u64>) -> Vec<String> {
        let mut out = Vec::new();
        for part in &self.parts {
            for e in part.segments.iter().flatten() {
                if e.volume == volume && range.contains(&e.offset) {
                    out.push(String::from_utf8_lossy(name_in(&self.names, e)).into_owned());
                }
            }
        }
        out
    }

    /// Appends to `out` the files of part `p` whose key is in
    /// `from..=last`, unsorted (sort them after the lock is released:
    /// [`sort_listing`]).
    pub fn list_part(&self, p: usize, from: u64, last: u64, out: &mut Vec<Listed>) {
        let Some(part) = self.parts.get(p) else {
            return;
        };
        for e in part.segments.iter().flatten() {
            // Stored from `&str`s, so never lossy (and no copy here).
            let name = String::from_utf8_lossy(name_in(&self.names, e));
            let key = name_key(&name);
            if (from..=last).contains(&key) {
                out.push(Listed {
                    key,
                    name: name.into_owned(),
                    loc: e.location(),
                });
            }
        }
    }
}

/// A listing's order: by key, then name (two names with one key).
pub fn sort_listing(rows: &mut [Listed]) {
    rows.sort_unstable_by(|a, b| a.key.cmp(&b.key).then_with(|| a.name.cmp(&b.name)));
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

    /// Every file of the index in key order, listed part by part as the
    /// node streams it.
    fn listing(idx: &Index, from: u64, last: u64) -> Vec<Listed> {
        let mut all = Vec::new();
        for p in part_of(from)..=part_of(last) {
            let mut rows = Vec::new();
            idx.list_part(p, from, last, &mut rows);
            sort_listing(&mut rows);
            all.extend(rows);
        }
        all
    }

    #[test]
    fn parts_offer_get_replace_remove_and_list_in_key_order() {
        let mut idx = Index::new();
        let n = 3000u64;
        let name = |i: u64| format!("/p/{i}.jpg");
        // Copy i in volume v, of time t and d bytes.
        let l = |i: u64, v: u32, t: u64, d: u64| Location {
            name_len: name(i).len() as u32,
            ..loc(v, i, t, d)
        };
        for i in 0..n {
            assert_eq!(idx.offer(&name(i), l(i, 1, 10, 1)), Offer::Inserted);
        }
        // The names spread over (nearly) every part.
        let used: std::collections::HashSet<usize> =
            (0..n).map(|i| part_of(name_key(&name(i)))).collect();
        assert!(used.len() > 240, "{} parts used", used.len());
        for i in (0..n).step_by(3) {
            let newer = l(i, 2, 20, 2);
            assert_eq!(idx.offer(&name(i), newer), Offer::Replaced { old_len: 1 });
        }
        // Removal only of the copy named, then dense entries still found.
        assert_eq!(idx.remove_at(&name(3), 1, 3), None, "not the current copy");
        assert_eq!(idx.remove_at(&name(3), 2, 3), Some(l(3, 2, 20, 2)));
        assert_eq!(idx.remove_at(&name(4), 1, 4), Some(l(4, 1, 10, 1)));
        assert_eq!(idx.remove_at(&name(4), 1, 4), None);
        assert_eq!(idx.remove_at("/never", 1, 0), None);
        assert_eq!(idx.len(), n as usize - 2);
        let third = n.div_ceil(3) - 1; // names 0, 3, 6.. have 2 bytes, 3 is gone
        assert_eq!(idx.live_bytes(), (n - 2) + third);
        for i in 0..n {
            let want = match i {
                3 | 4 => None,
                i if i % 3 == 0 => Some(l(i, 2, 20, 2)),
                i => Some(l(i, 1, 10, 1)),
            };
            assert_eq!(idx.get(&name(i)), want, "{}", name(i));
        }
        // A removed name comes back as a new file.
        assert_eq!(idx.offer(&name(4), l(4, 3, 30, 5)), Offer::Inserted);

        let all = listing(&idx, 0, u64::MAX);
        assert_eq!(all.len(), idx.len());
        assert!(all.windows(2).all(|w| w[0].key < w[1].key), "sorted by key");
        for row in &all {
            assert_eq!(row.key, name_key(&row.name));
            assert_eq!(Some(row.loc), idx.get(&row.name));
        }
        // Two ranges, split inside a part, make the whole.
        let cut = all[all.len() / 2].key;
        let mut halves = listing(&idx, 0, cut - 1);
        assert!(halves.iter().all(|r| r.key < cut));
        halves.extend(listing(&idx, cut, u64::MAX));
        assert_eq!(halves, all);
        assert!(listing(&idx, cut, cut).len() == 1);
    }

    #[test]
    fn names_in_a_stretch_of_a_volume() {
        let mut idx = Index::new();
        idx.offer("/a", loc(1, 0, 1, 1));
        idx.offer("/b", loc(1, 100, 1, 1));
        idx.offer("/c", loc(2, 100, 1, 1));
        assert_eq!(idx.names_in(1, 50..101), vec!["/b".to_string()]);
        assert!(idx.names_in(1, 1..100).is_empty());
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
