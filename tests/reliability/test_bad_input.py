"""Bad input that passes admission but cannot be satisfied.

Five Instances are accepted by the API server and cannot be built as written:
an unknown Flavor, an Image whose URL points at a closed port, one whose host
name does not resolve, an Image needing a bigger root disk (minDiskGiB) than
any host has, and an Image whose virtual size (16 TiB) is larger than the
Instance's disk and any host's.  Each must end in a clear condition (reason, and a message naming what
is wrong) with an Event -- and then stay quiet: over a fixed window the test
counts the operator's scheduling attempts (its outcome counter), the agent's
builds, the Instances' status writes (watch MODIFIED events), the Events and
the operator's log lines, and holds them to what an exponential back-off
allows.  Then each cause is fixed (the Flavor created, the Images re-created
with a URL that answers or a smaller file, a host with a bigger disk joins)
and every Instance must end Running, with exactly one allocation each and no provider
over capacity.

Real components: the kube-apiserver, ``kova operator run`` as a process,
``kova placement serve`` (SQLite), and the compute agent (in-process) on
libvirt's ``test:///default``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from kova.crds import names as contract
from tests.fixtures.agents import harness, operator_process, placement, small_image  # noqa: F401 (fixtures)
from tests.helpers import FileServer, free_port, wait_for
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

G, V = contract.GROUP, contract.VERSION
#: The quiet window: how long the test watches the failed Instances.
WINDOW = 60.0 if long_run() else 20.0
#: The operator's --backoff-max here (exponential back-off from 2 s, +-20 % jitter).
BACKOFF_MAX = 8


@pytest.fixture
def operator(harness, placement, tmp_path):  # noqa: F811
    with operator_process(harness, placement, tmp_path, "--backoff-max", str(BACKOFF_MAX),
                          "--log-format", "text", "--max-attempts", "3",
                          metrics=True, tail=4000) as proc:
        yield proc


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


class WatchCounter:
    """Counts MODIFIED watch events per Instance name in a namespace."""

    def __init__(self, harness) -> None:  # noqa: F811
        from kubernetes import watch

        self.counts: dict[str, int] = {}
        self._w = watch.Watch()
        self._h = harness
        rv = harness.custom.list_namespaced_custom_object(
            G, V, harness.ns, "instances")["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, args=(rv,), daemon=True)
        self._thread.start()

    def _run(self, rv: str) -> None:
        try:
            for ev in self._w.stream(self._h.custom.list_namespaced_custom_object, G, V,
                                     self._h.ns, "instances", resource_version=rv,
                                     timeout_seconds=int(WINDOW) + 30):
                if ev["type"] == "MODIFIED":
                    name = ev["object"]["metadata"]["name"]
                    self.counts[name] = self.counts.get(name, 0) + 1
        except Exception:  # the stream is closed by stop()
            pass

    def stop(self) -> dict[str, int]:
        self._w.stop()
        return dict(self.counts)


def _events(harness) -> dict[str, list[dict]]:  # noqa: F811
    out: dict[str, list[dict]] = {}
    for ev in harness.core.list_namespaced_event(harness.ns).items:
        out.setdefault(ev.involved_object.name, []).append(
            {"reason": ev.reason, "message": ev.message, "count": ev.count or 1})
    return out


def _cond(obj: dict, ctype: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


@pytest.fixture
def big_disk_dir(tmp_path):
    """A directory on a tmpfs of 8 TiB: the instance directory of a second
    host whose DISK_GB (the file system's size, as the agent reads it) is
    larger than the first one's.  tmpfs allocates nothing up front, and the
    qcow2 overlays written there are sparse."""
    path = tmp_path / "big-host"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8T", "kova-test-big-disk", str(path)],
                   check=True)
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_unsatisfiable_instances_fail_clearly_stay_quiet_and_recover(
        harness, placement, operator, small_image, big_disk_dir, k8s_client,
        tmp_path):  # noqa: F811
    agent = harness.agent(placement_url=placement.url)
    wait_for(lambda: (h := harness.host_obj()) and (h.get("status") or {}).get(
        "resourceProviderUUID"), 20, what="provider registered")
    rp = harness.host_obj()["status"]["resourceProviderUUID"]
    disk_total = placement.http.get(
        f"/resource_providers/{rp}/inventories").json()["inventories"]["DISK_GB"]["total"]
    suffix = harness.host

    def flavor(name: str, disk: int) -> None:
        harness.custom.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": contract.API_VERSION, "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": 1, "memoryMiB": 64, "diskGiB": disk}})

    def image(name: str, source: dict, min_disk: int = 0, sha256: str | None = None) -> None:
        spec = {"source": source, "format": "qcow2"}
        if sha256:
            spec["sha256"] = sha256
        if min_disk:
            spec["minDiskGiB"] = min_disk
        harness.custom.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image", "metadata": {"name": name},
            "spec": spec})
        harness.images.append(name)

    def instance(name: str, flavor_name: str, image_name: str, secret: str | None = None) -> None:
        spec = {"flavorRef": {"name": flavor_name}, "imageRef": {"name": image_name}}
        if secret:
            spec["userData"] = {"secretRef": {"name": secret, "key": "userdata"}}
        harness.custom.create_namespaced_custom_object(G, V, harness.ns, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance",
            "metadata": {"name": name, "namespace": harness.ns}, "spec": spec})

    big_disk = max(disk_total * 4, 1024)  # more than any host's DISK_GB
    assert big_disk < 8 * 1024  # fits the second host's 8 TiB (joins in step 3)
    big_host = type(harness)(k8s_client, harness.kubeconfig, harness.ns, tmp_path,
                             f"{harness.host}-big")
    flavors = [f"bad-small-{suffix}", f"bad-big-{suffix}", f"bad-missing-{suffix}"]
    names = ("no-flavor", "closed-port", "nxdomain", "too-big", "virtual-too-big", "no-secret")
    closed_port = free_port()  # nothing listens there (yet)
    closed_url = f"http://127.0.0.1:{closed_port}/small.qcow2"
    nxdomain_url = f"http://kova-image-{uuid.uuid4().hex[:8]}.invalid/small.qcow2"
    try:
        flavor(flavors[0], 1)
        flavor(flavors[1], big_disk)
        image(f"good-{suffix}", {"hostPath": str(small_image)})
        # (plain http:// needs a sha256; the download fails before it counts)
        image(f"closed-{suffix}", {"url": closed_url}, sha256="a" * 64)
        image(f"nxdomain-{suffix}", {"url": nxdomain_url}, sha256="a" * 64)
        image(f"huge-{suffix}", {"hostPath": str(small_image)}, min_disk=big_disk)

        instance("no-flavor", flavors[2], f"good-{suffix}")
        instance("closed-port", flavors[0], f"closed-{suffix}")
        instance("nxdomain", flavors[0], f"nxdomain-{suffix}")
        instance("too-big", flavors[1], f"huge-{suffix}")
        # An image whose virtual size (16 TiB) is larger than the Instance's
        # disk and than any host's: the agent finds out when it has the file.
        virtual = small_image.parent / "virtual-16t.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(virtual), "16T"],
                       check=True)
        image(f"virtual-{suffix}", {"hostPath": str(virtual)})
        instance("virtual-too-big", flavors[0], f"virtual-{suffix}")
        # User data from a Secret that does not exist yet (GitOps may apply
        # the Instance first).
        instance("no-secret", flavors[0], f"good-{suffix}", secret=f"ud-{suffix}")

        # ---- 1. each ends in a clear condition, with an Event
        got = harness.wait_phase("no-flavor", "Pending", 30)
        sched = _cond(got, "Scheduled")
        assert sched["status"] == "False" and sched["reason"] == "FlavorNotFound", sched
        assert flavors[2] in sched["message"], sched

        for name, url in (("closed-port", closed_url), ("nxdomain", nxdomain_url)):
            got = harness.wait_phase(name, "Error", 60)
            ready, sched = _cond(got, "Ready"), _cond(got, "Scheduled")
            assert ready["reason"] == contract.ERROR_IMAGE_DOWNLOAD and url in ready["message"], \
                ready
            assert sched["status"] == "False" and url in sched["message"], sched
            assert contract.ERROR_IMAGE_DOWNLOAD in sched["message"], sched
            assert not got["status"].get("host")
            assert "kova.dev/failed-image" in got["metadata"]["annotations"]

        got = wait_for(lambda: (o := harness.get("too-big")) and _cond(o, "Scheduled").get(
            "reason") == "NoValidHost" and o, 30, what="too-big NoValidHost")
        sched = _cond(got, "Scheduled")
        assert got["status"]["phase"] == "Pending"
        assert f"{big_disk} DISK_GB" in sched["message"], sched

        # Not rescheduled: no other host can make the image fit.
        got = harness.wait_phase("virtual-too-big", "Error", 60)
        sched = _cond(got, "Scheduled")
        assert sched["reason"] == contract.ERROR_DISK_TOO_SMALL, sched
        assert "not rescheduled" in sched["message"] and str(16 * 1024 ** 4) in sched["message"]
        assert got["status"]["attempts"] == 1 and not got["status"].get("host")

        # Waits for its Secret: placed, nothing built, Ready=False naming it.
        got = wait_for(lambda: (o := harness.get("no-secret")) and _cond(o, "Ready").get(
            "reason") == contract.ERROR_USER_DATA and o, 30, what="no-secret waiting")
        assert f"ud-{suffix}" in _cond(got, "Ready")["message"]
        assert got["status"]["phase"] == "Scheduled" and not harness.agents[0].driver.get(
            got["metadata"]["uid"])

        wait_for(lambda: all(_events(harness).get(n) for n in
                             ("no-flavor", "closed-port", "nxdomain", "too-big",
                              "virtual-too-big", "no-secret")), 15,
                 what="an Event on every failed Instance")
        ev = _events(harness)
        assert any(e["reason"] == "FlavorNotFound" and flavors[2] in e["message"]
                   for e in ev["no-flavor"]), ev["no-flavor"]
        for name, url in (("closed-port", closed_url), ("nxdomain", nxdomain_url)):
            assert any(e["reason"] == "BuildFailed" and url in e["message"] for e in ev[name]), \
                ev[name]
        assert any(e["reason"] == "NoValidHost" and "DISK_GB" in e["message"]
                   for e in ev["too-big"]), ev["too-big"]

        # ---- 2. then quiet: count everything over a fixed window
        time.sleep(2.0)  # let the last writes of step 1 land

        def image_builds() -> float:
            return sum(agent.metrics.build_failures.labels(code)._value.get()
                       for code in (contract.ERROR_IMAGE_DOWNLOAD, contract.ERROR_DISK_TOO_SMALL))
        metrics0 = httpx.get(operator.metrics_url).text
        events0 = {n: sum(e["count"] for e in _events(harness).get(n, [])) for n in names}
        log0 = operator.log_path.read_text()
        builds0 = image_builds()
        secret_reads0 = agent.metrics.user_data_waits._value.get()
        watch = WatchCounter(harness)
        time.sleep(WINDOW)
        writes = watch.stop()
        metrics1 = httpx.get(operator.metrics_url).text
        events1 = {n: sum(e["count"] for e in _events(harness).get(n, [])) for n in names}
        log1 = operator.log_path.read_text()[len(log0):]
        builds1 = image_builds()
        secret_reads1 = agent.metrics.user_data_waits._value.get()

        def attempts(reason: str) -> int:
            return int(_metric(metrics1, "kova_operator_schedule_outcomes_total", reason=reason)
                       - _metric(metrics0, "kova_operator_schedule_outcomes_total",
                                 reason=reason))

        lines = {n: sum(1 for line in log1.splitlines() if f"/{n} " in line) for n in names}
        window = {
            "window_s": WINDOW,
            "flavor_retries": attempts("FlavorNotFound"),
            "novalidhost_retries": attempts("NoValidHost"),
            "image_builds": int(builds1 - builds0),
            "secret_reads": int(secret_reads1 - secret_reads0),
            "status_writes": writes,
            "new_events": {n: events1[n] - events0[n] for n in names},
            "log_lines": lines,
        }
        print(json.dumps(window, indent=1))
        # Exponential back-off from 2 s capped at BACKOFF_MAX (jitter -20 %):
        # at most WINDOW / (0.8 * BACKOFF_MAX) tries once at the cap, plus the
        # ramp (2, 4, 8 s) if a retrigger reset it.  A hot loop would make
        # hundreds; a stopped one none.
        bound = 5 + math.ceil(WINDOW / (0.8 * BACKOFF_MAX))
        assert 1 <= window["flavor_retries"] <= bound, window
        assert 1 <= window["novalidhost_retries"] <= bound, window
        assert window["image_builds"] == 0, window  # Error is final until the Image changes
        assert all(v <= 1 for v in writes.values()), window
        assert all(v == 0 for v in window["new_events"].values()), window
        assert lines["no-flavor"] <= bound and lines["too-big"] <= bound, window
        assert lines["closed-port"] == lines["nxdomain"] == lines["virtual-too-big"] == 0, window
        # The agent reads the missing Secret with back-off and at each resync
        # (every 2 s here, 30 s by default): no status write, no Event.
        assert 1 <= window["secret_reads"] <= WINDOW / 2 + WINDOW / 8 + 8, window

        # ---- 3. fix each cause: every Instance recovers
        t_fix = time.monotonic()
        flavor(flavors[2], 1)
        harness.core.create_namespaced_secret(harness.ns, {
            "metadata": {"name": f"ud-{suffix}"},
            "data": {"userdata": base64.b64encode(b"#cloud-config\n").decode()}})
        server = FileServer(small_image.parent, port=closed_port)
        try:
            for name, url in ((f"closed-{suffix}", closed_url),
                              (f"nxdomain-{suffix}", closed_url)):
                harness.custom.delete_cluster_custom_object(G, V, "images", name)
                wait_for(lambda: not any(
                    i["metadata"]["name"] == name for i in harness.custom.list_cluster_custom_object(
                        G, V, "images")["items"]), 10, what=f"{name} deleted")
                image(name, {"url": url},
                      sha256=hashlib.sha256(small_image.read_bytes()).hexdigest())
            harness.custom.delete_cluster_custom_object(G, V, "images", f"virtual-{suffix}")
            wait_for(lambda: not any(
                i["metadata"]["name"] == f"virtual-{suffix}" for i in
                harness.custom.list_cluster_custom_object(G, V, "images")["items"]), 10,
                what="virtual image deleted")
            image(f"virtual-{suffix}", {"hostPath": str(small_image)})
            # A host with a bigger disk joins.
            big_host.agent(instance_dir=big_disk_dir, placement_url=placement.url)
            recovered = {}
            for name in names:
                harness.wait_phase(name, "Running", 90)
                recovered[name] = round(time.monotonic() - t_fix, 1)
        finally:
            server.stop()
        for name in ("closed-port", "nxdomain", "virtual-too-big"):
            got = harness.get(name)
            assert "kova.dev/failed-image" not in (got["metadata"].get("annotations") or {})
            assert any(e["reason"] == "Retrying" for e in _events(harness)[name])

        # ---- 4. count: one allocation per Instance, none overcommitted
        assert harness.get("too-big")["status"]["host"] == big_host.host
        rp_big = big_host.host_obj()["status"]["resourceProviderUUID"]
        uids = {harness.get(n)["metadata"]["uid"]: n for n in names}
        lost = sum(1 for n in names if harness.get(n)["status"].get("phase") != "Running")
        duplicated = overcommitted = 0
        held = set()
        for provider in (rp, rp_big):
            allocs = placement.http.get(
                f"/resource_providers/{provider}/allocations").json()["allocations"]
            duplicated += sum(1 for c in allocs if c not in uids or c in held)
            held |= set(allocs)
            usages = placement.http.get(f"/resource_providers/{provider}/usages").json()["usages"]
            inv = placement.http.get(
                f"/resource_providers/{provider}/inventories").json()["inventories"]
            overcommitted += sum(1 for rc, used in usages.items()
                                 if used > (inv[rc]["total"] - inv[rc]["reserved"])
                                 * inv[rc]["allocation_ratio"])
        lost += len(set(uids) - held)
        assert (lost, duplicated, overcommitted) == (0, 0, 0), (held, uids)
    finally:
        for name in names:
            try:
                harness.delete(name)
            except Exception:
                pass
        for name in names:
            try:
                wait_for(lambda: harness.get(name) is None, 30, what=f"{name} deleted")
            except AssertionError:
                pass
        for name in flavors:
            try:
                harness.custom.delete_cluster_custom_object(G, V, "flavors", name)
            except Exception:
                pass
        big_host.cleanup()

    common = dict(times=1, lost=lost, duplicated=duplicated, overcommitted=overcommitted)
    nodeid = os.environ.get("PYTEST_CURRENT_TEST", "test_bad_input").split(" ")[0]
    record(fault="Unknown flavor",
           injected="an Instance naming a Flavor that does not exist (1 host, operator, "
                    "Placement, agent on test:///default)",
           result=f"Pending, Scheduled=False FlavorNotFound naming the Flavor, 1 Event; "
                  f"{window['flavor_retries']} back-off retries and "
                  f"{writes.get('no-flavor', 0)} status writes in {WINDOW:.0f} s; Running "
                  f"{recovered['no-flavor']} s after the Flavor was created",
           figures={"retries_in_window": window["flavor_retries"], "window_s": WINDOW,
                    "recovered_s": recovered["no-flavor"]},
           test_id=nodeid + "[unknown-flavor]", **common)
    record(fault="Unreachable image URL",
           injected="two Images: an http URL to a closed loopback port and one whose host "
                    "name does not resolve (.invalid)",
           result=f"each built once, then Error (Scheduled=False NoValidHost, Ready=False "
                  f"ImageDownloadFailed, message naming the URL), BuildFailed Event; "
                  f"{window['image_builds']} builds and 0 Events in {WINDOW:.0f} s; Running "
                  f"{max(recovered['closed-port'], recovered['nxdomain'])} s after the "
                  f"Images were re-created with a URL that answers",
           figures={"builds_in_window": window["image_builds"], "window_s": WINDOW,
                    "recovered_s": max(recovered["closed-port"], recovered["nxdomain"])},
           test_id=nodeid + "[unreachable-image]", **{**common, "times": 2})
    record(fault="Missing user-data Secret",
           injected="an Instance whose spec.userData.secretRef names a Secret that does not "
                    "exist yet",
           result=f"placed, nothing built, Ready=False UserDataUnavailable naming the Secret, "
                  f"1 Event; {window['secret_reads']} Secret reads (back-off and the 2 s "
                  f"resync), {writes.get('no-secret', 0)} status writes and 0 Events in "
                  f"{WINDOW:.0f} s; Running {recovered['no-secret']} s after the Secret was "
                  "created",
           figures={"secret_reads_in_window": window["secret_reads"], "window_s": WINDOW,
                    "recovered_s": recovered["no-secret"]},
           test_id=nodeid + "[missing-secret]", **common)
    record(fault="Image larger than every host's disk",
           injected=f"an Image with minDiskGiB {big_disk} and a Flavor of that disk (the "
                    f"host has {disk_total} DISK_GB); an Image of 16 TiB virtual size on a "
                    "1 GiB Flavor",
           result=f"minDiskGiB: Pending, Scheduled=False NoValidHost naming DISK_GB, 1 Event, "
                  f"{window['novalidhost_retries']} back-off retries in {WINDOW:.0f} s, "
                  f"Running {recovered['too-big']} s after a host with a bigger disk "
                  f"joined; virtual size: built once, Error DiskTooSmall (not rescheduled), "
                  f"Running {recovered['virtual-too-big']} s after the Image was re-created",
           figures={"retries_in_window": window["novalidhost_retries"], "window_s": WINDOW,
                    "recovered_s": recovered["too-big"],
                    "virtual_recovered_s": recovered["virtual-too-big"]},
           test_id=nodeid + "[image-too-big]", **{**common, "times": 2})
