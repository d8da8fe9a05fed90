#!/usr/bin/env python3
"""bench/idle_tls.py: the node's memory per idle TLS connection.

    python3 bench/idle_tls.py N [PATH (/bench/64k/obj-0)] [PORT (18090)] [PID]

Against a node `bench/peers.sh serve` started (restart it fresh before each measurement: freed
memory stays in its heap): opens N TLS connections to PORT, makes one GET of PATH on each and
keeps them all open, then prints the node's RSS growth divided by N. PID is the node's (by
default, the one process running on peers.sh's config)."""
import resource
import socket
import ssl
import subprocess
import sys
import time

n = int(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else "/bench/64k/obj-0"
port = int(sys.argv[3]) if len(sys.argv) > 3 else 18090
if len(sys.argv) > 4:
    pid = sys.argv[4]
else:
    found = subprocess.run(
        ["pgrep", "-f", "--", "--config /tmp/edgemirror-peers/edgemirror/edgemirror.toml"], capture_output=True
    )
    pids = found.stdout.split()
    if len(pids) != 1:
        raise SystemExit(f"expected one node on peers.sh's config, found {len(pids)}: pass its PID")
    pid = pids[0].decode()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(n + 64, hard), hard))


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
base = rss_kib()
conns = []
for _ in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(request)
    def more(got):
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit(f"the node closed a connection mid-response after {len(got)} bytes")
        return got + chunk

    got = b""
    while b"\r\n\r\n" not in got:
        got = more(got)
    head, body = got.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{path} answered {head.splitlines()[0]!r}, not 200")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), None)
    if length is None:
        raise SystemExit(f"{path} answered without a Content-Length")
    while len(body) < length:
        body = more(body)
    conns.append(s)
time.sleep(1)
print(f"{n} idle TLS connections after one GET of {path}: RSS +{(rss_kib() - base) / n:.1f} KiB per connection")
