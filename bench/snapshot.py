#!/usr/bin/env python3
"""Benchmark: ``kubectl kova snapshot`` of a running QEMU guest beside its
floor on the same machine, in the same run.

    .venv/bin/python bench/snapshot.py                  # test image + 1 GiB disk
    .venv/bin/python bench/snapshot.py --size-mib 256 --runs 3

It starts a throwaway control plane, the image store (``kova images serve``,
HTTPS, as a process) and a local stack (Placement, the operator, one agent
with its own libvirtd that knows the store, the API component), then runs two
Instances under QEMU:

* one of Kova's test image (its root disk: a qcow2 overlay on the ~11 MiB
  image, booted to its shell);
* one of a raw disk of ``--size-mib`` random data (a cluster Image from a
  host path; the overlay on it holds nothing, so the chain holds that many
  MiB of data; the guest has no bootloader and stays in its firmware, which
  is all a snapshot needs).

Each run snapshots each Instance with ``kubectl kova snapshot`` into a fresh
TenantImage name (timed from the command's start to its answer: the API
server, the API component, the agent's pause + ``qemu-img convert -U`` of
the chain + resume, the upload over TLS with the agent's token, the store's
sha256, checks and fsync, the TenantImage's creation).  Right before each, the
floor: ``qemu-img convert -U`` of the same chain into a standalone qcow2 plus a
plain copy of the result with fsync -- what any snapshot into a separate store
does at the least on this machine.  With ``--before-plugin PATH`` (the
``kubectl-kova`` of the code before, in a checkout of its own) each run
snapshots each Instance with that plugin and with this one, in alternating
order, on the same stack.  Prints a Markdown table for docs/benchmarks.md,
with the CPU seconds of ``kubectl`` and the plugin per snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from image_upload import _fsync_copy, start_store  # noqa: E402  (bench/image_upload.py)

MiB = 1 << 20
NS = "default"


def floor(disk: Path, work: Path) -> float:
    t0 = time.perf_counter()
    flat = work / "floor.qcow2"
    subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "qcow2",
                    str(disk), str(flat)], check=True)
    _fsync_copy(flat, work / "floor.copy")
    elapsed = time.perf_counter() - t0
    for p in (flat, work / "floor.copy"):
        p.unlink(missing_ok=True)
    return elapsed


class Pauses:
    """Seconds each domain spent paused, from libvirt's lifecycle events."""

    def __init__(self, uri: str) -> None:
        from kova.agents.virt.driver import LibvirtDriver, start_event_loop

        start_event_loop()
        self.paused: dict[str, float] = {}
        self.since: dict[str, float] = {}
        self.driver = LibvirtDriver(uri, on_event=self._event)
        _ = self.driver.conn

    def _event(self, uid: str, event: str, _detail: int) -> None:
        now = time.perf_counter()
        if event == "Suspended":
            self.since[uid] = now
        elif event in ("Resumed", "Stopped") and uid in self.since:
            self.paused[uid] = self.paused.get(uid, 0.0) + now - self.since.pop(uid)

    def take(self, uid: str) -> float:
        time.sleep(0.5)  # the last events' delivery
        return self.paused.pop(uid, 0.0)


def agent_split(log_dir: Path) -> str:
    """The agent's copy and upload time of the last snapshot, from its log."""
    lines: list[str] = []
    for path in log_dir.glob("*.log"):
        lines += [line for line in path.read_text(errors="replace").splitlines()
                  if "snapshot of" in line and (" copied in " in line or "uploaded in" in line)]
    return " / ".join(json.loads(x).get("message", x) if x.startswith("{") else x
                      for x in lines[-2:]) or "(not in the logs)"


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plugin_variants(env: dict, work: Path, before: str | None) -> dict[str, dict]:
    """The environments ``kubectl kova`` runs in: this checkout's plugin,
    and with ``before`` a PATH whose ``kubectl-kova`` is that one."""
    if not before:
        return {"": env}
    shim = work / "before-bin"
    shim.mkdir()
    (shim / "kubectl-kova").symlink_to(Path(before).resolve())
    return {"after": env, "before": {**env, "PATH": f"{shim}:{env['PATH']}"}}


def print_table(rows: list[tuple], runs: int) -> None:
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f}, {os.cpu_count()} cores, median of "
          f"{runs} runs\n")
    print("| root disk | plugin | data MiB | snapshot s | guest paused s | floor s "
          "(convert + copy) | snapshot / floor | kubectl + plugin CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, variant, size, sn, pause, fl, ratio, cpu in rows:
        print(f"| {label} | {variant} | {size:.1f} | {sn:.2f} | {pause:.2f} | {fl:.2f} "
              f"| {ratio:.2f} | {cpu:.2f} |")


def wait(what: str, check: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


def destroy_guests(uris) -> None:
    """Stop any guest left on each host's libvirtd: the stack's stop leaves
    running domains alone (as `kova dev down` does for a user's VMs), and
    its libvirtd going away does not end their QEMU."""
    import libvirt

    for uri in uris:
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            print(f"guests on {uri} not stopped: {exc}", file=sys.stderr)
            continue
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                dom.destroy()
        finally:
            conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before-plugin", metavar="PATH",
                    help="The kubectl-kova of the code before (another checkout's venv): "
                         "each run snapshots with it and with this one, alternating.")
    ap.add_argument("--keep", action="store_true",
                    help="Keep the working directory (the components' logs) at the end.")
    args = ap.parse_args()

    from kova.dev import paths
    from kova.dev.controlplane import ControlPlane
    from kova.dev.crds import apply_crds
    from kova.dev.image import ensure_test_image
    from kova.dev.libvirt import ensure_libvirtd
    from kova.dev.stack import IMAGE_HOST_PATH, Stack

    work = Path(tempfile.mkdtemp(prefix="snapshot-bench-", dir=os.environ.get("KOVA_BENCH_DIR")))
    big = IMAGE_HOST_PATH.parent / f"bench-snapshot-{uuid.uuid4().hex[:6]}.raw"
    cp = ControlPlane(workdir=work / "cp")
    cp.start(progress=lambda m: print(m, file=sys.stderr))
    store = stack = None
    try:
        apply_crds(cp.kubeconfig, progress=lambda m: None)
        ensure_libvirtd()
        image = ensure_test_image()
        store, url, ca = start_store(work, cp.kubeconfig)
        stack = Stack(root=work / "stack", api=True, agent_args=[
            "--image-store-url", url, "--image-ca-file", str(ca),
            "--image-url-allowed-network", "127.0.0.0/8"])
        stack.start(cp, [f"bench-{uuid.uuid4().hex[:5]}"],
                    progress=lambda m: print(m, file=sys.stderr))
        stack.wait_hosts_up()
        big.parent.mkdir(parents=True, exist_ok=True)
        with open(big, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(MiB))
        kubectl = [paths.kubectl(), "--kubeconfig", str(cp.kubeconfig)]
        env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
               "PATH": f"{Path(sys.executable).parent}:{paths.bin_dir()}:"
                       f"{os.environ.get('PATH', '')}"}
        disk_gib = -(-args.size_mib // 1024)
        subprocess.run([*kubectl, "apply", "-f", "-"], check=True, capture_output=True,
                       text=True, input=f"""
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: bench-test-image}}
spec: {{source: {{hostPath: {Path(image).resolve()}}}, format: qcow2}}
---
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: bench-random}}
spec: {{source: {{hostPath: {big}}}, format: raw}}
---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: small, namespace: {NS}}}
spec:
  resources: {{vcpus: 1, memoryMiB: 192, diskGiB: 1}}
  imageRef: {{name: bench-test-image}}
---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: large, namespace: {NS}}}
spec:
  resources: {{vcpus: 1, memoryMiB: 128, diskGiB: {disk_gib}}}
  imageRef: {{name: bench-random}}
""")

        def snapshot(name: str, image_name: str, run_env: dict) -> tuple[float, float, str]:
            """``kubectl kova snapshot``: seconds, CPU seconds of kubectl and
            the plugin, its answer."""
            cpu0 = _children_cpu()
            t0 = time.perf_counter()
            proc = subprocess.run([paths.kubectl(), "kova", "snapshot", name, "-n", NS,
                                   "--image", image_name], env=run_env, check=False,
                                  capture_output=True, text=True, timeout=1800)
            seconds = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"{image_name}: kubectl kova snapshot failed after "
                                 f"{seconds:.1f}s: {proc.stdout}{proc.stderr}")
            return seconds, _children_cpu() - cpu0, proc.stdout.strip()

        def inst(name: str) -> dict:
            out = subprocess.run([*kubectl, "-n", NS, "get", "inst", name, "-o", "json"],
                                 capture_output=True, text=True)
            return json.loads(out.stdout) if out.returncode == 0 else {}

        def shell_up() -> bool:
            log = ((inst("small").get("status") or {}).get("console") or {}).get("logPath")
            return isinstance(log, str) and "KOVA-SHELL" in Path(log).read_text(errors="replace")

        wait("the test image's shell", shell_up)
        wait("the large Instance running",
             lambda: (inst("large").get("status") or {}).get("powerState") == "Running")
        pause_watch = Pauses(stack.libvirt_uris[stack.hosts[0]])
        variants = plugin_variants(env, work, args.before_plugin)
        rows = []
        for label, name, data in (("test image", "small", image.stat().st_size),
                                  (f"{args.size_mib} MiB disk", "large", big.stat().st_size)):
            uid = inst(name)["metadata"]["uid"]
            disk = stack.root / "instances" / stack.hosts[0] / uid / "disk.qcow2"
            if not disk.exists():
                disk = next(stack.root.rglob(f"{uid}/disk.qcow2"))
            floors: list[float] = []
            snaps: dict[str, list[float]] = {v: [] for v in variants}
            cpus: dict[str, list[float]] = {v: [] for v in variants}
            pauses: dict[str, list[float]] = {v: [] for v in variants}
            for run in range(args.runs):
                floors.append(floor(disk, work))
                order = list(variants) if run % 2 == 0 else list(variants)[::-1]
                for variant in order:
                    image_name = f"{name}-{run}" + (f"-{variant}" if variant else "")
                    seconds, cpu, out = snapshot(name, image_name, variants[variant])
                    snaps[variant].append(seconds)
                    cpus[variant].append(cpu)
                    pauses[variant].append(pause_watch.take(uid))
                    print(f"{label} run {run + 1}{' ' + variant if variant else ''}: snapshot "
                          f"{seconds:.2f}s (kubectl and the plugin: {cpu:.2f} CPU s), floor "
                          f"{floors[-1]:.2f}s, load {os.getloadavg()[0]:.1f}: {out}",
                          file=sys.stderr)
                    print(f"  the agent: {agent_split(stack.log_dir)}", file=sys.stderr)
            fl = statistics.median(floors)
            for variant in variants:
                sn = statistics.median(snaps[variant])
                rows.append((label, variant or "-", data / MiB, sn,
                             statistics.median(pauses[variant]), fl, sn / fl,
                             statistics.median(cpus[variant])))
        print_table(rows, args.runs)
        print(json.dumps({"rows": rows}), file=sys.stderr)
    finally:
        if stack is not None:
            # The Instances deleted first: their agents end their guests (an
            # agent would start a guest destroyed under it again); then
            # whatever is left on the hosts' libvirtd.
            subprocess.run([paths.kubectl(), "--kubeconfig", str(cp.kubeconfig), "delete",
                            "instances", "--all", "-n", NS, "--wait=true", "--timeout=120s"],
                           capture_output=True, check=False)
            destroy_guests(stack.libvirt_uris.values())
            stack.stop()
        if store is not None:
            store.terminate()
            store.wait(15)
        cp.destroy()
        big.unlink(missing_ok=True)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
