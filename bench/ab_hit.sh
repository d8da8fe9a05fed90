#!/usr/bin/env bash
# bench/ab_hit.sh: A/B of two edgemirror binaries on the hit path, with nginx-static beside them.
#
#   bash bench/ab_hit.sh OLD_BIN NEW_BIN [ROUNDS (3)] [SIZE (64k: 1k, 64k, 256k or 1m)]
#
# The two sides may be one binary with two configurations (OLD_CACHE, NEW_CACHE: extra lines for
# the node's [cache] section, e.g. "max_object_bytes = 32768" to serve from the store rather
# than the RAM tier). Each round runs nginx-static (nginx serving the files itself, sendfile on,
# configured by bench/nginx_conf.sh as in bench/peers.sh), then the old node, then the new one,
# on the same keys and minute: on this VM the machine's speed moves from one minute to the next,
# and `peers.sh` with its other servers idle beside them shifts the hit ratios by more than most
# changes (bench/RESULTS.md).
#
# Each run: the server pinned to core $SERVER_CORE, emload (and the origin that filled the nodes)
# on core $LOAD_CORE; $CONNS keep-alive connections over the size's keys (uniform), $WARMUP s +
# $DURATION s; closed loop, or an open loop at RATE req/s when RATE is set (then the server CPU
# column is what matters). Prints per run: req/s, p99, the server's CPU (all its threads, % of
# one core over the whole emload run) and emload's own CPU as it reports it: near 100% the load
# client is the limit, not the server.
#
# CLIENT=wrk or CLIENT=h2load (`--h1`) runs that load client instead, on one key, as
# bench/peers.sh's `clients` phase does (no RATE; p99 from wrk only; their CPU from time(1)).
#
# Knobs (environment): CLIENT (emload) CONNS (64) WARMUP (2) DURATION (8) RATE (unset) OLD_CACHE, NEW_CACHE ("")
# WORK (/tmp/edgemirror-ab-hit) PORT_BASE (19280) SERVER_CORE (1) LOAD_CORE (0) EMLOAD_BIN
# (target/release/emload, built if missing). Needs nginx (apt-get install nginx).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 2 ]] || { sed -n 2,4p "$0" >&2; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
ROUNDS=${3:-3}
SIZE=${4:-64k}
CONNS=${CONNS:-64}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-8}
WORK=${WORK:-/tmp/edgemirror-ab-hit}
PORT_BASE=${PORT_BASE:-19280}
SERVER_CORE=${SERVER_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
EMLOAD_BIN=${EMLOAD_BIN:-$ROOT/target/release/emload}

declare -A BYTES=([1k]=1024 [64k]=65536 [256k]=262144 [1m]=1048576)
declare -A KEYS=([1k]=500 [64k]=300 [256k]=200 [1m]=100)
[[ -n ${BYTES[$SIZE]:-} ]] || { echo "size: one of ${!BYTES[*]}" >&2; exit 2; }
N=${KEYS[$SIZE]}
P_ORIGIN=$PORT_BASE
declare -A PORT=([static]=$((PORT_BASE + 1)) [old]=$((PORT_BASE + 2)) [new]=$((PORT_BASE + 4)))
declare -A PREFIX=([static]="" [old]=/bench [new]=/bench)

log() { printf '[ab-hit %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ -x $EMLOAD_BIN ]] || (cd "$ROOT" && cargo build --release -p edgemirror-bench --bin emload)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

rm -rf "$WORK/old" "$WORK/new" "$WORK/logs"
mkdir -p "$WORK/www/$SIZE" "$WORK/logs"
if [[ ! -f $WORK/www/$SIZE/obj-$((N - 1)) ]]; then
    for i in $(seq 0 $((N - 1))); do head -c "${BYTES[$SIZE]}" /dev/urandom >"$WORK/www/$SIZE/obj-$i"; done
fi

source "$ROOT/bench/nginx_conf.sh"
origin_conf=$(nginx_conf origin "$P_ORIGIN" "root $WORK/www;")
static_conf=$(nginx_conf static "${PORT[static]}" "root $WORK/www;")
taskset -c "$LOAD_CORE" nginx -c "$origin_conf" &
PIDS+=("$!")
taskset -c "$SERVER_CORE" nginx -c "$static_conf" &
PIDS+=("$!")
declare -A PID=([static]=$!)

node() { # side bin cache-lines
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1/edgemirror.toml" <<EOF
[server]
listen = "127.0.0.1:${PORT[$1]}"
workers = 1
[admin]
listen = "127.0.0.1:$((PORT[$1] + 1))"
[store]
dir = "$WORK/$1/store"
[cache]
$3
[[buckets]]
name = "bench"
[[buckets.mirror]]
url = "http://127.0.0.1:$P_ORIGIN/"
key_prefix = ""
EOF
    taskset -c "$SERVER_CORE" "$2" --config "$WORK/$1/edgemirror.toml" >"$WORK/logs/$1.out" 2>"$WORK/logs/$1.err" &
    PIDS+=("$!")
    PID[$1]=$!
}
node old "$OLD" "${OLD_CACHE:-}"
node new "$NEW" "${NEW_CACHE:-}"

url() { echo "http://127.0.0.1:${PORT[$1]}${PREFIX[$1]}/$SIZE/obj-"; }
for side in static old new; do
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "$(url "$side")0" && break; sleep 0.1; done
done
# Each key twice: the first GET mirrors it, the second finds it stored (a store hit makes the
# RAM tier's copy, but for 32-128 KiB objects, which are sent from the page cache).
for side in old new; do
    for pass in 1 2; do
        for i in $(seq 0 $((N - 1))); do curl -sf -o /dev/null "$(url "$side")$i"; done
    done
done

# CPU ticks of every thread of a process (nginx: its worker, the master's only child).
ticks() { cat /proc/"$1"/task/*/stat | awk '{ t += $14 + $15 } END { print t }'; }
server_pid() { if [[ $1 == static ]]; then pgrep -P "${PID[static]}" | head -1; else echo "${PID[$1]}"; fi; }
hz=$(getconf CLK_TCK)

log "${CLIENT:-emload}, $SIZE, $N keys, $CONNS connections, ${WARMUP} s + ${DURATION} s${RATE:+, open loop at $RATE req/s}; old=$OLD${OLD_CACHE:+ [$OLD_CACHE]} new=$NEW${NEW_CACHE:+ [$NEW_CACHE]}"
printf '%-6s %-6s %10s %10s %12s %12s\n' round side "req/s" "p99 ms" "server CPU" "client CPU"
for round in $(seq "$ROUNDS"); do
    # The two builds swap places every round: the later of two runs on one machine tends to be
    # measured slower or faster than the earlier (bench/RESULTS.md, "Issue 14, tenth pass").
    order="static old new"
    ((round % 2 == 0)) && order="static new old"
    for side in $order; do
        pid=$(server_pid "$side")
        t0=$(ticks "$pid")
        s0=$(date +%s.%N)
        out=$WORK/logs/load-$side-$round.txt
        case ${CLIENT:-emload} in
        emload)
            taskset -c "$LOAD_CORE" "$EMLOAD_BIN" -c "$CONNS" -d "$DURATION" -w "$WARMUP" --mix uniform --seed "$round" \
                --url-template "$(url "$side"){}" --keys "$N" ${RATE:+--rate "$RATE"} >"$out"
            line=$(grep '^summary:' "$out")
            ;;
        wrk)
            # wrk has no warm-up: it runs WARMUP + DURATION seconds, all counted.
            /usr/bin/time -f "cpu %U %S" -o "$out.time" taskset -c "$LOAD_CORE" \
                wrk -t1 -c"$CONNS" -d"$((WARMUP + DURATION))s" --latency "$(url "$side")0" >"$out"
            p99=$(awk '$1 == "99%" { v = $2; u = 1; if (v ~ /ms$/) u = 1000; if (v ~ /[0-9]s$/ && v !~ /ms$/ && v !~ /us$/) u = 1e6; sub(/[a-z]+$/, "", v); print v * u }' "$out")
            line="rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out") p99_us=$p99 errors=$(grep -c '^  Socket errors\|^  Non-2xx' "$out" || true) non2xx=0"
            ;;
        h2load)
            /usr/bin/time -f "cpu %U %S" -o "$out.time" taskset -c "$LOAD_CORE" \
                h2load --h1 -t1 -c"$CONNS" -D "$DURATION" --warm-up-time="$WARMUP" "$(url "$side")0" >"$out" 2>&1
            line="rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i == "req/s,") print $(i - 1) }' "$out") p99_us=0"
            line+=" errors=$(grep -Eq '(^|[^0-9])0 failed, 0 errored' "$out" && echo 0 || echo 1) non2xx=0"
            ;;
        *) echo "CLIENT: emload, wrk or h2load" >&2; exit 2 ;;
        esac
        s1=$(date +%s.%N)
        t1=$(ticks "$pid")
        kv() { tr ' ' '\n' <<<"$line" | sed -n "s/^$1=//p"; }
        [[ $(kv errors) == 0 && $(kv non2xx) == 0 ]] || log "warning: $side had errors=$(kv errors) non2xx=$(kv non2xx)"
        client_cpu=$(kv cpu_pct)
        [[ -f $out.time ]] && client_cpu=$(awk -v a="$s0" -v b="$s1" '/^cpu/ { printf "%.0f", 100 * ($2 + $3) / (b - a) }' "$out.time")
        printf '%-6s %-6s %10.0f %10.2f %11.0f%% %11s%%\n' "$round" "$side" "$(kv rps)" \
            "$(awk -v u="$(kv p99_us)" 'BEGIN { print u / 1000 }')" \
            "$(awk -v t=$((t1 - t0)) -v hz="$hz" -v a="$s0" -v b="$s1" 'BEGIN { print 100 * t / hz / (b - a) }')" "$client_cpu"
    done
done
for side in old new; do
    log "$side: $(curl -s "http://127.0.0.1:$((PORT[$side] + 1))/metrics" | awk '/^edgemirror_hits_(memory|store)_total / { printf "%s %s  ", $1, $2 }')"
done
