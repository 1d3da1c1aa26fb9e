#!/usr/bin/env python3
"""Limited, randomized allocation candidates at scale: two Kova checkouts side by side.

Nova asks ``GET /allocation_candidates`` with ``limit`` (``max_placement_results``,
1000 by default) and Placement's ``randomize_allocation_candidates`` on.  This
benchmark loads N flat providers of OpenStack's perfload shape (VCPU 32 /
max_unit 16, MEMORY_MB 8192 / min_unit 128, DISK_GB 8192 / min_unit 5,
aggregates cycling [A], [A,B], [A,B,C], traits cycling [AVX2], [+SSE2],
[+SSD]) into one Postgres database -- with bulk SQL, because the point is
the query (``placement_perfload.py`` measures the load through the API) --
and serves it with ``kova placement serve --workers 2
--randomize-allocation-candidates`` from two checkouts at once (``--base``:
e.g. a worktree of the previous commit; ``--new``: this one), each with its
own ``.venv``.  Then, alternating between the two in rounds so that both
see the same machine load:

* the perfload query (every provider matches) with ``limit=1000``:
  sequential median / p95, and requests/s from 10 concurrent clients;
* the same query without a limit: sequential median;
* the spread: how many distinct providers the limited answers covered,
  against what uniform sampling gives (1 - (1 - limit/N)^requests of N);
* the servers' CPU time per sequential request (user + system of the
  worker processes, from /proc): steadier than wall time on a loaded machine.

Usage::

    python bench/placement_limit.py --providers 100000 \\
        --base /work/other-checkout --new . [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import placement_perfload as perfload  # noqa: E402 (a sibling script)

AGG_CYCLE, QUERY, Http, Server = (perfload.AGG_CYCLE, perfload.QUERY, perfload.Http,
                                  perfload.Server)
drop_db, free_port, make_db = perfload.drop_db, perfload.free_port, perfload.make_db

SERVER_URL = os.environ.get("KOVA_BENCH_POSTGRES",
                            "postgresql://root@/postgres?host=/var/run/postgresql")


def bulk_load(db_url: str, n: int) -> float:
    """N perfload-shaped providers in a few statements; returns seconds."""
    import psycopg

    start = time.perf_counter()
    with psycopg.connect(db_url, autocommit=False) as conn:
        cur = conn.cursor()
        rc = dict(cur.execute("SELECT name, id FROM resource_classes WHERE name IN "
                              "('VCPU', 'MEMORY_MB', 'DISK_GB')").fetchall())
        tr = dict(cur.execute("SELECT name, id FROM traits WHERE name IN ('HW_CPU_X86_AVX2', "
                              "'HW_CPU_X86_SSE2', 'STORAGE_DISK_SSD')").fetchall())
        aggs = []
        for agg in AGG_CYCLE[2]:
            aggs.append(cur.execute("INSERT INTO placement_aggregates (uuid) VALUES (%s) "
                                    "RETURNING id", (agg,)).fetchone()[0])
        cur.execute("INSERT INTO resource_providers (uuid, name, generation) "
                    "SELECT gen_random_uuid()::text, 'perf-' || i, 4 "
                    "FROM generate_series(0, %s - 1) AS i", (n,))
        cur.execute("UPDATE resource_providers SET root_provider_id = id")
        for name, total, min_unit, max_unit in (("VCPU", 32, 1, 16),
                                                ("MEMORY_MB", 8192, 128, 8192),
                                                ("DISK_GB", 8192, 5, 8192)):
            cur.execute("INSERT INTO inventories (resource_provider_id, resource_class_id, "
                        "total, reserved, min_unit, max_unit, step_size, allocation_ratio) "
                        "SELECT id, %s, %s, 0, %s, %s, 1, 1.0 FROM resource_providers",
                        (rc[name], total, min_unit, max_unit))
        # i = id - min(id): cycle k = i % 3 holds aggregates [:k+1] and traits [:k+1]
        base = cur.execute("SELECT min(id) FROM resource_providers").fetchone()[0]
        for k, (agg, trait) in enumerate(zip(aggs, ("HW_CPU_X86_AVX2", "HW_CPU_X86_SSE2",
                                                      "STORAGE_DISK_SSD"))):
            cur.execute("INSERT INTO resource_provider_aggregates SELECT id, %s "
                        "FROM resource_providers WHERE (id - %s) %% 3 >= %s", (agg, base, k))
            cur.execute("INSERT INTO resource_provider_traits SELECT id, %s "
                        "FROM resource_providers WHERE (id - %s) %% 3 >= %s",
                        (tr[trait], base, k))
        # every reader rebuilds its summaries from scratch (provider 0: everything)
        counter = cur.execute("UPDATE placement_state SET counter = counter + 1 WHERE id = 1 "
                              "RETURNING counter").fetchone()[0]
        cur.execute("INSERT INTO placement_changes (counter, provider_id) VALUES (%s, 0)",
                    (counter,))
        conn.commit()
    return time.perf_counter() - start


def start(repo: Path, db_url: str, logdir: Path, name: str) -> Server:
    kova = str(repo / ".venv" / "bin" / "kova")
    sa_url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    cmd = [kova, "placement", "serve", "--database-url", sa_url, "--host", "127.0.0.1",
           "--port", str(free_port()), "--workers", "2", "--no-auth",
           "--randomize-allocation-candidates", "--log-level", "warning"]
    return Server(name, cmd, dict(os.environ), int(cmd[cmd.index("--port") + 1]),
                  logdir / f"{name}.log")


#: Per server URL: requests sent again after the server closed the
#: connection without an answer.
RETRIES: dict[str, int] = {}


def call(c: Http, path: str) -> bytes:
    """GET ``path``; once more on a new connection if the server closed it
    without answering (counted in RETRIES)."""
    try:
        return c.call("GET", path)[1]
    except (http.client.RemoteDisconnected, ConnectionError):
        key = f"{c.conn.host}:{c.conn.port}"
        RETRIES[key] = RETRIES.get(key, 0) + 1
        c.conn.close()
        return c.call("GET", path)[1]


def server_cpu(server: Server) -> dict[int, float]:
    """CPU seconds (user + system) used so far by ``kova placement serve``
    and each of its worker processes, by pid."""
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [server.proc.pid]
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children")
    if children.exists():
        pids += [int(x) for x in children.read_text().split()]
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return out


def cpu_since(server: Server, before: dict[int, float], f: dict) -> float:
    """CPU seconds since ``before``; a worker that was replaced meanwhile is
    counted in f["workers_replaced"] (its last CPU seconds are lost)."""
    after = server_cpu(server)
    f["workers_replaced"] += len(before.keys() - after.keys())
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def providers_of(body: bytes) -> list[str]:
    """The providers of the candidates of one answer."""
    return [next(iter(a["allocations"])) for a in json.loads(body)["allocation_requests"]]


def sequential(url: str, path: str, requests: int, seen: set | None = None,
               expect: int | None = None) -> list[float]:
    c = Http(url)
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        body = call(c, path)
        times.append(time.perf_counter() - t0)
        got = providers_of(body)  # outside the timing: the client's own work
        if expect is not None and len(got) != expect:
            raise RuntimeError(f"{url}{path}: {len(got)} candidates, expected {expect}")
        if seen is not None:
            seen.update(got)
    c.close()
    return times


def concurrent(url: str, path: str, clients: int, per_client: int) -> tuple[int, float]:
    def worker():
        c = Http(url)
        for _ in range(per_client):
            call(c, path)
        c.close()

    return clients * per_client, perfload.run_threads(worker, clients)


def pct(times: list[float], q: float) -> float:
    times = sorted(times)
    return round(times[min(len(times) - 1, int(round(q * (len(times) - 1))))] * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--providers", type=int, default=100_000)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--base", type=Path, required=True, help="checkout measured as 'base'")
    ap.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20, help="sequential, per round")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=6, help="concurrent, per round")
    ap.add_argument("--unlimited", type=int, default=3, help="sequential, per round")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--logdir", type=Path, default=Path("/tmp/placement-limit"))
    args = ap.parse_args()
    args.logdir.mkdir(parents=True, exist_ok=True)
    n = args.providers
    name = f"placement_limit_{n}_{uuid.uuid4().hex[:6]}"
    db_url = make_db(SERVER_URL, name)
    servers: dict[str, Server] = {}
    try:
        # the schema: one short-lived server migrates the new database
        servers["new"] = start(args.new.resolve(), db_url, args.logdir, "new")
        print(f"bulk-loading {n} providers ...", flush=True)
        load_s = bulk_load(db_url, n)
        print(f"loaded in {load_s:.1f}s", flush=True)
        servers["base"] = start(args.base.resolve(), db_url, args.logdir, "base")
        limited = f"{QUERY}&limit={args.limit}"
        figures = {k: {"limited": [], "unlimited": [], "conc_requests": 0, "conc_seconds": 0.0,
                       "seen": set(), "spread_requests": 0, "limited_cpu_s": 0.0,
                       "unlimited_cpu_s": 0.0, "workers_replaced": 0} for k in servers}
        for srv in servers.values():  # warm up: both workers build their summaries
            concurrent(srv.url, limited, 4, 2)
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for key in order:
                url, f = servers[key].url, figures[key]
                cpu0 = server_cpu(servers[key])
                f["limited"] += sequential(url, limited, args.requests, f["seen"],
                                           min(n, args.limit))
                f["limited_cpu_s"] += cpu_since(servers[key], cpu0, f)
                f["spread_requests"] += args.requests
                done, secs = concurrent(url, limited, args.clients, args.per_client)
                f["conc_requests"] += done
                f["conc_seconds"] += secs
                cpu0 = server_cpu(servers[key])
                f["unlimited"] += sequential(url, QUERY, args.unlimited, expect=n)
                f["unlimited_cpu_s"] += cpu_since(servers[key], cpu0, f)
                print(f"round {r + 1} {key}: limited median "
                      f"{statistics.median(f['limited']) * 1000:.1f} ms, "
                      f"{f['conc_requests'] / f['conc_seconds']:.1f} req/s, unlimited median "
                      f"{statistics.median(f['unlimited']) * 1000:.1f} ms", flush=True)
        out = []
        for key, f in figures.items():
            k = f["spread_requests"]
            expected = n * (1 - (1 - args.limit / n) ** k)
            out.append({"kova": key, "repo": str((args.base if key == "base" else args.new)
                                                 .resolve()),
                        "providers": n, "limit": args.limit,
                        "limited_median_ms": pct(f["limited"], 0.5),
                        "limited_p95_ms": pct(f["limited"], 0.95),
                        "limited_requests": len(f["limited"]),
                        "concurrent_req_per_s": round(f["conc_requests"] / f["conc_seconds"], 1),
                        "concurrent_requests": f["conc_requests"], "clients": args.clients,
                        "limited_server_cpu_ms_per_request": round(
                            f["limited_cpu_s"] * 1000 / len(f["limited"]), 1),
                        "unlimited_median_ms": pct(f["unlimited"], 0.5),
                        "unlimited_server_cpu_ms_per_request": round(
                            f["unlimited_cpu_s"] * 1000 / len(f["unlimited"]), 1),
                        "unlimited_requests": len(f["unlimited"]),
                        "workers_replaced_while_measuring_cpu": f["workers_replaced"],
                        "distinct_providers": len(f["seen"]),
                        "distinct_expected_uniform": round(expected),
                        "retried_requests": RETRIES.get(
                            servers[key].url.split("//", 1)[1], 0),
                        "loadavg": [round(x, 1) for x in os.getloadavg()]})
        print()
        print(f"{'kova':6} {'N':>7} {'limit median':>12} {'p95':>7} {'cpu ms':>7} "
              f"{'req/s(10)':>10} {'unlimited median':>16} {'cpu ms':>7} "
              f"{'distinct/expected':>18}")
        for o in out:
            print(f"{o['kova']:6} {o['providers']:>7} {o['limited_median_ms']:>12} "
                  f"{o['limited_p95_ms']:>7} {o['limited_server_cpu_ms_per_request']:>7} "
                  f"{o['concurrent_req_per_s']:>10} {o['unlimited_median_ms']:>16} "
                  f"{o['unlimited_server_cpu_ms_per_request']:>7} "
                  f"{o['distinct_providers']:>9}/{o['distinct_expected_uniform']}")
        print(f"load average {os.getloadavg()}, bulk load {load_s:.1f}s, "
              f"requests sent again after a closed connection: {RETRIES}")
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
    finally:
        for srv in servers.values():
            srv.stop()
        drop_db(SERVER_URL, name)


if __name__ == "__main__":
    main()
