#!/usr/bin/env python3
"""Kova Placement of two checkouts, A and B, side by side on the same minutes.

``placement_perfload.py --only kova --kova-repo <checkout>`` measures one
checkout at a time; on a shared machine whose load changes from one minute to
the next, rounds of A and B a minute apart can differ by ×2 either way.  This
script runs both servers at once (each checkout's ``.venv/bin/kova placement
serve``, each on its own Postgres database) and measures them request by
request in turn:

* load: N providers into each, four writes each, alternating chunks of 100
  providers between them (``load_interleaved`` of placement_perfload.py) ->
  writes/s of each over its own chunks;
* sequential: the perfload ``GET /allocation_candidates`` query, one request
  to A, one to B, ... (``--requests`` each) -> median and p95 of each;
* concurrent: bursts of ``--burst`` requests from 10 clients, A, B, A, B, ...
  (``--bursts`` each) -> the median requests/s of each.

Usage::

    python bench/placement_ab.py --a /path/to/checkout-before \\
        --b /path/to/checkout-after --providers 1000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import placement_perfload as pp  # noqa: E402


def start(label: str, repo: Path, args) -> pp.Server:
    """``kova placement serve`` of ``repo`` on a fresh database."""
    pp.KOVA_REPO[0] = repo.resolve()
    logdir = args.logdir / label
    logdir.mkdir(parents=True, exist_ok=True)
    db_url = pp.make_db(args.server_url, f"placement_ab_{label}_{os.getpid()}")
    return pp.start_kova(db_url, args.kova_workers, logdir)


def alternate_sequential(urls: dict[str, str], requests: int) -> dict[str, dict]:
    """One query to each server in turn, ``requests`` each (the order flips
    every round) -> median and p95 per server."""
    clients = {name: pp.Http(url) for name, url in urls.items()}
    counts = {}
    for name, c in clients.items():
        for _ in range(2):  # warm up, as placement_perfload.sequential
            _, body = c.call("GET", pp.QUERY)
        counts[name] = len(json.loads(body)["allocation_requests"])
    times: dict[str, list[float]] = {name: [] for name in urls}
    order = list(urls)
    for k in range(requests):
        for name in (order if k % 2 == 0 else order[::-1]):
            t0 = time.perf_counter()
            clients[name].call("GET", pp.QUERY)
            times[name].append(time.perf_counter() - t0)
    for c in clients.values():
        c.close()
    out = {}
    for name, ts in times.items():
        ts.sort()
        p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
        out[name] = {"requests": requests, "candidates": counts[name],
                     "median_ms": round(statistics.median(ts) * 1000, 1),
                     "p95_ms": round(p95 * 1000, 1)}
    return out


def alternate_concurrent(urls: dict[str, str], clients: int, burst: int,
                         bursts: int) -> dict[str, dict]:
    """Bursts of ``burst`` requests from ``clients`` clients, each server in
    turn -> every burst's requests/s and their median per server."""
    rates: dict[str, list[float]] = {name: [] for name in urls}
    errors = dict.fromkeys(urls, 0)
    order = list(urls)
    for k in range(bursts):
        for name in (order if k % 2 == 0 else order[::-1]):
            r = pp.concurrent(urls[name], clients, burst)
            rates[name].append(r["req_per_s"])
            errors[name] += r["errors"]
    return {name: {"clients": clients, "burst": burst, "req_per_s": rs,
                   "median_req_per_s": round(statistics.median(rs), 1),
                   "errors": errors[name]} for name, rs in rates.items()}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (its .venv)")
    ap.add_argument("--b", type=Path, required=True, help="checkout B (its .venv)")
    ap.add_argument("--providers", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300, help="sequential requests each")
    ap.add_argument("--burst", type=int, default=100, help="requests per concurrent burst")
    ap.add_argument("--bursts", type=int, default=5, help="concurrent bursts each")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--kova-workers", type=int, default=2)
    ap.add_argument("--server-url", default=os.environ.get(
        "KOVA_BENCH_POSTGRES", "postgresql://root@/postgres?host=/var/run/postgresql"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--logdir", type=Path, default=Path("/tmp/placement-ab"))
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    servers: dict[str, pp.Server] = {}
    try:
        for label, repo in (("a", args.a), ("b", args.b)):
            servers[label] = start(label, repo, args)
        urls = {label: s.url for label, s in servers.items()}
        print(f"[ab] loading {args.providers} providers into both, interleaved ...",
              flush=True)
        loaded = pp.load_interleaved(urls, args.providers, 100)
        print(f"[ab] load {loaded}", flush=True)
        seq = alternate_sequential(urls, args.requests)
        print(f"[ab] sequential {seq}", flush=True)
        conc = alternate_concurrent(urls, args.clients, args.burst, args.bursts)
        print(f"[ab] concurrent {conc}", flush=True)
    finally:
        for label, s in servers.items():
            s.stop()
            pp.drop_db(args.server_url, f"placement_ab_{label}_{os.getpid()}")
    result = {label: {"repo": str(repo.resolve()), "providers": args.providers,
                      "load": loaded[label], "sequential": seq[label],
                      "concurrent": conc[label]}
              for label, repo in (("a", args.a), ("b", args.b))}
    result["loadavg"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
