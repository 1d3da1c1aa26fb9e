"""The Argo CD health checks of docs/gitops.md, run as Argo CD runs them (a
Lua script per kind with the object as ``obj``; here the ``lupa`` runtime)
against real objects: the operator, the agent (libvirt's test driver) and
Placement at work on the real API server. Also the kstatus conditions that
Flux and ``kubectl wait`` read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from kova.crds import names as contract
from tests.fixtures.agents import operator_process, wait_for

DOC = Path(__file__).resolve().parents[3] / "docs" / "gitops.md"
KINDS = ("Instance", "Host", "Image", "TenantImage", "Flavor", "ServerGroup")


def health_checks() -> dict[str, str]:
    """Kind -> Lua source, from the argocd-cm block of docs/gitops.md."""
    text = DOC.read_text()
    block = re.search(r"<!-- argocd-health: begin -->\n```yaml\n(.*?)```\n"
                      r"<!-- argocd-health: end -->", text, re.S)
    assert block, "docs/gitops.md lost its argocd-cm block"
    data = yaml.safe_load(block.group(1))["data"]
    prefix = "resource.customizations.health.kova.dev_"
    return {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}


def assess(kind: str, obj: dict) -> tuple[str, str]:
    """(status, message) of Argo CD's health check of ``kind`` for ``obj``."""
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    hs = lua.execute(health_checks()[kind])
    assert hs["status"] in ("Healthy", "Progressing", "Degraded", "Suspended"), hs["status"]
    return hs["status"], hs["message"]


def test_every_kind_has_a_check() -> None:
    assert set(health_checks()) == set(KINDS)


def test_a_snapshots_tenant_image_is_progressing_while_saved() -> None:
    """A snapshot's TenantImage exists from the request on: Progressing while
    its file is saved (Available=False, reason Saving), Degraded once its
    snapshot failed (reason SnapshotFailed)."""
    def timg(reason: str) -> dict:
        return {"kind": "TenantImage", "spec": {"saving": True}, "status": {"conditions": [
            {"type": "Available", "status": "False", "reason": reason, "message": reason}]}}

    assert assess("TenantImage", timg(contract.IMAGE_REASON_SAVING)) == ("Progressing",
                                                                         "Saving")
    assert assess("TenantImage", timg(contract.IMAGE_REASON_SNAPSHOT_FAILED))[0] == "Degraded"


def _cond(obj: dict, type_: str) -> dict:
    (c,) = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return c


def _create(harness, name: str, spec: dict) -> None:
    harness.custom.create_namespaced_custom_object(
        contract.GROUP, contract.VERSION, harness.ns, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance",
            "metadata": {"name": name, "namespace": harness.ns}, "spec": spec})


def test_health_and_kstatus_of_real_objects(harness, placement, small_image, tmp_path) -> None:
    G, V = contract.GROUP, contract.VERSION
    with operator_process(harness, placement, tmp_path, "--backoff-max", "2"):
        agent = harness.agent(placement_url=placement.url, lease_duration_seconds=3)
        host = wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
            "state") == "Up" and h, 60, 0.2, "Host Up")
        assert assess("Host", host)[0] == "Healthy"
        image = f"img-{harness.host}"
        harness.image(image, small_image)
        big = f"big-{harness.host}"
        harness.custom.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image", "metadata": {"name": big},
            "spec": {"source": {"hostPath": str(small_image)}, "minDiskGiB": 50}})
        harness.images.append(big)
        size = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
        _create(harness, "web", {"resources": size, "imageRef": {"name": image}})
        assert assess("Instance", harness.get("web"))[0] == "Progressing"  # just created
        _create(harness, "toobig", {"resources": size, "imageRef": {"name": big}})
        _create(harness, "waits", {"flavorRef": {"name": f"nope-{harness.host}"},
                                   "imageRef": {"name": image}})

        web = harness.wait_phase("web", "Running", timeout=60)
        status, message = assess("Instance", web)
        assert (status, message) == ("Healthy", f"running on {harness.host}")
        assert _cond(web, "Reconciling")["status"] == "False"
        assert _cond(web, "Stalled")["status"] == "False"

        err = harness.wait_phase("toobig", "Error", timeout=60)
        assert assess("Instance", err) == ("Degraded", _cond(err, "Stalled")["message"])
        stalled = _cond(err, "Stalled")
        assert stalled["status"] == "True" and stalled["reason"] == "FlavorDiskTooSmall"
        assert "minDiskGiB" in stalled["message"]

        waiting = harness.wait_phase("waits", "Pending", timeout=60)
        assert assess("Instance", waiting) == ("Progressing", "phase Pending")
        rec = _cond(waiting, "Reconciling")
        assert rec["status"] == "True" and _cond(waiting, "Stalled")["status"] == "False"

        harness.patch("web", {"spec": {"runStrategy": "Halted"}})
        stopped = harness.wait_phase("web", "Stopped", timeout=30)
        assert assess("Instance", stopped) == ("Suspended", "phase Stopped")

        for kind, plural, name in (("Image", "images", image), ("Flavor", None, None)):
            if plural:
                obj = harness.custom.get_cluster_custom_object(G, V, plural, name)
                assert assess(kind, obj)[0] == "Healthy"
        assert assess("Flavor", {"spec": {"disabled": True}}) == (
            "Healthy", "disabled: new Instances of it are not scheduled")
        harness.custom.create_namespaced_custom_object(G, V, harness.ns, "servergroups", {
            "apiVersion": contract.API_VERSION, "kind": "ServerGroup",
            "metadata": {"name": "grp"}, "spec": {"policy": "anti-affinity"}})
        sg = harness.custom.get_namespaced_custom_object(G, V, harness.ns, "servergroups", "grp")
        assert assess("ServerGroup", sg)[0] == "Healthy"

        # the agent goes away: its Host is Down, its Instance Unknown
        harness.patch("web", {"spec": {"runStrategy": "Always"}})
        harness.wait_phase("web", "Running", timeout=30)
        agent.stop()
        harness.agents.remove(agent)
        down = wait_for(lambda: (h := harness.host_obj())["status"].get("state") == "Down" and h,
                        60, 0.2, "Host Down")
        assert assess("Host", down) == ("Degraded", "Down: its agent's heartbeat expired")
        lost = harness.wait_phase("web", "Unknown", timeout=60)
        assert assess("Instance", lost)[0] == "Degraded"
        assert _cond(lost, "Reconciling")["reason"] == "HostDown"
