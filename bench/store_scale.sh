#!/usr/bin/env bash
# bench/store_scale.sh: start-up time and index memory of a store holding many small objects
# (issue 14: 10 million objects, start-up under 10 s, under 100 bytes of RAM per object beyond
# the key). The objects are written straight through the store API (cache/examples/store_scale.rs),
# not through HTTP; then the store is opened in fresh processes: twice with the segment files in
# the page cache (a restart), and once after dropping the page cache (a reboot; needs root).
#
#   bash bench/store_scale.sh [OBJECTS (10000000)] [ORDER: random | seq]
#
# Knobs (environment): WORK (/tmp/edgemirror-store-scale; wiped), KEEP_DATA (0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OBJECTS=${1:-10000000}
ORDER=${2:-random}
WORK=${WORK:-/tmp/edgemirror-store-scale}
KEEP_DATA=${KEEP_DATA:-0}

log() { printf '[store-scale %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

(cd "$ROOT" && cargo build --release -p edgemirror-cache --example store_scale)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/store_scale
rm -rf "$WORK"
mkdir -p "$(dirname "$WORK")"
cleanup() { [[ $KEEP_DATA == 1 ]] || rm -rf "$WORK"; }
trap cleanup EXIT

log "writing $OBJECTS objects ($ORDER order) into $WORK"
/usr/bin/time -f "write: %e s wall, %M KiB max RSS" "$BIN" write "$WORK" "$OBJECTS" "$ORDER"
for run in 1 2; do
    log "open $run of 2, page cache warm"
    /usr/bin/time -f "open: %e s wall, %M KiB max RSS" "$BIN" open "$WORK"
done
if [[ $(id -u) == 0 ]] && sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    log "open after dropping the page cache"
    /usr/bin/time -f "open: %e s wall, %M KiB max RSS" "$BIN" open "$WORK"
else
    log "not root (or no /proc/sys/vm/drop_caches): no cold-cache open"
fi
echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'); repo at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); $(nproc) cores; kernel $(uname -r); $(df -h --output=source,fstype "$WORK" 2>/dev/null | tail -1 || true)"
