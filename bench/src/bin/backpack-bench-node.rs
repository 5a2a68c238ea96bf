//! `backpack-bench-node`: benchmarks of the storage node (see
//! `bench/README-node.md`). Build with `--release` before measuring.

use anyhow::Context;
use backpack_bench::node::{self as bench, Case, HttpOptions, HttpReport};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Benchmarks of backpack-node.
#[derive(Debug, Parser)]
#[command(name = "backpack-bench-node")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// PUT and GET req/s and CPU per request of backpack-node against
    /// nginx on loopback.
    Http {
        /// nginx binary (with the WebDAV module).
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: PathBuf,
        /// backpack-node binary [default: next to this one].
        #[arg(long)]
        node_bin: Option<PathBuf>,
        /// Where the temporary data of both servers goes.
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Files PUT per round.
        #[arg(long, default_value_t = 2000)]
        files: usize,
        /// Bytes per file; several, comma-separated, are measured in turn.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000")]
        file_size: Vec<usize>,
        /// Requests in flight; several, comma-separated, are measured in
        /// turn.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        concurrency: Vec<usize>,
        /// GET requests per round.
        #[arg(long, default_value_t = 20_000)]
        gets: usize,
        /// Rounds; the medians are compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// nginx worker_processes.
        #[arg(long, default_value = "auto")]
        nginx_workers: String,
        /// Load only backpack-node (to profile it).
        #[arg(long)]
        node_only: bool,
        /// Also run a node with its scrub at the default rate, beside one
        /// with the scrub off, and compare them
        #[arg(long)]
        scrub_compare: bool,
    },
    /// Memory per file of the in-memory index.
    Index {
        /// Files to index.
        #[arg(long, default_value_t = 1_000_000)]
        files: usize,
    },
    /// The listing `GET //files` of a node holding many small files, read
    /// whole and paged by key range.
    List {
        /// Where the volumes are written (removed after).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Files in the volumes.
        #[arg(long, default_value_t = 1_000_000)]
        files: usize,
        /// Bytes per file.
        #[arg(long, default_value_t = 100)]
        file_size: usize,
        /// Ranges the paged listing is cut into.
        #[arg(long, default_value_t = 16)]
        pieces: usize,
    },
    /// Start-up time: rebuilding the index from the volumes, against
    /// reading and hashing the same bytes.
    Open {
        /// Where the volumes are written (removed after).
        #[arg(long, default_value_os_t = std::env::temp_dir())]
        dir: PathBuf,
        /// Files in the volumes.
        #[arg(long, default_value_t = 200_000)]
        files: usize,
        /// Bytes per file.
        #[arg(long, default_value_t = 4_000)]
        file_size: usize,
    },
}

/// One server's medians over the rounds, in one case.
struct Medians {
    rate: f64,
    cpu: f64,
    p99: f64,
}

/// A Markdown table (as in `bench/README-node.md`) with a row per size,
/// concurrency and operation: `columns` after those three, and each row's
/// cells from `cells(medians of a server)`.
fn table(
    report: &HttpReport,
    opts: &HttpOptions,
    columns: &[&str],
    cells: impl Fn(&dyn Fn(&'static str) -> Medians) -> Vec<String>,
) {
    println!();
    println!("| size | c | op | {} |", columns.join(" | "));
    println!("|{}", " --- |".repeat(columns.len() + 3));
    for &file_size in &opts.file_sizes {
        for &concurrency in &opts.concurrencies {
            for op in ["GET", "PUT"] {
                let of = |server| {
                    let case = Case {
                        server,
                        op,
                        file_size,
                        concurrency,
                    };
                    Medians {
                        rate: report.median(case),
                        cpu: report.median_of(case, |p| p.cpu_us_per_req),
                        p99: report.median_of(case, |p| p.p99_ms),
                    }
                };
                println!(
                    "| {file_size} B | {concurrency} | {op} | {} |",
                    cells(&of).join(" | ")
                );
            }
        }
    }
}

/// nginx against the node: req/s and server CPU per request, and their
/// ratios (`node/nginx` req/s; `nginx/node` CPU: above 1 the node is
/// ahead).
fn summary(report: &HttpReport, opts: &HttpOptions) {
    let columns = [
        "nginx req/s",
        "node req/s",
        "node/nginx req/s",
        "nginx CPU us/req",
        "node CPU",
        "nginx/node CPU",
        "p99 ms nginx / node",
    ];
    table(report, opts, &columns, |of| {
        let (nginx, node) = (of("nginx"), of(bench::NODE));
        vec![
            format!("{:.0}", nginx.rate),
            format!("{:.0}", node.rate),
            ratio(node.rate, nginx.rate),
            format!("{:.0}", nginx.cpu),
            format!("{:.0}", node.cpu),
            ratio(nginx.cpu, node.cpu),
            format!("{:.2} / {:.2}", nginx.p99, node.p99),
        ]
    });
}

/// The node with its scrub on against the node with it off: req/s and
/// server CPU per request (target: PUT req/s on/off >= 0.9).
fn scrub_summary(report: &HttpReport, opts: &HttpOptions) {
    let columns = [
        "scrub off req/s",
        "scrub on req/s",
        "on/off req/s",
        "CPU us/req off / on",
    ];
    table(report, opts, &columns, |of| {
        let (off, on) = (of(bench::NODE), of(bench::NODE_SCRUB));
        vec![
            format!("{:.0}", off.rate),
            format!("{:.0}", on.rate),
            ratio(on.rate, off.rate),
            format!("{:.0} / {:.0}", off.cpu, on.cpu),
        ]
    });
}

/// `a / b` to two decimals; `-` when `b` is 0 (a phase too short for the
/// CPU clock's 10 ms tick).
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    backpack_daemon::runtime::init_tracing();
    match Args::parse().command {
        Cmd::Http {
            nginx,
            node_bin,
            dir,
            files,
            file_size,
            concurrency,
            gets,
            rounds,
            nginx_workers,
            node_only,
            scrub_compare,
        } => {
            let node_bin = match node_bin {
                Some(p) => p,
                None => std::env::current_exe()
                    .context("cannot find this executable")?
                    .with_file_name("backpack-node"),
            };
            let opts = HttpOptions {
                nginx,
                node_bin,
                dir,
                files,
                file_sizes: file_size,
                concurrencies: concurrency,
                gets,
                rounds,
                nginx_workers,
                node_only,
                scrub_compare,
            };
            println!(
                "{} files per round, sizes {:?} bytes, concurrency {:?}, {} GETs per round, {} rounds",
                opts.files, opts.file_sizes, opts.concurrencies, opts.gets, opts.rounds
            );
            let report = bench::http(opts.clone(), |p| {
                println!(
                    "{:>7} B c={:<3} {:>10} {:<3} {:>6} req in {:>6.2} s = {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  server cpu {:>4.0} us/req  client cpu {:>4.0} us/req",
                    p.file_size, p.concurrency, p.server, p.op, p.requests, p.secs, p.rate(), p.p50_ms, p.p99_ms, p.cpu_us_per_req, p.client_cpu_us_per_req
                );
            })
            .await?;
            summary(&report, &opts);
            if opts.scrub_compare {
                scrub_summary(&report, &opts);
            }
        }
        Cmd::Open {
            dir,
            files,
            file_size,
        } => {
            let dir = tempfile::tempdir_in(&dir)
                .with_context(|| format!("cannot make a directory in {}", dir.display()))?;
            let r = bench::open(dir.path(), files, file_size)?;
            let mb = r.volume_bytes as f64 / 1e6;
            let rate = |secs: f64| format!("{secs:.2} s ({:.0} MB/s)", mb / secs);
            println!(
                "{} files of {file_size} bytes, {mb:.0} MB of volumes, page cache warm",
                r.files
            );
            println!("read only:      {}", rate(r.read_secs));
            println!("CRC-32:         {}", rate(r.crc_secs));
            println!("XXH3-64:        {}", rate(r.xxh3_secs));
            println!(
                "Store::open:    {} = {:.2}x the read, {:.1} us/file",
                rate(r.open_secs),
                r.open_secs / r.read_secs,
                r.open_secs * 1e6 / r.files as f64
            );
            println!(
                "index after start-up: {} bytes = {:.1} bytes/file (names included)",
                r.index_bytes,
                r.index_bytes as f64 / r.files as f64
            );
        }
        Cmd::List {
            dir,
            files,
            file_size,
            pieces,
        } => {
            let dir = tempfile::tempdir_in(&dir)
                .with_context(|| format!("cannot make a directory in {}", dir.display()))?;
            let r = bench::list(dir.path(), files, file_size, pieces).await?;
            println!(
                "GET //files of {} files: {:.2} s = {:.0} files/s, {:.1} MB of NDJSON ({:.0} MB/s)",
                r.files,
                r.list_secs,
                r.files as f64 / r.list_secs,
                r.bytes as f64 / 1e6,
                r.bytes as f64 / 1e6 / r.list_secs
            );
            println!(
                "in {} key ranges: {:.2} s = {:.0} files/s",
                r.pieces,
                r.paged_secs,
                r.files as f64 / r.paged_secs
            );
            println!(
                "check-shard of the same files ({} pages, parsed and merged): {:.2} s = {:.0} files/s, {:.2}x the raw listing's rate",
                r.check_pages,
                r.check_secs,
                r.files as f64 / r.check_secs,
                r.list_secs / r.check_secs
            );
        }
        Cmd::Index { files } => {
            let r = bench::index(files);
            println!(
                "{} files indexed in {:.2} s, looked up in {:.2} s",
                r.files, r.insert_secs, r.lookup_secs
            );
            println!(
                "entries + hash table: {} bytes = {:.1} bytes/file (names excluded)",
                r.entry_bytes,
                r.entry_bytes as f64 / r.files as f64
            );
            println!(
                "name arena: {} bytes for {} bytes of names",
                r.name_bytes, r.name_len_total
            );
            println!(
                "listed (key order, part by part) in {:.2} s = {:.0} files/s; largest part {} files",
                r.list_secs,
                r.files as f64 / r.list_secs,
                r.largest_part
            );
            if let Some(rss) = r.rss_delta_bytes {
                println!(
                    "RSS growth: {rss} bytes = {:.1} bytes/file, {:.1} bytes/file without the name arena",
                    rss as f64 / r.files as f64,
                    rss.saturating_sub(r.name_bytes) as f64 / r.files as f64
                );
            }
        }
    }
    Ok(())
}
