//! What the benchmark commands share: server processes on free loopback
//! ports (Redis, ZooKeeper, storage nodes), killed on drop, readiness
//! waits that name the log to read, CPU time from `/proc`, medians.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use backpack_shared::model::HostPort;

/// A server process started by a benchmark, killed on drop; its output
/// goes to `<dir>/<name>.log`.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` (arguments and environment set by the caller) with
    /// its output in `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            child,
            name: name.into(),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `ready` holds, failing early if the process exits and
    /// after 30 s; both errors name the log.
    pub async fn wait_ready<F, Fut>(&mut self, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready().await {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "{} exited ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within 30 s; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.port())
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
pub async fn start_redis(bin: &Path, dir: &Path) -> Result<(Proc, HostPort)> {
    let port = free_port()?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"]);
    let mut p = Proc::spawn("redis", cmd, dir)?;
    p.wait_ready(|| port_open(port)).await?;
    Ok((p, loopback(port)))
}

/// A standalone ZooKeeper from Debian's jar with the defaults of
/// production (its transaction log fsync'd), data in `data`; ready once it
/// serves sessions. Returns it and its `host:port`.
pub async fn start_zookeeper(jar: &Path, data: &Path, dir: &Path) -> Result<(Proc, String)> {
    let port = free_port()?;
    std::fs::create_dir_all(data)?;
    let cfg = dir.join("zoo.cfg");
    std::fs::write(
        &cfg,
        format!(
            "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n4lw.commands.whitelist=srvr\n",
            data.display()
        ),
    )?;
    let mut cmd = Command::new("java");
    cmd.arg("-Xmx512m")
        .arg("-cp")
        .arg(format!(
            "{}:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-simple.jar",
            jar.display()
        ))
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(&cfg);
    let mut p = Proc::spawn("zookeeper", cmd, dir)?;
    let addr = format!("127.0.0.1:{port}");
    // It opens its port (and answers `ruok`) before it serves sessions;
    // `srvr` names its mode once it does.
    p.wait_ready(|| async {
        srvr(&addr)
            .await
            .is_some_and(|s| s.contains("Mode: standalone"))
    })
    .await?;
    Ok((p, addr))
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
pub async fn start_node(bin: &Path, name: &str, dir: &Path) -> Result<(Proc, HostPort)> {
    let port = free_port()?;
    let data = dir.join(name);
    std::fs::create_dir_all(&data)?;
    let mut cmd = Command::new(bin);
    cmd.arg(&data).arg("127.0.0.1").arg(port.to_string());
    let mut p = Proc::spawn(name, cmd, dir)?;
    p.wait_ready(|| port_open(port)).await?;
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
        let mut p = Proc::spawn("failing", cmd, dir.path()).unwrap();
        let e = p.wait_ready(|| async { false }).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("failing exited") && msg.contains("failing.log"),
            "{msg}"
        );
        assert_eq!(std::fs::read_to_string(&p.log).unwrap(), "oops\n");
    }
}
