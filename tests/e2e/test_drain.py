"""Draining a host with real guests: ``kubectl kova drain`` (Host
``spec.drain``, carried out by the operator) on the two-host test bed (each
host's libvirtd in its own network namespace; see
tests/e2e/test_live_migration_operator.py).

Host A runs three guests of Kova's test image: ``vm1``, ``vm2`` and
``member``, a member of the anti-affinity ServerGroup ``pair`` whose other
member ``peer`` is placed on host B (kept stopped: only its placement
matters).  The drain live-migrates ``vm1`` and ``vm2`` to B -- Running
throughout, the same boot (no boot on B's console log) -- and leaves
``member`` on A with reason ServerGroupPolicy: B already holds its peer, so
moving it there would break the policy.  The command ends with status 1
naming it; the Host says Stuck; ``uncordon`` ends the drain.
"""

from __future__ import annotations

import json

import pytest

from kova.crds import names
from kova.dev.twohost import TwoHosts
from tests.e2e.test_live_migration_operator import domains
from tests.e2e.test_moves import placement_books
from tests.fixtures.vm import plugin
from tests.helpers import BOOT_TIMEOUT, flavor_image_manifests, wait_for
from tests.support.stacks import bed_stack, kova_editor, temp_namespace

SIZE = {"VCPU": 1, "MEMORY_MB": 192, "DISK_GB": 1}
BOOTED = "KOVA-SHELL: ttyS0"


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "drain-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, two_hosts: TwoHosts, test_image, ns,
          tmp_path_factory):
    with bed_stack(k8s, kova_api, two_hosts, ns, tmp_path_factory.mktemp("drain-stack"),
                   "dr") as started:
        yield started


def _get(kubectl, ns: str, name: str) -> dict:
    return json.loads(kubectl("-n", ns, "get", "instance", name, "-o", "json").stdout)


def _host(kubectl, name: str) -> dict:
    return json.loads(kubectl("get", "host", name, "-o", "json").stdout)


def _enabled(kubectl, host: str, on: bool) -> None:
    kubectl("patch", "host", host, "--type=merge", "-p",
            json.dumps({"spec": {"enabled": on}}))


def _create(kubectl, ns: str, name: str, flavor: str, image: str, *, group: bool = False,
            halted: bool = False) -> None:
    spec: dict = {"flavorRef": {"name": flavor}, "imageRef": {"name": image}}
    if group:
        spec["serverGroupRef"] = {"name": "pair"}
    if halted:
        spec["runStrategy"] = "Halted"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": names.API_VERSION, "kind": "Instance",
        "metadata": {"name": name, "namespace": ns}, "spec": spec}))


def _placed_on(kubectl, ns: str, names_: list[str], host: str) -> None:
    for n in names_:
        got = wait_for(lambda n=n: _get(kubectl, ns, n).get("status", {}).get("host"), 60, 0.5,
                       f"{n} placed")
        assert got == host, (n, got, host)


@pytest.fixture(scope="module")
def guests(stack, k8s, kubectl, ns, test_image):
    """peer (stopped) on B; member, vm1, vm2 booted on A.  Placement is
    steered by disabling the other host while each is created."""
    a, b = stack.hosts
    tag = ns[-5:]
    flavor, image = f"dr-{tag}", f"dr-img-{tag}"
    kubectl("apply", "-f", "-", input=flavor_image_manifests(flavor, image, test_image) + f"""---
apiVersion: kova.dev/v1alpha1
kind: ServerGroup
metadata: {{name: pair, namespace: {ns}}}
spec: {{policy: anti-affinity}}
""")
    user = kova_editor(k8s, ns, "drainer", stack.root)
    try:
        _enabled(kubectl, a, False)
        _create(kubectl, ns, "peer", flavor, image, group=True, halted=True)
        _placed_on(kubectl, ns, ["peer"], b)
        _enabled(kubectl, a, True)
        _enabled(kubectl, b, False)
        for n in ("member", "vm1", "vm2"):
            _create(kubectl, ns, n, flavor, image, group=n == "member")
        _placed_on(kubectl, ns, ["member", "vm1", "vm2"], a)
        _enabled(kubectl, b, True)
        for n in ("member", "vm1", "vm2"):
            wait_for(lambda n=n: BOOTED in plugin(user, "logs", n).stdout, BOOT_TIMEOUT, 1.0,
                     f"{n} booted")
        yield user
    finally:
        kubectl("-n", ns, "delete", "instance", "--all", "--wait=true", "--timeout=120s",
                check=False)
        kubectl("delete", "image", image, check=False)
        kubectl("delete", "flavor", flavor, check=False)


def test_drain_moves_live_and_keeps_the_anti_affinity_pair_apart(stack, guests, kubectl,
                                                                 ns) -> None:
    a, b = stack.hosts
    uid = {n: _get(kubectl, ns, n)["metadata"]["uid"] for n in ("peer", "member", "vm1", "vm2")}
    admin = stack.kubeconfig  # Hosts are cluster-scoped: the administrator drains
    try:
        out = plugin(admin, "drain", a, "--timeout", "240", timeout=300)
        print(out.stderr + out.stdout)  # the progress as the administrator saw it
        assert out.returncode == 1, (out.stdout, out.stderr)
        assert "member (ServerGroupPolicy)" in out.stderr, out.stderr
        host = _host(kubectl, a)
        drain = host["status"]["drain"]
        assert drain["phase"] == "Stuck" and drain["moved"] == 2, drain
        assert [(e["namespace"], e["name"], e["reason"]) for e in drain["left"]] == [
            (ns, "member", names.DRAIN_LEFT_SERVER_GROUP)], drain
        assert "anti-affinity" in drain["left"][0]["message"], drain
        cond = next(c for c in host["status"]["conditions"]
                    if c["type"] == names.HOST_COND_DRAINED)
        assert (cond["status"], cond["reason"]) == ("False", names.HOST_REASON_DRAIN_STUCK)

        for n in ("vm1", "vm2"):
            st = _get(kubectl, ns, n)["status"]
            assert st["host"] == b and st["phase"] == "Running" and "migration" not in st, st
            resized = next(c for c in st["conditions"] if c["type"] == names.COND_RESIZED)
            assert resized["reason"] == names.REASON_LIVE_MIGRATED, resized
            # live: B's console log starts with the move, the guest did not boot there
            assert BOOTED not in plugin(guests, "logs", n).stdout
        member = _get(kubectl, ns, "member")["status"]
        assert member["host"] == a and member["phase"] == "Running", member
        assert _get(kubectl, ns, "peer")["status"]["host"] == b
        assert domains(stack, a) == {uid["member"]: True}, domains(stack, a)
        on_b = domains(stack, b)
        assert on_b.get(uid["vm1"]) and on_b.get(uid["vm2"]), on_b
        books = placement_books(stack)
        assert books == {uid["member"]: {a: SIZE}, uid["peer"]: {b: SIZE},
                         uid["vm1"]: {b: SIZE}, uid["vm2"]: {b: SIZE}}, books
    finally:
        plugin(admin, "uncordon", a)
    wait_for(lambda: "drain" not in _host(kubectl, a).get("status", {}), 30, 0.5,
             "status.drain removed by uncordon")
