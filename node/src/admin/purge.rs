//! `POST /v1/regions/{region}/buckets/{bucket}/purge`: the CDN "refresh".
//!
//! Body: `{"keys": ["a.jpg", ...]}` (at most [`MAX_KEYS`]) or `{"prefix": "img/"}` (every stored
//! key under it), and optionally `"refetch": true`.
//!
//! - Purge: each object is deleted from the store (a tombstone record: crash-safe, never comes
//!   back) and dropped from both foyer tiers. Readers check a cached copy's version against the
//!   store anyway, so no tier serves it afterwards, across restarts too. The next GET mirrors it
//!   again if a rule matches. A fill of the key running meanwhile is not stored (it began before
//!   the purge). Answer: `{"result": {"purged": N}}`, N the objects that existed.
//! - Over a shared store of record (`store.backend = "s3"`), a purge is the fleet's: each
//!   object is deleted from the shared store first (a prefix is listed there), so every edge
//!   drops its copy within `store.s3.staleness_ms` and the next GET anywhere mirrors it again;
//!   if the shared store cannot delete one, the purge stops there with 503. A refetch's new copy
//!   is written to the shared store when it commits, and replaces the other edges' copies the
//!   same way.
//! - Refetch: the objects stay and are fetched again from the origin through the bucket's rules,
//!   in the background, [`REFETCH_CONCURRENCY`] at a time on the admin thread; each new copy
//!   replaces the old one only when it has committed, so the old one is served until then (and
//!   kept if the fetch fails). Answer: `{"result": {"refetching": N, "noRule": M}}`.

use std::rc::Rc;

use edgemirror_cache::ObjectKeyRef;
use serde::Deserialize;
use serde_json::json;

use super::Answer;
use crate::inflight;
use crate::worker::Worker;
use crate::{fill, mirror, rules};

/// Keys one request may name (as S3's DeleteObjects).
pub const MAX_KEYS: usize = 1000;
/// Re-fetches running at once per purge request: the origin is not flooded by a large prefix.
pub const REFETCH_CONCURRENCY: usize = 8;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    keys: Option<Vec<String>>,
    prefix: Option<String>,
    #[serde(default)]
    refetch: bool,
}

pub(super) async fn handle(worker: &Rc<Worker>, id: &str, bucket: &str, body: &[u8]) -> Answer {
    let parsed: PurgeBody = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return Answer::error(400, id, &format!("invalid JSON body: {e}")),
    };
    let shared = &worker.shared;
    let keys: Vec<String> = match (parsed.keys, parsed.prefix) {
        (Some(keys), None) => {
            if keys.len() > MAX_KEYS {
                return Answer::error(400, id, &format!("keys: {} keys; at most {MAX_KEYS} per request", keys.len()));
            }
            if let Some((i, _)) =
                keys.iter().enumerate().find(|(_, k)| ObjectKeyRef::new(bucket, k).validate().is_err())
            {
                return Answer::error(400, id, &format!("keys[{i}]: not a valid object key (1-1024 bytes)"));
            }
            keys
        }
        (None, Some(prefix)) => match &shared.shared_store {
            None => shared.store.keys_with_prefix(bucket, &prefix).into_iter().map(|k| k.key.into()).collect(),
            Some(store) => match crate::backend::list_all_keys(worker, store, bucket, &prefix).await {
                Ok(keys) => keys,
                Err(e) => return Answer::error(503, id, &format!("listing the shared store: {}", e.message())),
            },
        },
        _ => return Answer::error(400, id, "give either keys or prefix"),
    };
    if parsed.refetch {
        return refetch(worker, id, bucket, keys);
    }
    let mut purged = 0;
    for key in &keys {
        let okey = ObjectKeyRef::new(bucket, key);
        if let Err(e) = crate::backend::delete_shared(worker, bucket, key).await {
            tracing::error!(request_id = id, bucket, key, error = ?e, "purge failed at the shared store");
            return Answer::error(
                503,
                id,
                &format!("purge stopped at {key:?} after {purged} objects: the shared store did not delete it"),
            );
        }
        match shared.store.delete(worker.id, okey) {
            Ok(removed) => purged += removed.is_some() as u64,
            Err(e) => {
                tracing::error!(request_id = id, bucket, key, error = %e, "purge failed");
                return Answer::error(500, id, &format!("purge stopped at {key:?} after {purged} objects: {e}"));
            }
        }
        shared.hot.remove(okey);
        shared.negative.forget(okey);
    }
    worker.metrics().objects_purged.add(purged);
    tracing::info!(request_id = id, bucket, purged, named = keys.len(), "purge");
    Answer::json(200, json!({"requestId": id, "result": {"purged": purged}}))
}

fn refetch(worker: &Rc<Worker>, id: &str, bucket: &str, keys: Vec<String>) -> Answer {
    let table = worker.shared.rules.load_full();
    let bucket_rules = table.rules(bucket).map(|b| b.rules.clone()).unwrap_or_default();
    let (with_rule, no_rule): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| rules::match_rule(&bucket_rules, k).is_some());
    let refetching = with_rule.len();
    tracing::info!(request_id = id, bucket, refetching, no_rule = no_rule.len(), "purge with refetch");
    crate::task::spawn(
        worker,
        "purge refetch",
        refetch_all(worker.clone(), bucket.to_string(), with_rule, bucket_rules),
    );
    Answer::json(200, json!({"requestId": id, "result": {"refetching": refetching, "noRule": no_rule.len()}}))
}

/// Re-fetches `keys`, [`REFETCH_CONCURRENCY`] at a time, each as a fill that commits only if the
/// key has not changed since it began (a PUT or a purge meanwhile wins).
async fn refetch_all(worker: Rc<Worker>, bucket: String, keys: Vec<String>, bucket_rules: Vec<rules::MirrorRule>) {
    let shared = &worker.shared;
    for batch in keys.chunks(REFETCH_CONCURRENCY) {
        let mut running = Vec::with_capacity(batch.len());
        for key in batch {
            let okey = ObjectKeyRef::new(&bucket, key);
            let Some(rule) = rules::match_rule(&bucket_rules, key) else { continue };
            let plan = match mirror::plan_without_client(rule, key, worker.next_request_id()) {
                Ok(plan) => plan,
                Err(e) => {
                    tracing::warn!(bucket, key, error = ?e, "refetch refused");
                    continue;
                }
            };
            // A fill of the key already running fetches afresh anyway.
            let Some(guard) = shared.fills.lead_refetch(okey, &shared.store) else { continue };
            running.push(guard.fill().subscribe());
            fill::spawn(&worker, guard, plan);
        }
        for mut rx in running {
            inflight::final_phase(&mut rx).await;
        }
    }
}
