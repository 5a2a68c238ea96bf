//! The shard choice: which shard takes the next upload.
//!
//! Writable = [`takes_writes`] (enabled and below capacity). Among writable shards with room
//! for the file, one is picked at random weighted by its free bytes (the
//! original weighs by free *ratio*, which fills small shards as fast as big
//! ones in bytes, so they fill up first). Weighing by bytes makes every
//! shard reach full at the same time.

use rand::Rng;

use super::maps::{ShardSize, ShardsMap, takes_writes};
use std::collections::BTreeMap;

/// A shard's share of new writes right now.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardChance {
    pub id: String,
    /// Free bytes counted for the choice (0 when not writable).
    pub free: u64,
    /// Probability in 0..=1 that the next upload lands here.
    pub chance: f64,
}

/// The chance of each shard, for a file of `file_size` bytes (0 for "any").
/// Shards that are read-only, full, without a known size or without room
/// for the file get 0. Order follows the shards map.
pub fn shard_chances(
    shards: &ShardsMap,
    sizes: &BTreeMap<String, ShardSize>,
    file_size: u64,
) -> Vec<ShardChance> {
    let mut out: Vec<ShardChance> = shards
        .iter()
        .map(|(id, shard)| {
            let free = match sizes.get(id) {
                Some(size) if takes_writes(shard, size) && size.free() >= file_size => size.free(),
                _ => 0,
            };
            ShardChance {
                id: id.clone(),
                free,
                chance: 0.0,
            }
        })
        .collect();
    let total: u128 = out.iter().map(|c| c.free as u128).sum();
    if total > 0 {
        for c in &mut out {
            c.chance = c.free as f64 / total as f64;
        }
    }
    out
}

/// Picks a shard for a file of `file_size` bytes, or `None` when no shard
/// is writable with room for it.
pub fn choose_shard<R: Rng + ?Sized>(
    shards: &ShardsMap,
    sizes: &BTreeMap<String, ShardSize>,
    file_size: u64,
    rng: &mut R,
) -> Option<String> {
    let chances = shard_chances(shards, sizes, file_size);
    let total: u128 = chances.iter().map(|c| c.free as u128).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.random_range(0..total);
    for c in chances {
        if point < c.free as u128 {
            return Some(c.id);
        }
        point -= c.free as u128;
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::Shard;

    fn cluster(
        spec: &[(&str, bool, u64, Option<u64>)],
    ) -> (ShardsMap, BTreeMap<String, ShardSize>) {
        let mut shards = ShardsMap::new();
        let mut sizes = BTreeMap::new();
        for (id, rw, cap, cur) in spec {
            shards.insert(
                id.to_string(),
                Shard {
                    read_only: !rw,
                    nodes: vec!["1".into()],
                },
            );
            sizes.insert(
                id.to_string(),
                ShardSize {
                    capacity: *cap,
                    current: *cur,
                },
            );
        }
        (shards, sizes)
    }

    #[test]
    fn weighs_by_free_bytes() {
        let (shards, sizes) = cluster(&[
            ("1", true, 100, Some(0)),
            ("2", true, 300, Some(0)),
            ("3", false, 1000, Some(0)),
        ]);
        let c = shard_chances(&shards, &sizes, 0);
        assert_eq!(
            c.iter().map(|c| c.chance).collect::<Vec<_>>(),
            vec![0.25, 0.75, 0.0]
        );
    }

    #[test]
    fn skips_full_disabled_unknown_and_too_small() {
        let (mut shards, sizes) = cluster(&[
            ("1", true, 100, Some(100)),
            ("2", true, 100, Some(90)),
            ("3", false, 100, None),
        ]);
        shards.insert(
            "4".into(),
            Shard {
                read_only: false,
                nodes: vec![],
            },
        );
        let c = shard_chances(&shards, &sizes, 0);
        assert_eq!(
            c.iter().map(|c| c.chance).collect::<Vec<_>>(),
            vec![0.0, 1.0, 0.0, 0.0]
        );
        let mut rng = rand::rng();
        assert_eq!(
            choose_shard(&shards, &sizes, 5, &mut rng).as_deref(),
            Some("2")
        );
        assert_eq!(choose_shard(&shards, &sizes, 11, &mut rng), None);
    }

    #[test]
    fn picks_in_proportion() {
        let (shards, sizes) = cluster(&[("a", true, 1000, Some(0)), ("b", true, 4000, Some(1000))]);
        let mut rng = rand::rng();
        let mut a = 0;
        for _ in 0..10_000 {
            if choose_shard(&shards, &sizes, 1, &mut rng).unwrap() == "a" {
                a += 1;
            }
        }
        // expected 2500 (1000 of 4000 free bytes); 6 sigma is about 260
        assert!((2240..2760).contains(&a), "{a}");
    }
}

/// Orders a shard's node ids for one file name by rendezvous hashing
/// (highest `md5(name, 0, id)` first): every coordinator, whatever its
/// build, tries the nodes of a shard in the same order for a name, so
/// uploads of one name meet on one node, which orders them (it gives
/// each a version later than the copy it holds). Names spread evenly
/// over the nodes.
pub fn rendezvous_order(name: &str, ids: &mut [String]) {
    use md5::{Digest, Md5};
    let score = |id: &str| {
        let mut h = Md5::new();
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(id.as_bytes());
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    };
    ids.sort_by_cached_key(|id| std::cmp::Reverse(score(id)));
}

#[cfg(test)]
mod rendezvous_tests {
    use super::rendezvous_order;

    fn order(name: &str, ids: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        rendezvous_order(name, &mut v);
        v
    }

    #[test]
    fn one_order_per_name_whatever_the_input_order() {
        for name in ["/a.jpg", "/b.jpg", "/photos/1?x=2"] {
            assert_eq!(order(name, &["1", "2", "3"]), order(name, &["3", "1", "2"]));
        }
    }

    #[test]
    fn names_spread_over_the_nodes() {
        let mut first = std::collections::BTreeMap::<String, u32>::new();
        for i in 0..3000 {
            *first
                .entry(order(&format!("/f{i}"), &["1", "4", "7"])[0].clone())
                .or_default() += 1;
        }
        for (id, n) in first {
            assert!(
                (850..1150).contains(&n),
                "node {id} first for {n} of 3000 names"
            );
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_names() {
        for i in 0..500 {
            let name = format!("/g{i}");
            let all = order(&name, &["1", "2", "3"]);
            let without: Vec<String> = all.iter().filter(|id| *id != "2").cloned().collect();
            assert_eq!(order(&name, &["1", "3"]), without);
        }
    }
}
