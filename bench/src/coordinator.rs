//! The coordinator's benchmark (the `backpack-bench-coordinator` command;
//! see `bench/README.md`).
//!
//! Starts its own Redis, ZooKeeper, storage nodes (`backpack-node`) and a
//! `backpack-coordinator` process on loopback, then, in the same run:
//! - throughput: uploads at a fixed concurrency straight to storage node 1,
//!   then the same uploads through the coordinator (which also queues a
//!   replication task per other node of the shard), in alternating rounds;
//!   the ratio of the medians is the coordinator's cost;
//! - latency: the same at concurrency 1; the difference of the medians is
//!   the latency the coordinator adds;
//! - the coordinator's resident memory (VmRSS sampled every 100 ms, and
//!   VmHWM, the kernel's peak) and CPU time per upload.
//!
//! One load generator for both targets: hyper's pooled client, every
//! body the same shared buffer, so the client costs the same either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use backpack_shared::model::{HostPort, QueueInfo, Shard, ShardSize, paths, to_json};
use backpack_shared::zk::{Zk, ZkConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use backpack_tests::{Process, RedisServer, ZkServer, free_port, spawn_command};

use crate::kit::{self, median, percentile};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Uploads per throughput phase.
    pub files: usize,
    pub file_size: usize,
    pub concurrency: usize,
    /// Rounds of (direct, coordinator); medians are compared.
    pub rounds: usize,
    /// Uploads per latency phase (concurrency 1).
    pub latency_files: usize,
    /// Nodes of the shard the coordinator writes to (node 1 is also the
    /// direct target): 2 makes it queue one task per upload.
    pub shard_nodes: usize,
    /// Parent of the temporary directory of every server's data.
    pub dir: PathBuf,
    pub node_bin: PathBuf,
    pub coordinator_bin: PathBuf,
    pub redis_bin: PathBuf,
    pub zk_jar: PathBuf,
    /// Trickling uploads held open during the flood phase (0: none).
    pub flood: usize,
}

/// One measured phase.
#[derive(Debug, Clone)]
pub struct Phase {
    pub target: &'static str,
    pub concurrency: usize,
    pub files: usize,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.files as f64 / self.secs
    }
}

/// The run's figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub phases: Vec<Phase>,
    /// Largest VmRSS sampled while the coordinator ran, bytes.
    pub rss_max: u64,
    /// The kernel's peak resident size of the coordinator (VmHWM), bytes.
    pub rss_hwm: u64,
    /// Coordinator CPU time over every upload it took, seconds.
    pub cpu_secs: f64,
    pub coordinator_uploads: usize,
    pub flood: Option<Flood>,
}

/// Normal uploads (concurrency 1) before and during a flood of uploads
/// whose bodies trickle (a byte every 2 s).
#[derive(Debug, Clone, Default)]
pub struct Flood {
    pub trickles: usize,
    pub before: Normal,
    pub during: Normal,
    /// Seconds from the flood's start until every trickle was answered,
    /// and how many were answered 408.
    pub cut_after_secs: f64,
    pub cut_408: usize,
}

/// Normal uploads one at a time: latencies and answers.
#[derive(Debug, Clone, Default)]
pub struct Normal {
    pub p50_ms: f64,
    pub max_ms: f64,
    pub ok: usize,
    pub busy_503: usize,
    pub other: usize,
}

impl Report {
    /// Median uploads/s of a target at a concurrency.
    pub fn median_rate(&self, target: &str, concurrency: usize) -> f64 {
        median(
            self.phases
                .iter()
                .filter(|p| p.target == target && p.concurrency == concurrency)
                .map(Phase::rate)
                .collect(),
        )
    }

    /// Median of the per-phase median latencies.
    pub fn median_p50(&self, target: &str, concurrency: usize) -> f64 {
        median(
            self.phases
                .iter()
                .filter(|p| p.target == target && p.concurrency == concurrency)
                .map(|p| p.p50_ms)
                .collect(),
        )
    }
}

/// The servers the coordinator uses, stopped when dropped.
struct Servers {
    _redis_server: RedisServer,
    _zk_server: ZkServer,
    _node_procs: Vec<Process>,
    zk: String,
    redis: HostPort,
    nodes: Vec<HostPort>,
}

async fn start_servers(opts: &BenchOptions, dir: &Path) -> Result<Servers> {
    let (redis_server, redis) = kit::start_redis(&opts.redis_bin).await?;
    let zk_server = kit::start_zookeeper(&opts.zk_jar, &dir.join("zk")).await?;
    let mut node_procs = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=opts.shard_nodes.max(1) {
        let (p, addr) = kit::start_node(&opts.node_bin, &format!("node{i}"), dir).await?;
        node_procs.push(p);
        nodes.push(addr);
    }
    Ok(Servers {
        zk: zk_server.addr(),
        _redis_server: redis_server,
        _zk_server: zk_server,
        _node_procs: node_procs,
        redis,
        nodes,
    })
}

/// The cluster's znodes: every node in shard 1 (enabled, 1 TB), the queue.
async fn init_cluster(s: &Servers, root: &str) -> Result<()> {
    let mut c = ZkConfig::new(&s.zk, root);
    c.connect_timeout = Duration::from_secs(30);
    let zk = Zk::connect(c).await?;
    zk.create_root().await?;
    let servers: std::collections::BTreeMap<String, HostPort> = s
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ((i + 1).to_string(), n.clone()))
        .collect();
    let mut shards = std::collections::BTreeMap::new();
    shards.insert(
        "1".to_string(),
        Shard {
            read_only: false,
            nodes: servers.keys().cloned().collect(),
        },
    );
    let info = QueueInfo {
        key: "backpack-queue".into(),
        servers: vec![s.redis.clone()],
    };
    zk.create_if_missing(paths::SERVERS_MAP, &to_json(&servers))
        .await?;
    zk.create_if_missing(paths::SHARDS_MAP, &to_json(&shards))
        .await?;
    zk.create_if_missing(&paths::shard_size("1"), &to_json(&ShardSize::new(1 << 40)))
        .await?;
    zk.create_if_missing(paths::QUEUE, &to_json(&info)).await?;
    zk.close();
    Ok(())
}

/// Starts `backpack-coordinator` and waits for the original's two lines.
async fn start_coordinator(
    opts: &BenchOptions,
    s: &Servers,
    root: &str,
    dir: &Path,
) -> Result<(Process, u16)> {
    const NAME: &str = "backpack-coordinator";
    let port = free_port();
    let mut cmd = kit::daemon(&opts.coordinator_bin)?;
    cmd.args([&s.zk, root, "127.0.0.1", &port.to_string()])
        .env("RUST_LOG", "warn");
    let mut p = spawn_command(NAME, &cmd, dir);
    // Its standard output and error both go to its log (spawn_command).
    let log = dir.join(format!("{NAME}.log"));
    let want = format!("Listening to http://127.0.0.1:{port}/");
    let lines = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().map(str::to_string).collect::<Vec<_>>()
    };
    kit::wait_ready(&mut p, NAME, || {
        let listening = lines().contains(&want);
        async move { listening }
    })
    .await?;
    let lines = lines();
    let ready = lines.iter().position(|l| l == "coordinator is ready!");
    if !ready.is_some_and(|r| lines[r + 1..].contains(&want)) {
        bail!("unexpected output of {NAME}: {lines:?}");
    }
    Ok((p, port))
}

/// SIGTERM, then waits for a clean exit (the graceful shutdown path).
async fn stop_gracefully(mut p: Process) -> Result<()> {
    const NAME: &str = "backpack-coordinator";
    let stop = move || kit::stop(&mut p, Duration::from_secs(30));
    match tokio::task::spawn_blocking(stop).await? {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{NAME} exited with {status} after SIGTERM"),
        None => bail!("{NAME} still running 30 s after SIGTERM"),
    }
}

type BenchClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> BenchClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(c)
}

/// Where uploads go and what a success answers.
struct Target {
    name: &'static str,
    /// `http://host:port`
    base: String,
    expect: StatusCode,
}

/// `files` uploads at `concurrency` to a target.
async fn load(
    client: &BenchClient,
    t: &Target,
    prefix: &str,
    files: usize,
    concurrency: usize,
    body: &Bytes,
) -> Result<Phase> {
    let (target, expect) = (t.name, t.expect);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, failures, body) =
            (client.clone(), next.clone(), failures.clone(), body.clone());
        let (base, prefix) = (t.base.clone(), prefix.to_string());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= files {
                    break;
                }
                let req = Request::builder()
                    .method(Method::PUT)
                    .uri(format!("{base}/{prefix}/{i}.jpg"))
                    .header(hyper::header::CONTENT_LENGTH, body.len())
                    .body(Full::new(body.clone()));
                let Ok(req) = req else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let t = Instant::now();
                let ok = match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        status == expect
                    }
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::with_capacity(files);
    for w in workers {
        lat.extend(w.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {files} uploads to {target} failed");
    }
    lat.sort_by(f64::total_cmp);
    Ok(Phase {
        target,
        concurrency,
        files,
        secs,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
    })
}

/// `files` uploads to each target, one at a time, alternating.
async fn latency_pairs(
    client: &BenchClient,
    targets: &[Target],
    prefix: &str,
    files: usize,
    body: &Bytes,
) -> Result<Vec<Phase>> {
    let mut lat: Vec<Vec<f64>> = vec![Vec::with_capacity(files); targets.len()];
    let mut secs = vec![0.0; targets.len()];
    for i in 0..files {
        for (k, t) in targets.iter().enumerate() {
            let req = Request::builder()
                .method(Method::PUT)
                .uri(format!("{}/{prefix}/{}/{i}.jpg", t.base, t.name))
                .header(hyper::header::CONTENT_LENGTH, body.len())
                .body(Full::new(body.clone()))?;
            let started = Instant::now();
            let resp = client.request(req).await?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            let took = started.elapsed().as_secs_f64();
            if status != t.expect {
                bail!("upload to {} answered {status}", t.name);
            }
            lat[k].push(took * 1000.0);
            secs[k] += took;
        }
    }
    Ok(targets
        .iter()
        .zip(lat)
        .zip(secs)
        .map(|((t, mut lat), secs)| {
            lat.sort_by(f64::total_cmp);
            Phase {
                target: t.name,
                concurrency: 1,
                files,
                secs,
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
            }
        })
        .collect())
}

/// `files` normal uploads, one at a time.
async fn normal_uploads(
    client: &BenchClient,
    base: &str,
    prefix: &str,
    files: usize,
    body: &Bytes,
) -> Result<Normal> {
    let mut lat = Vec::with_capacity(files);
    let mut n = Normal::default();
    for i in 0..files {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("{base}/{prefix}/{i}.jpg"))
            .header(hyper::header::CONTENT_LENGTH, body.len())
            .body(Full::new(body.clone()))?;
        let started = Instant::now();
        let resp = client.request(req).await?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        lat.push(started.elapsed().as_secs_f64() * 1000.0);
        match status {
            StatusCode::OK => n.ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => n.busy_503 += 1,
            _ => n.other += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    n.p50_ms = percentile(&lat, 0.5);
    n.max_ms = lat.last().copied().unwrap_or(0.0);
    Ok(n)
}

/// One upload that announces `len` bytes and sends a byte every 2 s until
/// answered; the answer's status.
async fn trickle(addr: String, name: String, len: usize) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(&addr).await.ok()?;
    let (mut rd, mut wr) = s.into_split();
    let head = format!("PUT {name} HTTP/1.1\r\nhost: b\r\ncontent-length: {len}\r\n\r\n");
    wr.write_all(head.as_bytes()).await.ok()?;
    let writer = tokio::spawn(async move {
        while wr.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let mut buf = [0u8; 512];
    let n = rd.read(&mut buf).await.ok()?;
    writer.abort();
    std::str::from_utf8(buf.get(9..12.min(n))?)
        .ok()?
        .parse()
        .ok()
}

/// Normal uploads before and while `trickles` uploads trickle.
async fn flood(
    client: &BenchClient,
    base: &str,
    trickles: usize,
    files: usize,
    body: &Bytes,
) -> Result<Flood> {
    let files = files.clamp(1, 200);
    let before = normal_uploads(client, base, "flood-before", files, body).await?;
    let addr = base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let tasks: Vec<_> = (0..trickles)
        .map(|i| tokio::spawn(trickle(addr.clone(), format!("/trickle/{i}"), 100_000)))
        .collect();
    // Until the flood holds its slots (or all there are).
    let stats = format!("{base}/stats");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = Request::builder()
            .uri(&stats)
            .body(Full::new(Bytes::new()))?;
        let v: serde_json::Value = match client.request(req).await {
            Ok(resp) => serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?,
            Err(_) => serde_json::Value::Null,
        };
        let free = v["upload_slots_free"].as_u64().unwrap_or(u64::MAX);
        // The coordinator's default --max-uploads.
        if free <= 1024u64.saturating_sub(trickles as u64) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = normal_uploads(client, base, "flood-during", files, body).await?;
    let mut cut_408 = 0;
    for t in tasks {
        if t.await? == Some(408) {
            cut_408 += 1;
        }
    }
    Ok(Flood {
        trickles,
        before,
        during,
        cut_after_secs: started.elapsed().as_secs_f64(),
        cut_408,
    })
}

/// VmRSS and VmHWM of a process, bytes.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU seconds of a process.
fn cpu_secs(pid: u32) -> Option<f64> {
    kit::cpu_ms(pid).map(|ms| ms as f64 / 1000.0)
}

/// Runs the benchmark, reporting each phase through `progress`.
pub async fn run(opts: BenchOptions, mut progress: impl FnMut(&Phase)) -> Result<Report> {
    let tmp = tempfile::Builder::new()
        .prefix("backpack-bench-coordinator")
        .tempdir_in(&opts.dir)?;
    let dir = tmp.path();
    let servers = start_servers(&opts, dir).await?;
    let root = "/bench";
    init_cluster(&servers, root).await?;
    let (coordinator, port) = start_coordinator(&opts, &servers, root, dir).await?;
    let pid = kit::pid(&coordinator, "backpack-coordinator")?;

    let rss_max = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let rss_max = rss_max.clone();
        async move {
            loop {
                if let Some((rss, _)) = memory(pid) {
                    rss_max.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let body: Bytes = (0..opts.file_size)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into();
    let targets = [
        Target {
            name: "node",
            base: servers.nodes[0].url(),
            expect: StatusCode::CREATED,
        },
        Target {
            name: "coordinator",
            base: format!("http://127.0.0.1:{port}"),
            expect: StatusCode::OK,
        },
    ];
    let client = client();
    let mut report = Report::default();

    // Warm-up: connections, page cache, the coordinator's first config.
    let warm = opts.files.min(500);
    for t in &targets {
        load(
            &client,
            t,
            &format!("warm/{}", t.name),
            warm,
            opts.concurrency,
            &body,
        )
        .await?;
    }
    let cpu_before = cpu_secs(pid).unwrap_or(0.0);
    let mut coordinator_uploads = 0;
    for round in 0..opts.rounds {
        for t in &targets {
            let prefix = format!("t{round}/{}", t.name);
            let p = load(&client, t, &prefix, opts.files, opts.concurrency, &body).await?;
            if t.name == "coordinator" {
                coordinator_uploads += p.files;
            }
            progress(&p);
            report.phases.push(p);
        }
        // Latency: one upload at a time, alternating between the targets
        // so both see the same machine (other load comes and goes).
        let prefix = format!("l{round}");
        for p in latency_pairs(&client, &targets, &prefix, opts.latency_files, &body).await? {
            if p.target == "coordinator" {
                coordinator_uploads += p.files;
            }
            progress(&p);
            report.phases.push(p);
        }
    }
    report.cpu_secs = cpu_secs(pid).unwrap_or(0.0) - cpu_before;
    report.coordinator_uploads = coordinator_uploads;
    sampling.abort();
    if let Some((rss, hwm)) = memory(pid) {
        rss_max.fetch_max(rss, Ordering::Relaxed);
        report.rss_hwm = hwm;
    }
    report.rss_max = rss_max.load(Ordering::Relaxed);
    if opts.flood > 0 {
        let base = format!("http://127.0.0.1:{port}");
        report.flood = Some(flood(&client, &base, opts.flood, opts.latency_files, &body).await?);
    }
    stop_gracefully(coordinator).await?;
    drop(servers);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let (rss, hwm) = memory(std::process::id()).unwrap_or((0, 0));
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_secs(std::process::id()).is_some());
    }
}
