//! The buckets this node serves: those the config file declares, and those created through
//! S3's CreateBucket. The table is replaced whole on a change (readers hold a snapshot, as with
//! [`crate::rules`]).
//!
//! - A declared bucket is the file's: DeleteBucket refuses it (edit the file instead), and a
//!   CreateBucket of its name answers `BucketAlreadyOwnedByYou`.
//! - A created bucket is a plain store bucket (`mode = "mirror"`: never evicted, rules from the
//!   admin API, not public). Created buckets are persisted in `store.dir/buckets.json`, replaced
//!   atomically like `rules.json`, so a crash leaves the old list or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{BucketConfig, BucketMode, Config};

/// One bucket as the data plane sees it.
#[derive(Debug)]
pub struct Bucket {
    pub config: BucketConfig,
    pub created: SystemTime,
    /// Declared in the config file (rather than created through S3).
    pub declared: bool,
    /// Set while a DeleteBucket decides, and for good once it succeeds: every object write
    /// into this bucket carries it (`Shared::begin` in the worker module) and is refused at commit
    /// once it is set, so no object is committed into a bucket that is gone.
    pub deleting: Arc<AtomicBool>,
}

impl Bucket {
    fn new(config: BucketConfig, created: SystemTime, declared: bool) -> Bucket {
        Bucket { config, created, declared, deleting: Arc::default() }
    }
}

/// Every bucket, by name.
#[derive(Debug, Default)]
pub struct BucketTable {
    buckets: BTreeMap<String, Arc<Bucket>>,
}

/// Why a bucket cannot be created or deleted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    AlreadyExists,
    NoSuchBucket,
    Declared,
}

impl BucketTable {
    /// The config's buckets (dated by the store directory's creation: the file keeps no date)
    /// and those `buckets.json` holds.
    pub fn load(config: &Config) -> anyhow::Result<BucketTable> {
        let declared_at = std::fs::metadata(&config.store.dir)
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .unwrap_or(UNIX_EPOCH);
        let mut buckets = BTreeMap::new();
        for b in &config.buckets {
            let bucket = Bucket::new(b.clone(), declared_at, true);
            buckets.insert(b.name.clone(), Arc::new(bucket));
        }
        for (name, saved) in load_persisted(&config.store.dir)?.buckets {
            if buckets.contains_key(&name) {
                // Created through S3, later declared in the file: the file's settings win.
                continue;
            }
            if let Err(e) = crate::config::validate_bucket_name(&name) {
                anyhow::bail!("{}: bucket {name:?}: {e}", path(&config.store.dir).display());
            }
            let created = UNIX_EPOCH + Duration::from_secs(saved.created);
            buckets.insert(name.clone(), Arc::new(Bucket::new(created_config(name), created, false)));
        }
        Ok(BucketTable { buckets })
    }

    /// The table a reloaded `config` makes ([`BucketTable::load`]), in which every bucket that
    /// exists now keeps its identity: its creation time, and the `deleting` flag that writes in
    /// flight into it carry.
    pub fn reloaded(&self, config: &Config) -> anyhow::Result<BucketTable> {
        let mut next = BucketTable::load(config)?;
        for (name, bucket) in next.buckets.iter_mut() {
            if let Some(old) = self.buckets.get(name) {
                let kept = Bucket {
                    config: bucket.config.clone(),
                    created: old.created,
                    declared: bucket.declared,
                    deleting: old.deleting.clone(),
                };
                *bucket = Arc::new(kept);
            }
        }
        Ok(next)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Bucket>> {
        self.buckets.get(name)
    }

    /// Every bucket, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Bucket>> {
        self.buckets.values()
    }

    /// This table with `name` added (created now).
    pub fn with_created(&self, name: &str, now: SystemTime) -> Result<BucketTable, Refusal> {
        if self.buckets.contains_key(name) {
            return Err(Refusal::AlreadyExists);
        }
        let mut buckets = self.buckets.clone();
        let bucket = Bucket::new(created_config(name.to_string()), now, false);
        buckets.insert(name.to_string(), Arc::new(bucket));
        Ok(BucketTable { buckets })
    }

    /// This table without `name`. Whether it is empty is the caller's check.
    pub fn without(&self, name: &str) -> Result<BucketTable, Refusal> {
        match self.buckets.get(name) {
            None => Err(Refusal::NoSuchBucket),
            Some(b) if b.declared => Err(Refusal::Declared),
            Some(_) => {
                let mut buckets = self.buckets.clone();
                buckets.remove(name);
                Ok(BucketTable { buckets })
            }
        }
    }

    /// Writes the created buckets to `store.dir/buckets.json` atomically.
    pub fn persist(&self, store_dir: &Path) -> std::io::Result<()> {
        let persisted = PersistedBuckets {
            version: 1,
            buckets: self
                .buckets
                .iter()
                .filter(|(_, b)| !b.declared)
                .map(|(name, b)| {
                    let created = b.created.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    (name.clone(), SavedBucket { created })
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&persisted).map_err(std::io::Error::other)?;
        crate::rules::replace_file(store_dir, &path(store_dir), &json)
    }
}

/// The settings of a bucket made by CreateBucket.
fn created_config(name: String) -> BucketConfig {
    BucketConfig { name, mode: BucketMode::Mirror, public_read: false, config_rules: None }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PersistedBuckets {
    version: u32,
    buckets: BTreeMap<String, SavedBucket>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedBucket {
    /// Unix seconds.
    created: u64,
}

fn path(store_dir: &Path) -> PathBuf {
    store_dir.join("buckets.json")
}

fn load_persisted(store_dir: &Path) -> anyhow::Result<PersistedBuckets> {
    let path = path(store_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(PersistedBuckets { version: 1, buckets: BTreeMap::new() })
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let toml = format!("[store]\ndir = {:?}\n[[buckets]]\nname = \"declared\"\n", dir.to_str().unwrap());
        Config::from_toml(&toml).unwrap()
    }

    #[test]
    fn created_buckets_persist_and_declared_ones_cannot_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let table = BucketTable::load(&config).unwrap();
        assert!(table.get("declared").unwrap().declared);
        assert_eq!(table.with_created("declared", SystemTime::now()).unwrap_err(), Refusal::AlreadyExists);
        assert_eq!(table.without("declared").unwrap_err(), Refusal::Declared);
        assert_eq!(table.without("nope").unwrap_err(), Refusal::NoSuchBucket);

        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let table = table.with_created("made-by-s3", at).unwrap();
        table.persist(dir.path()).unwrap();
        let again = BucketTable::load(&config).unwrap();
        let made = again.get("made-by-s3").unwrap();
        assert!(!made.declared);
        assert_eq!(made.created, at);
        assert_eq!(made.config.mode, BucketMode::Mirror);
        assert_eq!(again.iter().map(|b| b.config.name.as_str()).collect::<Vec<_>>(), ["declared", "made-by-s3"]);

        let fewer = again.without("made-by-s3").unwrap();
        fewer.persist(dir.path()).unwrap();
        assert!(BucketTable::load(&config).unwrap().get("made-by-s3").is_none());
    }

    #[test]
    fn a_bad_name_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), r#"{"version":1,"buckets":{"Bad_Name":{"created":1}}}"#).unwrap();
        let err = BucketTable::load(&config(dir.path())).unwrap_err().to_string();
        assert!(err.contains("buckets.json") && err.contains("Bad_Name"), "{err}");
    }
}
