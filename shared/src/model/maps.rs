//! The maps stored in ZooKeeper. Reading accepts everything the original
//! wrote (ports as strings or numbers, `read_only` absent or `true`,
//! `"current": null`); writing produces what the original writes (ports as
//! strings, `read_only` only when set), so original daemons read our maps.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{what} does not hold valid JSON ({source}); fix it with the admin commands or zkCli")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid server address {input:?}: {reason}; write it as host:port, e.g. one:13001")]
    HostPort { input: String, reason: &'static str },
    #[error(
        "invalid server URL {input:?}: {reason}; write it as http://host:port, e.g. http://one:10001"
    )]
    Url { input: String, reason: &'static str },
}

/// Parses a znode's JSON, naming the znode in the error.
pub fn parse_json<T: for<'de> Deserialize<'de>>(what: &str, data: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(data).map_err(|source| ModelError::Json {
        what: what.to_string(),
        source,
    })
}

/// Compact JSON, as the original's `JSON.stringify`.
pub fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our model types always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

/// A host and port, with the port stored as a string like the original
/// (`{"host": "one", "port": "10001"}`) and read from a string or a number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostPort {
    pub host: String,
    #[serde(serialize_with = "port_as_string", deserialize_with = "port_from_any")]
    pub port: u16,
}

/// A storage node of the servers map.
pub type Server = HostPort;

impl HostPort {
    /// Parses `host:port` (the form of the command line's Redis lists).
    pub fn parse(input: &str) -> Result<Self, ModelError> {
        let err = |reason| ModelError::HostPort {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| err("the port is missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("the host is missing"));
        }
        if host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(err("the host has characters a host name cannot have"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("the port is not a number from 1 to 65535"))?;
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// Parses a comma-separated `host:port` list, refusing an empty one.
    pub fn parse_list(input: &str) -> Result<Vec<Self>, ModelError> {
        let list: Vec<Self> = input
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(HostPort::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(ModelError::HostPort {
                input: input.to_string(),
                reason: "the list is empty",
            });
        }
        Ok(list)
    }

    /// Parses a node URL `http://host:port` (a trailing `/` is allowed), as
    /// add-server takes it.
    pub fn parse_url(input: &str) -> Result<Self, ModelError> {
        let err = |reason| ModelError::Url {
            input: input.to_string(),
            reason,
        };
        let rest = input.trim().strip_prefix("http://").ok_or_else(|| {
            if input.starts_with("https://") {
                err("storage nodes speak plain HTTP, not https")
            } else {
                err("it does not start with http://")
            }
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(err("a node URL has no path"));
        }
        if !rest.contains(':') {
            return Err(err("the port is missing"));
        }
        HostPort::parse(rest).map_err(|e| match e {
            ModelError::HostPort { reason, .. } => err(reason),
            other => other,
        })
    }

    /// `http://host:port`, for requests to a storage node.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority())
    }

    /// `host:port`, an IPv6 address in brackets (`[::1]:10001`): what a
    /// URL or nginx's `server` line takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn port_as_string<S: Serializer>(port: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&port.to_string())
}

fn port_from_any<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u64),
        Text(String),
    }
    let port = match Port::deserialize(d)? {
        Port::Number(n) => u16::try_from(n).ok(),
        Port::Text(s) => s.trim().parse::<u16>().ok(),
    };
    port.filter(|p| *p != 0)
        .ok_or_else(|| de::Error::custom("port must be a number from 1 to 65535"))
}

/// `servers-map`: node id → address.
pub type ServersMap = BTreeMap<String, Server>;

/// One shard of `shards-map`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Present (and `true`) when the shard takes no writes. The original
    /// enables a shard by deleting the key, so absent means writable.
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "read_only_from_any"
    )]
    pub read_only: bool,
    pub nodes: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn read_only_from_any<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    // The original tests the key's presence; a `null` or `false` written by
    // hand is read as "not read-only" rather than rejected.
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl Shard {
    /// Not disabled (no `read_only`). Whether the shard takes uploads also
    /// depends on its fill: that is [`takes_writes`].
    pub fn enabled(&self) -> bool {
        !self.read_only
    }
}

/// The one rule for "this shard takes uploads", the original's
/// `isShardWritable`: enabled and `current < capacity`. The shard choice,
/// `/stats`' `writable_shards`, print-stats' `rw`/`r` and the console all
/// ask this. A shard with some room left takes writes even when a given
/// file would not fit: the choice skips it for that file only.
pub fn takes_writes(shard: &Shard, size: &ShardSize) -> bool {
    shard.enabled() && size.has_room()
}

/// used / total rounded *up* to 4 decimals, 1 when there is no capacity:
/// the original's `usage_ratio` (`Math.ceil(used / total * 10000) / 10000`),
/// so a cluster with a byte used never reads as 0.
pub fn usage_ratio(used: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        (used as f64 / total as f64 * 10_000.0).ceil() / 10_000.0
    }
}

/// `shards-map`: shard id → shard.
pub type ShardsMap = BTreeMap<String, Shard>;

/// `shard-size-<id>`: capacity and bytes used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardSize {
    pub capacity: u64,
    /// The original can write `null` here (a failed chunked upload); it
    /// reads as 0 and [`ShardSize::current_was_null`] says so for the log.
    #[serde(default, deserialize_with = "current_from_any")]
    pub current: Option<u64>,
}

fn current_from_any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    // Node writes integers but a float like 1.0e3 is accepted too.
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(match v {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| de::Error::custom("current must be a non-negative number"))?,
        ),
    })
}

impl ShardSize {
    pub fn new(capacity: u64) -> Self {
        ShardSize {
            capacity,
            current: Some(0),
        }
    }
    pub fn used(&self) -> u64 {
        self.current.unwrap_or(0)
    }
    pub fn current_was_null(&self) -> bool {
        self.current.is_none()
    }
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.used())
    }
    /// Below capacity (`current < capacity`): the room half of [`takes_writes`].
    pub fn has_room(&self) -> bool {
        self.used() < self.capacity
    }
    /// The document to write back: `null` is never written.
    pub fn normalized(&self) -> ShardSize {
        ShardSize {
            capacity: self.capacity,
            current: Some(self.used()),
        }
    }
}

/// `queue`: the Redis key and the Redis servers of the replication queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub key: String,
    pub servers: Vec<HostPort>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn reads_what_the_original_wrote() {
        let servers: ServersMap = parse_json(
            "servers-map",
            br#"{"1":{"host":"one","port":"10001"},"2":{"host":"two","port":10002}}"#,
        )
        .unwrap();
        assert_eq!(servers["1"].port, 10001);
        assert_eq!(servers["2"].port, 10002);
        let shards: ShardsMap = parse_json(
            "shards-map",
            br#"{"1":{"nodes":["1","4"]},"2":{"read_only":true,"nodes":["2","5"]}}"#,
        )
        .unwrap();
        assert!(shards["1"].enabled());
        assert!(!shards["2"].enabled());
        let size: ShardSize =
            parse_json("s", br#"{"capacity":107374182400,"current":null}"#).unwrap();
        assert_eq!(size.used(), 0);
        assert!(size.current_was_null());
        let size: ShardSize = parse_json("s", br#"{"capacity":10}"#).unwrap();
        assert!(size.current_was_null());
        let size: ShardSize = parse_json("s", br#"{"capacity":10,"current":12}"#).unwrap();
        assert_eq!(size.free(), 0);
    }

    #[test]
    fn writes_what_the_original_writes() {
        let mut shards = ShardsMap::new();
        shards.insert(
            "1".into(),
            Shard {
                read_only: false,
                nodes: vec!["1".into(), "4".into()],
            },
        );
        shards.insert(
            "2".into(),
            Shard {
                read_only: true,
                nodes: vec!["2".into(), "5".into()],
            },
        );
        let v: Value = serde_json::from_slice(&to_json(&shards)).unwrap();
        assert_eq!(
            v,
            json!({"1":{"nodes":["1","4"]},"2":{"read_only":true,"nodes":["2","5"]}})
        );
        let hp = HostPort {
            host: "one".into(),
            port: 13001,
        };
        assert_eq!(
            String::from_utf8(to_json(&hp)).unwrap(),
            r#"{"host":"one","port":"13001"}"#
        );
        let size = ShardSize {
            capacity: 5,
            current: None,
        }
        .normalized();
        assert_eq!(
            String::from_utf8(to_json(&size)).unwrap(),
            r#"{"capacity":5,"current":0}"#
        );
    }

    #[test]
    fn a_shard_takes_writes_when_enabled_and_below_capacity() {
        let check = |read_only: bool, capacity: u64, current: Option<u64>, expected: bool| {
            let shard = Shard {
                read_only,
                nodes: vec!["1".into()],
            };
            let size = ShardSize { capacity, current };
            assert_eq!(
                takes_writes(&shard, &size),
                expected,
                "read_only {read_only}, {current:?} of {capacity}"
            );
        };
        check(false, 100, Some(0), true);
        check(false, 100, Some(99), true);
        check(false, 100, Some(100), false); // full: the original shows `r`
        check(false, 100, Some(150), false);
        check(true, 100, Some(0), false);
        check(false, 100, None, true); // `null` reads as 0
        check(false, 0, Some(0), false); // no capacity, no room
    }

    #[test]
    fn usage_ratio_rounds_up_to_4_decimals() {
        let check = |used, total, expected: f64| assert_eq!(usage_ratio(used, total), expected);
        check(0, 1000, 0.0);
        check(1, 1_000_000, 0.0001); // rounded it would read 0
        check(1333, 6000, 0.2222); // 0.22216..
        check(2223, 10000, 0.2223);
        check(22221, 100000, 0.2223); // 0.22221 rounds up
        check(10, 10, 1.0);
        check(0, 0, 1.0);
    }

    #[test]
    fn refuses_bad_documents_with_the_znode_named() {
        let e = parse_json::<ServersMap>("servers-map", b"{not json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("servers-map does not hold valid JSON"),
            "{e}"
        );
        assert!(parse_json::<ServersMap>("s", br#"{"1":{"host":"a","port":"99999"}}"#).is_err());
    }

    #[test]
    fn parses_urls_and_host_lists() {
        assert_eq!(
            HostPort::parse_url("http://one:10001").unwrap(),
            HostPort {
                host: "one".into(),
                port: 10001
            }
        );
        assert_eq!(
            HostPort::parse_url("http://one:10001/").unwrap().port,
            10001
        );
        for bad in [
            "one:10001",
            "http://one",
            "http://one:x",
            "http://one:10001/path",
            "https://one:1",
            "http://:80",
        ] {
            let e = HostPort::parse_url(bad).unwrap_err();
            assert!(e.to_string().contains("http://host:port"), "{bad}: {e}");
        }
        let list = HostPort::parse_list("one:13001,two:13002").unwrap();
        assert_eq!(list.len(), 2);
        assert!(HostPort::parse_list("").is_err());
        assert!(HostPort::parse_list("one").is_err());
        assert!(HostPort::parse_list("one:0").is_err());
    }
}
