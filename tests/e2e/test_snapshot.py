"""Tenant images and snapshots with real QEMU guests, on a two-host stack
(Placement, the operator, two agents each with its own libvirtd, the API
component) with Kova's image store (``kova images serve`` over HTTPS),
driven with ``kubectl kova`` as a user bound to kova-edit:

the user uploads the test image as a TenantImage of its namespace and boots an
Instance from it; inside the running guest it writes a marker to the root disk
(from the serial console), snapshots the Instance into a second TenantImage
(the guest runs on: the copy is made without pausing it), boots a new
Instance from the snapshot on the other host (an anti-affinity ServerGroup
keeps the two apart) and reads the marker there; then deletes the source
Instance and boots the snapshot once more.

A snapshot whose agent is killed (SIGKILL) midway is taken again once the
agent is back, and stored once, whole; one whose agent is killed in every
attempt ends Error SnapshotInterrupted, leaving nothing behind, and the next
snapshot of the same Instance is stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from kova.dev.stack import Stack
from tests.e2e.test_access import Session
from tests.e2e.test_cold_migration import on_console
from tests.helpers import BOOT_TIMEOUT, wait_for
from tests.integration.images.test_image_store import store  # noqa: F401
from tests.support.stacks import kova_editor, temp_namespace, two_host_stack

#: A sector near the end of the 1 GiB root disk, past the test image's files.
SECTOR = 1800000


@pytest.fixture
def ns(kubectl):
    with temp_namespace(kubectl, "snapshot-e2e") as name:
        yield name


@pytest.fixture
def stack(k8s, kova_crds, kova_api, libvirtd, test_image, ns, store, tmp_path):  # noqa: F811
    st = Stack(root=tmp_path / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
               agent_args=["--image-store-url", store.url, "--image-ca-file", str(store.ca),
                           "--image-url-allowed-network", "127.0.0.0/8"])
    with two_host_stack(st, k8s, ns, "snap") as started:
        yield started


def _instance(kubectl, ns: str, name: str, image: str, group: str | None = None,
              user_data: str = "") -> str:
    """Instance ``name`` of TenantImage ``image`` applied; its uid."""
    kubectl("apply", "-f", "-", input=f"""
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: {name}, namespace: {ns}}}
spec:
  resources: {{vcpus: 1, memoryMiB: 192, diskGiB: 1}}
  imageRef: {{name: {image}, kind: TenantImage}}
  hostname: vm
""" + (f"  serverGroupRef: {{name: {group}}}\n" if group else "")
        + (f"  userData: {{inline: {json.dumps(user_data)}}}\n" if user_data else ""))
    return wait_for(lambda: kubectl("-n", ns, "get", "instance", name, "-o",
                                    "jsonpath={.metadata.uid}").stdout.strip(),
                    30, 0.5, f"{name}'s uid")


def _host(kubectl, ns: str, name: str) -> str:
    return wait_for(lambda: kubectl("-n", ns, "get", "instance", name, "-o",
                                    "jsonpath={.status.host}").stdout.strip(),
                    BOOT_TIMEOUT, 1.0, f"{name}'s host")


def _wait_shell(s: Session, name: str) -> None:
    wait_for(lambda: "KOVA-SHELL: ttyS0" in s.kova("logs", name)[1], BOOT_TIMEOUT, 1.0,
             f"{name}'s shell")


def _read_mark(s: Session, name: str) -> str:
    return on_console(s, f"dd if=/dev/vda bs=512 skip={SECTOR} count=1 2>/dev/null "
                      "| head -c 20; echo", r"(KOVA-MARK-[0-9a-f]{8})", name)


def test_snapshot_of_a_running_guest_boots_on_the_other_host(stack, store, test_image,  # noqa: F811
                                                              k8s, kubectl, ns):
    user = kova_editor(k8s, ns, "owner", stack.root)
    s = Session(ns, user, kubectl, "")
    code, out, err = s.kova("image", "upload", str(Path(test_image).resolve()), "--name",
                            "base", "--format", "qcow2", "-n", ns, "--store", store.url,
                            "--store-ca-file", str(store.ca))
    assert code == 0 and f"TenantImage {ns}/base is Available" in out, (out, err)
    kubectl("apply", "-f", "-", input=f"""
apiVersion: kova.dev/v1alpha1
kind: ServerGroup
metadata: {{name: apart, namespace: {ns}}}
spec: {{policy: anti-affinity}}
""")
    _instance(kubectl, ns, "src", "base", group="apart")
    _wait_shell(s, "src")
    src_host = _host(kubectl, ns, "src")

    mark = f"KOVA-MARK-{uuid.uuid4().hex[:8]}"
    assert on_console(s, f"echo {mark} | dd of=/dev/vda bs=512 seek={SECTOR} 2>/dev/null; "
                      "sync; echo WROTE-$?", r"WROTE-(\d+)", "src") == "0"
    code, out, err = s.kova("snapshot", "src", "--image", "snap", timeout=600)
    assert code == 0 and f"tenantimage.kova.dev/snap created from instance {ns}/src" in out, \
        (out, err)
    # The source guest runs on; the copy was made without pausing it.
    assert on_console(s, "echo ALIVE-$((40+2))", r"ALIVE-(\d+)", "src") == "42"
    history = kubectl("-n", ns, "get", "instance", "src", "-o",
                      "jsonpath={.status.actions}").stdout
    assert "guest not paused" in history, history

    _instance(kubectl, ns, "copy", "snap", group="apart")
    _wait_shell(s, "copy")
    assert _host(kubectl, ns, "copy") not in ("", src_host)
    assert _read_mark(s, "copy") == mark

    # Without its source the snapshot still boots, with the marker.
    kubectl("-n", ns, "delete", "instance", "src", "--wait=true", "--timeout=120s")
    _instance(kubectl, ns, "again", "snap")
    _wait_shell(s, "again")
    assert _read_mark(s, "again") == mark
    for name in ("copy", "again"):
        kubectl("-n", ns, "delete", "instance", name, "--wait=true", "--timeout=120s",
                check=False)


def _upload_base(s: Session, store, test_image, ns: str) -> None:  # noqa: F811
    code, out, err = s.kova("image", "upload", str(Path(test_image).resolve()), "--name",
                            "base", "--format", "qcow2", "-n", ns, "--store", store.url,
                            "--store-ca-file", str(store.ca))
    assert code == 0 and f"TenantImage {ns}/base is Available" in out, (out, err)


def _running_source(s: Session, store, test_image, kubectl, ns: str) -> str:  # noqa: F811
    """Instance ``src`` of the uploaded test image, Running; its host."""
    _upload_base(s, store, test_image, ns)
    _instance(kubectl, ns, "src", "base")
    host = _host(kubectl, ns, "src")
    wait_for(lambda: _status(kubectl, ns, "src").get("phase") == "Running",
             BOOT_TIMEOUT, 1.0, "src Running")
    return host


def _status(kubectl, ns: str, name: str) -> dict:
    out = kubectl("-n", ns, "get", "instance", name, "-o", "json").stdout
    return json.loads(out).get("status") or {}


def test_a_snapshot_whose_agent_is_killed_midway_is_taken_again(stack, store,  # noqa: F811
                                                                  test_image, k8s, kubectl, ns):
    """The image store is stopped (SIGSTOP) so the upload cannot end; the
    agent of the Instance's host is killed (SIGKILL) while it uploads and
    started again, the store runs on.  The API component's connection to
    the agent was cut off: it asks the agent again, which no longer has the
    snapshot (410), no TenantImage was stored, so it takes the snapshot
    again (attempt 2, a SnapshotRetried Event, same request id) and the
    action ends Success, with one TenantImage whose sha256 and size are
    those of the stored file -- the object created, saving, at the request,
    kept through the retry and filled by the store; no copy is left on the
    host, no upload in the store."""
    user = kova_editor(k8s, ns, "owner", stack.root)
    s = Session(ns, user, kubectl, "")
    host = _running_source(s, store, test_image, kubectl, ns)

    def status() -> dict:
        return _status(kubectl, ns, "src")

    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        code, out, err = s.kova("snapshot", "src", "--image", "snap", "--no-wait")
        assert code == 0, (out, err)
        (req,) = [a["requestId"] for a in status()["actions"] if a["action"] == "snapshot"]
        wait_for(lambda: (status().get("snapshot") or {}).get("phase") == "Uploading",
                 BOOT_TIMEOUT, 0.5, "the upload under way")
        saving = json.loads(kubectl("-n", ns, "get", "tenantimage", "snap", "-o",
                                    "json").stdout)
        assert saving["spec"].get("saving") is True, saving["spec"]
        stack.kill(f"agent-{host}")
        stack.start_agent(host)
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)

    def ended() -> dict | None:
        return next((a for a in status()["actions"] if a["requestId"] == req
                     and a["result"] != "InProgress"), None)

    final = wait_for(ended, 600, 1.0, "the snapshot ended")
    assert final["result"] == "Success" and final["attempt"] == 2, final["message"]
    assert final["message"].startswith(f"TenantImage {ns}/snap: "), final
    img = json.loads(kubectl("-n", ns, "get", "tenantimage", "snap", "-o", "json").stdout)
    stored = store.root / ".namespaces" / ns / "snap" / "image.qcow2"
    digest = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert img["status"]["sha256"] == digest, img["status"]
    assert img["status"]["sizeBytes"] == stored.stat().st_size, img["status"]
    assert img["metadata"]["annotations"]["kova.dev/snapshot-of"] == f"{ns}/src"
    # The retry kept the TenantImage created at the request: the store filled it.
    assert img["metadata"]["uid"] == saving["metadata"]["uid"] == final["imageUID"]
    assert "saving" not in img["spec"] and img["spec"]["sha256"] == digest, img["spec"]
    events = kubectl("-n", ns, "get", "events", "-o", "json").stdout
    retried = [e["message"] for e in json.loads(events)["items"]
               if e["reason"] == "SnapshotRetried"]
    assert len(retried) == 1 and "attempt 2 of 3" in retried[0] and req in retried[0], retried
    assert not list((stack.root / "instances" / host).glob("*/snapshot-*.qcow2"))
    uploads = store.root / ".uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    labels = kubectl("-n", ns, "get", "instance", "src", "-o",
                     "jsonpath={.metadata.labels}").stdout
    assert "snapshot-in-progress" not in labels, labels
    kubectl("-n", ns, "delete", "instance", "src", "--wait=true", "--timeout=120s",
            check=False)


def test_a_snapshot_whose_agent_is_killed_in_every_attempt_ends_interrupted(
        stack, store, test_image, k8s, kubectl, ns):  # noqa: F811
    """The image store is stopped (SIGSTOP) so no upload can end, and the
    agent of the Instance's host is killed (SIGKILL) in each attempt --
    once that attempt's copy exists beside the root disk -- and started
    again.  The API component takes the snapshot again after the first and
    the second loss (--snapshot-attempts 3: a SnapshotRetried Event each,
    same request id) and, after the third, ends the action Error
    SnapshotInterrupted with the count of attempts and a Warning Event
    SnapshotFailed.  The TenantImage made at the request is marked
    SnapshotFailed (no file), no copy is left on the host, no upload in the
    store (once it runs on), the label kova.dev/snapshot-in-progress is
    removed; the name stays taken until the owner deletes that TenantImage,
    and a snapshot of the same Instance into it then succeeds."""
    user = kova_editor(k8s, ns, "owner", stack.root)
    s = Session(ns, user, kubectl, "")
    host = _running_source(s, store, test_image, kubectl, ns)
    copies = stack.root / "instances" / host
    attempts = 3  # the API component's --snapshot-attempts (its default)

    def action(req: str) -> dict:
        return next(a for a in _status(kubectl, ns, "src")["actions"]
                    if a["requestId"] == req)

    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        code, out, err = s.kova("snapshot", "src", "--image", "snap", "--no-wait")
        assert code == 0, (out, err)
        (req,) = [a["requestId"] for a in _status(kubectl, ns, "src")["actions"]
                  if a["action"] == "snapshot"]
        seen: set[str] = set()
        for attempt in range(1, attempts + 1):
            def this_attempt_copies(n: int = attempt) -> set[str]:
                if int(action(req).get("attempt") or 1) != n:
                    return set()
                return {p.name for p in copies.glob("*/snapshot-*.qcow2")} - seen

            new = wait_for(this_attempt_copies, BOOT_TIMEOUT, 0.2,
                           f"attempt {attempt}'s copy on {host}")
            seen |= new
            stack.kill(f"agent-{host}")
            stack.start_agent(host)
        final = wait_for(lambda: (a := action(req))["result"] != "InProgress" and a, 300,
                         0.5, "the snapshot ended")
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)

    assert final["result"] == "Error" and final["attempt"] == attempts, final
    assert final["message"].startswith("SnapshotInterrupted: "), final
    assert final["message"].endswith(f"(taken {attempts} times, lost each time)"), final
    assert len(seen) == attempts, seen
    events = json.loads(kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
    retried = sorted(e["message"] for e in events if e["reason"] == "SnapshotRetried")
    assert len(retried) == attempts - 1, retried
    for n, message in enumerate(retried, start=2):
        assert f"attempt {n} of {attempts}" in message and req in message, retried
    assert [e for e in events if e["reason"] == "SnapshotFailed" and req in e["message"]
            and e["type"] == "Warning"], [e["reason"] for e in events]
    # The TenantImage made at the request stays, marked failed, without a file.
    failed = json.loads(kubectl("-n", ns, "get", "tenantimage", "snap", "-o", "json").stdout)
    (cond,) = [c for c in failed["status"]["conditions"] if c["type"] == "Available"]
    assert (cond["status"], cond["reason"]) == ("False", "SnapshotFailed"), cond
    assert failed["spec"].get("saving") and "source" not in failed["spec"], failed["spec"]
    assert not list(copies.glob("*/snapshot-*.qcow2"))
    # The store, running again, meets the dead agents' connections: nothing kept.
    uploads = store.root / ".uploads"
    wait_for(lambda: not uploads.exists() or not any(uploads.iterdir()), 60, 0.5,
             "no upload left in the store")
    assert not (store.root / ".namespaces" / ns / "snap").exists()
    wait_for(lambda: "snapshot-in-progress" not in kubectl(
        "-n", ns, "get", "instance", "src", "-o", "jsonpath={.metadata.labels}").stdout,
        30, 0.5, "the label kova.dev/snapshot-in-progress removed")

    # Its owner deletes it to use the name again; the next snapshot succeeds.
    code, out, err = s.kova("snapshot", "src", "--image", "snap", "--no-wait")
    assert code != 0 and "already exists" in (out + err), (out, err)
    kubectl("-n", ns, "delete", "tenantimage", "snap", "--wait=true", "--timeout=60s")
    code, out, err = s.kova("snapshot", "src", "--image", "snap", timeout=600)
    assert code == 0 and f"tenantimage.kova.dev/snap created from instance {ns}/src" in out, \
        (out, err)
    img = json.loads(kubectl("-n", ns, "get", "tenantimage", "snap", "-o", "json").stdout)
    assert img["metadata"]["annotations"]["kova.dev/snapshot-of"] == f"{ns}/src"
    assert img["metadata"]["uid"] != failed["metadata"]["uid"]
    kubectl("-n", ns, "delete", "instance", "src", "--wait=true", "--timeout=120s",
            check=False)
