#!/usr/bin/env python3
"""Benchmark: from ``helm install`` of helm/kova on the local one-node cluster
to the first Instance Running, with a floor measured beside it.

    .venv/bin/python bench/cluster_install.py              # 3 rounds
    .venv/bin/python bench/cluster_install.py --runs 5

It starts a ``kova.dev.cluster.NodeCluster`` (images built or reused,
kubelet + containerd, a libvirtd of its own for the agent pod), then for
each round:

* ``helm install --wait`` of the chart with its bundled PostgreSQL, then every
  pod Ready and the Host Up (the agent registered in Placement);
* the floor, measured in the same round: a bare pod of the same image
  (``python -c pass``, no probes, no volumes) from ``kubectl run`` to
  Succeeded -- what starting any container costs on this node;
* ``kubectl apply`` of a Flavor, the test Image and an Instance -> Running
  (scheduled by the operator pod, claimed in Placement, built and started by
  the agent pod) -> the guest's user data on its serial console;
* the Instance deleted and the release uninstalled (the Leases go with it).

Results are printed as a Markdown table for docs/benchmarks.md.  The node
is one per machine: nothing else may run a Kova node meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kova.dev.cluster import KOVA_REPOSITORY, NAMESPACE, RELEASE, NodeCluster, kova_version  # noqa: E402

COLUMNS = ("install --wait", "pods Ready", "Host Up", "floor: bare pod", "apply -> Running",
           "install -> Running", "apply -> user data")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bare_pod(cluster: NodeCluster) -> float:
    name = f"floor-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    cluster.kubectl("run", name, "-n", "default", f"--image={KOVA_REPOSITORY}:{kova_version()}",
                    "--image-pull-policy=Never", "--restart=Never", "--command", "--",
                    "python", "-c", "pass")
    while cluster.kubectl("get", "pod", name, "-n", "default", "-o",
                          "jsonpath={.status.phase}").stdout != "Succeeded":
        time.sleep(0.2)
    took = time.monotonic() - t0
    cluster.kubectl("delete", "pod", name, "-n", "default", "--wait=false")
    return took


def one_round(cluster: NodeCluster, i: int) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.monotonic()
    cluster.install()
    out["install --wait"] = time.monotonic() - t0
    cluster.wait_pods_ready()
    out["pods Ready"] = time.monotonic() - t0
    cluster.wait_host_up()
    out["Host Up"] = time.monotonic() - t0
    out["floor: bare pod"] = bare_pod(cluster)
    ns, name = f"bench-{i}", "vm"
    cluster.kubectl("create", "namespace", ns)
    t1 = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=cluster.test_manifests(
        name, ns, f"#cloud-config\nKOVA-BENCH-{i}: hello\n"))
    inst = cluster.wait_instance_phase(name, ns, "Running", 300)
    out["apply -> Running"] = time.monotonic() - t1
    out["install -> Running"] = time.monotonic() - t0
    cluster.wait_userdata(Path(inst["status"]["console"]["logPath"]), 300)
    out["apply -> user data"] = time.monotonic() - t1
    cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=180s", timeout=200)
    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait")
    while cluster.pods():
        time.sleep(1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kova-bench-cluster-") as tmp:
        cluster = NodeCluster(root=Path(tmp), private_libvirt=True)
        try:
            t0 = time.monotonic()
            cluster.start(progress=say)
            start = time.monotonic() - t0
            rows = []
            for i in range(args.runs):
                say(f"[bench] round {i + 1} of {args.runs}")
                rows.append(one_round(cluster, i))
                say("[bench] " + "  ".join(f"{k}={v:.1f}s" for k, v in rows[-1].items()))
        finally:
            cluster.destroy()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"node cluster start (images cached): {start:.1f} s; load average at the end: "
          f"{' '.join(load)}\n")
    print("| round | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(f"{r[c]:.1f} s" for c in COLUMNS) + " |")
    print("| median | " + " | ".join(
        f"{statistics.median(r[c] for r in rows):.1f} s" for c in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
