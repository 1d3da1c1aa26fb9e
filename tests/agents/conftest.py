"""Helpers for the compute agent tests."""

from __future__ import annotations

import uuid

import pytest

from kova.agents.virt.domain import DomainMetadata, DomainSpec


@pytest.fixture
def make_spec(tmp_path):
    """A DomainSpec factory with unique uid/name per call."""

    def make(**kw) -> DomainSpec:
        uid = kw.pop("uid", str(uuid.uuid4()))
        name = kw.pop("name", f"vm-{uid[:8]}")
        namespace = kw.pop("namespace", "ns")
        meta = kw.pop("meta", None) or DomainMetadata(
            uid=uid, namespace=namespace, name=name, host="h1", image="img", generation=1
        )
        defaults = dict(
            vcpus=1,
            memory_mib=128,
            disk_path=str(tmp_path / meta.uid / "disk.qcow2"),
            console_log=str(tmp_path / meta.uid / "console.log"),
            seed_path=str(tmp_path / meta.uid / "seed.iso"),
        )
        defaults.update(kw)
        return DomainSpec(meta=meta, **defaults)

    return make


@pytest.fixture
def libvirt_conn(request):
    """A test:///default connection: the shared fixture when it exists."""
    try:
        yield request.getfixturevalue("libvirt_test_conn")
        return
    except pytest.FixtureLookupError:
        pass
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


def domain_by_uuid(conn, uid: str):
    """The libvirt domain of an Instance's uid on ``conn``, or None."""
    import libvirt

    try:
        return conn.lookupByUUIDString(uid)
    except libvirt.libvirtError:
        return None


def remove_domain(conn, name: str) -> None:
    """Destroy and undefine the domain ``name`` if it is there: what a boot
    test's ``finally`` does so that no guest outlives it, whatever failed."""
    import libvirt

    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    except libvirt.libvirtError:
        pass


# --------------------------------------------------------------------------
# Agent harness: a real kube-apiserver (CRDs installed), an in-process agent.

import contextlib  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from kova.crds import names as contract  # noqa: E402
from tests.helpers import PlacementServer, free_port, stop_process, wait_for  # noqa: E402,F401

G, V = contract.GROUP, contract.VERSION
MERGE = "application/merge-patch+json"


class Harness:
    """Creates Images and Instances as a user and the operator would."""

    def __init__(self, k8s_client, kubeconfig, namespace, tmp_path, host):
        from kubernetes import client

        self.api = k8s_client
        self.kubeconfig = kubeconfig
        self.ns = namespace
        self.tmp = tmp_path
        self.host = host
        self.custom = client.CustomObjectsApi(k8s_client)
        self.core = client.CoreV1Api(k8s_client)
        self.coord = client.CoordinationV1Api(k8s_client)
        self.images: list[str] = []
        self.flavors: list[str] = []
        self.agents: list = []

    # ---- objects
    def image(self, name: str, path: Path | None = None, sha256: str | None = "auto",
              url: str | None = None, properties: dict | None = None) -> dict:
        source = {"url": url} if url else {"hostPath": str(path)}
        spec: dict = {"source": source, "format": "qcow2"}
        if properties:
            spec["properties"] = properties
        if sha256 == "auto" and path is not None and path.exists():
            sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        if sha256 and sha256 != "auto":
            spec["sha256"] = sha256
        body = {"apiVersion": contract.API_VERSION, "kind": "Image",
                "metadata": {"name": name}, "spec": spec}
        self.images.append(name)
        return self.custom.create_cluster_custom_object(G, V, "images", body)

    def instance(self, name: str, image: str, *, run_strategy: str = "Always",
                 user_data: str | None = None, secret: tuple[str, str] | None = None,
                 schedule: bool = True, annotations: dict | None = None,
                 resources: dict | None = None, hostname: str | None = None,
                 flavor: str | None = None) -> dict:
        """An Instance of ``image``, sized by ``flavor`` or ``resources``;
        ``schedule``: placed on the harness's host as the operator would
        (False: left to the operator)."""
        spec: dict = {
            "resources": resources or {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1},
            "imageRef": {"name": image},
            "runStrategy": run_strategy,
        }
        if flavor:
            spec["flavorRef"] = {"name": flavor}
            del spec["resources"]
        if user_data is not None:
            spec["userData"] = {"inline": user_data}
        if secret is not None:
            spec["userData"] = {"secretRef": {"name": secret[0], "key": secret[1]}}
        if hostname:
            spec["hostname"] = hostname
        md: dict = {"name": name, "namespace": self.ns}
        if annotations:
            md["annotations"] = annotations
        body = {"apiVersion": contract.API_VERSION, "kind": "Instance", "metadata": md,
                "spec": spec}
        obj = self.custom.create_namespaced_custom_object(G, V, self.ns, "instances", body)
        if schedule:
            self.schedule(name)
        return obj

    def schedule(self, name: str, host: str | None = None) -> None:
        """What the operator does: status.host, then the label."""
        host = host or self.host
        self.custom.patch_namespaced_custom_object_status(
            G, V, self.ns, "instances", name,
            {"status": {"host": host, "phase": "Scheduled"}}, _content_type=MERGE)
        self.custom.patch_namespaced_custom_object(
            G, V, self.ns, "instances", name,
            {"metadata": {"labels": {contract.LABEL_HOST: host}}}, _content_type=MERGE)

    def get(self, name: str) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self.custom.get_namespaced_custom_object(G, V, self.ns, "instances", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def host_obj(self) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self.custom.get_cluster_custom_object(G, V, "hosts", self.host)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, name: str, body: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(
            G, V, self.ns, "instances", name, body, _content_type=MERGE)

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(G, V, self.ns, "instances", name)

    def cond(self, name: str, ctype: str) -> dict | None:
        obj = self.get(name) or {}
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return c
        return None

    def wait_phase(self, name: str, phase: str, timeout: float = 20.0) -> dict:
        return wait_for(
            lambda: (o := self.get(name)) and (o.get("status") or {}).get("phase") == phase and o,
            timeout, what=f"{name} phase {phase}")

    def wait_cond(self, name: str, ctype: str, status: str, timeout: float = 20.0) -> dict:
        return wait_for(
            lambda: (c := self.cond(name, ctype)) and c["status"] == status and c,
            timeout, what=f"{name} condition {ctype}={status}")

    def flavor(self, name: str, **spec) -> None:
        """A Flavor (removed by :meth:`cleanup`)."""
        self.custom.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": contract.API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": spec})
        self.flavors.append(name)

    # ---- agents
    def agent(self, instance_dir: Path | None = None, **kw):
        from kova.agents.app import Agent
        from kova.agents.settings import AgentSettings

        owner = kw.pop("lease_owner", None)
        cfg = AgentSettings(
            host=self.host, libvirt_uri=kw.pop("libvirt_uri", "test:///default"),
            instance_dir=instance_dir or (self.tmp / "instances"),
            kubeconfig=kw.pop("kubeconfig", str(self.kubeconfig)),
            metrics_port=kw.pop("metrics_port", None),
            resync_seconds=kw.pop("resync_seconds", 2.0), lease_renew_seconds=1.0,
            shutdown_timeout=kw.pop("shutdown_timeout", 10.0), **kw)
        agent = Agent(cfg, lease_owner=owner)
        agent.start()
        assert agent.wait_synced(20)
        self.agents.append(agent)
        return agent

    def cleanup(self) -> None:
        from kubernetes.client import ApiException

        for a in self.agents:
            a.stop()
        for plural, names in (("images", self.images), ("flavors", self.flavors)):
            for name in names:
                try:
                    self.custom.delete_cluster_custom_object(G, V, plural, name)
                except ApiException:
                    pass
        try:
            self.custom.delete_cluster_custom_object(G, V, "hosts", self.host)
        except ApiException:
            pass
        try:
            self.coord.delete_namespaced_lease(self.host, contract.LEASE_NAMESPACE)
        except ApiException:
            pass


@pytest.fixture
def small_image(tmp_path) -> Path:
    path = tmp_path / "images" / "small.qcow2"
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.fixture
def harness(k8s_client, kubeconfig, kova_crds, namespace, tmp_path):
    import uuid

    h = Harness(k8s_client, kubeconfig, namespace, tmp_path, f"host-{uuid.uuid4().hex[:6]}")
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def placement(tmp_path_factory):
    server = PlacementServer(tmp_path_factory.mktemp("placement"))
    yield server
    server.stop()


@contextlib.contextmanager
def operator_process(harness: Harness, placement: PlacementServer, workdir: Path, *args: str,
                     metrics: bool = False, tail: int = 3000):
    """``kova operator run --standalone`` as a process for the harness's
    namespace and ``placement``, as the agent tests run it: hosts checked
    every 0.5 s, no periodic audit, no image traits; ``args`` are further
    flags (--backoff-max, ...).  Output goes to ``workdir/operator.log``
    (``proc.log_path``); with ``metrics`` it serves Prometheus metrics on a
    free port (``proc.metrics_url``), else none.  On exit it is stopped
    (SIGTERM, SIGKILL after 15 s) and the log's last ``tail`` characters are
    printed."""
    port = free_port() if metrics else 0
    log_path = workdir / "operator.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "operator", "run", "--kubeconfig",
             str(harness.kubeconfig), "--placement-url", placement.url,
             "--namespace", harness.ns, "--standalone", "--metrics-port", str(port),
             "--host-check-interval", "0.5", "--audit-interval", "0", "--no-image-traits",
             *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log_path = log_path
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics" if metrics else None
    try:
        yield proc
    finally:
        stop_process(proc)
        print(log_path.read_text()[-tail:])


# --------------------------------------------------------------------------
# HTTPS image sources: test CAs and HTTPS file servers (tests.helpers.TLSFileServer).


@pytest.fixture(scope="session")
def image_pki(tmp_path_factory) -> dict:
    """Two test CAs and their serving certificates for 127.0.0.1/localhost:
    ``trusted`` (its CA is given to the agent as --image-ca-file) and
    ``other`` (a CA nobody trusts); ``wrong_name`` is signed by the trusted CA
    for another host name only."""
    from kova.dev.pki import issue_server_cert

    base = tmp_path_factory.mktemp("image-pki")
    trusted = issue_server_cert(base / "trusted", "images", ["127.0.0.1", "localhost"],
                                ca_common_name="kova-test-image-ca")
    other = issue_server_cert(base / "other", "images", ["127.0.0.1", "localhost"],
                              ca_common_name="kova-test-other-ca")
    wrong = issue_server_cert(base / "trusted", "elsewhere", ["images.example"],
                              ca_common_name="kova-test-image-ca")
    return {"ca": trusted["ca_crt"], "trusted": trusted, "other": other,
            "other_ca": other["ca_crt"], "wrong_name": wrong}


class HTTPSImages:
    """The test image and a corrupted copy under one directory, served over
    HTTPS by a server the agent can trust (``good``) and one it cannot
    (``untrusted``)."""

    NAME = "kova-test.qcow2"
    CORRUPT = "kova-test-corrupt.qcow2"

    def __init__(self, root: Path, sha256: str, ca: Path, other_ca: Path, good,
                 untrusted) -> None:
        self.root, self.sha256, self.ca, self.other_ca = root, sha256, ca, other_ca
        self.good, self.untrusted = good, untrusted

    def url(self, name: str | None = None, server=None) -> str:
        return f"{(server or self.good).url}/{name or self.NAME}"


@pytest.fixture(scope="session")
def https_image_root(test_image, tmp_path_factory) -> tuple[Path, str]:
    """A directory with the cached test image (a symlink) and a copy of it
    with one byte flipped in the middle; and the test image's sha256."""
    root = tmp_path_factory.mktemp("https-images")
    data = bytearray(Path(test_image).read_bytes())
    (root / HTTPSImages.NAME).symlink_to(Path(test_image).resolve())
    data[len(data) // 2] ^= 0xFF
    (root / HTTPSImages.CORRUPT).write_bytes(bytes(data))
    return root, hashlib.sha256(Path(test_image).read_bytes()).hexdigest()


@pytest.fixture
def https_images(https_image_root, image_pki):
    from tests.helpers import TLSFileServer

    root, sha = https_image_root
    good = TLSFileServer(root, image_pki["trusted"]["crt"], image_pki["trusted"]["key"])
    untrusted = TLSFileServer(root, image_pki["other"]["crt"], image_pki["other"]["key"])
    try:
        yield HTTPSImages(root, sha, image_pki["ca"], image_pki["other_ca"], good, untrusted)
    finally:
        good.stop()
        untrusted.stop()
