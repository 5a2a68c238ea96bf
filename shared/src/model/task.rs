//! The replication task, in the original's exact wire format:
//! `{"from":["1"],"to":"4","path":"/hi.txt"}` (keys in that order, no
//! spaces). Byte-identical tasks are one queue item, so the encoding must
//! never change.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationTask {
    /// Ids of the nodes that hold the file.
    pub from: Vec<String>,
    /// Id of the node to copy to.
    pub to: String,
    /// The file's name on the nodes: the upload's request target, byte for byte.
    pub path: String,
}

impl ReplicationTask {
    /// The queue item: compact JSON, keys in declaration order.
    pub fn encode(&self) -> String {
        // Serializing strings and a Vec<String> cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(item: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_the_originals() {
        let t = ReplicationTask {
            from: vec!["1".into()],
            to: "4".into(),
            path: "/hi.txt".into(),
        };
        assert_eq!(t.encode(), r#"{"from":["1"],"to":"4","path":"/hi.txt"}"#);
        assert_eq!(ReplicationTask::decode(&t.encode()).ok(), Some(t));
        let odd = ReplicationTask {
            from: vec!["1".into(), "2".into()],
            to: "3".into(),
            path: "/a%20b?x=\"y\"&é".into(),
        };
        assert_eq!(
            odd.encode(),
            r#"{"from":["1","2"],"to":"3","path":"/a%20b?x=\"y\"&é"}"#
        );
    }
}
