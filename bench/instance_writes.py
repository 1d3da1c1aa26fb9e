"""Benchmark: what the API server spends on the operator's two writes when it
schedules an Instance -- the placement record (the ``kova.dev/host`` label and
the operator's finalizer) and the ``Scheduled`` status -- written as guarded
merge patches or as guarded PUTs of the whole object (what the operator does).

Starts a throw-away kube-apiserver + etcd (the test control plane) with Kova's
CRDs; per round creates N Instances (not measured), then writes both records of
each, 16 in flight over aiohttp (the operator's client), and reads the CPU the
API server and etcd used for them.  The two ways alternate, each on Instances
of its own, so a change of the machine's load hits both alike.

    .venv/bin/python bench/instance_writes.py --instances 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_schedule import G, V, log, tree_cpu  # noqa: E402

from kova.kstatus import with_kstatus  # noqa: E402
from kova.kube import Credentials, Kube, instance_path  # noqa: E402
from kova.operator.instance import status as st  # noqa: E402

HOST, ALTERNATES = "host-0001", ["host-0002", "host-0003", "host-0004"]
SIZE = {"vcpus": 1, "memoryMiB": 1024, "diskGiB": 10}


def instance(name: str) -> dict:
    return {"apiVersion": f"{G}/{V}", "kind": "Instance",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"flavorRef": {"name": "bench"}, "imageRef": {"name": "bench"}}}


def scheduled_status(current: dict) -> dict:
    """The status the operator writes when it schedules ``current``."""
    status = st.scheduled(current, host=HOST, alternates=ALTERNATES, attempts=1, size=SIZE,
                          reason="Scheduled", message=st.scheduled_message(
                              HOST, ALTERNATES, adopted=False))
    assert status is not None
    return {"status": with_kstatus(status, current)}


async def record(kube: Kube, body: dict, way: str) -> None:
    """Both writes of one Instance, guarded by its resourceVersion."""
    path = instance_path("bench", body["metadata"]["name"])
    metadata = {"metadata": {"labels": {"kova.dev/host": HOST},
                             "finalizers": ["kova.dev/operator"]}}
    if way == "merge patch":
        body = await kube.patch_guarded(path, body, lambda cur: metadata)
        await kube.patch_guarded(path + "/status", body, scheduled_status, read_path=path)
    else:
        body = await kube.update_guarded(path, body, lambda cur: metadata)
        await kube.update_guarded(path + "/status", body, scheduled_status, read_path=path)


async def one_round(cp, way: str, tag: str, n: int) -> dict:
    kube = Kube(Credentials.load(str(cp.kubeconfig)), max_connections=20)
    sem = asyncio.Semaphore(16)
    collection = f"/apis/{G}/{V}/namespaces/bench/instances"

    async def create(i: int) -> dict:
        async with sem:
            return await kube.create(collection, instance(f"{tag}-{i:05d}"))

    async def write(body: dict) -> None:
        async with sem:
            await record(kube, body, way)

    try:
        bodies = await asyncio.gather(*(create(i) for i in range(n)))
        await asyncio.sleep(2)  # the creates' watch events and etcd compaction settle
        api, etcd = cp.pids["kube-apiserver"], cp.pids["etcd"]
        a0, e0, t0 = tree_cpu(api), tree_cpu(etcd), time.monotonic()
        await asyncio.gather(*(write(b) for b in bodies))
        wall = time.monotonic() - t0
        await asyncio.sleep(1)  # the watch fan-out of the last writes
        return {"way": way, "instances": n,
                "apiserver_cpu_ms_per_instance": round(1000 * (tree_cpu(api) - a0) / n, 2),
                "etcd_cpu_ms_per_instance": round(1000 * (tree_cpu(etcd) - e0) / n, 2),
                "wall_s": round(wall, 1), "load_average": round(os.getloadavg()[0], 1)}
    finally:
        await kube.close()


def main() -> int:
    from kubernetes import client, config

    from kova.dev.controlplane import ControlPlane
    from kova.dev.crds import apply_crds

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each way, alternating")
    args = ap.parse_args()
    cp = ControlPlane(workdir=Path(tempfile.mkdtemp(prefix="kova-bench-writes-")) / "cp")
    log("starting the control plane")
    cp.start()
    try:
        apply_crds(cp.kubeconfig)
        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name="bench")))
        rounds = []
        for r in range(args.rounds):
            for i, way in enumerate(("merge patch", "PUT")):
                result = asyncio.run(one_round(cp, way, f"r{r}w{i}", args.instances))
                log(json.dumps(result))
                rounds.append(result)
        summary = {way: statistics.median(x["apiserver_cpu_ms_per_instance"]
                                          for x in rounds if x["way"] == way)
                   for way in ("merge patch", "PUT")}
        print(json.dumps({"rounds": rounds,
                          "median_apiserver_cpu_ms_per_instance": summary}, indent=2))
        return 0
    finally:
        cp.destroy()


if __name__ == "__main__":
    sys.exit(main())
