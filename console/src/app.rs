//! The loop: every source feeds one `select!`, each event goes through
//! [`State::update`], the commands it returns are run here (their results
//! come back as events), and the screen is redrawn.
//!
//! Background tasks, none of which ever blocks the screen:
//! - the ZooKeeper watches ([`watch_cluster_following`]: the maps, the
//!   daemons and the shard checks): no polling;
//! - the Redis poller: queue length, age, locks, samples every 1.5 s; how
//!   each server keeps items (eviction policy, appendonly) every 30 s, on
//!   `r` and when the queue changes;
//! - the node health checker: `GET /stats` of every node, at most
//!   `--health-rate` checks started a second and 32 at once, each node
//!   every `--health-every` seconds or, on large clusters, as often as that
//!   rate allows (3,000 nodes at 200/s: every 15 s).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use backpack_shared::clock::now_ms;
use backpack_shared::live::{ClusterState, Follow, watch_cluster_following};
use backpack_shared::model::{CheckRequest, HostPort, QueueInfo, paths, to_json};
use backpack_shared::ops::MapOp;
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::Zk;
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::cli::Args;
use crate::event::{Event, Health, QueueReport};
use crate::state::{Command, Config, State};
use crate::term::{Guard, check_terminal};

/// The binary's main: parse, check the terminal, log to a file, run.
pub fn main_entry() -> ExitCode {
    let args = Args::parse_with_env();
    if let Err(msg) = check_terminal() {
        eprintln!("{msg}");
        return ExitCode::from(2);
    }
    let log_path = args.log_path();
    if let Err(e) = init_logging(&args, &log_path) {
        eprintln!(
            "backpack-console: cannot log to {}: {e}; pass --log-file PATH",
            log_path.display()
        );
        return ExitCode::from(2);
    }
    // Read the local offset while the process has one thread (the time
    // crate refuses later, as the C library's time zone code is not
    // thread-safe).
    let utc_offset_secs = time::UtcOffset::current_local_offset()
        .map(|o| o.whole_seconds())
        .unwrap_or(0);
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let config = Config {
        zk_servers: args.zk.zk_servers.clone(),
        root: args.zk.root.clone(),
        read_only: args.read_only,
        color,
        utc_offset_secs,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("backpack-console: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args, config));
    // Background tasks may be mid-request: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("backpack-console: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &Args, path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    Ok(())
}

/// Key-to-screen times, summarized in the log at exit.
#[derive(Default)]
struct Latency {
    samples: Vec<Duration>,
}

impl Latency {
    fn summary(&mut self) -> Option<String> {
        if self.samples.is_empty() {
            return None;
        }
        self.samples.sort();
        let n = self.samples.len();
        let p = |q: f64| self.samples[((n as f64 * q) as usize).min(n - 1)];
        Some(format!(
            "key-to-screen over {n} keys: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p(0.5).as_secs_f64() * 1000.0,
            p(0.99).as_secs_f64() * 1000.0,
            self.samples[n - 1].as_secs_f64() * 1000.0
        ))
    }
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    tracing::info!(zk = %args.zk.zk_servers, root = %args.zk.root, read_only = args.read_only, "backpack-console starting");
    eprintln!(
        "backpack-console: connecting to ZooKeeper at {}…",
        args.zk.zk_servers
    );
    let zk = args
        .zk
        .connect_initialized()
        .await
        .context("cannot start")?;
    let mut guard = Guard::enter().context("cannot set up the terminal")?;
    if std::env::var_os("BACKPACK_CONSOLE_TEST_PANIC").is_some() {
        // Lets the tests see the panic hook restore the terminal.
        panic!("BACKPACK_CONSOLE_TEST_PANIC is set: panicking on purpose");
    }
    let mut state = State::new(config, now_ms());
    if let Ok(size) = guard.terminal.size() {
        state.update(now_ms(), Event::Resize(size.width, size.height));
    }

    let mut cluster_rx = watch_cluster_following(
        &zk,
        Follow {
            daemons: true,
            checks: true,
        },
    );
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    let refresh_queue = Arc::new(Notify::new());
    let refresh_health = Arc::new(Notify::new());
    let (queue_tx, queue_rx) = watch::channel::<Option<Queue>>(None);
    let mut tasks = vec![
        tokio::spawn(poll_queue(
            zk.clone(),
            cluster_rx.clone(),
            tx.clone(),
            refresh_queue.clone(),
            queue_tx,
        )),
        tokio::spawn(poll_health(
            cluster_rx.clone(),
            tx.clone(),
            refresh_health.clone(),
            Duration::from_secs(args.health_every.max(1)),
            args.health_rate.max(1),
        )),
    ];
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;

    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Cluster snapshots can arrive hundreds of times a second on a big,
    // busy cluster (every size increment): take at most 10 a second.
    const CLUSTER_EVERY: Duration = Duration::from_millis(100);
    let mut cluster_pending = true;
    let mut cluster_next = tokio::time::Instant::now();
    let mut latency = Latency::default();
    let mut dirty = true;

    loop {
        if dirty {
            guard
                .terminal
                .draw(|f| f.render_widget(&state, f.area()))
                .context("cannot draw")?;
            dirty = false;
        }
        let mut key_at = None;
        let event = tokio::select! {
            biased;
            k = keys.next() => match k {
                Some(Ok(TermEvent::Key(k))) => { key_at = Some(Instant::now()); Event::Key(k) }
                Some(Ok(TermEvent::Resize(w, h))) => Event::Resize(w, h),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                None => break,
            },
            _ = sigterm.recv() => Event::Quit,
            _ = sighup.recv() => Event::Quit,
            r = cluster_rx.changed(), if !cluster_pending => {
                if r.is_err() { anyhow::bail!("the ZooKeeper watch ended"); }
                cluster_pending = true;
                continue;
            }
            _ = tokio::time::sleep_until(cluster_next), if cluster_pending => {
                cluster_pending = false;
                cluster_next = tokio::time::Instant::now() + CLUSTER_EVERY;
                let snapshot: Arc<ClusterState> = cluster_rx.borrow_and_update().clone();
                Event::Cluster(snapshot)
            }
            Some(e) = rx.recv() => e,
            _ = tick.tick() => Event::Tick,
        };
        let commands = state.update(now_ms(), event);
        dirty = true;
        let mut quit = false;
        for c in commands {
            match c {
                Command::Quit => quit = true,
                Command::Refresh => {
                    refresh_queue.notify_one();
                    refresh_health.notify_one();
                }
                Command::Apply { id, op } => {
                    let (zk, tx) = (zk.clone(), tx.clone());
                    tokio::spawn(async move {
                        tracing::info!(?op, "applying");
                        let result = zk.apply(&op).await.map_err(|e| e.to_string());
                        tracing::info!(?result, "applied");
                        let _ = tx.send(Event::Done { id, result }).await;
                    });
                }
                Command::AskCheck { id, shard, request } => {
                    let (zk, tx) = (zk.clone(), tx.clone());
                    tokio::spawn(async move {
                        let name = paths::check_request(&shard);
                        tracing::info!(%name, ?request, "asking for a check");
                        let result = zk
                            .put(&name, &to_json(&request))
                            .await
                            .map(|()| {
                                format!(
                                    "{} of shard {shard} asked ({name})",
                                    if request.repair { "repair" } else { "check" }
                                )
                            })
                            .map_err(|e| e.to_string());
                        let _ = tx.send(Event::Done { id, result }).await;
                    });
                }
                Command::Replace {
                    id,
                    op,
                    shards,
                    asked_ms,
                } => {
                    let (zk, tx) = (zk.clone(), tx.clone());
                    tokio::spawn(async move {
                        let result = replace_server(&zk, &op, &shards, asked_ms).await;
                        tracing::info!(?op, ?shards, ?result, "replace server");
                        let _ = tx.send(Event::Done { id, result }).await;
                    });
                }
                Command::Requeue { id, item } => {
                    queue_action(true, id, item, &queue_rx, &tx, &refresh_queue)
                }
                Command::DropDead { id, item } => {
                    queue_action(false, id, item, &queue_rx, &tx, &refresh_queue)
                }
            }
        }
        if quit {
            break;
        }
        if let Some(t) = key_at {
            guard
                .terminal
                .draw(|f| f.render_widget(&state, f.area()))
                .context("cannot draw")?;
            dirty = false;
            latency.samples.push(t.elapsed());
        }
    }
    drop(guard);
    if let Some(s) = latency.summary() {
        tracing::info!("{s}");
    }
    for t in tasks.drain(..) {
        t.abort();
    }
    zk.close();
    tracing::info!("backpack-console stopped");
    Ok(())
}

/// Re-points a server to a new node as `backpack-coordinator-replace-server`
/// does (the node must answer as a backpack-node holding no file), then
/// asks the elected checker for a repair of each of `shards`, which fills
/// it from the other nodes.
async fn replace_server(
    zk: &Zk,
    op: &MapOp,
    shards: &[String],
    asked_ms: u64,
) -> Result<String, String> {
    let MapOp::AddServer { id, addr, .. } = op else {
        return Err(format!("not a server replacement: {op:?}"));
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let url = addr.url();
    let resp = client
        .get(format!("{url}/stats"))
        .send()
        .await
        .map_err(|e| {
            format!(
                "the new node at {url} cannot be reached ({}); start backpack-node there first",
                http_error(&e)
            )
        })?;
    if !resp.status().is_success() {
        return Err(format!(
            "the new node at {url} answered {} to /stats; start backpack-node there first",
            resp.status()
        ));
    }
    let stats: serde_json::Value = resp.json().await.unwrap_or_default();
    match stats["files"].as_u64() {
        None => {
            return Err(format!(
                "{url} does not look like a backpack-node (its /stats has no file count); the replacement must be one, to be filled and checked"
            ));
        }
        Some(n) if n > 0 => {
            return Err(format!(
                "the new node at {url} already holds {n} files; give an empty node, or use backpack-coordinator-replace-server --force"
            ));
        }
        Some(_) => {}
    }
    let said = zk.apply(op).await.map_err(|e| e.to_string())?;
    if shards.is_empty() {
        return Ok(format!(
            "{said}; server {id} is in no shard: nothing to copy"
        ));
    }
    let request = to_json(&CheckRequest {
        repair: true,
        asked_ms,
    });
    for shard in shards {
        zk.put(&paths::check_request(shard), &request)
            .await
            .map_err(|e| {
                format!(
                    "{said}, but the repair of shard {shard} could not be asked ({e}); ask it with R in the Shards view"
                )
            })?;
    }
    Ok(format!(
        "{said}; repair of shard {} asked: the replicators fill the new node",
        shards.join(",")
    ))
}

/// Requeues or drops a dead-letter task in the background.
fn queue_action(
    requeue: bool,
    id: u64,
    item: String,
    queue: &watch::Receiver<Option<Queue>>,
    tx: &mpsc::Sender<Event>,
    refresh: &Arc<Notify>,
) {
    let (tx, queue, refresh) = (tx.clone(), queue.borrow().clone(), refresh.clone());
    tokio::spawn(async move {
        let result = match queue {
            None => Err("the queue is not configured".to_string()),
            Some(q) => {
                let r = if requeue {
                    q.requeue(&item).await
                } else {
                    q.drop_dead(&item).await
                };
                match r {
                    Ok(true) if requeue => Ok("task back in the queue".into()),
                    Ok(true) => Ok("task dropped".into()),
                    Ok(false) => Err(
                        "the task is not in the dead-letter set any more (someone else acted on it)"
                            .into(),
                    ),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        tracing::info!(requeue, ?result, "dead-letter action");
        let _ = tx.send(Event::Done { id, result }).await;
        refresh.notify_one();
    });
}

const QUEUE_EVERY: Duration = Duration::from_millis(1500);
/// How often the servers' eviction policy and persistence are read again
/// (they are read at once when the queue changes and on `r` too).
const KEEPING_EVERY: Duration = Duration::from_secs(30);
const SAMPLE: usize = 30;

async fn poll_queue(
    zk: Zk,
    cluster: watch::Receiver<Arc<ClusterState>>,
    tx: mpsc::Sender<Event>,
    refresh: Arc<Notify>,
    handle: watch::Sender<Option<Queue>>,
) {
    let pool = RedisPool::new();
    let mut current: Option<(QueueInfo, Queue)> = None;
    // When the servers' settings are read next (now, at first).
    let mut keeping_next = Instant::now();
    loop {
        let info = cluster.borrow().queue.value.clone();
        if info.as_ref() != current.as_ref().map(|c| &c.0) {
            current = info.map(|i| {
                let q = Queue::new(&i, &pool, zk.clone());
                (i, q)
            });
            handle.send_replace(current.as_ref().map(|c| c.1.clone()));
            // Other servers: what was said of the old ones no longer holds.
            keeping_next = Instant::now();
            if current.is_none() && tx.send(Event::Keeping(vec![])).await.is_err() {
                return;
            }
        }
        if let Some((_, q)) = &current {
            let check_keeping = Instant::now() >= keeping_next;
            let (len, dead_len, oldest, sample, dead, locks, keeping) = tokio::join!(
                q.len(),
                q.dead_len(),
                q.oldest_age(),
                q.sample(SAMPLE),
                q.dead(SAMPLE),
                q.locks(),
                async {
                    if check_keeping {
                        Some(q.keeping().await)
                    } else {
                        None
                    }
                }
            );
            let report = QueueReport {
                key: q.key().to_string(),
                per_server: len.per_server,
                overall: len.overall,
                oldest,
                dead_count: dead_len.overall,
                sample,
                dead,
                locks: locks.map_err(|e| e.to_string()),
            };
            if tx.send(Event::Queue(report)).await.is_err() {
                return;
            }
            if let Some(keeping) = keeping {
                keeping_next = Instant::now() + KEEPING_EVERY;
                if tx.send(Event::Keeping(keeping)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_EVERY) => {}
            // `r`: the operator may just have fixed a server's settings.
            _ = refresh.notified() => keeping_next = Instant::now(),
        }
    }
}

/// The innermost cause of an HTTP error: "Connection refused (os error
/// 111)" says more than reqwest's "error sending request for url".
fn http_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within 2s".into();
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(s) = source.source() {
        source = s;
    }
    source.to_string()
}

async fn check_node(client: &reqwest::Client, addr: &HostPort) -> Health {
    let started = Instant::now();
    let url = format!("{}/stats", addr.url());
    let down = |error: String| Health::Down {
        error,
        at: now_ms(),
    };
    let resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return down(http_error(&e)),
    };
    if !resp.status().is_success() {
        return down(format!("/stats answered {}", resp.status()));
    }
    let body: serde_json::Value = match resp.json().await {
        Ok(v) => v,
        Err(e) => return down(format!("/stats is not JSON: {}", http_error(&e))),
    };
    let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
    let num = |a: &str, b: &str| body.get(a).and_then(|v| v.get(b));
    Health::Up {
        latency_ms,
        gets: num("gets", "count").and_then(|v| v.as_u64()),
        puts: num("puts", "count").and_then(|v| v.as_u64()),
        get_avg_ms: num("gets", "avg").and_then(|v| v.as_f64()),
        put_avg_ms: num("puts", "avg").and_then(|v| v.as_f64()),
        at: now_ms(),
    }
}

async fn poll_health(
    mut cluster: watch::Receiver<Arc<ClusterState>>,
    tx: mpsc::Sender<Event>,
    refresh: Arc<Notify>,
    every: Duration,
    rate: u32,
) {
    const TICK: Duration = Duration::from_millis(200);
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(1))
        .pool_max_idle_per_host(0)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: node health is not checked");
            return;
        }
    };
    let running = Arc::new(Semaphore::new(32));
    let (res_tx, mut res_rx) = mpsc::unbounded_channel::<(HostPort, Health)>();
    let mut due: HashMap<HostPort, Instant> = HashMap::new();
    let mut generation = u64::MAX;
    let mut period = every;
    let mut batch = vec![];
    let mut last_sent = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_tick = ((rate as f64 * TICK.as_secs_f64()).ceil() as usize).max(1);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = refresh.notified() => {
                let now = Instant::now();
                for d in due.values_mut() { *d = now; }
            }
            Some(r) = res_rx.recv() => batch.push(r),
        }
        let now = Instant::now();
        let snapshot = cluster.borrow_and_update().clone();
        if snapshot.generation != generation {
            generation = snapshot.generation;
            let servers: Vec<HostPort> = snapshot
                .servers
                .value
                .as_ref()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let n = servers.len().max(1);
            period = every.max(Duration::from_secs_f64(n as f64 / rate as f64));
            due.retain(|a, _| servers.contains(a));
            // New nodes are first checked as fast as the rate allows, which
            // spreads a large cluster's checks over the whole period.
            let mut new = 0u64;
            for a in servers {
                due.entry(a).or_insert_with(|| {
                    new += 1;
                    now + Duration::from_millis(new * 1000 / rate as u64)
                });
            }
        }
        let mut started = 0;
        for (addr, at) in due.iter_mut() {
            if started >= per_tick {
                break;
            }
            if *at > now {
                continue;
            }
            *at = now + period;
            started += 1;
            let (client, addr, res_tx, running) = (
                client.clone(),
                addr.clone(),
                res_tx.clone(),
                running.clone(),
            );
            tokio::spawn(async move {
                let Ok(_permit) = running.acquire_owned().await else {
                    return;
                };
                let h = check_node(&client, &addr).await;
                let _ = res_tx.send((addr, h));
            });
        }
        if !batch.is_empty()
            && (last_sent.elapsed() >= Duration::from_millis(300) || batch.len() >= 500)
        {
            last_sent = Instant::now();
            if tx
                .send(Event::Health(std::mem::take(&mut batch)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
