//! The five tables: rows rebuilt from what is known, each view's order
//! after filter and sort, the selection that follows its row, and the
//! scrolling that keeps it in sight (with the [`crate::layout`] maths the
//! view draws with).

use super::{LogEntry, State, Tab, TableView};
use crate::layout;
use crate::rows::{self, DaemonRow, ServerRow, ShardRow, TaskRow, order};

impl State {
    pub(super) fn rebuild_shards(&mut self) {
        self.shards = rows::shard_rows(&self.cluster, &self.growth, &self.health, self.now);
        self.totals = rows::shard_totals(&self.shards);
        self.reorder(Tab::Shards);
    }

    pub(super) fn rebuild_servers(&mut self) {
        self.servers = rows::server_rows(&self.cluster, &self.health);
        self.reorder(Tab::Servers);
    }

    pub(super) fn reorder_all(&mut self) {
        for tab in Tab::ALL {
            self.reorder(tab);
        }
    }

    /// Recomputes a view's order, keeps the selection on its row, and
    /// scrolls so that it is visible.
    pub(super) fn reorder(&mut self, tab: Tab) {
        let t = &self.tables[tab.index()];
        let idx = match tab {
            Tab::Shards => by_table(&self.shards, ShardRow::text, ShardRow::sort_key, t),
            Tab::Servers => by_table(&self.servers, ServerRow::text, ServerRow::sort_key, t),
            Tab::Queue => by_table(&self.tasks, TaskRow::text, TaskRow::sort_key, t),
            Tab::Daemons => by_table(&self.daemons, DaemonRow::text, DaemonRow::sort_key, t),
            Tab::Events => {
                let log: Vec<&LogEntry> = self.log.iter().collect();
                order(
                    &log,
                    &t.filter,
                    |e| format!("{} {}", e.kind.word(), e.text),
                    |e| rows::Key::Num(e.seq as f64),
                    t.desc,
                )
            }
        };
        let keys: Vec<String> = idx.iter().map(|&i| self.row_key(tab, i)).collect();
        let page = self.page_rows(tab).max(1);
        let t = &mut self.tables[tab.index()];
        if tab == Tab::Events && t.selected == 0 && t.desc {
            // At the top of the newest-first log: stay on the newest entry.
            t.selected_key = None;
        }
        if let Some(k) = &t.selected_key
            && let Some(pos) = keys.iter().position(|x| x == k)
        {
            t.selected = pos;
        }
        t.selected = t.selected.min(keys.len().saturating_sub(1));
        t.selected_key = keys.get(t.selected).cloned();
        if t.selected < t.offset {
            t.offset = t.selected;
        }
        if t.selected >= t.offset + page {
            t.offset = t.selected + 1 - page;
        }
        t.offset = t.offset.min(keys.len().saturating_sub(page));
        self.order[tab.index()] = idx;
    }

    fn row_key(&self, tab: Tab, i: usize) -> String {
        match tab {
            Tab::Shards => self.shards[i].key().to_string(),
            Tab::Servers => self.servers[i].key().to_string(),
            Tab::Queue => self.tasks[i].key().to_string(),
            Tab::Daemons => self.daemons[i].key(),
            Tab::Events => self.log[i].seq.to_string(),
        }
    }

    pub fn table(&self, tab: Tab) -> &TableView {
        &self.tables[tab.index()]
    }

    /// Index (into the view's rows) of the selected row.
    pub fn selected(&self, tab: Tab) -> Option<usize> {
        self.order[tab.index()]
            .get(self.tables[tab.index()].selected)
            .copied()
    }

    pub fn selected_shard(&self) -> Option<&ShardRow> {
        self.selected(Tab::Shards).map(|i| &self.shards[i])
    }
    pub fn selected_server(&self) -> Option<&ServerRow> {
        self.selected(Tab::Servers).map(|i| &self.servers[i])
    }
    pub fn selected_task(&self) -> Option<&TaskRow> {
        self.selected(Tab::Queue).map(|i| &self.tasks[i])
    }
    pub fn selected_daemon(&self) -> Option<&DaemonRow> {
        self.selected(Tab::Daemons).map(|i| &self.daemons[i])
    }
    pub fn selected_event(&self) -> Option<&LogEntry> {
        self.selected(Tab::Events).map(|i| &self.log[i])
    }

    pub fn connected(&self) -> bool {
        self.cluster.conn.is_some_and(|c| c.is_connected())
    }

    /// Redis servers of the queue: the last report's, else the configured ones.
    pub fn queue_servers(&self) -> usize {
        self.queue.as_ref().map_or(
            self.cluster
                .queue
                .value
                .as_ref()
                .map_or(0, |q| q.servers.len()),
            |q| q.per_server.len(),
        )
    }

    /// How many Redis servers the Queue view lists above its tasks.
    pub fn queue_server_lines(&self) -> usize {
        layout::queue_server_lines(layout::body_height(self.size.1), self.queue_servers())
    }

    /// The Queue view's warnings about its servers, as drawn.
    pub fn queue_warning_lines(&self) -> Vec<(bool, String)> {
        layout::queue_warning_lines(
            &self.keeping_warnings,
            self.size.0,
            layout::body_height(self.size.1),
        )
    }

    /// Table rows that fit in a view (what PageDown moves by).
    pub fn page_rows(&self, tab: Tab) -> usize {
        layout::page_rows(
            tab,
            layout::body_height(self.size.1),
            self.queue_server_lines() + self.queue_warning_lines().len(),
        )
    }

    pub(super) fn page(&self) -> usize {
        self.page_rows(self.tab).max(1)
    }

    pub(super) fn move_sel(&mut self, delta: i64) {
        let n = self.order[self.tab.index()].len();
        let t = &mut self.tables[self.tab.index()];
        let pos = (t.selected as i64).saturating_add(delta);
        t.selected = pos.clamp(0, n.saturating_sub(1) as i64) as usize;
        t.selected_key = None;
    }
}

/// A table's rows in the order its filter and sort column give.
fn by_table<R>(
    rows: &[R],
    text: fn(&R) -> String,
    sort_key: fn(&R, usize) -> rows::Key,
    t: &TableView,
) -> Vec<usize> {
    order(rows, &t.filter, text, |r| sort_key(r, t.sort), t.desc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use crossterm::event::KeyCode;

    use super::super::testing::{keys, press};
    use super::*;
    use crate::demo::{self, T0};
    use crate::event::Event;
    use crate::state::Command;
    use crate::state::Mode;

    #[test]
    fn views_switch_and_selection_moves() {
        let mut s = demo::state(100, 30);
        assert_eq!(s.tab, Tab::Shards);
        assert_eq!(s.selected_shard().unwrap().id, "1");
        keys(&mut s, "jj");
        assert_eq!(s.selected_shard().unwrap().id, "3");
        keys(&mut s, "j");
        assert_eq!(s.selected_shard().unwrap().id, "3", "stops at the end");
        keys(&mut s, "g");
        assert_eq!(s.selected_shard().unwrap().id, "1");
        press(&mut s, KeyCode::Down);
        assert_eq!(s.selected_shard().unwrap().id, "2");
        press(&mut s, KeyCode::Tab);
        assert_eq!(s.tab, Tab::Servers);
        press(&mut s, KeyCode::BackTab);
        assert_eq!(s.tab, Tab::Shards);
        for (k, tab) in ['1', '2', '3', '4', '5'].iter().zip(Tab::ALL) {
            keys(&mut s, &k.to_string());
            assert_eq!(s.tab, tab);
        }
        assert_eq!(keys(&mut s, "q"), vec![Command::Quit]);
    }

    #[test]
    fn filter_sort_and_selection_follows_its_row() {
        let mut s = demo::state(100, 30);
        keys(&mut s, "2");
        keys(&mut s, "/no shard");
        assert!(matches!(s.mode, Mode::Filter));
        press(&mut s, KeyCode::Enter);
        assert!(matches!(s.mode, Mode::Normal));
        let shown: Vec<&str> = s.order[1]
            .iter()
            .map(|&i| s.servers[i].id.as_str())
            .collect();
        assert_eq!(shown, vec!["7"]);
        press(&mut s, KeyCode::Esc);
        assert_eq!(s.order[1].len(), 7, "Esc clears the filter");
        assert_eq!(
            s.selected_server().unwrap().id,
            "7",
            "the selection stayed on its row"
        );
        // Select server 3, sort by URL descending: the selection stays on 3.
        keys(&mut s, "gjj");
        assert_eq!(s.selected_server().unwrap().id, "3");
        keys(&mut s, "sS");
        assert_eq!(s.table(Tab::Servers).sort, 1);
        assert!(s.table(Tab::Servers).desc);
        assert_eq!(s.selected_server().unwrap().id, "3");
        let first = s.order[1][0];
        assert_eq!(s.servers[first].addr.url(), "http://two:10006");
    }

    #[test]
    fn paging_scrolls_a_large_table() {
        let mut s = State::new(demo::config(), T0);
        s.update(T0, Event::Resize(80, 24));
        s.update(T0, Event::Cluster(Arc::new(demo::large(1000, 3000))));
        assert_eq!(s.shards.len(), 1000);
        let page = s.page_rows(Tab::Shards);
        assert_eq!(page, 13);
        press(&mut s, KeyCode::PageDown);
        press(&mut s, KeyCode::PageDown);
        let t = s.table(Tab::Shards);
        assert_eq!(t.selected, 26);
        assert_eq!(t.offset, 26 + 1 - page);
        keys(&mut s, "G");
        assert_eq!(s.selected_shard().unwrap().id, "1000");
        assert_eq!(s.table(Tab::Shards).offset, 1000 - page);
    }
}
