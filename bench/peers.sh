#!/usr/bin/env bash
# bench/peers.sh: the same HTTP/1.1 GET workload against edgemirror and its peers, in one run,
# so every figure is a ratio measured on the same machine at the same time.
#
#   bash bench/peers.sh            # from the repo root; needs root (apt-get, cpuset cgroup)
#   bash bench/peers.sh serve      # start and warm everything, then wait (SERVE_SECS) to poke at
#
# What it does:
#   1. installs nginx, varnish, wrk and h2load (nghttp2-client) with apt-get if they are missing;
#   2. builds `edgemirror` and `emload` (release) unless EDGEMIRROR_BIN / EMLOAD_BIN are given;
#   3. writes objects of 1 KiB, 64 KiB and 1 MiB (random bytes) under $WORK/www;
#   4. starts, all on 127.0.0.1:
#        origin        nginx serving $WWW (access log on: it counts origin requests)
#        nginx-static  nginx serving the same files itself (sendfile on)
#        nginx-proxy   nginx proxy_cache in front of the origin (proxy_cache_lock on)
#        varnish       Varnish, malloc storage, in front of the origin
#        edgemirror    the release binary, workers = 1, one bucket mirroring the origin
#   5. warms every cache (each key fetched once, then checked to be a hit);
#   6. runs the phases named in PHASES, in that order (default: all of them):
#        hit        per size, emload against each target for $WARMUP + $DURATION s, $REPEAT
#                   times with the targets taking turns (median shown);
#                   (with edgemirror-log: the same node with the access log on);
#        log        the access log's cost: edgemirror and edgemirror-log at LOG_RATE req/s of
#                   1 KiB hits (open loop), their CPU compared;
#        clients    the same hit path with wrk and h2load --h1, one key per size, $REPEAT times;
#        tls        the HTTPS hit path, nginx against edgemirror (same certificate, TLS 1.3,
#                   AES-128-GCM), with wrk and h2load;
#        cold       single cold GETs through each cache vs the origin directly: TTFB and
#                   complete time, p50 and p99 over $COLD_ROUNDS fresh keys, $MISS_REPEAT runs
#                   (200 keys: the p99 of 50 was the slowest GET of the run);
#        sustained  $CONNS connections reading distinct cold keys, each once (a cache filled
#                   after a deploy or a purge), with the origin read directly as the ceiling,
#                   $MISS_REPEAT runs on fresh keys;
#        burst      1000 concurrent cold GETs of one 1 MiB key per cache, with the origin's
#                   request count taken from its access log;
#        disk       a working set several times the memory each server may use: DISK_KEYS
#                   objects of DISK_BYTES, DISK_MIX keys, every server in a memory cgroup of
#                   DISK_MEM bytes (page cache included), Varnish with file storage, the page
#                   cache dropped after filling the caches;
#   8. prints markdown tables (also saved to $WORK/results.md), stops everything it started.
#
# emload runs on epoll (its default): an io_uring client made the servers measurably slower on
# this loopback workload (see bench/src/load.rs).
#
# Pinning: servers under test run on core $SERVER_CORE (taskset, plus a cpuset cgroup when one
# can be made: edgemirror pins its worker threads itself with sched_setaffinity, which a taskset
# mask does not prevent but a cpuset does); emload, wrk and the origin run on core $LOAD_CORE.
#
# Knobs (environment): PHASES DURATION (10) WARMUP (2) CONNS (64) COLD_ROUNDS (200) BURST (1000)
# SUS_KEYS_1K (20000) SUS_KEYS_64K (4000) SUS_KEYS_1M (500) DISK_KEYS (32768) DISK_BYTES (65536)
# DISK_MEM (512 MiB) DISK_MIX (zipf:0.99) DISK_RATE (8000: the disk phase's open-loop req/s)
# DISK_EDGE_MEMORY (DISK_MEM / 8: the RAM tier of the disk phase's sized nodes) DISK_VARIANTS
# ("async fault": their store.cold_reads) DISK_TARGETS (all: nginx-static nginx-proxy
# varnish-file edgemirror edgemirror-<variant>...)
# LOG_RATE (80000: the log phase's req/s) ACCESS_LOG_FORMAT (json) ACCESS_LOG_PATH (a file in $WORK;
# /dev/null leaves out the cost of the file writes)
# PORT_BASE (18080) WORK (/tmp/edgemirror-peers) SERVER_CORE (1) LOAD_CORE (0) MIX (uniform)
# REPEAT (3 runs per row, median shown) MISS_REPEAT (REPEAT: runs of the cold and sustained
# phases, each on fresh keys) QUIET_MAX_PCT (25) QUIET_WAIT (180: how long to wait for
# the machine to go idle before each run) KEEP_DATA (0: objects and stores are deleted at the
# end, logs are kept) WARM_MEMORY (1; 0: leave this VM's free page reporting as it is, see
# bench/guest_memory.sh) WARM_MEMORY_GIB TOUCH_MEMORY_MIB (1024: touched again before each miss run).
# LOAD_WARMUP (0.3: seconds of one client's hits on the target, untimed, right before each cold
# and sustained run, so that the run does not begin on vCPUs just out of an idle spell; 0: none).
# LO_MTU (unset: loopback as it is, a 65,536-byte MTU by default; e.g. 1500: the MTU of most
# networks, set on `lo` for the run and restored at the end: bench/loopback_mtu.sh).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
COLD_ROUNDS=${COLD_ROUNDS:-200}
PHASES=${PHASES:-hit log clients tls cold sustained burst disk}
LOG_RATE=${LOG_RATE:-80000}
DISK_KEYS=${DISK_KEYS:-32768}
DISK_BYTES=${DISK_BYTES:-65536}
DISK_MEM=${DISK_MEM:-$((512 << 20))}
DISK_MIX=${DISK_MIX:-zipf:0.99}
DISK_RATE=${DISK_RATE:-8000}
DISK_EDGE_MEMORY=${DISK_EDGE_MEMORY:-$((DISK_MEM / 8))}
DISK_VARIANTS=${DISK_VARIANTS:-async fault}
BURST=${BURST:-1000}
PORT_BASE=${PORT_BASE:-18080}
WORK=${WORK:-/tmp/edgemirror-peers}
ACCESS_LOG_PATH=${ACCESS_LOG_PATH:-$WORK/edgemirror-log/access.log}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
MIX=${MIX:-uniform}
REPEAT=${REPEAT:-3}
MISS_REPEAT=${MISS_REPEAT:-$REPEAT}
QUIET_MAX_PCT=${QUIET_MAX_PCT:-25}
QUIET_WAIT=${QUIET_WAIT:-180}
KEEP_DATA=${KEEP_DATA:-0}

SIZES=(1k 64k 1m)
declare -A BYTES=([1k]=1024 [64k]=65536 [1m]=1048576)
declare -A KEYS=([1k]=500 [64k]=300 [1m]=100)
# Distinct keys per size for the sustained-miss phase (each fetched once per target).
declare -A SUS_KEYS=([1k]=${SUS_KEYS_1K:-20000} [64k]=${SUS_KEYS_64K:-4000} [1m]=${SUS_KEYS_1M:-500})

P_ORIGIN=$PORT_BASE
P_STATIC=$((PORT_BASE + 1))
P_PROXY=$((PORT_BASE + 2))
P_VARNISH=$((PORT_BASE + 3))
P_EDGE=$((PORT_BASE + 4))
P_EDGE_ADMIN=$((PORT_BASE + 5))
P_VARNISH_ADMIN=$((PORT_BASE + 6))
P_VARNISH_FILE=$((PORT_BASE + 7))
P_VARNISH_FILE_ADMIN=$((PORT_BASE + 8))
P_STATIC_TLS=$((PORT_BASE + 9))
P_EDGE_TLS=$((PORT_BASE + 10))
# The disk phase's two extra nodes (data, admin): see phase_disk.
P_EDGE_ASYNC=$((PORT_BASE + 11))
P_EDGE_FAULT=$((PORT_BASE + 13))
# The hit phase's node with the access log on (data, admin): the cost of logging.
P_EDGE_LOG=$((PORT_BASE + 15))
P_EDGE_LOG_ADMIN=$((PORT_BASE + 16))
declare -A TLS_PORT=([nginx-static]=$P_STATIC_TLS [edgemirror]=$P_EDGE_TLS)

TARGETS=(nginx-static nginx-proxy varnish edgemirror)
declare -A PORT=([origin]=$P_ORIGIN [nginx-static]=$P_STATIC [nginx-proxy]=$P_PROXY
    [varnish]=$P_VARNISH [varnish-file]=$P_VARNISH_FILE [edgemirror]=$P_EDGE
    [edgemirror-async]=$P_EDGE_ASYNC [edgemirror-fault]=$P_EDGE_FAULT [edgemirror-log]=$P_EDGE_LOG)
# Path prefix in front of "/<size>/obj-N": edgemirror serves /{bucket}/{key}.
declare -A PREFIX=([origin]="" [nginx-static]="" [nginx-proxy]="" [varnish]="" [varnish-file]="" [edgemirror]="/bench"
    [edgemirror-async]="/bench" [edgemirror-fault]="/bench" [edgemirror-log]="/bench")
# Response header that says hit or miss (counted by emload), where the server has one.
declare -A TAG=([origin]="" [nginx-static]="" [nginx-proxy]="x-cache-status" [varnish]=""
    [varnish-file]="" [edgemirror]="x-edgemirror-source" [edgemirror-async]="x-edgemirror-source"
    [edgemirror-fault]="x-edgemirror-source" [edgemirror-log]="x-edgemirror-source")

log() { printf '[peers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

PIDS=()
CG=""
MEMCGS=() # memory cgroups made by the disk phase

cleanup() {
    local status=$?
    set +e
    if ((${#PIDS[@]})); then
        log "stopping ${#PIDS[@]} processes: ${PIDS[*]}"
        for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
        for _ in $(seq 50); do
            local alive=0
            for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.2
        done
        for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    fi
    if [[ -n $CG && -d $CG ]]; then
        # Whatever is left in our cgroup was started by this script (children of the servers).
        for _ in $(seq 25); do
            [[ -s $CG/cgroup.procs ]] || break
            sleep 0.2
        done
        for pid in $(cat "$CG/cgroup.procs" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        sleep 0.2
        rmdir "$CG" 2>/dev/null || log "could not remove cgroup $CG"
    fi
    for g in "${MEMCGS[@]}"; do rmdir "$g" 2>/dev/null || log "could not remove cgroup $g"; done
    declare -F restore_guest_memory >/dev/null && restore_guest_memory
    declare -F restore_loopback_mtu >/dev/null && restore_loopback_mtu
    if [[ $KEEP_DATA != 1 && -d $WORK ]]; then
        rm -rf "$WORK/www" "$WORK"/edgemirror*/store "$WORK/nginx-proxy/cache" "$WORK/varnish" "$WORK/varnish-file" \
            "$WORK/edgemirror-log/store" "$WORK/edgemirror-log/access.log"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# 1-2. Tools and binaries

[[ $(id -u) == 0 ]] || die "run as root (apt-get, cpuset cgroup, nginx/varnish as root)"
source "$ROOT/bench/loopback_mtu.sh"
set_loopback_mtu
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v varnishd >/dev/null || missing+=(varnish)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v curl >/dev/null || missing+=(curl)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The packages start their own services where an init system runs them; ours use other ports.

BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [[ -z ${EDGEMIRROR_BIN:-} ]]; then
    log "building edgemirror (release)"
    (cd "$ROOT" && cargo build --release --bin edgemirror)
    EDGEMIRROR_BIN=$BIN_DIR/edgemirror
fi
if [[ -z ${EMLOAD_BIN:-} ]]; then
    log "building emload (release)"
    (cd "$ROOT" && cargo build --release -p edgemirror-bench --bin emload)
    EMLOAD_BIN=$BIN_DIR/emload
fi
[[ -x $EDGEMIRROR_BIN ]] || die "no edgemirror binary at $EDGEMIRROR_BIN"
[[ -x $EMLOAD_BIN ]] || die "no emload binary at $EMLOAD_BIN"

for p in "$P_ORIGIN" "$P_STATIC" "$P_PROXY" "$P_VARNISH" "$P_EDGE" "$P_EDGE_ADMIN" "$P_VARNISH_ADMIN" \
    "$P_VARNISH_FILE" "$P_VARNISH_FILE_ADMIN" "$P_STATIC_TLS" "$P_EDGE_TLS" "$P_EDGE_LOG" "$P_EDGE_LOG_ADMIN"; do
    if ss -Htln "sport = :$p" | grep -q .; then
        die "port $p is in use; set PORT_BASE"
    fi
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------------------------------------
# 3. Objects

# WORK is wiped: only a folder this script made (it leaves a marker) or a new one.
if [[ -e $WORK && ! -f $WORK/.edgemirror-peers ]]; then
    die "$WORK exists and was not made by this script; set WORK to a new folder"
fi
rm -rf "$WORK"
mkdir -p "$WORK"/{www,logs}
touch "$WORK/.edgemirror-peers"
WWW=$WORK/www
# This VM hands free memory back to its host, and memory handed back is ~10x slower to write the
# first time: see bench/guest_memory.sh.
source "$ROOT/bench/guest_memory.sh"
warm_guest_memory
if [[ -n $GUEST_MEMORY_WARMED ]]; then
    log "guest memory: $GUEST_MEMORY_WARMED GiB touched, kept from the host for the run ($GUEST_REPORTING)"
fi
log "writing objects under $WWW"
make_objects() { # dir count bytes [name-prefix]
    local dir=$1 count=$2 bytes=$3 name=${4:-obj-}
    mkdir -p "$dir"
    # One random stream cut into files: fast, and no two objects are alike.
    head -c $((count * bytes)) /dev/urandom | split -b "$bytes" -d -a 6 - "$dir/.part-"
    local i=0
    for f in "$dir"/.part-*; do
        mv "$f" "$dir/$name$i"
        i=$((i + 1))
    done
}
for s in "${SIZES[@]}"; do
    make_objects "$WWW/$s" "${KEYS[$s]}" "${BYTES[$s]}"
    # Cold keys for the miss path: per run, 4 ranges of COLD_ROUNDS (origin, nginx-proxy,
    # varnish, edge).
    make_objects "$WWW/cold" $((4 * COLD_ROUNDS * MISS_REPEAT)) "${BYTES[$s]}" "$s-"
    # Sustained misses: in a run every target reads the same keys (each cache is cold for them).
    [[ " $PHASES " == *" sustained "* ]] && make_objects "$WWW/sus/$s" $((${SUS_KEYS[$s]} * MISS_REPEAT)) "${BYTES[$s]}"
done
for t in origin nginx-proxy varnish edgemirror; do
    head -c 1048576 /dev/urandom >"$WWW/cold/burst-1m-$t"
done
chmod -R a+rX "$WWW"
find "$WWW" -type f -exec cat {} + >/dev/null # into the page cache

# ---------------------------------------------------------------------------------------------
# 4. Servers

# One certificate for every HTTPS listener (ECDSA P-256), and an OpenSSL config that makes wrk
# offer TLS 1.3 with AES-128-GCM only (h2load is given the same with --tls13-ciphers).
TLS_DIR=$WORK/tls
mkdir -p "$TLS_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
chmod -R a+rX "$TLS_DIR"
cat >"$TLS_DIR/openssl-client.cnf" <<CNF
openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1.3
Ciphersuites = TLS_AES_128_GCM_SHA256
CNF

make_cgroup() {
    local v1=/sys/fs/cgroup/cpuset
    if [[ -f $v1/cpuset.cpus && -w $v1 ]]; then
        CG=$v1/edgemirror-bench-$$
        mkdir "$CG" && echo "$SERVER_CORE" >"$CG/cpuset.cpus" &&
            cat "$v1/cpuset.mems" >"$CG/cpuset.mems" && return 0
    elif grep -qw cpuset /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        echo +cpuset >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        CG=/sys/fs/cgroup/edgemirror-bench-$$
        mkdir "$CG" && echo "$SERVER_CORE" >"$CG/cpuset.cpus" && return 0
    fi
    [[ -n $CG ]] && rmdir "$CG" 2>/dev/null
    CG=""
    log "warning: no cpuset cgroup; servers are pinned with taskset only"
}
make_cgroup

# start NAME CORE CMD...: runs CMD pinned to CORE (in the server cgroup for SERVER_CORE).
start() {
    local name=$1 core=$2
    shift 2
    if [[ $core == "$SERVER_CORE" && -n $CG ]]; then
        bash -c 'echo $$ >"$0/cgroup.procs" && exec taskset -c "$1" "${@:2}"' "$CG" "$core" "$@" \
            >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" &
    else
        taskset -c "$core" "$@" >"$WORK/logs/$name.out" 2>"$WORK/logs/$name.err" &
    fi
    PIDS+=("$!")
    eval "PID_${name//-/_}=$!"
}

pid_of() { local v="PID_${1//-/_}"; echo "${!v}"; }

wait_http() { # name url
    for _ in $(seq 100); do
        if curl -s -o /dev/null --max-time 1 "$2"; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer at $2 (logs in $WORK/logs)"
}

# nginx_conf NAME PORT BODY [HTTP-EXTRA]: writes $WORK/NAME/nginx.conf, prints its path.
source "$ROOT/bench/nginx_conf.sh"

ORIGIN_LOG=$WORK/origin/access.log
conf=$(nginx_conf origin "$P_ORIGIN" "root $WWW; access_log $WORK/origin/access.log;")
start origin "$LOAD_CORE" nginx -c "$conf"
conf=$(nginx_conf nginx-static "$P_STATIC" "root $WWW;
        listen 127.0.0.1:$P_STATIC_TLS ssl;
        ssl_certificate $TLS_DIR/cert.pem;
        ssl_certificate_key $TLS_DIR/key.pem;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;")
start nginx-static "$SERVER_CORE" nginx -c "$conf"
# sendfile off for the proxy: with sendfile + tcp_nopush on, every 64 KiB response served from
# the cache stalled ~44 ms (1.4k req/s vs 19.7k with sendfile off, 64 connections, in a probe);
# that would measure an nginx pathology, not a cache. The static server keeps sendfile on.
conf=$(nginx_conf nginx-proxy "$P_PROXY" "
        sendfile off;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache edge;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            add_header X-Cache-Status \$upstream_cache_status;
        }" "
    proxy_cache_path $WORK/nginx-proxy/cache levels=1:2 keys_zone=edge:64m max_size=8g inactive=1d use_temp_path=off;
    upstream origin { server 127.0.0.1:$P_ORIGIN; keepalive 64; }")
start nginx-proxy "$SERVER_CORE" nginx -c "$conf"
# -t: a TTL longer than the run (the origin sends no Cache-Control). -s malloc,8G: room for
# everything the phases fetch (~3 GB), as nginx-proxy's max_size=8g and the node's store have.
# With 2G, Varnish was evicting during the sustained 1 MiB runs, so it did not keep what it
# fetched, and answered some GETs 503 when its nuke_limit was reached (bench/RESULTS.md,
# "Issue 14, fourteenth pass").
start varnish "$SERVER_CORE" varnishd -F -n "$WORK/varnish" -a "127.0.0.1:$P_VARNISH" \
    -T "127.0.0.1:$P_VARNISH_ADMIN" -b "127.0.0.1:$P_ORIGIN" -s malloc,8G -t 86400
# The bucket every edgemirror node of the bench serves: a mirror of the origin.
BENCH_BUCKET='[[buckets]]
name = "bench"
[[buckets.mirror]]
url = "http://127.0.0.1:'"$P_ORIGIN"'/"
key_prefix = ""'
mkdir -p "$WORK/edgemirror"
cat >"$WORK/edgemirror/edgemirror.toml" <<EOF
# Generated by bench/peers.sh: defaults but for the addresses, one worker and the bucket.
[server]
listen = "127.0.0.1:$P_EDGE"
workers = 1

[admin]
listen = "127.0.0.1:$P_EDGE_ADMIN"

[store]
dir = "$WORK/edgemirror/store"

[tls]
listen = "127.0.0.1:$P_EDGE_TLS"
[[tls.certs]]
cert = "$TLS_DIR/cert.pem"
key = "$TLS_DIR/key.pem"

$BENCH_BUCKET
EOF
start edgemirror "$SERVER_CORE" "$EDGEMIRROR_BIN" --config "$WORK/edgemirror/edgemirror.toml"

# wait_ready NAME: until the node started as NAME prints its ready line.
wait_ready() {
    local pid
    pid=$(pid_of "$1")
    for _ in $(seq 300); do
        grep -q "edgemirror ready" "$WORK/logs/$1.out" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || die "$1 exited: $(tail -5 "$WORK/logs/$1.err")"
        sleep 0.1
    done
    die "$1 not ready after 30 s"
}
wait_ready edgemirror
# The hit phase also runs edgemirror-log: the same node with the access log on (ACCESS_LOG_FORMAT,
# json by default, to a file), so the cost of logging is a ratio in the same run.
HIT_TARGETS=("${TARGETS[@]}")
WARM_TARGETS=(nginx-proxy varnish edgemirror)
if [[ " $PHASES " == *" hit "* || " $PHASES " == *" log "* ]]; then
    mkdir -p "$WORK/edgemirror-log"
    cat >"$WORK/edgemirror-log/edgemirror.toml" <<EOF
# Generated by bench/peers.sh: edgemirror's config with the access log on.
[server]
listen = "127.0.0.1:$P_EDGE_LOG"
workers = 1

[admin]
listen = "127.0.0.1:$P_EDGE_LOG_ADMIN"

[store]
dir = "$WORK/edgemirror-log/store"

[access_log]
path = "$ACCESS_LOG_PATH"
format = "${ACCESS_LOG_FORMAT:-json}"

$BENCH_BUCKET
EOF
    start edgemirror-log "$SERVER_CORE" "$EDGEMIRROR_BIN" --config "$WORK/edgemirror-log/edgemirror.toml"
    wait_ready edgemirror-log
    HIT_TARGETS+=(edgemirror-log)
    WARM_TARGETS+=(edgemirror-log)
fi
for t in origin "${TARGETS[@]}"; do
    wait_http "$t" "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/1k/obj-0"
done

# Where each server's threads may run (edgemirror re-pins its workers itself).
affinity() { # pid
    local out="" task
    for task in /proc/"$1"/task/*; do
        local comm cpus
        comm=$(cat "$task/comm" 2>/dev/null) || continue
        cpus=$(awk '/Cpus_allowed_list/ {print $2}' "$task/status" 2>/dev/null) || continue
        [[ -n $comm && -n $cpus ]] && out+="$comm=$cpus "
    done
    echo "$out"
}
EDGE_AFFINITY=$(affinity "$PID_edgemirror" | tr ' ' '\n' | grep . | sort | uniq -c | awk '{printf "%s x%s, ", $2, $1}')
log "edgemirror threads (name=cpus): $EDGE_AFFINITY"

# ---------------------------------------------------------------------------------------------
# Helpers to run the load and read its summary line

emload() { taskset -c "$LOAD_CORE" "$EMLOAD_BIN" "$@"; }

# kv LINE KEY: the value of KEY in a `summary:` line (empty if absent).
kv() { awk -v k="$2" '{for (i = 1; i <= NF; i++) { n = index($i, "="); if (n && substr($i, 1, n - 1) == k) { print substr($i, n + 1); exit } } }' <<<"$1"; }

# proc_tree_sum PID FILE AWK: the sum, over a process and its direct children (nginx workers,
# the Varnish child), of the number the AWK program prints from /proc/PID/FILE.
proc_tree_sum() {
    local total=0 p v
    for p in "$1" $(ps -o pid= --ppid "$1"); do
        v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
# CPU ticks (1/100 s) used so far.
proc_ticks() { proc_tree_sum "$1" stat '{ s = $0; sub(/^.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }'; }
# Bytes read from storage so far (/proc/PID/io).
proc_read_bytes() { proc_tree_sum "$1" io '/^read_bytes:/ { print $2 }'; }

origin_requests() { if [[ -f $ORIGIN_LOG ]]; then wc -l <"$ORIGIN_LOG"; else echo 0; fi; }

fmt_us() { awk -v u="$1" 'BEGIN { if (u == "") print "-"; else if (u < 1000) printf "%.0f µs", u; else if (u < 1e6) printf "%.2f ms", u / 1000; else printf "%.2f s", u / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

url_of() { # target size -> template
    echo "http://127.0.0.1:${PORT[$1]}${PREFIX[$1]}/$2/obj-{}"
}

# ---------------------------------------------------------------------------------------------
# 5. Warm the caches: every key once, then once more and check the second pass was all hits.

for s in "${SIZES[@]}"; do
    for t in "${WARM_TARGETS[@]}"; do
        hdr=()
        [[ -n ${TAG[$t]} ]] && hdr=(--count-header "${TAG[$t]}")
        emload --mix seq -n "${KEYS[$s]}" -c 8 -d 120 --url-template "$(url_of "$t" "$s")" \
            --keys "${KEYS[$s]}" --output line "${hdr[@]}" >>"$WORK/logs/warm.log"
        before=$(origin_requests)
        line=$(emload --mix seq -n "${KEYS[$s]}" -c 8 -d 120 --url-template "$(url_of "$t" "$s")" \
            --keys "${KEYS[$s]}" --output line "${hdr[@]}")
        echo "$line" >>"$WORK/logs/warm.log"
        fetched=$(($(origin_requests) - before))
        [[ $(kv "$line" ok) == "${KEYS[$s]}" ]] || die "warm-up of $t $s: $line"
        ((fetched == 0)) || log "warning: $t $s still went to the origin $fetched times after warm-up"
    done
done
log "caches warm"

if [[ ${1:-} == serve ]]; then
    # Debugging aid: keep the warmed servers up for SERVE_SECS (default 600) and print where.
    for t in origin "${TARGETS[@]}"; do log "$t: $(url_of "$t" 1k)  (pid $(pid_of "$t"))"; done
    log "serving for ${SERVE_SECS:-600} s; Ctrl-C stops everything"
    sleep "${SERVE_SECS:-600}"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# 6. Steady load

RESULTS=$WORK/results.md
: >"$RESULTS"
out() { echo "$*" | tee -a "$RESULTS"; }

# Busy CPU ticks of the whole machine (user + nice + system), to see what else ran meanwhile.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4; exit }' /proc/stat; }
# Waits (up to QUIET_WAIT s) until the machine is nearly idle: other work on these 2 cores
# (a compile, a fuzzer) would be measured as the server's slowness.
wait_quiet() {
    local waited=0 busy
    while :; do
        local a b
        a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat)
        sleep 1
        b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat)
        busy=$((b - a)) # ticks of 1/100 s in 1 s = % of one core
        ((busy <= QUIET_MAX_PCT || waited >= QUIET_WAIT)) && break
        ((waited == 0)) && log "machine busy (${busy}% of a core); waiting up to ${QUIET_WAIT} s"
        sleep 4
        waited=$((waited + 5))
    done
    ((busy <= QUIET_MAX_PCT)) || log "warning: still busy (${busy}% of a core); measuring anyway"
}

# run_load TARGET SIZE REP: one emload run; appends a record to $WORK/logs/rows-TARGET-SIZE.
run_load() {
    local t=$1 s=$2 rep=$3 hdr=() before pid ticks mticks started ended line srv em bg fetched rate=()
    # Open loop at LOAD_RATE req/s when set (rate_rows); its rows go to a file of their own.
    local k=$t-$s${LOAD_RATE:+-at-$LOAD_RATE}
    [[ -n ${TAG[$t]} ]] && hdr=(--count-header "${TAG[$t]}")
    [[ -n ${LOAD_RATE:-} ]] && rate=(--rate "$LOAD_RATE")
    wait_quiet
    log "load: $t $s (run $rep of $REPEAT)"
    before=$(origin_requests)
    pid=$(pid_of "$t")
    ticks=$(proc_ticks "$pid")
    mticks=$(machine_ticks)
    started=$(date +%s.%N)
    /usr/bin/time -f "cpu %U %S" -o "$WORK/logs/load-$k-$rep.time" taskset -c "$LOAD_CORE" \
        "$EMLOAD_BIN" -c "$CONNS" -d "$DURATION" -w "$WARMUP" --mix "${LOAD_MIX:-$MIX}" --seed "$rep" \
        --url-template "$(url_of "$t" "$s")" --keys "${KEYS[$s]}" "${hdr[@]}" "${rate[@]}" \
        >"$WORK/logs/load-$k-$rep.txt"
    ended=$(date +%s.%N)
    srv=$(($(proc_ticks "$pid") - ticks))
    em=$(awk '/^cpu/ { printf "%.0f", 100 * ($2 + $3) }' "$WORK/logs/load-$k-$rep.time")
    bg=$(($(machine_ticks) - mticks - srv - em))
    fetched=$(($(origin_requests) - before))
    line=$(grep '^summary:' "$WORK/logs/load-$k-$rep.txt")
    # CPU shares in % of one core over the whole run (warm-up included).
    read -r srv em bg < <(awk -v a="$started" -v b="$ended" -v s="$srv" -v e="$em" -v g="$bg" \
        'BEGIN { w = b - a; if (g < 0) g = 0; printf "%.0f %.0f %.0f\n", s / w, e / w, g / w }')
    echo "$(kv "$line" rps)|$(kv "$line" gbps)|$(kv "$line" p50_us)|$(kv "$line" p99_us)|$(kv "$line" p999_us)|$(kv "$line" errors) / $(kv "$line" non2xx)|$fetched|$srv% / $em% / $bg%" \
        >>"$WORK/logs/rows-$k"
}

declare -A RPS
# median_row FILE: of the runs in FILE (one "req/s|..." line each), the median by req/s, with
# "|slowest–fastest" req/s appended.
median_row() {
    local sorted lo hi
    sorted=$(sort -t'|' -k1,1g "$1")
    lo=$(head -1 <<<"$sorted" | cut -d'|' -f1)
    hi=$(tail -1 <<<"$sorted" | cut -d'|' -f1)
    echo "$(sed -n "$((($(wc -l <<<"$sorted") + 1) / 2))p" <<<"$sorted")|$(printf '%.0f–%.0f' "$lo" "$hi")"
}

# rate_rows SIZE TARGET...: every target at the same offered load, LOAD_RATE req/s in an open
# loop (emload --rate), REPEAT runs per target taking turns; per target the run with the median
# p99, and the range of p99 over the runs.
rate_rows() {
    local s=$1 rep t sorted p50 p99 p999 errs cpu rps
    shift
    for rep in $(seq "$REPEAT"); do
        for t in "$@"; do run_load "$t" "$s" "$rep"; done
    done
    for t in "$@"; do
        sorted=$(sort -t'|' -k4,4g "$WORK/logs/rows-$t-$s-at-$LOAD_RATE")
        IFS='|' read -r rps _ p50 p99 p999 errs _ cpu <<<"$(sed -n "$(((REPEAT + 1) / 2))p" <<<"$sorted")"
        out "| $t | $(printf '%.0f' "$rps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $(fmt_us "$(head -1 <<<"$sorted" | cut -d'|' -f4)")–$(fmt_us "$(tail -1 <<<"$sorted" | cut -d'|' -f4)") | $(fmt_us "$p999") | $errs | $cpu |"
    done
}

# load_rows SIZE TARGET...: REPEAT runs per target (taking turns), then one table row each
# (median by req/s, with the range), the last column the node's ratio to the row.
load_rows() {
    local s=$1 rep t
    shift
    for rep in $(seq "$REPEAT"); do
        for t in "$@"; do run_load "$t" "$s" "$rep"; done
    done
    declare -A MED=()
    # The node the last column is about: edgemirror, or the first edgemirror-* target (the disk
    # phase may run only edgemirror-async).
    local node=edgemirror
    if [[ " $* " != *" edgemirror "* ]]; then
        for t in "$@"; do
            if [[ $t == edgemirror* ]]; then node=$t; break; fi
        done
    fi
    for t in "$@"; do
        MED[$t]=$(median_row "$WORK/logs/rows-$t-$s")
        RPS[$t/$s]=${MED[$t]%%|*}
    done
    for t in "$@"; do
        IFS='|' read -r rps gbps p50 p99 p999 errs fetched cpu range <<<"${MED[$t]}"
        out "| $t | $s | $(printf '%.0f' "$rps") | $range | $(printf '%.3f' "$gbps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $(fmt_us "$p999") | $errs | $fetched | $cpu | $(ratio "${RPS[$node/$s]:-0}" "$rps") |"
    done
}

phase_hit() {
    out "## Hit path: $CONNS keep-alive connections, $MIX keys, ${WARMUP} s warm-up + ${DURATION} s per run"
    out ""
    out "Keys per size: 1k ${KEYS[1k]}, 64k ${KEYS[64k]}, 1m ${KEYS[1m]}. Each row is the median (by req/s) of $REPEAT runs, the targets taking turns; range = slowest and fastest run."
    out "CPU = the server's processes / emload / everything else on the machine, in % of one core over the run (approximate: softirq time is not attributed)."
    out ""
    out "| target | size | req/s | range | GB/s | p50 | p99 | p99.9 | errors / non-2xx | origin reqs | CPU server / emload / other | edgemirror / target |"
    out "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local s
    for s in "${SIZES[@]}"; do load_rows "$s" "${HIT_TARGETS[@]}"; done
    out ""
    if [[ " ${HIT_TARGETS[*]} " == *" edgemirror-log "* ]]; then
        out "edgemirror-log is edgemirror with \`[access_log]\` on (${ACCESS_LOG_FORMAT:-json}, to a file); its last column is edgemirror's req/s over its own (above 1: logging costs that much). The load client is near its own limit at 1 KiB: the \`log\` phase measures the cost as server CPU at one offered load."
        out ""
    fi
}

# The cost of the access log: edgemirror and edgemirror-log (the same node with [access_log]
# on) at one offered load, LOG_RATE req/s of 1 KiB hits in an open loop, REPEAT runs each
# taking turns. At the same load, the server's CPU (the table's first CPU figure) is the cost;
# a closed loop (the hit phase) leaves the answer to the load client, near its own limit there.
phase_log() {
    out "## Access log cost: 1 KiB hits at $LOG_RATE req/s, open loop, $CONNS connections (median p99 of $REPEAT runs)"
    out ""
    out "| target | req/s | p50 | p99 | p99 range | p99.9 | errors / non-2xx | CPU server / emload / other |"
    out "|---|---:|---:|---:|---:|---:|---:|---:|"
    LOAD_RATE=$LOG_RATE rate_rows 1k edgemirror edgemirror-log
    local lines dropped
    lines=$(curl -s "http://127.0.0.1:$P_EDGE_LOG_ADMIN/metrics" | awk '$1 == "edgemirror_access_log_lines_total" { print $2 }')
    dropped=$(curl -s "http://127.0.0.1:$P_EDGE_LOG_ADMIN/metrics" | awk '$1 == "edgemirror_access_log_dropped_total" { print $2 }')
    out ""
    out "edgemirror-log logged $lines lines (${ACCESS_LOG_FORMAT:-json}, to $ACCESS_LOG_PATH), ${dropped:-?} dropped. Per-run server CPU, edgemirror then edgemirror-log: $(for t in edgemirror edgemirror-log; do cut -d'|' -f8 "$WORK/logs/rows-$t-1k-at-$LOG_RATE" | awk '{ printf "%s ", $1 }'; printf '; '; done)"
    out ""
}

# ---------------------------------------------------------------------------------------------
# Other load clients on the hit path: wrk and h2load (HTTP/1.1), one key per size.

wrk_us() { # "1.23ms" -> microseconds
    awk -v v="$1" 'BEGIN { m = 1; if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1e6; sub(/[a-z]+$/, "", v); print v * m }'
}

# run_client TOOL TARGET SIZE REP: one run; appends "req/s|MB/s|p50|p99|mean|tool cpu%|server cpu%"
# to $WORK/logs/client-TOOL-TARGET-SIZE. wrk has no Lua script (one would make wrk, not the
# server, the bottleneck); h2load reports no percentiles, only its mean.
run_client() {
    local tool=$1 t=$2 s=$3 rep=$4 scheme=${5:-http} url w pid ticks started ended srv rps mbps p50="" p99="" mean="" cpu
    url="http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/$s/obj-0"
    [[ $scheme == https ]] && url="https://127.0.0.1:${TLS_PORT[$t]}${PREFIX[$t]}/$s/obj-0"
    w=$WORK/logs/client-$scheme-$tool-$t-$s-$rep.txt
    wait_quiet
    log "client: $tool $t $s (run $rep of $REPEAT)"
    pid=$(pid_of "$t")
    ticks=$(proc_ticks "$pid")
    started=$(date +%s.%N)
    case $tool in
    wrk)
        OPENSSL_CONF=$TLS_DIR/openssl-client.cnf /usr/bin/time -f "cpu %U %S %e" -o "$w.time" \
            taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$w" 2>&1
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$w")
        mbps=$(awk -v r="$rps" -v b="${BYTES[$s]}" 'BEGIN { printf "%.1f", r * b / 1e6 }')
        p50=$(wrk_us "$(awk '$1 == "50%" {print $2}' "$w")")
        p99=$(wrk_us "$(awk '$1 == "99%" {print $2}' "$w")")
        ;;
    h2load)
        /usr/bin/time -f "cpu %U %S %e" -o "$w.time" taskset -c "$LOAD_CORE" \
            h2load --h1 -t1 -c"$CONNS" -D "$DURATION" --warm-up-time="$WARMUP" \
            --tls13-ciphers=TLS_AES_128_GCM_SHA256 "$url" >"$w" 2>&1
        rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i == "req/s,") print $(i - 1) }' "$w")
        mbps=$(awk -v r="$rps" -v b="${BYTES[$s]}" 'BEGIN { printf "%.1f", r * b / 1e6 }')
        mean=$(wrk_us "$(awk '/^time for request:/ {print $6}' "$w")")
        grep -q "0 failed, 0 errored" "$w" || log "warning: h2load saw failures: $(grep '^requests:' "$w")"
        ;;
    esac
    ended=$(date +%s.%N)
    srv=$(($(proc_ticks "$pid") - ticks))
    cpu=$(awk '/^cpu/ { printf "%.0f", 100 * ($2 + $3) / $4 }' "$w.time")
    srv=$(awk -v a="$started" -v b="$ended" -v s="$srv" 'BEGIN { printf "%.0f", s / (b - a) }')
    echo "${rps:-0}|$mbps|$p50|$p99|$mean|$cpu|$srv" >>"$WORK/logs/client-$scheme-$tool-$t-$s"
}

# client_rows SCHEME TOOL SIZE TARGET...: REPEAT runs per target, then a row each (median).
client_rows() {
    local scheme=$1 tool=$2 s=$3 rep t
    shift 3
    for rep in $(seq "$REPEAT"); do
        for t in "$@"; do run_client "$tool" "$t" "$s" "$rep" "$scheme"; done
    done
    declare -A CMED=() CRPS=()
    for t in "$@"; do
        CMED[$t]=$(median_row "$WORK/logs/client-$scheme-$tool-$t-$s")
        CRPS[$t]=${CMED[$t]%%|*}
    done
    for t in "$@"; do
        IFS='|' read -r rps mbps p50 p99 mean cpu srv range <<<"${CMED[$t]}"
        out "| $tool | $s | $t | $(printf '%.0f' "$rps") | $range | $mbps | $(fmt_us "$p50") | $(fmt_us "$p99") | $(fmt_us "$mean") | $cpu% / $srv% | $(ratio "${CRPS[edgemirror]}" "$rps") |"
    done
}

phase_clients() {
    out "## Hit path with wrk and h2load: one key per size, $CONNS connections, ${DURATION} s per run"
    out ""
    out "Each row is the median (by req/s) of $REPEAT runs, the targets taking turns. wrk reads 8 KiB at a time; h2load (\`--h1\`, ${WARMUP} s warm-up) reports a mean, no percentiles. CPU = the tool's and the server's, in % of one core: a tool near 100% is the bottleneck, not the server."
    out ""
    out "| tool | size | target | req/s | range | MB/s | p50 | p99 | mean | CPU tool / server | edgemirror / target |"
    out "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    local tool s
    for tool in wrk h2load; do
        for s in "${SIZES[@]}"; do client_rows http "$tool" "$s" "${TARGETS[@]}"; done
    done
    out ""
}

# The HTTPS hit path: nginx (static files; sendfile does not apply under TLS) against the node,
# same certificate, TLS 1.3, AES-128-GCM.
phase_tls() {
    local cipher_nginx cipher_edge tool s
    cipher_nginx=$(OPENSSL_CONF=$TLS_DIR/openssl-client.cnf openssl s_client -connect "127.0.0.1:$P_STATIC_TLS" </dev/null 2>/dev/null | awk '/Cipher is/ {print $NF; exit}')
    cipher_edge=$(OPENSSL_CONF=$TLS_DIR/openssl-client.cnf openssl s_client -connect "127.0.0.1:$P_EDGE_TLS" </dev/null 2>/dev/null | awk '/Cipher is/ {print $NF; exit}')
    out "## HTTPS hit path: one key per size, $CONNS connections, ${DURATION} s per run, TLS 1.3"
    out ""
    out "Same ECDSA P-256 certificate; negotiated (OpenSSL s_client): nginx $cipher_nginx, edgemirror $cipher_edge. Each row is the median of $REPEAT runs. No kernel TLS on either side: this kernel has no \`tls\` ULP (/proc/sys/net/ipv4/tcp_available_ulp: $(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null))."
    out ""
    out "| tool | size | target | req/s | range | MB/s | p50 | p99 | mean | CPU tool / server | edgemirror / target |"
    out "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for tool in wrk h2load; do
        for s in "${SIZES[@]}"; do client_rows https "$tool" "$s" nginx-static edgemirror; done
    done
    out ""
}

# ---------------------------------------------------------------------------------------------
# 7. Miss path

# spread "V1 V2 ...": "median lowest highest" of the values (the lower middle of an even count).
spread() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'; }
# pooled_p99 CSV...: the p99 of the complete time over the GETs answered 200 in these `emload
# --cold` CSVs together (all runs of a target). One run's p99 of 200 GETs is its second or third
# slowest GET, so the median of three runs' p99s turns on three or four GETs that this VM stalls
# for every server alike (bench/RESULTS.md, "Issue 14, twenty-first pass"); 600 GETs pooled put
# the p99 at the sixth slowest.
pooled_p99() {
    awk -F, 'FNR > 1 && $2 == 200 { print $5 }' "$@" | sort -g |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; print v[i] }'
}

# The miss phases run MISS_REPEAT times, each run on keys no cache has seen, the four targets
# taking turns with a different one first each run: on this kind of VM the speed of a run
# depends on what the machine did just before (bench/RESULTS.md, "Issue 14, fourth pass"), so
# one run per target ranks them by luck. Each run starts on guest memory touched just before
# (touch_guest_memory): every cache writes what it fetches into new pages.
MISS_TARGETS=(origin nginx-proxy varnish edgemirror)
miss_order() { # rep -> the targets in this run's order
    local rep=$1 i n=${#MISS_TARGETS[@]}
    for ((i = 0; i < n; i++)); do echo "${MISS_TARGETS[$(((i + rep - 1) % n))]}"; done
}
miss_index() {
    local i
    for i in "${!MISS_TARGETS[@]}"; do
        if [[ ${MISS_TARGETS[$i]} == "$1" ]]; then echo "$i"; fi
    done
}

phase_cold() {
    out "## Miss path: one cold GET at a time, $COLD_ROUNDS fresh keys per run, $MISS_REPEAT runs"
    out ""
    out "TTFB and complete are timed from the request. Each cell is the median over $MISS_REPEAT runs (range: lowest–highest run), but the p99 is taken over all runs' GETs together ($((MISS_REPEAT * COLD_ROUNDS)) a target; the range is of the runs' own p99s), the targets taking turns with a different one first each run, every run on keys no cache has seen, right after $LOAD_WARMUP s of one client's hits on the target (load_warmup in bench/guest_memory.sh: not begun on vCPUs just out of an idle spell). \"vs best peer\" = edgemirror's complete time over the lower of nginx-proxy's and Varnish's (below 1 is faster): the p50 of the medians, the p99 of all runs' GETs, and the p50 per run."
    out ""
    out "| target | size | TTFB p50 | complete p50 (range) | complete p99 of all runs (range of the runs') | complete max | edgemirror vs best peer (p50 of the medians / p99 of all runs) | per run (p50) | served from |"
    out "|---|---|---:|---:|---:|---:|---:|---:|---|"
    local s t rep
    for s in "${SIZES[@]}"; do
        declare -A C50=() C99=() P99=() TTFB=() CMAX=() TAGS=()
        local per_run=""
        for rep in $(seq "$MISS_REPEAT"); do
            declare -A R50=()
            for t in $(miss_order "$rep"); do
                local hdr=() base line tags
                [[ -n ${TAG[$t]} ]] && hdr=(--count-header "${TAG[$t]}")
                base=$((((rep - 1) * ${#MISS_TARGETS[@]} + $(miss_index "$t")) * COLD_ROUNDS))
                origin_warm "$WWW/cold/$s-{}" "$base" "$COLD_ROUNDS"
                touch_guest_memory
                wait_quiet
                load_warmup "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/$s/obj-0"
                log "cold: $t $s (run $rep of $MISS_REPEAT)"
                emload --cold -c 1 --rounds "$COLD_ROUNDS" --keys "$COLD_ROUNDS" --key-offset "$base" \
                    --url-template "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/cold/$s-{}" "${hdr[@]}" \
                    --csv "$WORK/logs/cold-$t-$s-$rep.csv" >"$WORK/logs/cold-$t-$s-$rep.txt"
                line=$(grep '^summary:' "$WORK/logs/cold-$t-$s-$rep.txt")
                R50[$t]=$(kv "$line" total_p50_us)
                C50[$t]+=" ${R50[$t]}"
                C99[$t]+=" $(kv "$line" total_p99_us)"
                TTFB[$t]+=" $(kv "$line" ttfb_p50_us)"
                CMAX[$t]+=" $(kv "$line" total_max_us)"
                tags=$(tr ' ' '\n' <<<"$line" | { grep '^tag_' || true; } | sed 's/^tag_//' | paste -sd, -)
                [[ $(kv "$line" ok) == "$COLD_ROUNDS" ]] || tags+=" (ok=$(kv "$line" ok) errors=$(kv "$line" errors) non2xx=$(kv "$line" non2xx))"
                TAGS[$t]=${tags:--}
            done
            per_run+=" $(awk -v e="${R50[edgemirror]}" -v a="${R50[nginx-proxy]}" -v b="${R50[varnish]}" 'BEGIN { printf "%.3f", e / ((a < b) ? a : b) }')"
        done
        local m50 lo50 hi50 m99 lo99 hi99 best50="" best99="" runs
        for t in "${MISS_TARGETS[@]}"; do
            P99[$t]=$(pooled_p99 $(seq -f "$WORK/logs/cold-$t-$s-%g.csv" "$MISS_REPEAT"))
        done
        for t in nginx-proxy varnish; do
            read -r m50 _ _ <<<"$(spread "${C50[$t]}")"
            m99=${P99[$t]}
            if [[ -z $best50 ]] || awk -v a="$m50" -v b="$best50" 'BEGIN { exit !(a < b) }'; then best50=$m50; fi
            if [[ -z $best99 ]] || awk -v a="$m99" -v b="$best99" 'BEGIN { exit !(a < b) }'; then best99=$m99; fi
        done
        read -r _ lo50 hi50 <<<"$(spread "$per_run")"
        runs=$(printf '%.2f–%.2f' "$lo50" "$hi50")
        for t in "${MISS_TARGETS[@]}"; do
            local vs="-" pr="-"
            read -r m50 lo50 hi50 <<<"$(spread "${C50[$t]}")"
            read -r _ lo99 hi99 <<<"$(spread "${C99[$t]}")"
            m99=${P99[$t]}
            [[ $t == edgemirror ]] && vs="$(ratio "$m50" "$best50") / $(ratio "$m99" "$best99")" && pr=$runs
            out "| $t | $s | $(fmt_us "$(spread "${TTFB[$t]}" | cut -d' ' -f1)") | $(fmt_us "$m50") ($(fmt_us "$lo50")–$(fmt_us "$hi50")) | $(fmt_us "$m99") ($(fmt_us "$lo99")–$(fmt_us "$hi99")) | $(fmt_us "$(spread "${CMAX[$t]}" | cut -d' ' -f3)") | $vs | $pr | ${TAGS[$t]} |"
        done
    done
    out ""
}

phase_sustained() {
    out "## Sustained misses: ${SUS_KEYS[1k]} / ${SUS_KEYS[64k]} / ${SUS_KEYS[1m]} distinct cold keys (1k / 64k / 1m), each once, $CONNS connections, $MISS_REPEAT runs"
    out ""
    out "\"origin direct\" is the same client reading the origin itself: the ceiling (the origin and the client share core $LOAD_CORE). Each run uses keys no cache has seen, right after $LOAD_WARMUP s of one client's hits on the target (load_warmup in bench/guest_memory.sh); the targets take turns with a different one first each run. req/s is the median over $MISS_REPEAT runs (range: slowest–fastest run); the other columns are from the run with the median req/s; origin requests are summed over the runs, from the origin's access log. \"edgemirror / target\": of the medians, and per run."
    out ""
    out "| target | size | req/s (range) | GB/s | p50 | p99 | errors / non-2xx | origin reqs | CPU server / emload | edgemirror / target | per run |"
    out "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local s t rep n
    for s in "${SIZES[@]}"; do
        declare -A FETCHED=() PER_RUN=() MED=()
        n=${SUS_KEYS[$s]}
        for t in "${MISS_TARGETS[@]}"; do : >"$WORK/logs/sus-rows-$t-$s"; done
        for rep in $(seq "$MISS_REPEAT"); do
            declare -A RPS=()
            for t in $(miss_order "$rep"); do
                local hdr=() before pid ticks started ended line srv em
                [[ -n ${TAG[$t]} ]] && hdr=(--count-header "${TAG[$t]}")
                origin_warm "$WWW/sus/$s/obj-{}" $(((rep - 1) * n)) "$n"
                touch_guest_memory
                wait_quiet
                load_warmup "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/$s/obj-0"
                log "sustained misses: $t $s (run $rep of $MISS_REPEAT)"
                before=$(origin_requests)
                pid=$(pid_of "$t")
                ticks=$(proc_ticks "$pid")
                started=$(date +%s.%N)
                /usr/bin/time -f "cpu %U %S" -o "$WORK/logs/sus-$t-$s-$rep.time" taskset -c "$LOAD_CORE" \
                    "$EMLOAD_BIN" -c "$CONNS" -n "$n" --mix seq --timeout-ms 60000 \
                    --url-template "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/sus/$s/obj-{}" \
                    --keys "$n" --key-offset $(((rep - 1) * n)) "${hdr[@]}" >"$WORK/logs/sus-$t-$s-$rep.txt"
                ended=$(date +%s.%N)
                sleep 0.3 # fills that outlive their client reach the origin's log
                srv=$(($(proc_ticks "$pid") - ticks))
                [[ $t == origin ]] && srv=0
                em=$(awk '/^cpu/ { printf "%.0f", 100 * ($2 + $3) }' "$WORK/logs/sus-$t-$s-$rep.time")
                FETCHED[$t]=$((${FETCHED[$t]:-0} + $(origin_requests) - before))
                line=$(grep '^summary:' "$WORK/logs/sus-$t-$s-$rep.txt")
                read -r srv em < <(awk -v a="$started" -v b="$ended" -v s="$srv" -v e="$em" \
                    'BEGIN { w = b - a; printf "%.0f %.0f\n", s / w, e / w }')
                RPS[$t]=$(kv "$line" rps)
                echo "${RPS[$t]}|$(kv "$line" gbps)|$(kv "$line" p50_us)|$(kv "$line" p99_us)|$(kv "$line" errors) / $(kv "$line" non2xx)|$srv% / $em%" \
                    >>"$WORK/logs/sus-rows-$t-$s"
            done
            for t in "${MISS_TARGETS[@]}"; do
                PER_RUN[$t]+=" $(awk -v a="${RPS[edgemirror]}" -v b="${RPS[$t]}" 'BEGIN { printf "%.3f", a / b }')"
            done
        done
        for t in "${MISS_TARGETS[@]}"; do MED[$t]=$(median_row "$WORK/logs/sus-rows-$t-$s"); done
        for t in "${MISS_TARGETS[@]}"; do
            local name=$t rps gbps p50 p99 errs cpu range plo phi
            [[ $t == origin ]] && name="origin direct"
            IFS='|' read -r rps gbps p50 p99 errs cpu range <<<"${MED[$t]}"
            read -r _ plo phi <<<"$(spread "${PER_RUN[$t]}")"
            out "| $name | $s | $(printf '%.0f' "$rps") ($range) | $(printf '%.3f' "$gbps") | $(fmt_us "$p50") | $(fmt_us "$p99") | $errs | ${FETCHED[$t]} | $cpu | $(ratio "${MED[edgemirror]%%|*}" "$rps") | $(printf '%.2f–%.2f' "$plo" "$phi") |"
        done
    done
    out ""
    out "Varnish's LRU evictions so far (n_lru_nuked; its storage should hold every object fetched): $(varnishstat -n "$WORK/varnish" -1 -f MAIN.n_lru_nuked 2>/dev/null | awk '{ print $2 }')"
    out ""
}

# ---------------------------------------------------------------------------------------------
# From disk: a working set several times the memory each server may use.

# memcg NAME PID...: puts the processes (and their children) in a memory cgroup of their own,
# limited to DISK_MEM bytes (page cache included), on the server core; its path is left in
# MEMCG. cgroup v1 or v2.
memcg() {
    local name=$1 g p q
    shift
    if [[ -w /sys/fs/cgroup/memory ]]; then
        g=/sys/fs/cgroup/memory/edgemirror-bench-$$-$name
        mkdir -p "$g" && echo "$DISK_MEM" >"$g/memory.limit_in_bytes"
    elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
        echo "+memory +cpuset" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        g=/sys/fs/cgroup/edgemirror-bench-$$-$name
        mkdir -p "$g" && echo "$SERVER_CORE" >"$g/cpuset.cpus" && echo "$DISK_MEM" >"$g/memory.max"
    else
        die "no memory cgroup controller: the disk phase needs one"
    fi
    MEMCGS+=("$g")
    for p in "$@"; do
        for q in "$p" $(ps -o pid= --ppid "$p"); do echo "$q" >"$g/cgroup.procs"; done
    done
    MEMCG=$g
}
# Memory the cgroup holds now: "total / page cache", in MiB.
memcg_use() {
    awk '$1 == "cache" || $1 == "file" { c = $2 } $1 == "rss" || $1 == "anon" { r = $2 }
        END { printf "%.0f / %.0f MiB", (c + r) / 1048576, c / 1048576 }' "$1/memory.stat"
}

phase_disk() {
    local n=$DISK_KEYS t g
    log "disk phase: $n objects of $DISK_BYTES bytes, servers limited to $((DISK_MEM >> 20)) MiB each"
    python3 - "$WWW/disk" "$n" "$DISK_BYTES" <<'PY'
import os, sys
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(d, exist_ok=True)
for i in range(n):
    with open(f"{d}/obj-{i}", "wb") as f:
        f.write(os.urandom(size))
PY
    chmod -R a+rX "$WWW/disk"
    BYTES[disk]=$DISK_BYTES
    KEYS[disk]=$n
    local targets
    read -r -a targets <<<"${DISK_TARGETS:-nginx-static nginx-proxy varnish-file edgemirror $(printf 'edgemirror-%s ' $DISK_VARIANTS)}"
    # Varnish with file storage (the malloc one above holds everything in RAM).
    if [[ " ${targets[*]} " == *" varnish-file "* ]]; then
        mkdir -p "$WORK/varnish-file"
        start varnish-file "$SERVER_CORE" varnishd -F -n "$WORK/varnish-file/n" -a "127.0.0.1:$P_VARNISH_FILE" \
            -T "127.0.0.1:$P_VARNISH_FILE_ADMIN" -b "127.0.0.1:$P_ORIGIN" \
            -s "file,$WORK/varnish-file/storage.bin,$(( (n * DISK_BYTES * 3 / 2) >> 20 ))M" -t 86400
        wait_http varnish-file "http://127.0.0.1:$P_VARNISH_FILE/1k/obj-0"
    fi
    # Two more nodes configured for the memory they may use: a RAM tier of DISK_EDGE_MEMORY (an
    # eighth of it by default) and no foyer disk tier (the page cache holds the rest, as it does for nginx and Varnish);
    # "edgemirror" above keeps the defaults (a 256 MiB RAM tier and a 1 GiB foyer disk tier).
    # One reads bytes not in memory with io_uring before serving them (store.cold_reads =
    # "async", the default), the other through its mapping's page faults ("fault"), which
    # stall the core: the two ways issue 14 asks to measure side by side. DISK_VARIANTS (and
    # DISK_TARGETS) run a subset.
    local v
    for v in $DISK_VARIANTS; do
        t=edgemirror-$v
        mkdir -p "$WORK/$t"
        cat >"$WORK/$t/edgemirror.toml" <<EOF
# Generated by bench/peers.sh (disk phase): sized for a $((DISK_MEM >> 20)) MiB memory limit.
[server]
listen = "127.0.0.1:${PORT[$t]}"
workers = 1

[admin]
listen = "127.0.0.1:$((PORT[$t] + 1))"

[store]
dir = "$WORK/$t/store"
cold_reads = "$v"

[cache]
memory_bytes = $DISK_EDGE_MEMORY
disk_bytes = 0

$BENCH_BUCKET
EOF
        start "$t" "$SERVER_CORE" "$EDGEMIRROR_BIN" --config "$WORK/$t/edgemirror.toml"
        wait_ready "$t"
    done
    declare -A CGOF=()
    for t in "${targets[@]}"; do
        memcg "$t" "$(pid_of "$t")"
        CGOF[$t]=$MEMCG
    done
    # Every object into every cache once (from the origin), then nothing in the page cache: each
    # server starts from its own files and keeps what its memory limit lets it.
    for t in "${targets[@]}"; do
        [[ $t == nginx-static ]] && continue
        log "disk phase: filling $t"
        emload --mix seq -n "$n" -c 8 -d 600 --url-template "$(url_of "$t" disk)" --keys "$n" \
            --output line >>"$WORK/logs/warm-disk.log"
    done
    sync
    echo 3 >/proc/sys/vm/drop_caches
    out "## From disk: $n objects of $((DISK_BYTES >> 10)) KiB ($(( (n * DISK_BYTES) >> 20 )) MiB), keys ${DISK_MIX}, each server limited to $((DISK_MEM >> 20)) MiB (memory cgroup, page cache included)"
    out ""
    out "Every cache was filled with every object, then the page cache was dropped. Each row is the median of $REPEAT runs of ${WARMUP} s + ${DURATION} s, the targets taking turns; \"read from disk\" is what the server's processes read from storage over its runs (/proc/PID/io), \"memory\" the cgroup's use after them (total / page cache)."
    out ""
    out "| target | size | req/s | range | GB/s | p50 | p99 | p99.9 | errors / non-2xx | origin reqs | CPU server / emload / other | edgemirror / target |"
    out "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    declare -A READ0=()
    for t in "${targets[@]}"; do READ0[$t]=$(proc_read_bytes "$(pid_of "$t")"); done
    LOAD_MIX=$DISK_MIX load_rows disk "${targets[@]}"
    out ""
    out "| target | read from disk over its runs | memory after |"
    out "|---|---:|---:|"
    for t in "${targets[@]}"; do
        out "| $t | $(( ($(proc_read_bytes "$(pid_of "$t")") - READ0[$t]) >> 20 )) MiB | $(memcg_use "${CGOF[$t]}") |"
    done
    out ""
    out "The same at one offered load for every server: $DISK_RATE req/s in an open loop (emload --rate: each request is due at a fixed time and its latency counts from then, so a server that falls behind is charged for the wait; the client's timer adds up to about 1 ms). Per target the run with the median p99, and the p99 range over $REPEAT runs."
    out ""
    out "| target | req/s | p50 | p99 | p99 range | p99.9 | errors / non-2xx | CPU server / emload / other |"
    out "|---|---:|---:|---:|---:|---:|---:|---:|"
    LOAD_MIX=$DISK_MIX LOAD_RATE=$DISK_RATE rate_rows disk "${targets[@]}"
    out ""
    out "Where the nodes' answers came from, over the fill and the runs (their /metrics):"
    out ""
    local admin
    for t in "${targets[@]}"; do
        [[ $t == edgemirror* ]] || continue
        admin=$((PORT[$t] + 1))
        out "- $t: $(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^edgemirror_(hits_memory|hits_disk_cache|hits_store|store_cold_reads)_total / { sub("edgemirror_", "", $1); sub("_total", "", $1); printf "%s%s %s", sep, $1, $2; sep = ", " }')"
    done
    out ""
}

phase_burst() {
    out "## Miss path: $BURST concurrent cold GETs of one 1 MiB key (sent at once; times from the burst start)"
    out ""
    out "| target | ok | errors / non-2xx | TTFB p50 | TTFB p99 | TTFB max | last finished | origin requests | served from |"
    out "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    local t
    for t in origin nginx-proxy varnish edgemirror; do
        local hdr=() line fetched tags
        [[ -n ${TAG[$t]} ]] && hdr=(--count-header "${TAG[$t]}")
        wait_quiet
        log "burst: $t"
        emload --cold -c "$BURST" --timeout-ms 60000 \
            --url "http://127.0.0.1:${PORT[$t]}${PREFIX[$t]}/cold/burst-1m-$t" "${hdr[@]}" \
            --csv "$WORK/logs/burst-$t.csv" >"$WORK/logs/burst-$t.txt"
        sleep 0.5 # let the origin's log catch up with fills that outlive their client
        line=$(grep '^summary:' "$WORK/logs/burst-$t.txt")
        fetched=$(grep -c "GET /cold/burst-1m-$t " "$ORIGIN_LOG" || true)
        tags=$(tr ' ' '\n' <<<"$line" | { grep '^tag_' || true; } | sed 's/^tag_//' | paste -sd, -)
        out "| $t | $(kv "$line" ok) | $(kv "$line" errors) / $(kv "$line" non2xx) | $(fmt_us "$(kv "$line" ttfb_p50_us)") | $(fmt_us "$(kv "$line" ttfb_p99_us)") | $(fmt_us "$(kv "$line" ttfb_max_us)") | $(fmt_us "$(kv "$line" last_max_us)") | $fetched | ${tags:--} |"
    done
    out ""
}

for phase in $PHASES; do
    case $phase in
    hit) phase_hit ;;
    log) phase_log ;;
    clients) phase_clients ;;
    cold) phase_cold ;;
    sustained) phase_sustained ;;
    burst) phase_burst ;;
    disk) phase_disk ;;
    tls) phase_tls ;;
    *) die "unknown phase $phase (PHASES: hit log clients tls cold sustained burst disk)" ;;
    esac
done

curl -s "http://127.0.0.1:$P_EDGE_ADMIN/metrics" >"$WORK/logs/edgemirror-metrics.txt" || true
du -sh "$WORK/edgemirror/store" >"$WORK/logs/edgemirror-store-size.txt" 2>&1 || true

out "Run: $(date -u '+%Y-%m-%d %H:%M UTC');$([[ -n ${GUEST_MEMORY_WARMED:-} ]] && echo " guest memory warmed ($GUEST_MEMORY_WARMED GiB) and kept from the host (bench/guest_memory.sh);") repo at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty'); edgemirror binary $EDGEMIRROR_BIN built $(date -u -r "$EDGEMIRROR_BIN" '+%H:%M UTC'); $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)); kernel $(uname -r)"
out "Versions: $(nginx -v 2>&1 | sed 's/.*: //'); $(varnishd -V 2>&1 | head -1 | sed 's/ revision.*//;s/(//'); $(wrk -v 2>&1 | head -1 | awk '{print "wrk", $2}'); emload driver $(kv "${line:-}" driver)"
out "Network: loopback MTU $(cat /sys/class/net/lo/mtu), congestion control $(sysctl -n net.ipv4.tcp_congestion_control)"
out "Pinning: servers on core $SERVER_CORE ($([[ -n $CG ]] && echo "cpuset cgroup + taskset" || echo "taskset only")), load and origin on core $LOAD_CORE; edgemirror threads: ${EDGE_AFFINITY%, }"
out "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK/logs"
