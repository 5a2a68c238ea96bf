//! A shard's health from its last check (`checks/<id>`, written by the
//! elected checker, `backpack-coordinator-check-shard` and
//! `-replace-server`), as the Shards view shows it: one word (or two) per
//! shard that says it all without colour, the lines of the details, and
//! what the check and repair questions say they will do. Pure.

use backpack_shared::live::{ClusterState, Doc};
use backpack_shared::model::{CheckRequest, ShardCheck, format_size};

use crate::event::Millis;
use crate::fmt::ago;

/// What the last check of a shard says, worst first in sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardHealth {
    /// `checks/<id>` holds no valid check (and none was read before).
    Unreadable,
    /// The check could not run to the end (a node did not list its files).
    Failed,
    /// Copies were lacking and their damage found by the nodes' scrubs:
    /// the copies lacking (damaged ones among them) and the damaged count.
    Damaged { lacking: u64, damaged: u64 },
    /// Copies missing or older than the newest, summed over the nodes.
    Missing(u64),
    /// The last check queued copies (a repair): the replicators make them;
    /// a new check says whether the shard is whole again.
    Rebuilding { queued: u64 },
    /// Never checked.
    Unchecked,
    /// Every node held every file at its newest version.
    Whole,
}

impl ShardHealth {
    /// The health of a shard whose `checks/<id>` is `doc` (absent: never
    /// checked). A document that turned invalid keeps its last good check.
    pub fn of(doc: Option<&Doc<ShardCheck>>) -> ShardHealth {
        let Some(doc) = doc else {
            return ShardHealth::Unchecked;
        };
        match &doc.value {
            None if doc.error.is_some() => ShardHealth::Unreadable,
            None => ShardHealth::Unchecked,
            Some(c) => ShardHealth::from_check(c),
        }
    }

    pub fn from_check(c: &ShardCheck) -> ShardHealth {
        let lacking = c.missing + c.older;
        if c.error.is_some() {
            ShardHealth::Failed
        } else if c.queued > 0 {
            ShardHealth::Rebuilding { queued: c.queued }
        } else if lacking > 0 && c.damaged > 0 {
            ShardHealth::Damaged {
                lacking,
                damaged: c.damaged,
            }
        } else if lacking > 0 {
            ShardHealth::Missing(lacking)
        } else {
            ShardHealth::Whole
        }
    }

    /// The HEALTH column: at most 12 characters.
    pub fn word(self) -> String {
        match self {
            ShardHealth::Unreadable => "unreadable".into(),
            ShardHealth::Failed => "check failed".into(),
            ShardHealth::Damaged { damaged, .. } => format!("damaged {}", count(damaged)),
            ShardHealth::Missing(n) => format!("{} missing", count(n)),
            ShardHealth::Rebuilding { .. } => "rebuilding".into(),
            ShardHealth::Unchecked => "unchecked".into(),
            ShardHealth::Whole => "whole".into(),
        }
    }

    /// Sort rank: the shards that need the operator first.
    pub fn rank(self) -> u8 {
        match self {
            ShardHealth::Unreadable => 0,
            ShardHealth::Failed => 1,
            ShardHealth::Damaged { .. } => 2,
            ShardHealth::Missing(_) => 3,
            ShardHealth::Rebuilding { .. } => 4,
            ShardHealth::Unchecked => 5,
            ShardHealth::Whole => 6,
        }
    }

    /// Copies lacking somewhere (being made, or not known because the
    /// check failed): the shard is not known whole.
    pub fn lacks(self) -> bool {
        matches!(
            self,
            ShardHealth::Damaged { .. }
                | ShardHealth::Missing(_)
                | ShardHealth::Rebuilding { .. }
                | ShardHealth::Failed
        )
    }
}

/// A count in at most 5 characters: `999`, `12345`, `123k`, `1.2M`.
pub fn count(n: u64) -> String {
    if n < 100_000 {
        n.to_string()
    } else if n < 10_000_000 {
        format!("{}k", n / 1000)
    } else {
        format!("{:.1}M", n as f64 / 1e6)
    }
}

/// The CHECKED column: a request waiting for the checker, else the last
/// check's age.
pub fn checked_word(
    check: Option<&ShardCheck>,
    asked: Option<&CheckRequest>,
    now: Millis,
) -> String {
    match (asked, check) {
        (Some(_), _) => "asked".into(),
        (None, Some(c)) => format!("{} ago", ago(now, c.when_ms)),
        (None, None) => "–".into(),
    }
}

/// The details' lines about the last check, each `label      text`.
pub fn detail_lines(
    doc: Option<&Doc<ShardCheck>>,
    asked: Option<&CheckRequest>,
    now: Millis,
) -> Vec<String> {
    let health = ShardHealth::of(doc);
    let mut out = vec![];
    let check = doc.and_then(|d| d.value.as_ref());
    match check {
        None => out.push(format!(
            "health     {}: no check kept yet (c checks it, R repairs it)",
            health.word()
        )),
        Some(c) => {
            let what = match health {
                ShardHealth::Whole if c.damaged > 0 => {
                    "whole (the damaged copies were replaced)".to_string()
                }
                ShardHealth::Whole => "whole: every node holds every file".into(),
                ShardHealth::Rebuilding { .. } => {
                    "rebuilding: copies queued; a new check (c) says whether it is whole".into()
                }
                ShardHealth::Failed => "check failed: it could not run to the end".into(),
                ShardHealth::Damaged { .. } | ShardHealth::Missing(_) => {
                    format!("{}: R queues the copies that lack", health.word())
                }
                h => h.word(),
            };
            out.push(format!("health     {what}"));
            out.push(format!(
                "checked    {} ago by {}",
                ago(now, c.when_ms),
                if c.by.is_empty() { "?" } else { &c.by }
            ));
            out.push(format!(
                "files      {} ({} of newest copies)",
                c.files,
                format_size(c.bytes)
            ));
            out.push(format!(
                "lacking    {} missing · {} older · {} damaged (scrubs, since the nodes started)",
                c.missing, c.older, c.damaged
            ));
            if c.queued > 0 {
                out.push(format!(
                    "queued     {} copies ({}) for the replicators",
                    c.queued,
                    format_size(c.queued_bytes)
                ));
            }
            if c.to_go() > 0 {
                // The rebuild's pace, from this check and the one before.
                let pace = match (c.rate_per_sec(), c.eta_secs()) {
                    (Some(rate), Some(eta)) => {
                        format!(", {rate:.0} copies/s since the check before, about {eta} s to go")
                    }
                    _ => String::new(),
                };
                out.push(format!(
                    "to go      {} copies ({}){pace}",
                    c.to_go(),
                    format_size(c.to_go_bytes)
                ));
            }
            if let Some(e) = &c.error {
                out.push(format!("error      {e}"));
            }
        }
    }
    if let Some(e) = doc.and_then(|d| d.error.as_ref()) {
        out.push(format!("problem    {e}"));
    }
    if let Some(r) = asked {
        out.push(format!(
            "asked      a {} {} ago; the elected checker takes it within seconds",
            if r.repair { "repair" } else { "check" },
            ago(now, r.asked_ms)
        ));
    }
    out
}

/// A first check that finished this long before it is seen is logged as
/// news; older ones are what the cluster already knew when the console
/// started (and its watches came in one by one).
const NEWS_MS: Millis = 60_000;

/// What changed in the checks between two snapshots, for the Events view:
/// whether it needs the operator, and what to say. A check that replaces
/// another, or a first one that just finished; the checker elected, gone
/// or changed.
pub fn check_events(old: &ClusterState, new: &ClusterState, now: Millis) -> Vec<(bool, String)> {
    let mut out = vec![];
    for (id, d) in &new.checks {
        let Some(c) = &d.value else { continue };
        let was = old.checks.get(id).and_then(|d| d.value.as_ref());
        let news = match was {
            Some(w) => w != c,
            None => now.saturating_sub(c.when_ms) <= NEWS_MS,
        };
        if !news {
            continue;
        }
        let h = ShardHealth::from_check(c);
        let detail = match (&c.error, c.queued) {
            (Some(e), _) => format!(": {e}"),
            (None, 0) => String::new(),
            (None, q) => format!(", {q} copies queued ({})", format_size(c.queued_bytes)),
        };
        let what = match h {
            ShardHealth::Rebuilding { .. } => format!("{} lacking", c.missing + c.older),
            h => h.word(),
        };
        out.push((
            h.lacks(),
            format!("shard {id} checked by {}: {what}{detail}", c.by),
        ));
    }
    match (&old.checker, &new.checker) {
        (Some(Some(a)), Some(Some(b))) if a != b => {
            out.push((false, format!("checker is now {b} (was {a})")))
        }
        (Some(Some(a)), Some(None)) => out.push((
            true,
            format!("no checker: {a} stopped checking, and no replicator took over"),
        )),
        (Some(None), Some(Some(b))) => out.push((false, format!("checker {b} elected"))),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        missing: u64,
        older: u64,
        damaged: u64,
        queued: u64,
        error: Option<&str>,
    ) -> ShardCheck {
        ShardCheck {
            when_ms: 1_000,
            files: 10,
            bytes: 100,
            missing,
            older,
            damaged,
            queued,
            queued_bytes: queued * 10,
            to_go_bytes: (missing + older) * 10,
            previous: None,
            by: "one:4121".into(),
            error: error.map(String::from),
        }
    }

    #[test]
    fn health_words_from_checks() {
        let cases = [
            (check(0, 0, 0, 0, None), "whole"),
            (check(2, 1, 0, 0, None), "3 missing"),
            (check(2, 0, 2, 0, None), "damaged 2"),
            // Damage found and since repaired: whole (the details say so).
            (check(0, 0, 2, 0, None), "whole"),
            (check(2, 1, 0, 3, None), "rebuilding"),
            (
                check(2, 0, 0, 0, Some("node 4 cannot list")),
                "check failed",
            ),
            (check(0, 0, 0, 2, Some("queue down")), "check failed"),
            (check(123_456, 0, 0, 0, None), "123k missing"),
        ];
        for (c, word) in cases {
            let h = ShardHealth::from_check(&c);
            assert_eq!(h.word(), word, "{c:?}");
            assert!(h.word().chars().count() <= 12, "{}", h.word());
        }
    }

    #[test]
    fn health_of_absent_and_unreadable_documents() {
        assert_eq!(ShardHealth::of(None), ShardHealth::Unchecked);
        let bad = Doc::<ShardCheck> {
            error: Some("checks/3 does not hold valid JSON".into()),
            seen: true,
            ..Doc::default()
        };
        assert_eq!(ShardHealth::of(Some(&bad)).word(), "unreadable");
        // A check that turned invalid keeps its last good value.
        let kept = Doc {
            value: Some(check(1, 0, 0, 0, None)),
            ..bad.clone()
        };
        assert_eq!(ShardHealth::of(Some(&kept)).word(), "1 missing");
        let lines = detail_lines(Some(&kept), None, 61_000);
        assert!(lines.iter().any(|l| l.starts_with("problem    checks/3")));
    }

    #[test]
    fn a_rebuild_shows_its_pace() {
        let mut c = check(400, 0, 0, 400, None);
        c.when_ms = 11_000;
        c.previous = Some(backpack_shared::model::Previous {
            when_ms: 1_000,
            to_go: 800,
        });
        let doc = Doc {
            value: Some(c),
            seen: true,
            ..Doc::default()
        };
        let lines = detail_lines(Some(&doc), None, 12_000);
        assert!(
            lines.contains(&"to go      400 copies (3.91kb), 40 copies/s since the check before, about 10 s to go".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn checked_column_and_details() {
        let c = check(2, 0, 0, 2, None);
        assert_eq!(checked_word(Some(&c), None, 7_201_000), "2h ago");
        assert_eq!(checked_word(None, None, 0), "–");
        let asked = CheckRequest {
            repair: true,
            asked_ms: 1_000,
        };
        assert_eq!(checked_word(Some(&c), Some(&asked), 0), "asked");
        let doc = Doc {
            value: Some(c),
            seen: true,
            ..Doc::default()
        };
        let lines = detail_lines(Some(&doc), Some(&asked), 13_000);
        assert_eq!(
            lines,
            vec![
                "health     rebuilding: copies queued; a new check (c) says whether it is whole",
                "checked    12s ago by one:4121",
                "files      10 (100b of newest copies)",
                "lacking    2 missing · 0 older · 0 damaged (scrubs, since the nodes started)",
                "queued     2 copies (20b) for the replicators",
                "to go      2 copies (20b)",
                "asked      a repair 12s ago; the elected checker takes it within seconds",
            ]
        );
    }

    #[test]
    fn new_checks_and_checkers_become_events() {
        let now = 10_000_000;
        let mut old = ClusterState::default();
        old.checks.insert(
            "1".into(),
            Doc {
                value: Some(check(0, 0, 0, 0, None)),
                ..Doc::default()
            },
        );
        old.checker = Some(Some("one:4121".into()));
        let mut new = old.clone();
        assert!(check_events(&old, &new, now).is_empty());
        // Shard 1 checked again (repair), shard 2's first check just made,
        // shard 3's long ago (known before the console started).
        let mut again = check(3, 0, 0, 3, None);
        again.when_ms = now - 1000;
        new.checks.insert(
            "1".into(),
            Doc {
                value: Some(again),
                ..Doc::default()
            },
        );
        let mut first = check(0, 0, 0, 0, Some("node 4 cannot list its files"));
        first.when_ms = now - 5000;
        new.checks.insert(
            "2".into(),
            Doc {
                value: Some(first),
                ..Doc::default()
            },
        );
        new.checks.insert(
            "3".into(),
            Doc {
                value: Some(check(0, 0, 0, 0, None)),
                ..Doc::default()
            },
        );
        new.checker = Some(None);
        assert_eq!(
            check_events(&old, &new, now),
            vec![
                (
                    true,
                    "shard 1 checked by one:4121: 3 lacking, 3 copies queued (30b)".to_string()
                ),
                (
                    true,
                    "shard 2 checked by one:4121: check failed: node 4 cannot list its files"
                        .to_string()
                ),
                (
                    true,
                    "no checker: one:4121 stopped checking, and no replicator took over"
                        .to_string()
                ),
            ]
        );
        old.checker = Some(None);
        new.checker = Some(Some("two:977".into()));
        new.checks = old.checks.clone();
        assert_eq!(
            check_events(&old, &new, now),
            vec![(false, "checker two:977 elected".to_string())]
        );
    }
}
