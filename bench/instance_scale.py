"""Benchmark: a large cloud's Instances tracked -- the allocation audit and an
operator restart's resync, at 10 000, 30 000 and 100 000 Instances.

Starts a throw-away kube-apiserver + etcd (the test control plane), Placement
on Postgres (``--sqlite`` for SQLite), registers ``--hosts`` simulated hosts as
their agents do (resource provider with inventory, Host, a one-hour Lease:
:func:`operator_schedule.register_all`), then, for each size of ``--sizes``,
grows the cloud to that many Instances *already placed*: each created with the
host label and the operator's finalizer, its status written (``host``, phase
``Running``, ``resources``), its allocation claimed in Placement (``POST
/allocations``, 250 consumers per request) -- what the operator and the agents
leave behind, without scheduling or booting anything.  At each size:

* **floor**: a plain paged LIST of the Instances (500 a page, as the audit
  reads them) and every provider's allocations (``GET
  /resource_providers/{uuid}/allocations``, 8 in flight), from this process;
* **audit**: ``kova operator audit`` (the command users run; the operator's
  periodic audit runs the same :func:`kova.operator.audit.run_audit`): its
  time, its own CPU and the CPU of the API server, etcd and Placement;
* **restart**: ``kova operator run --standalone`` started on the N Instances
  (what a restart or a new leader meets), timed until it has *resynced*:
  its gauge ``kova_operator_owned_instances`` counts N (every Instance in its
  index), its counter ``kova_operator_reconciles_total{kind="inst"}`` reached
  N (each Instance handled once) and ``kova_operator_queue_depth`` is 0.  Its
  RSS and CPU then, the API server's write requests during the resync (none
  is expected: the Instances are in place), then its idle CPU over
  two windows of ``--idle-seconds`` one after the other; it is stopped
  before the next size grows the cloud.

    .venv/bin/python bench/instance_scale.py --hosts 2000 --sizes 10000,30000,100000

Each Instance asks 1 vCPU, 512 MiB and 5 GiB (Flavor ``tiny``); a host
holds 63 of them, so ``--hosts`` must be at least a 63rd of the largest size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_schedule import (  # noqa: E402
    KOVA,
    LEASE_TIME,
    PLACEMENT_HEADERS,
    ROOT,
    WRITE_VERBS,
    G,
    Run,
    V,
    apiserver_requests,
    log,
    operator_rss_mib,
    register_all,
    tree_cpu,
)

from kova.dev.metrics import scrape  # noqa: E402

SIZE = {"vcpus": 1, "memoryMiB": 512, "diskGiB": 5}
PER_HOST = 63  # by memory: (32768 - 512) / 512
NAMESPACE = "bench"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                    default=[10000, 30000, 100000],
                    help="Instance counts to measure at, growing (comma-separated)")
    ap.add_argument("--sqlite", action="store_true",
                    help="Placement on SQLite instead of a fresh Postgres database")
    ap.add_argument("--concurrency", type=int, default=32,
                    help="Instance creates in flight while the cloud grows")
    ap.add_argument("--idle-seconds", type=float, default=20.0)
    ap.add_argument("--resync-timeout", type=float, default=3600.0)
    ap.add_argument("--workers", type=int, default=16, help="operator --workers")
    ap.add_argument("--out", default=None, help="also write the result (JSON) here")
    args = ap.parse_args()
    if args.hosts * PER_HOST < max(args.sizes):
        ap.error(f"--hosts: {args.hosts} hosts hold {args.hosts * PER_HOST} Instances, "
                 f"fewer than --sizes asks ({max(args.sizes)})")
    return args


def run_options(args: argparse.Namespace, database_url: str | None) -> argparse.Namespace:
    """The options :class:`operator_schedule.Run` reads, for its set-up and
    its operator command line."""
    return argparse.Namespace(
        hosts=args.hosts, database_url=database_url, placement_workers=1, randomize=True,
        workers=args.workers, candidate_limit=None, host_subset_size=1, max_batch=None,
        events=True, operator_python=None)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> int:
    from kova.dev.controlplane import ControlPlane

    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="kova-bench-scale-"))
    db_name, db_url = None, None
    if not args.sqlite:
        from kova.dev import postgres

        server = postgres.ensure_postgres()
        db_name = f"kova_scale_{os.getpid()}"
        postgres.create_database(db_name, server)
        db_url = postgres.sqlalchemy_url(postgres.database_url(server, db_name))
    run = Run(run_options(args, db_url), work, ControlPlane(workdir=work / "cp"))
    scale = Scale(args, run)
    try:
        return scale.main()
    finally:
        scale.stop_operator()
        run.stop()
        if db_name:
            from kova.dev import postgres

            postgres.drop_database(db_name)
        if not os.environ.get("KOVA_BENCH_KEEP"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


class Scale:
    def __init__(self, args: argparse.Namespace, run: Run) -> None:
        self.args, self.run = args, run
        self.operator: subprocess.Popen | None = None

    def main(self) -> int:
        args, run = self.args, self.run
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        run.start_cluster()
        run.api.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": f"{G}/{V}", "kind": "Flavor", "metadata": {"name": "tiny"},
            "spec": SIZE})
        run.start_placement()
        t = time.monotonic()
        now = time.strftime(LEASE_TIME, time.gmtime())
        self.rps = asyncio.run(register_all(run.cp.kubeconfig, run.purl, args.hosts,
                                            32, now))
        log(f"{args.hosts} hosts registered in {time.monotonic() - t:.1f}s")
        rounds, have = [], 0
        for n in args.sizes:
            t, l0 = time.monotonic(), load()
            asyncio.run(grow(run.cp.kubeconfig, run.purl, self.rps, have, n, args.concurrency))
            grown = round(time.monotonic() - t, 1)
            log(f"{n} Instances in place ({n - have} more in {grown}s)")
            have = n
            r = {"instances": n, "hosts": args.hosts, "grow_seconds": grown,
                 "load_average_before": l0}
            r["floor"] = self.floor()
            r["audit"] = self.audit(n)
            r.update(self.restart(n))
            r["load_average_after"] = load()
            log(json.dumps(r))
            rounds.append(r)
        result = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                 time.gmtime()),
                  "placement_db": "sqlite" if args.sqlite else "postgres",
                  "operator": run.operator_label(), "rounds": rounds}
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        ok = all(r["audit"]["clean"] and r["resync"]["seconds"] is not None for r in rounds)
        return 0 if ok else 1

    # ------------------------------------------------------------ CPU
    def cpu(self) -> dict[str, float]:
        pids = {"placement": self.run.procs[0].pid, **dict(self.run.cp.pids.items())}
        if self.operator is not None:
            pids["operator"] = self.operator.pid
        return {k: tree_cpu(p) for k, p in pids.items()}

    @staticmethod
    def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before.get(k, 0.0), 2) for k in after}

    # ------------------------------------------------------------ floor
    def floor(self) -> dict:
        c0, t0 = self.cpu(), time.monotonic()
        listed = asyncio.run(list_instances(self.run.cp.kubeconfig))
        t_list = time.monotonic() - t0
        c1, t1 = self.cpu(), time.monotonic()
        consumers = asyncio.run(provider_allocations(self.run.purl, self.rps))
        t_alloc = time.monotonic() - t1
        c2 = self.cpu()
        return {"list_seconds": round(t_list, 2), "list_items": listed,
                "list_cpu": self.delta(c1, c0),
                "provider_allocations_seconds": round(t_alloc, 2),
                "consumers": consumers, "provider_allocations_cpu": self.delta(c2, c1)}

    # ------------------------------------------------------------ audit
    def audit(self, n: int) -> dict:
        """``kova operator audit`` (no healing: nothing to heal here)."""
        run = self.run
        c0, t0, ru0 = self.cpu(), time.monotonic(), os.times()
        proc = subprocess.Popen(
            KOVA + ["operator", "audit", "--kubeconfig", str(run.cp.kubeconfig),
                    "--placement-url", run.purl, "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        out, err = proc.communicate()
        seconds = time.monotonic() - t0
        c1 = self.cpu()
        # the command was waited for: its CPU is in this process's children's
        ru = os.times()
        own = ru.children_user + ru.children_system - ru0.children_user - ru0.children_system
        try:
            report = json.loads(out)
        except ValueError:
            raise RuntimeError(f"kova operator audit: rc {proc.returncode}: "
                               f"{out[-2000:]!r} {err[-2000:]!r}") from None
        clean = (proc.returncode == 0 and report["instances"] == n
                 and report["consumers"] == n and not report["orphanAllocations"]
                 and not report["missingAllocations"] and not report["mismatchedHosts"])
        return {"seconds": round(seconds, 2), "clean": clean, "returncode": proc.returncode,
                "instances": report["instances"], "consumers": report["consumers"],
                "cpu": {**self.delta(c1, c0), "audit command": round(own, 2)}}

    # ------------------------------------------------------------ restart
    def restart(self, n: int) -> dict:
        run = self.run
        req0 = apiserver_requests(run.cp)
        c0 = self.cpu()
        run.start_operator()  # appends to run.procs, waits for /metrics
        self.operator = run.procs.pop()
        t0 = run.operator_started
        c0["operator"] = 0.0
        deadline = t0 + self.args.resync_timeout
        seconds, marks = None, {}
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.operator.returncode})")
            m = scrape(run.metrics_url, missing_ok=True)
            owned = m.get("kova_operator_owned_instances", 0)
            handled = m.get('kova_operator_reconciles_total{kind="inst"}', 0)
            if owned >= n and "indexed" not in marks:
                marks["indexed"] = round(time.monotonic() - t0, 1)
            if (owned >= n and handled >= n
                    and m.get("kova_operator_queue_depth", 1) == 0):
                seconds = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.5)
        c1 = self.cpu()
        reconciled = scrape(run.metrics_url).get('kova_operator_reconciles_total{kind="inst"}')
        rss = operator_rss_mib(self.operator.pid)
        req = apiserver_requests(run.cp)
        writes = {k: v - req0.get(k, 0.0) for k, v in req.items()
                  if k.split()[0] in WRITE_VERBS and v - req0.get(k, 0.0)}
        log(f"resynced {n} Instances in {seconds}s ({marks})")
        idle = self.idle()
        self.stop_operator()  # before the cloud grows: it would claim new Instances
        return {"resync": {"seconds": seconds, "seconds_to_all_indexed": marks.get("indexed"),
                           "instance_reconciles": reconciled,
                           "cpu": self.delta(c1, c0), "operator_rss_mib": rss,
                           "apiserver_writes": writes},
                "operator_idle": idle}

    def idle(self) -> dict:
        """The operator's CPU over two windows of --idle-seconds one after
        the other, right after the resync: the first still holds the tail
        of the resync's work (kopf ends each object's worker after its idle
        timeout), the second is the steady idle."""
        window = self.args.idle_seconds
        assert self.operator is not None
        marks = [tree_cpu(self.operator.pid)]
        for _ in range(2):
            time.sleep(window)
            marks.append(tree_cpu(self.operator.pid))
        return {"cpu_core": round((marks[1] - marks[0]) / window, 4),
                "cpu_core_next_window": round((marks[2] - marks[1]) / window, 4),
                "window_s": window, "rss_mib": operator_rss_mib(self.operator.pid)}

    def stop_operator(self) -> None:
        if self.operator is None:
            return
        self.operator.send_signal(signal.SIGTERM)
        try:
            self.operator.wait(60)
        except subprocess.TimeoutExpired:
            self.operator.kill()
            self.operator.wait()
        self.operator = None


# ---------------------------------------------------------------- the cloud
async def grow(kubeconfig: Path, purl: str, rps: list[str], start: int, end: int,
               concurrency: int) -> None:
    """Instances ``start`` .. ``end - 1`` as the operator and the agents leave
    them: created (host label, the operator's finalizer), status written,
    allocation claimed.  Instance i is on host ``i % hosts``."""
    import aiohttp

    from kova.crds import names
    from kova.kube import Credentials

    creds = Credentials.load(str(kubeconfig))
    token = creds.bearer()
    kh = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{creds.server}/apis/{G}/{V}/namespaces/{NAMESPACE}/instances"
    sem = asyncio.Semaphore(concurrency)
    claims: dict[str, dict] = {}
    done = [0]
    resources = {"VCPU": SIZE["vcpus"], "MEMORY_MB": SIZE["memoryMiB"],
                 "DISK_GB": SIZE["diskGiB"]}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=concurrency, ssl=creds.ssl_context())) as kube, \
            aiohttp.ClientSession(base_url=purl, headers=PLACEMENT_HEADERS) as ph:

        async def claim(batch: dict[str, dict]) -> None:
            async with ph.post("/allocations", json=batch) as r:
                if r.status != 204:
                    raise RuntimeError(f"POST /allocations: {r.status} {await r.text()}")

        async def one(i: int) -> None:
            host = f"host-{i % len(rps):04d}"
            name = f"vm-{i:06d}"
            async with sem:
                async with kube.post(url, headers=kh, json={
                        "apiVersion": f"{G}/{V}", "kind": "Instance",
                        "metadata": {"name": name, "labels": {names.LABEL_HOST: host},
                                     "finalizers": [names.FINALIZER_OPERATOR]},
                        "spec": {"flavorRef": {"name": "tiny"},
                                 "imageRef": {"name": "bench"}}}) as r:
                    if r.status != 201:
                        raise RuntimeError(f"create {name}: {r.status} {await r.text()}")
                    uid = (await r.json())["metadata"]["uid"]
                async with kube.patch(f"{url}/{name}/status", headers={
                        **kh, "Content-Type": "application/merge-patch+json"}, json={
                        "status": {"host": host, "phase": "Running", "attempts": 1,
                                   "resources": SIZE}}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"status {name}: {r.status} {await r.text()}")
            claims[uid] = {"allocations": {rps[i % len(rps)]: {"resources": resources}},
                           "project_id": names.project_id(NAMESPACE),
                           "user_id": names.ALLOCATION_USER_ID, "consumer_generation": None,
                           "consumer_type": names.CONSUMER_TYPE}
            if len(claims) >= 250:
                batch = dict(claims)
                claims.clear()
                await claim(batch)
            done[0] += 1
            if done[0] % 5000 == 0:
                log(f"{start + done[0]} Instances in place")

        await asyncio.gather(*(one(i) for i in range(start, end)))
        if claims:
            await claim(claims)


async def list_instances(kubeconfig: Path) -> int:
    """The floor of the audit's read of the Instances: a paged LIST."""
    from kova.kube import Credentials, Kube, custom_path

    kube = Kube(Credentials.load(str(kubeconfig)))
    try:
        body = await kube.list_all(custom_path("instances"))
        return len(body["items"])
    finally:
        await kube.close()


async def provider_allocations(purl: str, rps: list[str]) -> int:
    """The floor of the audit's read of Placement: every provider's
    allocations, 8 requests in flight; the consumers found."""
    import aiohttp

    sem = asyncio.Semaphore(8)
    consumers: set[str] = set()
    async with aiohttp.ClientSession(base_url=purl, headers=PLACEMENT_HEADERS) as ph:

        async def one(rp: str) -> None:
            async with sem, ph.get(f"/resource_providers/{rp}/allocations") as r:
                consumers.update((await r.json())["allocations"])

        await asyncio.gather(*(one(rp) for rp in rps))
    return len(consumers)


if __name__ == "__main__":
    sys.exit(main())
