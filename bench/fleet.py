#!/usr/bin/env python3
"""The fleet's cost model, measured where one machine can: what a miss costs the origin and the
peers, and what asking the key's owner adds to a GET.

    python3 bench/fleet.py [EDGEMIRROR_BIN] [OBJECTS] [SIZE_BYTES]
    SHARED=1 python3 bench/fleet.py ...   # the edges over a shared store (a 3-node Garage)

An origin (a threaded HTTP server in this process, bodies in memory, every request counted) and
three edges (one worker each) that mirror it, joined into one fleet by a reload (README
"Fleet"). Each object is read once from every edge, the first edge rotating, on one keep-alive
connection per edge. Each GET is classed by what the edge's /metrics and the origin's count say
happened during it:

  origin       the edge fetched from the origin itself (it owns the key)
  owner-cold   the edge asked the owner, which fetched from the origin meanwhile
  owner-warm   the edge asked the owner, which had the object
  local        the edge had it (its memory tier)

  shared       (SHARED=1) the edge read it from the shared store of record

and the table gives each class's count and latency, with the origin's and the peers' requests
and bytes per object. With SHARED=1 the edges run over a real 3-node Garage cluster
(`store.backend = "s3"`, started by tests/garage/cluster.sh) and a fourth edge, new and empty,
then reads every object from the shared store, at once again (a local hit), and after the
staleness bound once more (a local hit plus the HEAD that revalidates it); the table also gives
the shared store's requests and bytes per object. Everything shares this 2-core machine (loopback, no network latency):
the latencies are what the node adds, not what a real network costs. Timings are printed, never
asserted.
"""
import http.client
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchnode import start_node  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/edgemirror"
OBJECTS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 64 * 1024
TOKEN = "bench-token"
SECRET = "bench-fleet-secret-0123456789"
SHARED = os.environ.get("SHARED") == "1"
HERE = os.path.dirname(os.path.abspath(__file__))


def start_garage(work):
    """A 3-node Garage on 127.0.0.1 (tests/garage/cluster.sh): its `[store.s3]` table and pids."""
    out = subprocess.run(
        ["bash", os.path.join(HERE, "../tests/garage/cluster.sh"), os.path.join(work, "garage"), "3", "fleet-shared"],
        capture_output=True, text=True, check=True,
    ).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    env = {k: v.strip('"') for k, v in env.items()}
    endpoints = ", ".join(f'"http://{a}"' for a in env["GARAGE_S3_ALL"].split())
    table = (
        f'[store.s3]\nendpoints = [{endpoints}]\nbucket = "{env["GARAGE_BUCKET"]}"\nregion = "garage"\n'
        f'access_key_id = "{env["GARAGE_KEY"]}"\nsecret_access_key = "{env["GARAGE_SECRET"]}"\n'
    )
    return table, [int(p) for p in env["GARAGE_PIDS"].split()]


class Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, bodies):
        self.bodies, self.counts, self.lock = bodies, {}, threading.Lock()
        super().__init__(("127.0.0.1", 0), OriginHandler)


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with self.server.lock:
            self.server.counts[self.path] = self.server.counts.get(self.path, 0) + 1
        body = self.server.bodies.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def metrics(admin):
    req = urllib.request.Request(f"http://{admin}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    out = {}
    for line in urllib.request.urlopen(req).read().decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    work = tempfile.mkdtemp(prefix="edgemirror-fleet-")
    bodies = {f"/o/obj-{i}": os.urandom(SIZE) for i in range(OBJECTS)}
    origin = Origin(bodies)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_address[1]}"
    edges = []
    garage_pids = []
    try:
        shared_table = ""
        if SHARED:
            shared_table, garage_pids = start_garage(work)

        def edge_sections(i):
            backend = 'backend = "s3"\n' if SHARED else ""
            return (
                f'[store]\ndir = "{work}/edge{i}-store"\nmin_free_bytes = 0\n{backend}{shared_table}[cache]\ndisk_bytes = 0\n'
                f'[[buckets]]\nname = "fleet-bench"\n[[buckets.mirror]]\nurl = "{url}/o/"\nkey_prefix = ""\n'
            )

        for i in range(3):
            proc, data, admin = start_node(BIN, work, f"edge{i}", edge_sections(i), TOKEN)
            edges.append((proc, data, admin))
        peers = ", ".join(f'"http://{d}"' for _, d, _ in edges)
        for i, (_, data, admin) in enumerate(edges):
            path = os.path.join(work, f"edge{i}.toml")
            with open(path, "a") as f:
                f.write(f'\n[fleet]\nself = "http://{data}"\npeers = [{peers}]\nsecret = "{SECRET}"\n')
            req = urllib.request.Request(
                f"http://{admin}/v1/reload", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            urllib.request.urlopen(req).read()

        conns = [http.client.HTTPConnection(data) for _, data, _ in edges]
        samples = {"origin": [], "owner-cold": [], "owner-warm": [], "shared": [], "local": []}
        for i in range(OBJECTS):
            path = f"/o/obj-{i}"
            for j in range(3):
                e = (i + j) % 3
                before = metrics(edges[e][2])
                origin_before = origin.counts.get(path, 0)
                start = time.perf_counter()
                conns[e].request("GET", f"/fleet-bench/obj-{i}")
                resp = conns[e].getresponse()
                body = resp.read()
                took = time.perf_counter() - start
                assert resp.status == 200 and body == bodies[path], (i, e, resp.status)
                after = metrics(edges[e][2])
                fills = after["edgemirror_origin_fetches_total"] - before["edgemirror_origin_fetches_total"]
                via_peer = after["edgemirror_fleet_peer_fetches_total"] - before["edgemirror_fleet_peer_fetches_total"]
                origin_asked = origin.counts.get(path, 0) - origin_before
                from_shared = after.get("edgemirror_shared_reads_total", 0) - before.get("edgemirror_shared_reads_total", 0)
                if fills == 0:
                    kind = "local"
                elif from_shared:
                    kind = "shared"
                elif via_peer == 0:
                    kind = "origin"
                else:
                    kind = "owner-cold" if origin_asked else "owner-warm"
                samples[kind].append(took * 1e3)

        if SHARED:
            # Wait for the writes behind the fills, then a new, empty edge reads everything
            # twice: from the shared store, then from itself.
            deadline = time.time() + 60
            while sum(metrics(a).get("edgemirror_shared_writes_total", 0) for _, _, a in edges) < OBJECTS:
                assert time.time() < deadline, "the shared store did not get every object"
                time.sleep(0.1)
            proc, data, admin = start_node(BIN, work, "edge-new", edge_sections(3), TOKEN)
            edges.append((proc, data, admin))
            conn = http.client.HTTPConnection(data)
            kinds = ("new edge: shared hit", "new edge: local hit", "new edge: local hit, revalidated")
            for kind in kinds:
                samples[kind] = []

            def timed_get(i, kind):
                start = time.perf_counter()
                conn.request("GET", f"/fleet-bench/obj-{i}")
                resp = conn.getresponse()
                body = resp.read()
                samples[kind].append((time.perf_counter() - start) * 1e3)
                assert resp.status == 200 and body == bodies[f"/o/obj-{i}"], (kind, i, resp.status)

            # Each object from the shared store, then at once again (fresh: a local hit) ...
            for i in range(OBJECTS):
                timed_get(i, kinds[0])
                timed_get(i, kinds[1])
            # ... and once more after store.s3.staleness_ms (1 s): a local hit that asks the
            # shared store with HEAD whether the copy is still current.
            time.sleep(1.2)
            for i in range(OBJECTS):
                timed_get(i, kinds[2])

        origin_requests = sum(origin.counts.values())
        totals = [metrics(a) for _, _, a in edges]
        peer_fetches = sum(t["edgemirror_fleet_peer_fetches_total"] for t in totals)
        fill_bytes = sum(t["edgemirror_origin_bytes_total"] for t in totals)
        origin_bytes = origin_requests * SIZE
        over = " over a 3-node Garage (store.backend = s3)" if SHARED else ""
        print(f"## Fleet cost model: 3 edges{over}, {OBJECTS} objects of {SIZE} bytes, each read once from every edge\n")
        print("| GET | count | p50 | p90 | p99 | mean |")
        print("|---|---:|---:|---:|---:|---:|")
        for kind, values in samples.items():
            if values:
                print(
                    f"| {kind} | {len(values)} | {pct(values, 0.5):.3f} ms | {pct(values, 0.9):.3f} ms | "
                    f"{pct(values, 0.99):.3f} ms | {statistics.mean(values):.3f} ms |"
                )
        print()
        print(f"- origin requests per object: {origin_requests / OBJECTS:.2f} (without the fleet: 3.00)")
        print(f"- peer fetches per object: {peer_fetches / OBJECTS:.2f}")
        print(f"- bytes from the origin: {origin_bytes / 2**20:.1f} MiB; between peers: {(fill_bytes - origin_bytes) / 2**20:.1f} MiB")
        served = {}
        for t in totals:
            for name, v in t.items():
                if name.startswith("edgemirror_response_bytes_total{"):
                    source = name.split('"')[1]
                    served[source] = served.get(source, 0) + v
        if SHARED:
            total = lambda name: sum(t.get(name, 0) for t in totals)  # noqa: E731
            print(f"- shared store requests per object: {total('edgemirror_shared_requests_total') / OBJECTS:.2f} "
                  f"(writes {total('edgemirror_shared_writes_total') / OBJECTS:.2f}, reads that found it "
                  f"{total('edgemirror_shared_reads_total') / OBJECTS:.2f}, revalidations "
                  f"{total('edgemirror_shared_revalidations_total') / OBJECTS:.2f}; the rest are lookups of keys it lacked)")
            print(f"- bytes written to the shared store: {total('edgemirror_shared_writes_total') * SIZE / 2**20:.1f} MiB; "
                  f"read from it by fills: {total('edgemirror_shared_read_bytes_total') / 2**20:.1f} MiB")
        print("- bytes served to clients by source: " + ", ".join(f"{s} {v / 2**20:.1f} MiB" for s, v in served.items() if v))
    finally:
        for proc, _, _ in edges:
            proc.terminate()
            proc.wait()
        for pid in garage_pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        origin.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
