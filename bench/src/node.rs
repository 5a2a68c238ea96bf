//! Benchmarks of the storage node (a command, `backpack-bench-node`, not a
//! timed test; see `bench/README-node.md`).
//!
//! - [`http`]: starts Debian's nginx (WebDAV PUT) and `backpack-node` on
//!   loopback, then measures PUT and GET req/s and CPU per request of the
//!   same files against both in the same run, for each file size and
//!   concurrency, with one Rust load generator.
//! - [`index`]: fills an [`Index`] with a million small files and reports
//!   its memory per file.

use anyhow::{Context, Result, bail};
use backpack_daemon::node::index::{Index, Location, PARTS, sort_listing};
use bytes::Bytes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backpack_tests::{Process, free_port, spawn_command};

use crate::kit;

/// Settings of the HTTP benchmark.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub nginx: PathBuf,
    pub node_bin: PathBuf,
    /// Parent of the temporary directory holding both servers' data.
    pub dir: PathBuf,
    pub files: usize,
    /// Each size is measured in turn.
    pub file_sizes: Vec<usize>,
    /// Each concurrency is measured in turn.
    pub concurrencies: Vec<usize>,
    pub gets: usize,
    pub rounds: usize,
    /// nginx `worker_processes` (the node uses one thread per core).
    pub nginx_workers: String,
    /// Load only the node (for profiling it); nginx is still started.
    pub node_only: bool,
    /// Also a node with its scrub at the default rate ([`NODE_SCRUB`]),
    /// beside [`NODE`] with the scrub off.
    pub scrub_compare: bool,
}

/// The node's name in the figures.
pub const NODE: &str = "node";
/// The node with its scrub on (default `--scrub-rate`), with
/// `HttpOptions::scrub_compare`.
pub const NODE_SCRUB: &str = "node-scrub";

/// One measured phase.
#[derive(Clone, Debug)]
pub struct Phase {
    pub server: &'static str,
    pub op: &'static str,
    pub file_size: usize,
    pub concurrency: usize,
    pub requests: usize,
    pub secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU time the server used per request (user + system, all its
    /// processes), in microseconds: a figure that other load on the
    /// machine disturbs less than req/s.
    pub cpu_us_per_req: f64,
    /// CPU time the load generator (this process) used per request.
    pub client_cpu_us_per_req: f64,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

/// Everything measured: every round of every phase.
#[derive(Debug, Default)]
pub struct HttpReport {
    pub phases: Vec<Phase>,
}

/// Which phases a median is taken over: one server, operation, file size
/// and concurrency.
#[derive(Clone, Copy, Debug)]
pub struct Case<'a> {
    pub server: &'a str,
    pub op: &'a str,
    pub file_size: usize,
    pub concurrency: usize,
}

impl HttpReport {
    /// Median req/s of a case over the rounds.
    pub fn median(&self, case: Case) -> f64 {
        self.median_of(case, Phase::rate)
    }

    /// Median of any figure of a case over the rounds.
    pub fn median_of(&self, case: Case, f: impl Fn(&Phase) -> f64) -> f64 {
        let mut r: Vec<f64> = self
            .phases
            .iter()
            .filter(|p| {
                p.server == case.server
                    && p.op == case.op
                    && p.file_size == case.file_size
                    && p.concurrency == case.concurrency
            })
            .map(f)
            .collect();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }
}

/// A server under load, stopped gracefully on drop (SIGTERM, so that
/// nginx's master takes its workers down with it).
struct Server {
    name: &'static str,
    proc: Process,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        kit::stop(&mut self.proc, Duration::from_secs(10));
    }
}

impl Server {
    fn start(name: &'static str, cmd: &Command, port: u16, dir: &Path) -> Server {
        Server {
            name,
            proc: spawn_command(name, cmd, dir),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Waits until it listens; returns its pid.
    async fn wait_listening(&mut self) -> Result<u32> {
        let addr = self.addr;
        kit::wait_ready(&mut self.proc, self.name, || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await?;
        kit::pid(&self.proc, self.name)
    }
}

/// CPU seconds (user + system) used so far by `pid` and its children
/// (nginx's workers), from /proc.
fn cpu_secs(pid: u32) -> f64 {
    // Fields after the command name (which may contain spaces): state is
    // field 3; ppid 4; utime 14; stime 15.
    let parse = |stat: &str| -> Option<(u32, f64)> {
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some((ppid, ticks / 100.0))
    };
    let mut total = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            match parse(&stat) {
                Some((ppid, secs)) if p == pid || ppid == pid => total += secs,
                _ => {}
            }
        }
    }
    total
}

/// CPU seconds used so far by this process alone.
fn own_cpu_secs() -> f64 {
    kit::cpu_ms(std::process::id()).unwrap_or(0) as f64 / 1000.0
}

fn nginx_config(dir: &Path, port: u16, workers: &str) -> String {
    let d = dir.display();
    // As root, nginx would switch its workers to `nobody`, who cannot write
    // into our temporary directory.
    let user = if rustix::process::geteuid().is_root() {
        "user root;"
    } else {
        ""
    };
    format!(
        r#"worker_processes {workers};
{user}
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {d}/nginx-tmp/body;
    proxy_temp_path {d}/nginx-tmp/proxy;
    fastcgi_temp_path {d}/nginx-tmp/fastcgi;
    uwsgi_temp_path {d}/nginx-tmp/uwsgi;
    scgi_temp_path {d}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/nginx-root;
        client_max_body_size 1g;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"#
    )
}

fn start_nginx(opts: &HttpOptions, dir: &Path) -> Result<Server> {
    std::fs::create_dir_all(dir.join("nginx-root"))?;
    std::fs::create_dir_all(dir.join("nginx-tmp"))?;
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, port, &opts.nginx_workers))?;
    let mut cmd = Command::new(&opts.nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg("daemon off;");
    Ok(Server::start("nginx", &cmd, port, dir))
}

fn start_node(
    opts: &HttpOptions,
    dir: &Path,
    name: &'static str,
    extra: &[&str],
) -> Result<Server> {
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let port = free_port();
    let mut cmd = kit::daemon(&opts.node_bin)?;
    cmd.arg(&data)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg("--max-body")
        .arg("1gb")
        .args(extra);
    Ok(Server::start(name, &cmd, port, dir))
}

/// Runs requests `first..first + count` from `concurrency` workers;
/// `make(i)` builds request `i`. Returns the wall time and the latencies
/// (ms).
async fn load<F, Fut>(
    first: usize,
    count: usize,
    concurrency: usize,
    make: F,
) -> Result<(f64, Vec<f64>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let make = Arc::new(make);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, make) = (next.clone(), make.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return Ok::<_, anyhow::Error>(lat);
                    }
                    let t = Instant::now();
                    make(i).await?;
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(count);
    for w in workers {
        lat.extend(w.await??);
    }
    Ok((started.elapsed().as_secs_f64(), lat))
}

/// Sums slices of one server's phase into a [`Phase`].
#[derive(Default)]
struct Acc {
    secs: f64,
    cpu: f64,
    client_cpu: f64,
    lat: Vec<f64>,
}

impl Acc {
    fn add(&mut self, cpu: f64, client_cpu: f64, secs: f64, lat: Vec<f64>) {
        self.cpu += cpu;
        self.client_cpu += client_cpu;
        self.secs += secs;
        self.lat.extend(lat);
    }

    fn phase(mut self, server: &'static str, op: &'static str, opts: &Load) -> Phase {
        self.lat.sort_by(f64::total_cmp);
        let n = self.lat.len();
        let pct = |p: f64| {
            self.lat
                .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        Phase {
            server,
            op,
            file_size: opts.file_size,
            concurrency: opts.concurrency,
            requests: n,
            secs: self.secs,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            cpu_us_per_req: self.cpu * 1e6 / n.max(1) as f64,
            client_cpu_us_per_req: self.client_cpu * 1e6 / n.max(1) as f64,
        }
    }
}

/// The order of the servers in a slice: each goes first in turn, so none
/// always meets a warmer or dirtier page cache.
fn order(slice: usize, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    v.rotate_left(slice % n.max(1));
    v
}

/// Each phase is cut into this many slices, run alternately against the
/// servers, so that load from elsewhere on the machine falls on all
/// alike.
const SLICES: usize = 5;

/// The HTTP benchmark; calls `progress` after every phase.
pub async fn http(opts: HttpOptions, mut progress: impl FnMut(&Phase)) -> Result<HttpReport> {
    let tmp = tempfile::Builder::new()
        .prefix("backpack-bench-")
        .tempdir_in(&opts.dir)
        .with_context(|| format!("cannot create a directory in {}", opts.dir.display()))?;
    let mut servers = vec![start_nginx(&opts, tmp.path())?];
    if opts.scrub_compare {
        servers.push(start_node(&opts, tmp.path(), NODE, &["--scrub-rate", "0"])?);
        servers.push(start_node(&opts, tmp.path(), NODE_SCRUB, &[])?);
    } else {
        servers.push(start_node(&opts, tmp.path(), NODE, &[])?);
    }
    let mut targets = Vec::new();
    for s in &mut servers {
        let pid = s.wait_listening().await?;
        if !opts.node_only || s.name != "nginx" {
            targets.push(Target {
                server: s.name,
                addr: s.addr,
                pid,
            });
        }
    }
    let mut report = HttpReport::default();
    for &file_size in &opts.file_sizes {
        for &concurrency in &opts.concurrencies {
            let load = Load {
                file_size,
                concurrency,
                files: opts.files,
                gets: opts.gets,
            };
            for round in 0..opts.rounds {
                for phase in measure(&load, &targets, round).await? {
                    progress(&phase);
                    report.phases.push(phase);
                }
            }
        }
    }
    drop(servers);
    Ok(report)
}

/// A server under measurement.
#[derive(Clone, Copy)]
struct Target {
    server: &'static str,
    addr: SocketAddr,
    pid: u32,
}

/// One file size and concurrency.
struct Load {
    file_size: usize,
    concurrency: usize,
    files: usize,
    gets: usize,
}

/// One round of a [`Load`] against every target: PUTs of `files` new
/// files, then `gets` GETs of them, each phase cut into slices that the
/// targets take in turn.
async fn measure(opts: &Load, targets: &[Target], round: usize) -> Result<Vec<Phase>> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.concurrency)
        .build()?;
    // A few distinct random bodies, shared (cloning Bytes is free).
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..16)
            .map(|_| {
                let mut b = vec![0u8; opts.file_size];
                rand::fill(&mut b[..]);
                Bytes::from(b)
            })
            .collect(),
    );
    let dir = format!("bench/s{}/c{}/r{round}", opts.file_size, opts.concurrency);
    let (put_client, put_dir) = (client.clone(), dir.clone());
    let mut phases = sliced(opts, "PUT", opts.files, targets, move |t, i| {
        let req = put_client
            .put(format!("http://{}/{put_dir}/f{i:06}.jpg", t.addr))
            .body(bodies[i % bodies.len()].clone());
        async move {
            let r = req.send().await?;
            if !r.status().is_success() {
                bail!("PUT to {}: {}", t.server, r.status());
            }
            Ok(())
        }
    })
    .await?;
    let (files, size) = (opts.files, opts.file_size);
    let gets = sliced(opts, "GET", opts.gets, targets, move |t, i| {
        // Spread over the files of this round, in an order that is not
        // sequential.
        let f = (i.wrapping_mul(7919)) % files;
        let req = client.get(format!("http://{}/{dir}/f{f:06}.jpg", t.addr));
        async move {
            let r = req.send().await?;
            if r.status() != 200 {
                bail!("GET from {}: {}", t.server, r.status());
            }
            let n = r.bytes().await?.len();
            if n != size {
                bail!("GET from {}: {n} bytes instead of {size}", t.server);
            }
            Ok(())
        }
    })
    .await?;
    phases.extend(gets);
    Ok(phases)
}

/// Requests `0..total` of one operation against every target (`make(t,
/// i)` sends request `i` to `t`), cut into [`SLICES`] that the targets
/// take in turn; one [`Phase`] per target.
async fn sliced<F, Fut>(
    opts: &Load,
    op: &'static str,
    total: usize,
    targets: &[Target],
    make: F,
) -> Result<Vec<Phase>>
where
    F: Fn(Target, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let mut accs: Vec<Acc> = targets.iter().map(|_| Acc::default()).collect();
    let per = total.div_ceil(SLICES);
    for slice in 0..SLICES {
        let first = slice * per;
        let count = per.min(total.saturating_sub(first));
        for k in order(slice, targets.len()) {
            let (t, make) = (targets[k], make.clone());
            let (cpu, own) = (cpu_secs(t.pid), own_cpu_secs());
            let (secs, lat) = load(first, count, opts.concurrency, move |i| make(t, i)).await?;
            accs[k].add(cpu_secs(t.pid) - cpu, own_cpu_secs() - own, secs, lat);
        }
    }
    Ok(accs
        .into_iter()
        .zip(targets)
        .map(|(acc, t)| acc.phase(t.server, op, opts))
        .collect())
}

/// Memory of the index with many small files.
#[derive(Debug)]
pub struct IndexReport {
    pub files: usize,
    /// Heap bytes of the entries and hash table (names excluded).
    pub entry_bytes: usize,
    /// Heap bytes of the name arena.
    pub name_bytes: usize,
    /// Name bytes actually stored.
    pub name_len_total: usize,
    /// Growth of the resident set while filling the index.
    pub rss_delta_bytes: Option<usize>,
    pub insert_secs: f64,
    pub lookup_secs: f64,
    /// A listing of the whole key space, part by part as `GET //files`
    /// makes it (copy out, sort), without the NDJSON: seconds.
    pub list_secs: f64,
    /// The most files one part held (what a listing holds at once).
    pub largest_part: usize,
}

fn rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fills an index with `files` names like `/photos/00012345.jpg`.
pub fn index(files: usize) -> IndexReport {
    let names: Vec<String> = (0..files).map(|i| format!("/photos/{i:08}.jpg")).collect();
    let name_len_total = names.iter().map(String::len).sum();
    let before = rss_bytes();
    let started = Instant::now();
    let mut idx = Index::new();
    for (i, n) in names.iter().enumerate() {
        idx.offer(
            n,
            Location {
                volume: 1 + (i / 40_000) as u32,
                offset: (i as u64 % 40_000) * 100_000,
                name_len: n.len() as u32,
                data_len: 100_000,
                time_ms: 1_700_000_000_000 + i as u64,
                content_hash: i as u64,
            },
        );
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let rss_delta_bytes = match (before, rss_bytes()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let started = Instant::now();
    let found = names.iter().filter(|n| idx.get(n).is_some()).count();
    let lookup_secs = started.elapsed().as_secs_f64();
    assert_eq!(found, files, "index lost names");
    let started = Instant::now();
    let (mut listed, mut largest_part, mut prev) = (0, 0, None);
    for p in 0..PARTS {
        let mut rows = Vec::new();
        idx.list_part(p, 0, u64::MAX, &mut rows);
        sort_listing(&mut rows);
        let first = rows.first().map(|r| r.key);
        assert!(
            prev.is_none() || first.is_none() || first > prev,
            "out of order"
        );
        prev = rows.last().map(|r| r.key).or(prev);
        listed += rows.len();
        largest_part = largest_part.max(rows.len());
    }
    let list_secs = started.elapsed().as_secs_f64();
    assert_eq!(listed, files, "listing lost names");
    IndexReport {
        list_secs,
        largest_part,
        files,
        entry_bytes: idx.entry_bytes(),
        name_bytes: idx.name_bytes(),
        name_len_total,
        rss_delta_bytes,
        insert_secs,
        lookup_secs,
    }
}

/// Start-up of a store: rebuilding the index from the volumes.
#[derive(Debug)]
pub struct OpenReport {
    pub files: usize,
    pub volume_bytes: u64,
    /// Reading the volumes front to back into a buffer (warm page cache):
    /// the floor for any start-up that reads every byte.
    pub read_secs: f64,
    /// CRC-32 over the volume bytes (what recovery always checked).
    pub crc_secs: f64,
    /// XXH3-64 over the volume bytes (the content hash it now computes too).
    pub xxh3_secs: f64,
    /// `Store::open`: the whole start-up.
    pub open_secs: f64,
    /// The index's heap bytes after the start-up, names included.
    pub index_bytes: u64,
}

/// The volume size the node is opened with (fill_volumes writes volumes
/// of at most this).
const VOLUME: u64 = 1 << 30;

/// Writes `files` records of `file_size` bytes named
/// `/photos/<8 digits>.jpg` into volumes under `dir` (see
/// [`backpack_daemon::node::store::fill_volumes`]); their paths.
fn write_volumes(dir: &Path, files: usize, file_size: usize) -> Result<Vec<PathBuf>> {
    let data: Vec<u8> = (0..file_size).map(|i| (i * 7 % 251) as u8).collect();
    let names = (0..files).map(|i| format!("/photos/{i:08}.jpg"));
    Ok(backpack_daemon::node::store::fill_volumes(
        dir, names, &data,
    )?)
}

/// Writes `files` records of `file_size` bytes into volumes of 1 GiB under
/// `dir` (as the node writes them), then times reading them raw, hashing
/// them both ways, and opening the store; the page cache is warmed first
/// so that every figure is CPU, not disk.
pub fn open(dir: &Path, files: usize, file_size: usize) -> Result<OpenReport> {
    use backpack_daemon::node::store::Store;
    use std::io::Read;
    let volumes = write_volumes(dir, files, file_size)?;
    let each = |f: &mut dyn FnMut(&[u8])| -> Result<(f64, u64)> {
        let started = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        for v in &volumes {
            let mut file = std::fs::File::open(v)?;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                f(&buf[..n]);
                total += n as u64;
            }
        }
        Ok((started.elapsed().as_secs_f64(), total))
    };
    each(&mut |_| {})?; // warm the page cache
    let (read_secs, volume_bytes) = each(&mut |b| {
        std::hint::black_box(b);
    })?;
    let mut crc = crc32fast::Hasher::new();
    let (crc_secs, _) = each(&mut |b| crc.update(b))?;
    std::hint::black_box(crc.finalize());
    let mut xxh3 = backpack_shared::model::ContentHasher::new();
    let (xxh3_secs, _) = each(&mut |b| xxh3.update(b))?;
    std::hint::black_box(xxh3.finish());
    let started = Instant::now();
    let store = Store::open(dir, VOLUME).map_err(|e| anyhow::anyhow!("{e}"))?;
    let open_secs = started.elapsed().as_secs_f64();
    let stats = store.stats();
    anyhow::ensure!(
        stats.files == files as u64,
        "store opened with {} files",
        stats.files
    );
    store.close();
    Ok(OpenReport {
        files,
        volume_bytes,
        read_secs,
        crc_secs,
        xxh3_secs,
        open_secs,
        index_bytes: stats.index_bytes,
    })
}

/// The listing over HTTP: `GET //files` of a whole node.
#[derive(Debug)]
pub struct ListReport {
    pub files: usize,
    /// The whole listing read by a client on loopback.
    pub list_secs: f64,
    /// NDJSON bytes received.
    pub bytes: u64,
    /// The same in `pieces` ranges of the key space, one after the other.
    pub paged_secs: f64,
    pub pieces: usize,
    /// `check::check_shard` of a one-node shard on the same files (its
    /// pages fetched, parsed and merged; nothing to repair).
    pub check_secs: f64,
    pub check_pages: u64,
}

/// Writes `files` records of `file_size` bytes into volumes under `dir`,
/// serves them with an in-process node (scrub off), and times
/// `GET //files` read whole by a client, then paged by key range.
pub async fn list(dir: &Path, files: usize, file_size: usize, pieces: usize) -> Result<ListReport> {
    use backpack_daemon::node::{self, NodeConfig};
    write_volumes(dir, files, file_size)?;
    let config = NodeConfig {
        scrub_rate: 0,
        volume_size: VOLUME,
        ..NodeConfig::new(dir)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(node::run(listener, config, shutdown.clone()));
    let client = reqwest::Client::builder().no_proxy().build()?;
    // Read as a checker would: line by line as it arrives, the end line
    // required.
    let read = |query: String| {
        let client = client.clone();
        async move {
            let mut r = client
                .get(format!("http://{addr}//files{query}"))
                .send()
                .await?
                .error_for_status()?;
            let (mut lines, mut bytes, mut tail) = (0usize, 0u64, Vec::new());
            while let Some(chunk) = r.chunk().await? {
                bytes += chunk.len() as u64;
                lines += chunk.iter().filter(|&&b| b == b'\n').count();
                tail.extend_from_slice(&chunk[chunk.len().saturating_sub(64)..]);
                tail.drain(..tail.len().saturating_sub(64));
            }
            let end = tail.windows(11).any(|w| w == b"{\"end\":true");
            anyhow::ensure!(end, "listing {query} has no end line");
            anyhow::Ok((lines - 1, bytes))
        }
    };
    // Answered once the store is open (the index rebuilt), not timed.
    client
        .get(format!("http://{addr}/health"))
        .send()
        .await?
        .error_for_status()?;
    let started = Instant::now();
    let (listed, bytes) = read(String::new()).await?;
    let list_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(listed == files, "listed {listed} of {files} files");
    let started = Instant::now();
    let mut paged = 0;
    let step = u64::MAX / pieces as u64 + 1;
    for i in 0..pieces as u64 {
        let from = i * step;
        let query = match from.checked_add(step) {
            Some(to) if i + 1 < pieces as u64 => format!("?from={from:016x}&to={to:016x}"),
            _ => format!("?from={from:016x}"),
        };
        paged += read(query).await?.0;
    }
    let paged_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(paged == files, "paged listing has {paged} of {files} files");
    let started = Instant::now();
    let node = backpack_shared::model::HostPort {
        host: "127.0.0.1".into(),
        port: addr.port(),
    };
    let checked = backpack_daemon::check::check_shard(
        &backpack_daemon::node_client::NodeClient::new(Duration::from_secs(5)),
        "1",
        &[("1".to_string(), node)],
        None,
        &backpack_daemon::check::CheckOptions::default(),
        |_| {},
    )
    .await?;
    let check_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        checked.files == files as u64 && checked.whole(),
        "the check saw {} of {files} files",
        checked.files
    );
    shutdown.cancel();
    server.await??;
    Ok(ListReport {
        files,
        list_secs,
        bytes,
        paged_secs,
        pieces,
        check_secs,
        check_pages: checked.pages,
    })
}
