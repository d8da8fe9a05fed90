//! Backfill jobs: the final import of a migration. `POST .../buckets/{bucket}/backfill` starts
//! one; `GET` reports it; `DELETE` cancels it. One job per bucket at a time. The keys come from:
//! - `{"keys": [...]}`: the request;
//! - `{"keysUrl": "http://..."}`: a text file of keys, one per line, fetched by the node;
//! - `{"listOrigin": true}`: the ListObjectsV2 listing (every page) of the bucket's private S3
//!   origin (a rule with `address.s3`, no key rewrite), under the rule's key prefix. With
//!   `"verify": true` each key's stored size and ETag are then compared with the listing's, and
//!   a mismatch is a failure. (Multipart ETags, `-N`, compare by size only.)
//!
//! `"concurrency"` (1-64, default 8) bounds the fetches in flight, and `"maxBytesPerSec"` the
//! bytes a second the job reads from the origin (its own cap, on top of the origin's), so live
//! traffic keeps priority.
//!
//! Each key is handled as a GET miss would be: skipped if stored; otherwise fetched through the
//! bucket's mirror rules (same rule, key rewrite and header rules; the fill table coalesces it
//! with live misses of the same key), at most `concurrency` at a time. A key the origin fails
//! on (unreachable, 5xx, a broken body) is tried [`ATTEMPTS`] times with a growing pause; a 404,
//! or a key no rule matches, fails at once. Failed keys are listed with their reason.
//!
//! The job runs on the admin thread. Its checkpoint, `store.dir/backfill/{bucket}.json`
//! (replaced atomically), holds the keys, the low-water mark (every key below it is finished)
//! and the counts; it is written every [`CHECKPOINT_EVERY`] keys and at the end. At start the
//! node resumes every job its checkpoint says was running, from the low-water mark: keys past it
//! that had finished are stored, so they are skipped, not fetched again.
//!
//! States: `running`, then `complete` (every key is stored: cut-over is safe),
//! `complete_with_failures`, or `cancelled`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgemirror_cache::ObjectKeyRef;
use serde::{Deserialize, Serialize};
use serde_json::json;

use edgemirror_proto as proto;

use super::Answer;
use crate::inflight::{self, Join, Phase, Refusal};
use crate::worker::Worker;
use crate::{fill, mirror, rules};

/// Tries per key when the origin fails.
pub const ATTEMPTS: u32 = 3;
/// Pause before the second try (doubled before each further one).
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Keys finished between two checkpoints.
const CHECKPOINT_EVERY: usize = 64;
/// Fetches a job runs at once unless it asks otherwise, and the most it may ask for.
const DEFAULT_CONCURRENCY: usize = 8;
const MAX_CONCURRENCY: usize = 64;
/// Failures the status lists (all are counted).
const LISTED_FAILURES: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StartBody {
    keys: Option<Vec<String>>,
    keys_url: Option<String>,
    #[serde(default)]
    list_origin: bool,
    #[serde(default)]
    verify: bool,
    concurrency: Option<usize>,
    /// The job's own cap on the bytes a second it reads from the origin (0: none).
    #[serde(default)]
    max_bytes_per_sec: u64,
}

/// Where a job's keys come from, until it has them.
enum Source {
    Url(String),
    Origin,
}

/// Most bytes of a `keysUrl` file.
const MAX_KEY_LIST_BYTES: usize = 256 << 20;

/// A job's lasting state: its checkpoint file.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Checkpoint {
    bucket: String,
    keys: Vec<String>,
    /// With `verify`: the origin listing's (size, ETag) of each key, in `keys` order.
    #[serde(default)]
    expected: Vec<(u64, String)>,
    concurrency: usize,
    /// The job's byte-rate cap (0: none): live traffic keeps the rest of the origin's capacity.
    #[serde(default)]
    max_bytes_per_sec: u64,
    /// `listing` (gathering its keys), `running`, `complete`, `complete_with_failures`,
    /// `cancelled`, or `failed` (no keys could be gathered, the node stopped while they were, or
    /// the job's task panicked).
    state: String,
    /// Every key below this index is finished.
    low_water: usize,
    done: u64,
    skipped: u64,
    bytes: u64,
    failures: Vec<(String, String)>,
    started_unix: u64,
    finished_unix: Option<u64>,
}

impl Checkpoint {
    /// Listing its keys or fetching them: the job is not over.
    fn in_progress(&self) -> bool {
        matches!(self.state.as_str(), "listing" | "running")
    }

    /// Ends the job `failed`: `what` (a step, in parentheses) went wrong for `reason`.
    fn fail(&mut self, what: &str, reason: String) {
        self.failures.push((what.into(), reason));
        self.state = "failed".into();
        self.finished_unix = Some(unix_now());
    }
}

struct Job {
    checkpoint: RefCell<Checkpoint>,
    /// Keys finished at or past the low-water mark.
    finished_above: RefCell<BTreeSet<usize>>,
    since_checkpoint: Cell<usize>,
    cancelled: Cell<bool>,
    path: PathBuf,
    /// The job's byte-rate cap, shared by its fetches.
    pacer: Option<std::sync::Arc<crate::protect::Pacer>>,
}

thread_local! {
    /// The jobs of this node, by bucket. They live on the admin thread, where every admin
    /// request and every job runs.
    static JOBS: RefCell<HashMap<String, Rc<Job>>> = RefCell::new(HashMap::new());
}

fn dir(worker: &Worker) -> PathBuf {
    worker.config().store.dir.join("backfill")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `POST|GET|DELETE .../buckets/{bucket}/backfill`.
pub fn handle(worker: &Rc<Worker>, id: &str, bucket: &str, method: proto::Method, body: &[u8]) -> Answer {
    let job = JOBS.with(|jobs| jobs.borrow().get(bucket).cloned());
    match method {
        proto::Method::Get => match job {
            Some(job) => Answer::json(200, json!({"requestId": id, "result": status(&job)})),
            None => Answer::error(404, id, "no backfill job for this bucket"),
        },
        proto::Method::Delete => match job {
            Some(job) => {
                job.cancelled.set(true);
                Answer::json(200, json!({"requestId": id, "result": status(&job)}))
            }
            None => Answer::error(404, id, "no backfill job for this bucket"),
        },
        proto::Method::Post => {
            if job.is_some_and(|j| j.checkpoint.borrow().in_progress()) {
                return Answer::error(409, id, "a backfill job is running for this bucket: DELETE it first");
            }
            let start: StartBody =
                match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
                    Ok(b) => b,
                    Err(e) => return Answer::error(400, id, &format!("{}: {}", e.path(), e.inner())),
                };
            let source = match (&start.keys, &start.keys_url, start.list_origin) {
                (Some(keys), None, false) => {
                    if keys.is_empty() {
                        return Answer::error(400, id, "keys: give at least one key");
                    }
                    if let Some((i, _)) =
                        keys.iter().enumerate().find(|(_, k)| ObjectKeyRef::new(bucket, k).validate().is_err())
                    {
                        return Answer::error(400, id, &format!("keys[{i}]: not a valid object key (1-1024 bytes)"));
                    }
                    None
                }
                (None, Some(url), false) => Some(Source::Url(url.clone())),
                (None, None, true) => Some(Source::Origin),
                _ => return Answer::error(400, id, "give exactly one of keys, keysUrl and listOrigin"),
            };
            if start.verify && !start.list_origin {
                return Answer::error(400, id, "verify: needs listOrigin (the listing says what to expect)");
            }
            let concurrency = start.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                return Answer::error(400, id, &format!("concurrency: from 1 to {MAX_CONCURRENCY}"));
            }
            let checkpoint = Checkpoint {
                bucket: bucket.to_string(),
                keys: start.keys.unwrap_or_default(),
                expected: Vec::new(),
                concurrency,
                max_bytes_per_sec: start.max_bytes_per_sec,
                state: if source.is_some() { "listing" } else { "running" }.into(),
                low_water: 0,
                done: 0,
                skipped: 0,
                bytes: 0,
                failures: Vec::new(),
                started_unix: unix_now(),
                finished_unix: None,
            };
            let job = launch(worker, checkpoint, source.map(|s| (s, start.verify)));
            if let Err(e) = save(&job) {
                tracing::error!(bucket, error = %e, "cannot write the backfill checkpoint");
                return Answer::error(500, id, &format!("cannot write the backfill checkpoint: {e}"));
            }
            tracing::info!(
                request_id = id,
                bucket,
                keys = job.checkpoint.borrow().keys.len(),
                concurrency,
                "backfill started"
            );
            Answer::json(202, json!({"requestId": id, "result": status(&job)}))
        }
        _ => Answer::error(405, id, "use POST, GET or DELETE"),
    }
}

/// Resumes every job the checkpoints in `store.dir/backfill` say was running (at start).
pub fn resume_all(worker: &Rc<Worker>) {
    let Ok(entries) = std::fs::read_dir(dir(worker)) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let mut checkpoint: Checkpoint = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable backfill checkpoint ignored");
                continue;
            }
            Err(_) => continue,
        };
        let bucket = checkpoint.bucket.clone();
        if checkpoint.state == "running" {
            tracing::info!(bucket, from_key = checkpoint.low_water, "backfill resumed from its checkpoint");
            launch(worker, checkpoint, None);
            continue;
        }
        // Stopped while gathering its keys, which are not in the checkpoint: it cannot go on,
        // and must not stay "listing" (reported running, refusing a new job) for ever.
        let stopped_listing = checkpoint.state == "listing";
        if stopped_listing {
            checkpoint.fail("(listing)", "the node stopped while the keys were gathered; start the job again".into());
            tracing::warn!(bucket, "a backfill stopped while listing its keys is marked failed");
        }
        // A finished job stays reportable.
        let job = Rc::new(new_job(worker, checkpoint));
        if stopped_listing {
            save_logged(&job);
        }
        JOBS.with(|jobs| jobs.borrow_mut().insert(bucket, job));
    }
}

fn new_job(worker: &Worker, checkpoint: Checkpoint) -> Job {
    let path = checkpoint_path(&dir(worker), &checkpoint.bucket);
    let paced_ms = worker.shared.pacers.paced_ms.clone();
    let pacer = (checkpoint.max_bytes_per_sec > 0)
        .then(|| std::sync::Arc::new(crate::protect::Pacer::new(checkpoint.max_bytes_per_sec, paced_ms)));
    Job {
        pacer,
        checkpoint: RefCell::new(checkpoint),
        finished_above: RefCell::new(BTreeSet::new()),
        since_checkpoint: Cell::new(0),
        cancelled: Cell::new(false),
        path,
    }
}

fn checkpoint_path(dir: &Path, bucket: &str) -> PathBuf {
    // Bucket names are DNS-like (a-z, 0-9, '-', '.'): safe as a file name.
    dir.join(format!("{bucket}.json"))
}

/// Registers `checkpoint` as the bucket's job and starts it: first gathering its keys from
/// `source` (with whether to verify them), then running it.
fn launch(worker: &Rc<Worker>, checkpoint: Checkpoint, source: Option<(Source, bool)>) -> Rc<Job> {
    let bucket = checkpoint.bucket.clone();
    let job = Rc::new(new_job(worker, checkpoint));
    JOBS.with(|jobs| jobs.borrow_mut().insert(bucket, job.clone()));
    let (owned, running) = (worker.clone(), job.clone());
    crate::task::spawn(worker, "backfill job", async move {
        let worker = owned;
        let _unfinished = Unfinished(running.clone());
        if let Some((source, verify)) = source {
            gather(&worker, &running, source, verify).await;
            if running.checkpoint.borrow().state != "running" {
                return;
            }
        }
        run(worker, running).await
    });
    job
}

/// Ends a job that is still listing or running when its task ends without finishing it (a panic
/// the task contained): `failed`, saying so, and checkpointed. Otherwise the job would stay
/// `running` for ever, and the bucket could not start another without a restart.
struct Unfinished(Rc<Job>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        // Only a panic: a runtime dropped at shutdown must leave the job to resume at the next
        // start, not mark it failed.
        if !std::thread::panicking() {
            return;
        }
        let Ok(mut c) = self.0.checkpoint.try_borrow_mut() else { return };
        if !c.in_progress() {
            return;
        }
        c.fail("(job)", "the backfill task panicked (a bug: see the log)".into());
        tracing::error!(bucket = c.bucket, "backfill ended by a panic");
        drop(c);
        save_logged(&self.0);
    }
}

/// A key a fetcher has taken: recorded as failed if the fetcher ends before it records how the
/// key went (a panic its task contained), so the job's low-water mark and counts move on.
struct Claim<'a> {
    job: &'a Job,
    index: usize,
    key: &'a str,
    recorded: bool,
}

impl Claim<'_> {
    fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        record(self.job, self.index, self.key, outcome);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Only a panic (see `Unfinished`).
        if !self.recorded && std::thread::panicking() && self.job.checkpoint.try_borrow_mut().is_ok() {
            record(self.job, self.index, self.key, Outcome::Failed("the fetch panicked (a bug: see the log)".into()));
        }
    }
}

/// Gathers a job's keys from `source`; the job is `running` after, or `failed` saying why.
async fn gather(worker: &Worker, job: &Job, source: Source, verify: bool) {
    let bucket = job.checkpoint.borrow().bucket.clone();
    let gathered = match source {
        Source::Url(url) => keys_from_url(worker, &url).await.map(|keys| (keys, Vec::new())),
        Source::Origin => keys_from_origin(worker, &bucket).await,
    };
    {
        let mut c = job.checkpoint.borrow_mut();
        match gathered {
            Ok((keys, expected)) => {
                tracing::info!(bucket, keys = keys.len(), "backfill keys gathered");
                c.keys = keys;
                c.expected = if verify { expected } else { Vec::new() };
                c.state = "running".into();
            }
            Err(reason) => {
                tracing::warn!(bucket, reason, "backfill could not gather its keys");
                c.fail("(listing)", reason);
            }
        }
    }
    save_logged(job);
}

/// The keys of a `keysUrl` text file, one per line.
async fn keys_from_url(worker: &Worker, url: &str) -> Result<Vec<String>, String> {
    let origin = rules::parse_mirror_url(url).map_err(|e| format!("keysUrl: {e}"))?;
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
    let text = fetch_text(worker, &origin, path).await.map_err(|e| format!("keysUrl {url}: {e}"))?;
    let keys: Vec<String> = text.lines().map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
    if keys.is_empty() {
        return Err(format!("keysUrl {url}: no keys"));
    }
    Ok(keys)
}

/// Every key of the bucket's private S3 origin under its rule's prefix, with the listing's size
/// and ETag, from ListObjectsV2 pages.
async fn keys_from_origin(worker: &Worker, bucket: &str) -> Result<(Vec<String>, Vec<(u64, String)>), String> {
    let table = worker.shared.rules.load_full();
    let rule = table
        .rules(bucket)
        .and_then(|b| b.rules.iter().find(|r| r.s3.is_some() && r.key_rewrite == rules::KeyRewrite::None))
        .ok_or("listOrigin: the bucket has no rule with a private S3 origin (address.s3) and no key rewrite")?;
    let signer = rule.s3.as_ref().ok_or("listOrigin: no S3 origin")?;
    let (mut keys, mut expected, mut token) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let path = signer.signed_list_path(token.as_deref());
        let text = fetch_text(worker, &rule.origin, &path).await.map_err(|e| format!("listOrigin: {e}"))?;
        let page: proto::s3::xml::ListObjectsV2Result = proto::s3::xml::from_xml(text.as_bytes())
            .map_err(|e| format!("listOrigin: the listing: {}", e.as_str()))?;
        let encoded = page.encoding_type.as_deref() == Some("url");
        for object in page.contents {
            // Keys come URL-encoded when the listing says so (rusty-s3 asks for it): `+` is a
            // space, `%XX` a byte.
            let key = if encoded {
                let plus_as_space = object.key.replace('+', " ");
                percent_encoding::percent_decode_str(&plus_as_space).decode_utf8_lossy().into_owned()
            } else {
                object.key
            };
            // Only what the rule maps back to a local key (the bucket prefix stripped).
            let Some(local) = key.strip_prefix(signer.prefix()) else { continue };
            if local.starts_with(&rule.key_prefix) && !local.is_empty() {
                keys.push(local.to_string());
                expected.push((object.size, object.etag));
            }
        }
        match page.next_continuation_token.filter(|_| page.is_truncated) {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    Ok((keys, expected))
}

/// A GET of `path` at `origin`, whole, as text.
async fn fetch_text(worker: &Worker, origin: &rules::OriginAddr, path: &str) -> Result<String, String> {
    use crate::origin::{self, Method};
    let shared = &worker.shared;
    let request = origin::build_request(Method::Get, path, origin.host_header.as_bytes(), &[], &shared.via_token);
    let mut resp = origin::fetch(
        origin,
        Method::Get,
        origin::Outgoing::rule(request),
        &worker.config().origin,
        &worker.pool,
        &shared.network,
    )
    .await
    .map_err(|e| e.to_string())?;
    if resp.status != 200 {
        return Err(format!("status {}", resp.status));
    }
    let mut body = Vec::new();
    while let Some(piece) = resp.body.next().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&piece);
        if body.len() > MAX_KEY_LIST_BYTES {
            return Err(format!("more than {MAX_KEY_LIST_BYTES} bytes"));
        }
    }
    String::from_utf8(body).map_err(|_| "not UTF-8 text".into())
}

/// [`save`], a failure logged: the job goes on, and its next checkpoint tries again.
fn save_logged(job: &Job) {
    if let Err(e) = save(job) {
        tracing::error!(bucket = job.checkpoint.borrow().bucket, error = %e, "cannot write the backfill checkpoint");
    }
}

fn save(job: &Job) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&*job.checkpoint.borrow()).map_err(std::io::Error::other)?;
    let dir = job.path.parent().unwrap_or(Path::new("."));
    rules::replace_file(dir, &job.path, &bytes)
}

/// How one key ended.
enum Outcome {
    Skipped,
    Fetched(u64),
    Failed(String),
}

async fn run(worker: Rc<Worker>, job: Rc<Job>) {
    let (start, total, concurrency) = {
        let c = job.checkpoint.borrow();
        (c.low_water, c.keys.len(), c.concurrency)
    };
    let next = Rc::new(Cell::new(start));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (owned, job, next) = (worker.clone(), job.clone(), next.clone());
        tasks.push(crate::task::spawn(&worker, "backfill fetcher", async move {
            let worker = owned;
            loop {
                let i = next.get();
                if i >= total || job.cancelled.get() {
                    return;
                }
                next.set(i + 1);
                // Each key in a task of its own: one whose fetch panics is recorded as failed
                // (its `Claim`), and this fetcher goes on with the next key.
                crate::task::spawn(&worker, "backfill key", fetch_one(worker.clone(), job.clone(), i)).await;
            }
        }));
    }
    for task in tasks {
        task.await;
    }
    let summary = {
        let mut c = job.checkpoint.borrow_mut();
        c.state = if job.cancelled.get() {
            "cancelled"
        } else if c.failures.is_empty() {
            "complete"
        } else {
            "complete_with_failures"
        }
        .into();
        c.finished_unix = Some(unix_now());
        (c.bucket.clone(), c.state.clone(), c.done, c.skipped, c.failures.len())
    };
    save_logged(&job);
    let (bucket, state, done, skipped, failed) = summary;
    tracing::info!(bucket, state, done, skipped, failed, "backfill ended");
}

/// Fetches (or skips) the job's key `i` and records how it went.
async fn fetch_one(worker: Rc<Worker>, job: Rc<Job>, i: usize) {
    let (bucket, key) = {
        let c = job.checkpoint.borrow();
        (c.bucket.clone(), c.keys[i].clone())
    };
    let claim = Claim { job: &job, index: i, key: &key, recorded: false };
    let outcome = backfill_key(&worker, &bucket, &key, job.pacer.clone()).await;
    let expected = job.checkpoint.borrow().expected.get(i).cloned();
    let outcome = match (outcome, expected) {
        (Outcome::Failed(reason), _) => Outcome::Failed(reason),
        (outcome, Some(expected)) => verify(&worker, &bucket, &key, &expected).await.unwrap_or(outcome),
        (outcome, None) => outcome,
    };
    claim.record(outcome);
}

/// Counts a finished key, moves the low-water mark and checkpoints now and then.
fn record(job: &Job, index: usize, key: &str, outcome: Outcome) {
    {
        let mut c = job.checkpoint.borrow_mut();
        match outcome {
            Outcome::Skipped => c.skipped += 1,
            Outcome::Fetched(bytes) => {
                c.done += 1;
                c.bytes += bytes;
            }
            Outcome::Failed(reason) => c.failures.push((key.to_string(), reason)),
        }
        let mut above = job.finished_above.borrow_mut();
        above.insert(index);
        while above.remove(&c.low_water) {
            c.low_water += 1;
        }
    }
    job.since_checkpoint.set(job.since_checkpoint.get() + 1);
    if job.since_checkpoint.get() >= CHECKPOINT_EVERY {
        job.since_checkpoint.set(0);
        if let Err(e) = save(job) {
            tracing::warn!(error = %e, "cannot write the backfill checkpoint; retried at the next one");
        }
    }
}

/// With `verify`: the stored copy (over a shared store, the copy there) against the origin
/// listing's size and ETag; `Some` failure when they differ.
async fn verify(worker: &Worker, bucket: &str, key: &str, expected: &(u64, String)) -> Option<Outcome> {
    let (stored_size, ours) = match &worker.shared.shared_store {
        Some(store) => match crate::backend::head_object(worker, store, bucket, key).await {
            Ok(Some(crate::sharedstore::Held { etag, size: Some(size), .. })) => (size, etag),
            Ok(_) => return Some(Outcome::Failed("verify: not in the shared store".into())),
            Err(reason) => return Some(Outcome::Failed(format!("verify: the shared store did not answer: {reason}"))),
        },
        None => match worker.shared.store.lookup(ObjectKeyRef::new(bucket, key)).await {
            Ok(Some(object)) => (object.meta.size, object.meta.etag()),
            _ => return Some(Outcome::Failed("verify: not stored".into())),
        },
    };
    let (size, etag) = expected;
    if stored_size != *size {
        return Some(Outcome::Failed(format!("verify: {stored_size} bytes stored, {size} at the origin")));
    }
    if !etag.contains('-') && ours.trim_matches('"') != etag.trim_matches('"') {
        return Some(Outcome::Failed(format!("verify: ETag {ours} stored, {etag} at the origin")));
    }
    None
}

/// One key, as a GET miss would take it, tried up to [`ATTEMPTS`] times when the origin fails.
async fn backfill_key(
    worker: &Rc<Worker>,
    bucket: &str,
    key: &str,
    pacer: Option<std::sync::Arc<crate::protect::Pacer>>,
) -> Outcome {
    let mut pause = RETRY_PAUSE;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match fetch_once(worker, bucket, key, pacer.clone()).await {
            Ok(outcome) => return outcome,
            Err(reason) => last = reason,
        }
        if attempt < ATTEMPTS {
            monoio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    Outcome::Failed(format!("{last} ({ATTEMPTS} tries)"))
}

/// One try: `Err` when the origin failed in a way worth trying again.
async fn fetch_once(
    worker: &Rc<Worker>,
    bucket: &str,
    key: &str,
    pacer: Option<std::sync::Arc<crate::protect::Pacer>>,
) -> Result<Outcome, String> {
    let shared = &worker.shared;
    let table = shared.rules.load_full();
    let bucket_rules = table.rules(bucket).map(|b| b.rules.as_slice()).unwrap_or_default();
    let Some(rule) = rules::match_rule(bucket_rules, key) else {
        return Ok(Outcome::Failed("no mirror rule matches the key".into()));
    };
    let okey = ObjectKeyRef::new(bucket, key);
    // Over a shared store of record, the job fills that store: a key it holds is done, and one
    // fetched here is done only once it is written there.
    if let Some(store) = &shared.shared_store {
        match crate::backend::head_version(worker, store, bucket, key).await {
            Ok(Some(_)) => return Ok(Outcome::Skipped),
            Ok(None) => {}
            Err(reason) => return Err(format!("the shared store did not answer: {reason}")),
        }
    }
    let mut phase = match shared.fills.join(okey, &shared.store) {
        Join::Stored if shared.shared_store.is_some() => return publish(worker, okey, 0).await,
        Join::Stored => return Ok(Outcome::Skipped),
        Join::Follow(fill) => fill.subscribe(),
        Join::Lead(guard) => {
            let plan = match mirror::plan_without_client(rule, key, worker.next_request_id()) {
                Ok(plan) => mirror::FetchPlan { pacer, write_behind: false, ..plan },
                Err(e) => {
                    guard.finish(Phase::Refused(Refusal::Failed("the key cannot be fetched".into())));
                    return Ok(Outcome::Failed(e.message().into_owned()));
                }
            };
            let rx = guard.fill().subscribe();
            fill::spawn(worker, guard, plan);
            rx
        }
    };
    match inflight::final_phase(&mut phase).await {
        Some(Phase::Complete { written }) if shared.shared_store.is_some() => publish(worker, okey, written).await,
        Some(Phase::Complete { written }) => Ok(Outcome::Fetched(written)),
        Some(Phase::Refused(Refusal::NotFound)) => Ok(Outcome::Failed("the origin answered 404".into())),
        Some(Phase::Refused(Refusal::Redirect { status, .. })) => {
            Ok(Outcome::Failed(format!("the origin redirected ({status}) and the rule does not follow")))
        }
        Some(Phase::Refused(Refusal::Failed(reason) | Refusal::Unavailable(reason))) => Err(reason),
        Some(Phase::Broken) => Err("the origin's body broke off or failed its check".into()),
        Some(Phase::Fetching | Phase::Streaming { .. } | Phase::Verified { .. }) | None => {
            Err("the fill ended without an outcome".into())
        }
    }
}

/// Over a shared store: writes the copy of `key` this edge holds there and waits (`Err`, to try
/// again, when it cannot). `written` bytes were fetched for it (0: it was here already).
async fn publish(worker: &Worker, key: ObjectKeyRef<'_>, written: u64) -> Result<Outcome, String> {
    let shared = &worker.shared;
    let Some(store) = &shared.shared_store else { return Ok(Outcome::Fetched(written)) };
    let Some(obj) = shared.store.lookup(key).await.map_err(|e| e.to_string())? else {
        return Err("the fetched copy is not stored here (a purge or delete meanwhile?)".into());
    };
    // Only if it is still absent there: a client's write meanwhile wins.
    let written = crate::backend::put_object(worker, store, &obj, true)
        .await
        .map_err(|e| format!("writing to the shared store: {e}"))?;
    if !written {
        shared.freshness.forget(key.bucket, key.key);
        return Ok(Outcome::Skipped);
    }
    worker.metrics().shared_writes.inc();
    shared.freshness.mark(key.bucket, key.key);
    Ok(Outcome::Fetched(obj.meta.size))
}

/// Every job's progress, for `/metrics`: (bucket, keys total, done, skipped, failed, bytes,
/// running). Jobs live on the admin thread, where `/metrics` is answered.
pub fn progress() -> Vec<(String, [u64; 5], bool)> {
    JOBS.with(|jobs| {
        jobs.borrow()
            .values()
            .map(|job| {
                let c = job.checkpoint.borrow();
                let keys = [c.keys.len() as u64, c.done, c.skipped, c.failures.len() as u64, c.bytes];
                (c.bucket.clone(), keys, c.in_progress())
            })
            .collect()
    })
}

/// The job's report.
fn status(job: &Job) -> serde_json::Value {
    let c = job.checkpoint.borrow();
    let finished = c.done + c.skipped + c.failures.len() as u64;
    let total = c.keys.len() as u64;
    let elapsed = c.finished_unix.unwrap_or_else(unix_now).saturating_sub(c.started_unix).max(1);
    let keys_per_sec = finished as f64 / elapsed as f64;
    let eta = (c.state == "running" && keys_per_sec > 0.0)
        .then(|| (total.saturating_sub(finished) as f64 / keys_per_sec).ceil() as u64);
    json!({
        "bucket": c.bucket,
        "state": if job.cancelled.get() && c.state == "running" { "cancelling" } else { c.state.as_str() },
        "keys": {"total": total, "done": c.done, "skipped": c.skipped, "failed": c.failures.len()},
        "bytes": c.bytes,
        "bytesPerSecond": c.bytes / elapsed,
        "keysPerSecond": keys_per_sec,
        "etaSeconds": eta,
        "concurrency": c.concurrency,
        "failures": c.failures.iter().take(LISTED_FAILURES).map(|(k, r)| json!({"key": k, "reason": r})).collect::<Vec<_>>(),
    })
}
