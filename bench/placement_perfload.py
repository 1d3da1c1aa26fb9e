#!/usr/bin/env python3
"""Placement perfload, Kova vs OpenStack Placement 16.0.0, side by side.

Reproduces OpenStack Placement's ``perfload`` job on the same Postgres:

* load N flat providers one at a time, four writes each (create, inventory
  VCPU 32 / max_unit 16, MEMORY_MB 8192 / min_unit 128, DISK_GB 8192 /
  min_unit 5; aggregates cycling [A], [A,B], [A,B,C]; traits cycling
  [HW_CPU_X86_AVX2], [+HW_CPU_X86_SSE2], [+STORAGE_DISK_SSD]) -> writes/s.
  With both services the two load phases are interleaved in chunks of 100
  providers (``--interleave``; 0 runs Kova's whole load, then OpenStack's),
  so that both are measured over the same minutes of a shared machine;
* ``GET /allocation_candidates?resources=VCPU:1,DISK_GB:10,MEMORY_MB:256
  &member_of=A&required=HW_CPU_X86_AVX2`` (no limit, every provider
  matches) sequentially -> median / p95, then from 10 concurrent clients ->
  requests/s.

OpenStack Placement is installed from PyPI into its own virtualenv
(``$KOVA_CACHE/openstack-placement-16.0.0``) and served by gunicorn
(2 workers x 8 threads); Kova by ``kova placement serve`` (uvicorn).
Usage::

    python bench/placement_perfload.py --providers 1000 --providers 10000
    python bench/placement_perfload.py --providers 1000 --only kova

This is a benchmark, not a test: it prints a table and, with ``--json``,
writes the figures to a file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KOVA_CACHE", Path.home() / ".cache" / "kova"))
OSP_VERSION = "16.0.0"
OSP_VENV = CACHE / f"openstack-placement-{OSP_VERSION}"
#: The checkout whose ``.venv/bin/kova`` is measured (``--kova-repo``: e.g.
#: another commit's worktree, to compare Kova before and after a change).
KOVA_REPO = [REPO]

AGG_A, AGG_B, AGG_C = (str(uuid.UUID(int=i)) for i in (0xA, 0xB, 0xC))
AGG_CYCLE = [[AGG_A], [AGG_A, AGG_B], [AGG_A, AGG_B, AGG_C]]
TRAIT_CYCLE = [["HW_CPU_X86_AVX2"], ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE2"],
               ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE2", "STORAGE_DISK_SSD"]]
INVENTORY = {"VCPU": {"total": 32, "max_unit": 16},
             "MEMORY_MB": {"total": 8192, "min_unit": 128},
             "DISK_GB": {"total": 8192, "min_unit": 5}}
QUERY = (f"/allocation_candidates?resources=VCPU:1,DISK_GB:10,MEMORY_MB:256"
         f"&member_of={AGG_A}&required=HW_CPU_X86_AVX2")
HEADERS = {"openstack-api-version": "placement latest", "x-auth-token": "admin",
           "accept": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_admin(server_url: str):
    import psycopg

    return psycopg.connect(server_url, autocommit=True)


def make_db(server_url: str, name: str) -> str:
    with pg_admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def drop_db(server_url: str, name: str) -> None:
    with pg_admin(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_openstack_venv() -> Path:
    python = OSP_VENV / "bin" / "python"
    marker = OSP_VENV / ".installed"
    if not marker.exists():
        print(f"installing openstack-placement {OSP_VERSION} into {OSP_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(OSP_VENV)], check=True)
        subprocess.run([str(OSP_VENV / "bin" / "pip"), "install", "-q",
                        f"openstack-placement=={OSP_VERSION}", "gunicorn", "psycopg2-binary"],
                       check=True)
        marker.write_text(OSP_VERSION)
    return python


class Server:
    def __init__(self, name: str, cmd: list[str], env: dict, port: int, log: Path):
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        # Run from the log directory: in the repository root the folder
        # ``placement/`` (Kova's) would shadow OpenStack's ``placement`` package.
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), cwd=str(log.parent),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not start; see {log}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_kova(db_url: str, workers: int, logdir: Path,
               auth: tuple[str, ...] = ("--no-auth",)) -> Server:
    port = free_port()
    kova = shutil.which("kova", path=str(KOVA_REPO[0] / ".venv" / "bin")) or "kova"
    sa_url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    cmd = [kova, "placement", "serve", "--database-url", sa_url, "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), *auth, "--log-level", "warning"]
    return Server("kova", cmd, dict(os.environ), port, logdir / "kova-placement.log")


def start_openstack(db_url: str, workers: int, threads: int, logdir: Path) -> Server:
    ensure_openstack_venv()
    port = free_port()
    conn = db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    (logdir / "placement.conf").write_text(
        "[placement_database]\n"
        f"connection = {conn}\n"
        "max_pool_size = 25\nmax_overflow = 100\nsync_on_startup = False\n"
        "[api]\nauth_strategy = noauth2\n")
    env = dict(os.environ)
    env["OS_PLACEMENT_CONFIG_DIR"] = str(logdir)
    # Migrate once up front: two workers syncing at startup race each other.
    subprocess.run([str(OSP_VENV / "bin" / "placement-manage"), "--config-file",
                    str(logdir / "placement.conf"), "db", "sync"], env=env,
                   cwd=str(logdir), check=True, stdout=subprocess.DEVNULL)
    cmd = [str(OSP_VENV / "bin" / "gunicorn"), "-w", str(workers), "--threads", str(threads),
           "-b", f"127.0.0.1:{port}", "--timeout", "300", "placement.wsgi.api:application"]
    return Server("openstack", cmd, env, port, logdir / "openstack-placement.log")


class Http:
    """A minimal keep-alive HTTP/1.1 JSON client (http.client): the client's
    own cost is a small, equal share of both services' figures."""

    def __init__(self, url: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

    def call(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        headers = dict(HEADERS)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path} -> {resp.status}: {payload[:500]!r}")
        return resp.status, payload

    def close(self) -> None:
        self.conn.close()


def load(url: str, n: int) -> dict:
    """Create n providers one at a time; 4 writes each."""
    c = Http(url)
    start = time.perf_counter()
    writes = load_range(c, 0, n)
    elapsed = time.perf_counter() - start
    c.close()
    return {"writes": writes, "seconds": round(elapsed, 2),
            "writes_per_s": round(writes / elapsed, 1)}


def load_interleaved(urls: dict[str, str], n: int, chunk: int) -> dict[str, dict]:
    """Load n providers into each service, alternating chunks of ``chunk``
    providers between them (the order flips every round), so that both
    services' writes/s are measured over the same stretch of time on a
    machine whose load changes from one minute to the next.  Within a
    service the load is the same: one provider at a time, four writes each."""
    spent = {name: 0.0 for name in urls}
    writes = {name: 0 for name in urls}
    order = list(urls)
    for k, first in enumerate(range(0, n, chunk)):
        for name in (order if k % 2 == 0 else order[::-1]):
            # a connection per chunk: an idle keep-alive connection is closed
            # by the server (uvicorn after 5 s) while the other service loads
            c = Http(urls[name])
            t0 = time.perf_counter()
            writes[name] += load_range(c, first, min(n, first + chunk))
            spent[name] += time.perf_counter() - t0
            c.close()
    return {name: {"writes": writes[name], "seconds": round(spent[name], 2),
                   "writes_per_s": round(writes[name] / spent[name], 1),
                   "interleaved_chunk": chunk} for name in urls}


def load_range(c: "Http", first: int, end: int) -> int:
    writes = 0
    for i in range(first, end):
        _, body = c.call("POST", "/resource_providers",
                         {"name": f"perf-{i}", "uuid": str(uuid.uuid4())})
        rp = json.loads(body)
        u, gen = rp["uuid"], rp["generation"]
        _, body = c.call("PUT", f"/resource_providers/{u}/inventories",
                         {"resource_provider_generation": gen, "inventories": INVENTORY})
        gen = json.loads(body)["resource_provider_generation"]
        _, body = c.call("PUT", f"/resource_providers/{u}/aggregates",
                         {"resource_provider_generation": gen, "aggregates": AGG_CYCLE[i % 3]})
        gen = json.loads(body)["resource_provider_generation"]
        c.call("PUT", f"/resource_providers/{u}/traits",
               {"resource_provider_generation": gen, "traits": TRAIT_CYCLE[i % 3]})
        writes += 4
    return writes


def sequential(url: str, requests: int, expect: int) -> dict:
    times = []
    c = Http(url)
    for _ in range(2):  # warm up (the first request may build caches)
        _, body = c.call("GET", QUERY)
    count = len(json.loads(body)["allocation_requests"])
    for _ in range(requests):
        t0 = time.perf_counter()
        _, body = c.call("GET", QUERY)
        times.append(time.perf_counter() - t0)
    c.close()
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"requests": requests, "candidates": count, "expected": expect,
            "median_ms": round(statistics.median(times) * 1000, 1),
            "p95_ms": round(p95 * 1000, 1), "bytes": len(body)}


def run_threads(worker, clients: int) -> float:
    """Run ``worker`` in ``clients`` threads at once; the seconds until all ended."""
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def concurrent(url: str, clients: int, total: int) -> dict:
    per_client = max(1, total // clients)
    errors: list[str] = []

    def worker():
        c = Http(url)
        for _ in range(per_client):
            try:
                c.call("GET", QUERY)
            except RuntimeError as exc:
                errors.append(str(exc)[:100])
        c.close()

    elapsed = run_threads(worker, clients)
    done = per_client * clients
    return {"clients": clients, "requests": done, "seconds": round(elapsed, 2),
            "req_per_s": round(done / elapsed, 1), "errors": len(errors)}


def start(service: str, n: int, args, logdir: Path) -> Server:
    db_url = make_db(args.server_url, f"perfload_{service}_{n}")
    return (start_kova(db_url, args.kova_workers, logdir) if service == "kova"
            else start_openstack(db_url, 2, 8, logdir))


def stop(service: str, n: int, server: Server, args) -> None:
    server.stop()
    drop_db(args.server_url, f"perfload_{service}_{n}")


def run_pair(n: int, args, logdir: Path) -> list[dict]:
    """Both services up at once; the load phases interleaved (see
    ``load_interleaved``), then each service's queries on its own."""
    servers: dict[str, Server] = {}
    try:
        for service in ("kova", "openstack"):
            servers[service] = start(service, n, args, logdir)
        print(f"[n={n}] loading both, interleaved by {args.interleave} providers ...",
              flush=True)
        loaded = load_interleaved({s: srv.url for s, srv in servers.items()}, n,
                                  args.interleave)
        results = []
        for service, server in servers.items():
            print(f"[{service} n={n}] load {loaded[service]}", flush=True)
            results.append(measure(service, n, server, loaded[service], args))
        return results
    finally:
        for service, server in servers.items():
            stop(service, n, server, args)


def run_one(service: str, n: int, args, logdir: Path) -> dict:
    server = start(service, n, args, logdir)
    try:
        print(f"[{service} n={n}] loading ...", flush=True)
        loaded = load(server.url, n)
        print(f"[{service} n={n}] load {loaded}", flush=True)
        return measure(service, n, server, loaded, args)
    finally:
        stop(service, n, server, args)


def measure(service: str, n: int, server: Server, loaded: dict, args) -> dict:
    seq_requests = args.requests or (50 if n <= 1000 else 15)
    seq = sequential(server.url, seq_requests, n)
    print(f"[{service} n={n}] sequential {seq}", flush=True)
    conc_total = args.concurrent_requests or (500 if n <= 1000 else 50)
    if service == "openstack" and n > 1000:
        conc_total = min(conc_total, 30)
    conc = concurrent(server.url, args.clients, conc_total)
    print(f"[{service} n={n}] concurrent {conc}", flush=True)
    return {"service": service, "providers": n, "load": loaded, "sequential": seq,
            "kova_repo": str(KOVA_REPO[0]) if service == "kova" else None,
            "concurrent": conc, "loadavg": [round(x, 1) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--providers", type=int, action="append",
                    help="provider count (repeatable; default 1000)")
    ap.add_argument("--server-url", default=os.environ.get(
        "KOVA_BENCH_POSTGRES", "postgresql://root@/postgres?host=/var/run/postgresql"),
        help="Postgres server (both services use it; default: local Unix socket)")
    ap.add_argument("--only", choices=["kova", "openstack"], default=None)
    ap.add_argument("--requests", type=int, default=0, help="sequential requests")
    ap.add_argument("--concurrent-requests", type=int, default=0)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--kova-workers", type=int, default=2)
    ap.add_argument("--interleave", type=int, default=100, metavar="PROVIDERS",
                    help="with both services: alternate the load phases in chunks of this "
                         "many providers (0: Kova's whole load, then OpenStack's)")
    ap.add_argument("--kova-repo", type=Path, default=REPO,
                    help="measure the kova of this checkout's .venv (default: this one)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--logdir", type=Path, default=Path("/tmp/placement-perfload"))
    args = ap.parse_args()
    KOVA_REPO[0] = args.kova_repo.resolve()
    args.logdir.mkdir(parents=True, exist_ok=True)
    services = [args.only] if args.only else ["kova", "openstack"]
    results = []
    for n in args.providers or [1000]:
        if len(services) == 2 and args.interleave > 0:
            results.extend(run_pair(n, args, args.logdir))
            continue
        for service in services:
            results.append(run_one(service, n, args, args.logdir))
    print()
    print(f"{'service':10} {'N':>6} {'writes/s':>9} {'median ms':>10} {'p95 ms':>8} "
          f"{'req/s(10)':>10} {'candidates':>10}")
    for r in results:
        print(f"{r['service']:10} {r['providers']:>6} {r['load']['writes_per_s']:>9} "
              f"{r['sequential']['median_ms']:>10} {r['sequential']['p95_ms']:>8} "
              f"{r['concurrent']['req_per_s']:>10} {r['sequential']['candidates']:>10}")
    by = {(r["service"], r["providers"]): r for r in results}
    for n in args.providers or [1000]:
        k, o = by.get(("kova", n)), by.get(("openstack", n))
        if k and o:
            median = o["sequential"]["median_ms"] / k["sequential"]["median_ms"]
            print(f"N={n}: median x{median:.1f}"
                  f", concurrent x{k['concurrent']['req_per_s'] / o['concurrent']['req_per_s']:.1f}"
                  f", writes x{k['load']['writes_per_s'] / o['load']['writes_per_s']:.1f}"
                  f", candidates equal: "
                  f"{k['sequential']['candidates'] == o['sequential']['candidates']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
