"""End to end through the real components, as ``make demo`` runs them.

Placement on SQLite, the operator and two compute agents on two host names
(each with its own libvirtd, as on two nodes) against the session's real
kube-apiserver; three Instances boot the test image under QEMU, two of them in
an anti-affinity ServerGroup.  All reach Running on the right hosts, print
their user-data, and once deleted leave no allocation, domain or disk behind.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from kova.dev.stack import Stack, link_test_image
from tests.helpers import BOOT_TIMEOUT, flavor_image_manifests, instance_manifest, wait_for


def _domains(uri: str) -> list[str]:
    import libvirt

    conn = libvirt.open(uri)
    try:
        return [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()


@pytest.fixture
def stack(k8s, kova_crds, libvirtd, test_image, namespace, tmp_path: Path):
    link_test_image(test_image)
    suffix = uuid.uuid4().hex[:5]
    hosts = [f"e2e-a-{suffix}", f"e2e-b-{suffix}"]
    st = Stack(root=tmp_path / "stack")
    try:
        st.start(k8s, hosts, progress=lambda m: None, namespaces=[namespace])
        yield st
    finally:
        st.stop()
        for line in (st.log_dir).glob("*.log"):
            print(f"--- {line.name}\n" + "\n".join(line.read_text().splitlines()[-15:]))


def test_three_instances_two_hosts_anti_affinity_then_clean_delete(
    stack: Stack, kubectl, namespace: str
) -> None:
    hosts = stack.hosts
    stack.wait_hosts_up()  # both hosts registered and Up before anything is scheduled

    tag = namespace[-6:]
    flavor, image = f"e2e-small-{tag}", f"e2e-image-{tag}"
    manifests = flavor_image_manifests(flavor, image) + """---
apiVersion: kova.dev/v1alpha1
kind: ServerGroup
metadata: {name: spread}
spec: {policy: anti-affinity}
""" + "".join(instance_manifest(name, flavor, image, f"E2E-USERDATA {name}",
                                **({"serverGroupRef": {"name": "spread"}} if grouped else {}))
              for name, grouped in (("vm-a", True), ("vm-b", True), ("vm-c", False)))
    kubectl("-n", namespace, "apply", "-f", "-", input=manifests)

    def all_running():
        items = json.loads(kubectl("-n", namespace, "get", "instances", "-o", "json").stdout)
        phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase")
                  for i in items["items"]}
        return (len(phases) == 3 and all(p == "Running" for p in phases.values())
                and items["items"])
    items = wait_for(all_running, 240, 1.0, "three Instances Running")
    by_name = {i["metadata"]["name"]: i for i in items}
    placed = {n: i["status"]["host"] for n, i in by_name.items()}
    assert set(placed.values()) <= set(hosts)
    assert placed["vm-a"] != placed["vm-b"], placed  # anti-affinity held
    for name, inst in by_name.items():
        assert inst["metadata"]["labels"]["kova.dev/host"] == placed[name]
        log = Path(inst["status"]["console"]["logPath"])
        wait_for(lambda: log.exists() and f"E2E-USERDATA {name}" in log.read_text(errors="replace"),
                 BOOT_TIMEOUT, 0.5, f"user-data of {name} on its console")

    # Placement holds exactly one allocation per Instance, on its host
    headers = {"X-Auth-Token": stack.placement_token,
               "OpenStack-API-Version": "placement 1.39"}
    uids = {n: i["metadata"]["uid"] for n, i in by_name.items()}
    with httpx.Client(base_url=stack.placement_url, headers=headers) as pc:
        rps = {rp["name"]: rp["uuid"] for rp in pc.get("/resource_providers").json()["resource_providers"]}
        for name, uid in uids.items():
            allocs = pc.get(f"/allocations/{uid}").json()["allocations"]
            assert list(allocs) == [rps[placed[name]]], (name, allocs)
            assert allocs[rps[placed[name]]]["resources"] == {"VCPU": 1, "MEMORY_MB": 192, "DISK_GB": 1}

        uris = stack.libvirt_uris
        assert sum(len(_domains(u)) for u in uris.values()) == 3

        kubectl("-n", namespace, "delete", "instances", "--all", "--wait=true", "--timeout=180s",
                timeout=200)
        # nothing left: allocations, usages, domains, instance directories
        for uid in uids.values():
            assert pc.get(f"/allocations/{uid}").json()["allocations"] == {}
        for h in hosts:
            usages = pc.get(f"/resource_providers/{rps[h]}/usages").json()["usages"]
            assert all(v == 0 for v in usages.values()), usages
    for h, uri in uris.items():
        assert _domains(uri) == [], h
        inst_dir = stack.root / "instances" / h
        # _base: the image cache; .user-data-key: the agent's own key pair
        leftovers = [p.name for p in inst_dir.iterdir()
                     if p.name not in ("_base", ".user-data-key")]
        assert leftovers == [], (h, leftovers)
