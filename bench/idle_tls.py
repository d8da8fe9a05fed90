#!/usr/bin/env python3
"""bench/idle_tls.py: the node's memory per idle TLS connection.

    python3 bench/idle_tls.py N [PATH (/bench/64k/obj-0)] [PORT (18090)]

Against a node `bench/peers.sh serve` started (restart it fresh before each measurement: freed
memory stays in its heap): opens N TLS connections to PORT, makes one GET of PATH on each and
keeps them all open, then prints the node's RSS growth divided by N."""
import socket
import ssl
import subprocess
import sys
import time

n = int(sys.argv[1])
path = sys.argv[2] if len(sys.argv) > 2 else "/bench/64k/obj-0"
port = int(sys.argv[3]) if len(sys.argv) > 3 else 18090
pid = subprocess.check_output(["pgrep", "-f", "edgemirror --config"]).split()[0].decode()


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
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
    while len(body) < length:
        body += s.recv(65536)
    conns.append(s)
time.sleep(1)
print(f"{n} idle TLS connections after one GET of {path}: RSS +{(rss_kib() - base) / n:.1f} KiB per connection")
