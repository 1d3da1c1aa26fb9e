"""libvirtd restart and API server unavailability, real components.

One test, one stack (on a private control plane), two rows of the table:

* libvirtd: the host's private libvirtd (hack/start-libvirt-host.sh) is
  stopped under a running guest and started again.  The guest is never
  restarted (same QEMU pid), the agent reconnects (a second "connected to"
  in its log, ``kova_agent_libvirt_reconnects_total``), a status made stale while
  libvirtd was away is corrected, and a new Instance boots through the new
  connection.  (The agent's own kill -9 is tests/e2e/test_boot_burst.py.)
* API server: a private control plane (not the session's) whose
  kube-apiserver is stopped for longer than the heartbeat Lease and started
  again, with the operator and an agent running.  Both reconnect: a new
  Instance is scheduled and Running, the running one's status is still right
  (same QEMU pid), and the host never went Down for want of renewals nobody
  could write.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config

from kova.dev.controlplane import ControlPlane, _pid_alive
from kova.dev.crds import apply_crds
from kova.dev.stack import Stack, link_test_image
from tests.helpers import wait_for
from tests.reliability.guests import _destroy_all, _domains, _qemu_pid
from tests.reliability.record import long_run, record

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

G, V = "kova.dev", "v1alpha1"
LEASE_S = 6


class ClusterObjects:
    """The few reads and writes these tests need, on one kubeconfig."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.api = config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.ns = namespace

    def setup(self, tag: str) -> None:
        self.tag = tag
        for plural, kind, spec in (
            ("flavors", "Flavor", {"vcpus": 1, "memoryMiB": 192, "diskGiB": 1}),
            ("images", "Image", {"source": {"hostPath": "/var/lib/kova/images/kova-test.qcow2"},
                                 "format": "qcow2"})):
            try:
                self.custom.create_cluster_custom_object(G, V, plural, {
                    "apiVersion": f"{G}/{V}", "kind": kind, "metadata": {"name": f"rs-{tag}"},
                    "spec": spec})
            except client.ApiException as exc:
                if exc.status != 409:  # created by an earlier try
                    raise

    def create(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(G, V, self.ns, "instances", {
            "apiVersion": f"{G}/{V}", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": {"name": f"rs-{self.tag}"},
                     "imageRef": {"name": f"rs-{self.tag}"}}})

    def get(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(G, V, self.ns, "instances", name)

    def running(self, name: str) -> dict | None:
        try:
            i = self.get(name)
        except client.ApiException:
            return None
        return i if (i.get("status") or {}).get("phase") == "Running" else None

    def host_state(self, host: str) -> str | None:
        try:
            h = self.custom.get_cluster_custom_object(G, V, "hosts", host)
        except client.ApiException:
            return None
        return (h.get("status") or {}).get("state")

    def events(self, reason: str) -> list:
        return [e for e in self.core.list_event_for_all_namespaces().items
                if e.reason == reason]

    def delete_all(self) -> None:
        for i in self.custom.list_namespaced_custom_object(G, V, self.ns, "instances")["items"]:
            try:
                self.custom.delete_namespaced_custom_object(G, V, self.ns, "instances",
                                                            i["metadata"]["name"])
            except client.ApiException:
                pass


def _try(fn, *args) -> bool:
    """fn(*args); False on a 404 (the CRDs are Established before discovery
    serves them)."""
    try:
        fn(*args)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return False
    return True


def _stack(tmp_path: Path) -> Stack:
    return Stack(root=tmp_path / "stack", operator_args=["--host-check-interval", "0.5"],
                 agent_args=["--lease-duration-seconds", str(LEASE_S),
                             "--lease-renew-seconds", "1"])


def _teardown(st: Stack, kube: ClusterObjects | None) -> None:
    if kube is not None:
        try:
            kube.delete_all()
        except Exception:  # the API server may be the thing that failed
            pass
    for uri in st.libvirt_uris.values():
        _destroy_all(uri)
    st.stop()
    for log in sorted(st.log_dir.glob("*.log")):
        print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-25:]))


def test_libvirtd_restart_then_api_server_restart(libvirtd, test_image, tmp_path):
    """One stack on a private control plane (so its API server may be
    stopped), one host with its private libvirtd: first libvirtd is
    restarted, then the API server -- each a row of the reliability table."""
    link_test_image(test_image)
    cp = ControlPlane(workdir=tmp_path / "cp", controller_manager=False)
    st = _stack(tmp_path)
    kube = None
    host = f"rs-{uuid.uuid4().hex[:5]}"
    ns = "restarts"
    outage = 30.0 if long_run() else 3 * LEASE_S
    restarts = 3 if long_run() else 1
    try:
        cp.start()
        apply_crds(cp.kubeconfig)
        kube = ClusterObjects(cp.kubeconfig, ns)
        kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        wait_for(lambda: _try(kube.setup, "x"), 30, 0.5, "Flavor and Image created")
        st.start(cp, [host], progress=lambda m: None, namespaces=[ns])
        st.wait_hosts_up()
        kube.create("vm-1")
        first = wait_for(lambda: kube.running("vm-1"), 120, 0.5, "vm-1 Running")
        uid = first["metadata"]["uid"]
        dom = f"{ns}.vm-1"
        pid = wait_for(lambda: _qemu_pid(st, host, dom), 10, 0.2, "QEMU pid")
        agent_log = st.log_dir / f"agent-{host}.log"
        connects = agent_log.read_text().count("connected to")

        # 1. libvirtd restarted under the running guest.
        t_back = []
        for _ in range(restarts):
            st.kill(f"libvirtd-{host}", 15)  # SIGTERM: libvirtd shuts down, guests stay
            # While libvirtd is away the status goes stale (what a missed
            # event would leave): the agent must not take "no answer" for "no
            # domain" and rebuild.
            kube.custom.patch_namespaced_custom_object_status(
                G, V, ns, "instances", "vm-1",
                {"status": {"phase": "Stopped", "powerState": "Shutdown"}})
            time.sleep(2.0)
            assert _qemu_pid(st, host, dom) == pid
            t0 = time.monotonic()
            st.start_host_libvirt(host, progress=lambda m: None)
            wait_for(lambda: kube.running("vm-1"), 60, 0.3, "vm-1 status Running again")
            t_back.append(time.monotonic() - t0)
            assert kube.get("vm-1")["status"]["powerState"] == "Running"
            assert _qemu_pid(st, host, dom) == pid  # never restarted
            assert _domains(st.libvirt_uris[host]) == {uid: True}
        text = agent_log.read_text()
        assert text.count("connected to") >= connects + restarts, text[-3000:]
        assert text.count(f"{ns}/vm-1: building") == 1  # never rebuilt
        lv_lost = 0 if kube.running("vm-1") else 1
        lv_dup = max(0, len(_domains(st.libvirt_uris[host])) - 1)

        # 2. The API server stopped for longer than the Lease, then started.
        cp.stop_apiserver()
        time.sleep(outage)  # nobody can renew a Lease meanwhile
        t0 = time.monotonic()
        cp.start_apiserver()
        t_api = time.monotonic() - t0
        kube = ClusterObjects(cp.kubeconfig, ns)  # a fresh client for the test itself
        kube.tag = "x"
        t1 = time.monotonic()
        kube.create("vm-2")  # scheduled by the operator, built by the agent (new libvirt conn.)
        wait_for(lambda: kube.running("vm-2"), 180, 0.5, "vm-2 Running after the restarts")
        t_new = time.monotonic() - t1
        again = kube.get("vm-1")
        assert again["status"]["phase"] == "Running" and again["status"]["host"] == host
        assert again["metadata"]["uid"] == uid
        assert _qemu_pid(st, host, dom) == pid
        assert kube.host_state(host) == "Up"
        assert kube.events("HostDown") == [], "a host went Down during the API outage"
        assert all(_pid_alive(st.pids[p]) for p in ("operator", f"agent-{host}"))
        doms = _domains(st.libvirt_uris[host])
        uids = {kube.get(n)["metadata"]["uid"] for n in ("vm-1", "vm-2")}
        lost = sum(1 for n in ("vm-1", "vm-2") if kube.running(n) is None)
        lost += len(uids - set(doms))
        duplicated = len(set(doms) - uids)  # one libvirtd: a copy would be an extra domain
        assert (lost, duplicated) == (0, 0), doms
        op_log = (st.log_dir / "operator.log").read_text()
    finally:
        _teardown(st, kube)
        cp.destroy()
    test = os.environ.get("PYTEST_CURRENT_TEST", "restarts").split(" ")[0]
    record(fault="libvirtd restart",
           injected=f"the host's libvirtd stopped (SIGTERM) under a running guest and started "
                    f"again, {restarts} time(s), with a stale status written meanwhile",
           times=restarts, lost=lv_lost, duplicated=lv_dup, overcommitted=None,
           result=f"same QEMU pid; agent reconnected; status Running again "
                  f"{max(t_back):.1f}s after libvirtd was started",
           figures={"status_converged_s": [round(t, 1) for t in t_back]},
           test_id=test + "[libvirtd]")
    record(fault="API server unavailability",
           injected=f"kube-apiserver stopped for {outage:.0f}s (Lease {LEASE_S}s) and started "
                    "again, with the operator and one agent running a guest",
           times=1, lost=lost, duplicated=duplicated, overcommitted=None,
           result=f"no host marked Down; running guest untouched (same QEMU pid); a new "
                  f"Instance Running {t_new:.1f}s after the API server answered again",
           figures={"apiserver_restart_s": round(t_api, 1),
                    "new_instance_running_s": round(t_new, 1),
                    "operator_log_warnings": op_log.count(" WARNING ")},
           test_id=test + "[apiserver]")
