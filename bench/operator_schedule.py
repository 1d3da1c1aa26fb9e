"""Benchmark: the operator scheduling a burst of Instances onto simulated hosts.

Starts a throw-away kube-apiserver + etcd (the test control plane), a
Placement server (SQLite by default, ``--database-url`` for Postgres), N
simulated hosts (resource provider with inventory, Host object with
status.resourceProviderUUID, heartbeat Lease -- what an agent registers),
then the operator (``kova operator run --standalone``), and applies M
Instances at once.  Measures Instances/s from the first apply to the last
``Scheduled``, the spread over hosts, checks that nothing is overcommitted and
that allocations equal Instances, and breaks the time down from the
operator's Prometheus metrics.

    .venv/bin/python bench/operator_schedule.py --hosts 1000 --instances 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from kova.crds.names import GROUP as G
from kova.crds.names import VERSION as V
from kova.dev.metrics import scrape

ROOT = Path(__file__).resolve().parents[1]
KOVA = [sys.executable, "-m", "kova.cli"]
LEASE_TIME = "%Y-%m-%dT%H:%M:%S.000001Z"
#: A simulated host: 16 vCPU x4, 32 GiB, 500 GiB -- room for ~31 instances.
VCPUS, MEM, DISK = 16, 32768, 500
PLACEMENT_HEADERS = {"OpenStack-API-Version": "placement 1.39"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up")


def operator_rss_mib(pid: int) -> float | None:
    """Resident memory of a process (MiB)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that were waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of a process and its live descendants (uvicorn workers)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu(int(c)) for c in children)


def only(url: str, *names: str) -> str:
    """The operator's metrics URL asking for ``names`` only: polling a
    counter five times a second must not cost the operator (and this
    process) a page with every host's inventory each time -- at 10 000 hosts
    that page took ~17 % of the operator's CPU during a burst and most of
    this process's.  An operator that does not know ``name[]`` serves the
    whole page."""
    return url + "?" + "&".join(f"name[]={n}" for n in names)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=16, help="operator --workers")
    ap.add_argument("--candidate-limit", "--max-placement-results", dest="candidate_limit",
                    type=int, default=None,
                    help="operator --max-placement-results (default: the operator's)")
    ap.add_argument("--no-randomize", dest="randomize", action="store_false",
                    help="Placement without --randomize-allocation-candidates")
    ap.add_argument("--host-subset-size", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=None,
                    help="operator --max-batch (default: the operator's; 1 = no batches)")
    ap.add_argument("--no-events", dest="events", action="store_false",
                    help="operator --no-events (no Kubernetes Events)")
    ap.add_argument("--database-url", default=None, help="Placement DB (default SQLite)")
    ap.add_argument("--placement-workers", type=int, default=1)
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ap.add_argument("--operator-python", default=None,
                    help="run the operator with this Python (another checkout's virtualenv, "
                         "for a side-by-side run); default: this one")
    ap.add_argument("--register-threads", type=int, default=32,
                    help="hosts registered concurrently before the operator starts")
    ap.add_argument("--up-timeout", type=float, default=300.0,
                    help="seconds the operator gets to mark every host Up")
    ap.add_argument("--idle-seconds", type=float, default=10.0,
                    help="window of the idle CPU measurement")
    ap.add_argument("--verify-by-instance", action="store_true",
                    help="check allocations the way runs above 2000 hosts do (each "
                         "Instance's allocation, the project's total usage)")
    ap.add_argument("--renew-rate", type=float, default=0.0,
                    help="Lease renewals per second during a second idle window (live "
                         "heartbeats: 10 000 agents renewing every 10 s would be 1000/s)")
    ap.add_argument("--expire", type=int, default=0,
                    help="after the burst, let this many Leases expire at once (a rack "
                         "power loss) and time how long until their hosts are Down")
    ap.add_argument("--expire-lease-seconds", type=int, default=15,
                    help="leaseDurationSeconds of the Leases that --expire lets lapse")
    ap.add_argument("--replicas", type=lambda v: [int(x) for x in v.split(",")], default=None,
                    help="instead of the single-operator run: for each count in this list "
                         "(e.g. 1,2,3), that many operators with --share-instances schedule "
                         "--instances Instances of their own namespace on the same hosts, "
                         "one round after the other in one run")
    return ap.parse_args()


def main() -> int:
    from kova.dev.controlplane import ControlPlane

    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="kova-bench-"))
    run = Run(args, work, ControlPlane(workdir=work / "cp"))
    try:
        return run.main()
    finally:
        run.stop()
        if not os.environ.get("KOVA_BENCH_KEEP"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


class Run:
    """One benchmark run, phase by phase."""

    def __init__(self, args: argparse.Namespace, work: Path, cp) -> None:
        self.args, self.work, self.cp = args, work, cp
        self.procs: list[subprocess.Popen] = []
        self.profile = os.environ.get("KOVA_BENCH_PROFILE")
        self.host_states: HostStates | None = None

    def main(self) -> int:
        args = self.args
        self.start_cluster()
        self.start_placement()
        t = time.monotonic()
        self.rps = asyncio.run(register_all(self.cp.kubeconfig, self.purl, args.hosts,
                                            args.register_threads, self.now))
        log(f"{args.hosts} hosts registered in {time.monotonic() - t:.1f}s")
        if args.replicas:
            return Replicas(self).main()
        self.start_operator()
        up = self.wait_steady()
        if up.get("seconds_to_all_up_status") is None:
            print(json.dumps({"hosts": args.hosts, "operator": self.operator_label(),
                              **up, "load_average": os.getloadavg()}, indent=2))
            return 1
        idle = self.measure_idle(args.idle_seconds)
        rss = operator_rss_mib(self.procs[1].pid)
        renewing = self.measure_renewals(args.renew_rate, args.idle_seconds) \
            if args.renew_rate else {}
        base = scrape(self.metrics_url)
        requests0 = apiserver_requests(self.cp)
        pids = self.pids()
        cpu0 = {k: tree_cpu(p) for k, p in pids.items()}
        cpu0["bench (this process)"] = cpu_seconds(os.getpid())
        t_applied, elapsed = self.burst(base)
        metrics = scrape(self.metrics_url)
        requests = per_instance(apiserver_requests(self.cp), requests0, args.instances)
        cpu = {k: round(tree_cpu(p) - cpu0[k], 1) for k, p in pids.items()}
        cpu["bench (this process)"] = round(cpu_seconds(os.getpid())
                                            - cpu0["bench (this process)"], 1)
        items = self.api.list_namespaced_custom_object(G, V, "bench", "instances")["items"]
        not_scheduled = [i["metadata"]["name"] for i in items
                         if (i.get("status") or {}).get("phase") != "Scheduled"]
        if not_scheduled:
            raise RuntimeError(f"not Scheduled: {not_scheduled[:10]}")
        checks = self.verify(items)
        writers = instance_writers(items[0])
        expiry = self.mass_expiry(args.expire) if args.expire else {}
        result = {
            "operator": self.operator_label(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            **up, "operator_rss_mib_idle": rss, **renewing, **expiry,
            "hosts": args.hosts, "instances": args.instances, "workers": args.workers,
            "candidate_limit": args.candidate_limit, "randomize": args.randomize,
            "max_batch": args.max_batch, "events": args.events,
            "host_subset_size": args.host_subset_size,
            "placement_db": "sqlite" if not args.database_url else "postgres",
            "apply_seconds": round(t_applied, 2),
            "seconds_to_all_scheduled": round(elapsed, 2),
            "instances_per_second": round(args.instances / elapsed, 1),
            **scheduling_figures(metrics, base),
            **checks,
            "cpu_seconds_during_burst": cpu,
            "idle_cpu_seconds_per_second": idle,
            # per Instance, after taking out what the process burns idle
            "cpu_ms_per_instance_beyond_idle": {
                k: round(1000 * (cpu[k] - idle.get(k, 0.0) * elapsed) / args.instances, 2)
                for k in cpu},
            "breakdown": breakdown(metrics, base),
            # every client's requests (the bench's creates, the operator, kopf,
            # the controller manager), from the API server's own counters
            "apiserver_requests_per_instance": requests,
            "apiserver_writes_per_instance": round(sum(
                v for k, v in requests.items() if k.split()[0] in WRITE_VERBS), 3),
            "instance_writers": writers,
        }
        print(json.dumps(result, indent=2))
        ok = checks["allocations_equal_instances"] and not checks["overcommitted_providers"]
        return 0 if ok else 1

    def stop(self) -> None:
        if self.host_states is not None:
            self.host_states.stop.set()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.cp.destroy()

    # ---------------------------------------------------------------- set-up
    def start_cluster(self) -> None:
        from kubernetes import client, config

        from kova.dev.crds import apply_crds

        log("starting the control plane")
        self.cp.start()
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.cp.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        api_client = client.ApiClient(cfg)
        apply_crds(api_client=api_client)
        core = client.CoreV1Api(api_client)
        self.api = client.CustomObjectsApi(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        for ns in ("kova-system", "bench"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        self.api.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": f"{G}/{V}", "kind": "Flavor", "metadata": {"name": "bench"},
            "spec": {"vcpus": 1, "memoryMiB": 1024, "diskGiB": 10}})
        self.api.create_cluster_custom_object(G, V, "images", {
            "apiVersion": f"{G}/{V}", "kind": "Image", "metadata": {"name": "bench"},
            "spec": {"source": {"hostPath": "/var/lib/kova/images/bench.qcow2"}}})
        self.now = time.strftime(LEASE_TIME, time.gmtime())

    def start_placement(self) -> None:
        from kova.dev.controlplane import free_port

        args = self.args
        pport = free_port()
        self.purl = f"http://127.0.0.1:{pport}"
        db = args.database_url or f"sqlite:///{self.work}/placement.db"
        plog = open(self.work / "placement.log", "w")
        self.procs.append(subprocess.Popen(
            KOVA + ["placement", "serve", "--database-url", db, "--no-auth", "--port",
                    str(pport), "--workers", str(args.placement_workers),
                    "--log-level", "warning"]
            + (["--randomize-allocation-candidates"] if args.randomize else []),
            stdout=plog, stderr=subprocess.STDOUT, cwd=ROOT))
        wait_http(self.purl + "/")
        self.ph = httpx.Client(base_url=self.purl, timeout=60, headers=PLACEMENT_HEADERS)

    def start_operator(self) -> None:
        from kova.dev.controlplane import free_port

        mport = free_port()
        self.metrics_url = f"http://127.0.0.1:{mport}/metrics"
        # CPU time, not wall time: the machine is shared, and a wall-clock
        # profile charges C calls for the time the process waited for a core.
        # Only the burst is profiled: SIGUSR1 starts the profiler, SIGUSR2
        # stops it and writes the file (start-up, host sync, are left out).
        profiled = ("import cProfile, signal, sys, time\n"
                    "from kova.cli import main\n"
                    "out = sys.argv.pop(1)\n"
                    "p = cProfile.Profile(time.process_time)\n"
                    "signal.signal(signal.SIGUSR1, lambda *a: p.enable())\n"
                    "def stop(*a):\n    p.disable()\n    p.dump_stats(out)\n"
                    "signal.signal(signal.SIGUSR2, stop)\n"
                    "main(standalone_mode=False)\n")
        python = self.args.operator_python or sys.executable
        prefix = ([python, "-c", profiled, self.profile] if self.profile
                  else [python, "-m", "kova.cli"])
        self.operator_started = time.monotonic()
        self.procs.append(self.spawn_operator(prefix, "bench", mport, "operator.log",
                                              "--standalone"))
        wait_http(self.metrics_url, timeout=120)

    def spawn_operator(self, prefix: list[str], namespace: str, mport: int, log_name: str,
                       *extra: str) -> subprocess.Popen:
        """One ``kova operator run`` with the benchmark's options."""
        args = self.args
        olog = open(self.work / log_name, "w")
        return subprocess.Popen(
            prefix + ["operator", "run", "--kubeconfig", str(self.cp.kubeconfig),
                      "--placement-url", self.purl, "--namespace", namespace, *extra,
                      "--metrics-port", str(mport), "--workers", str(args.workers),
                      "--audit-interval", "0",
                      *(["--candidate-limit", str(args.candidate_limit)]
                        if args.candidate_limit is not None else []),
                      "--host-subset-size", str(args.host_subset_size),
                      *(["--max-batch", str(args.max_batch)] if args.max_batch else []),
                      *([] if args.events else ["--no-events"]),
                      "--log-format", "text", "--log-level", "warning"],
            stdout=olog, stderr=subprocess.STDOUT, cwd=self.operator_checkout())

    def operator_checkout(self) -> Path:
        """The checkout whose operator runs: ``python -m`` imports ``kova``
        from the working directory first, so another checkout's virtualenv
        run from this one would run this checkout's code."""
        if not self.args.operator_python:
            return ROOT
        return Path(self.args.operator_python).absolute().parents[2]

    def operator_label(self) -> str:
        checkout = self.operator_checkout()
        try:
            rev = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            rev = "?"
        return f"{checkout} ({rev})"

    def wait_steady(self) -> dict:
        """The operator listed the hosts, marked every one Up and synced every
        provider: steady state before the burst.  Seconds from the operator's
        start to every host Up (its metric; the Hosts' status), or None if
        not within --up-timeout."""
        hosts, t0 = self.args.hosts, self.operator_started
        deadline = t0 + self.args.up_timeout
        out: dict = {"seconds_to_all_up_metric": None, "seconds_to_all_up_status": None}
        while time.monotonic() < deadline:
            if scrape(self.metrics_url).get('kova_operator_hosts{state="Up"}', 0) >= hosts:
                out["seconds_to_all_up_metric"] = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.5)
        while time.monotonic() < deadline:
            if self.count_hosts("Up") >= hosts:
                out["seconds_to_all_up_status"] = round(time.monotonic() - t0, 1)
                break
            time.sleep(1)
        log(f"all hosts Up: {out}")
        while time.monotonic() < deadline:
            if scrape(self.metrics_url).get("kova_operator_queue_depth", 1) == 0:
                break
            time.sleep(1)
        time.sleep(3)
        return out

    def count_hosts(self, state: str, names: set[str] | None = None) -> int:
        """Hosts whose status.state is ``state`` (of ``names``), from a watch
        of the Hosts (started on first use): re-listing 10 000 Hosts every
        second would cost the API server more than the writes being timed."""
        if self.host_states is None:
            self.host_states = HostStates(self.api)
        return self.host_states.count(state, names)

    def mass_expiry(self, count: int) -> dict:
        """A rack power loss: ``count`` Leases renewed once more with a short
        duration (one renewTime for all: one deadline), then never again.
        Seconds from that deadline until the operator counts them Down and
        until their Hosts say Down."""
        duration = self.args.expire_lease_seconds
        names = {f"host-{i:04d}" for i in range(count)}
        now = int(time.time())  # renewTime to the second (and 1 us)
        renew = time.strftime(LEASE_TIME, time.gmtime(now))
        deadline = now + 0.000001 + duration
        spec = {"spec": {"leaseDurationSeconds": duration, "renewTime": renew}}
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: self.coord.patch_namespaced_lease(n, "kova-system", spec),
                          sorted(names)))
        patched = time.time()
        log(f"{count} Leases renewed for the last time ({patched - now:.1f}s); "
            f"they expire in {deadline - patched:.1f}s")
        out: dict = {"expire": count, "expire_lease_seconds": duration,
                     "expire_patch_seconds": round(patched - now, 1),
                     "expiry_to_down_metric_s": None, "expiry_to_down_status_s": None}
        limit = deadline + 120
        while time.time() < limit:
            if scrape(only(self.metrics_url, "kova_operator_hosts")).get(
                    'kova_operator_hosts{state="Down"}', 0) >= count:
                out["expiry_to_down_metric_s"] = round(time.time() - deadline, 1)
                break
            time.sleep(0.2)
        while time.time() < limit:
            if self.count_hosts("Down", names) >= count:
                out["expiry_to_down_status_s"] = round(time.time() - deadline, 1)
                break
            time.sleep(0.5)
        log(f"mass expiry: {out}")
        return out

    def pids(self) -> dict[str, int]:
        return {"operator": self.procs[1].pid, "placement": self.procs[0].pid,
                **dict(self.cp.pids.items())}

    def measure_idle(self, window: float = 10.0) -> dict[str, float]:
        """What the processes burn with nothing to do (lease polls, the
        controller manager, ...), to tell it apart from the burst's cost."""
        pids = self.pids()
        idle0 = {k: tree_cpu(p) for k, p in pids.items()}
        time.sleep(window)
        return {k: round((tree_cpu(p) - idle0[k]) / window, 3) for k, p in pids.items()}

    def measure_renewals(self, rate: float, window: float) -> dict:
        """Operator CPU while Leases are renewed at ``rate`` per second (round
        robin over the hosts), as live agents do."""
        import threading

        stop = threading.Event()
        done = [0]

        def renew() -> None:
            i, t = 0, time.monotonic()
            while not stop.is_set():
                spec = {"spec": {"renewTime": time.strftime(LEASE_TIME, time.gmtime())}}
                self.coord.patch_namespaced_lease(f"host-{i % self.args.hosts:04d}",
                                                  "kova-system", spec)
                i += 1
                done[0] += 1
                t += 1.0 / rate
                time.sleep(max(0.0, t - time.monotonic()))

        threads = [threading.Thread(target=renew, daemon=True)]
        for th in threads:
            th.start()
        pid = self.procs[1].pid
        time.sleep(1)
        c0, n0 = tree_cpu(pid), done[0]
        time.sleep(window)
        cpu, n = tree_cpu(pid) - c0, done[0] - n0
        stop.set()
        for th in threads:
            th.join()
        return {"renewals_per_second": round(n / window, 1),
                "operator_cpu_while_renewing": round(cpu / window, 3),
                "operator_rss_mib_renewing": operator_rss_mib(pid)}

    # ---------------------------------------------------------------- burst
    def burst(self, base: dict[str, float]) -> tuple[float, float]:
        """Apply the Instances; (seconds to apply them all, seconds until all
        were Scheduled)."""
        log(f"applying {self.args.instances} instances")
        if self.profile:
            self.procs[1].send_signal(signal.SIGUSR1)
        if os.environ.get("KOVA_BENCH_APISERVER_PROFILE"):
            self.profile_apiserver(os.environ["KOVA_BENCH_APISERVER_PROFILE"])
        spy = self.py_spy(os.environ.get("KOVA_BENCH_PYSPY"))
        t0 = time.monotonic()
        created = asyncio.run(apply_all(self.cp.kubeconfig, self.args.instances))
        t_applied = max(created) - t0
        log(f"applied in {t_applied:.1f}s")
        # Progress from the operator's counter (cheap: listing 1000 Instances
        # four times a second would cost this process a core); verified from
        # the API afterwards.
        done_at = None
        key = 'kova_operator_schedule_outcomes_total{reason="Scheduled"}'
        n = 0.0
        progress = only(self.metrics_url, "kova_operator_schedule_outcomes_total")
        while time.monotonic() - t0 < 900:
            n = scrape(progress).get(key, 0) - base.get(key, 0)
            if n >= self.args.instances:
                done_at = time.monotonic()
                break
            time.sleep(0.2)
        if done_at is None:
            raise RuntimeError(f"only {n} of {self.args.instances} scheduled after 900s")
        if self.profile:
            self.procs[1].send_signal(signal.SIGUSR2)
            log(f"profile of the burst: {self.profile}")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
            log(f"py-spy samples of the burst: {os.environ['KOVA_BENCH_PYSPY']}")
        return t_applied, done_at - t0

    def py_spy(self, out: str | None) -> subprocess.Popen | None:
        """py-spy (when installed beside this Python) sampling the operator's
        threads while they run (100 Hz, collapsed stacks to ``out``, for a
        flame graph or a grep); its own CPU is the sampler's, not counted in
        any process measured here."""
        if not out:
            return None
        spy = Path(sys.executable).with_name("py-spy")
        return subprocess.Popen(
            [str(spy), "record", "--pid", str(self.procs[1].pid), "--rate", "100",
             "--format", "raw", "--output", out, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=open(self.work / "py-spy.log", "w"))

    def profile_apiserver(self, out: str, seconds: int = 15) -> None:
        """A CPU profile of the API server (its pprof endpoint) over the
        first ``seconds`` of the burst, written to ``out`` (read it with
        ``go tool pprof``)."""
        import threading

        def fetch() -> None:
            resp = httpx.get(self.cp.server + "/debug/pprof/profile",
                             params={"seconds": str(seconds)}, verify=str(self.cp.ca_file),
                             headers={"Authorization": f"Bearer {self.cp.token}"},
                             timeout=seconds + 60)
            Path(out).write_bytes(resp.content)
            log(f"API server profile of the burst: {out} ({resp.status_code})")

        threading.Thread(target=fetch, daemon=True).start()

    def verify_large(self, items: list[dict], per_host: dict[str, int]) -> dict:
        """At 10 000 hosts: each Instance's allocation, the usages of every
        provider that holds one, and the project's total usage (equal to the
        Instances' sum: no allocation anywhere else)."""
        uid_to_host = {i["metadata"]["uid"]: i["status"]["host"] for i in items}
        rp_of = {f"host-{i:04d}": rp for i, rp in enumerate(self.rps)}
        allocated = set()
        for uid, host in uid_to_host.items():
            allocs = self.ph.get(f"/allocations/{uid}").json()["allocations"]
            if set(allocs) == {rp_of[host]}:
                allocated.add(uid)
        overcommitted = 0
        for host in per_host:
            usage = self.ph.get(f"/resource_providers/{rp_of[host]}/usages").json()["usages"]
            if usage.get("MEMORY_MB", 0) > MEM - 512 or usage.get("VCPU", 0) > VCPUS * 4 \
                    or usage.get("DISK_GB", 0) > DISK:
                overcommitted += 1
        # microversion 1.37: one total (1.38 groups it by consumer type)
        total = self.ph.get("/usages", params={"project_id": "bench"}, headers={
            "OpenStack-API-Version": "placement 1.37"}).json()["usages"]
        n = len(items)
        return {"spread": spread(per_host, self.args.hosts),
                "allocations_equal_instances": allocated == set(uid_to_host) and total == {
                    "VCPU": n, "MEMORY_MB": n * 1024, "DISK_GB": n * 10},
                "overcommitted_providers": overcommitted}

    def verify(self, items: list[dict]) -> dict:
        """Allocations == Instances, nothing overcommitted; the spread."""
        per_host: dict[str, int] = {}
        for i in items:
            per_host[i["status"]["host"]] = per_host.get(i["status"]["host"], 0) + 1
        if len(self.rps) > 2000 or self.args.verify_by_instance:
            return self.verify_large(items, per_host)
        overcommitted = 0
        consumers = set()
        for rp in self.rps:
            usage = self.ph.get(f"/resource_providers/{rp}/usages").json()["usages"]
            if usage.get("MEMORY_MB", 0) > MEM - 512 or usage.get("VCPU", 0) > VCPUS * 4 \
                    or usage.get("DISK_GB", 0) > DISK:
                overcommitted += 1
            consumers |= set(self.ph.get(f"/resource_providers/{rp}/allocations").json()
                             ["allocations"])
        uids = {i["metadata"]["uid"] for i in items}
        counts = [per_host.get(f"host-{i:04d}", 0) for i in range(self.args.hosts)]
        return {
            "spread": {"hosts_used": sum(1 for c in counts if c), "min": min(counts),
                       "max": max(counts), "stdev": round(statistics.pstdev(counts), 2)},
            "allocations_equal_instances": consumers == uids,
            "overcommitted_providers": overcommitted,
        }


class Replicas:
    """``--replicas 1,2,3``: on the hosts already registered, one round per
    count: that many operators with ``--share-instances`` (namespace
    ``bench-rN``, its own Instances), a burst of ``--instances``, the figures,
    then the operators are stopped.  The rounds share the control plane,
    Placement and hosts, so they are compared side by side."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.args = run.args

    def main(self) -> int:
        from kubernetes import client

        rounds, ok = [], True
        core = client.CoreV1Api(self.run.api.api_client)
        for n in self.args.replicas:
            ns = f"bench-r{n}"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            result = self.round(n, ns)
            ok = ok and result["allocations_equal_instances"] and result["all_scheduled"]
            rounds.append(result)
            log(f"{n} replica(s): {result['instances_per_second']} Instances/s")
        print(json.dumps({"operator": self.run.operator_label(), "hosts": self.args.hosts,
                          "instances_per_round": self.args.instances,
                          "workers": self.args.workers,
                          "placement_workers": self.args.placement_workers,
                          "rounds": rounds}, indent=2))
        return 0 if ok else 1

    def start(self, n: int, ns: str) -> list[tuple[subprocess.Popen, str]]:
        from kova.dev.controlplane import free_port

        out = []
        for i in range(n):
            port = free_port()
            proc = self.run.spawn_operator(
                [sys.executable, "-m", "kova.cli"], ns, port, f"operator-{ns}-{i}.log",
                "--share-instances", "--member-namespace", ns,
                "--replica-identity", f"{ns}-{i}")
            self.run.procs.append(proc)  # stopped by Run.stop() too
            out.append((proc, f"http://127.0.0.1:{port}/metrics"))
        for _, url in out:
            wait_http(url, timeout=120)
        deadline = time.monotonic() + self.args.up_timeout
        for _, url in out:
            while time.monotonic() < deadline:
                m = scrape(url)
                if (m.get('kova_operator_hosts{state="Up"}', 0) >= self.args.hosts
                        and m.get("kova_operator_replicas", 0) == n
                        and m.get("kova_operator_queue_depth", 1) == 0):
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"{ns}: the operators did not settle")
        time.sleep(3)
        return out

    def round(self, n: int, ns: str) -> dict:
        ops = self.start(n, ns)
        key = 'kova_operator_schedule_outcomes_total{reason="Scheduled"}'
        base = [scrape(url) for _, url in ops]
        cpu0 = [tree_cpu(p.pid) for p, _ in ops]
        others = {"placement": self.run.procs[0].pid, **dict(self.run.cp.pids.items())}
        others_cpu0 = {k: tree_cpu(p) for k, p in others.items()}
        load0 = os.getloadavg()
        t0 = time.monotonic()
        created = asyncio.run(apply_all(self.run.cp.kubeconfig, self.args.instances, ns))
        done = 0.0
        while time.monotonic() - t0 < 900:
            done = sum(scrape(only(url, "kova_operator_schedule_outcomes_total")).get(key, 0)
                       - b.get(key, 0) for (_, url), b in zip(ops, base))
            if done >= self.args.instances:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        metrics = [scrape(url) for _, url in ops]
        cpu = [round(tree_cpu(p.pid) - c, 1) for (p, _), c in zip(ops, cpu0)]
        result = {
            "replicas": n, "load_average_before": [round(x, 2) for x in load0],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "apply_seconds": round(max(created) - t0, 2),
            "seconds_to_all_scheduled": round(elapsed, 2),
            "instances_per_second": round(self.args.instances / elapsed, 1),
            "scheduled_by_each": [int(m.get(key, 0) - b.get(key, 0))
                                  for m, b in zip(metrics, base)],
            "decisions_by_each": [int(m.get("kova_operator_schedule_duration_seconds_count", 0)
                                      - b.get("kova_operator_schedule_duration_seconds_count",
                                              0)) for m, b in zip(metrics, base)],
            "claim_retries": sum(scheduling_figures(m, b)["claim_retries"]
                                 for m, b in zip(metrics, base)),
            "operator_cpu_seconds_each": cpu,
            "other_cpu_seconds": {k: round(tree_cpu(p) - others_cpu0[k], 1)
                                  for k, p in others.items()},
            **self.verify(ns)}
        for proc, _ in ops:
            proc.terminate()
        for proc, _ in ops:
            proc.wait(30)
        return result

    def verify(self, ns: str) -> dict:
        """Every Instance Scheduled, its allocation on its host only, and the
        namespace's project using exactly the Instances' resources."""
        items = self.run.api.list_namespaced_custom_object(G, V, ns, "instances")["items"]
        scheduled = [i for i in items if (i.get("status") or {}).get("phase") == "Scheduled"]
        rp_of = {f"host-{i:04d}": rp for i, rp in enumerate(self.run.rps)}
        ph = self.run.ph
        placed = sum(1 for i in scheduled if set(ph.get(
            f"/allocations/{i['metadata']['uid']}").json()["allocations"])
            == {rp_of[i["status"]["host"]]})
        total = ph.get("/usages", params={"project_id": ns}, headers={
            "OpenStack-API-Version": "placement 1.37"}).json()["usages"]
        k = len(items)
        return {"all_scheduled": len(scheduled) == k == self.args.instances,
                "allocations_equal_instances": placed == k and total == {
                    "VCPU": k, "MEMORY_MB": k * 1024, "DISK_GB": k * 10}}


class HostStates:
    """Every Host's status.state, kept by one list (in pages) and a watch in a
    thread: the benchmark polls it without asking the API server anything."""

    def __init__(self, api) -> None:
        import threading

        self.api = api
        self.states: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.listed = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()
        if not self.listed.wait(300):
            raise RuntimeError("Hosts not listed in 300 s")

    def count(self, state: str, names: set[str] | None = None) -> int:
        with self.lock:
            return sum(1 for n, s in self.states.items()
                       if s == state and (names is None or n in names))

    def relist(self) -> str:
        states, cont = {}, None
        while True:
            page = self.api.list_cluster_custom_object(G, V, "hosts", limit=2000,
                                                       _continue=cont)
            for h in page["items"]:
                states[h["metadata"]["name"]] = (h.get("status") or {}).get("state")
            cont = page["metadata"].get("continue")
            if not cont:
                with self.lock:
                    self.states = states
                self.listed.set()
                return page["metadata"]["resourceVersion"]

    def run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        rv = None
        while not self.stop.is_set():
            try:
                rv = rv or self.relist()
                w = watch.Watch()
                for ev in w.stream(self.api.list_cluster_custom_object, G, V, "hosts",
                                   resource_version=rv, timeout_seconds=30):
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        rv = None  # 410: list again
                        break
                    name = obj["metadata"]["name"]
                    with self.lock:
                        if ev["type"] == "DELETED":
                            self.states.pop(name, None)
                        else:
                            self.states[name] = (obj.get("status") or {}).get("state")
                    rv = obj["metadata"]["resourceVersion"]
                    if self.stop.is_set():
                        return
            except ApiException as exc:
                rv = None
                if exc.status != 410:
                    time.sleep(1)
            except Exception:  # the control plane going away at the end
                if self.stop.is_set():
                    return
                time.sleep(1)


def spread(per_host: dict[str, int], hosts: int) -> dict:
    counts = [per_host.get(f"host-{i:04d}", 0) for i in range(hosts)]
    return {"hosts_used": sum(1 for c in counts if c), "min": min(counts), "max": max(counts),
            "stdev": round(statistics.pstdev(counts), 2)}


async def register_all(kubeconfig: Path, purl: str, hosts: int, concurrency: int,
                       renew: str) -> list[str]:
    """Every simulated host as its agent registers it: resource provider with
    inventory and traits, Host with status.resourceProviderUUID, heartbeat
    Lease; ``concurrency`` hosts at a time over aiohttp."""
    import aiohttp

    from kova.kube import Credentials

    creds = Credentials.load(str(kubeconfig))
    token = creds.bearer()
    sem = asyncio.Semaphore(concurrency)
    base = creds.server
    hosts_url = f"{base}/apis/{G}/{V}/hosts"
    leases_url = f"{base}/apis/coordination.k8s.io/v1/namespaces/kova-system/leases"
    kh = {"Authorization": f"Bearer {token}"} if token else {}
    done = [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=concurrency, ssl=creds.ssl_context())) as kube, \
            aiohttp.ClientSession(base_url=purl, headers=PLACEMENT_HEADERS) as ph:

        async def ok(resp: aiohttp.ClientResponse) -> dict:
            if resp.status >= 300:
                raise RuntimeError(f"{resp.method} {resp.url}: {resp.status} {await resp.text()}")
            return await resp.json() if resp.status != 204 else {}

        async def one(i: int) -> str:
            name = f"host-{i:04d}"
            async with sem:
                async with ph.post("/resource_providers", json={"name": name}) as r:
                    rp = (await ok(r))["uuid"]
                async with ph.put(f"/resource_providers/{rp}/inventories", json={
                        "resource_provider_generation": 0, "inventories": {
                            "VCPU": {"total": VCPUS, "allocation_ratio": 4.0},
                            "MEMORY_MB": {"total": MEM, "reserved": 512},
                            "DISK_GB": {"total": DISK}}}) as r:
                    gen = (await ok(r))["resource_provider_generation"]
                async with ph.put(f"/resource_providers/{rp}/traits", json={
                        "traits": ["HW_ARCH_X86_64"], "resource_provider_generation": gen}) as r:
                    await ok(r)
                async with kube.post(hosts_url, headers=kh, json={
                        "apiVersion": f"{G}/{V}", "kind": "Host", "metadata": {"name": name},
                        "spec": {"enabled": True}}) as r:
                    await ok(r)
                async with kube.patch(f"{hosts_url}/{name}/status", json={"status": {
                        "resourceProviderUUID": rp}},
                        headers={**kh, "Content-Type": "application/merge-patch+json"}) as r:
                    await ok(r)
                async with kube.post(leases_url, headers=kh, json={
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 3600,
                                 "renewTime": renew}}) as r:
                    await ok(r)
            done[0] += 1
            if done[0] % 1000 == 0:
                log(f"{done[0]} hosts registered")
            return rp

        return list(await asyncio.gather(*(one(i) for i in range(hosts))))


async def apply_all(kubeconfig: Path, instances: int,
                    namespace: str = "bench") -> list[float]:
    """The burst: 16 creates in flight at a time over aiohttp (the official
    client costs this process ~3 ms of CPU per create, which the four
    measured processes would have to share the cores with)."""
    import aiohttp

    from kova.kube import Credentials

    creds = Credentials.load(str(kubeconfig))
    token = creds.bearer()
    sem = asyncio.Semaphore(16)
    url = f"{creds.server}/apis/{G}/{V}/namespaces/{namespace}/instances"
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {token}"} if token else {},
            connector=aiohttp.TCPConnector(limit=16, ssl=creds.ssl_context())) as http:

        async def one(i: int) -> float:
            async with sem, http.post(url, json={
                    "apiVersion": f"{G}/{V}", "kind": "Instance",
                    "metadata": {"name": f"vm-{i:05d}"},
                    "spec": {"flavorRef": {"name": "bench"},
                             "imageRef": {"name": "bench"}}}) as r:
                if r.status != 201:
                    raise RuntimeError(f"create vm-{i:05d}: {r.status} {await r.text()}")
            return time.monotonic()

        return await asyncio.gather(*(one(i) for i in range(instances)))


def scheduling_figures(metrics: dict[str, float], base: dict[str, float]) -> dict:
    def delta(name: str) -> float:
        return metrics.get(name, 0.0) - base.get(name, 0.0)

    sched_n = delta("kova_operator_schedule_duration_seconds_count")
    return {
        "scheduling_pass_mean_ms": round(
            1000 * delta("kova_operator_schedule_duration_seconds_sum") / sched_n, 1)
        if sched_n else None,
        "claim_retries": int(delta("kova_operator_claim_tries_sum") - sched_n),
    }


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY")


def apiserver_requests(cp) -> dict[str, float]:
    """The API server's ``apiserver_request_total`` by verb and resource
    (``/subresource``), summed over response codes and clients."""
    text = httpx.get(cp.server + "/metrics", headers={"Authorization": f"Bearer {cp.token}"},
                     verify=str(cp.ca_file), timeout=30).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        series, _, value = line.rpartition(" ")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
        key = f"{labels.get('verb')} {labels.get('resource')}"
        if labels.get("subresource"):
            key += "/" + labels["subresource"]
        out[key] = out.get(key, 0.0) + float(value)
    return out


def per_instance(after: dict[str, float], before: dict[str, float], n: int) -> dict:
    """The requests made during the burst, per Instance (the long-running
    WATCH requests are counted when they end: left out)."""
    out = {}
    for key in sorted(after):
        d = after[key] - before.get(key, 0.0)
        if d and not key.startswith("WATCH"):
            out[key] = round(d / n, 3)
    return out


def instance_writers(item: dict) -> dict:
    """Who wrote an Instance and what it carries besides Kova's fields:
    its managedFields' managers, annotations and finalizers."""
    meta = item["metadata"]
    return {"managers": [f"{m.get('manager')} {m.get('operation')} {m.get('subresource', '')}"
                         .strip() for m in meta.get("managedFields") or []],
            "annotations": sorted(meta.get("annotations") or {}),
            "finalizers": meta.get("finalizers") or [],
            "labels": sorted(meta.get("labels") or {})}


def breakdown(metrics: dict[str, float], base: dict[str, float]) -> dict:
    """Placement and API-server calls of the burst: count, total, mean."""
    out = {}
    for key in sorted(metrics):
        m = re.match(r'(kova_operator_(placement|kube)_request_seconds)_sum\{(\w+)="([^"]+)"\}',
                     key)
        if m:
            count_key = key.replace("_sum{", "_count{")
            n = metrics.get(count_key, 0.0) - base.get(count_key, 0.0)
            if n:
                total = metrics.get(key, 0.0) - base.get(key, 0.0)
                out[f"{m.group(2)} {m.group(4)}"] = {
                    "calls": int(n), "total_s": round(total, 2),
                    "mean_ms": round(1000 * total / n, 2)}
    return out


if __name__ == "__main__":
    sys.exit(main())
