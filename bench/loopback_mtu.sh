# bench/loopback_mtu.sh: runs a bench with the loopback at another MTU. Sourced by bench/peers.sh
# and bench/ab_cold.sh (as root); needs their `log` and `die`.
#
# Loopback's default MTU is 65,536 bytes: bodies travel in 64 KiB segments. At the MTU of most
# networks (1,500 bytes: 1,448-byte segments) the kernel acknowledges and paces them differently,
# and the peers' and the node's tails differ with it (bench/RESULTS.md, "nineteenth pass").
#
# set_loopback_mtu: when LO_MTU is set, sets it on `lo` and remembers the MTU before.
# restore_loopback_mtu: puts that MTU back (a no-op when nothing was changed); for the caller's
# cleanup.

LO_MTU_BEFORE=""

set_loopback_mtu() {
    [[ -n ${LO_MTU:-} ]] || return 0
    [[ $LO_MTU =~ ^[0-9]+$ ]] && ((LO_MTU >= 1280)) || die "LO_MTU: a number of bytes, at least 1280 (got '$LO_MTU')"
    LO_MTU_BEFORE=$(cat /sys/class/net/lo/mtu)
    ip link set lo mtu "$LO_MTU" || die "LO_MTU: could not set the loopback's MTU to $LO_MTU"
    log "loopback MTU $LO_MTU for this run (was $LO_MTU_BEFORE; restored at the end)"
}

restore_loopback_mtu() {
    if [[ -n $LO_MTU_BEFORE ]]; then ip link set lo mtu "$LO_MTU_BEFORE" || true; fi
}
