//! `backpack-replicator-dead <zk_servers> </zk/root> list|requeue|drop`:
//! the dead-letter set of the replication queue, where tasks land after
//! `--max-attempts` failed copies (with their last error).
//!
//! - `list [--limit N]`: each task's JSON (what `requeue` and `drop` take),
//!   its age, attempts and last error;
//! - `requeue <item|/path|--all>`: back into the queue with a fresh attempt
//!   count (after fixing the cause: a node back up, a file restored);
//! - `drop <item|/path|--all>`: forget tasks for good.
//!
//! An argument starting with `{` is a task as `list` prints it; anything
//! else is a file name (`/photo.jpg`) and selects every dead task for it.

use anyhow::{Context as _, bail};
use backpack_shared::cli::ZkArgs;
use backpack_shared::queue::{Queue, TaskInfo, describe_item};
use clap::{Parser, Subcommand};

use backpack_shared::clock::now_ms;

/// Lists, re-queues or drops the replication tasks that failed too often
/// (the queue's dead-letter set).
#[derive(Debug, Parser)]
#[command(name = "backpack-replicator-dead", version)]
pub struct Args {
    #[command(flatten)]
    pub zk: ZkArgs,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Shows dead-letter tasks with their age, attempts and last error
    List {
        /// Show at most this many tasks
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Puts tasks back into the queue with a fresh attempt count
    Requeue(Target),
    /// Forgets tasks for good
    Drop(Target),
}

/// Which dead-letter tasks.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A task's JSON as `list` prints it, or a file name (/photo.jpg) for
    /// every dead task of that file
    pub item: Option<String>,
    /// Every dead-letter task
    #[arg(long)]
    pub all: bool,
}

/// The original's style of usage line, for missing arguments.
pub const USAGE: &str = "Usage: backpack-replicator-dead <zk_servers> </zk/root> list|requeue <item|--all>|drop <item|--all>";

/// The whole command: connect, act, print.
pub async fn main(args: Args) -> anyhow::Result<()> {
    let zk = args.zk.connect_initialized().await?;
    let queue = super::queue_of(&zk).await?;
    let r = act(&queue, &args.action).await;
    zk.close();
    for line in r? {
        say(&line);
    }
    Ok(())
}

fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

fn age(ms: Option<u64>) -> String {
    let Some(t) = ms else {
        return "queued at an unknown time".into();
    };
    let s = now_ms().saturating_sub(t) / 1000;
    let text = match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    };
    format!("queued {text} ago")
}

/// The lines `list` prints for one task.
pub fn describe(t: &TaskInfo) -> [String; 2] {
    let attempts = match t.attempts {
        1 => "1 attempt".to_string(),
        n => format!("{n} attempts"),
    };
    [
        t.item.clone(),
        format!(
            "    {} · {} · {attempts} · last error: {}",
            describe_item(&t.item),
            age(t.first_queued_ms),
            t.last_error.as_deref().unwrap_or("(none recorded)")
        ),
    ]
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "task" } else { "tasks" }
}

/// Every dead-letter task, in batches (the set is read by random samples).
async fn all_dead(queue: &Queue) -> anyhow::Result<Vec<TaskInfo>> {
    let count = queue.dead_len().await;
    let Some(n) = count.overall else {
        bail!("no queue Redis server answered; check that they run (see the queue znode)");
    };
    Ok(queue.dead(n as usize + 16).await)
}

/// Carries out an action; returns the lines to print.
pub async fn act(queue: &Queue, action: &Action) -> anyhow::Result<Vec<String>> {
    match action {
        Action::List { limit } => {
            let count = queue.dead_len().await;
            let Some(n) = count.overall else {
                bail!("no queue Redis server answered; check that they run (see the queue znode)");
            };
            if n == 0 {
                return Ok(vec!["No dead-letter tasks".into()]);
            }
            let tasks = queue.dead(*limit).await;
            let mut out = vec![if tasks.len() as u64 >= n {
                format!("{n} dead-letter {}:", plural(n as usize))
            } else {
                format!(
                    "{n} dead-letter {} (showing {}; --limit for more):",
                    plural(n as usize),
                    tasks.len()
                )
            }];
            for t in &tasks {
                out.extend(describe(t));
            }
            Ok(out)
        }
        Action::Requeue(target) | Action::Drop(target) => {
            let requeue = matches!(action, Action::Requeue(_));
            let items: Vec<String> = match (&target.item, target.all) {
                (Some(item), false) if item.starts_with('{') => vec![item.clone()],
                (Some(path), false) => {
                    let items: Vec<String> = all_dead(queue)
                        .await?
                        .into_iter()
                        .filter(|t| {
                            backpack_shared::model::ReplicationTask::decode(&t.item)
                                .is_ok_and(|task| &task.path == path)
                        })
                        .map(|t| t.item)
                        .collect();
                    if items.is_empty() {
                        bail!(
                            "no dead-letter task for {path}; `list` shows them (give a task's JSON or its file name)"
                        );
                    }
                    items
                }
                _ => all_dead(queue).await?.into_iter().map(|t| t.item).collect(),
            };
            let mut done = 0;
            for item in &items {
                let found = if requeue {
                    queue.requeue(item).await
                } else {
                    queue.drop_dead(item).await
                }
                .with_context(|| format!("on {item}"))?;
                if found {
                    done += 1;
                } else if target.item.as_deref() == Some(item.as_str()) {
                    bail!(
                        "no dead-letter task {item}; `list` shows them (copy a task's JSON line, or give its file name)"
                    );
                }
            }
            let verb = if requeue { "Requeued" } else { "Dropped" };
            Ok(vec![format!("{verb} {done} {}", plural(done))])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_valid() {
        Args::command().debug_assert();
    }

    #[test]
    fn arguments() {
        fn parses(args: &[&str]) -> bool {
            let mut v = vec!["backpack-replicator-dead", "zk:2181", "/backpack"];
            v.extend_from_slice(args);
            Args::try_parse_from(v).is_ok()
        }
        assert!(parses(&["list"]));
        assert!(parses(&["list", "--limit", "5"]));
        assert!(parses(&["requeue", "--all"]));
        assert!(parses(&["requeue", "/a.jpg"]));
        assert!(parses(&["drop", r#"{"from":["1"],"to":"2","path":"/a"}"#]));
        assert!(!parses(&["drop"]));
        assert!(!parses(&["drop", "/a", "--all"]));
        assert!(!parses(&[]));
    }

    #[test]
    fn task_lines() {
        let t = TaskInfo {
            item: r#"{"from":["1"],"to":"2","path":"/a.jpg"}"#.into(),
            first_queued_ms: Some(now_ms() - 125_000),
            attempts: 10,
            last_error: Some("no source could give the file: not found on 1 (404)".into()),
        };
        let [first, second] = describe(&t);
        assert_eq!(first, t.item);
        assert_eq!(
            second,
            "    /a.jpg → 2 (from 1) · queued 2m5s ago · 10 attempts · last error: no source could give the file: not found on 1 (404)"
        );
    }
}
