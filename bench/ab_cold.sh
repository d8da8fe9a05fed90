#!/usr/bin/env bash
# bench/ab_cold.sh: A/B of two edgemirror binaries on single cold GETs, the node alone.
#
#   bash bench/ab_cold.sh OLD_BIN NEW_BIN [ROUNDS (8)] [SIZE_BYTES (1048576)]
#
# The two sides may be one binary with two configurations (OLD_STORE, NEW_STORE: extra lines
# for the node's [store] section), and CONNS > 1 turns it into sustained misses over distinct
# keys (target 2) instead of one GET at a time. A side named `nginx-proxy`, `varnish` or
# `varnish-file` runs that peer instead (configured as in bench/peers.sh: proxy_cache with its
# lock; malloc storage; file storage, as the disk phase's), so the node and a peer take turns on
# the same origin, objects and minute.
#
# Why: on this kind of shared VM the machine's speed moves minute to minute. A few runs of
# `bench/peers.sh` per build once showed a 2x gain that this script then refuted (bench/RESULTS.md,
# "Issue 14, third pass"). Here each round runs both builds back to back, in alternating order,
# on the same origin and objects, so a slow minute hits both; the medians and ranges over the
# rounds are the result.
#
# Each run: a fresh store, the node pinned to core $SERVER_CORE (taskset), nginx as the origin
# and emload on core $LOAD_CORE: `--cold -c 1` (one GET at a time) or, with CONNS > 1, `-c $CONNS
# --mix seq` (distinct keys over many connections); each of $KEYS keys once.
# Prints per build the p50 and p99 of the complete time per run, then their medians and ranges,
# the node's CPU time per GET (utime + stime of the process over the run), GETs per second and
# the process's minor page faults per GET (a fault is a page the process touched for the first
# time, or again after giving it back: on this VM, fresh memory costs ~10x; bench/RESULTS.md),
# and how busy the server core and the load core were (user, system and interrupts over the
# run's wall time, from /proc/stat): a load core at 100% means the client and the origin, not the
# server, set the rate, and the server that costs them less per GET goes faster.
#
# Knobs (environment): KEYS (300) CONNS (1) PAUSE_MS (0; single GETs: an untimed wait after
# each, so that every GET finds the server idle rather than busy with what the last one left)
# COLD_ORIGIN (0: the origin's objects are read into the page cache before each run; 1: they are
# dropped from it, so the origin reads them from disk) OLD_STORE, NEW_STORE ("") WORK
# (/tmp/edgemirror-ab-cold) PORT_BASE (19180) SERVER_CORE (1) LOAD_CORE (0) EMLOAD_BIN
# (target/release/emload, built if missing) PERF (unset; a path: `perf record -g` of the server
# core over each run, written to PERF.ROUND-old and PERF.ROUND-new; `python3
# bench/perf_per_get.py PERF.1-new KEYS` splits it into file write, recv, send, MD5, ...;
# PERF_EVENT samples another event instead of the CPU clock, e.g. "page-faults").
# PERF_STAT (unset; perf events, comma-separated: their counts on the server core over each run,
# printed per GET after the run's line; e.g. "net:net_dev_xmit,io_uring:io_uring_submit_req").
# PERF and PERF_STAT do not go together.
# Single GETs (CONNS=1) leave each request's times in $WORK/logs/emload-ROUND-{old,new}.csv
# (those of an earlier invocation are removed first).
# LO_MTU (unset; e.g. 1500: loopback's MTU for the run, restored at the end: bench/loopback_mtu.sh).
# LOAD_WARMUP (0.3: seconds of one client's hits on a key of its own before each run, untimed, so
# that the run does not begin on vCPUs just out of an idle spell; 0: none).
# PRIME_KEYS (with CONNS > 1: that many cold GETs over $CONNS connections on keys of their own,
# untimed, before each run, so that each side meets the run as a server that has filled a while,
# not as a fresh process: fresh, Varnish and the node alike ran sustained 1 MiB misses at ~0.8x
# the rate of one that had just filled 500 objects; bench/RESULTS.md, "Issue 14, twenty-second
# pass". Default: KEYS / 4 when a side is a peer and CONNS > 1, else 0).
# ORIGIN_HTTP (""; directives added to the origin nginx's http block, each ending in ';', e.g.
# 'ssi on; ssi_types *;' for answers of unknown length, sent chunked: nginx's SSI filter also
# turns off its sendfile and drops Last-Modified and ETag).
# Needs nginx (apt-get install nginx) and root only if WORK is not writable.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 2 ]] || { sed -n 2,4p "$0" >&2; exit 2; }
OLD=$1
NEW=$2
ROUNDS=${3:-8}
SIZE=${4:-1048576}
KEYS=${KEYS:-300}
CONNS=${CONNS:-1}
PRIME_KEYS_DEFAULT=0
if ((CONNS > 1)) && [[ " $OLD $NEW " =~ \ (nginx-proxy|varnish|varnish-file)\  ]]; then
    PRIME_KEYS_DEFAULT=$((KEYS / 4))
fi
PRIME_KEYS=${PRIME_KEYS:-$PRIME_KEYS_DEFAULT}
((PRIME_KEYS == 0 || CONNS > 1)) || { echo "PRIME_KEYS needs CONNS > 1" >&2; exit 2; }
# The measured keys are objects 0..KEYS-1; the priming ones follow them.
OBJECTS=$((KEYS + PRIME_KEYS))
PAUSE_MS=${PAUSE_MS:-0}
COLD_ORIGIN=${COLD_ORIGIN:-0}
OLD_STORE=${OLD_STORE:-}
NEW_STORE=${NEW_STORE:-}
ORIGIN_HTTP=${ORIGIN_HTTP:-}
WORK=${WORK:-/tmp/edgemirror-ab-cold}
PORT_BASE=${PORT_BASE:-19180}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
P_ORIGIN=$PORT_BASE
P_NODE=$((PORT_BASE + 1))
P_ADMIN=$((PORT_BASE + 2))

log() { printf '[ab-cold %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

for b in "$OLD" "$NEW"; do
    case $b in
    nginx-proxy) ;;
    varnish | varnish-file) command -v varnishd >/dev/null || die "varnishd is missing (apt-get install varnish)" ;;
    *) [[ -x $b ]] || die "no binary at $b" ;;
    esac
done
command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx)"
EMLOAD_BIN=${EMLOAD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/emload}
if [[ ! -x $EMLOAD_BIN ]]; then
    (cd "$ROOT" && cargo build --release -p edgemirror-bench --bin emload)
fi

mkdir -p "$WORK/www/o" "$WORK/logs"
rm -f "$WORK"/logs/emload-*.csv
if [[ ! -f $WORK/www/o/size ]] || [[ $(cat "$WORK/www/o/size") != "$SIZE x $OBJECTS" ]]; then
    log "writing $OBJECTS objects of $SIZE bytes"
    rm -f "$WORK"/www/o/obj-*
    head -c $((SIZE * OBJECTS)) /dev/urandom | split -b "$SIZE" -d -a 6 - "$WORK/www/o/.part-"
    i=0
    for f in "$WORK"/www/o/.part-*; do
        mv "$f" "$WORK/www/o/obj-$i"
        i=$((i + 1))
    done
    echo "$SIZE x $OBJECTS" >"$WORK/www/o/size"
fi
# The key of each side's warm-up (load_warmup, bench/guest_memory.sh): fetched once, then hits.
[[ $(stat -c %s "$WORK/www/o/warm" 2>/dev/null) == "$SIZE" ]] || head -c "$SIZE" /dev/urandom >"$WORK/www/o/warm"
# Peers pass the path on unchanged: the origin serves /ab-cold/o/ too.
mkdir -p "$WORK/www/ab-cold"
ln -sfn ../o "$WORK/www/ab-cold/o"
chmod -R 755 "$WORK"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/logs/nginx.err;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; $ORIGIN_HTTP server { listen 127.0.0.1:$P_ORIGIN; root $WORK/www; } }
EOF

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    restore_guest_memory
    restore_loopback_mtu
}
source "$ROOT/bench/guest_memory.sh"
source "$ROOT/bench/loopback_mtu.sh"
trap cleanup EXIT
set_loopback_mtu
# Free memory stays with this VM for the run (bench/guest_memory.sh): both sides' new bytes land
# on memory the host backs, whichever runs first.
if [[ $(id -u) == 0 ]]; then
    warm_guest_memory
    [[ -z $GUEST_MEMORY_WARMED ]] || log "guest memory: $GUEST_MEMORY_WARMED GiB touched, kept from the host"
fi
taskset -c "$LOAD_CORE" nginx -c "$WORK/nginx.conf" &
PIDS+=($!)

# start_side BIN STORE_EXTRA: starts the node (or the peer BIN names) on $SERVER_CORE and
# prints "PID TIMED_PID" once it answers (TIMED_PID: the process whose CPU time is the side's).
start_side() {
    local bin=$1 store_extra=$2 pid probe
    rm -rf "$WORK/store" "$WORK/peer"
    mkdir -p "$WORK/peer/tmp" "$WORK/peer/cache"
    case $bin in
    nginx-proxy)
        # The cache's two directory levels made ahead, as they stand in a cache that has run a
        # while (peers.sh's): nginx would otherwise make up to 4,096 of them during the run.
        mkdir -p "$WORK"/peer/cache/{0..9,a..f}/{0..9,a..f}{0..9,a..f}
        cat >"$WORK/peer/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $WORK/peer/nginx.pid;
error_log $WORK/logs/peer.err warn;
events { worker_connections 8192; }
http {
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/peer/tmp/body;
    proxy_temp_path $WORK/peer/tmp/proxy;
    proxy_cache_path $WORK/peer/cache levels=1:2 keys_zone=edge:64m max_size=8g inactive=1d use_temp_path=off;
    upstream origin { server 127.0.0.1:$P_ORIGIN; keepalive 64; }
    server {
        listen 127.0.0.1:$P_NODE;
        sendfile off;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
        }
    }
}
EOF
        taskset -c "$SERVER_CORE" nginx -c "$WORK/peer/nginx.conf" >"$WORK/logs/peer.out" 2>&1 &
        pid=$!
        probe="http://127.0.0.1:$P_NODE/"
        ;;
    varnish | varnish-file)
        # Room for every object of the invocation: Varnish evicting would not be the peer measured.
        local storage=malloc,$(((SIZE * OBJECTS * 5 / 4 >> 30) + 2))G
        [[ $bin == varnish-file ]] && storage=file,$WORK/peer/storage.bin,4G
        taskset -c "$SERVER_CORE" varnishd -F -n "$WORK/peer/n" -a "127.0.0.1:$P_NODE" \
            -T "127.0.0.1:$P_ADMIN" -b "127.0.0.1:$P_ORIGIN" -s "$storage" -t 86400 \
            >"$WORK/logs/peer.out" 2>&1 &
        pid=$!
        probe="http://127.0.0.1:$P_NODE/"
        ;;
    *)
        cat >"$WORK/node.toml" <<EOF
[server]
listen = "127.0.0.1:$P_NODE"
workers = 1
[admin]
listen = "127.0.0.1:$P_ADMIN"
[store]
dir = "$WORK/store"
$store_extra
[[buckets]]
name = "ab-cold"
[[buckets.mirror]]
url = "http://127.0.0.1:$P_ORIGIN/"
key_prefix = ""
EOF
        taskset -c "$SERVER_CORE" "$bin" --config "$WORK/node.toml" >"$WORK/logs/node.out" 2>&1 &
        pid=$!
        probe="http://127.0.0.1:$P_ADMIN/health"
        ;;
    esac
    local up=0
    for _ in $(seq 100); do
        if curl -s -o /dev/null "$probe"; then up=1; break; fi
        sleep 0.1
    done
    ((up)) || { kill "$pid"; die "$bin did not start (see $WORK/logs/)"; }
    # nginx's worker (not its cache manager or loader) and Varnish's cache process are children
    # of the started process: time the child.
    local child=$pid
    case $bin in
    nginx-proxy) child=$(pgrep -P "$pid" -f "worker process" | head -1) ;;
    varnish*) child=$(pgrep -P "$pid" | head -1) ;;
    esac
    [[ -n $child ]] || die "no worker process under $bin's $pid"
    echo "$pid $child"
}

# One run of `bin` with `store_extra` in its [store]: prints "p50_us p99_us cpu_us_per_get
# gets_per_s minor_faults_per_get server_core_busy_% load_core_busy_%".
run() {
    local bin=$1 store_extra=$2
    # The origin's objects first, so that reading them does not take the free memory touched
    # for the side below.
    if ((COLD_ORIGIN)); then
        # Out of the page cache: the origin reads them from disk, as in a peers.sh phase that
        # runs minutes after the objects were written (this VM pages out page cache not used
        # for a minute: bench/RESULTS.md, "Issue 14, fifth pass").
        python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$WORK"/www/o/obj-*
    else
        # Into the page cache: the objects are written only when SIZE or KEYS change, so an
        # invocation reusing older ones found them on disk in its first run and in memory in
        # the later ones (bench/guest_memory.sh).
        origin_warm "$WORK/www/o/obj-{}" 0 "$OBJECTS"
    fi
    local pid timed
    read -r pid timed <<<"$(start_side "$bin" "$store_extra")"
    # Each side stores onto memory the host backs (bench/guest_memory.sh).
    touch_guest_memory
    if ((PRIME_KEYS)); then
        each_key_once "$PRIME_KEYS" "$KEYS" "$WORK/logs/emload-prime.txt"
        ok_summary "$WORK/logs/emload-prime.txt" >/dev/null
    fi
    # The run does not begin on vCPUs just out of an idle spell (bench/guest_memory.sh). Not
    # counted in the figures below. With PERF or PERF_STAT it comes before their 0.3 s start, an
    # idle spell that brings part of the slow start back: those runs are for where time goes.
    load_warmup "http://127.0.0.1:$P_NODE/ab-cold/o/warm"
    local before after faults_before faults_after t0 t1
    # CPU ticks (utime + stime) and minor faults of the timed process.
    read -r before faults_before < <(awk '{print $14 + $15, $10}' "/proc/$timed/stat")
    local perf_pid=
    if [[ -n ${PERF:-} ]]; then
        # The server core's samples over this run only.
        perf record -q -g ${PERF_EVENT:+-e "$PERF_EVENT"} -C "$SERVER_CORE" -o "$PERF.$RUN_TAG" 2>/dev/null &
        perf_pid=$!
        sleep 0.3
    elif [[ -n ${PERF_STAT:-} ]]; then
        # Counts of these events on the server core over this run only.
        perf stat -x, -e "$PERF_STAT" -C "$SERVER_CORE" -o "$WORK/logs/stat-$RUN_TAG" 2>/dev/null &
        perf_pid=$!
        sleep 0.3
    fi
    local cores_before
    cores_before=$(core_ticks)
    t0=$(date +%s%N)
    if ((CONNS == 1)); then
        taskset -c "$LOAD_CORE" "$EMLOAD_BIN" --cold -c 1 --rounds "$KEYS" --keys "$KEYS" --pause-ms "$PAUSE_MS" \
            --url-template "http://127.0.0.1:$P_NODE/ab-cold/o/obj-{}" \
            --csv "$WORK/logs/emload-$RUN_TAG.csv" >"$WORK/logs/emload.txt"
    else
        each_key_once "$KEYS" 0 "$WORK/logs/emload.txt"
    fi
    t1=$(date +%s%N)
    local busy
    busy=$(core_busy "$cores_before" "$(core_ticks)")
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid"
        while kill -0 "$perf_pid" 2>/dev/null; do sleep 0.1; done
    fi
    read -r after faults_after < <(awk '{print $14 + $15, $10}' "/proc/$timed/stat")
    # Started in start_side's subshell, so not this shell's to wait for: the side is gone once its
    # port is free (a peer's worker outlives its parent for a moment), and the next side binds it.
    kill "$pid"
    for _ in $(seq 50); do
        ss -Hltn "sport = :$P_NODE" | grep -q . || break
        sleep 0.1
    done
    local line
    line=$(ok_summary "$WORK/logs/emload.txt")
    local ticks
    ticks=$(getconf CLK_TCK)
    echo "$(sed -E 's/.* (total_)?p50_us=([0-9.]+).*/\2/' <<<"$line") $(sed -E 's/.* (total_)?p99_us=([0-9.]+).*/\2/' <<<"$line") $(( (after - before) * 1000000 / ticks / KEYS )) $(( KEYS * 1000000000 / (t1 - t0) )) $(awk -v f=$((faults_after - faults_before)) -v k="$KEYS" 'BEGIN { printf "%.1f", f / k }') $busy"
}

# each_key_once COUNT FIRST LOG: GETs of keys FIRST..FIRST+COUNT-1, each once, over $CONNS
# connections, as bench/peers.sh's sustained phase; emload's report to LOG.
each_key_once() {
    taskset -c "$LOAD_CORE" "$EMLOAD_BIN" -c "$CONNS" -n "$1" --mix seq --timeout-ms 60000 --keys "$1" \
        --key-offset "$2" --url-template "http://127.0.0.1:$P_NODE/ab-cold/o/obj-{}" >"$3"
}

# ok_summary LOG: emload's summary line in LOG; stops the script when a GET failed.
ok_summary() {
    local line
    line=$(grep '^summary:' "$1")
    [[ $line == *" errors=0"* && $line == *" non2xx=0"* ]] || die "failed GETs ($1): $line"
    echo "$line"
}

# The jiffies of the server and load cores, busy and total, from /proc/stat:
# "server_busy server_total load_busy load_total".
core_ticks() {
    awk -v s="cpu$SERVER_CORE" -v l="cpu$LOAD_CORE" '
        $1 == s || $1 == l {
            total = 0; for (i = 2; i <= 9; i++) total += $i
            busy[$1] = $2 + $3 + $4 + $7 + $8; all[$1] = total
        }
        END { print busy[s], all[s], busy[l], all[l] }' /proc/stat
}

# How busy each core was between two core_ticks readings, in per cent: "server% load%".
core_busy() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x); split(b, y)
        printf "%.0f %.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]), 100 * (y[3] - x[3]) / (y[4] - x[4])
    }'
}

declare -a RESULTS=()
for round in $(seq "$ROUNDS"); do
    # Alternate which build goes first: a fixed order was seen to bias a few per cent.
    if ((round % 2)); then order=(old new); else order=(new old); fi
    for which in "${order[@]}"; do
        RUN_TAG=$round-$which
        if [[ $which == new ]]; then r=$(run "$NEW" "$NEW_STORE"); else r=$(run "$OLD" "$OLD_STORE"); fi
        log "round $round $which: p50 / p99 / CPU per GET (µs) / GET/s / minor faults per GET / server core busy % / load core busy %: $r"
        if [[ -n ${PERF_STAT:-} && -s $WORK/logs/stat-$RUN_TAG ]]; then
            log "round $round $which: per GET: $(awk -F, -v k="$KEYS" '$1 ~ /^[0-9.]+$/ { printf "%s %.2f  ", $3, $1 / k }' "$WORK/logs/stat-$RUN_TAG")"
        fi
        RESULTS+=("$which $r")
    done
done

printf '%s\n' "${RESULTS[@]}" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    which, p50, p99, cpu, rate, faults, server_busy, load_busy = line.split()
    rows.setdefault(which, []).append((float(p50) / 1000, float(p99) / 1000, float(cpu), float(rate), float(faults), float(server_busy), float(load_busy)))
print("| build | p50 median (range), ms | p99 median (range), ms | CPU per GET median (range), µs | GET/s median (range) | minor faults per GET median (range) | server core busy % | load core busy % |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for which in ("old", "new"):
    r = rows[which]
    cols = []
    for i, fmt in ((0, "%.2f"), (1, "%.2f"), (2, "%.0f"), (3, "%.0f"), (4, "%.1f"), (5, "%.0f"), (6, "%.0f")):
        v = [x[i] for x in r]
        cols.append((fmt + " (" + fmt + "–" + fmt + ")") % (statistics.median(v), min(v), max(v)))
    print("| %s | %s |" % (which, " | ".join(cols)))
for i, what in ((0, "p50"), (3, "GET/s")):
    o = statistics.median(x[i] for x in rows["old"])
    n = statistics.median(x[i] for x in rows["new"])
    print("new / old %s (medians): %.2f" % (what, n / o))
'
log "old: $OLD [$OLD_STORE]; new: $NEW [$NEW_STORE]; $ROUNDS rounds of $KEYS cold GETs of $SIZE bytes over $CONNS connections$(((PAUSE_MS > 0)) && echo ", $PAUSE_MS ms apart")$(((PRIME_KEYS > 0)) && echo ", each run after $PRIME_KEYS untimed cold GETs")"
