"""Secrets stay secret (security).

* Placement never writes a token into its log, with a token file or with
  TokenReview, at debug level, whatever the request's outcome.
* The operator and the agent never log their bearer tokens (the API server's
  and Placement's), at debug level.
* User data given as a Secret reference reaches the guest's NoCloud seed and
  nothing else: not the Instance's status, not an Event, not a log line of
  the operator, the agent or Placement (debug level everywhere).

All through the real components: ``kova placement serve``, ``kova operator
run`` and ``kova agent run`` as processes, the real kube-apiserver, libvirt's
``test:///default`` for the agent's domains.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from kova.agents.virt.seed import read_nocloud_seed
from kova.crds import names as contract
from tests.helpers import ROOT, free_port, stop_process, wait_for
from tests.reliability.record import record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

G, V = contract.GROUP, contract.VERSION
V139 = {"OpenStack-API-Version": "placement 1.39"}


class Proc:
    """A ``kova`` subprocess with its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", *args], stdout=self._log,
            stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        stop_process(self.proc)
        self._log.close()
        return self.text()


def placement_serve(tmp: Path, *auth: str, log_name: str = "placement.log") -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(["placement", "serve", "--database-url", f"sqlite:///{tmp}/{log_name}.db",
                 "--port", str(port), "--log-level", "debug", "--log-format", "text", *auth],
                tmp / log_name)
    url = f"http://127.0.0.1:{port}"

    def up():
        if proc.proc.poll() is not None:
            raise AssertionError(f"placement exited: {proc.text()}")
        try:
            return httpx.get(url + "/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 60, 0.2, "placement")
    return proc, url


def exercise(url: str, tokens: dict[str, str]) -> dict[str, int]:
    """Requests of every outcome with each token, in both headers."""
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, headers=V139, timeout=30) as c:
        for name, token in tokens.items():
            for header in ({"X-Auth-Token": token}, {"Authorization": f"Bearer {token}"}):
                how = next(iter(header))
                r = c.get("/resource_providers", headers=header)
                statuses[f"{name} GET ({how})"] = r.status_code
                r = c.post("/resource_providers", headers=header,
                           json={"name": f"rp-{uuid.uuid4().hex[:8]}"})
                statuses[f"{name} POST ({how})"] = r.status_code
                # A body Placement rejects (unknown field): 400 once authorized.
                r = c.post("/resource_providers", headers=header, json={"x": 1})
                statuses[f"{name} bad POST ({how})"] = r.status_code
    return statuses


def leaks(texts: dict[str, str], needles: dict[str, str]) -> list[str]:
    return [f"{needle_name} in {where}" for where, text in texts.items()
            for needle_name, needle in needles.items() if needle and needle in text]


def _sa_token(core, namespace: str, name: str) -> str:
    from kubernetes import client

    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    req = client.AuthenticationV1TokenRequest(
        # Placement's TokenReview wants its own audience (a projected token)
        spec=client.V1TokenRequestSpec(audiences=["kova-placement"], expiration_seconds=600))
    return core.create_namespaced_service_account_token(name, namespace, req).status.token


def kube_token(kubeconfig: Path) -> str:
    cfg = yaml.safe_load(Path(kubeconfig).read_text())
    return cfg["users"][0]["user"]["token"]


def test_placement_never_logs_tokens(k8s_client, kubeconfig, namespace, tmp_path):
    from kubernetes import client

    # --- static tokens
    admin, reader = secrets.token_hex(20), secrets.token_hex(20)
    token_file = tmp_path / "tokens"
    token_file.write_text(f"admin {admin}\nreader {reader}\n")
    proc, url = placement_serve(tmp_path, "--token-file", str(token_file),
                                log_name="placement-tokenfile.log")
    unknown = secrets.token_hex(20)
    try:
        got = exercise(url, {"admin": admin, "reader": reader, "unknown": unknown})
    finally:
        log_file = proc.stop()
    assert got["admin POST (X-Auth-Token)"] == 200 and got["reader POST (Authorization)"] == 403
    assert got["unknown GET (X-Auth-Token)"] == 401 and got["admin bad POST (Authorization)"] == 400
    assert "DEBUG" in log_file and "POST /resource_providers" in log_file  # debug did log

    # --- TokenReview
    core = client.CoreV1Api(k8s_client)
    sa_admin = _sa_token(core, namespace, "placement-admin")
    sa_reader = _sa_token(core, namespace, "placement-reader")
    sa_other = _sa_token(core, namespace, "someone-else")
    proc, url = placement_serve(
        tmp_path, "--k8s-admin", f"{namespace}:placement-admin",
        "--k8s-reader", f"{namespace}:placement-reader", "--kubeconfig", str(kubeconfig),
        log_name="placement-tokenreview.log")
    try:
        got_tr = exercise(url, {"sa-admin": sa_admin, "sa-reader": sa_reader,
                                "sa-other": sa_other, "unknown": unknown})
    finally:
        log_tr = proc.stop()
    assert got_tr["sa-admin POST (Authorization)"] == 200
    assert got_tr["sa-reader POST (X-Auth-Token)"] == 403
    assert got_tr["sa-other GET (Authorization)"] == 401
    assert "tokenreviews" in log_tr  # the TokenReview calls were logged (debug) ...

    needles = {"admin token": admin, "reader token": reader, "unknown token": unknown,
               "service-account admin token": sa_admin, "service-account reader token": sa_reader,
               "other service-account token": sa_other,
               "Placement's own API-server token": kube_token(kubeconfig)}
    # ... and no token is in either log, nor a recognisable piece of one
    texts = {"token-file log": log_file, "TokenReview log": log_tr}
    found = leaks(texts, needles)
    found += leaks(texts, {f"{k} (first 16)": v[:16] for k, v in needles.items()})
    assert not found, found
    requests = len(got) + len(got_tr)
    record(fault="Tokens in Placement's logs",
           injected=f"{requests} requests (allowed, 401, 403, 400) with admin, read-only, "
                    "unknown and service-account tokens, in X-Auth-Token and Bearer, against "
                    "`kova placement serve --log-level debug` with a token file and with "
                    "TokenReview",
           times=requests, lost=len(found), duplicated=0, overcommitted=None,
           result=f"0 of {len(needles)} tokens (nor their first 16 characters) in "
                  f"{len(log_file) + len(log_tr)} bytes of debug logs (shown as lost: tokens "
                  "found)",
           figures={"requests": requests, "log_bytes": len(log_file) + len(log_tr)})


@pytest.mark.parametrize("user_data_from", ["operator", "secret"])
def test_user_data_secret_and_bearer_tokens_never_leak(
        k8s_client, kubeconfig, kova_crds, namespace, tmp_path, kubectl, user_data_from):
    """A real agent builds a domain whose user data comes from a Secret; the
    marker is in the seed ISO and nowhere else.  ``operator``: the operator
    seals it for the agent's host (Instance status.sealedUserData; the agent
    reads no Secret, as the chart runs it); ``secret``: the agent reads the
    Secret itself."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    custom = client.CustomObjectsApi(k8s_client)
    marker = f"kova-secret-marker-{secrets.token_hex(12)}"
    user_data = f"#cloud-config\nruncmd:\n  - echo {marker}\n"
    encoded = base64.b64encode(user_data.encode()).decode()
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="user-data"), data={"userdata": encoded}))

    ptoken = secrets.token_hex(20)
    (tmp_path / "tokens").write_text(f"admin {ptoken}\n")
    placement, purl = placement_serve(tmp_path, "--token-file", str(tmp_path / "tokens"))
    host = f"host-{uuid.uuid4().hex[:6]}"
    image = tmp_path / "images" / "small.qcow2"
    image.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    operator = Proc(["operator", "run", "--kubeconfig", str(kubeconfig), "--placement-url", purl,
                     "--namespace", namespace, "--standalone", "--metrics-port", "0",
                     "--host-check-interval", "0.5", "--audit-interval", "0",
                     "--no-image-traits", "--log-level", "debug", "--log-format", "text"],
                    tmp_path / "operator.log", env={"KOVA_OPERATOR_PLACEMENT_TOKEN": ptoken})
    agent = Proc(["agent", "run", "--host", host, "--libvirt-uri", "test:///default",
                  "--instance-dir", str(tmp_path / "instances"), "--kubeconfig", str(kubeconfig),
                  "--placement-url", purl, "--metrics-port", "-1", "--resync-seconds", "2",
                  "--image-host-dir", str(image.parent),
                  "--user-data-from", user_data_from,
                  "--log-level", "debug", "--log-format", "text"], tmp_path / "agent.log",
                 env={"KOVA_PLACEMENT_TOKEN": ptoken})
    image_name, flavor = f"img-{host}", f"flavor-{host}"
    try:
        custom.create_cluster_custom_object(G, V, "images", {
            "apiVersion": contract.API_VERSION, "kind": "Image", "metadata": {"name": image_name},
            "spec": {"source": {"hostPath": str(image)}, "format": "qcow2"}})
        custom.create_cluster_custom_object(G, V, "flavors", {
            "apiVersion": contract.API_VERSION, "kind": "Flavor", "metadata": {"name": flavor},
            "spec": {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}})
        custom.create_namespaced_custom_object(G, V, namespace, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance",
            "metadata": {"name": "vm", "namespace": namespace},
            "spec": {"flavorRef": {"name": flavor}, "imageRef": {"name": image_name},
                     "userData": {"secretRef": {"name": "user-data", "key": "userdata"}}}})
        got = wait_for(lambda: (o := custom.get_namespaced_custom_object(
            G, V, namespace, "instances", "vm")) and (o.get("status") or {}).get(
            "phase") == "Running" and o, 60, what="vm Running")
        uid = got["metadata"]["uid"]
        # The guest gets it: the seed ISO's user-data is the Secret's value.
        seed = read_nocloud_seed(tmp_path / "instances" / uid / "seed.iso")
        assert seed["user-data"].decode() == user_data
        sealed = got["status"].get("sealedUserData")
        assert sealed and sealed["host"] == host and sealed["secret"] == "user-data"
        assert marker.encode() in (tmp_path / "instances" / uid / "seed.iso").read_bytes()
        # A second Instance whose Secret key is missing: it waits, and the
        # condition names the Secret and key, never a value.
        custom.create_namespaced_custom_object(G, V, namespace, "instances", {
            "apiVersion": contract.API_VERSION, "kind": "Instance",
            "metadata": {"name": "vm-nokey", "namespace": namespace},
            "spec": {"flavorRef": {"name": flavor}, "imageRef": {"name": image_name},
                     "userData": {"secretRef": {"name": "user-data", "key": "other"}}}})
        wait_for(lambda: any(
            c["type"] == "Ready" and c["reason"] == contract.ERROR_USER_DATA
            and "'other'" in c["message"] for c in (custom.get_namespaced_custom_object(
                G, V, namespace, "instances", "vm-nokey").get("status") or {}).get(
                "conditions") or []), 60, what="vm-nokey waiting for its Secret key")
        # Stop and start the domain through the run strategy: more status
        # writes, Events and log lines that could carry it.
        custom.patch_namespaced_custom_object(G, V, namespace, "instances", "vm",
                                              {"spec": {"runStrategy": "Halted"}})
        wait_for(lambda: (custom.get_namespaced_custom_object(
            G, V, namespace, "instances", "vm").get("status") or {}).get("phase") == "Stopped",
            60, what="vm Stopped")
        status_text = json.dumps(custom.list_namespaced_custom_object(
            G, V, namespace, "instances"))
        events_text = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
        assert contract.ERROR_USER_DATA in events_text and "Started" in events_text
        custom.delete_namespaced_custom_object(G, V, namespace, "instances", "vm")
        custom.delete_namespaced_custom_object(G, V, namespace, "instances", "vm-nokey")
        wait_for(lambda: not custom.list_namespaced_custom_object(
            G, V, namespace, "instances")["items"], 60, what="Instances deleted")
    finally:
        logs = {"operator log": operator.stop(), "agent log": agent.stop(),
                "Placement log": placement.stop()}
        for plural, name in (("images", image_name), ("flavors", flavor), ("hosts", host)):
            try:
                custom.delete_cluster_custom_object(G, V, plural, name)
            except Exception:
                pass
        try:
            client.CoordinationV1Api(k8s_client).delete_namespaced_lease(
                host, contract.LEASE_NAMESPACE)
        except Exception:
            pass
    assert "DEBUG" in logs["operator log"] and "DEBUG" in logs["agent log"]
    assert "user-data" in logs["agent log"] or "seed" in logs["agent log"] or uid in logs[
        "agent log"]
    texts = {"Instance status": status_text, "Events": events_text, **logs}
    needles = {"the user-data marker": marker, "the user data (base64, as in the Secret)": encoded,
               "Placement token": ptoken, "API-server bearer token": kube_token(kubeconfig)}
    found = leaks(texts, needles)
    assert not found, found
    nbytes = sum(len(t) for t in texts.values())
    record(fault="Secret user data and bearer tokens",
           injected="an Instance with user data from a Secret (unique marker), built, stopped "
                    "and deleted by a real agent (debug logs) with the operator (debug) and "
                    "token-auth Placement; plus one Instance naming a missing Secret key",
           times=1, lost=len(found), duplicated=0, overcommitted=None,
           result=f"the marker is in the seed ISO's user-data and nowhere in {nbytes} bytes "
                  "of Instance status, Events and operator/agent/Placement logs; neither "
                  "bearer token is logged (shown as lost: secrets found)",
           figures={"bytes_searched": nbytes})
