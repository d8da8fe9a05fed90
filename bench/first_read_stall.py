#!/usr/bin/env python3
"""First read of a large object after a restart: does it stall the other connections of its core?

    python3 bench/first_read_stall.py [EDGEMIRROR_BIN] [SIZE_MIB]

A stored object's body is checked against its CRC the first time it is read in a process (start-up
checks record headers only). Before issue 10 that check ran on the worker, so a 1-byte Range GET of
a 512 MiB object held every other connection of that core for as long as it took to read 512 MiB.

What this does, all on 127.0.0.1 with one worker (so every connection shares one core):
  1. serves a SIZE_MIB (512) object and a 1 KiB object from a small Python origin;
  2. mirrors both into a fresh store, restarts the node (both become "unverified"), warms the small
     one again (a hit from memory), and drops the page cache when allowed;
  3. one client GETs the 1 KiB object back to back on a keep-alive connection and records every
     latency; meanwhile another asks for `Range: bytes=0-0` of the big object (its first read);
  4. prints the small GETs' p50 and max while the first read ran, and the first read's own time.
No timing is asserted anywhere: this prints figures for bench/RESULTS.md.
"""
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgemirror"
SIZE_MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 512


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_origin(root):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=root, **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_node(config, log):
    p = subprocess.Popen([BIN, "--config", config], stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    assert line.startswith("edgemirror ready"), line
    fields = dict(kv.split("=") for kv in line.split()[2:])
    host, port = fields["data"].rsplit(":", 1)
    return p, (host, int(port))


def request(sock, path, headers=""):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "closed mid-body"
        rest += chunk
    return head.split(b"\r\n")[0], rest


def get_all(addr, path):
    s = socket.create_connection(addr)
    status, body = request(s, path)
    s.close()
    return status, len(body)


def main():
    work = tempfile.mkdtemp(prefix="edgemirror-stall-")
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "big.bin"), "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(SIZE_MIB):
            f.write(block)
    with open(os.path.join(www, "small.bin"), "wb") as f:
        f.write(os.urandom(1024))
    origin = start_origin(www)
    config = os.path.join(work, "edgemirror.toml")
    with open(config, "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:0"
workers = 1
[admin]
listen = "127.0.0.1:0"
[store]
dir = "{work}/store"
[cache]
disk_bytes = 0
[[buckets]]
name = "bkt"
[[buckets.mirror]]
url = "http://127.0.0.1:{origin.server_address[1]}/"
""")
    log = open(os.path.join(work, "node.log"), "w")
    node, addr = start_node(config, log)
    print("mirror:", get_all(addr, "/bkt/big.bin"), get_all(addr, "/bkt/small.bin"))
    node.terminate()
    node.wait()
    node, addr = start_node(config, log)
    get_all(addr, "/bkt/small.bin")  # first read of the small one: verified now, in memory after
    get_all(addr, "/bkt/small.bin")
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        cold = "page cache dropped"
    except OSError as e:
        cold = f"page cache NOT dropped ({e.strerror})"

    latencies = []
    during = []
    stop = threading.Event()
    big_done = threading.Event()

    def small_loop():
        s = socket.create_connection(addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while not stop.is_set():
            t = time.perf_counter()
            request(s, "/bkt/small.bin")
            dt = time.perf_counter() - t
            latencies.append(dt)
            if big_started.is_set() and not big_done.is_set():
                during.append(dt)

    big_started = threading.Event()
    th = threading.Thread(target=small_loop)
    th.start()
    time.sleep(0.5)
    s = socket.create_connection(addr)
    big_started.set()
    t = time.perf_counter()
    status, body = request(s, "/bkt/big.bin", "Range: bytes=0-0\r\n")
    big = time.perf_counter() - t
    big_done.set()
    time.sleep(0.5)
    stop.set()
    th.join()
    node.terminate()
    node.wait()
    origin.shutdown()
    during.sort()
    base = sorted(latencies)
    ms = lambda x: f"{x * 1000:.2f} ms"
    print(f"binary {BIN}, object {SIZE_MIB} MiB, {cold}")
    print(f"first read (Range bytes=0-0): {status.decode()} {len(body)} byte(s) in {ms(big)}")
    print(f"1 KiB hits on the same core: {len(base)} in total, p50 {ms(base[len(base) // 2])}")
    if during:
        print(f"  while the first read ran: {len(during)} hits, p50 {ms(during[len(during) // 2])}, max {ms(during[-1])}")
    else:
        print("  while the first read ran: no hit completed (the core was held the whole time)")
    print(f"  max over the whole run: {ms(base[-1])}")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
