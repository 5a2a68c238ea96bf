//! The cluster model: the JSON documents stored in ZooKeeper, exactly as the
//! original backpack-coordinator reads and writes them. No IO here.

mod check;
mod choice;
mod entries;
mod maps;
pub mod name;
mod size;
mod task;
mod version;

pub use check::{CheckRequest, Previous, ShardCheck};
pub use choice::{ShardChance, choose_shard, rendezvous_order, shard_chances};
pub use entries::{Entry, MapDoc, MapEntry, SkippedEntry};
pub use maps::{
    HostPort, ModelError, QueueInfo, Server, ServersMap, Shard, ShardSize, ShardsMap, parse_json,
    takes_writes, to_json, usage_ratio,
};
pub use name::{Name, NameError, name_key};
pub use size::{SizeError, format_size, parse_size};
pub use task::ReplicationTask;
pub use version::{ContentHasher, Version, content_hash, hash_hex, parse_hash_hex};

/// Names of the znodes under the cluster root.
pub mod paths {
    pub const SERVERS_MAP: &str = "servers-map";
    pub const SHARDS_MAP: &str = "shards-map";
    pub const QUEUE: &str = "queue";
    /// Ephemeral children: one per live coordinator (`host:port`).
    pub const COORDINATORS: &str = "coordinators";
    /// Ephemeral children: one per live replicator (`host:pid`).
    pub const REPLICATORS: &str = "replicators";
    /// Ephemeral: the replicator elected to check every shard (its name).
    pub const CHECKER: &str = "checker";
    /// `checks/<id>`: the last check of each shard ([`super::ShardCheck`]).
    pub const CHECKS: &str = "checks";
    /// `check-requests/<id>`: a check asked for by an operator (the
    /// console), taken by the elected checker ([`super::CheckRequest`]).
    pub const CHECK_REQUESTS: &str = "check-requests";

    /// `checks/<id>`.
    pub fn shard_check(id: &str) -> String {
        format!("{CHECKS}/{id}")
    }

    /// `check-requests/<id>`.
    pub fn check_request(id: &str) -> String {
        format!("{CHECK_REQUESTS}/{id}")
    }

    /// `shard-size-<id>`.
    pub fn shard_size(id: &str) -> String {
        format!("shard-size-{id}")
    }

    /// The shard id of a `shard-size-<id>` znode name.
    pub fn shard_size_id(name: &str) -> Option<&str> {
        name.strip_prefix("shard-size-")
    }
}

/// Orders ids the way people read them: numbers by value (`2` before
/// `10`), then anything else by text.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        _ => a.cmp(b),
    }
}

/// The original's `print-stats` text (scripts parse it): `Shards:`, a line
/// per shard `<id> [<nodes>]: <used> / <capacity> (<pct>%) rw|r`, then
/// `Overall: <used> / <total> (<pct>%)`. `rw` is [`takes_writes`] (a full
/// shard is `r`); a shard's percentage is rounded, the overall one is the
/// rounded [`usage_ratio`] (itself rounded up to 4 decimals, 100% with no
/// capacity), as the original prints them.
pub fn print_stats(
    shards: &ShardsMap,
    sizes: &std::collections::BTreeMap<String, ShardSize>,
) -> String {
    let pct = |used: u64, cap: u64| {
        if cap == 0 {
            0
        } else {
            (used as f64 / cap as f64 * 100.0).round() as u64
        }
    };
    let mut ids: Vec<&String> = shards.keys().collect();
    ids.sort_by(|a, b| id_order(a, b));
    let mut out = String::from("Shards:\n");
    let (mut used, mut total) = (0u64, 0u64);
    for id in ids {
        let shard = &shards[id];
        let size = sizes.get(id).copied().unwrap_or(ShardSize {
            capacity: 0,
            current: Some(0),
        });
        used += size.used();
        total += size.capacity;
        out.push_str(&format!(
            "{id} [{}]: {} / {} ({}%) {}\n",
            shard.nodes.join(", "),
            format_size(size.used()),
            format_size(size.capacity),
            pct(size.used(), size.capacity),
            if takes_writes(shard, &size) {
                "rw"
            } else {
                "r"
            }
        ));
    }
    out.push_str(&format!(
        "Overall: {} / {} ({}%)\n",
        format_size(used),
        format_size(total),
        (usage_ratio(used, total) * 100.0).round() as u64
    ));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn print_stats_matches_the_original() {
        let shards: ShardsMap = parse_json(
            "s",
            br#"{"1":{"nodes":["1","3"]},"2":{"read_only":true,"nodes":["2","4"]}}"#,
        )
        .unwrap();
        let mut sizes = std::collections::BTreeMap::new();
        sizes.insert(
            "1".to_string(),
            ShardSize {
                capacity: 100 << 30,
                current: Some(41339060224),
            },
        );
        sizes.insert(
            "2".to_string(),
            ShardSize {
                capacity: 1610612736,
                current: Some(1234),
            },
        );
        assert_eq!(
            print_stats(&shards, &sizes),
            "Shards:\n1 [1, 3]: 38.5gb / 100gb (39%) rw\n2 [2, 4]: 1.21kb / 1.5gb (0%) r\nOverall: 38.5gb / 101.5gb (38%)\n"
        );
    }

    #[test]
    fn print_stats_shows_a_full_shard_as_r_and_rounds_overall_like_the_original() {
        let shards: ShardsMap = parse_json(
            "s",
            br#"{"1":{"nodes":["1"]},"2":{"nodes":["2"]},"3":{"nodes":["3"]}}"#,
        )
        .unwrap();
        let sizes: std::collections::BTreeMap<String, ShardSize> = [
            ("1", 1000, 1000), // full
            ("2", 1000, 5),
            ("3", 98000, 0),
        ]
        .into_iter()
        .map(|(id, capacity, current)| {
            (
                id.to_string(),
                ShardSize {
                    capacity,
                    current: Some(current),
                },
            )
        })
        .collect();
        // 1005 / 100000 = 0.01005: up to 0.0101, 1.01%, prints 1%; the
        // shard lines round their own ratio.
        assert_eq!(
            print_stats(&shards, &sizes),
            "Shards:\n1 [1]: 1000b / 1000b (100%) r\n2 [2]: 5b / 1000b (1%) rw\n3 [3]: 0b / 95.7kb (0%) rw\nOverall: 1005b / 97.66kb (1%)\n"
        );
        // Overall goes through the ratio rounded up: 0.00495 is 0.005 up
        // there, 1% (rounding the plain ratio gives 0%).
        let sizes: std::collections::BTreeMap<String, ShardSize> =
            [("1", 100000u64, 495u64), ("2", 0, 0), ("3", 0, 0)]
                .into_iter()
                .map(|(id, capacity, current)| {
                    (
                        id.to_string(),
                        ShardSize {
                            capacity,
                            current: Some(current),
                        },
                    )
                })
                .collect();
        assert!(
            print_stats(&shards, &sizes).ends_with("Overall: 495b / 97.66kb (1%)\n"),
            "{}",
            print_stats(&shards, &sizes)
        );
        // No capacity at all: the original's ratio is 1.
        let empty = std::collections::BTreeMap::new();
        assert_eq!(
            print_stats(&ShardsMap::new(), &empty),
            "Shards:\nOverall: 0b / 0b (100%)\n"
        );
    }

    #[test]
    fn ids_sort_like_numbers() {
        let mut v = vec!["10", "2", "b", "1", "a"];
        v.sort_by(|a, b| id_order(a, b));
        assert_eq!(v, vec!["1", "2", "10", "a", "b"]);
    }
}
