//! Every view and overlay rendered with ratatui's TestBackend and compared
//! with the committed insta snapshots (tests/snapshots/). The clock is
//! passed in (demo::T0), so nothing needs filtering. After an intended
//! change: `cargo insta review` (or INSTA_UPDATE=always) and commit.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use backpack_console::demo::{self, T0};
use backpack_console::event::Event;
use backpack_console::state::State;
use backpack_shared::live::Doc;
use backpack_shared::model::{CheckRequest, ShardCheck, ShardSize};
use backpack_shared::zk::ConnState;
use crossterm::event::KeyCode;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;

fn buffer(s: &State) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(s.size.0, s.size.1)).unwrap();
    t.draw(|f| f.render_widget(s, f.area())).unwrap();
    t.backend().buffer().clone()
}

fn screen(s: &State) -> String {
    let b = buffer(s);
    let mut out = String::new();
    for y in 0..b.area.height {
        let mut line = String::new();
        for x in 0..b.area.width {
            line.push_str(b[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn keys(s: &mut State, text: &str) {
    for c in text.chars() {
        s.press(T0, KeyCode::Char(c));
    }
}

/// The five views of the demo cluster on a `w` x `h` terminal, as the
/// snapshots `<view>_<w>x<h>`.
fn every_view(w: u16, h: u16) {
    let mut s = demo::state(w, h);
    insta::assert_snapshot!(format!("shards_{w}x{h}"), screen(&s));
    for (k, view) in [
        ("2", "servers"),
        ("3", "queue"),
        ("4", "daemons"),
        ("5", "events"),
    ] {
        keys(&mut s, k);
        insta::assert_snapshot!(format!("{view}_{w}x{h}"), screen(&s));
    }
}

#[test]
fn every_view_at_100x30() {
    every_view(100, 30);
}

#[test]
fn every_view_at_80x24() {
    every_view(80, 24);
}

#[test]
fn overlays() {
    let mut s = demo::state(100, 30);
    keys(&mut s, "?");
    insta::assert_snapshot!("help", screen(&s));
    s.press(T0, KeyCode::Esc);
    s.press(T0, KeyCode::Enter);
    insta::assert_snapshot!("details_shard", screen(&s));
    s.press(T0, KeyCode::Esc);
    keys(&mut s, "a ");
    insta::assert_snapshot!("form_add_shard", screen(&s));
    s.press(T0, KeyCode::Esc);
    keys(&mut s, "2ahttp:/one:10008");
    insta::assert_snapshot!("form_add_server_invalid", screen(&s));
    s.press(T0, KeyCode::Esc);
    keys(&mut s, "1Ge");
    insta::assert_snapshot!("confirm_enable", screen(&s));
    // Someone re-points shard 3 meanwhile.
    let mut c = demo::cluster();
    c.shards.value.as_mut().unwrap().get_mut("3").unwrap().nodes = vec!["3".into(), "7".into()];
    s.update(T0, Event::Cluster(Arc::new(c)));
    keys(&mut s, "y");
    insta::assert_snapshot!("changed_meanwhile", screen(&s));
    keys(&mut s, "y");
    s.update(
        T0,
        Event::Done {
            id: 1,
            result: Err(
                "shard 3 does not exist; list the shards with backpack-coordinator-dump-shards"
                    .into(),
            ),
        },
    );
    insta::assert_snapshot!("result_line_error", screen(&s));
    keys(&mut s, "3u");
    insta::assert_snapshot!("confirm_requeue", screen(&s));
    s.press(T0, KeyCode::Esc);
    // The command line, with the usage of the command being typed.
    keys(&mut s, ":add-sh");
    insta::assert_snapshot!("command_line", screen(&s));
}

#[test]
fn connection_lost_banner_keeps_the_last_state() {
    let mut s = demo::state(100, 30);
    let mut c = demo::cluster();
    c.conn = Some(ConnState::Disconnected {
        since: std::time::Instant::now(),
    });
    s.update(T0 - 12_000, Event::Cluster(Arc::new(c)));
    s.update(T0, Event::Tick);
    insta::assert_snapshot!("disconnected", screen(&s));
    let b = buffer(&s);
    assert_eq!(b[(0, 0)].bg, Color::Red, "the banner is red");
}

#[test]
fn the_banner_never_runs_into_the_clock() {
    // Every width around the one where the long banner just fits.
    for w in 120..150 {
        let mut s = demo::state(w, 30);
        let mut c = demo::cluster();
        c.conn = Some(ConnState::Disconnected {
            since: std::time::Instant::now(),
        });
        s.update(T0 - 12_000, Event::Cluster(Arc::new(c)));
        s.update(T0, Event::Tick);
        let first: Vec<char> = screen(&s).lines().next().unwrap().chars().collect();
        // The line ends with the clock, HH:MM:SS, after a space.
        let before = first[first.len() - 9];
        assert_eq!(
            before,
            ' ',
            "at {w} columns the banner touches the clock: {:?}",
            first.iter().collect::<String>()
        );
    }
}

#[test]
fn read_only_filter_and_problems() {
    let mut cfg = demo::config();
    cfg.read_only = true;
    let mut s = State::new(cfg, T0);
    s.update(T0, Event::Resize(100, 30));
    let mut c = demo::cluster();
    c.sizes.get_mut("2").unwrap().error = Some(
        "shard-size-2 does not hold valid JSON (expected value at line 1 column 1); fix it with the admin commands or zkCli".into(),
    );
    c.sizes.get_mut("1").unwrap().value = Some(ShardSize {
        capacity: 100 * demo::GIB,
        current: Some(100 * demo::GIB),
    });
    s.update(T0, Event::Cluster(Arc::new(c)));
    keys(&mut s, "j");
    insta::assert_snapshot!("read_only_problems", screen(&s));
    keys(&mut s, "2/one");
    insta::assert_snapshot!("filter_typing", screen(&s));
}

#[test]
fn before_zookeeper_answers() {
    let mut s = State::new(demo::config(), T0);
    s.update(T0, Event::Resize(80, 24));
    insta::assert_snapshot!("waiting", screen(&s));
}

#[test]
fn a_thousand_shards_scrolled() {
    let mut s = State::new(demo::config(), T0);
    s.update(T0, Event::Resize(100, 30));
    s.update(T0, Event::Cluster(Arc::new(demo::large(1000, 3000))));
    s.press(T0, KeyCode::End);
    keys(&mut s, "k");
    insta::assert_snapshot!("large_end", screen(&s));
}

#[test]
fn no_color_means_no_colour_but_every_state_in_words() {
    let mut cfg = demo::config();
    cfg.color = false;
    let mut s = State::new(cfg, T0);
    s.update(T0, Event::Resize(100, 30));
    s.update(T0, Event::Cluster(Arc::new(demo::cluster())));
    s.update(T0, demo::health());
    let mut c = demo::cluster();
    c.conn = Some(ConnState::Disconnected {
        since: std::time::Instant::now(),
    });
    for tab in ["1", "2", "3", "4", "5"] {
        keys(&mut s, tab);
        for state in [&demo::cluster(), &c] {
            s.update(T0, Event::Cluster(Arc::new(state.clone())));
            let b = buffer(&s);
            for cell in b.content() {
                assert_eq!(
                    cell.fg,
                    Color::Reset,
                    "a colour under NO_COLOR in view {tab}"
                );
                assert_eq!(
                    cell.bg,
                    Color::Reset,
                    "a colour under NO_COLOR in view {tab}"
                );
            }
        }
    }
    keys(&mut s, "1");
    let text = screen(&s);
    for word in [
        "rw",
        "ro",
        "reconnecting",
        "whole",
        "3 missing",
        "unchecked",
        "1 not whole",
    ] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
}

#[test]
fn queue_servers_that_can_lose_tasks() {
    let mut s = demo::state(80, 24);
    s.update(T0, demo::keeping_at_risk());
    keys(&mut s, "3");
    insta::assert_snapshot!("queue_keeping_80x24", screen(&s));

    // Under NO_COLOR the warnings are words, not only colours.
    s.config.color = false;
    for cell in buffer(&s).content() {
        assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset));
    }
    let text = screen(&s);
    for words in [
        "up · evicts: allkeys-lru",
        "up · no appendonly",
        "✗ Redis one:13001 evicts: allkeys-lru",
        "! Redis two:13002 has no appendonly",
        "queue 12·evicting·1 dead",
    ] {
        assert!(text.contains(words), "{words:?} missing:\n{text}");
    }

    // Where the header has room, the oldest task's age stays beside it.
    s.update(T0, Event::Resize(100, 30));
    let header = screen(&s).lines().nth(1).unwrap_or_default().to_string();
    assert!(
        header.contains("queue 12·evicting·oldest 3s·1 dead"),
        "{header}"
    );
}

/// Every health a shard's last check can give, the checks asked for and
/// not taken, and no elected checker.
fn checked_cluster() -> backpack_shared::live::ClusterState {
    let mut c = demo::large(8, 16);
    c.checker = Some(None);
    let check = |minutes: u64, f: &dyn Fn(&mut ShardCheck)| {
        let mut v = ShardCheck {
            when_ms: T0 - minutes * 60_000,
            files: 120_000,
            bytes: 12 * demo::GIB,
            by: "one:4121".into(),
            ..ShardCheck::default()
        };
        f(&mut v);
        demo::doc(v)
    };
    c.checks.clear();
    c.checks.insert("1".into(), check(120, &|_| {}));
    c.checks.insert("2".into(), check(5, &|v| v.missing = 41));
    c.checks.insert(
        "3".into(),
        check(3, &|v| {
            v.missing = 2;
            v.damaged = 2;
        }),
    );
    c.checks.insert(
        "4".into(),
        check(1, &|v| {
            v.missing = 40_000;
            v.older = 12;
            v.queued = 40_012;
            v.queued_bytes = 4 * demo::GIB;
            v.to_go_bytes = 4 * demo::GIB;
        }),
    );
    c.checks.insert(
        "5".into(),
        check(2 * 24 * 60, &|v| {
            v.error = Some(
                "node 10 (http://node0.example:10010) cannot list its files: connection refused"
                    .into(),
            )
        }),
    );
    c.checks.insert(
        "6".into(),
        Doc {
            error: Some(
                "checks/6 does not hold valid JSON (EOF while parsing at line 1 column 3)".into(),
            ),
            seen: true,
            ..Doc::default()
        },
    );
    c.check_requests.insert(
        "7".into(),
        demo::doc(CheckRequest {
            repair: true,
            asked_ms: T0 - 4_000,
        }),
    );
    c
}

#[test]
fn shard_health_from_the_last_checks() {
    let mut s = State::new(demo::config(), T0);
    s.update(T0, Event::Resize(100, 30));
    s.update(T0, Event::Cluster(Arc::new(checked_cluster())));
    insta::assert_snapshot!("shards_health_100x30", screen(&s));
    // Sorted by health: the shards that need the operator first.
    keys(&mut s, "sssssss");
    let text = screen(&s);
    let order: Vec<&str> = text
        .lines()
        .skip(5)
        .take(8)
        .map(|l| {
            l.trim_start_matches('▶')
                .split_whitespace()
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(order, ["6", "5", "3", "2", "4", "7", "8", "1"], "{text}");
    // The details of a shard whose check is rebuilding it.
    let mut s = State::new(demo::config(), T0);
    s.update(T0, Event::Resize(100, 30));
    s.update(T0, Event::Cluster(Arc::new(checked_cluster())));
    keys(&mut s, "jjj");
    s.press(T0, KeyCode::Enter);
    insta::assert_snapshot!("details_shard_rebuilding", screen(&s));
    s.update(T0, Event::Resize(80, 24));
    s.press(T0, KeyCode::Esc);
    insta::assert_snapshot!("shards_health_80x24", screen(&s));
}

#[test]
fn check_and_repair_questions() {
    let mut s = demo::state(100, 30);
    keys(&mut s, "c");
    insta::assert_snapshot!("confirm_check", screen(&s));
    s.press(T0, KeyCode::Esc);
    keys(&mut s, "GR");
    insta::assert_snapshot!("confirm_repair", screen(&s));
    s.press(T0, KeyCode::Esc);
    keys(&mut s, "2jjRhttp://three:10003");
    insta::assert_snapshot!("form_replace_server", screen(&s));
    s.press(T0, KeyCode::Enter);
    insta::assert_snapshot!("confirm_replace", screen(&s));
}
