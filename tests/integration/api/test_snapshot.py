"""``kubectl kova snapshot INSTANCE --image NAME`` through Kova's API component
(``instances/snapshot``, registered as the APIService of the real API server),
the compute agent's stream endpoint (in-process, libvirt's test:///default
driver: the domain is paused and resumed by libvirt, the disk is a real qcow2
overlay that ``qemu-img`` flattens) and the image store (``kova images serve``
over HTTPS), which fills the TenantImage the API component created, saving,
at the request.  The marker is written into the
source's disk with ``qemu-io`` (there is no guest on the test driver)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time

import httpx
import pytest

from kova.crds import names as contract
from tests.fixtures.agents import G, V
from tests.fixtures.vm import PLUGIN, plugin
from tests.helpers import wait_for
from tests.integration.images.test_image_store import store  # noqa: F401

MARKER = ["-c", "write -P 0x5a 1M 64k"]
READ_MARKER = ["-c", "read -P 0x5a 1M 64k"]


def _qemu_io(path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "qcow2", *args, str(path)], capture_output=True,
                          text=True, check=False)


@pytest.fixture
def source(harness, small_image, kova_api, store):  # noqa: F811
    return _source(harness, small_image, kova_api, store, {"osDistro": "debian"})


@pytest.fixture
def quiescing(harness, small_image, kova_api, store):  # noqa: F811
    """Instance src of an Image whose properties.requireQuiesce is true."""
    return _source(harness, small_image, kova_api, store,
                   {"osDistro": "debian", "requireQuiesce": True})


def _source(harness, small_image, kova_api, store, properties: dict):  # noqa: F811
    """Instance src, Running, of Image base-<host> of ``properties``, on an
    agent with its stream endpoint and the image store: its disk."""
    pki = kova_api.pki
    harness.agent(stream_cert_file=str(pki.agent_crt), stream_key_file=str(pki.agent_key),
                  stream_client_ca_file=str(pki.ca_crt), stream_port=0,
                  stream_bind="127.0.0.1", image_ca_file=str(store.ca),
                  image_store_url=store.url)
    base = f"base-{harness.host}"
    harness.image(base, small_image, properties=properties)
    uid = harness.instance("src", base)["metadata"]["uid"]
    harness.wait_phase("src", "Running")
    wait_for(lambda: ((harness.host_obj() or {}).get("status") or {}).get("streamEndpoint"),
             30, 0.2, "the Host's streamEndpoint")
    return harness.tmp / "instances" / uid / "disk.qcow2"


def test_snapshot_into_a_tenant_image_boots_after_the_source_is_gone(
        harness, source, store, make_user, namespace):  # noqa: F811
    ns = namespace
    written = _qemu_io(source, *MARKER)
    assert written.returncode == 0, written.stderr
    assert _qemu_io(source, "-r", *READ_MARKER).returncode == 0
    editor = make_user("editor", "kova-edit", ns)
    viewer = make_user("viewer", "kova-view", ns)

    out = plugin(viewer, "snapshot", "src", "--image", "golden")
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (out.stdout, out.stderr)
    out = plugin(editor, "snapshot", "src", "--image", "Not_A_Name")
    assert out.returncode != 0 and "not a valid TenantImage name" in out.stderr, out.stderr

    out = plugin(editor, "snapshot", "src", "--image", "golden")
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert f"tenantimage.kova.dev/golden created from instance {ns}/src" in out.stdout
    assert f"snapshotting instance {ns}/src" in out.stderr

    img = harness.custom.get_namespaced_custom_object(G, V, ns, contract.TENANT_IMAGES,
                                                      "golden")
    notes = img["metadata"]["annotations"]
    assert notes["kova.dev/snapshot-of"] == f"{ns}/src" and notes["kova.dev/snapshot-time"]
    cond = next(c for c in img["status"]["conditions"] if c["type"] == "Available")
    assert cond["status"] == "True" and cond["reason"] == "Stored", cond
    stored = store.root / ".namespaces" / ns / "golden" / "image.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(stored)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info and info["virtual-size"] == 1 << 30, info
    assert _qemu_io(stored, "-r", *READ_MARKER).returncode == 0  # the marker came along
    # The guest runs on (paused only for the copy), and the history says what happened.
    status = harness.get("src")["status"]
    assert status["powerState"] == "Running"
    (entry,) = [a for a in status["actions"] if a["action"] == "snapshot"]
    assert entry["result"] == "Success" and entry["user"] == editor.username, entry
    assert entry["message"].startswith(f"TenantImage {ns}/golden: "), entry
    assert entry["image"] == "golden" and entry["attempt"] == 1, entry
    # No guest agent answers on the test driver: crash-consistent, and said so;
    # neither the request nor the image asked for a mode: auto by default.
    assert entry["quiesce"] == "auto" and entry["quiesceFrom"] == "default", entry
    assert "not quiesced (no guest agent is connected on its channel): crash-consistent" \
        in entry["message"], entry
    # The very object created at the request, filled by the store.
    assert img["metadata"]["uid"] == entry["imageUID"], (img["metadata"], entry)
    assert notes[contract.ANNOTATION_SNAPSHOT_REQUEST] == entry["requestId"], notes
    assert "saving" not in img["spec"] and img["spec"]["sha256"] == img["status"]["sha256"]
    assert img["spec"]["source"]["url"] == f"{store.url}/v1/namespaces/{ns}/images/golden"
    assert img["metadata"]["finalizers"] == ["kova.dev/image-store"], img["metadata"]
    # The source image's properties came along (as a Nova snapshot inherits them).
    base = harness.custom.get_cluster_custom_object(G, V, contract.IMAGES,
                                                    f"base-{harness.host}")
    assert img["spec"]["properties"] == base["spec"]["properties"], img["spec"]
    assert img["spec"]["properties"]["osDistro"] == "debian"
    assert img["spec"]["properties"]["requireQuiesce"] is False
    assert contract.LABEL_SNAPSHOT_IN_PROGRESS not in (
        harness.get("src")["metadata"].get("labels") or {})

    # The same name again: refused at the request (409), before anything is
    # copied or recorded; nothing replaced.
    out = plugin(editor, "snapshot", "src", "--image", "golden")
    assert out.returncode != 0, out.stdout
    assert f"TenantImage {ns}/golden already exists: nothing was copied" in out.stderr, \
        out.stderr
    assert [a["requestId"] for a in harness.get("src")["status"]["actions"]
            if a["action"] == "snapshot"] == [entry["requestId"]]
    again = _tenant_image(harness, ns, "golden")
    assert again["metadata"]["uid"] == img["metadata"]["uid"]
    assert again["spec"]["sha256"] == img["spec"]["sha256"]

    # The source goes; a new Instance boots from the snapshot, with the marker.
    harness.delete("src")
    wait_for(lambda: harness.get("src") is None, 20, what="src deleted")
    assert not source.exists()
    uid = harness.instance("copy", "golden", image_kind="TenantImage")["metadata"]["uid"]
    harness.wait_phase("copy", "Running", timeout=30)
    disk = harness.tmp / "instances" / uid / "disk.qcow2"
    assert _qemu_io(disk, "-r", "-U", *READ_MARKER).returncode == 0

    # Its TenantImage, once it requires quiescing, decides for the copy's snapshots.
    harness.custom.patch_namespaced_custom_object(
        G, V, ns, contract.TENANT_IMAGES, "golden", {"spec": {"properties": {
            "requireQuiesce": True}}})
    out = plugin(editor, "snapshot", "copy", "--image", "golden-2", "--quiesce", "off")
    assert out.returncode != 0, out.stdout
    assert ("TenantImage golden requires quiescing (properties.requireQuiesce, Glance's "
            "os_require_quiesce): a snapshot of instance copy with quiesce off is refused") \
        in out.stderr, out.stderr


def test_a_snapshot_requiring_quiescing_is_refused_without_a_guest_agent(
        harness, source, store, make_user, namespace):  # noqa: F811
    """``--quiesce required`` of a guest whose channel has no agent: the
    action ends Error ``QuiesceFailed`` before anything is copied, with a
    SnapshotFailed Event; the TenantImage made at the request is marked
    SnapshotFailed, no copy beside the disk."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    out = plugin(editor, "snapshot", "src", "--image", "calm", "--quiesce", "required")
    assert out.returncode != 0, (out.stdout, out.stderr)
    assert ("QuiesceFailed: the snapshot requires quiescing and no guest agent is connected "
            "on its channel") in out.stderr, out.stderr
    (entry,) = [a for a in harness.get("src")["status"]["actions"] if a["action"] == "snapshot"]
    assert entry["result"] == "Error" and entry["quiesce"] == "required", entry
    # The TenantImage made at the request: marked failed, with no file.
    img = wait_for(lambda: (i := _tenant_image(harness, ns, "calm")) and any(
        c["type"] == "Available" and c["reason"] == "SnapshotFailed"
        for c in (i.get("status") or {}).get("conditions") or []) and i,
        20, 0.2, "the TenantImage marked SnapshotFailed")
    assert img["spec"].get("saving") and "source" not in img["spec"], img["spec"]
    assert not list(source.parent.glob("snapshot-*.qcow2"))
    assert not (source.parent / "fsfrozen").exists()
    wait_for(lambda: [e for e in harness.core.list_namespaced_event(ns).items
                      if e.reason == "SnapshotFailed" and "QuiesceFailed" in e.message],
             20, 0.5, "a SnapshotFailed Event")
    assert harness.get("src")["status"]["powerState"] == "Running"


def test_an_image_requiring_quiescing_decides_a_snapshot_without_quiesce(
        harness, quiescing, store, make_user, namespace):  # noqa: F811
    """An Instance whose Image has properties.requireQuiesce: less than
    required asked explicitly is refused at the request (409
    QuiesceRequired, naming the property and the image), nothing created or
    recorded; without --quiesce the snapshot requires quiescing, and the
    guest of the test driver, with no agent on its channel, is refused
    QuiesceFailed like --quiesce required, the action saying the image
    required it; the TenantImage made at the request has the image's
    properties."""
    ns = namespace
    image = f"base-{harness.host}"
    editor = make_user("editor", "kova-edit", ns)
    for mode in ("off", "auto"):
        out = plugin(editor, "snapshot", "src", "--image", "loose", "--quiesce", mode)
        assert out.returncode != 0, (out.stdout, out.stderr)
        assert (f"Image {image} requires quiescing (properties.requireQuiesce, Glance's "
                f"os_require_quiesce): a snapshot of instance src with quiesce {mode} is "
                "refused; snapshot it without --quiesce") in out.stderr, out.stderr
    # Machine-readable through the API server: 409, Kova's reason in the causes.
    answer = _put_as(editor, f"/apis/{contract.SUBRESOURCE_API_VERSION}/namespaces/{ns}/"
                     "instances/src/snapshot", {"image": "loose", "quiesce": "off"})
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Conflict", 409), body
    (cause,) = body["details"]["causes"]
    assert cause["reason"] == "QuiesceRequired" and "properties.requireQuiesce" in \
        cause["message"] and f"Image {image}" in cause["message"], cause
    assert _tenant_image(harness, ns, "loose") is None
    assert not [a for a in harness.get("src")["status"].get("actions") or []
                if a["action"] == "snapshot"]

    out = plugin(editor, "snapshot", "src", "--image", "calm")
    assert out.returncode != 0, (out.stdout, out.stderr)
    assert ("QuiesceFailed: the snapshot requires quiescing and no guest agent is connected "
            f"on its channel (quiesce required by Image {image} (properties.requireQuiesce))"
            ) in out.stderr, out.stderr
    (entry,) = [a for a in harness.get("src")["status"]["actions"] if a["action"] == "snapshot"]
    assert entry["result"] == "Error" and entry["quiesce"] == "required", entry
    assert entry["quiesceFrom"] == f"Image {image}", entry
    img = wait_for(lambda: (i := _tenant_image(harness, ns, "calm")) and _available(i).get(
        "reason") == "SnapshotFailed" and i, 20, 0.2, "the TenantImage marked SnapshotFailed")
    assert img["spec"]["properties"]["requireQuiesce"] is True, img["spec"]
    assert img["spec"]["properties"]["osDistro"] == "debian", img["spec"]
    assert not list(quiescing.parent.glob("snapshot-*.qcow2"))
    wait_for(lambda: [e for e in harness.core.list_namespaced_event(ns).items
                      if e.reason == "SnapshotFailed" and "QuiesceFailed" in e.message
                      and f"required by Image {image}" in e.message],
             20, 0.5, "a SnapshotFailed Event naming the image")
    assert harness.get("src")["status"]["powerState"] == "Running"


def _put_as(user, path: str, query: dict) -> httpx.Response:
    """``PUT path?query`` through the API server with ``user``'s credentials."""
    cfg = json.loads(user.kubeconfig.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    token = cfg["users"][0]["user"]["token"]
    return httpx.put(cluster["server"] + path, params=query, timeout=60,
                     verify=ssl.create_default_context(
                         cafile=cluster["certificate-authority"]),
                     headers={"Authorization": f"Bearer {token}"})


def test_snapshot_is_accepted_at_once_and_completes_later(harness, source, store, make_user,
                                                          namespace):  # noqa: F811
    """The API component answers before the snapshot is done: the image store
    (a real process) is stopped (SIGSTOP) so the agent's upload cannot end
    while the request is answered; the TenantImage is there at once, saving
    (no source, Available=False, reason Saving). A second snapshot to another
    name meanwhile is refused by the agent: its TenantImage is marked
    SnapshotFailed, and deleting it frees the name. Once the store runs on,
    the snapshot completes, the history says so and the TenantImage is the
    same object, filled."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        out = plugin(editor, "snapshot", "src", "--image", "later", "--no-wait")
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert "accepted (request req-" in out.stdout, out.stdout
        (entry,) = [a for a in harness.get("src")["status"]["actions"]
                    if a["action"] == "snapshot"]
        assert entry["result"] == "InProgress" and entry["requestId"] in out.stdout, entry
        saving = _tenant_image(harness, ns, "later")
        assert saving["spec"]["saving"] is True and saving["spec"]["format"] == "qcow2"
        assert "source" not in saving["spec"] and "sha256" not in saving["spec"], saving
        assert saving["metadata"]["uid"] == entry["imageUID"]
        notes = saving["metadata"]["annotations"]
        assert notes[contract.ANNOTATION_SNAPSHOT_OF] == f"{ns}/src"
        assert notes[contract.ANNOTATION_SNAPSHOT_REQUEST] == entry["requestId"]
        assert not saving["metadata"].get("ownerReferences")
        cond = _available(saving)
        assert (cond["status"], cond["reason"]) == ("False", "Saving"), cond
        assert entry["requestId"] in cond["message"], cond
        # A second snapshot of the same Instance meanwhile: the agent refuses it.
        out = plugin(editor, "snapshot", "src", "--image", "other", timeout=60)
        assert out.returncode != 0 and "snapshot of this Instance is in progress" in out.stderr
        failed = wait_for(lambda: (c := _available(_tenant_image(harness, ns, "other")))
                          .get("reason") == "SnapshotFailed" and c, 20, 0.2,
                          "the refused snapshot's TenantImage marked failed")
        assert "snapshot of this Instance is in progress" in failed["message"], failed
        assert "delete this TenantImage to use its name again" in failed["message"], failed
        harness.custom.delete_namespaced_custom_object(G, V, ns, contract.TENANT_IMAGES,
                                                       "other")
        assert _tenant_image(harness, ns, "other") is None  # no finalizer: gone at once
        assert _available(_tenant_image(harness, ns, "later"))["reason"] == "Saving"
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)

    def finished() -> dict | None:
        acts = harness.get("src")["status"]["actions"]
        done = [a for a in acts if a["requestId"] == entry["requestId"]
                and a["result"] != "InProgress"]
        return done[0] if done else None

    final = wait_for(finished, 120, 0.5, "the snapshot finished")
    assert final["result"] == "Success", final
    assert final["message"].startswith(f"TenantImage {ns}/later: "), final
    img = _tenant_image(harness, ns, "later")
    assert img and img["metadata"]["annotations"]["kova.dev/snapshot-of"] == f"{ns}/src"
    assert img["metadata"]["uid"] == saving["metadata"]["uid"] and "saving" not in img["spec"]
    assert _available(img)["reason"] == "Stored" and img["spec"]["minDiskGiB"] == 1
    assert (store.root / ".namespaces" / ns / "later" / "image.qcow2").is_file()


def test_a_tenant_image_deleted_while_saved_refuses_the_upload(
        harness, source, store, make_user, namespace):  # noqa: F811
    """kubectl delete of a snapshot's TenantImage while it is saved: it goes at
    once (no finalizer yet); a TenantImage of the same name created meanwhile
    by the user is another object. The store, once it runs on, refuses the
    upload (ImageDeleted), fills nothing and keeps no file; the snapshot ends
    Error with that reason and a SnapshotFailed Event, and the user's own
    TenantImage is left as it was."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        entry = _requested(harness, editor, "doomed")
        _wait_uploading(harness)
        harness.custom.delete_namespaced_custom_object(G, V, ns, contract.TENANT_IMAGES,
                                                       "doomed")
        assert _tenant_image(harness, ns, "doomed") is None
        mine = {"apiVersion": contract.API_VERSION, "kind": "TenantImage",
                "metadata": {"name": "doomed", "namespace": ns},
                "spec": {"source": {"url": "https://images.example/mine.qcow2"}}}
        harness.custom.create_namespaced_custom_object(G, V, ns, contract.TENANT_IMAGES, mine)
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)

    final = wait_for(lambda: _ended(harness, entry["requestId"]), 120, 0.5,
                     "the snapshot ended")
    assert final["result"] == "Error", final
    assert final["message"].startswith("ImageDeleted: "), final
    assert f"TenantImage {ns}/doomed was deleted while its snapshot was saved" in \
        final["message"], final
    wait_for(lambda: [e for e in harness.core.list_namespaced_event(ns).items
                      if e.reason == "SnapshotFailed" and entry["requestId"] in e.message
                      and "ImageDeleted" in e.message], 20, 0.5, "a SnapshotFailed Event")
    theirs = _tenant_image(harness, ns, "doomed")
    assert theirs["spec"]["source"] == mine["spec"]["source"], theirs["spec"]
    assert "sha256" not in theirs["spec"] and not theirs["metadata"].get("finalizers")
    assert not (theirs.get("status") or {}).get("conditions"), theirs.get("status")
    assert contract.ANNOTATION_SNAPSHOT_REQUEST not in (
        theirs["metadata"].get("annotations") or {})
    assert not (store.root / ".namespaces" / ns / "doomed").exists()
    uploads = store.root / ".uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not list(source.parent.glob("snapshot-*.qcow2"))


def test_snapshot_progress_is_written_and_shown(harness, source, store, make_user,
                                                namespace, tmp_path):  # noqa: F811
    """The agent writes the snapshot's progress into status.snapshot (the
    request id, the phase, its bytes) and ``kubectl kova snapshot`` shows it:
    with the store stopped (SIGSTOP) the upload cannot go on, so the
    Instance stays at phase Uploading, of the copy's size, until it runs on;
    then the snapshot is Stored, all its bytes sent."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    err_path = tmp_path / "plugin.err"
    os.kill(store.proc.pid, signal.SIGSTOP)
    follow = None
    try:
        with open(err_path, "w") as err:
            follow = subprocess.Popen(
                [PLUGIN, "snapshot", "src", "--image", "progress"], stdout=subprocess.PIPE,
                stderr=err, text=True, env={**os.environ, "KUBECONFIG": str(editor.kubeconfig)})

        def uploading() -> dict | None:
            snap = (harness.get("src").get("status") or {}).get("snapshot") or {}
            return snap if snap.get("phase") == "Uploading" else None

        snap = wait_for(uploading, 60, 0.2, "status.snapshot at phase Uploading")
        (entry,) = [a for a in harness.get("src")["status"]["actions"]
                    if a["action"] == "snapshot"]
        assert snap["requestId"] == entry["requestId"] and entry["result"] == "InProgress"
        assert snap["image"] == "progress" and snap["bytesTotal"] > 0, snap
        assert 0 <= snap["bytesDone"] < snap["bytesTotal"], snap
        wait_for(lambda: "snapshot in progress" in err_path.read_text()
                 and " uploading " in err_path.read_text(), 30, 0.2,
                 "the plugin's progress line")
    except BaseException:
        if follow is not None:
            follow.kill()
        raise
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)
    out, _ = follow.communicate(timeout=120)
    assert follow.returncode == 0, (out, err_path.read_text())
    line = next(ln for ln in err_path.read_text().splitlines() if " uploading " in ln)
    assert "% (" in line and " MiB)" in line, line
    final = harness.get("src")["status"]["snapshot"]
    stored = store.root / ".namespaces" / ns / "progress" / "image.qcow2"
    assert final["phase"] == "Stored" and final["requestId"] == entry["requestId"], final
    assert final["bytesDone"] == final["bytesTotal"] == stored.stat().st_size, final


def _instance_watches(kubectl) -> float:
    """The watches of one Instance by name the API server serves now (its
    gauge apiserver_longrunning_requests, scope ``resource``): the operator
    and the agents watch collections, never one Instance."""
    total = 0.0
    for line in kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if (line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line
                and 'resource="instances"' in line and 'scope="resource"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_plugin_follows_a_snapshot_by_watching_its_instance(
        harness, source, store, make_user, namespace, kubectl, tmp_path):  # noqa: F811
    """``kubectl kova snapshot`` waits for the end of the snapshot with a
    watch of its Instance (the API server counts it while the store is
    stopped and the snapshot cannot end), not by reading it again and
    again; for a user whose role allows ``get`` on Instances but not
    ``watch`` it reads the Instance every half second instead, and the
    snapshot is followed to its end all the same."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    assert _instance_watches(kubectl) == 0
    os.kill(store.proc.pid, signal.SIGSTOP)
    follow = None
    try:
        follow = subprocess.Popen(
            [PLUGIN, "snapshot", "src", "--image", "watched"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "KUBECONFIG": str(editor.kubeconfig)})
        wait_for(lambda: _instance_watches(kubectl) >= 1, 60, 0.2,
                 "the plugin's watch of the Instance")
    except BaseException:
        if follow is not None:
            follow.kill()
        raise
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 0, (out, err)
    assert f"tenantimage.kova.dev/watched created from instance {ns}/src" in out, (out, err)
    wait_for(lambda: _instance_watches(kubectl) == 0, 30, 0.2, "the watch closed")

    role = f"snapshot-without-watch-{ns}"
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role}, "rules": [
            {"apiGroups": [contract.GROUP], "resources": ["instances"], "verbs": ["get"]},
            {"apiGroups": [contract.GROUP], "resources": [contract.TENANT_IMAGES],
             "verbs": ["get", "create"]},
            {"apiGroups": [contract.SUBRESOURCE_GROUP], "resources": ["instances/snapshot"],
             "verbs": ["update"]}]}))
    try:
        reader = make_user("reader", role, ns)
        out = plugin(reader, "snapshot", "src", "--image", "read", timeout=120)
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert f"tenantimage.kova.dev/read created from instance {ns}/src" in out.stdout
    finally:
        kubectl("delete", "clusterrole", role, check=False)


def test_snapshots_outlive_a_killed_api_component(harness, source, store, make_user,
                                                  namespace, kova_api):  # noqa: F811
    """The API component is killed (SIGKILL) while a snapshot uploads into
    the stopped store (SIGSTOP).  Started again, it takes the snapshot up
    (it finds the Instance by its label kova.dev/snapshot-in-progress): it
    ends Success once the store runs on (the agent finished it), and the
    label goes.  Then a snapshot recorded by an API component that died
    before it reached the agent (its InProgress action written here as an
    older API component left it: no label, the image named only in the
    message) is not looked at while its Instance carries no label; labelled,
    it is taken up: the agent answers 410 SnapshotInterrupted (it never had
    it), nothing was stored, so it is taken again -- attempt 2, a
    SnapshotRetried Event -- and ends Success with its TenantImage; no
    upload or copy is left behind.  Last, an unlabelled action at its last
    attempt is taken up by the first round of a restarted API component
    (every Instance listed once) and ends Error."""
    ns = namespace
    editor = make_user("editor", "kova-edit", ns)
    os.kill(store.proc.pid, signal.SIGSTOP)
    try:
        entry = _requested(harness, editor, "survivor")
        labels = harness.get("src")["metadata"]["labels"]
        assert labels[contract.LABEL_SNAPSHOT_IN_PROGRESS] == entry["requestId"], labels
        _wait_uploading(harness)
        kova_api.proc.kill()
        kova_api.proc.wait(10)
        kova_api.start_again()
    finally:
        os.kill(store.proc.pid, signal.SIGCONT)

    def labelled() -> bool:
        return contract.LABEL_SNAPSHOT_IN_PROGRESS in (
            harness.get("src")["metadata"].get("labels") or {})

    final = wait_for(lambda: _ended(harness, entry["requestId"]), 120, 0.5,
                     "the snapshot taken up")
    assert final["result"] == "Success", final
    assert final["message"].startswith(f"TenantImage {ns}/survivor: "), final
    img = _tenant_image(harness, ns, "survivor")
    assert img and img["metadata"]["annotations"]["kova.dev/snapshot-of"] == f"{ns}/src"
    wait_for(lambda: not labelled(), 20, 0.2, "the label removed")

    ghost = {"action": "snapshot", "requestId": "req-lost-before-the-agent",
             "user": editor.username, "startTime": final["finishTime"],
             "result": "InProgress", "message": "snapshot to TenantImage ghost"}
    harness.custom.patch_namespaced_custom_object_status(
        G, V, ns, "instances", "src",
        {"status": {"actions": harness.get("src")["status"]["actions"] + [ghost]}})
    time.sleep(5)  # five rounds of --snapshot-resume-seconds 1: the Instance is not listed
    (still,) = [a for a in harness.get("src")["status"]["actions"]
                if a["requestId"] == ghost["requestId"]]
    assert still["result"] == "InProgress" and "attempt" not in still, still
    harness.custom.patch_namespaced_custom_object(
        G, V, ns, "instances", "src",
        {"metadata": {"labels": {contract.LABEL_SNAPSHOT_IN_PROGRESS: ghost["requestId"]}}})
    again = wait_for(lambda: _ended(harness, ghost["requestId"]), 120, 0.5,
                     "the lost snapshot taken")
    assert again["result"] == "Success" and again["attempt"] == 2, again
    assert again["message"].startswith(f"TenantImage {ns}/ghost: "), again
    img = _tenant_image(harness, ns, "ghost")
    assert img and img["metadata"]["annotations"]["kova.dev/snapshot-of"] == f"{ns}/src"
    assert (store.root / ".namespaces" / ns / "ghost" / "image.qcow2").is_file()
    uploads = store.root / ".uploads"
    assert not uploads.exists() or not any(uploads.iterdir())
    assert not list(source.parent.glob("snapshot-*.qcow2"))
    wait_for(lambda: not labelled(), 20, 0.2, "the label removed")
    wait_for(lambda: [e for e in harness.core.list_namespaced_event(ns).items
                      if e.reason == "SnapshotRetried" and "attempt 2 of 3" in e.message
                      and "SnapshotInterrupted" in e.message
                      and ghost["requestId"] in e.message],
             20, 0.5, "a SnapshotRetried Event for the lost snapshot")


    # A snapshot lost at its last attempt (--snapshot-attempts 3; the entry
    # as the API component leaves it after two lost attempts), its Instance
    # unlabelled: the labelled rounds do not see it, an API component that
    # starts lists every Instance once and takes it up; it ends Error.
    last = {"action": "snapshot", "requestId": "req-lost-three-times",
            "user": editor.username, "startTime": again["finishTime"], "result": "InProgress",
            "image": "never", "attempt": 3, "message": "attempt 3 of 3: snapshot to "
            "TenantImage never taken again (SnapshotInterrupted: ...)"}
    harness.custom.patch_namespaced_custom_object_status(
        G, V, ns, "instances", "src",
        {"status": {"actions": harness.get("src")["status"]["actions"] + [last]}})
    assert not labelled()
    kova_api.proc.kill()
    kova_api.proc.wait(10)
    kova_api.start_again()
    lost = wait_for(lambda: _ended(harness, last["requestId"]), 60, 0.5,
                    "the last attempt ended")
    assert lost["result"] == "Error" and lost["attempt"] == 3, lost
    assert lost["message"].startswith("SnapshotInterrupted: "), lost
    assert lost["message"].endswith("(taken 3 times, lost each time)"), lost
    assert _tenant_image(harness, ns, "never") is None
    wait_for(lambda: not labelled(), 20, 0.2, "the label removed")
    wait_for(lambda: [e for e in harness.core.list_namespaced_event(ns).items
                      if e.reason == "SnapshotFailed" and last["requestId"] in e.message],
             20, 0.5, "a SnapshotFailed Event for the snapshot lost three times")


def _available(img: dict | None) -> dict:
    """The Available condition of a TenantImage ({} when it has none)."""
    return next((c for c in ((img or {}).get("status") or {}).get("conditions") or []
                 if c["type"] == "Available"), {})


def _requested(harness, editor, image: str) -> dict:
    """``kubectl kova snapshot src --image IMAGE --no-wait`` accepted: its action."""
    out = plugin(editor, "snapshot", "src", "--image", image, "--no-wait")
    assert out.returncode == 0, (out.stdout, out.stderr)
    (entry,) = [a for a in harness.get("src")["status"]["actions"]
                if a["action"] == "snapshot"]
    return entry


def _wait_uploading(harness) -> None:
    wait_for(lambda: ((harness.get("src").get("status") or {}).get("snapshot") or {})
             .get("phase") == "Uploading", 60, 0.2, "the upload under way")


def _ended(harness, req: str) -> dict | None:
    """Action ``req`` of Instance src once it has ended, else None."""
    acts = harness.get("src")["status"]["actions"]
    return next((a for a in acts if a["requestId"] == req and a["result"] != "InProgress"),
                None)


def _tenant_image(harness, ns: str, name: str) -> dict | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return harness.custom.get_namespaced_custom_object(G, V, ns, contract.TENANT_IMAGES,
                                                           name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
