#!/usr/bin/env python3
"""Backfill throughput against the origin's own limit, and what a running backfill costs live hits.

    python3 bench/backfill.py [EDGEMIRROR_BIN] [EMLOAD_BIN]

An origin node (one worker) holds the objects, uploaded with boto3: 2,000 of 4 KiB, then 200 of
1 MiB. For each size:
1. the origin's own limit: emload GETs those keys from it directly (8 connections, 5 s);
2. a fresh edge node (one worker) mirroring the origin backfills them (concurrency 8), while
   emload keeps GETting one 1 KiB object already on the edge (a RAM hit) on 4 connections;
3. the same hits for 5 s with no backfill, for comparison.
Prints keys/s and MB/s of the backfill beside the origin's, and the hits' p50/p99 with and
without it. Everything shares this 2-core machine, so the figures bound the cost from above.
Timings are printed, never asserted.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import emload as run_emload, start_node  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgemirror"
EMLOAD = sys.argv[2] if len(sys.argv) > 2 else "target/release/emload"
ACCESS, SECRET, TOKEN = "BENCHACCESSKEY", "bench-secret-key-0123456789", "bench-token"


def start(work, name, extra):
    return start_node(BIN, work, name, f"""[store]
dir = "{work}/{name}-store"
min_free_bytes = 0
[cache]
disk_bytes = 0
[s3]
region = "us-east-1"
[[s3.keys]]
access_key = "{ACCESS}"
secret_key = "{SECRET}"
{extra}""", TOKEN)


def emload(args):
    return run_emload(EMLOAD, args)


def admin(addr, method, path, body=None):
    req = urllib.request.Request(
        f"http://{addr}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return json.loads(urllib.request.urlopen(req).read())["result"]


def backfill(work, odata, size, keys, s3):
    """Backfills `keys` into a fresh edge; with `s3` (the origin's client), under live 1 KiB hits
    (4 connections) for the first 5 s, then the same hits alone. Returns (seconds, hits during,
    hits after)."""
    tag = f"edge{size}{'live' if s3 else ''}"
    edge, edata, eadmin = start(work, tag, f'[[buckets]]\nname = "dst"\n[[buckets.mirror]]\nurl = "http://{odata}/src/"')
    try:
        hits = ["-c", "4", "-d", "5", "-w", "0", "--url", f"http://{edata}/dst/hot"]
        if s3:
            s3.put_object(Bucket="src", Key="hot", Body=b"h" * 1024)
            urllib.request.urlopen(f"http://{edata}/dst/hot").read()
        started = time.monotonic()
        admin(eadmin, "POST", "/v1/regions/local/buckets/dst/backfill", {"keys": keys, "concurrency": 8})
        busy = emload(hits) if s3 else None
        while admin(eadmin, "GET", "/v1/regions/local/buckets/dst/backfill")["state"] == "running":
            time.sleep(0.02)
        secs = time.monotonic() - started
        status = admin(eadmin, "GET", "/v1/regions/local/buckets/dst/backfill")
        assert status["state"] == "complete", status
        idle = emload(hits) if s3 else None
        return secs, busy, idle
    finally:
        edge.terminate()
        edge.wait()


def main():
    import boto3
    from botocore.config import Config

    work = tempfile.mkdtemp(prefix="edgemirror-backfill-", dir=os.environ.get("WORK_DIR", "/var/tmp"))
    procs = []
    try:
        origin, odata, _ = start(work, "origin", '[[buckets]]\nname = "src"')
        procs.append(origin)
        s3 = boto3.client(
            "s3", endpoint_url=f"http://{odata}", aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
        )
        for size, count in ((4096, 2000), (1 << 20, 200)):
            body = os.urandom(size)
            keys = [f"s{size}/k{i:05}" for i in range(count)]
            for key in keys:
                s3.put_object(Bucket="src", Key=key, Body=body)
            # 1. The origin's own limit, over the same keys.
            url_file = os.path.join(work, f"urls{size}.txt")
            with open(url_file, "w") as f:
                f.writelines(f"http://{odata}/src/{k}\n" for k in keys)
            o = emload(["-c", "8", "-d", "5", "-w", "1", "--url-file", url_file])
            origin_rps = float(o["rps"])
            # 2. A fresh edge backfilling alone; 3. another one backfilling under live hits.
            alone = backfill(work, odata, size, keys, None)
            loaded = backfill(work, odata, size, keys, s3)
            print(
                f"{size:>8} B x{count}: backfill alone {count / alone[0]:7.0f} keys/s {count * size / alone[0] / 1e6:7.1f} MB/s"
                f" | origin alone {origin_rps:7.0f} req/s {origin_rps * size / 1e6:7.1f} MB/s"
            )
            busy, idle, secs = loaded[1], loaded[2], loaded[0]
            print(
                f"{'':>8}   under live hits: backfill {count / secs:7.0f} keys/s; 1 KiB hits p50/p99"
                f" {float(busy['p50_us']) / 1000:.2f}/{float(busy['p99_us']) / 1000:.2f} ms during,"
                f" {float(idle['p50_us']) / 1000:.2f}/{float(idle['p99_us']) / 1000:.2f} ms after,"
                f" {float(busy['rps']):.0f} vs {float(idle['rps']):.0f} hits/s"
            )
    finally:
        for p in procs:
            p.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
