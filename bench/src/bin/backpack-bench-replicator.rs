//! `backpack-bench-replicator`: the replicator against a plain copy of the
//! same files, and its latency under steady uploads (see `bench/README.md`).
//! Build with `--release` before measuring.

use anyhow::Context;
use backpack_bench::kit::median;
use backpack_bench::replicator::{self as bench, BenchOptions, Event, Phase};
use clap::Parser;
use std::path::PathBuf;

/// Benchmark of backpack-replicator: starts Redis, ZooKeeper, two
/// backpack-node processes and a backpack-coordinator on loopback, then
/// compares the replicator with a plain GET-then-PUT copy of the same files
/// in the same run, and measures replication latency under steady uploads.
#[derive(Debug, Parser)]
#[command(name = "backpack-bench-replicator")]
struct Args {
    /// Files of the main comparison
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Bytes per file
    #[arg(long, default_value_t = 100_000)]
    file_size: usize,
    /// Concurrency of the main comparison
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Rounds of (plain copy, replicator) at that concurrency
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Slices of each round: plain copy and replicator alternate slice by
    /// slice, so both see the same state of the disks
    #[arg(long, default_value_t = 5)]
    slices: usize,
    /// Further concurrencies (plain copy and replicator each)
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    others: Vec<usize>,
    /// Files of each further concurrency
    #[arg(long, default_value_t = 2_000)]
    other_files: usize,
    /// Skip the rebuild phase (an empty node filled by check --repair and a
    /// replicator, against a plain copy to an empty node)
    #[arg(long)]
    no_rebuild: bool,
    /// Small files replicated first (twice, then one uncounted round of the
    /// files) to warm ZooKeeper's JIT up, as in a long-running ensemble (0:
    /// no warm-up)
    #[arg(long, default_value_t = 20_000)]
    warmup_files: usize,
    /// Uploads per second of the latency phase (0 skips it)
    #[arg(long, default_value_t = 200.0)]
    latency_rate: f64,
    /// Seconds of the latency phase
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// Where the temporary data of every server goes
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
    /// Where ZooKeeper's data goes [default: with the others]; production
    /// gives ZooKeeper's transaction log a disk of its own, so that its
    /// fsyncs do not queue behind the storage nodes' writes
    #[arg(long)]
    zk_dir: Option<PathBuf>,
    /// backpack-node binary [default: next to this one]
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// backpack-coordinator binary for the latency phase [default: next to
    /// this one, if built; without it uploads go to node 1 and the
    /// benchmark pushes the task]
    #[arg(long)]
    coordinator_bin: Option<PathBuf>,
    /// redis-server binary
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// ZooKeeper jar (Debian package zookeeper)
    #[arg(long, default_value = "/usr/share/java/zookeeper.jar")]
    zk_jar: PathBuf,
}

fn describe(p: &Phase) -> String {
    let per = |ms: u64| ms as f64 / p.files as f64;
    format!(
        "{:<10} c={:<3} {:>6} files in {:>7.2} s = {:>6.0} files/s   CPU ms/file: nodes {:.2}, zookeeper {:.2}, redis {:.2}, bench {:.2}; ZooKeeper writes/file {:.3}",
        p.what,
        p.concurrency,
        p.files,
        p.secs,
        p.rate(),
        per(p.cpu.get("node")),
        per(p.cpu.get("zookeeper")),
        per(p.cpu.get("redis")),
        per(p.cpu.get("bench")),
        p.cpu.zk_txns as f64 / p.files as f64,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings only (or RUST_LOG): the benchmark's own lines are its output.
    // The ZooKeeper client's notices when the benchmark stops its own
    // ZooKeeper are not news.
    backpack_daemon::runtime::init_tracing_filtered("warn,zookeeper_client=error");
    let a = Args::parse();
    let here = std::env::current_exe().context("cannot find this executable")?;
    let node_bin = a
        .node_bin
        .unwrap_or_else(|| here.with_file_name("backpack-node"));
    let coordinator_bin = a.coordinator_bin.or_else(|| {
        let p = here.with_file_name("backpack-coordinator");
        p.exists().then_some(p)
    });
    let opts = BenchOptions {
        files: a.files,
        file_size: a.file_size,
        concurrency: a.concurrency,
        rounds: a.rounds,
        slices: a.slices,
        other_concurrencies: a.others,
        other_files: a.other_files,
        rebuild: !a.no_rebuild,
        warmup_files: a.warmup_files,
        latency_rate: a.latency_rate,
        latency_secs: a.latency_secs,
        dir: a.dir,
        zk_dir: a.zk_dir,
        node_bin,
        coordinator_bin,
        redis_bin: a.redis_bin,
        zk_jar: a.zk_jar,
    };
    let main_c = opts.concurrency;
    println!(
        "backpack-bench-replicator: {} files of {} bytes, node 1 -> node 2, concurrency {} x {} rounds (then {:?} over {} files)",
        opts.files,
        opts.file_size,
        opts.concurrency,
        opts.rounds,
        opts.other_concurrencies,
        opts.other_files
    );
    let mut plain = Vec::new();
    let mut repl = Vec::new();
    let mut ratios = Vec::new();
    let mut last_plain: Option<f64> = None;
    bench::run(opts, |e| match e {
        Event::Note(s) => println!("{s}"),
        Event::Phase(p) => {
            let mut line = describe(&p);
            if p.what.starts_with("plain copy") {
                last_plain = Some(p.rate());
                if p.what == "plain copy" && p.concurrency == main_c {
                    plain.push(p.rate());
                }
            } else {
                if let Some(base) = last_plain {
                    line.push_str(&format!("   ratio {:.2}", p.rate() / base));
                    if p.what == "replicator" && p.concurrency == main_c {
                        ratios.push(p.rate() / base);
                    }
                }
                if p.what == "replicator" && p.concurrency == main_c {
                    repl.push(p.rate());
                }
            }
            println!("{line}");
            if p.what == "replicator" && p.concurrency == main_c && !repl.is_empty() {
                let (r, b) = (median(repl.clone()), median(plain.clone()));
                // Each round interleaves both on the same disk state: its
                // ratio is a paired measurement, the headline figure.
                println!(
                    "  so far at c={main_c}: median of the rounds' ratios {:.2} (target >= 0.80); replicator median {r:.0} files/s, plain copy median {b:.0} files/s, ratio of medians {:.2}",
                    median(ratios.clone()),
                    r / b
                );
            }
        }
        Event::Latency(l) => println!(
            "latency at {:.0} uploads/s ({} uploads, {}): upload answered -> copy on every node: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p50 < 100 ms)",
            l.rate, l.uploads, l.via, l.p50, l.p90, l.p99, l.max
        ),
    })
    .await
}
