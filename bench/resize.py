#!/usr/bin/env python3
"""Benchmark: a resize round trip of a real guest through Kova, side by side
in one run with its floor, libvirt alone doing the same to a copy of the
same domain.

    .venv/bin/python bench/resize.py               # 3 rounds
    .venv/bin/python bench/resize.py --rounds 5

It starts a throwaway local stack (as bench/console.py: control plane,
Placement, the operator with no confirm window, one agent with its own
libvirtd, the API component), boots one Instance of the test image and waits
for its shell.  Each round, alternately:

* **Kova**: ``kubectl kova resize vm --flavor <other>`` (1 vCPU/192 MiB and
  2 vCPU/256 MiB, the same disk, taking turns) until the guest's shell is up
  again at the new size, then ``kubectl kova resize vm --confirm`` until it
  returns -- the round trip a user waits for;
* **floor**: a copy of the same domain (its own disk copy, no Kova
  metadata, so the agent leaves it alone) on the same libvirtd: ``virsh
  destroy``, ``virsh define`` with the other size, ``virsh start``, until its
  shell is up -- what any resize of a local-disk VM must do at least.

The guest's boot under software emulation dominates both; the difference is
Kova's path (Placement's migration consumer, the status steps, the clean
shutdown, the kept disk copy, the confirm).  Results are printed as a
Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from console import apply_and_wait_for_shell, run_stack  # noqa: E402  (bench/console.py)

SIZES = [(1, 192), (2, 256)]
SHELL = "KOVA-SHELL: ttyS0"


def shells(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count(SHELL)
    except FileNotFoundError:
        return 0


def wait_shells(log: Path, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while shells(log) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{log}: no {count}th shell within {timeout:.0f}s")
        time.sleep(0.2)


def floor_domain(uri: str, kova_domain: str, work: Path) -> tuple[str, Path]:
    """A copy of the Kova domain (own name, uuid, disk, log; no metadata)."""
    xml = subprocess.run(["virsh", "-c", uri, "dumpxml", "--inactive", kova_domain],
                         check=True, capture_output=True, text=True).stdout
    disk = re.search(r"<source file='([^']+disk\.qcow2)'", xml).group(1)
    log = re.search(r"<log file='([^']+)'", xml)
    own_disk, own_log = work / "floor.qcow2", work / "floor-console.log"
    shutil.copyfile(disk, own_disk)
    xml = re.sub(r"<uuid>[^<]+</uuid>", "", xml)
    xml = re.sub(r"<entry name='uuid'>[^<]*</entry>", "", xml)  # sysinfo must match <uuid>
    xml = re.sub(r"<metadata>.*?</metadata>", "", xml, flags=re.S)
    xml = re.sub(r"<name>[^<]+</name>", "<name>kova-bench-floor</name>", xml, count=1)
    xml = xml.replace(disk, str(own_disk))
    xml = re.sub(r"<mac address='[^']+'/>", "", xml)
    if log:
        xml = xml.replace(log.group(1), str(own_log))
    (work / "floor.xml").write_text(xml)
    return xml, own_log


def virsh_run(virsh: list[str], *args: str) -> None:
    out = subprocess.run([*virsh, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"virsh {' '.join(args)}: {out.stderr.strip()}")


def sized(xml: str, vcpus: int, mib: int) -> str:
    xml = re.sub(r"<vcpu([^>]*)>\d+</vcpu>", rf"<vcpu\g<1>>{vcpus}</vcpu>", xml)
    xml = re.sub(r"<memory unit='KiB'>\d+</memory>", f"<memory unit='KiB'>{mib * 1024}</memory>",
                 xml)
    return re.sub(r"<currentMemory unit='KiB'>\d+</currentMemory>",
                  f"<currentMemory unit='KiB'>{mib * 1024}</currentMemory>", xml)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from kova.crds.names import API_VERSION
    from kova.dev import paths

    work = Path(tempfile.mkdtemp(prefix="kova-bench-resize-"))
    os.environ["KOVA_OPERATOR_RESIZE_CONFIRM_WINDOW"] = "0"
    cp, stack, image = run_stack(work)
    kubectl = [paths.kubectl(), "--kubeconfig", str(cp.kubeconfig)]
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
           "PATH": f"{Path(sys.executable).parent}:{paths.bin_dir()}:{os.environ['PATH']}"}
    flavors = "".join(f"""---
apiVersion: {API_VERSION}
kind: Flavor
metadata: {{name: bench-{c}x{m}}}
spec: {{vcpus: {c}, memoryMiB: {m}, diskGiB: 1}}
""" for c, m in SIZES)
    uri = None
    try:
        inst, log = apply_and_wait_for_shell(kubectl, flavors + f"""---
apiVersion: {API_VERSION}
kind: Image
metadata: {{name: bench-resize}}
spec: {{source: {{hostPath: {image.resolve()}}}, format: qcow2}}
---
apiVersion: {API_VERSION}
kind: Instance
metadata: {{name: vm, namespace: default}}
spec:
  flavorRef: {{name: bench-1x192}}
  imageRef: {{name: bench-resize}}
""", marker=SHELL)
        uri = stack.libvirt_uris[inst["status"]["host"]]
        xml, floor_log = floor_domain(uri, "default.vm", work)
        virsh = ["virsh", "-q", "-c", uri]
        virsh_run(virsh, "define", str(work / "floor.xml"))
        floor_uuid = subprocess.run([*virsh, "domuuid", "kova-bench-floor"], check=True,
                                    capture_output=True, text=True).stdout.strip()
        # a define again with the same uuid changes the domain, not a new one
        xml = xml.replace("<name>kova-bench-floor</name>",
                          f"<name>kova-bench-floor</name><uuid>{floor_uuid}</uuid>", 1)
        virsh_run(virsh, "start", "kova-bench-floor")
        wait_shells(floor_log, 1)
        results: dict[str, list[float]] = {"kova": [], "floor": []}
        for r in range(args.rounds):
            c, m = SIZES[(r + 1) % 2]
            before = shells(log)
            t0 = time.perf_counter()
            out = subprocess.run([paths.kubectl(), "kova", "resize", "vm", "--flavor",
                                  f"bench-{c}x{m}", "--timeout", "300"], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"resize failed: {out.stdout} {out.stderr}")
            wait_shells(log, before + 1)
            out = subprocess.run([paths.kubectl(), "kova", "resize", "vm", "--confirm"],
                                 env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"confirm failed: {out.stdout} {out.stderr}")
            results["kova"].append(time.perf_counter() - t0)

            before = shells(floor_log)
            (work / "floor.xml").write_text(sized(xml, c, m))
            t0 = time.perf_counter()
            virsh_run(virsh, "destroy", "kova-bench-floor")
            virsh_run(virsh, "define", str(work / "floor.xml"))
            virsh_run(virsh, "start", "kova-bench-floor")
            wait_shells(floor_log, before + 1)
            results["floor"].append(time.perf_counter() - t0)
            print(f"round {r + 1} to {c} vCPU/{m} MiB: kova {results['kova'][-1]:.2f} s, "
                  f"floor {results['floor'][-1]:.2f} s", file=sys.stderr)
        k, f = results["kova"], results["floor"]
        print(f"\n{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}\n")
        print("| path | resize round trip to the guest's shell, median (min-max) |")
        print("|---|---|")
        print(f"| Kova: kubectl kova resize --flavor, then --confirm | "
              f"{statistics.median(k):.2f} s ({min(k):.2f}-{max(k):.2f}) |")
        print(f"| floor: virsh destroy, define, start | "
              f"{statistics.median(f):.2f} s ({min(f):.2f}-{max(f):.2f}) |")
        print(f"\nKova / floor (medians): {statistics.median(k) / statistics.median(f):.2f}")
    finally:
        if uri:
            subprocess.run(["virsh", "-c", uri, "destroy", "kova-bench-floor"],
                           capture_output=True)
            subprocess.run(["virsh", "-c", uri, "undefine", "kova-bench-floor"],
                           capture_output=True)
        subprocess.run([*kubectl, "delete", "inst", "vm", "--wait=true", "--timeout=120s"],
                       capture_output=True)
        subprocess.run([*kubectl, "delete", "image", "bench-resize"], capture_output=True)
        subprocess.run([*kubectl, "delete", "flavors", *(f"bench-{c}x{m}" for c, m in SIZES)],
                       capture_output=True)
        stack.stop()
        cp.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
