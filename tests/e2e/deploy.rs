//! What an operator installs from `deploy/`: the systemd unit passes systemd's own checks and
//! carries the hardening the README promises, and the production config is one the node takes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// `systemd-analyze verify` (Debian's `systemd` package) parses the unit as systemd would and
/// prints every unknown key, bad value or missing program; it must print nothing.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let unit = std::fs::read_to_string(repo_file("deploy/edgemirror.service")).expect("deploy/edgemirror.service");
    for setting in [
        "User=edgemirror",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "LimitNOFILE=1048576",
        "Restart=on-failure",
        "StateDirectory=edgemirror",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l.trim() == setting), "the unit lacks {setting}");
    }
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edgemirror.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/edgemirror", env!("CARGO_BIN_EXE_edgemirror"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {:?}\n{stderr}", out.status);
}

#[test]
fn the_production_config_is_accepted_by_the_node() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgemirror"))
        .arg("--config")
        .arg(repo_file("deploy/edgemirror.toml"))
        .arg("--check")
        .output()
        .expect("run edgemirror --check");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "config ok",
        "{:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `deploy/edgemirror.logrotate`, run by the real logrotate against a running node: the file is
/// moved to `access.log.1` and the postrotate signal (here `kill -USR1` to the node: no systemd
/// runs in the test) makes the node write new lines to a fresh `access.log`.
#[test]
fn the_logrotate_config_rotates_the_access_log_of_a_running_node() {
    use crate::support::client::get;
    use crate::support::origin::{Origin, Reply};
    let origin = Origin::start();
    origin.set("/dir1/a.txt", Reply::ok(b"abc".to_vec()));
    let node = crate::support::node::NodeBuilder::new()
        .mirror(&format!("{}/dir1/", origin.url()), "")
        .with_extra_toml("[access_log]\npath = \"access.log\"\nflush_ms = 20\n")
        .start();
    let path = format!("/{}/a.txt", crate::support::BUCKET);
    let log = node.dir().join("access.log");
    let lines_in = |p: &Path| std::fs::read_to_string(p).map(|t| t.lines().count()).unwrap_or(0);
    let wait = |p: &Path, n: usize| {
        crate::support::poll_until(
            || (lines_in(p) >= n).then_some(()),
            || format!("{} has {} lines, not {n}", p.display(), lines_in(p)),
        )
    };
    for _ in 0..3 {
        assert_eq!(get(node.data_addr(), &path, &[]).expect("GET").status, 200);
    }
    wait(&log, 3);

    let shipped = std::fs::read_to_string(repo_file("deploy/edgemirror.logrotate")).expect("logrotate config");
    assert!(shipped.contains("systemctl kill --signal=USR1 --kill-whom=main edgemirror.service"), "{shipped}");
    let config = shipped.replace("/var/log/edgemirror/access.log", log.to_str().expect("utf-8 path")).replace(
        "systemctl kill --signal=USR1 --kill-whom=main edgemirror.service",
        &format!("kill -USR1 {}", node.pid()),
    );
    let conf = node.dir().join("logrotate.conf");
    std::fs::write(&conf, config).expect("write logrotate.conf");
    let out = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(node.dir().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("logrotate (Debian package logrotate; .ci/run installs it)");
    assert!(out.status.success(), "logrotate: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));

    let rotated = node.dir().join("access.log.1");
    assert_eq!(lines_in(&rotated), 3, "delaycompress: the first rotation stays plain text");
    assert_eq!(get(node.data_addr(), &path, &[]).expect("GET").status, 200);
    wait(&log, 1);
    assert_eq!((lines_in(&log), lines_in(&rotated)), (1, 3));
}
