//! The daemons' lives: how they start, become ready, shut down and live
//! through the loss of ZooKeeper (`coordinator`, `replicator`), and the
//! systemd units that start and stop them.

use std::process::Command;

use backpack_tests::{bin, require};

mod coordinator;
mod replicator;

#[test]
fn systemd_units_verify() {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    if !require(
        "systemd-analyze (Debian package systemd)",
        analyze.is_some(),
    ) {
        return;
    }
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = tempfile::tempdir().unwrap();
    for (unit, program) in [
        ("backpack-node@.service", "backpack-node"),
        ("backpack-coordinator@.service", "backpack-coordinator"),
        ("backpack-replicator@.service", "backpack-replicator"),
    ] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        for needed in [
            "Restart=on-failure",
            "KillSignal=SIGTERM",
            "EnvironmentFile=",
        ] {
            assert!(text.contains(needed), "{unit} lacks {needed}");
        }
        // Point ExecStart at the binary built here so verify can check it.
        let text = text.replace(
            &format!("/usr/local/bin/{program}"),
            &bin(program).display().to_string(),
        );
        let instance = unit.replace("@.service", "@1.service");
        std::fs::write(dir.path().join(unit), &text).unwrap();
        std::fs::write(dir.path().join(&instance), &text).unwrap();
        let out = Command::new(analyze.unwrap())
            .arg("verify")
            .arg("--man=no")
            .arg(dir.path().join(&instance))
            .env("SYSTEMD_LOG_LEVEL", "notice")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
}
