//! What the benchmark commands share: their servers, started with
//! `backpack_tests`' launchers (ZooKeeper, Redis, any process under the
//! guard that kills it on drop, free ports), readiness waits that show the
//! log, a graceful stop, CPU time from `/proc`, medians.

use std::future::Future;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use backpack_shared::model::HostPort;
use backpack_tests::{Process, RedisServer, ZkOptions, ZkServer, free_port, spawn_command};

/// Waits until `ready` holds, failing early if the process `name` exits
/// and after 30 s; both errors show its log.
pub async fn wait_ready<F, Fut>(p: &mut Process, name: &str, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        if let Some(status) = p.exit_status() {
            bail!("{name} exited ({status}); its log:\n{}", p.log_text());
        }
        if Instant::now() > deadline {
            bail!("{name} not ready within 30 s; its log:\n{}", p.log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// SIGTERM (nginx's master then takes its workers down; the daemons shut
/// down gracefully), then waits up to `timeout` for the process to end:
/// how it ended, `None` if it still runs (dropping it kills it). Blocks:
/// it also runs in `Drop`.
pub fn stop(p: &mut Process, timeout: Duration) -> Option<ExitStatus> {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(pid) = p.pid().and_then(|pid| Pid::from_raw(pid as i32)) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = p.exit_status() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A command running one of the workspace's daemons, if it is built.
pub fn daemon(bin: &Path) -> Result<Command> {
    if !bin.is_file() {
        bail!(
            "{} is missing: build the daemons first (cargo build --release --workspace --bins) or give its path",
            bin.display()
        );
    }
    Ok(Command::new(bin))
}

/// The server's pid, once it runs.
pub fn pid(p: &Process, name: &str) -> Result<u32> {
    p.pid().with_context(|| format!("{name} has no pid"))
}

pub async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn loopback(port: u16) -> HostPort {
    HostPort {
        host: "127.0.0.1".into(),
        port,
    }
}

/// A Redis server without persistence (the benchmarks' queue).
pub async fn start_redis(bin: &Path) -> Result<(RedisServer, HostPort)> {
    let bin = bin.to_path_buf();
    let redis = tokio::task::spawn_blocking(move || RedisServer::try_start(&bin)).await??;
    let addr = loopback(redis.port);
    Ok((redis, addr))
}

/// A standalone ZooKeeper from Debian's jar with the settings of
/// production (its transaction log fsync'd), data in `data`; ready once it
/// serves sessions.
pub async fn start_zookeeper(jar: &Path, data: &Path) -> Result<ZkServer> {
    let opts = ZkOptions {
        jar: jar.into(),
        data_dir: Some(data.into()),
        ..ZkOptions::production()
    };
    let zk = tokio::task::spawn_blocking(move || ZkServer::try_start(&opts)).await??;
    // It answers `ruok` (the launcher's readiness) before it serves
    // sessions; `srvr` names its mode once it does.
    let addr = zk.addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !srvr(&addr)
        .await
        .is_some_and(|s| s.contains("Mode: standalone"))
    {
        if Instant::now() > deadline {
            bail!("ZooKeeper at {addr} serves no sessions within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(zk)
}

/// ZooKeeper's `srvr` answer.
pub async fn srvr(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.ok()?;
    c.write_all(b"srvr").await.ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), c.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(answer)
}

/// ZooKeeper's last transaction id, from `srvr`.
pub async fn zxid(addr: &str) -> Option<u64> {
    let answer = srvr(addr).await?;
    let hex = answer.lines().find_map(|l| l.strip_prefix("Zxid: 0x"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// A `backpack-node` with its data in `<dir>/<name>`, once it listens.
pub async fn start_node(bin: &Path, name: &str, dir: &Path) -> Result<(Process, HostPort)> {
    let port = free_port();
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let mut cmd = daemon(bin)?;
    cmd.arg(&data).arg("127.0.0.1").arg(port.to_string());
    let mut p = spawn_command(name, &cmd, dir);
    wait_ready(&mut p, name, || port_open(port)).await?;
    Ok((p, loopback(port)))
}

/// User + system CPU time of a process so far, milliseconds.
pub fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * 10)
}

/// The median; NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `p` quantile (0 to 1) of sorted values, nearest rank; NaN for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(vec![]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn reads_own_cpu_time() {
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_ms(std::process::id()).is_some_and(|ms| ms > 0));
        assert_eq!(cpu_ms(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops; exit 3"]);
        let mut p = spawn_command("failing", &cmd, dir.path());
        let e = wait_ready(&mut p, "failing", || async { false })
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("failing exited (exit status: 3)") && msg.contains("oops"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn a_stopped_process_reports_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap 'exit 0' TERM; while :; do sleep 0.01; done"]);
        let mut p = spawn_command("graceful", &cmd, dir.path());
        // Started by the guard, and its trap set.
        while p.pid().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = stop(&mut p, Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }
}
