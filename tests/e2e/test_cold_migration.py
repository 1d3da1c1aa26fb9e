"""Cold-migrating a real guest between two hosts: the test image under QEMU
on a two-host stack (each host its own libvirtd, the agents' stream
endpoints with the API component's PKI and their migration certificate),
driven with ``kubectl kova migrate`` by a user bound to kova-edit.

The guest writes a marker straight onto its disk (``dd`` to /dev/vda) from
its serial console; after the migration it boots on the other host and
reads the marker back from its disk.  Placement holds the Instance on the
destination and the migration consumer on the source while the move waits;
after the confirm only the Instance's allocation on the destination is
left and the source's copy is gone from its libvirtd.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import pexpect
import pytest

from kova.dev.stack import Stack
from tests.e2e.test_access import Session
from tests.e2e.test_moves import PROMPT, placement_books
from tests.helpers import BOOT_TIMEOUT, flavor_image_manifests, wait_for
from tests.support.stacks import kova_editor, temp_namespace, two_host_stack

SECTOR = 1_900_000  # ~930 MiB into the 1 GiB disk: past anything the image wrote


@pytest.fixture(scope="module")
def ns(kubectl):
    with temp_namespace(kubectl, "coldmig-e2e") as name:
        yield name


@pytest.fixture(scope="module")
def stack(k8s, kova_crds, kova_api, libvirtd, test_image, ns, tmp_path_factory):
    root = tmp_path_factory.mktemp("coldmig-stack")
    st = Stack(root=root / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
               operator_args=["--resize-confirm-window", "0"])
    with two_host_stack(st, k8s, ns, "cm") as started:
        yield started


@contextmanager
def booted_guest(k8s, kubectl, ns: str, root: Path, test_image, prefix: str,
                 user_name: str, **image: Any) -> Iterator[Session]:
    """Flavor ``<prefix>-<tag>``, Image and Instance ``vm`` of the test image
    (or of another file: ``image`` goes to flavor_image_manifests, e.g.
    ``image_format="iso"``), applied by ``kubectl``; yields a kova-edit
    user's Session once the guest's shell is up; deletes them afterwards."""
    user = kova_editor(k8s, ns, user_name, root)
    tag = ns[-5:]
    image_name = f"{prefix}-img-{tag}"
    kubectl("apply", "-f", "-", input=flavor_image_manifests(
        f"{prefix}-{tag}", image_name, test_image, **image) + f"""---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: vm, namespace: {ns}}}
spec:
  flavorRef: {{name: {prefix}-{tag}}}
  imageRef: {{name: {image_name}}}
""")
    session = Session(ns, user, kubectl, image_name)
    try:
        session.wait_power("Running", BOOT_TIMEOUT)
        session.wait_log("KOVA-SHELL: ttyS0")
        yield session
    finally:
        kubectl("-n", ns, "delete", "instance", "vm", "--wait=true", "--timeout=120s",
                check=False)
        kubectl("delete", "image", image_name, check=False)
        kubectl("delete", "flavor", f"{prefix}-{tag}", check=False)


@pytest.fixture(scope="module")
def vm(stack, kova_api, test_image, k8s, kubectl, ns):
    with booted_guest(k8s, kubectl, ns, stack.root, test_image, "cm", "migrator") as session:
        yield session


def on_console(vm, command: str, expect: str, instance: str = "vm", prompt: str = PROMPT,
               timeout: float = 60) -> str:
    """Run ``command`` in the shell of ``instance``'s guest (``vm``: a Session)
    through `kubectl kova console`, once ``prompt`` shows; the first group of
    ``expect``, matched once the rest of its line has arrived (the console
    streams output in pieces: ``ALIVE-(\\d+)`` would match ``ALIVE-4`` of
    ``ALIVE-42``)."""
    child = vm.spawn("console", instance, timeout=timeout)
    try:
        child.expect("Ctrl\\+\\] detaches")
        child.send("\r")
        child.expect(prompt)
        child.send(command + "\r")
        child.expect(expect + r"[^\r\n]*\r?\n")
        got = child.match.group(1).decode()
        child.sendcontrol("]")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    return got


def state(stack: Stack, host: str, uid: str) -> str | None:
    conn = libvirt.open(stack.libvirt_uris[host])
    try:
        try:
            return "running" if conn.lookupByUUIDString(uid).isActive() else "shut off"
        except libvirt.libvirtError:
            return None
    finally:
        conn.close()


def test_cold_migration_keeps_the_disk_and_confirm_frees_the_source(stack, vm) -> None:
    obj = vm.obj()
    uid, source = obj["metadata"]["uid"], obj["status"]["host"]
    dest = next(h for h in stack.hosts if h != source)
    marker = f"KOVA-DISK-{uuid.uuid4().hex[:12]}"
    wrote = on_console(vm, f"echo {marker} | dd of=/dev/vda bs=512 seek={SECTOR} conv=fsync "
                       "2>/dev/null && echo WROTE=$?", r"WROTE=(\d+)")
    assert wrote == "0"

    code, out, err = vm.kova("migrate", "vm", "--timeout", "300", timeout=360)
    assert code == 0, (out, err)
    obj = vm.obj()
    mig = obj["status"]["migration"]
    assert (mig["step"], mig["mode"], mig["destHost"]) == ("Verify", "cold", dest), mig
    assert obj["status"]["host"] == dest
    assert (state(stack, source, uid), state(stack, dest, uid)) == ("shut off", "running")
    books = placement_books(stack)
    assert set(books[uid]) == {dest} and set(books[mig["uuid"]]) == {source}, books

    vm.wait_log("KOVA-SHELL: ttyS0")  # the console log of the destination
    seen = on_console(vm, f"echo GOT=$(dd if=/dev/vda bs=512 skip={SECTOR} count=1 "
                      "2>/dev/null | head -c 22)", r"GOT=(KOVA-DISK-[0-9a-f]{12})")
    assert seen == marker

    code, out, err = vm.kova("resize", "vm", "--confirm")
    assert code == 0, (out, err)
    obj = vm.wait_power("Running")
    assert "migration" not in obj["status"] and obj["status"]["host"] == dest
    wait_for(lambda: state(stack, source, uid) is None, 60, 1.0,
             "the source's kept copy removed after the confirm")
    books = placement_books(stack)
    assert books == {uid: {dest: {"VCPU": 1, "MEMORY_MB": 192, "DISK_GB": 1}}}, books
    history = [(a["action"], a["result"]) for a in obj["status"]["actions"]]
    assert history[-1] == ("migrate", "Success"), history
