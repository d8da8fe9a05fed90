#!/usr/bin/env bash
# Starts a Garage cluster of NODES (1 or 3) on 127.0.0.1 for the tests that need a real
# S3-compatible server: one config per node under DIR, the layout assigned and applied, a key and
# a bucket the key owns. Prints shell assignments the caller evaluates:
#   GARAGE_S3=127.0.0.1:PORT GARAGE_S3_ALL="ADDR ..." GARAGE_KEY=... GARAGE_SECRET=...
#   GARAGE_BUCKET=... GARAGE_PIDS="PID ..."
#
#   eval "$(tests/garage/cluster.sh /tmp/g 3 origin-bucket)"
#
# GARAGE names the binary (default: what tests/garage/install.sh builds or finds).
set -euo pipefail
DIR=${1:?usage: cluster.sh DIR [NODES] [BUCKET]}
NODES=${2:-1}
BUCKET=${3:-edgemirror-test}  # an S3 bucket name: 3-63 of a-z, 0-9, '-', '.' 
HERE=$(cd "$(dirname "$0")" && pwd)
GARAGE=${GARAGE:-$("$HERE/install.sh")}
[[ $NODES == 1 || $NODES == 3 ]] || { echo "cluster.sh: NODES is 1 or 3" >&2; exit 2; }
mkdir -p "$DIR"
# The cluster's ports, all distinct and free when picked, from below the kernel's ephemeral
# range: a port taken with bind(0) and let go could be handed by the kernel to a listener of a
# test running in parallel before Garage binds it (and two such picks could even be the same).
# Each is test-bound and held until all are picked.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
held = []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", random.randrange(10000 if low > 11000 else 1024, low)))
        held.append(s)
    except OSError:
        s.close()
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
PIDS=() S3S=()
# A cluster that fails to come up is stopped, not left behind.
trap 'kill "${PIDS[@]}" 2>/dev/null' ERR
read -r -a PORTS <<<"$(free_ports $((3 * NODES)))"
for i in $(seq 1 "$NODES"); do
  rpc=${PORTS[3 * i - 3]} s3=${PORTS[3 * i - 2]} adm=${PORTS[3 * i - 1]}
  mkdir -p "$DIR/n$i"
  cat >"$DIR/n$i/garage.toml" <<TOML
metadata_dir = "$DIR/n$i/meta"
data_dir = "$DIR/n$i/data"
db_engine = "lmdb"
replication_factor = $NODES
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$SECRET"
bootstrap_peers = []

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$adm"
admin_token = "$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
TOML
  "$GARAGE" -c "$DIR/n$i/garage.toml" server >"$DIR/n$i/log" 2>&1 &
  PIDS+=($!)
  S3S+=("127.0.0.1:$s3")
done
G1=("$GARAGE" -c "$DIR/n1/garage.toml")
for _ in $(seq 1 100); do
  "${G1[@]}" status >/dev/null 2>&1 && break
  sleep 0.1
done
IDS=()
for i in $(seq 1 "$NODES"); do
  id=$("$GARAGE" -c "$DIR/n$i/garage.toml" node id -q 2>/dev/null || "$GARAGE" -c "$DIR/n$i/garage.toml" node id 2>/dev/null | grep -o '[0-9a-f]\{64\}@[^ ]*' | head -1)
  IDS+=("$id")
  [[ $i == 1 ]] || "${G1[@]}" node connect "$id" >&2
done
# Every pair connected now, not by peer discovery later (node 1 alone knows everyone at first:
# requests through another node would then fail to reach a quorum for ~20 s).
for i in $(seq 2 "$NODES"); do
  for j in $(seq $((i + 1)) "$NODES"); do
    "$GARAGE" -c "$DIR/n$i/garage.toml" node connect "${IDS[$((j - 1))]}" >&2
  done
done
for id in "${IDS[@]}"; do
  "${G1[@]}" layout assign -z dc1 -c 1G "${id%@*}" >&2
done
"${G1[@]}" layout apply --version 1 >&2
# Until every node sees every other as healthy.
for i in $(seq 1 "$NODES"); do
  for _ in $(seq 1 100); do
    out=$("$GARAGE" -c "$DIR/n$i/garage.toml" status 2>/dev/null || true)
    grep -q "FAILED NODES" <<<"$out" || break
    sleep 0.1
  done
done
KEYS=$("${G1[@]}" key create edgemirror-test)
KEY=$(grep -io 'key id:[[:space:]]*[A-Za-z0-9]*' <<<"$KEYS" | awk '{print $NF}')
SECRET_KEY=$(grep -io 'secret key:[[:space:]]*[a-f0-9]*' <<<"$KEYS" | awk '{print $NF}')
"${G1[@]}" bucket create "$BUCKET" >&2
"${G1[@]}" bucket allow --read --write --owner "$BUCKET" --key edgemirror-test >&2
echo "GARAGE_S3=${S3S[0]}"
echo "GARAGE_S3_ALL=\"${S3S[*]}\""
echo "GARAGE_KEY=$KEY"
echo "GARAGE_SECRET=$SECRET_KEY"
echo "GARAGE_BUCKET=$BUCKET"
echo "GARAGE_PIDS=\"${PIDS[*]}\""
