#!/usr/bin/env python3
"""Benchmark: from creating an Instance to its domain running, and to the
guest's first serial output, for N Instances on one host -- with the image
cold (empty cache) and cached -- plus the agent's memory.

    .venv/bin/python bench/agent_boot.py                  # 20 instances, qemu:///system
    .venv/bin/python bench/agent_boot.py --count 5 --no-cold
    .venv/bin/python bench/agent_boot.py --memory-only --memory-counts 0,20,100

It starts a throwaway control plane (or uses --kubeconfig), installs the
CRDs and runs the real agent (``kova agent run``) as a subprocess.  With
``--operator`` it also runs Placement (SQLite) and the operator (``kova
operator run``), creates each Instance with a Flavor and lets the operator
schedule it: "apply" is then the create call alone, as with ``kubectl
apply``.  Without it the bench plays the operator itself: each Instance is
created, given ``status.host`` and labelled for the host, the three calls
timed as "apply".  Times measured:

* ``running``: apply -> libvirt's Started event for the domain (the bench
  listens on its own libvirt connection);
* ``status``: apply -> ``status.phase`` Running seen through a watch;
* ``console``: apply -> first byte in the serial log (qemu only).

Memory: the agent's (and with --operator the operator's) RSS (VmRSS) with
0, 20 and 100 Instances, measured on
libvirt's test:///default driver so that 100 domains fit on a 2-core machine
(the agent's memory does not depend on the guests being real).  Results are
printed as a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kova.crds.names import GROUP as G
from kova.crds.names import LABEL_HOST
from kova.crds.names import VERSION as V

ROOT = Path(__file__).resolve().parents[1]

MERGE = "application/merge-patch+json"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    def __init__(self, args) -> None:
        from kubernetes import client, config

        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="agent-boot-bench-",
                                          dir=os.environ.get("KOVA_BENCH_DIR")))
        self.cp = None
        self.image_dir: Path | None = None
        if args.kubeconfig:
            self.kubeconfig = Path(args.kubeconfig)
        else:
            from kova.dev.controlplane import ControlPlane

            print("starting a throwaway control plane ...", file=sys.stderr)
            self.cp = ControlPlane(workdir=self.work / "cp").start()
            self.kubeconfig = self.cp.kubeconfig
        from kova.dev.crds import apply_crds

        apply_crds(self.kubeconfig)
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.host = f"bench-{uuid.uuid4().hex[:6]}"
        self.ns = f"bench-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.agent: subprocess.Popen | None = None
        self.operator: subprocess.Popen | None = None
        self.placement: subprocess.Popen | None = None
        self.placement_url: str | None = None
        # Generous ratios: 100 small Instances must fit on test:///default's
        # fake host in the memory run.
        self.custom.create_cluster_custom_object(G, V, "hosts", {
            "apiVersion": f"{G}/{V}", "kind": "Host", "metadata": {"name": self.host},
            "spec": {"allocationRatios": {"vcpu": 64.0, "memory": 16.0, "disk": 16.0}}})
        if args.operator:
            self.start_placement()
            self.custom.create_cluster_custom_object(G, V, "flavors", {
                "apiVersion": f"{G}/{V}", "kind": "Flavor", "metadata": {"name": self.host},
                "spec": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}})

    def start_placement(self) -> None:
        import socket

        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.placement_url = f"http://127.0.0.1:{port}"
        self.placement = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url",
             f"sqlite:///{self.work}/placement.db", "--no-auth", "--port", str(port),
             "--log-level", "warning"],
            stdout=open(self.work / "placement.log", "a"), stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.placement_url + "/", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("placement did not start")

    def start_operator(self) -> None:
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "operator", "run", "--kubeconfig",
             str(self.kubeconfig), "--placement-url", self.placement_url, "--namespace", self.ns,
             "--standalone", "--metrics-port", "0", "--audit-interval", "0",
             "--no-image-traits", "--log-level", "warning"],
            stdout=open(self.work / "operator.log", "a"), stderr=subprocess.STDOUT, cwd=ROOT)

    def stop_operator(self) -> None:
        for attr in ("operator",):
            proc = getattr(self, attr)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
            setattr(self, attr, None)

    # ------------------------------------------------------------------
    def start_agent(self, uri: str, instance_dir: Path, extra: list[str] | None = None) -> None:
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(self.work / "agent.log", "a")
        env = dict(os.environ, KOVA_HOST=self.host)
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "agent", "run", "--libvirt-uri", uri,
             "--domain-type", "qemu", "--instance-dir", str(instance_dir),
             "--kubeconfig", str(self.kubeconfig), "--metrics-port", str(port),
             "--metrics-bind", "127.0.0.1",
             "--workers", str(self.args.workers), "--log-level", "info",
             *(["--placement-url", self.placement_url] if self.placement_url else []),
             # the agent boots only images under its image directories
             *(["--image-host-dir", str(self.image_dir)] if self.image_dir else []),
             *(extra or [])],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        # Ready when /healthz says so: libvirt up, watch synced, lease renewed.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        time.sleep(0.5)
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the agent did not become healthy")

    def stop_agent(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.terminate()
            self.agent.wait(20)
        self.agent = None

    def image(self, name: str, path: Path) -> None:
        import hashlib

        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        body = {"apiVersion": f"{G}/{V}", "kind": "Image", "metadata": {"name": name},
                "spec": {"source": {"hostPath": str(path)}, "format": "qcow2", "sha256": sha}}
        try:
            self.custom.create_cluster_custom_object(G, V, "images", body)
        except Exception:
            pass

    def apply(self, name: str, image: str) -> float:
        """Create (+ schedule as the operator would); returns the start time."""
        size = ({"flavorRef": {"name": self.host}} if self.args.operator
                else {"resources": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}})
        t0 = time.monotonic()
        if os.environ.get("KOVA_BENCH_DEBUG"):
            print(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} "
                  f"apply {name}", file=sys.stderr)
        self.custom.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": f"{G}/{V}", "kind": "Instance",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {**size, "imageRef": {"name": image},
                     **({"runStrategy": "Once"} if self.args.stop_after_output else {}),
                     "userData": {"inline": f"#cloud-config\n# {name}\n"}}})
        if self.args.operator:
            return t0
        self.custom.patch_namespaced_custom_object_status(
            G, V, self.ns, "instances", name, {"status": {"host": self.host}},
            _content_type=MERGE)
        self.custom.patch_namespaced_custom_object(
            G, V, self.ns, "instances", name,
            {"metadata": {"labels": {LABEL_HOST: self.host}}}, _content_type=MERGE)
        return t0

    def delete_all(self, names: list[str], timeout: float = 180) -> None:
        for n in names:
            try:
                self.custom.delete_namespaced_custom_object(G, V, self.ns, "instances", n)
            except Exception:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.custom.list_namespaced_custom_object(G, V, self.ns, "instances")["items"]
            if not items:
                return
            time.sleep(0.5)
        raise RuntimeError("instances not deleted in time")

    # ------------------------------------------------------------------
    def run_batch(self, label: str, uri: str, image: str, instance_dir: Path,
                  count: int, console: bool) -> dict:
        import libvirt
        from kubernetes import watch

        from kova.agents.virt.driver import start_event_loop

        start_event_loop()
        conn = libvirt.open(uri)
        started: dict[str, float] = {}
        names = [f"{label}-{i:03d}" for i in range(count)]
        prefix = f"{self.ns}."

        def on_event(_c, dom, event, _detail, _o):
            if event == libvirt.VIR_DOMAIN_EVENT_STARTED and dom.name().startswith(prefix):
                started.setdefault(dom.name()[len(prefix):], time.monotonic())

        cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                         on_event, None)
        seen = _Seen()
        stop = threading.Event()
        w = watch.Watch()
        wt = threading.Thread(target=self._watch, args=(w, seen, stop), daemon=True)
        wt.start()
        time.sleep(0.3)
        applied: dict[str, float] = {}
        with ThreadPoolExecutor(max_workers=min(count, 10)) as pool:
            for n, t in zip(names, pool.map(lambda n: self.apply(n, image), names)):
                applied[n] = t
        # The first --console-count guests boot to their first serial output;
        # the others are destroyed as soon as they run (runStrategy Once: the
        # agent leaves them off), so that N software-emulated guests do not
        # starve each other (and the measured starts) on a small machine.
        watched = set(names[: self.args.console_count]) if console else set()
        first_output = self._wait_batch(conn, prefix, count, started, seen, watched,
                                        instance_dir)
        stop.set()
        w.stop()
        conn.domainEventDeregisterAny(cb)
        conn.close()
        res = {
            "scheduled": [seen.scheduled[n] - applied[n] for n in names if n in seen.scheduled],
            "running": [started[n] - applied[n] for n in names if n in started],
            "status": [seen.running[n] - applied[n] for n in names if n in seen.running],
            "console": [first_output[n] - applied[n] for n in names if n in first_output],
        }
        res["names"] = names
        return res

    def _watch(self, w, seen: _Seen, stop: threading.Event) -> None:
        """When each Instance got its host and its Running status."""
        for ev in w.stream(self.custom.list_namespaced_custom_object, G, V, self.ns,
                           "instances", timeout_seconds=600):
            o = ev["object"]
            n = o["metadata"]["name"]
            seen.uids[n] = o["metadata"]["uid"]
            if (o.get("status") or {}).get("host"):
                seen.scheduled.setdefault(n, time.monotonic())
            if (o.get("status") or {}).get("phase") == "Running":
                seen.running.setdefault(n, time.monotonic())
            if stop.is_set():
                break

    def _wait_batch(self, conn, prefix: str, count: int, started: dict[str, float],
                    seen: _Seen, watched: set[str], instance_dir: Path) -> dict[str, float]:
        """Until every Instance is Running and every watched guest printed
        something (or --timeout); when each watched guest first printed."""
        import libvirt

        deadline = time.monotonic() + self.args.timeout
        destroyed: set[str] = set()
        first_output: dict[str, float] = {}

        def destroy(n: str) -> None:
            destroyed.add(n)
            try:
                conn.lookupByName(prefix + n).destroy()
            except libvirt.libvirtError:
                pass

        while time.monotonic() < deadline:
            if self.args.stop_after_output:
                for n in list(started):
                    if n not in watched and n not in destroyed and n in seen.running:
                        destroy(n)
            for n in watched:
                if n in first_output or n not in seen.uids:
                    continue
                try:
                    if (instance_dir / seen.uids[n] / "console.log").stat().st_size > 0:
                        first_output[n] = time.monotonic()
                        if self.args.stop_after_output:
                            destroy(n)
                except FileNotFoundError:
                    pass
            if len(seen.running) >= count and len(first_output) >= len(watched):
                break
            time.sleep(0.05)
        return first_output


class _Seen:
    """What the Instance watch saw: uid, and when it was scheduled and Running."""

    def __init__(self) -> None:
        self.uids: dict[str, str] = {}
        self.scheduled: dict[str, float] = {}
        self.running: dict[str, float] = {}


def floor_batch(uri: str, image_path: Path, work: Path, count: int, workers: int,
                stop_after_output: bool, console_count: int, timeout: float) -> dict:
    """The same starts without Kova: ``count`` domains with the XML the agent
    writes (qcow2 overlay on the same image, NoCloud seed, serial log), defined
    beforehand, then started at once by ``workers`` threads on one libvirt
    connection -- the agent's default concurrency. Measured from t0 to each
    ``virDomainCreate`` returning (the domain is running then). With
    ``stop_after_output`` each is destroyed once running, except the first
    ``console_count``, which are destroyed after their first serial output, as
    in the Kova batches. This is what libvirt and QEMU alone need on this
    machine, the floor under the Kova figures."""
    import libvirt

    from kova.agents.virt.domain import DomainMetadata, DomainSpec, build_domain_xml
    from kova.agents.virt.seed import write_nocloud_seed

    d = work / f"floor-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    conn = libvirt.open(uri)
    names: list[str] = []
    logs: dict[str, Path] = {}
    for i in range(count):
        uid = str(uuid.uuid4())
        disk, seed, log = d / f"{i}.qcow2", d / f"{i}.iso", d / f"{i}.log"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(image_path), str(disk)], check=True)
        write_nocloud_seed(seed, f"instance-id: {uid}\nlocal-hostname: floor-{i}\n",
                           f"#cloud-config\n# floor-{i}\n")
        spec = DomainSpec(meta=DomainMetadata(uid=uid, namespace="kova-floor",
                                              name=f"f{i:03d}-{uid[:6]}"),
                          vcpus=1, memory_mib=128, disk_path=str(disk), console_log=str(log),
                          seed_path=str(seed))
        names.append(conn.defineXML(build_domain_xml(spec)).name())
        logs[names[-1]] = log
    done: dict[str, float] = {}
    watched = set(names[:console_count])
    first_output: dict[str, float] = {}
    t0 = time.monotonic()

    def start(name: str) -> None:
        dom = conn.lookupByName(name)
        dom.create()
        done[name] = time.monotonic() - t0
        if stop_after_output and name not in watched:
            dom.destroy()

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(start, names))
        deadline = time.monotonic() + timeout
        while len(first_output) < len(watched) and time.monotonic() < deadline:
            for n in watched - set(first_output):
                if logs[n].exists() and logs[n].stat().st_size > 0:
                    first_output[n] = time.monotonic() - t0
                    if stop_after_output:
                        conn.lookupByName(n).destroy()
            time.sleep(0.05)
    finally:
        for n in names:
            dom = conn.lookupByName(n)
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
            dom.undefine()
        conn.close()
        subprocess.run(["rm", "-rf", str(d)], check=False)
    return {"running": [done[n] for n in names if n in done],
            "console": [first_output[n] for n in names if n in first_output]}


def fmt(label: str, values: list[float], count: int) -> str:
    if not values:
        return f"| {label} | - | - | - | 0/{count} |"
    return (f"| {label} | {pct(values, 50):.2f} | {pct(values, 95):.2f} | {max(values):.2f} "
            f"| {len(values)}/{count} |")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--uri", default="qemu:///system")
    ap.add_argument("--image", default=None, help="qcow2 to boot (default: the Kova test image)")
    ap.add_argument("--kubeconfig", default=None)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache batch")
    ap.add_argument("--memory-counts", default="0,20,100")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--stop-after-output", action="store_true",
                    help="runStrategy Once; destroy each guest once it runs (or, for the "
                         "--console-count first ones, once it printed something)")
    ap.add_argument("--console-count", type=int, default=None,
                    help="how many guests boot to their first serial output (default: all)")
    ap.add_argument("--operator", action="store_true",
                    help="run Placement and the operator; Instances are scheduled by it")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=AGENT ARGS",
                    help="an agent configuration to compare, e.g. 'idle=--guest-vcpu-scheduler "
                         "idle' (repeatable; args after --workers, so they override it); the "
                         "cached batch runs once per variant and round, variants alternating")
    ap.add_argument("--floor", action="store_true",
                    help="after each Kova batch, start the same number of domains with "
                         "libvirt alone (same XML, --workers threads, same destroy rule) and "
                         "report both side by side: the floor this machine sets")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --variant: how many cached batches per variant")
    args = ap.parse_args()
    if args.console_count is None:
        args.console_count = args.count
    return args


def main() -> int:
    args = parse_args()
    if args.uri.startswith("qemu"):
        from kova.dev.libvirt import ensure_libvirtd

        ensure_libvirtd()
    if args.image:
        image_path = Path(args.image)
    else:
        from kova.dev.image import ensure_test_image

        image_path = ensure_test_image()
    b = Bench(args)
    b.image_dir = image_path.parent
    out: list[str] = []
    try:
        b.image("bench-image", image_path)
        if not args.memory_only:
            BootRun(b, args, image_path, out).run()
        if not args.no_memory:
            memory_table(b, args, out)
    finally:
        b.stop_agent()
        b.stop_operator()
        if b.placement is not None:
            b.placement.terminate()
            b.placement.wait(10)
        if b.cp is not None:
            b.cp.destroy()
    print("\n".join(out))
    return 0


class BootRun:
    """The boot batches (cold, cached, per variant and round), each printed
    as a table as soon as it is measured."""

    def __init__(self, b: Bench, args: argparse.Namespace, image_path: Path,
                 out: list[str]) -> None:
        self.b, self.args, self.image_path, self.out = b, args, image_path, out
        self.instance_dir = b.work / "instances"
        self.variants = [(v.split("=", 1)[0], v.split("=", 1)[1].split() if "=" in v else [])
                         for v in args.variant] or [("", [])]
        self.console = args.uri.startswith("qemu")
        self.n_console = min(args.count, args.console_count)
        self.pooled: dict[str, dict[str, list[float]]] = {}
        self.per_round: dict[str, list[tuple[float, float, float]]] = {}

    def run(self) -> None:
        b, args = self.b, self.args
        b.start_agent(args.uri, self.instance_dir, self.variants[0][1])
        if args.operator:
            b.start_operator()
            time.sleep(3)  # the operator's first lease check sees the host Up
        self.out.append(
            f"\n{args.count} Instances on one host, {args.uri}, "
            f"{os.cpu_count()} CPUs, agent workers {args.workers}, "
            + ("scheduled by the operator" if args.operator else "scheduling simulated")
            + (f", {self.n_console} of them boot to the first serial output, the others are "
               "destroyed once running"
               if args.stop_after_output and args.console_count < args.count else "") + "\n")
        current = self.variants[0][1]
        for batch, vname, vargs in self.batches():
            if vargs != current:
                b.stop_agent()
                b.start_agent(args.uri, self.instance_dir, vargs)
                current = vargs
            self.one_batch(batch, vname, vargs)
        if args.variant:
            self.variant_summary()
        b.stop_agent()
        b.stop_operator()

    def batches(self) -> list[tuple[str, str, list[str]]]:
        batches: list[tuple[str, str, list[str]]] = []
        if not self.args.no_cold:
            batches.append(("cold", *self.variants[0]))
        else:
            # "cached" must mean cached: one Instance fills the cache first.
            res = self.b.run_batch("warm", self.args.uri, "bench-image", self.instance_dir,
                                   1, False)
            self.b.delete_all(res["names"])
        for r in range(self.args.rounds if self.args.variant else 1):
            for vname, vargs in self.variants:
                label = "cached" + (f"-{vname}-r{r}" if self.args.variant else "")
                batches.append((label, vname, vargs))
        return batches

    def one_batch(self, batch: str, vname: str, vargs: list[str]) -> None:
        b, args, out = self.b, self.args, self.out
        if batch == "cold":
            import shutil

            shutil.rmtree(self.instance_dir / "_base", ignore_errors=True)
        load = os.getloadavg()[0]
        res = b.run_batch(batch, args.uri, "bench-image", self.instance_dir, args.count,
                          self.console)
        load = max(load, os.getloadavg()[0])
        head = (f"\n{batch}" + (f" (agent {' '.join(vargs)})" if vargs else "")
                + f", load average (1 min) up to {load:.1f}\n")
        out.extend([head, "| batch / from apply to | p50 s | p95 s | max s | n |",
                    "|---|---|---|---|---|"])
        if res.get("scheduled"):
            out.append(fmt(f"{batch}: scheduled (status.host)", res["scheduled"], args.count))
        out.append(fmt(f"{batch}: domain running", res["running"], args.count))
        out.append(fmt(f"{batch}: status Running", res["status"], args.count))
        if self.console:
            out.append(fmt(f"{batch}: first serial output", res["console"], self.n_console))
        print("\n".join(out), file=sys.stderr)
        if args.floor and batch != "cold":
            self.floor(batch, res)
        if batch != "cold" and args.variant:
            for k in ("scheduled", "running", "status", "console"):
                self.pooled.setdefault(vname, {}).setdefault(k, []).extend(res[k])
            self.per_round.setdefault(vname, []).append(
                (pct(res["running"], 50), pct(res["running"], 95), load))
        b.delete_all(res["names"])

    def floor(self, batch: str, res: dict) -> None:
        """The same starts with libvirt alone, beside Kova's."""
        args, out = self.args, self.out
        self.b.delete_all(res["names"])
        res["names"] = []
        time.sleep(2)
        fl = floor_batch(args.uri, self.image_path, self.b.work, args.count, args.workers,
                         args.stop_after_output, self.n_console, args.timeout)
        out.append(fmt(f"{batch}: libvirt alone, domain running", fl["running"], args.count))
        if self.console:
            out.append(fmt(f"{batch}: libvirt alone, first serial output", fl["console"],
                           self.n_console))
        for k, q in (("p50", 50), ("p95", 95)):
            out.append(f"| {batch}: Kova / libvirt alone, domain running {k} | "
                       f"{pct(res['running'], q) / pct(fl['running'], q):.2f}x | | | |")
        print("\n".join(out), file=sys.stderr)

    def variant_summary(self) -> None:
        out, args = self.out, self.args
        out.append("\nPer variant, all rounds pooled; and the median over rounds of "
                   "each round's p50 / p95 (domain running)\n")
        out.append("| variant | from apply to | p50 s | p95 s | max s | n |")
        out.append("|---|---|---|---|---|---|")
        for vname, _vargs in self.variants:
            for k in ("scheduled", "running", "status", "console"):
                vals = self.pooled.get(vname, {}).get(k, [])
                n = args.rounds * (self.n_console if k == "console" else args.count)
                out.append(f"| {vname} " + fmt(k, vals, n))
            rounds = self.per_round.get(vname, [])
            out.append(
                f"| {vname} | running, median of rounds "
                f"({', '.join(f'{a:.1f}/{c:.1f}' for a, c, _ in rounds)}; load "
                f"{', '.join(f'{x:.1f}' for _, _, x in rounds)}) | "
                f"{statistics.median(a for a, _, _ in rounds):.2f} | "
                f"{statistics.median(c for _, c, _ in rounds):.2f} | | |")
        print("\n".join(out), file=sys.stderr)


def memory_table(b: Bench, args: argparse.Namespace, out: list[str]) -> None:
    """The agent's (and operator's) resident memory at 0, 20, 100 Instances."""
    counts = [int(c) for c in args.memory_counts.split(",") if c]
    out.append("\nAgent memory (VmRSS, test:///default so that 100 domains fit)\n")
    out.append("| instances | agent RSS MiB |"
               + (" operator RSS MiB |" if args.operator else ""))
    out.append("|---|---|" + ("---|" if args.operator else ""))
    b.start_agent("test:///default", b.work / "mem-instances")
    if args.operator:
        b.start_operator()
        time.sleep(3)
    made: list[str] = []
    for n in sorted(counts):
        while len(made) < n:
            name = f"mem-{len(made):03d}"
            b.apply(name, "bench-image")
            made.append(name)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            items = b.custom.list_namespaced_custom_object(G, V, b.ns, "instances")["items"]
            if sum((i.get("status") or {}).get("phase") == "Running" for i in items) >= n:
                break
            time.sleep(0.5)
        time.sleep(2)
        row = f"| {n} | {rss_mib(b.agent.pid):.0f} |"
        if args.operator:
            row += f" {rss_mib(b.operator.pid):.0f} |"
        out.append(row)
    b.delete_all(made)
    b.stop_agent()


if __name__ == "__main__":
    sys.exit(main())
