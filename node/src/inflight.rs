//! One origin fetch per object: the table of fills in flight, shared by every core.
//!
//! A miss joins the fill for its key if one is running (on any core) or starts one. The fill is
//! a task of its own on the core that started it (the producer, `fill.rs`); it owns the
//! origin connection and the store record and publishes its [`Phase`] through a `watch`
//! channel. Every client, the first one included, is a *follower* (`follow.rs`): it waits
//! for the response head, then reads the body from the record being written ([`FillReader`]:
//! the segment mapping, zero-copy) at its own pace. A slow client only falls behind; it never slows the fetch or the other clients, and
//! it holds no more than one piece in memory. A client that leaves does not stop the fill.
//!
//! Integrity: while streaming, followers hold back the last byte of a known-length body (and the
//! last chunk of a chunked one) until the fill has verified and committed the object, so a
//! failed check cuts every client short instead of completing a bad body.
//!
//! Lifecycle: commit (the index entry is visible) -> phase `Complete` -> removal from the table.
//! A lookup that misses the table therefore finds the object in the store ([`FillTable::join`]
//! re-checks under the shard lock). A fill that ends any other way is removed too, by its
//! [`FillGuard`], even if its task dies: no stale entry keeps later requests waiting (the kind of
//! bug pingora#931 describes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use edgemirror_cache::{CommitRule, FillReader, ObjectKey, ObjectKeyRef, RecordMeta, Store, VersionPin};
use tokio::sync::watch;

const SHARDS: usize = 16;

/// Where a fill is.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Waiting for the origin's response head.
    Fetching,
    /// Head received; `written` body bytes are readable.
    Streaming { written: u64 },
    /// The object is committed; `written` is its size.
    Complete { written: u64 },
    /// The fetch ended before a response could start; answer with this.
    Refused(Refusal),
    /// The body broke mid-way or failed verification: clients are cut off.
    Broken,
}

#[derive(Clone, Debug)]
pub enum Refusal {
    /// Origin 404.
    NotFound,
    /// 424 MirrorFailed; the reason is for the log.
    Failed(String),
    /// `followRedirects: false`: pass the origin's 3xx on.
    Redirect { status: u16, location: Bytes },
}

/// What followers need once the head is in.
pub struct FillBody {
    pub meta: RecordMeta,
    /// The origin's Content-Length, if it sent one.
    pub length: Option<u64>,
    pub reader: FillReader,
}

pub struct Fill {
    pub key: ObjectKey,
    phase: watch::Sender<Phase>,
    body: OnceLock<FillBody>,
}

impl Fill {
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub fn body(&self) -> Option<&FillBody> {
        self.body.get()
    }

    /// Clients following this fill right now.
    pub fn followers(&self) -> usize {
        self.phase.receiver_count()
    }

    pub fn set_body(&self, body: FillBody) {
        let _ = self.body.set(body);
        self.phase.send_replace(Phase::Streaming { written: 0 });
    }

    pub fn set_written(&self, written: u64) {
        self.phase.send_replace(Phase::Streaming { written });
    }

    fn is_terminal(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Complete { .. } | Phase::Refused(_) | Phase::Broken)
    }
}

pub enum Join {
    /// The object was committed meanwhile: serve it from the store.
    Stored,
    /// A fill is running: follow it.
    Follow(Arc<Fill>),
    /// No fill was running: this caller must start one (and should follow it too).
    Lead(FillGuard),
}

type Shard = Mutex<HashMap<ObjectKey, Arc<Fill>, ahash::RandomState>>;

pub struct FillTable {
    shards: Box<[Shard]>,
    hasher: ahash::RandomState,
}

impl Default for FillTable {
    fn default() -> Self {
        let hasher = ahash::RandomState::new();
        FillTable { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(hasher.clone()))).collect(), hasher }
    }
}

impl FillTable {
    fn shard(&self, key: &ObjectKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// The miss path: follow the key's fill, or find the object stored meanwhile, or lead a
    /// new fill. The leader's fill commits only if the key does not change after this moment
    /// (a PUT or a purge that lands while it fetches wins over it): the version is pinned
    /// before the store is checked, so no commit can slip between the two.
    pub fn join(self: &Arc<Self>, key: ObjectKeyRef<'_>, store: &Arc<Store>) -> Join {
        let owned = ObjectKey::new(key.bucket, key.key);
        let mut shard = self.shard(&owned).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fill) = shard.get(&owned) {
            return Join::Follow(fill.clone());
        }
        let pin = store.pin_version();
        if store.contains(key) {
            return Join::Stored;
        }
        Join::Lead(self.insert(&mut shard, owned, pin))
    }

    /// A forced re-fetch (purge with `refetch`): leads a fill even though the key is stored;
    /// the new copy replaces the old one when it commits, and the old one is served until then.
    /// `None` when a fill of the key is already running (it fetches afresh anyway).
    pub fn lead_refetch(self: &Arc<Self>, key: ObjectKeyRef<'_>, store: &Arc<Store>) -> Option<FillGuard> {
        let owned = ObjectKey::new(key.bucket, key.key);
        let mut shard = self.shard(&owned).lock().unwrap_or_else(|e| e.into_inner());
        if shard.contains_key(&owned) {
            return None;
        }
        let pin = store.pin_version();
        Some(self.insert(&mut shard, owned, pin))
    }

    fn insert(
        self: &Arc<Self>,
        shard: &mut HashMap<ObjectKey, Arc<Fill>, ahash::RandomState>,
        key: ObjectKey,
        pin: VersionPin,
    ) -> FillGuard {
        let (phase, _) = watch::channel(Phase::Fetching);
        let fill = Arc::new(Fill { key: key.clone(), phase, body: OnceLock::new() });
        shard.insert(key, fill.clone());
        FillGuard { table: self.clone(), fill, pin: Some(pin) }
    }

    /// Fills in flight (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, fill: &Arc<Fill>) {
        let mut shard = self.shard(&fill.key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.get(&fill.key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            shard.remove(&fill.key);
        }
    }
}

/// Owned by the task running a fill. Ending the fill (or dropping the guard, whatever the
/// reason) publishes a terminal phase and removes the fill from the table.
pub struct FillGuard {
    table: Arc<FillTable>,
    fill: Arc<Fill>,
    /// The store's version when the fill was decided; its record commits only if the key has
    /// not changed since.
    pin: Option<VersionPin>,
}

impl FillGuard {
    pub fn fill(&self) -> &Arc<Fill> {
        &self.fill
    }

    /// The rule the fill's record commits under (taken once, by the producer).
    pub fn commit_rule(&mut self) -> CommitRule {
        match self.pin.take() {
            Some(pin) => CommitRule::IfUnchangedSince(pin),
            None => CommitRule::LastWins,
        }
    }

    /// Ends the fill with `phase` (terminal) and removes it from the table.
    pub fn finish(self, phase: Phase) {
        self.fill.phase.send_replace(phase);
        // Drop removes it.
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if !self.fill.is_terminal() {
            self.fill.phase.send_replace(if self.fill.body.get().is_some() {
                Phase::Broken
            } else {
                Phase::Refused(Refusal::Failed("fill ended unexpectedly".into()))
            });
        }
        self.table.remove(&self.fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemirror_cache::{StoreConfig, SyncPolicy};

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            dir: dir.path().into(),
            segment_bytes: 4 << 20,
            lanes: 1,
            sync: SyncPolicy::Never,
            max_object_bytes: 1 << 30,
            max_bytes: 0,
            min_free_bytes: 0,
            compaction: edgemirror_cache::CompactionConfig::default(),
            evictable_buckets: Vec::new(),
        };
        let store = Store::open(cfg).unwrap().0;
        (dir, store)
    }

    #[test]
    fn second_joiner_follows_and_a_dropped_leader_leaves_no_stale_entry() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::default());
        let key = ObjectKeyRef::new("b", "k");
        let Join::Lead(guard) = table.join(key, &store) else { panic!("first caller leads") };
        let Join::Follow(fill) = table.join(key, &store) else { panic!("second caller follows") };
        let rx = fill.subscribe();
        drop(guard); // the fill task died
        assert!(matches!(*rx.borrow(), Phase::Refused(_)), "followers are told");
        assert!(table.is_empty());
        assert!(matches!(table.join(key, &store), Join::Lead(_)), "the next request starts afresh");
    }

    #[test]
    fn a_committed_object_is_found_in_the_store_not_refetched() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::default());
        let key = ObjectKeyRef::new("b", "k");
        let mut w =
            store.begin(0, key, RecordMeta::new(std::time::SystemTime::now()), Some(1), CommitRule::LastWins).unwrap();
        w.append(&Bytes::from_static(b"x")).unwrap();
        w.commit().unwrap();
        assert!(matches!(table.join(key, &store), Join::Stored));
    }
}
