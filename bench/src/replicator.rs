//! The replicator's benchmark (the `backpack-bench-replicator` command;
//! see `bench/README.md`).
//!
//! Starts its own Redis, ZooKeeper, two `backpack-node` processes and a
//! `backpack-coordinator` process on loopback, uploads files to node 1,
//! warms ZooKeeper up (a long-running ensemble has its code compiled by
//! the JIT; a fresh JVM spends seconds of CPU compiling), then measures in
//! the same run:
//! - in rounds, a plain copy of the files to node 2 (streamed GET then PUT
//!   with the replicator's own HTTP client and copy function, same
//!   concurrency, no queue, no locks) and one long-running replicator
//!   draining the same files as queued tasks, alternating slice by slice;
//!   each round's ratio is the cost of the queue;
//! - the replicator at further concurrencies, each beside a plain copy;
//! - a rebuild: every file node 1 holds, copied plainly to an empty node,
//!   against server 2 re-pointed to another empty node and filled by a
//!   `check --repair` of the shard and a replicator (what
//!   `backpack-coordinator-replace-server` sets going), timed from the
//!   check's start until the last copy is done;
//! - latency: uploads through the coordinator at a steady rate while a
//!   replicator runs, from the upload's answer until both nodes serve the
//!   file.
//!
//! CPU time of every process is read from `/proc` around each phase.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use backpack_shared::model::{
    HostPort, Name, QueueInfo, ReplicationTask, ShardSize, paths, to_json,
};
use backpack_shared::queue::{Queue, RedisPool};
use backpack_shared::zk::{Zk, ZkConfig};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use backpack_daemon::node_client::NodeClient;
use backpack_daemon::replicator::{Counters, Replicator, ReplicatorConfig, Stats, copy};
use backpack_tests::{Process, RedisServer, ZkServer, free_port, spawn_command};

use crate::kit::{self, cpu_ms, percentile};

/// Settings of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Files of the main comparison.
    pub files: usize,
    pub file_size: usize,
    /// Concurrency of the main comparison.
    pub concurrency: usize,
    /// Rounds of (plain copy, replicator) at the main concurrency.
    pub rounds: usize,
    /// Slices of each round, alternating plain copy and replicator.
    pub slices: usize,
    /// Further concurrencies, each over `other_files` files.
    pub other_concurrencies: Vec<usize>,
    pub other_files: usize,
    /// Measure the rebuild of a node (plain copy to an empty node against
    /// check --repair and a replicator).
    pub rebuild: bool,
    /// Small files replicated (twice) to warm ZooKeeper up, then one
    /// round of the files; 0: no warm-up.
    pub warmup_files: usize,
    /// Uploads per second of the latency phase (0: skip it).
    pub latency_rate: f64,
    pub latency_secs: f64,
    /// Parent of the temporary directory of every server's data.
    pub dir: PathBuf,
    /// Parent of ZooKeeper's data directory, if not `dir` (production
    /// gives ZooKeeper's transaction log a disk of its own).
    pub zk_dir: Option<PathBuf>,
    pub node_bin: PathBuf,
    /// Without it, the latency phase uploads to node 1 and pushes the task
    /// itself (what a coordinator does before it answers).
    pub coordinator_bin: Option<PathBuf>,
    pub redis_bin: PathBuf,
    pub zk_jar: PathBuf,
}

/// CPU milliseconds each process spent in a phase, and the ZooKeeper
/// transactions (znode writes, a multi counting once) it made.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub per_process: Vec<(String, u64)>,
    pub zk_txns: u64,
}

impl Cpu {
    pub fn get(&self, name: &str) -> u64 {
        self.per_process
            .iter()
            .filter(|(n, _)| n.starts_with(name))
            .map(|(_, ms)| ms)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.per_process.iter().map(|(_, ms)| ms).sum()
    }

    /// Adds another measurement of the same processes.
    pub fn add(&mut self, other: &Cpu) {
        for (name, ms) in &other.per_process {
            match self.per_process.iter_mut().find(|(n, _)| n == name) {
                Some((_, sum)) => *sum += ms,
                None => self.per_process.push((name.clone(), *ms)),
            }
        }
        self.zk_txns += other.zk_txns;
    }
}

/// A measured copy phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub what: &'static str,
    pub concurrency: usize,
    pub files: usize,
    pub secs: f64,
    pub cpu: Cpu,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.files as f64 / self.secs
    }
}

/// Latency figures, milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub uploads: usize,
    pub rate: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub via: &'static str,
}

/// What a run reports, as it goes.
#[derive(Debug)]
pub enum Event {
    Note(String),
    Phase(Phase),
    Latency(Latency),
}

/// Every server of the run, stopped when dropped.
struct Servers {
    _redis_server: RedisServer,
    _zk_server: ZkServer,
    procs: Vec<Process>,
    /// Every process's name and pid, for CPU figures.
    pids: Vec<(String, u32)>,
    /// ZooKeeper's data with `--zk-dir`; removed after the processes stop.
    _zk_tmp: Option<tempfile::TempDir>,
    zk: String,
    redis: HostPort,
    nodes: [HostPort; 2],
    coordinator: Option<u16>,
}

impl Servers {
    /// CPU used so far by every process, and ZooKeeper's last zxid.
    async fn cpu(&self) -> Cpu {
        let mut v: Vec<(String, u64)> = self
            .pids
            .iter()
            .map(|(name, pid)| (name.clone(), cpu_ms(*pid).unwrap_or(0)))
            .collect();
        v.push(("bench".into(), cpu_ms(std::process::id()).unwrap_or(0)));
        Cpu {
            per_process: v,
            zk_txns: kit::zxid(&self.zk).await.unwrap_or(0),
        }
    }
}

async fn cpu_since(before: &Cpu, s: &Servers) -> Cpu {
    let now = s.cpu().await;
    Cpu {
        per_process: now
            .per_process
            .into_iter()
            .zip(&before.per_process)
            .map(|((n, b), (_, a))| (n, b.saturating_sub(*a)))
            .collect(),
        // The zxid's low 32 bits count transactions within an epoch.
        zk_txns: (now.zk_txns & 0xffff_ffff).saturating_sub(before.zk_txns & 0xffff_ffff),
    }
}

async fn start_servers(opts: &BenchOptions, dir: &Path) -> Result<Servers> {
    let (redis_server, redis) = kit::start_redis(&opts.redis_bin).await?;
    let zk_tmp = match &opts.zk_dir {
        Some(d) => Some(
            tempfile::Builder::new()
                .prefix("backpack-bench-zk")
                .tempdir_in(d)
                .with_context(|| format!("cannot make a directory in {}", d.display()))?,
        ),
        None => None,
    };
    let zdata = zk_tmp
        .as_ref()
        .map_or_else(|| dir.join("zk"), |t| t.path().to_path_buf());
    let zk_server = kit::start_zookeeper(&opts.zk_jar, &zdata).await?;
    let (n1, a) = kit::start_node(&opts.node_bin, "node1", dir).await?;
    let (n2, b) = kit::start_node(&opts.node_bin, "node2", dir).await?;
    let pids = vec![
        (
            "redis".into(),
            redis_server.pid().context("redis has no pid")?,
        ),
        (
            "zookeeper".into(),
            zk_server.pid().context("zookeeper has no pid")?,
        ),
        ("node1".into(), kit::pid(&n1, "node1")?),
        ("node2".into(), kit::pid(&n2, "node2")?),
    ];
    Ok(Servers {
        zk: zk_server.addr(),
        _redis_server: redis_server,
        _zk_server: zk_server,
        procs: vec![n1, n2],
        pids,
        _zk_tmp: zk_tmp,
        redis,
        nodes: [a, b],
        coordinator: None,
    })
}

/// A coordinator process on the cluster, once it answers `/stats`.
async fn start_coordinator(bin: &Path, s: &mut Servers, root: &str, dir: &Path) -> Result<()> {
    let port = free_port();
    let mut cmd = kit::daemon(bin)?;
    cmd.args([&s.zk, root, "127.0.0.1", &port.to_string()])
        .env("RUST_LOG", "warn");
    let mut p = spawn_command("coordinator", &cmd, dir);
    let client = harness_client();
    let url = format!("http://127.0.0.1:{port}/stats");
    kit::wait_ready(&mut p, "coordinator", || async {
        matches!(client.get(&url).send().await, Ok(r) if r.status().is_success())
    })
    .await?;
    s.pids
        .push(("coordinator".into(), kit::pid(&p, "coordinator")?));
    s.procs.push(p);
    s.coordinator = Some(port);
    Ok(())
}

/// Writes the cluster's znodes: nodes 1 and 2 making up shard 1
/// (writable), the queue.
async fn init_cluster(s: &Servers, root: &str) -> Result<(Zk, QueueInfo)> {
    let mut c = ZkConfig::new(&s.zk, root);
    c.connect_timeout = Duration::from_secs(30);
    let zk = Zk::connect(c).await?;
    zk.create_root().await?;
    let servers = serde_json::json!({ "1": s.nodes[0], "2": s.nodes[1] });
    let shards = serde_json::json!({ "1": { "nodes": ["1", "2"] } });
    let info = QueueInfo {
        key: "backpack-queue".into(),
        servers: vec![s.redis.clone()],
    };
    zk.create_if_missing(paths::SERVERS_MAP, &serde_json::to_vec(&servers)?)
        .await?;
    zk.create_if_missing(paths::SHARDS_MAP, &serde_json::to_vec(&shards)?)
        .await?;
    zk.create_if_missing(&paths::shard_size("1"), &to_json(&ShardSize::new(1 << 50)))
        .await?;
    zk.create_if_missing(paths::QUEUE, &serde_json::to_vec(&info)?)
        .await?;
    Ok((zk, info))
}

fn content(i: usize, len: usize) -> bytes::Bytes {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v.into()
}

/// The harness's own client (uploads, readiness, HEADs): not the
/// replicator's, which [`copy::client`] gives.
fn harness_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// PUTs a body; returns the answer's status.
async fn put(client: &reqwest::Client, url: String, body: bytes::Bytes) -> Result<u16> {
    let r = client
        .put(url)
        .header(reqwest::header::CONTENT_LENGTH, body.len())
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    Ok(status)
}

/// Uploads `paths` to `node` with 32 in flight.
async fn upload(
    client: &reqwest::Client,
    node: &HostPort,
    paths: &[String],
    size: usize,
) -> Result<f64> {
    let start = Instant::now();
    let results: Vec<Result<u16>> = futures::stream::iter(paths.iter().enumerate())
        .map(|(i, p)| put(client, format!("{}{p}", node.url()), content(i, size)))
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        let status = r?;
        if status != 201 {
            bail!("upload to node 1 answered {status}");
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn task(path: &str) -> String {
    ReplicationTask {
        from: vec!["1".into()],
        to: "2".into(),
        path: path.into(),
    }
    .encode()
}

/// The baseline: every file GET from node 1 and PUT to node 2 with the
/// replicator's client and copy function, `concurrency` at a time.
async fn plain_copy(
    client: &NodeClient,
    s: &Servers,
    paths: &[String],
    concurrency: usize,
) -> Result<f64> {
    plain_copy_to(client, &s.nodes[0], &s.nodes[1], paths, concurrency).await
}

/// Every file of `paths` GET from `from` and PUT to `to`, `concurrency` at
/// a time; seconds.
async fn plain_copy_to(
    client: &NodeClient,
    from: &HostPort,
    to: &HostPort,
    paths: &[String],
    concurrency: usize,
) -> Result<f64> {
    let names = paths
        .iter()
        .map(|p| Name::parse(p.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let results: Vec<Result<u64, copy::CopyError>> = futures::stream::iter(&names)
        .map(|p| copy::copy_file(client, ("1", from), ("2", to), p))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A replicator kept running across slices of work, as in production.
struct Running {
    queue: Queue,
    stats: std::sync::Arc<Stats>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Counters>,
    concurrency: usize,
}

impl Running {
    async fn start(
        s: &Servers,
        root: &str,
        info: &QueueInfo,
        concurrency: usize,
    ) -> Result<Running> {
        let zk = Zk::connect_initialized(ZkConfig::new(&s.zk, root)).await?;
        let queue = Queue::new(info, &RedisPool::new(), zk.clone());
        let mut config = ReplicatorConfig::new(concurrency);
        config.shutdown_deadline = Duration::from_secs(10);
        let replicator = Replicator::new(config, zk);
        let stats = replicator.stats();
        let started = replicator.started();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(replicator.run(stop.clone()));
        started.cancelled().await;
        Ok(Running {
            queue,
            stats,
            stop,
            handle,
            concurrency,
        })
    }

    /// Queues `paths` as tasks and waits until every one is copied and
    /// marked done: seconds from the push.
    async fn drain(&self, paths: &[String]) -> Result<f64> {
        let items: Vec<String> = paths.iter().map(|p| task(p)).collect();
        let want = self.stats.snapshot().copies_done + paths.len() as u64;
        let start = Instant::now();
        for chunk in items.chunks(1000) {
            self.queue.push_many(chunk).await?;
        }
        self.copied(want, start).await?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// Waits until the replicator has done `want` copies since it started
    /// (600 s at most from `start`).
    async fn copied(&self, want: u64, start: Instant) -> Result<()> {
        let deadline = start + Duration::from_secs(600);
        while self.stats.snapshot().copies_done < want {
            if Instant::now() > deadline {
                bail!(
                    "replicator at concurrency {} did not finish within 600 s: {:?}",
                    self.concurrency,
                    self.stats.snapshot()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// Stops it gracefully; fails if a copy failed or the queue is not empty.
    async fn finish(self) -> Result<()> {
        self.stop.cancel();
        let end = self.handle.await?;
        if end.copies_failed > 0 {
            bail!("{} copies failed", end.copies_failed);
        }
        let left = self.queue.len().await.overall;
        if left != Some(0) {
            bail!("queue not empty after the run: {left:?}");
        }
        Ok(())
    }
}

/// A replicator started for `paths` alone: from the push until the last
/// task is done.
async fn replicate(
    s: &Servers,
    root: &str,
    info: &QueueInfo,
    paths: &[String],
    concurrency: usize,
) -> Result<f64> {
    let r = Running::start(s, root, info, concurrency).await?;
    let secs = r.drain(paths).await?;
    r.finish().await?;
    Ok(secs)
}

/// One round of the main comparison: the files in slices, each slice
/// copied plainly and then replicated, so that both see the same state of
/// the nodes' disks (whose write-back makes consecutive seconds differ by
/// up to 2x on a shared machine). Returns both phases.
async fn interleaved(
    client: &NodeClient,
    s: &Servers,
    running: &Running,
    paths: &[String],
    slices: usize,
) -> Result<(Phase, Phase)> {
    let c = running.concurrency;
    let per = paths.len().div_ceil(slices.max(1)).max(1);
    let (mut plain, mut repl) = (0.0, 0.0);
    let (mut cpu_plain, mut cpu_repl) = (Cpu::default(), Cpu::default());
    for slice in paths.chunks(per) {
        let before = s.cpu().await;
        plain += plain_copy(client, s, slice, c).await?;
        cpu_plain.add(&cpu_since(&before, s).await);
        let before = s.cpu().await;
        repl += running.drain(slice).await?;
        cpu_repl.add(&cpu_since(&before, s).await);
    }
    let phase = |what, secs, cpu| Phase {
        what,
        concurrency: c,
        files: paths.len(),
        secs,
        cpu,
    };
    Ok((
        phase("plain copy", plain, cpu_plain),
        phase("replicator", repl, cpu_repl),
    ))
}

/// A new, empty node process, counted in the CPU figures.
async fn empty_node(
    bin: &Path,
    s: &mut Servers,
    dir: &Path,
    name: &'static str,
) -> Result<HostPort> {
    let (p, addr) = kit::start_node(bin, name, dir).await?;
    s.pids.push((name.into(), kit::pid(&p, name)?));
    s.procs.push(p);
    Ok(addr)
}

/// A node lost for good, rebuilt, against its baseline: every file of
/// `paths` (all node 1 holds) copied plainly to an empty node 3, then
/// server 2 re-pointed to an empty node 4 and filled by a check of shard 1
/// with repair and a replicator at `concurrency`, from the check's start
/// until the last copy is done. Node 4 is server 2 afterwards.
async fn rebuild(
    opts: &BenchOptions,
    client: &NodeClient,
    s: &mut Servers,
    (root, dir): (&str, &Path),
    (zk, info): (&Zk, &QueueInfo),
    paths: &[String],
) -> Result<(Phase, Phase)> {
    let c = opts.concurrency;
    let node3 = empty_node(&opts.node_bin, s, dir, "node3").await?;
    let before = s.cpu().await;
    let secs = plain_copy_to(client, &s.nodes[0], &node3, paths, c).await?;
    let baseline = Phase {
        what: "plain copy to an empty node",
        concurrency: c,
        files: paths.len(),
        secs,
        cpu: cpu_since(&before, s).await,
    };

    let node4 = empty_node(&opts.node_bin, s, dir, "node4").await?;
    zk.apply(&backpack_shared::ops::MapOp::AddServer {
        id: "2".into(),
        addr: node4.clone(),
        replace: true,
    })
    .await?;
    s.nodes[1] = node4.clone();
    let running = Running::start(s, root, info, c).await?;
    let want = running.stats.snapshot().copies_done + paths.len() as u64;
    let before = s.cpu().await;
    let start = Instant::now();
    let nodes = [
        ("1".to_string(), s.nodes[0].clone()),
        ("2".to_string(), node4),
    ];
    let opts = backpack_daemon::check::CheckOptions {
        repair: true,
        ..Default::default()
    };
    let report = backpack_daemon::check::check_shard(
        client,
        "1",
        &nodes,
        Some(&running.queue),
        &opts,
        |_| {},
    )
    .await?;
    if report.queued != paths.len() as u64 {
        bail!(
            "the check queued {} copies for {} files on node 1",
            report.queued,
            paths.len()
        );
    }
    running.copied(want, start).await?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_since(&before, s).await;
    running.finish().await?;
    Ok((
        baseline,
        Phase {
            what: "rebuild: check --repair + replicator",
            concurrency: c,
            files: paths.len(),
            secs,
            cpu,
        },
    ))
}

/// Uploads at `rate` per second for `secs` while a replicator runs; for
/// each, the time from the upload's answer until both nodes serve it.
async fn latency(
    s: &Servers,
    root: &str,
    info: &QueueInfo,
    opts: &BenchOptions,
) -> Result<Latency> {
    let zk = Zk::connect_initialized(ZkConfig::new(&s.zk, root)).await?;
    let queue = Queue::new(info, &RedisPool::new(), zk.clone());
    let replicator = Replicator::new(ReplicatorConfig::new(opts.concurrency), zk.clone());
    let started = replicator.started();
    let stop = CancellationToken::new();
    let task_handle = tokio::spawn(replicator.run(stop.clone()));
    started.cancelled().await;
    let client = harness_client();
    let n = (opts.latency_rate * opts.latency_secs).round() as usize;
    let every = Duration::from_secs_f64(1.0 / opts.latency_rate);
    let coordinator = s.coordinator;
    let begin = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(begin + every * i as u32).await;
        let (client, queue, nodes) = (client.clone(), queue.clone(), s.nodes.clone());
        let size = opts.file_size;
        handles.push(tokio::spawn(async move {
            let path = format!("/latency/{i}.jpg");
            match coordinator {
                Some(port) => {
                    let status = put(
                        &client,
                        format!("http://127.0.0.1:{port}{path}"),
                        content(i, size),
                    )
                    .await?;
                    if status != 200 {
                        bail!("upload of {path} through the coordinator answered {status}");
                    }
                }
                None => {
                    let status = put(
                        &client,
                        format!("{}{path}", nodes[0].url()),
                        content(i, size),
                    )
                    .await?;
                    if status != 201 {
                        bail!("upload of {path} answered {status}");
                    }
                    queue.push(&task(&path)).await?;
                }
            }
            let answered = Instant::now();
            for node in &nodes {
                let url = format!("{}{path}", node.url());
                loop {
                    let r = client.head(&url).send().await?;
                    if r.status() == reqwest::StatusCode::OK {
                        break;
                    }
                    if answered.elapsed() > Duration::from_secs(30) {
                        bail!("{path} not on {node} within 30 s");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            anyhow::Ok(answered.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ms = Vec::with_capacity(n);
    for h in handles {
        ms.push(h.await??);
    }
    let rate = n as f64 / begin.elapsed().as_secs_f64();
    stop.cancel();
    task_handle.await?;
    ms.sort_by(f64::total_cmp);
    Ok(Latency {
        uploads: n,
        rate,
        p50: percentile(&ms, 0.5),
        p90: percentile(&ms, 0.9),
        p99: percentile(&ms, 0.99),
        max: ms.last().copied().unwrap_or(f64::NAN),
        via: if coordinator.is_some() {
            "through backpack-coordinator"
        } else {
            "PUT to node 1 + queue push, no coordinator"
        },
    })
}

/// Runs the whole benchmark, reporting each phase as it ends.
pub async fn run(opts: BenchOptions, mut progress: impl FnMut(Event)) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("backpack-bench-replicator")
        .tempdir_in(&opts.dir)
        .with_context(|| format!("cannot make a directory in {}", opts.dir.display()))?;
    let mut servers = start_servers(&opts, tmp.path()).await?;
    let root = "/bench";
    let (zk, info) = init_cluster(&servers, root).await?;
    if let Some(bin) = &opts.coordinator_bin {
        start_coordinator(bin, &mut servers, root, tmp.path()).await?;
    }
    let harness = harness_client();
    let client = copy::client();
    progress(Event::Note(format!(
        "servers: redis {}, zookeeper {}, nodes {} and {}{} (data in {})",
        servers.redis,
        servers.zk,
        servers.nodes[0],
        servers.nodes[1],
        servers
            .coordinator
            .map(|p| format!(", coordinator 127.0.0.1:{p}"))
            .unwrap_or_default(),
        tmp.path().display()
    )));

    let main: Vec<String> = (0..opts.files)
        .map(|i| format!("/photos/{i}.jpg"))
        .collect();
    let secs = upload(&harness, &servers.nodes[0], &main, opts.file_size).await?;
    progress(Event::Note(format!(
        "uploaded {} files of {} bytes to node 1 in {secs:.2} s ({:.0} files/s)",
        main.len(),
        opts.file_size,
        main.len() as f64 / secs
    )));
    let small: Vec<String> = (0..opts.warmup_files)
        .map(|i| format!("/warm-up/{i}"))
        .collect();
    if opts.warmup_files > 0 {
        // The replicator's own paths with small files: many tasks quickly,
        // in batches as large as under load. Measured: ZooKeeper's CPU per
        // task falls by 3 to 5 times over its first minute of this load.
        upload(&harness, &servers.nodes[0], &small, 1000).await?;
        for pass in 1..=2 {
            let before = servers.cpu().await;
            let secs = replicate(&servers, root, &info, &small, opts.concurrency).await?;
            let cpu = cpu_since(&before, &servers).await;
            progress(Event::Note(format!(
                "warm-up pass {pass} (not counted): {} files of 1000 bytes replicated at {:.0} files/s; ZooKeeper CPU {:.2} ms/file",
                small.len(),
                small.len() as f64 / secs,
                cpu.get("zookeeper") as f64 / small.len() as f64,
            )));
        }
        // And one round of the files, not counted: the nodes' caches.
        let before = servers.cpu().await;
        let plain = plain_copy(&client, &servers, &main, opts.concurrency).await?;
        let secs = replicate(&servers, root, &info, &main, opts.concurrency).await?;
        let cpu = cpu_since(&before, &servers).await;
        progress(Event::Note(format!(
            "warm-up round (not counted): plain copy {:.0} files/s, replicator {:.0} files/s; ZooKeeper CPU {:.2} ms/file",
            main.len() as f64 / plain,
            main.len() as f64 / secs,
            cpu.get("zookeeper") as f64 / main.len() as f64,
        )));
    }

    // Node 2 stores each file again on every pass (a new copy each time):
    // the same work for both. One replicator for every round, started
    // before and kept running, as in production.
    let running = Running::start(&servers, root, &info, opts.concurrency).await?;
    for _ in 0..opts.rounds.max(1) {
        let (plain, repl) = interleaved(&client, &servers, &running, &main, opts.slices).await?;
        progress(Event::Phase(plain));
        progress(Event::Phase(repl));
    }
    running.finish().await?;
    let mut phase = |what, concurrency, files: usize, secs, cpu| {
        progress(Event::Phase(Phase {
            what,
            concurrency,
            files,
            secs,
            cpu,
        }))
    };
    let others: Vec<String> = main.iter().take(opts.other_files).cloned().collect();
    for &c in &opts.other_concurrencies {
        let before = servers.cpu().await;
        let secs = plain_copy(&client, &servers, &others, c).await?;
        phase(
            "plain copy",
            c,
            others.len(),
            secs,
            cpu_since(&before, &servers).await,
        );
        let before = servers.cpu().await;
        let secs = replicate(&servers, root, &info, &others, c).await?;
        phase(
            "replicator",
            c,
            others.len(),
            secs,
            cpu_since(&before, &servers).await,
        );
    }

    if opts.rebuild {
        let all: Vec<String> = main.iter().chain(&small).cloned().collect();
        let (baseline, rebuilt) = rebuild(
            &opts,
            &client,
            &mut servers,
            (root, tmp.path()),
            (&zk, &info),
            &all,
        )
        .await?;
        progress(Event::Phase(baseline));
        progress(Event::Phase(rebuilt));
    }

    if opts.latency_rate > 0.0 {
        let l = latency(&servers, root, &info, &opts).await?;
        progress(Event::Latency(l));
    }
    zk.close();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_differ_and_have_the_size() {
        assert_eq!(content(1, 100_000).len(), 100_000);
        assert_ne!(content(1, 64), content(2, 64));
        assert_eq!(content(3, 0).len(), 0);
    }

    #[test]
    fn cpu_sums_by_prefix() {
        let c = Cpu {
            per_process: vec![
                ("node1".into(), 5),
                ("node2".into(), 7),
                ("zookeeper".into(), 3),
            ],
            zk_txns: 0,
        };
        assert_eq!((c.get("node"), c.get("zookeeper"), c.total()), (12, 3, 15));
    }
}
