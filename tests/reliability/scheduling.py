"""Helpers for the scheduling fault tests (racing schedulers, operator crash,
Placement and Postgres restarts).

The simulated hosts are registered the way ``tests/fixtures/operator.py``
does it (its ``Cluster``: a resource provider with inventory and traits, a
Host whose status.resourceProviderUUID names it, a heartbeat Lease); the
operator runs as real ``kova operator run`` subprocesses.  What is counted
after a fault comes from Placement (inventories, usages, per-consumer
allocations) and from the API server (the Instances, their Events and a watch
on them), never from the operator's own view.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kova.crds import names as contract
from kova.dev.metrics import scrape  # noqa: F401  (used by the fault tests as s.scrape)
from tests.fixtures.operator import (
    Cluster,
    cluster_on,  # noqa: F401  (used by the fault tests as s.cluster_on)
)
from tests.fixtures.operator import PlacementServer as _PlacementHelpers
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
KOVA = [sys.executable, "-m", "kova.cli"]
G, V = contract.GROUP, contract.VERSION

#: Every simulated host takes exactly this many Instances of the test flavor
#: (1 vCPU, 512 MiB, 1 GiB), so N Instances on N/SLOTS hosts fill them exactly.
SLOTS = 10


# ============================================================== Placement
class PlacementProcess(_PlacementHelpers):
    """``kova placement serve`` on a given database URL and a fixed port, so
    it can be killed and started again where the clients expect it.  ``auth``:
    its authentication options (default none); ``token``: the X-Auth-Token of
    the helpers' own requests."""

    def __init__(self, workdir: Path, database_url: str,  # noqa: D107
                 auth: tuple[str, ...] = ("--no-auth",), token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.auth = auth
        self.log_path = workdir / "placement.log"
        self.proc: subprocess.Popen | None = None
        headers = {"OpenStack-API-Version": "placement 1.39"}
        if token:
            headers["X-Auth-Token"] = token
        self.http = httpx.Client(base_url=self.url, timeout=60, headers=headers)
        self.starts = 0
        self.start()

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"---- start {self.starts + 1} at {time.strftime('%H:%M:%S')}\n")
            log.flush()
            self.proc = subprocess.Popen(
                KOVA + ["placement", "serve", "--database-url", self.database_url, *self.auth,
                        "--port", str(self.port), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"placement exited: {self.log_path.read_text()[-4000:]}")
            try:
                return self.http.get("/").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 90, 0.1, "placement to answer")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def stop(self) -> None:
        self.kill()
        self.http.close()


# ============================================================== Postgres
class PrivatePostgres:
    """A Postgres 15 server of this test's own: its own data directory (under
    /tmp, owned by the postgres user) and its own loopback port, so that
    restarting it cannot disturb the session's shared server
    (hack/start-postgres.sh) or any test using that one.

    Trust authentication is enough: it listens on 127.0.0.1 only, on a free
    port, and lives as long as the test.  ``fsync`` is off (the machine does
    not crash, so the kernel keeps what Postgres wrote) but
    ``synchronous_commit`` stays on: a committed claim must survive an
    immediate (crash) restart of Postgres, or the test would count a write
    lost by configuration, not by Kova."""

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kova-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "--no-sync", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.dir}'\nmax_connections = 100\n"
                       "fsync = off\nfull_page_writes = off\n")
        self.restarts = 0
        self.start()

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run(["runuser", "-u", "postgres", "--", str(self.BIN / tool), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {proc.returncode}\n{proc.stdout}"
                               f"{proc.stderr}\n{self.log_tail()}")
        return proc.stdout

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self, mode: str = "fast") -> None:
        """``fast`` ends every session at once (what a restart by an admin or
        an orchestrator does); ``immediate`` is a crash: no shutdown
        checkpoint, recovery on start."""
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-m", mode, "restart")
        self.restarts += 1

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self._pg("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", "immediate",
                     "stop")
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


# ============================================================== Instances
def add_exact_hosts(cluster: Cluster, instances: int) -> list[str]:
    """Hosts whose capacity together fits ``instances`` of the test flavor
    exactly (SLOTS each; the last one smaller when it does not divide)."""
    sizes = [min(SLOTS, instances - start) for start in range(0, instances, SLOTS)]
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(
            lambda i: cluster.add_host(f"h{i:03d}", vcpus=sizes[i], memory_mib=512 * sizes[i],
                                       disk_gib=sizes[i]), range(len(sizes))))


def create_instances(cluster: Cluster, n: int, prefix: str = "vm", threads: int = 8,
                     start: int = 0) -> None:
    """Create ``n`` Instances named ``<prefix>-<number>``, numbered from ``start``."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: cluster.create_instance(f"{prefix}-{i:04d}"),
                      range(start, start + n)))


def is_scheduled(inst: dict) -> bool:
    status = inst.get("status") or {}
    return status.get("phase") == contract.InstancePhase.SCHEDULED and bool(status.get("host"))


def count_scheduled(cluster: Cluster) -> int:
    return sum(1 for i in cluster.instances() if is_scheduled(i))


def wait_all_scheduled(cluster: Cluster, n: int, timeout: float, logs=("operator.log",)) -> float:
    """Seconds until all ``n`` Instances are Scheduled (fails with the logs)."""
    t0 = time.monotonic()
    try:
        wait_for(lambda: count_scheduled(cluster) >= n, timeout, 0.5,
                 f"all {n} Instances Scheduled")
    except AssertionError as exc:
        tail = "".join(f"\n--- {name} ---\n{cluster.operator_log(name)[-5000:]}"
                       for name in logs)
        raise AssertionError(f"{exc}; {count_scheduled(cluster)} Scheduled{tail}") from None
    return time.monotonic() - t0


class InstanceWatch:
    """Watches the namespace's Instances from before the burst, and keeps, per
    uid, every distinct status.host value in order and whether the phase ever
    went back from Scheduled to Pending: a host set twice, or unset again,
    is a second scheduling decision."""

    def __init__(self, cluster: Cluster) -> None:
        from kubernetes import client

        self.cluster = cluster
        self.api = client.CustomObjectsApi(cluster.api.api_client)
        self.hosts: dict[str, list[str | None]] = defaultdict(list)
        self.regressed: set[str] = set()
        self.phase: dict[str, str | None] = {}
        self.names: dict[str, str] = {}
        self.events = 0
        self.relists = 0
        self.rv = self.api.list_namespaced_custom_object(
            G, V, cluster.ns, "instances")["metadata"]["resourceVersion"]
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="instance-watch", daemon=True)
        self.thread.start()

    def _see(self, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        self.names[uid] = obj["metadata"]["name"]
        status = obj.get("status") or {}
        host = status.get("host")
        seen = self.hosts[uid]
        if host and (not seen or seen[-1] != host):
            seen.append(host)
        elif not host and seen and seen[-1] is not None:
            seen.append(None)  # unset after being set
        phase = status.get("phase")
        if self.phase.get(uid) == contract.InstancePhase.SCHEDULED and phase == contract.InstancePhase.PENDING:
            self.regressed.add(uid)
        self.phase[uid] = phase

    def _relist(self) -> None:
        """After a 410 (the resume point left the API server's watch
        window): the current state of every Instance, and go on from there."""
        body = self.api.list_namespaced_custom_object(G, V, self.cluster.ns, "instances")
        for obj in body["items"]:
            self._see(obj)
        self.rv = body["metadata"]["resourceVersion"]
        self.relists += 1

    def _run(self) -> None:
        from kubernetes import client, watch

        try:
            while not self._stop.is_set():
                w = watch.Watch()
                try:
                    for ev in w.stream(self.api.list_namespaced_custom_object, G, V,
                                       self.cluster.ns, "instances", resource_version=self.rv,
                                       timeout_seconds=30, allow_watch_bookmarks=False):
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            if (obj or {}).get("code") == 410:
                                self._relist()
                                break
                            raise RuntimeError(f"watch error: {obj}")
                        self.rv = obj["metadata"]["resourceVersion"]
                        self.events += 1
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            self._see(obj)
                        if self._stop.is_set():
                            w.stop()
                            break
                except client.ApiException as exc:
                    if exc.status != 410:
                        raise
                    self._relist()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def stop(self) -> None:
        # Let the last updates arrive before stopping.
        time.sleep(1.0)
        self._stop.set()
        self.thread.join(40)
        if self.error is not None:
            raise AssertionError(f"the Instance watch failed: {self.error!r}")

    def rescheduled(self) -> dict[str, list]:
        """name -> host history, for the Instances whose host was set more
        than once (changed, or unset and set again)."""
        return {self.names[u]: h for u, h in self.hosts.items() if len(h) > 1}


@dataclass
class Tally:
    """What Placement and the API server show after a fault."""

    instances: int = 0
    scheduled: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    overcommitted: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    hosts_used: int = 0
    max_per_host: int = 0

    def problems(self) -> dict:
        return {k: v for k, v in {
            "lost": self.lost, "duplicated": self.duplicated,
            "overcommitted": self.overcommitted, "leaked": self.leaked,
            "mismatched": self.mismatched}.items() if v}


def capacity(inv: dict) -> int:
    return int((inv["total"] - inv.get("reserved", 0)) * inv.get("allocation_ratio", 1.0))


def tally(cluster: Cluster) -> Tally:
    """Count lost / duplicated / overcommitted / leaked from Placement and the
    API server.

    * lost: an Instance not Scheduled, or Scheduled with no allocation;
    * duplicated: a consumer with allocations on more than one provider, or
      a provider whose usage is more than its consumers' allocations;
    * overcommitted: a provider whose usage exceeds its capacity;
    * leaked: a consumer that is not one of the Instances;
    * mismatched: an Instance whose status.host is not its allocation's host.
    """
    p = cluster.placement
    items = cluster.instances()
    out = Tally(instances=len(items))
    by_uid = {i["metadata"]["uid"]: i for i in items}
    rp_host = {rp: name for name, rp in cluster.hosts.items()}
    consumers: dict[str, set[str]] = defaultdict(set)
    per_host: Counter = Counter()
    for host, rp in cluster.hosts.items():
        inv = p.ok(p.http.get(f"/resource_providers/{rp}/inventories")).json()["inventories"]
        usages = p.usages(rp)
        allocs = p.ok(p.http.get(f"/resource_providers/{rp}/allocations")).json()["allocations"]
        summed: Counter = Counter()
        for consumer, a in allocs.items():
            consumers[consumer].add(rp)
            summed.update(a["resources"])
        for rc, used in usages.items():
            if rc in inv and used > capacity(inv[rc]):
                out.overcommitted.append(f"{host}: {rc} {used} > {capacity(inv[rc])}")
            if used != summed.get(rc, 0):
                out.duplicated.append(f"{host}: {rc} usage {used} != allocations "
                                      f"{summed.get(rc, 0)}")
        per_host[host] = len(allocs)
    for consumer, rps in consumers.items():
        if consumer not in by_uid:
            out.leaked.append(consumer)
        if len(rps) > 1:
            out.duplicated.append(f"consumer {consumer} on {len(rps)} providers")
    for uid, inst in by_uid.items():
        name = inst["metadata"]["name"]
        if not is_scheduled(inst):
            out.lost.append(f"{name} not Scheduled ({(inst.get('status') or {}).get('phase')})")
            continue
        out.scheduled += 1
        # The per-consumer view, read separately from the per-provider one.
        allocs = p.allocations(uid)
        if not allocs:
            out.lost.append(f"{name}: no allocation")
            continue
        if len(allocs) > 1:
            out.duplicated.append(f"{name}: allocations on {sorted(allocs)}")
        host = inst["status"]["host"]
        if host not in {rp_host.get(rp) for rp in allocs}:
            out.mismatched.append(f"{name}: status.host {host}, allocation on "
                                  f"{[rp_host.get(rp, rp) for rp in allocs]}")
    out.hosts_used = sum(1 for n in per_host.values() if n)
    out.max_per_host = max(per_host.values(), default=0)
    return out


def scheduled_events(cluster: Cluster) -> Counter:
    """uid -> number of ``Scheduled`` Events posted for it."""
    events = cluster.core.list_namespaced_event(cluster.ns,
                                                field_selector="reason=Scheduled").items
    return Counter(e.involved_object.uid for e in events)


def audit(cluster: Cluster) -> tuple[int, dict]:
    """``kova operator audit`` for the test's namespace: exit code and report."""
    proc = subprocess.run(
        KOVA + ["operator", "audit", "--kubeconfig", str(cluster.kubeconfig),
                "--placement-url", cluster.placement.url, "--namespace", cluster.ns,
                "--log-format", "text"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"audit printed no JSON (exit {proc.returncode}): "
                             f"{proc.stdout}\n{proc.stderr}") from None
    return proc.returncode, report


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


def jitter(lo: float, hi: float, rng: random.Random) -> float:
    return lo + (hi - lo) * rng.random()
