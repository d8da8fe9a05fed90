#!/usr/bin/env python3
"""Prints the failures recorded by edgemirror_plugin (WORKDIR/exchanges.jsonl).

    show_failures.py WORKDIR/exchanges.jsonl [-n N] [NAME_SUBSTRING ...]

For each failed test: the assertion or exception, the suite line, and its last N HTTP
exchanges (default 3): method, URL, the request headers that matter, status, response
headers (minus the ubiquitous ones) and the start of the response body.
"""
import argparse
import json

QUIET_RESP = {"server", "date", "connection", "x-edgemirror-source"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("names", nargs="*")
    a = ap.parse_intermixed_args()
    for line in open(a.file):
        r = json.loads(line)
        name = r["nodeid"].split("::")[-1]
        if a.names and not any(n in name for n in a.names):
            continue
        print("=" * 100)
        print(f"{name}  [{r['when']}]  at {', '.join(r['where'])}")
        print("  " + r["error"][:800].replace("\n", "\n  "))
        for e in r["exchanges"][-a.n:]:
            print(f"  > {e['method']} {e['url']}")
            for k, v in e["req_headers"].items():
                print(f"      {k}: {v}")
            if e.get("req_body"):
                print(f"      body: {e['req_body'][:400]}")
            if e.get("error"):
                print(f"  < (no response) {e['error']}")
                continue
            rh = {k: v for k, v in (e["resp_headers"] or {}).items() if k.lower() not in QUIET_RESP}
            print(f"  < {e['status']} {rh}")
            if e.get("resp_body"):
                print(f"      body: {e['resp_body'][:600]}")


if __name__ == "__main__":
    main()
