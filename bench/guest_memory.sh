# bench/guest_memory.sh: sourced by bench/peers.sh and bench/ab_cold.sh (as root). How this VM's
# memory behaves for a bench: the memory it gives back to its host (below), and the page cache it
# pages out (origin_warm). Also how its vCPUs start after an idle spell (load_warmup, at the end).
#
# The bench VM gives free memory back to its host (free page reporting; this kernel's
# /sys/module/page_reporting/parameters/max_waiting_mib keeps only 1,024 MiB of free memory
# unreported). Memory that went back is slow to touch again: a probe writing 4 GiB into a new
# file spent ~250 µs per MiB for the first GiB and 2,500-3,700 µs per MiB after it
# (bench/RESULTS.md, "Issue 14, fifth pass"). A server that stores what it fetches (every cache
# here) pays that on each new byte once the pool is used up, so which target ran out of warm
# memory first, not which is faster, decided the miss phases.
#
# warm_guest_memory keeps free memory with the guest for the run (max_waiting_mib raised to the
# machine's memory) and touches WARM_MEMORY_GIB (default: what is available less 2 GiB, at most
# 12) once, so the servers' new bytes land on memory the host already backs;
# restore_guest_memory puts the setting back. Nothing is done where the setting does not exist
# (another machine), or with WARM_MEMORY=0.
#
# This only goes so far: the host also takes idle guest memory back by other means, within
# minutes. Ten minutes after touching 21 GiB, writes into a new file ran at 229 µs per MiB for
# the first GiB and ~2,450 from the third (bench/RESULTS.md, "Issue 14, seventh pass"), so a
# long run's later phases would store onto fresh memory again, for every server. The miss
# phases therefore touch TOUCH_MEMORY_MIB again before each run (touch_guest_memory, below).

GUEST_REPORTING=/sys/module/page_reporting/parameters/max_waiting_mib
GUEST_REPORTING_SAVED=
# GiB touched by warm_guest_memory (empty: nothing done).
GUEST_MEMORY_WARMED=

warm_guest_memory() {
    [[ ${WARM_MEMORY:-1} == 1 && -w $GUEST_REPORTING ]] || return 0
    GUEST_REPORTING_SAVED=$(cat "$GUEST_REPORTING")
    local total_mib avail_mib gib
    total_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    avail_mib=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    echo "$total_mib" >"$GUEST_REPORTING"
    gib=${WARM_MEMORY_GIB:-$(((avail_mib - 2048) / 1024))}
    ((gib > 12)) && [[ -z ${WARM_MEMORY_GIB:-} ]] && gib=12
    ((gib > 0)) || return 0
    touch_memory_mib $((gib << 10))
    GUEST_MEMORY_WARMED=$gib
}

# touch_memory_mib MIB: writes MIB of new anonymous memory once, then gives it back.
touch_memory_mib() {
    python3 - "$1" <<'EOF'
import mmap, sys
size = int(sys.argv[1]) << 20
m = mmap.mmap(-1, size)
piece = b"\x5a" * (1 << 20)
for off in range(0, size, 1 << 20):
    m[off:off + (1 << 20)] = piece
m.close()
EOF
}

# touch_guest_memory [MIB]: touches MIB (default TOUCH_MEMORY_MIB, 1024) again, when
# warm_guest_memory ran, both ways the servers take new memory. The miss phases call it before
# each target's run: the host takes idle memory back within minutes even with reporting held off
# (above), and every server writes each fetched byte into new pages, so without it a run
# measures which pages the host still backed: a third to a half of each server's core in the
# sustained phase (bench/RESULTS.md, "Issue 14, thirteenth pass").
# - Anonymous memory, page by page (a heap: Varnish's malloc storage, the node's buffers). Given
#   back, those pages are what the next single-page allocations take.
# - A file written in 1 MiB writes, then deleted (a page cache: nginx's cache files, the node's
#   segments). Page-cache writes of more than a page get multi-page folios, which the kernel
#   takes from contiguous free blocks, not from the single pages the anonymous touch gave back:
#   on this VM 256 MiB written in 1 MiB writes took 519-642 ms after an anonymous touch, and
#   51-57 ms after this one (bench/RESULTS.md, "Issue 14, fourteenth pass").
touch_guest_memory() {
    [[ -n $GUEST_MEMORY_WARMED ]] || return 0
    local mib=${1:-${TOUCH_MEMORY_MIB:-1024}} file=${TOUCH_MEMORY_FILE:-${WORK:-/tmp}/.touch-memory}
    ((mib > 0)) || return 0
    touch_memory_mib "$mib"
    dd if=/dev/zero of="$file" bs=1M count="$mib" status=none
    rm -f "$file"
}

restore_guest_memory() {
    if [[ -n $GUEST_REPORTING_SAVED ]]; then
        echo "$GUEST_REPORTING_SAVED" >"$GUEST_REPORTING" 2>/dev/null || true
        GUEST_REPORTING_SAVED=
    fi
}

# origin_warm PATTERN FIRST COUNT: reads the origin's objects PATTERN (with {} for the key
# number) FIRST..FIRST+COUNT-1 into the page cache, before a run. This VM pages out page cache
# unused for a minute (DAMON's pageout, bench/RESULTS.md "Issue 14, fifth pass"): objects written
# earlier were read from disk by the origin for whichever target or side asked first, which then
# ran against a slower origin than the others (in ab_cold.sh: "twentieth pass").
origin_warm() {
    local pattern=$1 first=$2 count=$3
    python3 - "$pattern" "$first" "$count" <<'PY'
import sys
pattern, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for k in range(first, first + count):
    with open(pattern.replace("{}", str(k)), "rb") as f:
        while f.read(1 << 20):
            pass
PY
}

# load_warmup URL: LOAD_WARMUP seconds (default 0.3; 0: none) of one client's GETs of URL (a key
# the server has or fetches once), untimed, right before a measured miss run. On this VM the
# first ~100-200 ms of load after an idle spell are slow for every server alike: ~10% of the GETs
# stall 1-7 ms, and the rest run ~25% slower (bench/RESULTS.md, "Issue 14, twenty-first pass").
# A run of 200 single GETs that begins idle has its p99 set by those stalls, not by the server. A
# new client process right after load does not bring them back; an idle spell does (milder after
# 0.3 s, in full after 3 s), so the run must follow at once. Needs EMLOAD_BIN and LOAD_CORE.
LOAD_WARMUP=${LOAD_WARMUP:-0.3}
load_warmup() {
    [[ $LOAD_WARMUP != 0 ]] || return 0
    taskset -c "$LOAD_CORE" "$EMLOAD_BIN" -c 1 -d "$LOAD_WARMUP" -w 0 --url "$1" >/dev/null
}
