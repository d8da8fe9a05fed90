//! Replays the committed fuzz corpus on the stable toolchain, so plain `cargo test` (and CI)
//! runs every seed and every past crash through the same property checks as the fuzz targets.
//!
//! Layout: `fuzz/corpus/<target>/<file>`, where `<target>` is a name in
//! `edgemirror_proto::fuzz::TARGETS` (and a file in `fuzz/fuzz_targets/`). A folder without a
//! target, a target without a folder, or an empty folder fails the test: the corpus and the
//! targets must not drift apart silently.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use edgemirror_proto::fuzz::{self, TARGETS};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| match e {
            Ok(e) => e.path(),
            Err(e) => panic!("cannot list {}: {e}", dir.display()),
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in TARGETS {
        let dir = corpus_root().join(name);
        assert!(dir.is_dir(), "no corpus folder for target {name}: {}", dir.display());
    }
}

#[test]
fn replay_corpus() {
    let mut ran = 0;
    let mut failures = Vec::new();
    for dir in sorted_entries(&corpus_root()) {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some(check) = fuzz::target(&name) else {
            panic!("corpus folder {} has no target in proto::fuzz::TARGETS", dir.display());
        };
        let files = sorted_entries(&dir);
        assert!(!files.is_empty(), "empty corpus folder {}", dir.display());
        for file in files {
            let data = match fs::read(&file) {
                Ok(data) => data,
                Err(e) => panic!("cannot read {}: {e}", file.display()),
            };
            // Keep going after a failure so one run lists every failing input.
            if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(file.display().to_string());
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {ran} corpus inputs failed:\n{}", failures.len(), failures.join("\n"));
    assert!(ran > 0);
}
