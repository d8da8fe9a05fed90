//! Reloading the config file without a restart: SIGHUP, or `POST /v1/reload` on the admin
//! listener.
//!
//! The file is read and validated whole first; a file that fails is refused (the error names
//! the field, it is logged and returned) and the running config stays. Then, in this order:
//! the bucket table (declared buckets from the file, created ones from `buckets.json`; a bucket
//! that exists now keeps its identity), the rule table (rebuilt by [`rule_table`], the same
//! function start-up uses, so the precedence is the same: a bucket with `[[buckets.mirror]]` in
//! the file takes its rules from the file, any other from the rule API's `rules.json`), the
//! origin protections (breakers, fetch caps, byte-rate caps, the negative cache's TTL), the
//! fleet's membership, and the
//! config every new request reads (S3 keys and domain, limits and timeouts, origin settings, TLS
//! certificates for new connections, the admin token). Requests in flight finish on the config
//! they started with; no connection is dropped.
//!
//! Settings the running process cannot change keep their running values, and a reload that
//! changes them says so by name in its log line and its answer: the listen addresses, the worker
//! count, the store and cache, the origin address policy, the MD5 threads and the access log's
//! target.

use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::buckets::BucketTable;
use crate::config::Config;
use crate::netguard::AddressPolicy;
use crate::rules::{self, RuleSource, RuleTable};
use crate::worker::Shared;

/// What a reload did.
#[derive(Debug)]
pub struct Reloaded {
    pub buckets: usize,
    pub rules: usize,
    /// Settings that changed in the file but keep their running values until a restart.
    pub restart_needed: Vec<&'static str>,
}

/// Reads the node's config file again and applies it (see the module doc). The error is the
/// reason the running config stays, naming the field where the file is at fault.
pub fn reload(shared: &Shared) -> Result<Reloaded> {
    let _serial = shared.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
    let Some(path) = &shared.config_path else {
        return Err(anyhow!("the node runs on its embedded default config: there is no file to reload"));
    };
    let mut next = Config::load(path)?;
    let running = shared.config();
    let restart_needed = keep_running_values(&mut next, &running);

    // Build everything that can fail before anything is swapped.
    let _buckets_lock = shared.buckets_update.lock().unwrap_or_else(|e| e.into_inner());
    let _rules_lock = shared.rules_update.lock().unwrap_or_else(|e| e.into_inner());
    let buckets = shared.buckets.load().reloaded(&next)?;
    let table = rule_table(&next, &buckets, &shared.network.policy)?;

    let origin = &next.origin;
    shared.breakers.set_config(origin.breaker);
    shared.fetch_slots.set_per_origin(origin.max_fetches_per_origin);
    shared.pacers.set_rate(origin.max_bytes_per_sec_per_origin);
    shared.negative.set_ttl(origin.negative_ttl);
    shared.fleet.set(next.fleet.as_ref());
    let reloaded = Reloaded { buckets: buckets.iter().count(), rules: table.rule_count(), restart_needed };
    shared.buckets.store(Arc::new(buckets));
    shared.rules.store(Arc::new(table));
    shared.config.store(next);
    Ok(reloaded)
}

/// Logs a reload's outcome (for SIGHUP and the admin endpoint alike).
pub fn log(outcome: &Result<Reloaded>) {
    match outcome {
        Ok(r) if r.restart_needed.is_empty() => {
            tracing::info!(buckets = r.buckets, rules = r.rules, "config reloaded");
        }
        Ok(r) => tracing::warn!(
            buckets = r.buckets,
            rules = r.rules,
            restart_needed = %r.restart_needed.join(", "),
            "config reloaded; these settings changed in the file but keep their running values until a restart"
        ),
        Err(e) => tracing::error!(error = %format!("{e:#}"), "config reload refused; the running config stays"),
    }
}

/// Sets in `next` the running values of the settings a running node cannot change, and names
/// those the file changed.
fn keep_running_values(next: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:literal) => {
            if next.$($field).+ != running.$($field).+ {
                changed.push($name);
                next.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!(server.listen, "server.listen");
    keep!(server.workers, "server.workers");
    keep!(admin.listen, "admin.listen");
    // Which buckets the store may evict from is fixed when it opens: a bucket's mode changes
    // with a restart.
    if next.store.evictable_buckets != running.store.evictable_buckets {
        changed.push("buckets.mode");
        next.store.evictable_buckets = running.store.evictable_buckets.clone();
    }
    keep!(store, "store");
    keep!(shared_store, "store.s3");
    keep!(cold_reads_async, "store.cold_reads");
    keep!(hash_threads, "store.hash_threads");
    keep!(multipart_max_age, "store.multipart_max_age_s");
    keep!(cache, "cache");
    keep!(sendfile, "cache.sendfile");
    keep!(origin.allow_private, "origin.allow_private");
    keep!(origin.allow_link_local, "origin.allow_link_local");
    keep!(origin.negative_entries, "origin.negative_entries");
    keep!(access_log, "access_log");
    // The HTTPS listener itself (its address, or whether there is one); its certificates reload.
    let tls_listen = |c: &Config| c.tls.as_ref().map(|t| t.listen);
    if tls_listen(next) != tls_listen(running) {
        changed.push("tls.listen");
        next.tls = running.tls.clone();
    }
    changed
}

/// The rule table of `config`'s buckets: a bucket whose `[[buckets.mirror]]` the file declares
/// takes its rules from the file; any other takes those the rule API saved in `rules.json`.
/// Start-up and reload both build the table here.
pub fn rule_table(config: &Config, buckets: &BucketTable, policy: &AddressPolicy) -> Result<RuleTable> {
    let persisted = rules::load_persisted(&config.store.dir)?;
    let mut table = RuleTable::default();
    for bucket in buckets.iter().map(|b| &b.config) {
        let saved = persisted.buckets.get(&bucket.name);
        let (spec, source) = match (&bucket.config_rules, saved) {
            (Some(spec), saved) => {
                if saved.is_some_and(|s| !s.back_source_rules.is_empty()) {
                    tracing::warn!(
                        bucket = %bucket.name,
                        "rules.json holds API rules for this bucket, but the config file manages its rules: the API rules are ignored (remove its [[buckets.mirror]] to manage them through the API)"
                    );
                }
                (spec.clone(), RuleSource::Config)
            }
            (None, Some(body)) => (body.back_source_rules.clone(), RuleSource::Api),
            (None, None) => (Vec::new(), RuleSource::Api),
        };
        let validated = rules::validate_list(&spec, policy)
            .map_err(|e| anyhow!("bucket {} (rules from {}): {e}", bucket.name, source.as_str()))?;
        tracing::info!(bucket = %bucket.name, rules = validated.len(), from = source.as_str(), "bucket");
        table = table.with_bucket(&bucket.name, source, spec, validated);
    }
    for name in persisted.buckets.keys() {
        if buckets.get(name).is_none() {
            tracing::warn!(bucket = %name, "rules.json names a bucket that is neither configured nor created; ignored");
        }
    }
    Ok(table)
}
