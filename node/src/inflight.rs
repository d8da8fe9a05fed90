//! One origin fetch per object: the table of fills in flight, shared by every core.
//!
//! A miss joins the fill for its key if one is running (on any core) or starts one. The fill is
//! a task of its own on the core that started it (the producer, `fill.rs`); it owns the
//! origin connection and the store record and publishes its [`Phase`] through a `watch`
//! channel. Every client, the first one included, is a *follower* (`follow.rs`, a [`Follower`]
//! here): it waits for the response head, then reads the body through the fill's
//! [`BodySource`] at its own pace. A slow client only falls behind; it never slows the fetch or
//! the other clients, and it holds no more than one piece in memory. A client that leaves does
//! not stop the fill.
//!
//! # Where the body is read from
//!
//! Normally from the record being written ([`FillReader`]: the segment mapping, zero-copy).
//! When the store cannot take the object (`NoSpace`: the disk or the store is full, or the object
//! is larger than `store.max_object_bytes`) the fill is *unstored*: the producer keeps the
//! origin's pieces in a [`MemoryBody`] (the same refcounted `Bytes`, no copy) and followers read
//! them by offset. The store may refuse at the start (then every byte comes from memory), or in
//! the middle of the body when a write finds the disk full (then the bytes before that point are
//! read from the abandoned record, which stays readable while followers hold it, and the rest
//! from memory). A fill with a memory body is never stored.
//!
//! Memory of an unstored fill, the rule: every follower says which bytes it still needs
//! ([`Follower::need`]; a follower that has not chosen its range yet needs all of them). The
//! producer keeps the body from byte 0 while it fits in [`UnstoredLimits::fill_bytes`], so a
//! client that arrives mid-transfer still gets the whole object from this one fetch. Past that
//! (or when all unstored fills of the node together pass [`UnstoredLimits::node_bytes`]) it
//! drops the oldest pieces that no follower needs, and from the first drop on it drops every
//! piece as soon as no follower needs it. If the slowest follower still needs the oldest piece,
//! the producer stops reading the origin until that follower moves on or leaves (a stalled
//! client is cut by the write timeout): memory per fill stays under `fill_bytes` plus one origin
//! piece (plus the piece each follower is writing, and under the node limit each fill keeps
//! going one piece at a time), and the slowest client sets the pace, as
//! with a plain proxy. A fill that has dropped its first bytes can no longer serve a newcomer
//! from byte 0, so it leaves the table first: a later miss of the key starts its own fetch.
//!
//! Integrity: while streaming, followers hold back the last byte of a known-length body (and the
//! last chunk of a chunked one) until the fill has verified and committed the object (or, for an
//! unstored fill, verified it), so a failed check cuts every client short instead of completing
//! a bad body.
//!
//! Lifecycle: commit (the index entry is visible) -> phase `Complete` -> removal from the table.
//! A lookup that misses the table therefore finds the object in the store ([`FillTable::join`]
//! re-checks under the shard lock). A fill that ends any other way is removed too, by its
//! [`FillGuard`], even if its task dies: no stale entry keeps later requests waiting (the kind of
//! bug pingora#931 describes).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use edgemirror_cache::{CommitRule, FillReader, ObjectKey, ObjectKeyRef, RecordMeta, Store, VersionPin};
use tokio::sync::{watch, Notify};

use crate::metrics::OriginFetch;

const SHARDS: usize = 16;

/// A kept origin piece is charged at least this much: it may pin the whole read buffer it was
/// cut from (the origin body is read 64 KiB at a time, `origin.rs`), however few bytes it holds.
const PIECE_CHARGE_FLOOR: u64 = 64 << 10;

/// Where a fill is.
#[derive(Clone, Debug)]
pub enum Phase {
    /// Waiting for the origin's response head.
    Fetching,
    /// Head received; `written` body bytes are readable.
    Streaming { written: u64 },
    /// Every byte has arrived and passed the checks that need the bytes themselves (length, and
    /// the origin's Content-MD5 when it sent one); `written` is the size. Followers may send the
    /// last byte. The ETag digest and the commit are still running: the object is not yet
    /// visible in the store, so a follower that must read it from there waits on.
    Verified { written: u64 },
    /// The object is committed (or, for an unstored fill, verified); `written` is its size.
    Complete { written: u64 },
    /// The fetch ended before a response could start; answer with this.
    Refused(Refusal),
    /// The body broke mid-way or failed verification: clients are cut off.
    Broken,
}

impl Phase {
    /// Whether the fill has ended: committed, refused or broken.
    pub fn is_final(&self) -> bool {
        matches!(self, Phase::Complete { .. } | Phase::Refused(_) | Phase::Broken)
    }
}

/// Waits for a fill's final phase; `None` if the fill went away without one.
pub async fn final_phase(rx: &mut watch::Receiver<Phase>) -> Option<Phase> {
    loop {
        let now = rx.borrow_and_update().clone();
        if now.is_final() {
            return Some(now);
        }
        rx.changed().await.ok()?;
    }
}

#[derive(Clone, Debug)]
pub enum Refusal {
    /// Origin 404.
    NotFound,
    /// 424 MirrorFailed; the reason is for the log.
    Failed(String),
    /// 503: the shared store of record, the only place the key could be, did not answer; the
    /// reason is for the log.
    Unavailable(String),
    /// `followRedirects: false`: pass the origin's 3xx on.
    Redirect { status: u16, location: Bytes },
}

/// What followers need once the head is in.
pub struct FillBody {
    pub meta: RecordMeta,
    /// The origin's Content-Length, if it sent one.
    pub length: Option<u64>,
    pub source: BodySource,
    /// Set when the fill reads the shared store of record: the ETag of the version it holds,
    /// known before the bytes and sent with the head.
    pub shared_etag: Option<String>,
}

impl FillBody {
    /// A body read from the store record being written.
    pub fn recorded(meta: RecordMeta, length: Option<u64>, reader: FillReader) -> FillBody {
        FillBody {
            meta,
            length,
            source: BodySource { record: Some(reader), memory: OnceLock::new() },
            shared_etag: None,
        }
    }

    /// A body the store refused from the start: read from memory only.
    pub fn unstored(meta: RecordMeta, length: Option<u64>, memory: Arc<MemoryBody>) -> FillBody {
        FillBody {
            meta,
            length,
            source: BodySource { record: None, memory: OnceLock::from(memory) },
            shared_etag: None,
        }
    }

    /// Read from the shared store, whose version has this ETag.
    pub fn from_shared(mut self, etag: Option<String>) -> FillBody {
        self.shared_etag = etag;
        self
    }
}

/// Where a fill's body bytes are: the record being written, and/or memory once the store refused
/// the object (bytes from [`MemoryBody`]'s base on).
pub struct BodySource {
    record: Option<FillReader>,
    memory: OnceLock<Arc<MemoryBody>>,
}

/// A body read that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] edgemirror_cache::Error),
    /// The bytes were dropped from memory (a follower read what it had not claimed).
    #[error("body bytes from offset {pos} are no longer in memory")]
    Released { pos: u64 },
}

impl BodySource {
    /// Whether the object will not be stored (the store refused it, at the start or mid-body).
    pub fn is_unstored(&self) -> bool {
        self.memory.get().is_some()
    }

    /// Up to `max` body bytes from `pos`, or `None` when `pos` is not yet readable. Never joins
    /// pieces, so never copies.
    pub fn read(&self, pos: u64, max: usize) -> Result<Option<Bytes>, SourceError> {
        if let Some(memory) = self.memory.get() {
            if pos >= memory.base {
                return memory.read(pos, max);
            }
        }
        // Below the memory's base the record holds the bytes (it stops there when the disk
        // filled up mid-body).
        match &self.record {
            Some(reader) => Ok(reader.read(pos, max)?),
            None => Ok(None),
        }
    }
}

/// How much unstored fills may keep in memory (see the module's rule).
#[derive(Clone, Copy, Debug)]
pub struct UnstoredLimits {
    /// Kept per fill: the whole body while it fits (late joiners), else the followers' lag.
    pub fill_bytes: u64,
    /// Kept by all unstored fills of the node together; past it every fill keeps only what its
    /// followers still need.
    pub node_bytes: u64,
}

impl Default for UnstoredLimits {
    fn default() -> Self {
        // 16 MiB a fill: a few socket buffers' worth of slack between the origin and the slowest
        // client, and most objects whole for late joiners. 256 MiB a node: as much as the default
        // memory tier, so a full disk under load cannot take the node's memory.
        UnstoredLimits { fill_bytes: 16 << 20, node_bytes: 256 << 20 }
    }
}

/// The origin pieces of an unstored fill, by body offset, from `base` on.
pub struct MemoryBody {
    /// Body offset of the first byte that went to memory (the record holds those before it).
    base: u64,
    kept: Mutex<Kept>,
    /// Bytes kept by every unstored fill of the node (the table's count).
    node_bytes: Arc<AtomicU64>,
}

struct Kept {
    /// `(body offset, piece)`, contiguous, oldest first.
    pieces: VecDeque<(u64, Bytes)>,
    /// Body offset of the first kept byte (`end` when nothing is kept).
    start: u64,
    end: u64,
    /// What the kept pieces are charged ([`PIECE_CHARGE_FLOOR`]).
    charged: u64,
    /// A piece was dropped: the body can no longer be served from byte 0.
    dropped_any: bool,
}

fn charge(piece: &Bytes) -> u64 {
    (piece.len() as u64).max(PIECE_CHARGE_FLOOR)
}

impl MemoryBody {
    fn new(base: u64, node_bytes: Arc<AtomicU64>) -> MemoryBody {
        let kept = Kept { pieces: VecDeque::new(), start: base, end: base, charged: 0, dropped_any: false };
        MemoryBody { base, kept: Mutex::new(kept), node_bytes }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the next origin piece (the producer only).
    pub fn push(&self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        let mut kept = self.kept();
        let c = charge(&piece);
        kept.charged += c;
        self.node_bytes.fetch_add(c, Ordering::Relaxed);
        let at = kept.end;
        kept.end += piece.len() as u64;
        kept.pieces.push_back((at, piece));
    }

    /// Body bytes that reached memory, counted from byte 0 of the body.
    pub fn end(&self) -> u64 {
        self.kept().end
    }

    /// What the kept pieces are charged (for tests and the producer's log).
    pub fn charged(&self) -> u64 {
        self.kept().charged
    }

    fn read(&self, pos: u64, max: usize) -> Result<Option<Bytes>, SourceError> {
        let kept = self.kept();
        if pos >= kept.end || max == 0 {
            return Ok(None);
        }
        if pos < kept.start {
            return Err(SourceError::Released { pos });
        }
        // The last piece starting at or before `pos`.
        let i = kept.pieces.partition_point(|(at, _)| *at <= pos) - 1;
        let (at, piece) = &kept.pieces[i];
        let from = (pos - at) as usize;
        let to = piece.len().min(from.saturating_add(max));
        Ok(Some(piece.slice(from..to)))
    }

    /// Whether some of `range` was dropped already.
    fn lost(&self, range: &Range<u64>) -> bool {
        let kept = self.kept();
        range.start.max(self.base) < range.end.min(kept.start)
    }
}

impl Drop for MemoryBody {
    fn drop(&mut self) {
        let charged = self.kept.get_mut().unwrap_or_else(|e| e.into_inner()).charged;
        self.node_bytes.fetch_sub(charged, Ordering::Relaxed);
    }
}

pub struct Fill {
    pub key: ObjectKey,
    phase: watch::Sender<Phase>,
    body: OnceLock<FillBody>,
    /// The exchange with the origin, once it has answered (or failed): every client's access
    /// log line names it.
    origin: OnceLock<OriginFetch>,
    /// What each follower still needs, by slot (`None`: a free slot).
    needs: Mutex<Vec<Option<Range<u64>>>>,
    /// Rung when a follower moves on or leaves: the producer of an unstored fill may be waiting
    /// for its oldest piece to be read.
    moved: Notify,
}

impl Fill {
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Whether the fill has all of its body and is only finishing its digest and commit
    /// ([`Phase::Verified`]). A request that finds the key in that state waits for the end
    /// ([`Fill::ended`]) and looks again (`object.rs`): once a client has a whole body, the next
    /// request must see the outcome in the store (read after write), whatever the digest takes.
    pub fn is_verified(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Verified { .. })
    }

    /// Waits until the fill has ended (it has left the table of fills by then).
    pub async fn ended(&self) {
        final_phase(&mut self.phase.subscribe()).await;
    }

    /// Joins the fill as a client: its phase, and a claim on every body byte until the client
    /// says which it needs ([`Follower::need`]).
    pub fn follow(self: &Arc<Self>) -> Follower {
        let rx = self.phase.subscribe();
        let mut needs = self.needs();
        let all = Some(0..u64::MAX);
        let slot = match needs.iter().position(Option::is_none) {
            Some(i) => {
                needs[i] = all;
                i
            }
            None => {
                needs.push(all);
                needs.len() - 1
            }
        };
        drop(needs);
        Follower { fill: self.clone(), slot, rx }
    }

    pub fn body(&self) -> Option<&FillBody> {
        self.body.get()
    }

    pub fn origin(&self) -> Option<&OriginFetch> {
        self.origin.get()
    }

    pub fn set_origin(&self, fetch: OriginFetch) {
        let _ = self.origin.set(fetch);
    }

    /// Clients following this fill right now.
    pub fn followers(&self) -> usize {
        self.phase.receiver_count()
    }

    pub fn set_body(&self, body: FillBody) {
        let _ = self.body.set(body);
        self.phase.send_replace(Phase::Streaming { written: 0 });
    }

    /// Body bytes readable so far.
    pub fn written(&self) -> u64 {
        match *self.phase.borrow() {
            Phase::Streaming { written } | Phase::Verified { written } | Phase::Complete { written } => written,
            _ => 0,
        }
    }

    pub fn set_written(&self, written: u64) {
        self.phase.send_replace(Phase::Streaming { written });
    }

    /// The whole body is here and checked (see [`Phase::Verified`]).
    pub fn set_verified(&self, written: u64) {
        self.phase.send_replace(Phase::Verified { written });
    }

    fn needs(&self) -> MutexGuard<'_, Vec<Option<Range<u64>>>> {
        self.needs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_terminal(&self) -> bool {
        self.phase.borrow().is_final()
    }
}

/// One client of a fill: its view of the phase and its claim on the body's bytes. Dropping it
/// gives the claim back (and wakes a producer waiting for room).
pub struct Follower {
    fill: Arc<Fill>,
    slot: usize,
    rx: watch::Receiver<Phase>,
}

impl Follower {
    /// The fill's phase now (marking it seen).
    pub fn phase(&mut self) -> Phase {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for the next phase change; false if the fill is gone.
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }

    /// From now on this client needs the body bytes `range` (empty: none). False when some of
    /// them were already dropped from memory (it joined an unstored fill too late); the claim
    /// is then unchanged. Called before the head goes out, and again as the client moves on.
    pub fn need(&self, range: Range<u64>) -> bool {
        let mut needs = self.fill.needs();
        if let Some(memory) = self.fill.body().and_then(|b| b.source.memory.get()) {
            if memory.lost(&range) {
                return false;
            }
        }
        needs[self.slot] = Some(range);
        drop(needs);
        self.fill.moved.notify_one();
        true
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.fill.needs()[self.slot] = None;
        self.fill.moved.notify_one();
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
    limits: UnstoredLimits,
    /// Bytes kept in memory by the unstored fills of every core.
    unstored_bytes: Arc<AtomicU64>,
}

impl Default for FillTable {
    fn default() -> Self {
        FillTable::with_limits(UnstoredLimits::default())
    }
}

impl FillTable {
    pub fn with_limits(limits: UnstoredLimits) -> FillTable {
        let hasher = ahash::RandomState::new();
        FillTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(hasher.clone()))).collect(),
            hasher,
            limits,
            unstored_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes the unstored fills of the node keep in memory now.
    pub fn unstored_bytes(&self) -> u64 {
        self.unstored_bytes.load(Ordering::Relaxed)
    }

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

    /// The fill of `key` in flight, if any (joins nothing, leads nothing).
    pub fn in_flight(&self, key: ObjectKeyRef<'_>) -> Option<Arc<Fill>> {
        let owned = ObjectKey::new(key.bucket, key.key);
        self.shard(&owned).lock().unwrap_or_else(|e| e.into_inner()).get(&owned).cloned()
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
        let fill = Arc::new(Fill {
            key: key.clone(),
            phase,
            body: OnceLock::new(),
            origin: OnceLock::new(),
            needs: Mutex::new(Vec::new()),
            moved: Notify::new(),
        });
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

    /// Clients following a fill right now, across every fill (leaders included).
    pub fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).values().map(|f| f.followers()).sum::<usize>())
            .sum()
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

    /// A memory body for a fill the store refused at its start (give it to
    /// [`FillBody::unstored`]).
    pub fn memory_body(&self) -> Arc<MemoryBody> {
        Arc::new(MemoryBody::new(0, self.table.unstored_bytes.clone()))
    }

    /// The store refused the object after `base` body bytes went to the record (the disk filled
    /// up mid-body, or the commit found no room): the rest of the body goes to memory, and the
    /// fill is unstored from now on. `None` if the fill has no body yet (a bug of the caller).
    pub fn spill_to_memory(&self, base: u64) -> Option<Arc<MemoryBody>> {
        let body = self.fill.body()?;
        let memory =
            body.source.memory.get_or_init(|| Arc::new(MemoryBody::new(base, self.table.unstored_bytes.clone())));
        Some(memory.clone())
    }

    /// Called by the producer of an unstored fill before it keeps each piece: drops what the
    /// rule allows and returns once there is room for the piece (waiting, if need be, for the
    /// slowest follower to move on or leave). Every kept byte is readable when this waits, so a
    /// follower it waits for is sending, never waiting for the producer.
    pub async fn make_room(&self, memory: &MemoryBody) {
        loop {
            // Armed before the check: a follower moving on in between leaves a permit.
            let moved = self.fill.moved.notified();
            if self.drop_unneeded(memory) {
                return;
            }
            moved.await;
        }
    }

    /// Drops the oldest pieces no follower needs, when the rule says to; true when the fill may
    /// read its next piece.
    fn drop_unneeded(&self, memory: &MemoryBody) -> bool {
        let limits = self.table.limits;
        let node_full = || self.table.unstored_bytes() > limits.node_bytes;
        // Lock order: needs, then kept (as in `Follower::need`).
        let needs = self.fill.needs();
        let mut kept = memory.kept();
        if kept.dropped_any || kept.charged > limits.fill_bytes || node_full() {
            while let Some((at, piece)) = kept.pieces.front() {
                let (from, to, c) = (*at, *at + piece.len() as u64, charge(piece));
                if needs.iter().flatten().any(|r| r.start < to && from < r.end) {
                    break;
                }
                if !kept.dropped_any {
                    // From now on a newcomer could not get byte 0 here: it must not join.
                    self.table.remove(&self.fill);
                    kept.dropped_any = true;
                }
                kept.pieces.pop_front();
                kept.charged -= c;
                kept.start = to;
                self.table.unstored_bytes.fetch_sub(c, Ordering::Relaxed);
            }
        }
        kept.charged <= limits.fill_bytes && (kept.charged == 0 || !node_full())
    }

    /// Ends the fill with `phase` (terminal) and removes it from the table. The removal comes
    /// first: a request woken by the final phase that looks the key up again finds the store's
    /// answer (stored, or a new fill to lead), never this ended fill.
    pub fn finish(self, phase: Phase) {
        self.table.remove(&self.fill);
        self.fill.phase.send_replace(phase);
        // Drop finds it removed already.
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
    use edgemirror_cache::StoreConfig;

    /// An empty store in a temporary directory.
    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig { segment_bytes: 4 << 20, ..StoreConfig::new(dir.path()) };
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

    fn meta() -> RecordMeta {
        RecordMeta::new(std::time::SystemTime::now())
    }

    /// A 64 KiB piece (charged exactly its size) filled with `n`.
    fn piece(n: u8) -> Bytes {
        Bytes::from(vec![n; PIECE_CHARGE_FLOOR as usize])
    }

    const P: u64 = PIECE_CHARGE_FLOOR;

    /// An unstored fill of `len` bytes led in `table`.
    fn unstored(table: &Arc<FillTable>, store: &Arc<Store>, key: &str, len: u64) -> (FillGuard, Arc<MemoryBody>) {
        let Join::Lead(guard) = table.join(ObjectKeyRef::new("b", key), store) else { panic!("leads") };
        let memory = guard.memory_body();
        guard.fill().set_body(FillBody::unstored(meta(), Some(len), memory.clone()));
        (guard, memory)
    }

    #[test]
    fn a_memory_body_is_read_by_offset_one_piece_at_a_time() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::default());
        let (guard, memory) = unstored(&table, &store, "k", 10);
        memory.push(Bytes::from_static(b"hello"));
        memory.push(Bytes::from_static(b"world"));
        let source = &guard.fill().body().unwrap().source;
        assert!(source.is_unstored());
        let read = |pos, max| source.read(pos, max).unwrap().map(|b| b.to_vec());
        assert_eq!(read(0, 100), Some(b"hello".to_vec()), "never joins pieces");
        assert_eq!(read(3, 100), Some(b"lo".to_vec()));
        assert_eq!(read(5, 3), Some(b"wor".to_vec()));
        assert_eq!(read(9, 3), Some(b"d".to_vec()));
        assert_eq!(read(10, 1), None, "not written yet");
        assert_eq!(table.unstored_bytes(), 2 * P, "each piece is charged at least the floor");
        drop(guard);
        drop(memory);
        assert_eq!(table.unstored_bytes(), 0, "a dropped memory body gives its bytes back");
    }

    /// The memory rule of an unstored fill, step by step: the whole body is kept while it fits
    /// (a late joiner gets it from byte 0); past the budget the oldest pieces no follower needs
    /// are dropped, the fill leaves the table at the first drop (a newcomer would miss byte 0),
    /// and the producer must wait while the slowest follower still needs the oldest piece.
    #[test]
    fn an_unstored_fill_keeps_its_body_for_late_joiners_then_only_what_followers_need() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::with_limits(UnstoredLimits { fill_bytes: 4 * P, node_bytes: 1 << 30 }));
        let len = 10 * P;
        let (guard, memory) = unstored(&table, &store, "k", len);
        let fill = guard.fill().clone();
        let a = fill.follow();
        assert!(a.need(0..len));
        for n in 0..4 {
            assert!(guard.drop_unneeded(&memory), "room while the body fits the budget");
            memory.push(piece(n));
        }
        // A late joiner still finds the fill and gets byte 0.
        let Join::Follow(same) = table.join(ObjectKeyRef::new("b", "k"), &store) else { panic!("joins") };
        assert!(Arc::ptr_eq(&same, &fill));
        let b = same.follow();
        assert!(b.need(0..len));
        assert!(guard.drop_unneeded(&memory));
        memory.push(piece(4));
        assert_eq!(memory.charged(), 5 * P);

        // Over budget, and both followers still need piece 0: the producer must wait.
        assert!(!guard.drop_unneeded(&memory));
        assert_eq!(table.len(), 1, "nothing dropped: still joinable");

        // Both move past piece 0: it goes, and the fill leaves the table first.
        assert!(a.need(2 * P..len));
        assert!(b.need(P..len));
        assert!(guard.drop_unneeded(&memory));
        assert_eq!(memory.charged(), 4 * P);
        assert!(table.is_empty(), "a fill missing byte 0 takes no newcomers");
        let Join::Lead(next) = table.join(ObjectKeyRef::new("b", "k"), &store) else { panic!("a new fetch") };
        drop(next);

        // A client that got the fill just before it left cannot have byte 0: refused up front.
        let c = fill.follow();
        assert!(!c.need(0..len), "bytes already dropped must be refused, not cut later");
        assert!(c.need(P..len));
        assert!(matches!(fill.body().unwrap().source.read(0, 1), Err(SourceError::Released { pos: 0 })));
        drop(c);

        // After the first drop, every piece goes as soon as nobody needs it.
        assert!(b.need(2 * P..len));
        assert!(guard.drop_unneeded(&memory));
        assert_eq!(memory.charged(), 3 * P);
        // A range a follower will never read (it is done) pins nothing.
        assert!(a.need(len..len));
        assert!(b.need(0..0));
        assert!(guard.drop_unneeded(&memory));
        assert_eq!(memory.charged(), 0);
        assert_eq!(table.unstored_bytes(), 0);
    }

    #[test]
    fn past_the_node_limit_a_fill_keeps_only_what_its_followers_need() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::with_limits(UnstoredLimits { fill_bytes: 100 * P, node_bytes: 3 * P }));
        let (g1, m1) = unstored(&table, &store, "one", 100 * P);
        let (g2, m2) = unstored(&table, &store, "two", 100 * P);
        let f1 = g1.fill().follow();
        let f2 = g2.fill().follow();
        // Fill two holds two pieces its (idle) follower still needs.
        for _ in 0..2 {
            assert!(g2.drop_unneeded(&m2));
            m2.push(piece(9));
        }
        for n in 0..2 {
            assert!(g1.drop_unneeded(&m1));
            m1.push(piece(n));
        }
        assert_eq!(table.unstored_bytes(), 4 * P);
        // The node is over its limit: fill one waits for its follower, although it is far
        // under its own budget...
        assert!(!g1.drop_unneeded(&m1));
        // ... and drops each piece its follower has read.
        assert!(f1.need(P..100 * P));
        assert!(g1.drop_unneeded(&m1), "back under the node limit");
        assert_eq!(m1.charged(), P);
        m1.push(piece(2));
        assert!(!g1.drop_unneeded(&m1), "over again, and both pieces are still needed");
        assert!(f1.need(3 * P..100 * P));
        assert!(g1.drop_unneeded(&m1));
        assert_eq!(m1.charged(), 0, "pieces nobody needs are not kept for late joiners under pressure");
        drop((f1, f2));
    }

    /// The producer of an unstored fill waits for its slowest follower, and is woken by it
    /// moving on (from any thread) or leaving.
    #[test]
    fn make_room_waits_for_the_slowest_follower_and_wakes_when_it_moves_or_leaves() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::with_limits(UnstoredLimits { fill_bytes: 2 * P, node_bytes: 1 << 30 }));
        let (guard, memory) = unstored(&table, &store, "k", 10 * P);
        let follower = guard.fill().follow();
        for n in 0..3 {
            memory.push(piece(n));
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            let done = std::rc::Rc::new(std::cell::Cell::new(false));
            let flag = done.clone();
            let memory2 = memory.clone();
            let waiter = monoio::spawn(async move {
                guard.make_room(&memory2).await;
                flag.set(true);
                guard
            });
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(!done.get(), "room was made although the follower needs every piece");
            // Moving on from another thread wakes the producer.
            let follower = std::thread::spawn(move || {
                assert!(follower.need(P..10 * P));
                follower
            })
            .join()
            .unwrap();
            let guard = monoio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken");
            assert!(done.get());
            assert_eq!(memory.charged(), 2 * P);

            // Leaving wakes it too.
            memory.push(piece(3));
            done.set(false);
            let flag = done.clone();
            let memory2 = memory.clone();
            let waiter = monoio::spawn(async move {
                guard.make_room(&memory2).await;
                flag.set(true);
            });
            monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(!done.get());
            drop(follower);
            monoio::time::timeout(std::time::Duration::from_secs(5), waiter).await.expect("woken by the leaver");
            assert_eq!(memory.charged(), 0, "nobody needs anything");
        });
    }

    #[test]
    fn a_disk_full_mid_body_spills_the_rest_to_memory_after_the_record() {
        let (_d, store) = store();
        let table = Arc::new(FillTable::default());
        let key = ObjectKeyRef::new("b", "spill");
        let Join::Lead(mut guard) = table.join(key, &store) else { panic!("leads") };
        let rule = guard.commit_rule();
        let mut w = store.begin(0, key, meta(), Some(10), rule).unwrap();
        guard.fill().set_body(FillBody::recorded(meta(), Some(10), w.reader()));
        let follower = guard.fill().follow();
        assert!(follower.need(0..10));
        w.append(&Bytes::from_static(b"abcd")).unwrap();
        let base = w.written();
        drop(w); // the store refused the next piece: the record is abandoned
        let source = &guard.fill().body().unwrap().source;
        assert!(!source.is_unstored());
        let memory = guard.spill_to_memory(base).unwrap();
        assert!(source.is_unstored());
        assert!(guard.drop_unneeded(&memory));
        memory.push(Bytes::from_static(b"efghij"));
        assert_eq!(memory.end(), 10);
        let read = |pos| source.read(pos, 100).unwrap().map(|b| b.to_vec());
        assert_eq!(read(0), Some(b"abcd".to_vec()), "the record's bytes, read after it was abandoned");
        assert_eq!(read(4), Some(b"efghij".to_vec()));
        assert_eq!(read(10), None);
        assert!(!store.contains(key), "nothing partial is visible");
    }

    #[test]
    fn a_verified_fill_is_waited_for_and_has_left_the_table_when_it_ends() {
        let (_dir, store) = store();
        let table = Arc::new(FillTable::default());
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async {
            // The commit lands after a while (a big body's digest): the request waits for it.
            let key = ObjectKeyRef::new("b", "slow");
            let Join::Lead(guard) = table.join(key, &store) else { panic!("leads") };
            guard.fill().set_verified(10);
            let fill = guard.fill().clone();
            assert!(fill.is_verified());
            let started = std::time::Instant::now();
            monoio::spawn(async move {
                monoio::time::sleep(std::time::Duration::from_millis(200)).await;
                guard.finish(Phase::Complete { written: 10 });
            });
            fill.ended().await;
            assert!(started.elapsed() >= std::time::Duration::from_millis(200), "it waited for the end");
            // Looking again finds no ended fill: the next request decides afresh.
            assert!(table.in_flight(key).is_none());
        });
    }
}
