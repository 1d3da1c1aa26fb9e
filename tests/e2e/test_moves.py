"""Resizing a real guest: the test image under QEMU on a one-host stack
(Placement, the operator with no confirm window, the agent, the API
component), driven with ``kubectl kova`` as a user bound to kova-edit.

Resize up and confirm, then up again and revert; after each the guest itself
is asked on its serial console how many CPUs and how much memory it sees,
the domain's definition and the disk are looked at, and Placement holds
exactly the Instance's allocation at the size it runs, with no migration
consumer left.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import libvirt
import pexpect
import pytest

from kova.dev.stack import Stack
from tests.e2e.test_access import Session
from tests.helpers import BOOT_TIMEOUT, wait_for
from tests.support.stacks import kova_editor, one_host_stack, temp_namespace

PROMPT = "vm:/# "
#: "three" stays at 2 vCPUs: on one host the move holds the old size too
#: (the migration consumer), and a small test host has few vCPUs.
SIZES = {"one": (1, 192, 1), "two": (2, 320, 2), "three": (2, 448, 3)}


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "moves-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, test_image, ns, tmp_path_factory):
    root = tmp_path_factory.mktemp("moves-stack")
    with one_host_stack(k8s, kova_api, ns, root, "moves", operator_args=["--resize-confirm-window", "0"], log_lines=25) as st:
        yield st


@pytest.fixture(scope="module")
def vm(stack, kova_api, test_image, k8s, kubectl, ns):
    user = kova_editor(k8s, ns, "mover", stack.root)

    tag = ns[-5:]
    image = f"moves-img-{tag}"
    flavors = "".join(f"""---
apiVersion: kova.dev/v1alpha1
kind: Flavor
metadata: {{name: {name}-{tag}}}
spec: {{vcpus: {c}, memoryMiB: {m}, diskGiB: {d}}}
""" for name, (c, m, d) in SIZES.items())
    kubectl("apply", "-f", "-", input=flavors + f"""---
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: {image}}}
spec: {{source: {{hostPath: {Path(test_image).resolve()}}}, format: qcow2}}
---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: vm, namespace: {ns}}}
spec:
  flavorRef: {{name: one-{tag}}}
  imageRef: {{name: {image}}}
""")
    session = Session(ns, user, kubectl, image)
    session.tag = tag
    try:
        session.wait_power("Running", BOOT_TIMEOUT)
        session.wait_log("KOVA-SHELL: ttyS0")
        yield session
    finally:
        kubectl("-n", ns, "delete", "instance", "vm", "--wait=true", "--timeout=120s",
                check=False)
        kubectl("delete", "image", image, check=False)
        kubectl("delete", "flavors", *(f"{n}-{tag}" for n in SIZES), check=False)


def guest_sees(vm) -> tuple[int, int]:
    """(CPUs, MemTotal in MiB) as the guest reports them on its console."""
    child = vm.spawn("console", "vm")
    try:
        child.expect("Ctrl\\+\\] detaches")
        child.send("\r")
        child.expect(PROMPT)
        child.send("echo CPUS=$(grep -c ^processor /proc/cpuinfo) "
                   "MEMKB=$(awk '/MemTotal/{print $2}' /proc/meminfo)\r")
        child.expect(r"CPUS=(\d+) MEMKB=(\d+)\s")
        cpus, mem_kb = int(child.match.group(1)), int(child.match.group(2))
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    return cpus, mem_kb // 1024


def placement_books(stack: Stack) -> dict[str, dict]:
    """Every consumer's allocations on the stack's providers."""
    headers = {"X-Auth-Token": stack.placement_token,
               "OpenStack-API-Version": "placement 1.39"}
    out: dict[str, dict] = {}
    with httpx.Client(base_url=stack.placement_url, headers=headers) as pc:
        for rp in pc.get("/resource_providers").json()["resource_providers"]:
            allocs = pc.get(f"/resource_providers/{rp['uuid']}/allocations").json()
            for consumer, a in allocs["allocations"].items():
                out.setdefault(consumer, {})[rp["name"]] = a["resources"]
    return out


def domain_size(stack: Stack, host: str, uid: str) -> tuple[int, int]:
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        _s, max_kib, _m, vcpus, _t = conn.lookupByUUIDString(uid).info()
        return vcpus, max_kib // 1024
    finally:
        conn.close()


def resize(vm, flavor: str) -> dict:
    code, out, err = vm.kova("resize", "vm", "--flavor", f"{flavor}-{vm.tag}", "--timeout",
                             "300", timeout=360)
    assert code == 0, (out, err)
    assert "confirm with" in out, out
    return vm.obj()


def test_resize_up_confirm_then_up_and_revert(stack, vm) -> None:
    host = vm.obj()["status"]["host"]
    uid = vm.obj()["metadata"]["uid"]
    cpus, mem_one = guest_sees(vm)
    assert cpus == 1

    # ---- up to "two", confirmed: the guest booted again with 2 CPUs, more memory
    obj = resize(vm, "two")
    assert obj["status"]["phase"] == "ResizeVerify"
    vm.wait_log("KOVA-SHELL: ttyS0", count=2)
    cpus, mem_two = guest_sees(vm)
    assert cpus == 2 and mem_two > mem_one + 100, (cpus, mem_one, mem_two)
    assert domain_size(stack, host, uid) == (2, 320)
    mig = obj["status"]["migration"]
    books = placement_books(stack)
    assert books[mig["uuid"]] == {host: {"VCPU": 1, "MEMORY_MB": 192, "DISK_GB": 1}}
    code, out, err = vm.kova("resize", "vm", "--confirm")
    assert code == 0, (out, err)
    obj = vm.wait_power("Running")
    assert "migration" not in obj["status"] and obj["status"]["phase"] == "Running"
    assert placement_books(stack) == {uid: {host: {"VCPU": 2, "MEMORY_MB": 320,
                                                   "DISK_GB": 2}}}

    # ---- up to "three", reverted: back to "two"'s memory and disk
    resize(vm, "three")
    vm.wait_log("KOVA-SHELL: ttyS0", count=3)
    assert guest_sees(vm)[1] > mem_two + 100
    code, out, err = vm.kova("resize", "vm", "--revert")
    assert code == 0, (out, err)
    obj = wait_for(lambda: (o := vm.obj())["status"].get("phase") == "Running"
                   and "migration" not in o["status"] and o, 120, 1.0, "reverted and Running")
    vm.wait_log("KOVA-SHELL: ttyS0", count=4)
    cpus, mem = guest_sees(vm)
    assert cpus == 2 and abs(mem - mem_two) < 16, (cpus, mem, mem_two)
    assert domain_size(stack, host, uid) == (2, 320)
    assert obj["status"]["resources"] == {"vcpus": 2, "memoryMiB": 320, "diskGiB": 2}
    assert placement_books(stack) == {uid: {host: {"VCPU": 2, "MEMORY_MB": 320,
                                                   "DISK_GB": 2}}}
    history = [(a["action"], a["result"]) for a in obj["status"]["actions"]]
    assert history[-2:] == [("resize", "Success"), ("resize", "Success")], history
    assert re.search(r"reverted by system:serviceaccount:.*:mover",
                     obj["status"]["actions"][-1]["message"])
