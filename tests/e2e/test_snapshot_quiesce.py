"""Snapshots quiesced through the QEMU guest agent, with real QEMU guests on
a two-host stack (as tests/e2e/test_snapshot.py: Placement, the operator,
two agents each with its own libvirtd, the API component, Kova's image
store), driven with ``kubectl kova`` as a user bound to kova-edit.

The test image runs Debian's qemu-ga on the domain's guest-agent channel;
its fsfreeze hook prints ``KOVA-FSFREEZE: freeze`` / ``thaw`` on the serial
console.  A second guest's user-data turns the agent off
(``kova-guest-agent: off``): its channel has no agent.

* the guest with the agent, ``--quiesce required``: the snapshot succeeds,
  its history says the guest agent froze the filesystems, the guest printed
  the freeze and then the thaw, the agent reports ``thawed`` afterwards, and
  the snapshot boots;
* the guest without: ``--quiesce required`` ends Error ``QuiesceFailed``,
  its TenantImage marked SnapshotFailed and no copy left; once that
  TenantImage is deleted, the default (``auto``) takes a crash-consistent
  snapshot into the same name and says so; once its TenantImage has
  ``properties.requireQuiesce``, ``--quiesce off`` is refused and no
  ``--quiesce`` ends ``QuiesceFailed`` like required, naming the image.

The test image runs from its initramfs: no disk file system is mounted, so
the agent freezes none (its count is 0) -- what is checked is the freeze
and thaw themselves, not a flushed file system.
"""

from __future__ import annotations

import json

import libvirt
import libvirt_qemu

from kova.agents.virt.quiesce import agent_state
from kova.dev.image import GUEST_AGENT_OFF, GUEST_AGENT_STARTED
from tests.e2e.test_access import Session
from tests.e2e.test_snapshot import _host, _instance, _upload_base, ns, stack  # noqa: F401
from tests.helpers import BOOT_TIMEOUT, wait_for
from tests.integration.images.test_image_store import store  # noqa: F401
from tests.support.stacks import kova_editor


def _console_line(s: Session, name: str, line: str) -> str:
    def seen() -> str | None:
        log = s.kova("logs", name)[1]
        return log if line in log else None
    return wait_for(seen, BOOT_TIMEOUT, 1.0, f"{line!r} on {name}'s console")


def _domain(stack, host: str, uid: str) -> tuple[libvirt.virConnect, libvirt.virDomain]:  # noqa: F811
    conn = libvirt.open(stack.libvirt_uris[host])
    return conn, conn.lookupByUUIDString(uid)


def _agent_connected(stack, host: str, uid: str) -> bool:  # noqa: F811
    conn, dom = _domain(stack, host, uid)
    try:
        return agent_state(dom.XMLDesc(0)) == "connected"
    finally:
        conn.close()


def _snapshot_entry(kubectl, ns: str, name: str, image: str) -> dict:  # noqa: F811
    out = kubectl("-n", ns, "get", "instance", name, "-o", "json").stdout
    return [a for a in json.loads(out)["status"]["actions"]
            if a["action"] == "snapshot" and a.get("image") == image][-1]


def test_a_guest_with_its_agent_is_frozen_one_without_is_refused_when_required(
        stack, store, test_image, k8s, kubectl, ns):  # noqa: F811
    user = kova_editor(k8s, ns, "owner", stack.root)
    s = Session(ns, user, kubectl, "")
    _upload_base(s, store, test_image, ns)
    quiet = _instance(kubectl, ns, "quiet", "base")
    _instance(kubectl, ns, "mute", "base", user_data="#cloud-config\nkova-guest-agent: off\n")

    _console_line(s, "quiet", GUEST_AGENT_STARTED)
    quiet_host = _host(kubectl, ns, "quiet")
    # libvirt learns that the guest opened the channel from QEMU's event.
    wait_for(lambda: _agent_connected(stack, quiet_host, quiet), 60, 0.5,
             "the guest agent channel connected")
    code, out, err = s.kova("snapshot", "quiet", "--image", "quiet-snap",
                            "--quiesce", "required", timeout=600)
    assert code == 0 and f"tenantimage.kova.dev/quiet-snap created from instance {ns}/quiet" \
        in out, (out, err)
    entry = _snapshot_entry(kubectl, ns, "quiet", "quiet-snap")
    assert entry["result"] == "Success" and entry["quiesce"] == "required", entry
    assert "guest not paused" in entry["message"], entry
    assert "0 filesystems frozen for " in entry["message"], entry
    assert "by the guest agent" in entry["message"], entry
    print(f"quiesced snapshot: {entry['message']}")
    log = _console_line(s, "quiet", "KOVA-FSFREEZE: thaw")
    assert log.index("KOVA-FSFREEZE: freeze") < log.index("KOVA-FSFREEZE: thaw"), log
    conn, dom = _domain(stack, quiet_host, quiet)
    try:
        status = json.loads(libvirt_qemu.qemuAgentCommand(
            dom, '{"execute": "guest-fsfreeze-status"}', 10, 0))
    finally:
        conn.close()
    assert status == {"return": "thawed"}, status
    assert not list((stack.root / "instances" / quiet_host).glob("*/fsfrozen"))

    _console_line(s, "mute", GUEST_AGENT_OFF)
    code, out, err = s.kova("snapshot", "mute", "--image", "mute-snap", "--quiesce",
                            "required", timeout=600)
    assert code != 0 and "QuiesceFailed: the snapshot requires quiescing and no guest " \
        "agent is connected on its channel" in err, (out, err)
    entry = _snapshot_entry(kubectl, ns, "mute", "mute-snap")
    assert entry["result"] == "Error" and entry["quiesce"] == "required", entry
    # The TenantImage made at the request is marked failed, without a file;
    # its owner deletes it to use the name again.
    failed = json.loads(kubectl("-n", ns, "get", "tenantimage", "mute-snap", "-o",
                                "json").stdout)
    assert [(c["status"], c["reason"]) for c in failed["status"]["conditions"]
            if c["type"] == "Available"] == [("False", "SnapshotFailed")], failed["status"]
    assert "source" not in failed["spec"], failed["spec"]
    mute_host = _host(kubectl, ns, "mute")
    assert not list((stack.root / "instances" / mute_host).glob("*/snapshot-*.qcow2"))
    kubectl("-n", ns, "delete", "tenantimage", "mute-snap", "--wait=true", "--timeout=60s")
    code, out, err = s.kova("snapshot", "mute", "--image", "mute-snap", timeout=600)
    assert code == 0, (out, err)
    entry = _snapshot_entry(kubectl, ns, "mute", "mute-snap")
    assert entry["result"] == "Success" and entry["quiesce"] == "auto", entry
    assert ("not quiesced (no guest agent is connected on its channel): crash-consistent"
            in entry["message"]), entry

    # Its TenantImage made to require quiescing (Glance's os_require_quiesce):
    # --quiesce off is refused at the request, and no --quiesce is refused
    # like required, the history naming the image.
    kubectl("-n", ns, "patch", "tenantimage", "base", "--type=merge",
            "-p", json.dumps({"spec": {"properties": {"requireQuiesce": True}}}))
    code, out, err = s.kova("snapshot", "mute", "--image", "mute-loose", "--quiesce", "off")
    assert code != 0 and ("TenantImage base requires quiescing (properties.requireQuiesce, "
                          "Glance's os_require_quiesce)") in err, (out, err)
    code, out, err = s.kova("snapshot", "mute", "--image", "mute-req", timeout=600)
    assert code != 0 and "QuiesceFailed: the snapshot requires quiescing and no guest " \
        "agent is connected on its channel (quiesce required by TenantImage base " \
        "(properties.requireQuiesce))" in err, (out, err)
    entry = _snapshot_entry(kubectl, ns, "mute", "mute-req")
    assert entry["result"] == "Error" and entry["quiesce"] == "required", entry
    assert entry["quiesceFrom"] == "TenantImage base", entry

    # The quiesced snapshot boots, its guest agent with it.
    _instance(kubectl, ns, "again", "quiet-snap")
    _console_line(s, "again", GUEST_AGENT_STARTED)
    for name in ("quiet", "mute", "again"):
        kubectl("-n", ns, "delete", "instance", name, "--wait=true", "--timeout=120s",
                check=False)
