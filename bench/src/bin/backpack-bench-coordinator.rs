//! `backpack-bench-coordinator`: uploads through the coordinator against
//! uploads straight to a storage node, in the same run (see
//! `bench/README.md`). Build with `--release` before measuring.

use anyhow::Context;
use backpack_bench::coordinator::{self as bench, BenchOptions};
use clap::Parser;
use std::path::PathBuf;

/// Benchmark of backpack-coordinator: starts Redis, ZooKeeper, storage
/// nodes and a coordinator on loopback, then compares uploads through the
/// coordinator with uploads straight to node 1.
#[derive(Debug, Parser)]
#[command(name = "backpack-bench-coordinator")]
struct Args {
    /// Uploads per throughput phase
    #[arg(long, default_value_t = 4000)]
    files: usize,
    /// Bytes per file
    #[arg(long, default_value_t = 100_000)]
    file_size: usize,
    /// Uploads in flight in the throughput phases
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Rounds of each phase (medians are compared)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Uploads per latency phase (concurrency 1)
    #[arg(long, default_value_t = 1000)]
    latency_files: usize,
    /// Nodes in the coordinator's shard (2: one replication task per upload)
    #[arg(long, default_value_t = 2)]
    shard_nodes: usize,
    /// Where the temporary data of every server goes
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// backpack-node binary [default: next to this one]
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// backpack-coordinator binary [default: next to this one]
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// redis-server binary
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// ZooKeeper's jar
    #[arg(long, default_value = "/usr/share/java/zookeeper.jar")]
    zk_jar: PathBuf,
    /// After the rounds: hold this many uploads whose bodies trickle (a
    /// byte every 2 s) and time normal uploads meanwhile (0: skip)
    #[arg(long, default_value_t = 0)]
    flood: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    backpack_daemon::runtime::init_tracing();
    let a = Args::parse();
    let here = std::env::current_exe().context("cannot find this executable")?;
    let opts = BenchOptions {
        files: a.files,
        file_size: a.file_size,
        concurrency: a.concurrency,
        rounds: a.rounds.max(1),
        latency_files: a.latency_files,
        shard_nodes: a.shard_nodes.max(1),
        dir: a.dir,
        node_bin: a
            .node_bin
            .unwrap_or_else(|| here.with_file_name("backpack-node")),
        coordinator_bin: a
            .coordinator_bin
            .unwrap_or_else(|| here.with_file_name("backpack-coordinator")),
        redis_bin: a.redis_bin,
        zk_jar: a.zk_jar,
        flood: a.flood,
    };
    println!(
        "{} uploads of {} bytes at concurrency {} and {} at concurrency 1, {} rounds; coordinator shard of {} node(s)",
        opts.files,
        opts.file_size,
        opts.concurrency,
        opts.latency_files,
        opts.rounds,
        opts.shard_nodes
    );
    let c = opts.concurrency;
    let r = bench::run(opts, |p| {
        println!(
            "{:>12} c={:<3} {:>6} uploads in {:>6.2} s = {:>7.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
            p.target,
            p.concurrency,
            p.files,
            p.secs,
            p.rate(),
            p.p50_ms,
            p.p99_ms
        );
    })
    .await?;
    let (node, coord) = (r.median_rate("node", c), r.median_rate("coordinator", c));
    println!(
        "throughput at concurrency {c}: node {node:.0}/s, through the coordinator {coord:.0}/s, ratio {:.2} (target >= 0.75)",
        coord / node
    );
    let (n1, c1) = (r.median_p50("node", 1), r.median_p50("coordinator", 1));
    println!(
        "median latency at concurrency 1: node {n1:.3} ms, through the coordinator {c1:.3} ms, added {:.3} ms (target < 1 ms)",
        c1 - n1
    );
    println!(
        "coordinator memory: VmRSS max {:.1} MB, VmHWM {:.1} MB (target < 50 MB)",
        r.rss_max as f64 / 1e6,
        r.rss_hwm as f64 / 1e6
    );
    if r.coordinator_uploads > 0 {
        println!(
            "coordinator CPU: {:.2} s for {} uploads = {:.0} µs per upload",
            r.cpu_secs,
            r.coordinator_uploads,
            r.cpu_secs * 1e6 / r.coordinator_uploads as f64
        );
    }
    if let Some(f) = &r.flood {
        let show = |what: &str, n: &bench::Normal| {
            println!(
                "{what}: p50 {:.2} ms, max {:.2} ms; {} ok, {} refused 503, {} other",
                n.p50_ms, n.max_ms, n.ok, n.busy_503, n.other
            );
        };
        println!("flood of {} trickling uploads:", f.trickles);
        show("  normal uploads before", &f.before);
        show("  normal uploads during", &f.during);
        println!(
            "  p50 during / before: {:.2}; every trickle answered after {:.1} s ({} with 408)",
            f.during.p50_ms / f.before.p50_ms.max(1e-9),
            f.cut_after_secs,
            f.cut_408
        );
    }
    Ok(())
}
