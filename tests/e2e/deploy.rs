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
