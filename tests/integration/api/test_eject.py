"""``kubectl kova eject`` through the real kube-apiserver's aggregator, ``kova
api serve`` and the agent's stream endpoint, on libvirt's test driver.

The test driver has no change-media of a running domain
(``virDomainUpdateDeviceFlags`` is not supported): a stopped ISO-booted
Instance is ejected for real (its definition rewritten), and a running one
shows how a hypervisor's failure reaches the user.  The running QEMU guest:
tests/e2e/test_eject_iso.py.
"""

from __future__ import annotations

from tests.fixtures.vm import plugin
from tests.helpers import disk_boot_orders, small_iso, wait_for


def _events(harness, name: str, reason: str) -> list:
    evs = harness.core.list_namespaced_event(harness.ns).items
    return [e for e in evs if e.involved_object.name == name and e.reason == reason]


def test_eject_of_an_instance_without_an_iso_is_refused(vm, make_user, namespace) -> None:
    editor = make_user("editor", "kova-edit", namespace)
    viewer = make_user("viewer", "kova-view", namespace)
    out = plugin(editor, "eject", "vm")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: eject the CD-ROM of instance {namespace}/vm: "), last
    assert "has no CD-ROM to eject" in last and "format qcow2, not iso" in last, last
    # a viewer may not eject (RBAC of instances/eject through the aggregator)
    out = plugin(viewer, "eject", "vm")
    assert out.returncode == 1 and "forbidden" in out.stderr.lower(), out.stderr
    assert not vm.status().get("actions") and not vm.status().get("cdrom")


def test_eject_of_a_stopped_iso_instance_and_of_a_running_one(
        harness, kova_api, make_user, namespace, tmp_path) -> None:
    pki = kova_api.pki
    agent = harness.agent(stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                          stream_client_ca_file=str(pki.ca_crt), stream_port=0,
                          stream_bind="127.0.0.1")
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    cd = f"cd-{namespace[-6:]}"
    harness.image(cd, small_iso(images / "cd.iso"), format="iso")
    uid = harness.instance("inst", cd, run_strategy="Halted")["metadata"]["uid"]
    harness.wait_phase("inst", "Stopped")
    wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("streamEndpoint"),
             30, 0.2, "the Host's streamEndpoint")
    link = tmp_path / "instances" / uid / "cdrom.iso"
    iso_file = str(link.readlink())
    before = disk_boot_orders(agent.ctx.driver.get(uid).xml)
    assert before[f"cdrom:{iso_file}"] == "1" and before["disk"] == "2", before
    editor = make_user("editor", "kova-edit", namespace)

    out = plugin(editor, "eject", "inst")
    assert out.returncode == 0, out
    assert "eject: ejected the CD-ROM: the guest boots from its root disk" in out.stdout
    assert "powerState Shutdown" in out.stdout, out.stdout
    status = harness.get("inst")["status"]
    assert status["cdrom"]["ejected"] is True and status["cdrom"]["ejectTime"]
    (last,) = status["actions"][-1:]
    assert (last["action"], last["result"], last["user"]) == ("eject", "Success",
                                                                editor.username)
    assert status["cdrom"]["requestId"] == last["requestId"]
    assert not link.is_symlink()
    after = disk_boot_orders(agent.ctx.driver.get(uid).xml)
    assert after == {"disk": "1", **{k: None for k in after if k.startswith("cdrom:")}}, after
    assert "cdrom:" in after and iso_file not in agent.ctx.driver.get(uid).xml
    wait_for(lambda: _events(harness, "inst", "EjectDone"), 10, 0.2, "the EjectDone Event")

    again = plugin(editor, "eject", "inst")
    assert again.returncode == 1 and "is ejected already" in again.stderr, again
    # started, it keeps the definition the eject wrote
    harness.patch("inst", {"spec": {"runStrategy": "Always"}})
    harness.wait_phase("inst", "Running")
    assert disk_boot_orders(agent.ctx.driver.get(uid).xml) == after

    # A running ISO guest on a hypervisor without change-media: the user
    # sees libvirt's error, the action is recorded as Error, a Warning Event.
    uid2 = harness.instance("live", cd)["metadata"]["uid"]
    harness.wait_phase("live", "Running")
    out = plugin(editor, "eject", "live")
    assert out.returncode == 1 and "virDomainUpdateDeviceFlags" in out.stderr, out
    status = harness.get("live")["status"]
    assert status["actions"][-1]["action"] == "eject"
    assert status["actions"][-1]["result"] == "Error"
    assert not status.get("cdrom")
    assert (tmp_path / "instances" / uid2 / "cdrom.iso").is_symlink()
    (ev,) = wait_for(lambda: _events(harness, "live", "EjectFailed"), 10, 0.2,
                     "the EjectFailed Event")
    assert ev.type == "Warning" and "not ejected" in ev.message
