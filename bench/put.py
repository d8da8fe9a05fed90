#!/usr/bin/env python3
"""The store's write path through S3: PUT throughput and ListObjectsV2, beside the disk's own
sequential write speed measured in the same run.

    python3 bench/put.py [EDGEMIRROR_BIN] [EMLOAD_BIN] [LIST_KEYS]

1. The physical limit: `dd` writes 1 GiB to the store's filesystem with O_DIRECT, and again
   through the page cache ending with one fdatasync.
2. A node (one worker, default store settings: `sync = "interval"`, one fdatasync a second)
   takes PutObject load from emload on the other core: 1 KiB bodies on 64 connections, then
   1 MiB bodies on 16, 10 s each after 2 s of warm-up (req/s, MB/s, p50/p99).
3. 64 MiB objects uploaded by boto3 in 8 MiB parts, 4 at a time (CreateMultipartUpload,
   UploadPart, CompleteMultipartUpload): MB/s over 8 uploads.
4. LIST_KEYS (default 1,000,000) one-byte objects are uploaded into a bucket of their own, then
   listed with ListObjectsV2 pages of 1,000: the node's time for one page (curl, at the start, the
   middle and the end of the key space), and boto3's paginator over the whole listing (its
   Python XML parsing is most of that time; stopped after 120 s, then the rate so far).

Timings are printed, never asserted.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import emload as run_emload, start_node  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgemirror"
EMLOAD = sys.argv[2] if len(sys.argv) > 2 else "target/release/emload"
LIST_KEYS = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
ACCESS, SECRET = "BENCHACCESSKEY", "bench-secret-key-0123456789"


def dd(work):
    out = {}
    target = os.path.join(work, "dd.bin")
    for label, flags in (("O_DIRECT", ["oflag=direct"]), ("page cache + fdatasync", ["conv=fdatasync"])):
        r = subprocess.run(
            ["dd", "if=/dev/zero", f"of={target}", "bs=1M", "count=1024", *flags],
            capture_output=True,
            text=True,
        )
        m = re.search(r"(\d+) bytes .* copied, ([\d.]+) s", r.stderr)
        out[label] = int(m.group(1)) / float(m.group(2)) / 1e6 if m else float("nan")
        os.unlink(target)
    return out


def start(work):
    proc, data, _ = start_node(BIN, work, "node", f"""[store]
dir = "{work}/store"
min_free_bytes = 0
[cache]
disk_bytes = 0
[s3]
region = "us-east-1"
[[s3.keys]]
access_key = "{ACCESS}"
secret_key = "{SECRET}"
[[buckets]]
name = "bench"
[[buckets]]
name = "listing"
""")
    return proc, data


def emload(addr, template, keys, size, conns, extra):
    return run_emload(EMLOAD, [
        "-c", str(conns), "--url-template", f"http://{addr}{template}", "--keys", str(keys),
        "--put-bytes", str(size), "--s3-key", f"{ACCESS}:{SECRET}", *extra,
    ])


def OTHER(s):
    """The summary's fields about failures (non-2xx statuses, errors) and emload's CPU."""
    return " ".join(f"{k}={v}" for k, v in s.items() if k.startswith(("status_", "err", "non", "cpu")))


def main():
    work = tempfile.mkdtemp(prefix="edgemirror-put-", dir=os.environ.get("WORK_DIR", "/var/tmp"))
    try:
        limits = dd(work)
        for label, mbs in limits.items():
            print(f"disk, dd 1 GiB {label:<24} {mbs:8.0f} MB/s")
        node, addr = start(work)
        try:
            for size, conns, keys in ((1024, 64, 200_000), (1 << 20, 16, 256)):
                s = emload(addr, f"/bench/s{size}-{{}}", keys, size, conns, ["-d", "10", "-w", "2"])
                print(
                    f"PUT {size:>8} B x{conns:<3} {float(s['rps']):9.0f} req/s "
                    f"{float(s['rps']) * size / 1e6:8.1f} MB/s  p50 {float(s['p50_us']) / 1000:.2f} ms  "
                    f"p99 {float(s['p99_us']) / 1000:.2f} ms  {OTHER(s)}"
                )
            multipart(addr, work)
            listing(addr)
        finally:
            node.terminate()
            node.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def client(addr):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=f"http://{addr}",
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=8, signature_version="s3v4"),
    )


def multipart(addr, work):
    from boto3.s3.transfer import TransferConfig

    s3 = client(addr)
    path = os.path.join(work, "64m.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(64 << 20))
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    started = time.monotonic()
    for i in range(8):
        s3.upload_file(path, "bench", f"mp/{i}", Config=cfg)
    secs = time.monotonic() - started
    print(f"PUT 64 MiB multipart (8 MiB parts, 4 at once, boto3) x8  {8 * 64 * 2**20 / secs / 1e6:8.1f} MB/s")


def listing(addr):
    s = emload(addr, "/listing/k/{}", LIST_KEYS, 1, 64, ["-n", str(LIST_KEYS), "--mix", "seq", "-d", "3600"])
    print(f"uploaded {LIST_KEYS} one-byte objects at {float(s['rps']):.0f} req/s for the listing  {OTHER(s)}")
    # The node's own time for a page of 1,000 (a presigned URL fetched by curl: no XML parsing
    # on the client): the first page, and pages starting half-way and near the end.
    s3 = client(addr)
    for after in ("", f"k/{LIST_KEYS // 2}", f"k/{LIST_KEYS - 2000}"):
        params = {"Bucket": "listing", "MaxKeys": 1000}
        if after:
            params["StartAfter"] = after
        url = s3.generate_presigned_url("list_objects_v2", Params=params, ExpiresIn=600)
        times = []
        for _ in range(5):
            r = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url],
                capture_output=True, text=True, check=True,
            )
            status, size, secs = r.stdout.split()
            assert status == "200", r.stdout
            times.append(float(secs) * 1000)
        times.sort()
        print(
            f"ListObjectsV2 page of 1000 after {after or '(start)'!r:>12}: median {times[2]:.1f} ms "
            f"(min {times[0]:.1f}, max {times[4]:.1f}), {int(size) // 1024} KiB of XML, curl"
        )
    started = time.monotonic()
    pages, keys, first = 0, 0, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", PaginationConfig={"PageSize": 1000}):
        pages += 1
        keys += page.get("KeyCount", 0)
        if pages <= 3:
            first.append(time.monotonic() - started)
        if time.monotonic() - started > 120:
            break
    secs = time.monotonic() - started
    laps = ", ".join(f"{(b - a) * 1000:.0f}" for a, b in zip([0.0] + first, first))
    print(
        f"ListObjectsV2 of {LIST_KEYS} keys: first pages {laps} ms; {keys} keys in {pages} pages "
        f"in {secs:.1f} s ({keys / secs:.0f} keys/s){'' if keys >= LIST_KEYS else ' (stopped at 120 s)'}"
    )


if __name__ == "__main__":
    main()
