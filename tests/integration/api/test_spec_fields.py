"""Spec edits are never silently ignored: every field of an Instance's spec
either applies live, or sets RestartRequired naming it until a restart
applies it, or resizes the Instance (tests/integration/agents/test_resize.py,
docs/moving.md), or is rejected by the API server when changed. One test per
field, against the real API server (and the agent on libvirt's test driver
for the first two kinds)."""

from __future__ import annotations

import json

import pytest

from kova.agents.virt.seed import read_nocloud_seed
from kova.crds.models import InstanceSpec
from tests.fixtures.vm import plugin
from tests.helpers import wait_for

LIVE = {"runStrategy"}
RESTART = {"userData", "sshKeys", "hostname"}
#: A change starts a resize (a shrinking inline disk is refused: test_crds).
RESIZE = {"flavorRef", "resources"}
#: field -> (a JSON merge patch of spec changing it, words of the refusal)
IMMUTABLE = {
    "imageRef": ({"imageRef": {"name": "other"}}, "imageRef is immutable"),
    "availabilityZone": ({"availabilityZone": "zone-b"}, "availabilityZone is immutable"),
    "serverGroupRef": ({"serverGroupRef": {"name": "other"}}, "serverGroupRef is immutable"),
    "traits": ({"traits": {"required": ["CUSTOM_B"]}}, "traits is immutable"),
    "schedulingHints": ({"schedulingHints": {"differentHost": ["y"]}},
                        "schedulingHints is immutable"),
}
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl "
       "alice@laptop")


def test_every_spec_field_is_classified() -> None:
    fields = {f.alias or name for name, f in InstanceSpec.model_fields.items()}
    assert fields == LIVE | RESTART | RESIZE | set(IMMUTABLE)
    assert not (LIVE & RESTART) and not ((LIVE | RESTART | RESIZE) & set(IMMUTABLE))


@pytest.mark.parametrize("field", sorted(IMMUTABLE))
def test_immutable_field_is_rejected_with_its_name(field, kubectl, kova_crds,
                                                   namespace) -> None:
    spec = {"resources": {"vcpus": 1, "memoryMiB": 128, "diskGiB": 1},
            "imageRef": {"name": "img"}, "availabilityZone": "zone-a",
            "serverGroupRef": {"name": "grp"}, "traits": {"required": ["CUSTOM_A"]},
            "schedulingHints": {"differentHost": ["x"]}}
    kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": "vm"},
        "spec": spec}))
    patch, words = IMMUTABLE[field]
    out = kubectl("-n", namespace, "patch", "instance", "vm", "--type", "merge", "-p",
                  json.dumps({"spec": patch}), check=False)
    assert out.returncode != 0 and words in out.stderr, out.stderr
    assert f"spec.{field}" in out.stderr, out.stderr
    # removing it is refused too (where it may be absent at all)
    if field != "imageRef":
        gone = kubectl("-n", namespace, "patch", "instance", "vm", "--type", "json", "-p",
                       json.dumps([{"op": "remove", "path": f"/spec/{field}"}]), check=False)
        assert gone.returncode != 0 and "cannot be added or removed" in gone.stderr, gone.stderr
    current = json.loads(kubectl("-n", namespace, "get", "instance", "vm", "-o", "json").stdout)
    assert current["spec"][field] == spec[field]


def test_run_strategy_applies_live(vm) -> None:
    vm.h.patch("vm", {"spec": {"runStrategy": "Halted"}})
    vm.wait_power("Shutdown")
    vm.h.patch("vm", {"spec": {"runStrategy": "Always"}})
    vm.wait_power("Running")


def _restart_required(vm) -> dict | None:
    for c in vm.status().get("conditions") or []:
        if c["type"] == "RestartRequired":
            return c
    return None


def _seed(vm) -> dict[str, str]:
    uid = vm.obj()["metadata"]["uid"]
    files = read_nocloud_seed(vm.agent.instance_dir / uid / "seed.iso")
    return {k: v.decode() for k, v in files.items()}


@pytest.mark.parametrize(("field", "value", "seen"), [
    ("userData", {"inline": "#!/bin/sh\necho SECOND"}, ("user-data", "echo SECOND")),
    ("sshKeys", [KEY], ("meta-data", "alice@laptop")),
    ("hostname", "renamed", ("meta-data", "local-hostname: renamed")),
])
def test_restart_field_waits_for_a_restart_that_applies_it(field, value, seen, vm, make_user,
                                                           namespace) -> None:
    uid = vm.obj()["metadata"]["uid"]
    cond = wait_for(lambda: _restart_required(vm), 20, 0.1, "RestartRequired")
    assert cond["status"] == "False" and cond["reason"] == "UpToDate"
    first = _seed(vm)
    assert f"instance-id: {uid}\n" in first["meta-data"]

    vm.h.patch("vm", {"spec": {field: value}})
    cond = wait_for(lambda: (c := _restart_required(vm)) and c["status"] == "True" and c, 20,
                    0.1, "RestartRequired=True")
    assert cond["reason"] == "SpecChanged"
    assert cond["message"] == (f"{field} changed and applies at the next start or restart "
                               "(kubectl kova restart vm)")
    assert cond["observedGeneration"] == vm.obj()["metadata"]["generation"]
    assert _seed(vm) == first  # nothing applied behind the guest's back

    editor = make_user("editor", "kova-edit", namespace)
    out = plugin(editor, "restart", "vm")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: _restart_required(vm)["status"] == "False", 20, 0.1,
             "RestartRequired=False")
    seed = _seed(vm)
    name, words = seen
    assert words in seed[name], seed[name]
    assert f"instance-id: {uid}-" in seed["meta-data"]  # cloud-init runs it again
