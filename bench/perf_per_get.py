#!/usr/bin/env python3
"""Where a server's CPU goes per request, from a `perf record -g` of its core.

    python3 bench/perf_per_get.py PERF_DATA REQUESTS [START,END]

PERF_DATA: one run's samples of the server core (`PERF=/tmp/pf bash bench/ab_cold.sh ...`
writes /tmp/pf.ROUND-old and /tmp/pf.ROUND-new). REQUESTS: the requests the run made.
START,END: only the samples in that window (`perf script --time`; with `perf record -k
CLOCK_REALTIME`, seconds since the epoch: one run out of a record of a whole peers.sh phase,
from the times its log prints). Prints
the sampled CPU time per request by part of the work, each sample counted once, by the first
rule its call chain matches:

    file write   a write into a file (edgemirror's store `pwrite`, nginx's cache file)
    recv         reading a socket (origin bodies; includes page faults on fresh memory there)
    send         writing a socket (responses; includes faults on mapped files read there)
    md5 thread   edgemirror's hasher threads
    kernel threads  kworkers (writeback of written files), ksoftirqd, jbd2 on the core
    page fault   other page faults
    irq/softirq  interrupts and softirqs outside the calls above
    event loop   io_uring, epoll and futex waits and wake-ups
    user         the process's own code
    other kernel anything else in the kernel
    other procs  the bench's own tools on the core (the script, perf, Varnish's cc1)

Why: comparing the node with a peer by total CPU per request says who is cheaper, not where.
Timings move minute to minute on the bench VM; the split of one run does not.
"""

import collections
import subprocess
import sys

RULES = [
    ("file write", ("ext4_buffered_write_iter", "__libc_pwrite", "generic_perform_write")),
    ("recv", ("tcp_recvmsg",)),
    ("send", ("tcp_sendmsg",)),
    ("page fault", ("exc_page_fault",)),
    ("irq/softirq", ("handle_softirqs", "sysvec_")),
    ("event loop", ("io_uring", "epoll", "futex")),
]
# Not the server's: the bench's own tools (Varnish's VCL compiler, cc1, runs at its start).
OTHERS = ("perf", "bash", "sleep", "taskset", "date", "curl", "awk", "sed", "ss", "grep", "cat",
          "rm", "head", "split", "mv", "chmod", "cc1", "pgrep", "getconf", "swapper")


def classify(comm, frames):
    if comm.startswith("md5-"):
        return "md5 thread"
    if comm.startswith(("kworker", "ksoftirqd", "rcu", "migration", "kcompactd", "jbd2")):
        return "kernel threads"
    if comm.split("/")[0] in OTHERS:
        return "other procs"
    for name, needles in RULES:
        if any(needle in sym for _, sym in frames for needle in needles):
            return name
    # The leaf frame is the process's own (or a library's) code.
    if frames and not frames[0][0]:
        return "user"
    return "other kernel"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1])
    path, requests = sys.argv[1], int(sys.argv[2])
    window = ["--time", sys.argv[3]] if len(sys.argv) == 4 else []
    script = subprocess.run(
        ["perf", "script", "-i", path, "-F", "comm,period,ip,sym", "--no-inline"] + window,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    parts = collections.Counter()
    comm, period, frames = None, 0, []

    def flush():
        if comm is not None:
            parts[classify(comm, frames)] += period

    for line in script.splitlines():
        if not line.strip():
            flush()
            comm, frames = None, []
        elif not line.startswith("\t"):
            # "  comm  period": the comm may hold spaces.
            fields = line.split()
            comm, period = " ".join(fields[:-1]), int(fields[-1])
        else:
            fields = line.strip().split(None, 1)
            if len(fields) == 2:
                # (kernel frame?, symbol)
                frames.append((fields[0].startswith("ffffffff"), fields[1]))
    flush()
    total = sum(parts.values())
    print(f"{path}: {total / 1e6:.0f} ms sampled; per request ({requests}):")
    for name, ns in parts.most_common():
        print(f"  {name:14s} {ns / 1e3 / requests:8.0f} µs")


if __name__ == "__main__":
    main()
