//! The merge-join of one page of a shard's listings: which node lacks
//! which file, or holds an older version of it. No IO.
//!
//! Every node lists its files in the same order, by
//! ([`name_key`](backpack_shared::model::name_key), name), so one pass over
//! the heads of the lists meets each name once, with every node's copy of
//! it side by side; memory is the page's listings, whatever the file count.

use backpack_shared::model::Version;

/// One line of a node's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: u64,
    pub name: String,
    /// Data length, bytes.
    pub size: u64,
    pub version: Version,
}

/// What a node lacks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lack {
    /// No copy.
    Missing,
    /// A copy older than the newest one (its version).
    Older(Version),
}

/// A file one node of the shard needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub name: String,
    /// The node that needs it.
    pub node: String,
    pub lack: Lack,
    /// Nodes that hold the newest version (the sources of its copy).
    pub sources: Vec<String>,
    pub newest: Version,
    /// Size of the newest copy, bytes.
    pub size: u64,
}

/// One page, merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Page {
    /// Distinct names in the page.
    pub files: u64,
    /// Bytes of the newest copy of each of them.
    pub bytes: u64,
    pub gaps: Vec<Gap>,
}

/// A listing not in the shared order (a node that sorts differently would
/// make every file look missing).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node {node} listed {after:?} after {before:?}: its listing is not in name-key order")]
pub struct OutOfOrder {
    pub node: String,
    pub before: String,
    pub after: String,
}

/// Merges the listings of one page, one per node (`(node id, lines)`),
/// each sorted by (key, name).
pub fn merge(lists: &[(String, Vec<Listed>)]) -> Result<Page, OutOfOrder> {
    for (node, lines) in lists {
        if let Some(w) = lines
            .windows(2)
            .find(|w| (w[0].key, &w[0].name) >= (w[1].key, &w[1].name))
        {
            return Err(OutOfOrder {
                node: node.clone(),
                before: w[0].name.clone(),
                after: w[1].name.clone(),
            });
        }
    }
    let mut at = vec![0usize; lists.len()];
    let mut page = Page::default();
    loop {
        // The smallest head: the next name in the shared order.
        let Some(next) = lists
            .iter()
            .zip(&at)
            .filter_map(|((_, lines), &i)| lines.get(i))
            .map(|l| (l.key, &l.name))
            .min()
        else {
            return Ok(page);
        };
        let (key, name) = (next.0, next.1.clone());
        // Each node's copy of it, if any.
        let copies: Vec<Option<&Listed>> = lists
            .iter()
            .zip(at.iter_mut())
            .map(|((_, lines), i)| {
                let here = lines.get(*i).filter(|l| l.key == key && l.name == name);
                if here.is_some() {
                    *i += 1;
                }
                here
            })
            .collect();
        let newest = copies
            .iter()
            .flatten()
            .max_by_key(|l| l.version)
            .map(|l| (l.version, l.size));
        let Some((newest, size)) = newest else {
            continue;
        };
        let sources: Vec<String> = lists
            .iter()
            .zip(&copies)
            .filter(|(_, c)| c.is_some_and(|l| l.version == newest))
            .map(|((node, _), _)| node.clone())
            .collect();
        page.files += 1;
        page.bytes += size;
        for ((node, _), copy) in lists.iter().zip(&copies) {
            let lack = match copy {
                None => Lack::Missing,
                Some(l) if l.version < newest => Lack::Older(l.version),
                Some(_) => continue,
            };
            page.gaps.push(Gap {
                name: name.clone(),
                node: node.clone(),
                lack,
                sources: sources.clone(),
                newest,
                size,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn l(key: u64, name: &str, time: u64) -> Listed {
        Listed {
            key,
            name: name.into(),
            size: 10,
            version: Version {
                time_ms: time,
                content_hash: time * 7,
            },
        }
    }

    #[test]
    fn finds_what_each_node_lacks() {
        let lists = vec![
            (
                "1".to_string(),
                vec![l(1, "/a", 5), l(2, "/b", 5), l(2, "/c", 9)],
            ),
            (
                "2".to_string(),
                vec![l(1, "/a", 5), l(2, "/c", 7), l(4, "/d", 1)],
            ),
        ];
        let page = merge(&lists).unwrap();
        assert_eq!(page.files, 4);
        assert_eq!(page.bytes, 40);
        let gaps: Vec<(&str, &str, Lack, Vec<String>)> = page
            .gaps
            .iter()
            .map(|g| (g.name.as_str(), g.node.as_str(), g.lack, g.sources.clone()))
            .collect();
        assert_eq!(
            gaps,
            vec![
                ("/b", "2", Lack::Missing, vec!["1".to_string()]),
                (
                    "/c",
                    "2",
                    Lack::Older(l(0, "", 7).version),
                    vec!["1".to_string()]
                ),
                ("/d", "1", Lack::Missing, vec!["2".to_string()]),
            ]
        );
    }

    #[test]
    fn a_whole_shard_has_no_gaps_and_every_holder_is_a_source() {
        let same = vec![l(1, "/a", 5), l(3, "/b", 6)];
        let lists = vec![
            ("1".to_string(), same.clone()),
            ("2".to_string(), same.clone()),
            ("3".to_string(), vec![l(3, "/b", 6)]),
        ];
        let page = merge(&lists).unwrap();
        assert_eq!(page.files, 2);
        assert_eq!(page.gaps.len(), 1);
        assert_eq!(page.gaps[0].node, "3");
        assert_eq!(page.gaps[0].sources, vec!["1", "2"]);
    }

    #[test]
    fn a_listing_out_of_order_is_refused() {
        let lists = vec![("1".to_string(), vec![l(2, "/b", 1), l(1, "/a", 1)])];
        let e = merge(&lists).unwrap_err();
        assert_eq!(e.node, "1");
        assert!(e.to_string().contains("not in name-key order"));
    }

    #[test]
    fn equal_keys_are_ordered_by_name() {
        let lists = vec![
            ("1".to_string(), vec![l(1, "/a", 1), l(1, "/b", 1)]),
            ("2".to_string(), vec![l(1, "/b", 1)]),
        ];
        let page = merge(&lists).unwrap();
        assert_eq!(page.files, 2);
        assert_eq!(page.gaps.len(), 1);
        assert_eq!(
            (page.gaps[0].name.as_str(), page.gaps[0].node.as_str()),
            ("/a", "2")
        );
    }
}
