"""Fixtures for the operator's integration tests.

``cluster`` gives a fresh Placement (``kova placement serve`` on SQLite, a
subprocess on a free port) per test, the session's real kube-apiserver with
the Kova CRDs, and helpers to simulate hosts the way an agent registers them
(a resource provider with inventory and traits, a Host object whose
status.resourceProviderUUID names it, and a heartbeat Lease in kova-system)
and to run the operator as a subprocess (``kova operator run --standalone``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kova.crds import names as contract
from tests import helpers
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
KOVA = [sys.executable, "-m", "kova.cli"]
G, V = contract.GROUP, contract.VERSION


def lease_time(offset: float = 0.0) -> str:
    """A Lease MicroTime ``offset`` seconds from now."""
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PlacementServer(helpers.PlacementServer):
    """Placement plus helpers to register simulated hosts."""

    # ---- helpers
    def ok(self, resp: httpx.Response, *codes: int) -> httpx.Response:
        assert resp.status_code in (codes or (200,)), f"{resp.request.method} " \
            f"{resp.request.url}: {resp.status_code} {resp.text}"
        return resp

    def provider(self, name: str, inventory: dict[str, int], traits=()) -> str:
        rp = self.ok(self.http.post("/resource_providers", json={"name": name})).json()["uuid"]
        inv = {rc: {"total": total, "allocation_ratio": 1.0, "reserved": 0}
               for rc, total in inventory.items()}
        self.ok(self.http.put(f"/resource_providers/{rp}/inventories",
                              json={"inventories": inv, "resource_provider_generation": 0}))
        if traits:
            self.set_traits(rp, set(traits))
        return rp

    def set_traits(self, rp: str, traits: set[str]) -> None:
        for t in traits:
            if t.startswith("CUSTOM_"):
                self.ok(self.http.put(f"/traits/{t}"), 201, 204)
        cur = self.ok(self.http.get(f"/resource_providers/{rp}/traits")).json()
        self.ok(self.http.put(f"/resource_providers/{rp}/traits", json={
            "traits": sorted(traits | set(cur["traits"])),
            "resource_provider_generation": cur["resource_provider_generation"]}))

    def traits(self, rp: str) -> set[str]:
        return set(self.ok(self.http.get(f"/resource_providers/{rp}/traits")).json()["traits"])

    def aggregates(self, rp: str) -> set[str]:
        return set(self.ok(self.http.get(
            f"/resource_providers/{rp}/aggregates")).json()["aggregates"])

    def allocations(self, consumer: str) -> dict:
        return self.ok(self.http.get(f"/allocations/{consumer}")).json()["allocations"]

    def usages(self, rp: str) -> dict:
        return self.ok(self.http.get(f"/resource_providers/{rp}/usages")).json()["usages"]

    def all_consumers(self) -> dict[str, str]:
        """consumer -> provider uuid, over every provider."""
        out = {}
        for rp in self.ok(self.http.get("/resource_providers")).json()["resource_providers"]:
            allocs = self.ok(self.http.get(
                f"/resource_providers/{rp['uuid']}/allocations")).json()["allocations"]
            for consumer in allocs:
                assert consumer not in out, f"{consumer} allocated twice"
                out[consumer] = rp["uuid"]
        return out


class Cluster:
    def __init__(self, k8s_client, kubeconfig: Path, namespace: str, placement: PlacementServer,
                 workdir: Path, suffix: str) -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(k8s_client)
        self.core = client.CoreV1Api(k8s_client)
        self.coord = client.CoordinationV1Api(k8s_client)
        self.kubeconfig = kubeconfig
        self.ns = namespace
        self.placement = placement
        self.workdir = workdir
        self.suffix = suffix
        self.hosts: dict[str, str] = {}  # name -> rp uuid
        self.cluster_objects: list[tuple[str, str]] = []
        self.operators: list[subprocess.Popen] = []
        self.flavor = self.name("small")
        self.image = self.name("img")
        self.create_flavor(self.flavor, vcpus=1, memoryMiB=512, diskGiB=1)
        self.create_image(self.image)

    def name(self, base: str) -> str:
        return f"{base}-{self.suffix}"

    # ---- cluster-scoped kinds
    def create_flavor(self, name: str, **spec) -> None:
        self.api.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": contract.API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": spec})
        self.cluster_objects.append(("flavors", name))

    def create_image(self, name: str, **spec) -> None:
        body = {"source": {"hostPath": "/var/lib/kova/images/test.qcow2"},
                "properties": {"architecture": "x86_64"}}
        body.update(spec)
        self.api.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image", "metadata": {"name": name},
            "spec": body})
        self.cluster_objects.append(("images", name))

    def add_host(self, base: str, *, vcpus: int = 8, memory_mib: int = 8192,
                 disk_gib: int = 100, traits=(), zone: str | None = None,
                 enabled: bool = True, alive: bool = True, provider: bool = True) -> str:
        """A simulated host, as its agent would register it."""
        name = self.name(base)
        rp = None
        if provider:
            rp = self.placement.provider(
                name, {"VCPU": vcpus, "MEMORY_MB": memory_mib, "DISK_GB": disk_gib},
                traits=set(traits) | {"HW_ARCH_X86_64"})
        spec: dict = {"enabled": enabled}
        if zone:
            spec["availabilityZone"] = zone
        self.api.create_cluster_custom_object(G, V, "hosts", {
            "apiVersion": contract.API_VERSION, "kind": "Host", "metadata": {"name": name},
            "spec": spec})
        self.cluster_objects.append(("hosts", name))
        if rp:
            self.api.patch_cluster_custom_object_status(G, V, "hosts", name, {"status": {
                "resourceProviderUUID": rp,
                "capacity": {"vcpus": vcpus, "memoryMiB": memory_mib, "diskGiB": disk_gib}}})
        if alive:
            self.heartbeat(name)
        self.hosts[name] = rp
        return name

    def heartbeat(self, host: str, duration: int = 3600, age: float = 0.0) -> None:
        from kubernetes import client

        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": host, "namespace": contract.LEASE_NAMESPACE},
                "spec": {"holderIdentity": host, "leaseDurationSeconds": duration,
                         "renewTime": lease_time(-age)}}
        try:
            self.coord.create_namespaced_lease(contract.LEASE_NAMESPACE, body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            self.coord.patch_namespaced_lease(host, contract.LEASE_NAMESPACE,
                                              {"spec": body["spec"]})

    def patch_host(self, name: str, spec: dict) -> None:
        self.api.patch_cluster_custom_object(G, V, "hosts", name, {"spec": spec})

    def get_host(self, name: str) -> dict:
        return self.api.get_cluster_custom_object(G, V, "hosts", name)

    # ---- instances
    def create_instance(self, name: str, **spec) -> dict:
        body = {"imageRef": {"name": self.image}}
        if "resources" not in spec:
            body["flavorRef"] = {"name": self.flavor}
        body.update(spec)
        return self.api.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance", "metadata": {"name": name},
            "spec": body})

    def create_server_group(self, name: str, policy: str, **extra) -> None:
        self.api.create_namespaced_custom_object(G, V, self.ns, "servergroups", {
            "apiVersion": contract.API_VERSION, "kind": "ServerGroup",
            "metadata": {"name": name}, "spec": {"policy": policy, **extra}})

    def get(self, name: str) -> dict | None:
        from kubernetes import client

        try:
            return self.api.get_namespaced_custom_object(G, V, self.ns, "instances", name)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def instances(self) -> list[dict]:
        return self.api.list_namespaced_custom_object(G, V, self.ns, "instances")["items"]

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(G, V, self.ns, "instances", name)

    def patch_status(self, name: str, status: dict) -> None:
        self.api.patch_namespaced_custom_object_status(G, V, self.ns, "instances", name,
                                                       {"status": status})

    def report_build_failure(self, name: str, message: str = "domain failed to start") -> None:
        """What the agent does: Built=False/BuildFailed on the Instance."""
        inst = self.get(name)
        conds = [c for c in (inst.get("status") or {}).get("conditions") or []
                 if c["type"] != contract.COND_BUILT]
        conds.append({"type": contract.COND_BUILT, "status": "False",
                      "reason": contract.REASON_BUILD_FAILED, "message": message,
                      "lastTransitionTime": lease_time()[:19] + "Z"})
        self.api.patch_namespaced_custom_object_status(G, V, self.ns, "instances", name, {
            "metadata": {"resourceVersion": inst["metadata"]["resourceVersion"]},
            "status": {"conditions": conds}})

    def wait(self, name: str, pred, timeout: float = 30.0, what: str = "") -> dict:
        def check():
            inst = self.get(name)
            return inst if inst is not None and pred(inst) else None
        try:
            return wait_for(check, timeout, what=what or f"instance {name}")
        except AssertionError:
            raise AssertionError(f"{what or name}: {self.get(name)}\n--- operator log ---\n"
                                 + self.operator_log()[-6000:]) from None

    def wait_scheduled(self, name: str, timeout: float = 30.0) -> dict:
        return self.wait(name, lambda i: (i.get("status") or {}).get("phase") == "Scheduled"
                         and (i["metadata"].get("labels") or {}).get(contract.LABEL_HOST),
                         timeout, f"{name} Scheduled")

    def wait_reason(self, name: str, reason: str, timeout: float = 30.0) -> dict:
        return self.wait(name, lambda i: scheduled_reason(i) == reason, timeout,
                         f"{name} reason {reason}")

    # ---- the operator
    def start_operator(self, *extra: str, peering: bool = False,
                       log_name: str = "operator.log") -> subprocess.Popen:
        log = open(self.workdir / log_name, "a")
        proc = subprocess.Popen(
            KOVA + ["operator", "run", "--kubeconfig", str(self.kubeconfig),
                    "--placement-url", self.placement.url, "--namespace", self.ns,
                    "--peering" if peering else "--standalone", "--metrics-port", "0",
                    "--host-check-interval", "0.3",
                    "--backoff-max", "3", "--audit-interval", "0", "--log-format", "text",
                    *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.operators.append(proc)
        return proc

    def stop_operator(self, proc: subprocess.Popen, kill: bool = False) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def operator_log(self, log_name: str = "operator.log") -> str:
        path = self.workdir / log_name
        return path.read_text() if path.exists() else ""

    def cleanup(self) -> None:
        from kubernetes import client

        for proc in self.operators:
            self.stop_operator(proc, kill=True)
        # Let the namespace go: drop our finalizers from what is left.
        for inst in self.instances():
            if inst["metadata"].get("finalizers"):
                try:
                    self.api.patch_namespaced_custom_object(
                        G, V, self.ns, "instances", inst["metadata"]["name"],
                        {"metadata": {"finalizers": None}})
                except client.ApiException:
                    pass
        for plural, name in self.cluster_objects:
            try:
                self.api.delete_cluster_custom_object(G, V, plural, name)
            except client.ApiException:
                pass
        for host in self.hosts:
            try:
                self.coord.delete_namespaced_lease(host, contract.LEASE_NAMESPACE)
            except client.ApiException:
                pass


def scheduled_reason(inst: dict) -> str | None:
    for c in (inst.get("status") or {}).get("conditions") or []:
        if c["type"] == contract.COND_SCHEDULED:
            return c["reason"]
    return None


def condition(inst: dict, type_: str) -> dict | None:
    for c in (inst.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


@pytest.fixture
def placement_server(tmp_path):
    server = PlacementServer(tmp_path)
    yield server
    server.stop()


@contextlib.contextmanager
def cluster_on(k8s_client, kubeconfig: Path, namespace: str, placement: PlacementServer,
               workdir: Path) -> Iterator[Cluster]:
    """A ``Cluster`` on the given Placement in ``namespace``: creates the Lease
    namespace (kova-system) if it is missing, and cleans up on exit.  The
    ``cluster`` fixture and the scheduling fault tests
    (tests/reliability/scheduling.py, on a Placement they restart) use it."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    try:
        core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=contract.LEASE_NAMESPACE)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    c = Cluster(k8s_client, kubeconfig, namespace, placement, workdir, uuid.uuid4().hex[:6])
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture
def cluster(k8s_client, kubeconfig, kova_crds, namespace, placement_server, tmp_path):
    with cluster_on(k8s_client, kubeconfig, namespace, placement_server, tmp_path) as c:
        yield c
