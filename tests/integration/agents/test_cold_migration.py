"""Cold migration between two hosts through its public interface:
``kubectl kova migrate`` (instances/migrate through the API server's
aggregation layer and Kova's API component), the real operator and
Placement, and two compute agents, each with its own private libvirtd
running QEMU (two simulated hosts on one machine; the guest boots a blank
disk and waits in its firmware, which is all a cold migration needs), their
disks sent agent to agent over the stream endpoints' mutual TLS.

After each step: which libvirtd runs the domain, the disks on each host (the
destination's a standalone qcow2 with the source's content), Placement's
allocations (the migration consumer holding the source's while the move
waits), status.host and the host label, the action history.  Refusals: a
--host from a user who may not schedule (a namespace editor), a host that is not registered, a
destination without room (NoValidHost)."""

from __future__ import annotations

import json
import subprocess
import uuid

import libvirt
import pytest

from kova.crds import names
from tests.fixtures.agents import Harness, operator_process, wait_for
from tests.fixtures.vm import plugin
from tests.integration.agents.test_host_conditions import PrivateLibvirtd

SMALL = {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1}
MARK = "0x5a"


@pytest.fixture
def hosts(harness, k8s_client, kubeconfig, namespace, tmp_path):
    """Two simulated hosts: the harness's (a) and a second one (b), each
    with its own libvirtd; the second harness is cleaned up here."""
    b = Harness(k8s_client, kubeconfig, namespace, tmp_path / "b",
                f"host-{uuid.uuid4().hex[:6]}")
    (tmp_path / "b").mkdir()
    lv = [PrivateLibvirtd(tmp_path / "libvirt", "a"), PrivateLibvirtd(tmp_path / "libvirt", "b")]
    try:
        yield harness, b, lv
    finally:
        b.cleanup()
        for ag in harness.agents:  # before their libvirtd goes
            ag.stop()
        harness.agents.clear()
        for d in lv:
            for uid_dom in _domains(d.uri):
                uid_dom.destroy() if uid_dom.isActive() else None
            d.stop("libvirtd")
            d.stop("virtlogd")


@pytest.fixture
def operator(harness, placement, tmp_path):
    with operator_process(harness, placement, tmp_path, "--backoff-max", "3",
                          "--resize-confirm-window", "0") as proc:
        yield proc


def _domains(uri: str) -> list:
    conn = libvirt.open(uri)
    try:
        return conn.listAllDomains()
    finally:
        conn.close()


def _state(uri: str, uid: str) -> str | None:
    """"running", "shut off" or None (not defined) on that libvirtd."""
    conn = libvirt.open(uri)
    try:
        try:
            dom = conn.lookupByUUIDString(uid)
        except libvirt.libvirtError:
            return None
        return "running" if dom.isActive() else "shut off"
    finally:
        conn.close()


def _start_agent(h: Harness, uri: str, placement, pki):
    return h.agent(placement_url=placement.url, libvirt_uri=uri, domain_type="qemu",
                   **_stream_kw(pki))


def _stream_kw(pki) -> dict:
    return dict(stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                stream_client_ca_file=str(pki.ca_crt), stream_port=0, stream_bind="127.0.0.1",
                stream_allowed_clients=(names.STREAM_CLIENT_NAME,
                                        names.STREAM_MIGRATION_CLIENT_NAME),
                migration_client_cert_file=str(pki.mover_crt),
                migration_client_key_file=str(pki.mover_key))


def _ready(h: Harness) -> str:
    wait_for(lambda: ((h.host_obj() or {}).get("status") or {}).get("streamEndpoint")
             and h.host_obj()["status"].get("resourceProviderUUID"), 30,
             what=f"{h.host}: provider and stream endpoint")
    return h.host_obj()["status"]["resourceProviderUUID"]


def _allocs(placement, consumer: str) -> dict:
    return placement.http.get(f"/allocations/{consumer}").json()["allocations"]


def _marked(disk) -> bool:
    out = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c",
                          f"read -P {MARK} 1M 64k", str(disk)], capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def _backing(disk) -> str | None:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(disk)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out).get("backing-filename")


def test_cold_migrate_revert_confirm_and_refusals(
        hosts, placement, operator, small_image, kova_api, make_user, namespace, tmp_path):
    a, b, (lv_a, lv_b) = hosts
    pki = kova_api.pki
    # the image carries a marker the disk must still have on the other host
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {MARK} 1M 64k",
                    str(small_image)], check=True, capture_output=True)
    _start_agent(a, lv_a.uri, placement, pki)
    rp_a = _ready(a)
    sfx = a.host[-6:]
    a.flavor(f"small-{sfx}", **SMALL)
    a.image(f"img-{sfx}", small_image)
    uid = a.instance("vm", f"img-{sfx}", flavor=f"small-{sfx}", schedule=False)["metadata"]["uid"]
    a.wait_phase("vm", "Running", timeout=90)
    assert a.get("vm")["status"]["host"] == a.host
    _start_agent(b, lv_b.uri, placement, pki)
    rp_b = _ready(b)
    disk_a = tmp_path / "instances" / uid / "disk.qcow2"
    disk_b = tmp_path / "b" / "instances" / uid / "disk.qcow2"
    editor = make_user("editor", "kova-edit", namespace)
    # naming the destination is a cluster administrator's (verb schedule)
    admin = make_user("admin", "cluster-admin", namespace)

    # ---- refusals: --host is an administrator's; an unknown host
    out = plugin(editor, "migrate", "vm", "--host", b.host)
    assert out.returncode != 0 and "only an administrator" in out.stderr, out
    out = plugin(admin, "migrate", "vm", "--host", "no-such-host")
    assert out.returncode != 0 and "no-such-host is not registered" in out.stderr, out
    assert "migration" not in a.get("vm")["status"]

    # ---- migrate (the scheduler's choice: the only other host) to Verify
    out = plugin(editor, "migrate", "vm", "--timeout", "120")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert "step Verify" in out.stderr, out.stderr
    obj = a.get("vm")
    st, mig = obj["status"], obj["status"]["migration"]
    assert (mig["type"], mig["mode"], mig["step"]) == ("migrate", "cold", "Verify"), mig
    assert (mig["sourceHost"], mig["destHost"], st["host"]) == (a.host, b.host, b.host)
    assert obj["metadata"]["labels"][names.LABEL_HOST] == b.host
    assert st["phase"] == "ResizeVerify" and mig["wasRunning"] is True
    assert (_state(lv_a.uri, uid), _state(lv_b.uri, uid)) == ("shut off", "running")
    assert _backing(disk_b) is None and _marked(disk_b)  # standalone, the same content
    assert disk_a.exists()  # the source's copy is kept until the confirm
    assert list(_allocs(placement, uid)) == [rp_b]
    assert list(_allocs(placement, mig["uuid"])) == [rp_a]
    assert st["actions"][-1]["action"] == "migrate"
    assert st["actions"][-1]["result"] == "InProgress"

    # ---- revert: back on a with its kept disk; b's copy is gone
    out = plugin(editor, "resize", "vm", "--revert")
    assert out.returncode == 0, (out.stdout, out.stderr)
    obj = a.wait_phase("vm", "Running", timeout=60)
    assert "migration" not in obj["status"] and obj["status"]["host"] == a.host
    assert obj["metadata"]["labels"][names.LABEL_HOST] == a.host
    assert (_state(lv_a.uri, uid), _state(lv_b.uri, uid)) == ("running", None)
    assert not disk_b.parent.exists()
    assert list(_allocs(placement, uid)) == [rp_a] and _allocs(placement, mig["uuid"]) == {}
    assert obj["status"]["actions"][-1]["result"] == "Success"

    # ---- migrate again (the administrator names b), confirm: a's copy goes
    out = plugin(admin, "migrate", "vm", "--host", b.host, "--timeout", "120")
    assert out.returncode == 0, (out.stdout, out.stderr)
    mig2 = b.get("vm")["status"]["migration"]
    assert mig2["requestedHost"] == b.host and mig2["step"] == "Verify"
    out = plugin(editor, "resize", "vm", "--confirm")
    assert out.returncode == 0, (out.stdout, out.stderr)
    obj = b.wait_phase("vm", "Running", timeout=30)
    assert "migration" not in obj["status"] and obj["status"]["host"] == b.host
    assert list(_allocs(placement, uid)) == [rp_b] and _allocs(placement, mig2["uuid"]) == {}
    wait_for(lambda: _state(lv_a.uri, uid) is None and not disk_a.parent.exists(), 30,
             what="the source's kept domain and disk removed after the confirm")
    assert _state(lv_b.uri, uid) == "running" and _marked(disk_b)

    # ---- no room on the destination: NoValidHost, nothing moved
    a.custom.patch_cluster_custom_object(
        "kova.dev", "v1alpha1", "hosts", a.host, {"spec": {"enabled": False}})
    out = plugin(admin, "migrate", "vm", "--host", a.host)
    assert out.returncode != 0 and "takes no new Instances" in out.stderr, out
    a.custom.patch_cluster_custom_object(
        "kova.dev", "v1alpha1", "hosts", a.host, {"spec": {"enabled": True}})
    full = {"spec": {"reserved": {"memoryMiB": _total_memory(a) - 64}}}
    a.custom.patch_cluster_custom_object("kova.dev", "v1alpha1", "hosts", a.host, full)
    wait_for(lambda: _reserved(placement, rp_a) >= _total_memory(a) - 64, 30,
             what="a's reserved memory in Placement")
    out = plugin(editor, "migrate", "vm", "--timeout", "60")
    obj = b.get("vm")
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == names.COND_RESIZED)
    assert cond["status"] == "False" and cond["reason"] == names.REASON_NO_VALID_HOST, cond
    assert "migration" not in obj["status"] and obj["status"]["host"] == b.host
    assert _state(lv_b.uri, uid) == "running" and list(_allocs(placement, uid)) == [rp_b]
    assert obj["status"]["actions"][-1]["result"] == "Error"


def _total_memory(h: Harness) -> int:
    cap = (h.host_obj()["status"].get("capacity") or {})
    return int(cap.get("memoryMiB") or 0)


def _reserved(placement, rp: str) -> int:
    inv = placement.http.get(f"/resource_providers/{rp}/inventories").json()["inventories"]
    return int(inv.get("MEMORY_MB", {}).get("reserved", 0))


def test_drain_moves_every_instance_away_and_uncordon_enables_the_host(
        hosts, placement, operator, small_image, kova_api):
    """``kubectl kova drain --cold-fallback``: the operator drains the host
    (spec.drain): its two Instances' live migrations fail (these agents have
    no live-migration URI), so both are cold-migrated and confirmed on the
    other host; nothing is left on it in libvirt or Placement; the Host says
    Drained; ``uncordon`` ends the drain."""
    a, b, (lv_a, lv_b) = hosts
    pki = kova_api.pki
    _start_agent(a, lv_a.uri, placement, pki)
    rp_a = _ready(a)
    sfx = a.host[-6:]
    a.flavor(f"small-{sfx}", **SMALL)
    a.image(f"img-{sfx}", small_image)
    uids = [a.instance(n, f"img-{sfx}", flavor=f"small-{sfx}", schedule=False)["metadata"]["uid"]
            for n in ("vm1", "vm2")]
    for n in ("vm1", "vm2"):
        a.wait_phase(n, "Running", timeout=90)
    _start_agent(b, lv_b.uri, placement, pki)
    rp_b = _ready(b)
    admin = a.kubeconfig  # the cluster's administrator (Hosts are cluster-scoped)

    out = plugin(admin, "drain", a.host, "--parallel", "2", "--cold-fallback", "--timeout",
                 "240", timeout=300)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert f"host {a.host} drained: 2 instance(s) moved" in out.stdout, out.stdout
    host = a.host_obj()
    assert host["spec"]["drain"] is True and host["spec"]["drainPolicy"] == "LiveThenCold"
    assert host["status"]["drain"]["phase"] == "Drained", host["status"]
    assert [c["status"] for c in host["status"]["conditions"] if c["type"] == "Drained"] == [
        "True"], host["status"]
    for n, uid in zip(("vm1", "vm2"), uids, strict=True):
        obj = b.wait_phase(n, "Running", timeout=30)
        assert obj["status"]["host"] == b.host and "migration" not in obj["status"]
        assert [x["action"] for x in obj["status"]["actions"]][-1] == "migrate"
        assert list(_allocs(placement, uid)) == [rp_b]
        assert _state(lv_b.uri, uid) == "running"
    wait_for(lambda: all(_state(lv_a.uri, u) is None for u in uids), 30,
             what="the drained host's copies removed")
    usages = placement.http.get(f"/resource_providers/{rp_a}/usages").json()["usages"]
    assert usages.get("VCPU", 0) == 0, usages

    out = plugin(admin, "uncordon", a.host)
    assert out.returncode == 0 and f"host {a.host} enabled" in out.stdout, out
    assert a.host_obj()["spec"]["enabled"] is True and a.host_obj()["spec"]["drain"] is False
    wait_for(lambda: "drain" not in a.host_obj()["status"], 30, what="status.drain removed")
