#!/usr/bin/env bash
# bench/ab_tls.sh: A/B of two edgemirror binaries on the HTTPS hit path, nginx beside them, on
# the servers `bench/peers.sh serve` started and warmed (same certificate, TLS 1.3, AES-128-GCM).
#
#   PHASES=tls SERVE_SECS=3600 bash bench/peers.sh serve &     # wait for "serving for"
#   bash bench/ab_tls.sh OLD_BIN NEW_BIN [ROUNDS (3)]
#
# Per round, size and client: nginx-static, then the two nodes in an order swapped every round,
# each restarted on peers.sh's store and config (in its cpuset cgroup, on core 1); the client on
# core 0 against one key: wrk -t1 -c64 -d8s, h2load --h1 -t1 -c64 -D 8 --warm-up-time=2.
# Prints one line per round, size and client with each target's req/s.
# Knobs: SIZES ("1k 64k 1m") TOOLS ("wrk h2load") WORK (/tmp/edgemirror-peers) PORT_BASE (18080).
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${3:-3}
WORK=${WORK:-/tmp/edgemirror-peers}
PORT_BASE=${PORT_BASE:-18080}
P_STATIC_TLS=$((PORT_BASE + 9))
P_EDGE_TLS=$((PORT_BASE + 10))
CG=$(ls -d /sys/fs/cgroup/cpuset/edgemirror-bench-* /sys/fs/cgroup/edgemirror-bench-* 2>/dev/null | head -1 || true)
[[ -n $CG ]] || { echo "no peers.sh cgroup: start bench/peers.sh serve first" >&2; exit 1; }
CNF=$WORK/tls/openssl-client.cnf
CONFIG=$WORK/edgemirror/edgemirror.toml

# Stops every node on peers.sh's config, whatever its binary is called, and waits for them to
# exit: the nodes listen with SO_REUSEPORT, so one left running would share the connections.
stop_nodes() {
    pkill -f -- "--config $CONFIG" || true
    for _ in $(seq 100); do
        pgrep -f -- "--config $CONFIG" >/dev/null || return 0
        sleep 0.1
    done
    echo "a node on $CONFIG did not stop" >&2
    exit 1
}

start_node() {
    stop_nodes
    bash -c 'echo $$ >"$0/cgroup.procs" && exec taskset -c 1 "$1" --config "$2"' \
        "$CG" "$1" "$CONFIG" >"$WORK/logs/ab-tls-node.out" 2>&1 &
    for _ in $(seq 50); do
        curl -sk -o /dev/null "https://127.0.0.1:$P_EDGE_TLS/bench/1k/obj-0" && return 0
        sleep 0.2
    done
    echo "node $1 did not come up" >&2
    exit 1
}

declare -A BYTES=([1k]=1024 [64k]=65536 [1m]=1048576)
check() { # URL SIZE: the URL must answer the size's whole object (a 404 would be fast, and wrong)
    local got
    got=$(curl -sk -o /dev/null -w '%{http_code} %{size_download}' "$1")
    [[ $got == "200 ${BYTES[$2]}" ]] || { echo "$1 answered '$got', not '200 ${BYTES[$2]}'" >&2; exit 1; }
}

run() { # TOOL URL -> req/s
    case $1 in
    wrk) OPENSSL_CONF=$CNF taskset -c 0 wrk -t1 -c64 -d8s "$2" | awk '/^Requests\/sec:/ {print $2}' ;;
    h2load)
        taskset -c 0 h2load --h1 -t1 -c64 -D 8 --warm-up-time=2 --tls13-ciphers=TLS_AES_128_GCM_SHA256 "$2" |
            awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i == "req/s,") print $(i - 1) }'
        ;;
    esac
}

for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then order=("$OLD" "$NEW"); else order=("$NEW" "$OLD"); fi
    for s in ${SIZES:-1k 64k 1m}; do
        for tool in ${TOOLS:-wrk h2load}; do
            check "https://127.0.0.1:$P_STATIC_TLS/$s/obj-0" "$s"
            line="round $r $tool $s nginx=$(run "$tool" "https://127.0.0.1:$P_STATIC_TLS/$s/obj-0")"
            for b in "${order[@]}"; do
                start_node "$b"
                check "https://127.0.0.1:$P_EDGE_TLS/bench/$s/obj-0" "$s"
                line="$line $b=$(run "$tool" "https://127.0.0.1:$P_EDGE_TLS/bench/$s/obj-0")"
            done
            echo "$line"
        done
    done
done
