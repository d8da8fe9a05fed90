#!/usr/bin/env python3
"""Churn: disk use against live bytes, and hit latency while compaction runs.

    python3 bench/churn.py [EDGEMIRROR_BIN] [ROUNDS]

One worker; a 64 MiB-segment store with compaction every second. The same 200 keys of 256 KiB
are mirrored, then purged, ROUNDS (20) times: about 1 GiB through 50 MiB live. Meanwhile one
client GETs a 1 KiB object (a RAM hit) back to back on a keep-alive connection. Prints the disk
bytes / live bytes ratio at the end, and the 1 KiB hits' p50/p99/max while compaction was
copying or removing (its counters moved during that second) against the seconds it was idle.
Timings are printed, never asserted.
"""
import http.server
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgemirror"
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
KEYS, SIZE = 200, 256 * 1024
TOKEN = "churn-token"


def start_origin(root):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=root, **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def request(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "closed mid-body"
        rest += chunk
    return head, rest


def metrics(admin):
    req = urllib.request.Request(f"http://{admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    text = urllib.request.urlopen(req).read().decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(edgemirror_\w+) (\d+)$", text, re.M)}


def admin_post(admin, path, body):
    req = urllib.request.Request(
        f"http://{admin}{path}", data=body.encode(), method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    return urllib.request.urlopen(req).read()


def pct(xs, p):
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")


def main():
    work = tempfile.mkdtemp(prefix="edgemirror-churn-")
    www = os.path.join(work, "www")
    os.makedirs(www)
    for i in range(KEYS):
        with open(os.path.join(www, f"k{i}"), "wb") as f:
            f.write(os.urandom(SIZE))
    with open(os.path.join(www, "hot"), "wb") as f:
        f.write(os.urandom(1024))
    origin = start_origin(www)
    config = os.path.join(work, "edgemirror.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[store]
dir = "{work}/store"
segment_bytes = 67108864
compaction_interval_ms = 1000
min_free_bytes = 0
[cache]
disk_bytes = 0
[[buckets]]
name = "bkt"
[[buckets.mirror]]
url = "http://127.0.0.1:{origin.server_address[1]}/"
""")
    log = open(os.path.join(work, "node.log"), "w")
    node = subprocess.Popen([BIN, "--config", config], stdout=subprocess.PIPE, stderr=log, text=True)
    line = node.stdout.readline()
    fields = dict(kv.split("=") for kv in line.split()[2:])
    host, port = fields["data"].rsplit(":", 1)
    addr, admin = (host, int(port)), fields["admin"]

    samples = []  # (time, latency)
    stop = threading.Event()

    def hits():
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request(s, "/bkt/hot")
        while not stop.is_set():
            t = time.perf_counter()
            request(s, "/bkt/hot")
            samples.append((time.time(), time.perf_counter() - t))

    compaction_seconds = set()

    def watch():
        last = None
        while not stop.is_set():
            m = metrics(admin)
            now = (m.get("edgemirror_store_compaction_bytes_copied_total", 0), m.get("edgemirror_store_compaction_bytes_removed_total", 0))
            if last is not None and now != last:
                compaction_seconds.add(int(time.time()))
                compaction_seconds.add(int(time.time()) - 1)
            last = now
            time.sleep(0.25)

    threads = [threading.Thread(target=hits), threading.Thread(target=watch)]
    for t in threads:
        t.start()
    s = socket.create_connection(addr)
    started = time.time()
    for r in range(ROUNDS):
        for i in range(KEYS):
            request(s, f"/bkt/k{i}")
        if r < ROUNDS - 1:
            admin_post(admin, "/v1/regions/r/buckets/bkt/purge", '{"prefix": "k"}')
    churn_end = time.time()
    # Let the last compaction passes finish, then keep measuring a quiet node for 3 s.
    quiet_since = None
    while True:
        time.sleep(0.25)
        recent = max(compaction_seconds, default=0)
        if time.time() - recent > 2:
            quiet_since = time.time()
            break
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    m = metrics(admin)
    node.terminate()
    node.wait()
    origin.shutdown()
    live = KEYS * SIZE
    disk = m["edgemirror_store_disk_bytes"]
    busy = [lat for (t, lat) in samples if int(t) in compaction_seconds]
    churn = [lat for (t, lat) in samples if t < churn_end and int(t) not in compaction_seconds]
    idle = [lat for (t, lat) in samples if t >= quiet_since]
    print(f"binary {BIN}: {ROUNDS} rounds of {KEYS} x {SIZE // 1024} KiB mirrored and purged in {time.time() - started:.1f} s")
    print(f"written {ROUNDS * live / 2**20:.0f} MiB; live {live / 2**20:.0f} MiB; on disk {disk / 2**20:.1f} MiB ({disk / live:.2f}x)")
    print(f"compactions {m.get('edgemirror_store_compactions_total', 0)}, copied {m.get('edgemirror_store_compaction_bytes_copied_total', 0) / 2**20:.0f} MiB, removed {m.get('edgemirror_store_compaction_bytes_removed_total', 0) / 2**20:.0f} MiB")
    print(f"1 KiB hits while compacting: n={len(busy)} p50 {pct(busy, 0.5):.3f} ms p99 {pct(busy, 0.99):.3f} ms max {pct(busy, 1.0):.3f} ms")
    print(f"1 KiB hits during churn, compaction still: n={len(churn)} p50 {pct(churn, 0.5):.3f} ms p99 {pct(churn, 0.99):.3f} ms max {pct(churn, 1.0):.3f} ms")
    print(f"1 KiB hits on a quiet node:  n={len(idle)} p50 {pct(idle, 0.5):.3f} ms p99 {pct(idle, 0.99):.3f} ms max {pct(idle, 1.0):.3f} ms")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
