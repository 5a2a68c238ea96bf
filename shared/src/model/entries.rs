//! A map znode (`servers-map`, `shards-map`) read entry by entry, and
//! edited the way the original edits it.
//!
//! Reading: one invalid entry (a port that is not a number, `nodes` that is
//! not a list) is *skipped* with its reason, and the rest of the map is
//! used; only a document that is not a JSON object at all is an error.
//!
//! Writing: the original does `JSON.parse`, changes a field
//! (`map[id].read_only = true`, `delete map[id].read_only`,
//! `map[id].nodes = nodes`) and `JSON.stringify`. So an entry nobody
//! changed is written back byte for byte (an invalid one too: a command
//! about shard 2 does not touch a broken shard 5), and a changed entry
//! keeps its keys where they were, a new key going last: disabling an
//! enabled shard writes `{"nodes":[..],"read_only":true}`, as the original.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use super::maps::{HostPort, ModelError, Shard};

/// A type stored as the entries of a map znode.
pub trait MapEntry: Serialize + DeserializeOwned {
    /// The keys this type owns: a key of these missing from a new value is
    /// deleted from the stored entry; other keys are kept as they are.
    const FIELDS: &'static [&'static str];
}

impl MapEntry for HostPort {
    const FIELDS: &'static [&'static str] = &["host", "port"];
}

impl MapEntry for Shard {
    const FIELDS: &'static [&'static str] = &["read_only", "nodes"];
}

/// One entry as stored, and what it reads as.
#[derive(Debug, Clone)]
pub struct Entry<T> {
    pub raw: Box<RawValue>,
    /// The entry, or why it is skipped.
    pub value: Result<T, String>,
}

/// An entry that is not used, and why (for logs, metrics, the console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    pub id: String,
    pub reason: String,
}

impl fmt::Display for SkippedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {:?} skipped: {}", self.id, self.reason)
    }
}

/// A map znode, entry by entry.
#[derive(Debug, Clone)]
pub struct MapDoc<T> {
    pub entries: BTreeMap<String, Entry<T>>,
}

impl<T: MapEntry + Clone> MapDoc<T> {
    /// Parses a map document; fails only when it is not a JSON object.
    pub fn parse(what: &str, data: &[u8]) -> Result<Self, ModelError> {
        let raw: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(data).map_err(|source| ModelError::Json {
                what: what.to_string(),
                source,
            })?;
        let entries = raw
            .into_iter()
            .map(|(id, raw)| {
                let value = serde_json::from_str::<T>(raw.get()).map_err(|e| reason(&e));
                (id, Entry { raw, value })
            })
            .collect();
        Ok(MapDoc { entries })
    }

    /// The entries that parse.
    pub fn valid(&self) -> BTreeMap<String, T> {
        self.entries
            .iter()
            .filter_map(|(id, e)| e.value.as_ref().ok().map(|v| (id.clone(), v.clone())))
            .collect()
    }

    /// The entries that do not parse, and why.
    pub fn skipped(&self) -> Vec<SkippedEntry> {
        self.entries
            .iter()
            .filter_map(|(id, e)| {
                e.value.as_ref().err().map(|reason| SkippedEntry {
                    id: id.clone(),
                    reason: reason.clone(),
                })
            })
            .collect()
    }

    /// Sets entry `id` to `value` as the original would: its keys keep
    /// their places, new keys go last, keys of [`MapEntry::FIELDS`] that
    /// `value` does not write are deleted, other keys stay.
    pub fn set(&mut self, id: &str, value: T) {
        let mut obj = self
            .entries
            .get(id)
            .and_then(|e| serde_json::from_str::<Obj>(e.raw.get()).ok())
            .unwrap_or_default();
        let new: Obj = serde_json::from_slice(&super::to_json(&value)).unwrap_or_default();
        obj.0
            .retain(|(k, _)| !T::FIELDS.contains(&k.as_str()) || new.get(k).is_some());
        for (k, v) in new.0 {
            match obj.0.iter_mut().find(|(key, _)| *key == k) {
                Some(slot) => slot.1 = v,
                None => obj.0.push((k, v)),
            }
        }
        // An object of valid JSON values always serializes.
        let raw =
            serde_json::value::to_raw_value(&obj).unwrap_or_else(|_| RawValue::NULL.to_owned());
        self.entries.insert(
            id.to_string(),
            Entry {
                raw,
                value: Ok(value),
            },
        );
    }

    /// Deletes entry `id` (valid or not); whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        self.entries.remove(id).is_some()
    }

    /// The document to write.
    pub fn to_json(&self) -> Vec<u8> {
        let raw: BTreeMap<&String, &RawValue> =
            self.entries.iter().map(|(id, e)| (id, &*e.raw)).collect();
        serde_json::to_vec(&raw).unwrap_or_default()
    }
}

/// serde_json's message without its position (which counts inside the
/// entry, not the znode).
fn reason(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A JSON object with its keys in document order.
#[derive(Debug, Default)]
struct Obj(Vec<(String, Box<RawValue>)>);

impl Obj {
    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }
}

impl<'de> Deserialize<'de> for Obj {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Obj;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Obj, A::Error> {
                let mut out: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Box<RawValue>>()? {
                    // JSON.parse keeps the last of a repeated key, in the first one's place.
                    match out.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => out.push((k, v)),
                    }
                }
                Ok(Obj(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Obj {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shards(json: &str) -> MapDoc<Shard> {
        MapDoc::parse("shards-map", json.as_bytes()).unwrap()
    }

    fn text(doc: &MapDoc<impl MapEntry + Clone>) -> String {
        String::from_utf8(doc.to_json()).unwrap()
    }

    #[test]
    fn an_invalid_entry_is_skipped_with_its_reason_and_the_rest_used() {
        let doc: MapDoc<HostPort> = MapDoc::parse(
            "servers-map",
            br#"{"1":{"host":"one","port":"10001"},"9":{"host":"nine","port":"x"},"8":"oops"}"#,
        )
        .unwrap();
        assert_eq!(doc.valid().len(), 1);
        assert_eq!(doc.valid()["1"].port, 10001);
        let skipped = doc.skipped();
        assert_eq!(
            skipped.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec![
                "entry \"8\" skipped: invalid type: string \"oops\", expected struct HostPort",
                "entry \"9\" skipped: port must be a number from 1 to 65535",
            ]
        );
        // Not a JSON object at all: an error naming the znode.
        let e = MapDoc::<HostPort>::parse("servers-map", b"[1]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("servers-map does not hold valid JSON")
        );
    }

    #[test]
    fn untouched_entries_are_written_back_as_they_were() {
        let mut doc = shards(
            r#"{"1":{"nodes":["1"],"read_only":true},"2":{"nodes":"x"},"3":{"read_only":true,"nodes":["3"],"note":"hand"}}"#,
        );
        doc.set(
            "4",
            Shard {
                read_only: true,
                nodes: vec!["4".into()],
            },
        );
        assert_eq!(
            text(&doc),
            r#"{"1":{"nodes":["1"],"read_only":true},"2":{"nodes":"x"},"3":{"read_only":true,"nodes":["3"],"note":"hand"},"4":{"read_only":true,"nodes":["4"]}}"#
        );
    }

    #[test]
    fn a_changed_entry_keeps_its_key_order_like_the_original() {
        // disable: `map[id].read_only = true` appends the key.
        let mut doc = shards(r#"{"1":{"nodes":["1","4"]}}"#);
        doc.set(
            "1",
            Shard {
                read_only: true,
                nodes: vec!["1".into(), "4".into()],
            },
        );
        assert_eq!(text(&doc), r#"{"1":{"nodes":["1","4"],"read_only":true}}"#);
        // enable: `delete map[id].read_only`; unknown keys stay.
        let mut doc = shards(r#"{"1":{"read_only":true,"x":1,"nodes":["1"]}}"#);
        doc.set(
            "1",
            Shard {
                read_only: false,
                nodes: vec!["1".into()],
            },
        );
        assert_eq!(text(&doc), r#"{"1":{"x":1,"nodes":["1"]}}"#);
        // replacing an invalid server entry in place
        let mut doc: MapDoc<HostPort> =
            MapDoc::parse("servers-map", br#"{"9":{"port":"x","host":"nine"}}"#).unwrap();
        doc.set(
            "9",
            HostPort {
                host: "nine".into(),
                port: 10009,
            },
        );
        assert_eq!(text(&doc), r#"{"9":{"port":"10009","host":"nine"}}"#);
        assert!(doc.skipped().is_empty());
        assert!(doc.remove("9"));
        assert_eq!(text(&doc), "{}");
    }
}
