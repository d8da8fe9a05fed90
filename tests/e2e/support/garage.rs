//! A real Garage cluster (an S3-compatible distributed object store) on 127.0.0.1, for the tests
//! of private S3 origins: started by `tests/garage/cluster.sh` (1 or 3 nodes, a key, a bucket),
//! stopped when dropped. The binary is `EDGEMIRROR_GARAGE`, or where `tests/garage/install.sh`
//! puts it (`.ci/run` builds it there once).

use std::path::PathBuf;
use std::process::Command;

pub struct Garage {
    /// S3 API addresses, one per node.
    pub s3: Vec<String>,
    pub key: String,
    pub secret: String,
    pub bucket: String,
    /// The nodes' processes; `None` once [`Garage::kill9`] killed one (its pid may be reused).
    pids: Vec<Option<u32>>,
    _dir: tempfile::TempDir,
}

/// The Garage binary, or a panic saying how to get one.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EDGEMIRROR_GARAGE") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let tools = std::env::var_os("EDGEMIRROR_TOOLS").map(PathBuf::from).unwrap_or(home.join(".cache/edgemirror-tools"));
    let path = tools.join("garage-2.5.0/bin/garage");
    assert!(
        path.exists(),
        "no Garage binary at {}: run tests/garage/install.sh (or .ci/run, which does) first",
        path.display()
    );
    path
}

impl Garage {
    pub fn start(nodes: u32, bucket: &str) -> Garage {
        let dir = tempfile::tempdir().expect("a temp dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/garage/cluster.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg(nodes.to_string())
            .arg(bucket)
            .env("GARAGE", binary())
            .output()
            .expect("run tests/garage/cluster.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "Garage did not start:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let get = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        };
        Garage {
            s3: get("GARAGE_S3_ALL").split_whitespace().map(String::from).collect(),
            key: get("GARAGE_KEY"),
            secret: get("GARAGE_SECRET"),
            bucket: get("GARAGE_BUCKET"),
            pids: get("GARAGE_PIDS").split_whitespace().map(|p| Some(p.parse().expect("a pid"))).collect(),
            _dir: dir,
        }
    }
}

impl Garage {
    /// `kill -9` of cluster node `i` (0-based): no chance to flush or say goodbye.
    pub fn kill9(&mut self, i: usize) {
        let pid = self.pids[i].take().expect("cluster node already killed");
        let status = Command::new("kill").arg("-9").arg(pid.to_string()).status().expect("run kill");
        assert!(status.success(), "kill -9 {pid}");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for pid in self.pids.iter().flatten() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}
