"""The user's path on a real node: ``helm install`` of ``helm/kova`` with the
bundled PostgreSQL, an Instance booted by the in-cluster components, ``helm
upgrade`` to another image of the same sources while the VM runs, ``helm rollback`` and ``helm
uninstall``; a reinstall, the image store enabled on it (an upload through
port-forward, an Instance booted from the uploaded Image, a snapshot of that
Instance by a tenant booted again, a snapshot outliving a restart of the API
component's pods), and uninstall.

The tests run in file order and build on each other (one release, one VM);
each one checks what the previous left, so a failure early on shows up as a
failure later too, never as a pass.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from kova.dev.cluster import CHART, KOVA_REPOSITORY, NAMESPACE, RELEASE, NodeCluster, kova_version
from kova.dev.node import build_images, ctr
from tests.e2e.cluster.conftest import FIGURES, _progress
from tests.helpers import wait_for

# The first test starts the session's cluster, which builds Kova's image when
# the sources changed (minutes on 2 shared cores, after any build of another
# checkout holding the image cache's lock).
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

#: Shared between the ordered tests of this module.
STATE: dict = {}
UPGRADE_REVISION = "upgrade"
INSTANCE = "hello-node"
USER_NS = "vms"
API_SERVICE = "v1alpha1.subresources.kova.dev"
SUBRESOURCES = "/apis/subresources.kova.dev/v1alpha1"


# ----------------------------------------------------------------- helpers
def _tasks() -> dict[tuple[str, str, str], int]:
    """(namespace, pod, container) -> pid of each running container of the
    node, from containerd itself (not from the API)."""
    out: dict[tuple[str, str, str], int] = {}
    for line in ctr("tasks", "ls").stdout.splitlines()[1:]:
        cid, pid, status = line.split()[:3]
        if status != "RUNNING":
            continue
        info = json.loads(ctr("containers", "info", cid).stdout)
        labels = info.get("Labels") or {}
        if labels.get("io.cri-containerd.kind") != "container":
            continue
        out[(labels["io.kubernetes.pod.namespace"], labels["io.kubernetes.pod.name"],
             labels["io.kubernetes.container.name"])] = int(pid)
    return out


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _tree(pid: int) -> list[int]:
    """The process and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(c) for c in children)
    return out


def _root_mount_options(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        parts = line.split()
        if parts[4] == "/":
            return parts[5].split(",")
    raise AssertionError(f"no root mount in /proc/{pid}/mountinfo")


def _qemu_pid(cluster: NodeCluster, domain: str) -> int:
    """The QEMU process of ``domain`` (its pid file of the node's libvirtd)."""
    pidfile = cluster.root / "libvirt" / cluster.node.name / "run" / "qemu" / f"{domain}.pid"
    pid = int(pidfile.read_text().strip())
    assert f"guest={domain}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid


def _instance(cluster: NodeCluster) -> dict:
    return cluster.instance(INSTANCE, USER_NS)


def _placement_admin_token(cluster: NodeCluster) -> str:
    secret = json.loads(cluster.kubectl("get", "secret", f"{RELEASE}-placement-auth", "-n",
                                        NAMESPACE, "-o", "json").stdout)
    return base64.b64decode(secret["data"]["admin-token"]).decode()


def _placement_call(cluster: NodeCluster, token: str, method: str, path: str,
                    body: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a request to Placement through its Service
    (the ClusterIP) with ``token``; an error status is returned, not raised."""
    ip = cluster.kubectl("get", "svc", f"{RELEASE}-placement", "-n", NAMESPACE, "-o",
                         "jsonpath={.spec.clusterIP}").stdout
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{ip}:8778{path}", data=data, method=method, headers={
        "X-Auth-Token": token, "OpenStack-API-Version": "placement 1.39",
        **({"Content-Type": "application/json"} if data is not None else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else {})
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, (json.loads(raw) if raw else {})


def _placement(cluster: NodeCluster, path: str) -> dict:
    """GET on Placement through its Service (the ClusterIP), as the operator."""
    ip = cluster.kubectl("get", "svc", f"{RELEASE}-placement", "-n", NAMESPACE, "-o",
                         "jsonpath={.spec.clusterIP}").stdout
    req = urllib.request.Request(f"http://{ip}:8778{path}", headers={
        "X-Auth-Token": _placement_admin_token(cluster),
        "OpenStack-API-Version": "placement 1.39"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def _agent_pod(cluster: NodeCluster) -> dict:
    (pod,) = [p for p in cluster.pods() if p["metadata"]["name"].startswith(f"{RELEASE}-agent-")
              and not p["metadata"].get("deletionTimestamp")]
    return pod


def _metrics(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _images_of_release(cluster: NodeCluster) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
            for p in cluster.pods() if not p["metadata"]["name"].startswith(f"{RELEASE}-postgresql")}


def _require(key: str):
    if key not in STATE:
        raise AssertionError(f"an earlier step of this module failed: no {key!r}")
    return STATE[key]


# ------------------------------------------------------------------- tests
def test_node_is_ready_with_dns_and_service_proxy(node_cluster):
    node = json.loads(node_cluster.kubectl("get", "node", node_cluster.node.name,
                                           "-o", "json").stdout)
    conds = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conds["Ready"] == "True", conds
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.5"
    assert info["containerRuntimeVersion"].startswith("containerd://1.6")
    assert node["metadata"]["labels"]["node-restriction.kubernetes.io/kova-hypervisor"] == "true"
    assert not [t for t in node["spec"].get("taints", []) if t["effect"] == "NoSchedule"]
    # cluster DNS runs as a pod; kube-proxy programs its own nftables table
    dns = json.loads(node_cluster.kubectl("get", "deploy", "coredns", "-n", "kube-system",
                                          "-o", "json").stdout)
    assert dns["status"].get("readyReplicas") == 1
    assert subprocess.run(["nft", "list", "table", "ip", "kube-proxy"],
                          capture_output=True).returncode == 0


def test_helm_install_brings_every_pod_running_and_ready(node_cluster):
    t0 = time.monotonic()
    node_cluster.install()
    STATE["installed_at"] = t0
    FIGURES["helm install --wait (bundled PostgreSQL)"] = time.monotonic() - t0
    pods = node_cluster.wait_pods_ready(timeout=300)
    FIGURES["helm install -> every pod Ready"] = time.monotonic() - t0
    by_component = {}
    for pod in pods:
        comp = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        by_component[comp] = by_component.get(comp, 0) + 1
        for cs in pod["status"]["containerStatuses"]:
            assert cs["ready"] and cs["restartCount"] == 0, (pod["metadata"]["name"], cs)
            assert cs["image"].endswith(f"{KOVA_REPOSITORY}:{kova_version()}") or \
                comp == "postgresql", cs["image"]
    assert by_component == {"placement": 1, "postgresql": 1, "operator": 2, "agent": 1,
                            "api": 2}
    # the API component's APIService: the aggregator reaches its ClusterIP Service
    apisvc = json.loads(node_cluster.kubectl("get", "apiservice", API_SERVICE, "-o",
                                             "json").stdout)
    assert {c["type"]: c["status"] for c in apisvc["status"]["conditions"]}["Available"] == \
        "True", apisvc["status"]
    pvc = json.loads(node_cluster.kubectl("get", "pvc", "-n", NAMESPACE, "-o", "json").stdout)
    assert [p["status"]["phase"] for p in pvc["items"]] == ["Bound"]
    node_cluster.wait_host_up()
    FIGURES["helm install -> Host Up"] = time.monotonic() - t0
    STATE["release"] = True


def _agent_process(cluster: NodeCluster) -> int:
    """The pid of the agent container's process on the node (containerd's)."""
    pod = _agent_pod(cluster)["metadata"]["name"]
    return _tasks()[(NAMESPACE, pod, "agent")]


def test_the_agent_receives_live_migrations_at_the_node_address(node_cluster):
    """agent.liveMigration.uri left at its default: the agent process on the
    node runs with --live-migration-uri=qemu+tls://<the node's address>/system
    (the downward API's status.hostIP, expanded by Kubernetes), and says so
    in its log -- the URI it publishes when it prepares to receive a guest."""
    _require("release")
    pod = _agent_pod(node_cluster)
    host_ip = pod["status"]["hostIP"]
    want = f"qemu+tls://{host_ip}/system"
    argv = Path(f"/proc/{_agent_process(node_cluster)}/cmdline").read_bytes().decode().split("\0")
    assert f"--live-migration-uri={want}" in argv, argv
    log = node_cluster.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c",
                               "agent").stdout
    assert f"the other hosts' libvirtd connects to {want}" in log, log[-2000:]


#: Prints {path: sha256} of every .py file of the installed kova package.
_HASH_INSTALLED = """
import hashlib, json, os, kova
root = os.path.dirname(kova.__file__)
out = {}
for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x != "__pycache__"]
    for f in files:
        if f.endswith(".py"):
            p = os.path.join(d, f)
            out["kova/" + os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps(out))
"""


def _checkout_sources() -> dict[str, str]:
    """{path in the wheel: sha256} of this checkout's Python sources, mapped
    as setup.py maps them (operator/ -> kova/operator/, ...)."""
    import ast
    import hashlib

    repo = CHART.parents[1]
    tree = ast.parse((repo / "setup.py").read_text())
    (package_dirs,) = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                       and getattr(n.targets[0], "id", "") == "PACKAGE_DIRS"]
    out = {}
    for package, folder in package_dirs.items():
        base = repo / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base)
            if "__pycache__" in rel.parts or (folder == "kova" and rel.parts[0] == "operator"):
                continue  # kova/operator is the symlink to operator/
            key = "/".join([*package.split("."), *rel.parts])
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_running_image_holds_this_checkout(node_cluster):
    """The pods run the code of this checkout: every Python file installed in
    the image equals its source (a stale build cache once put an hours-old
    Kova into a freshly built image)."""
    _require("release")
    out = node_cluster.kubectl("exec", "-n", NAMESPACE, f"deploy/{RELEASE}-placement", "--",
                               "python", "-c", _HASH_INSTALLED)
    installed = json.loads(out.stdout.strip().splitlines()[-1])
    checkout = _checkout_sources()
    differ = sorted(k for k in checkout.keys() | installed.keys()
                    if checkout.get(k) != installed.get(k))
    assert not differ, f"{len(differ)} files differ from the checkout, e.g. {differ[:5]}"


def test_pods_run_as_the_chart_says(node_cluster):
    """Users, capabilities, seccomp and read-only root file systems of the
    running containers' processes, read from /proc on the node."""
    _require("release")
    tasks = {k: v for k, v in _tasks().items() if k[0] == NAMESPACE}
    seen = {}
    own_caps = _status(1)["CapBnd"]  # what a privileged container gets here
    for (_, pod, container), pid in tasks.items():
        procs = _tree(pid)
        statuses = [_status(p) for p in procs]
        uids = {s["Uid"] for s in statuses}
        caps = {s["CapEff"] for s in statuses}
        seen[container] = (uids, caps)
        assert "ro" in _root_mount_options(pid), (pod, _root_mount_options(pid))
        if container == "agent":
            # root, privileged (every capability of the node, no seccomp filter)
            assert uids == {"0\t0\t0\t0"}, (pod, uids)
            assert _status(pid)["CapEff"] == own_caps, (pod, caps, own_caps)
            assert _status(pid)["Seccomp"] == "0"
        else:
            want = "999" if container == "postgresql" else "10001"
            assert uids == {"\t".join([want] * 4)}, (pod, uids)
            assert caps == {"0000000000000000"}, (pod, caps)
            for s in statuses:
                assert s["NoNewPrivs"] == "1" and s["Seccomp"] == "2", (pod, s["Name"])
    assert set(seen) == {"agent", "operator", "placement", "postgresql", "api"}, seen


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_compromised_node_credentials_are_refused(node_cluster):
    """What root on the hypervisor node holds -- the agent pod's own tokens
    (read inside the running pod) and the kubelet's credentials -- sent as a
    compromised node would send them: reading Secrets, making the node a
    hypervisor, writing another Host or its own Host's spec, and writing
    another node's Placement provider.  Each must be refused (RBAC, the
    chart's admission policies, NodeRestriction, Placement's agent policy),
    and the same credentials' own part still admitted."""
    from kova.crds import names as contract
    from kova.placement.agentpolicy import AGENT_FORBIDDEN

    _require("release")
    node = node_cluster.node.name
    pod = _agent_pod(node_cluster)["metadata"]["name"]

    def in_agent(path: str) -> str:
        return node_cluster.kubectl(
            "exec", "-n", NAMESPACE, pod, "-c", "agent", "--", "python", "-c",
            f"print(open({path!r}).read())").stdout.strip()

    kube_token = in_agent("/var/run/secrets/kubernetes.io/serviceaccount/token")
    placement_token = in_agent("/var/run/secrets/kova/placement/token")
    for token in (kube_token, placement_token):  # the premise: bound to this pod on this node
        claims = _jwt_claims(token)["kubernetes.io"]
        assert claims["pod"]["name"] == pod and claims["node"]["name"] == node, claims
    kubelet_kc = node_cluster.node.workdir / "kubelet.kubeconfig"
    assert kubelet_kc.is_file()

    def as_agent(*args: str, input: str | None = None):
        return node_cluster.kubectl("--token", kube_token, *args, input=input, check=False)

    def as_kubelet(*args: str):
        from kova.dev import paths

        return subprocess.run([paths.kubectl(), "--kubeconfig", str(kubelet_kc), *args],
                              capture_output=True, text=True, timeout=60)

    refused: list[str] = []

    def refuse(what: str, proc, *needles: str) -> None:
        assert proc.returncode != 0, f"{what}: allowed"
        for needle in needles:
            assert needle in proc.stderr, f"{what}: {proc.stderr}"
        refused.append(what)

    probe_ns = f"probe-{uuid.uuid4().hex[:6]}"
    other_host = f"hv-other-{uuid.uuid4().hex[:6]}"
    admin = _placement_admin_token(node_cluster)
    rp_other = None
    node_cluster.kubectl("create", "namespace", probe_ns)
    try:
        node_cluster.kubectl("create", "secret", "generic", "tenant-db-password", "-n",
                             probe_ns, "--from-literal=password=hunter2")
        # Finding 1: the agent's token reads no Secret, not another namespace's,
        # not its own namespace's (which holds Placement's admin token)
        for where, secret in ((probe_ns, "tenant-db-password"),
                              (NAMESPACE, f"{RELEASE}-placement-auth")):
            refuse(f"agent reads Secret {where}/{secret}",
                   as_agent("get", "secret", secret, "-n", where),
                   "Forbidden", 'cannot get resource "secrets"')

        # Finding 2: the kubelet changes or removes the agents' node selector
        # on its own Node; an unrestricted label it may set (the control)
        ds = json.loads(node_cluster.kubectl("get", "daemonset", "-n", NAMESPACE, "-l",
                                             "app.kubernetes.io/component=agent", "-o",
                                             "json").stdout)["items"]
        (selector,) = [d["spec"]["template"]["spec"]["nodeSelector"] for d in ds]
        assert selector and all(k.startswith("node-restriction.kubernetes.io/")
                                for k in selector), selector
        for key in selector:
            refuse(f"kubelet sets {key}", as_kubelet("label", "node", node, "--overwrite",
                                                     f"{key}=false"),
                   "is not allowed to modify labels", key)
            refuse(f"kubelet removes {key}", as_kubelet("label", "node", node, f"{key}-"),
                   "is not allowed to modify labels", key)
        refuse("kubelet labels its Node with a new restricted label",
               as_kubelet("label", "node", node, "node-restriction.kubernetes.io/kova-probe=1"),
               "is not allowed to modify labels")
        ok = as_kubelet("label", "node", node, "kova.dev/probe=1")
        assert ok.returncode == 0, ok.stderr
        as_kubelet("label", "node", node, "kova.dev/probe-")
        labels = json.loads(node_cluster.kubectl("get", "node", node, "-o", "json").stdout)[
            "metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector.items()), labels

        # Finding 4, in the API: another Host, its own Host's spec and metadata
        refuse("agent creates another Host", as_agent("create", "-f", "-", input=json.dumps({
            "apiVersion": contract.API_VERSION, "kind": "Host",
            "metadata": {"name": other_host}, "spec": {}})),
            f"a Kova agent on node {node} may not write Host {other_host}")
        for what, args in (
                ("unfences its Host", ('{"spec":{"fenced":false,"enabled":true}}',)),
                ("raises its allocation ratio", ('{"spec":{"allocationRatios":{"vcpu":64}}}',)),
                ("adds itself a trait", ('{"spec":{"traits":["CUSTOM_GPU"]}}',))):
            refuse(f"agent {what}", as_agent("patch", "host", node, "--type=merge", "-p", *args),
                   "but its status")
        ok = as_agent("patch", "host", node, "--subresource=status", "--type=merge",
                      "--dry-run=server", "-p", '{"status":{}}')
        assert ok.returncode == 0, ok.stderr  # its own Host's status: its part

        # Finding 4, in Placement: another node's provider
        status, created = _placement_call(node_cluster, admin, "POST", "/resource_providers",
                                          {"name": other_host})
        assert status == 200, created
        rp_other = created["uuid"]
        status, _ = _placement_call(node_cluster, admin, "PUT",
                                    f"/resource_providers/{rp_other}/inventories", {
                                        "resource_provider_generation": 0,
                                        "inventories": {"VCPU": {"total": 8}}})
        assert status == 200
        gen = _placement_call(node_cluster, admin, "GET",
                              f"/resource_providers/{rp_other}")[1]["generation"]
        for what, method, path, body in (
                ("deletes another node's inventory", "DELETE",
                 f"/resource_providers/{rp_other}/inventories", None),
                ("writes another node's inventory", "PUT",
                 f"/resource_providers/{rp_other}/inventories",
                 {"resource_provider_generation": gen, "inventories": {"VCPU": {"total": 1}}}),
                ("renames another node's provider", "PUT", f"/resource_providers/{rp_other}",
                 {"name": f"{node}-stolen"}),
                ("deletes another node's provider", "DELETE",
                 f"/resource_providers/{rp_other}", None)):
            status, answer = _placement_call(node_cluster, placement_token, method, path, body)
            assert status == 403, (what, status, answer)
            assert answer["errors"][0]["code"] == AGENT_FORBIDDEN, (what, answer)
            refused.append(f"agent {what}")
        status, inv = _placement_call(node_cluster, admin, "GET",
                                      f"/resource_providers/{rp_other}/inventories")
        assert status == 200 and inv["inventories"]["VCPU"]["total"] == 8, inv
        # its own provider it may read (the control)
        status, own = _placement_call(node_cluster, placement_token, "GET",
                                      f"/resource_providers?name={node}")
        assert status == 200 and [r["name"] for r in own["resource_providers"]] == [node], own
    finally:
        if rp_other is not None:
            _placement_call(node_cluster, admin, "DELETE", f"/resource_providers/{rp_other}")
        node_cluster.kubectl("delete", "namespace", probe_ns, "--wait=false", check=False)
    print(f"\n{len(refused)} probes refused on node {node}: " + "; ".join(refused))


def test_metrics_of_every_pod_scraped_through_its_service(node_cluster):
    """A pod in another namespace resolves each Service through the cluster
    DNS and scrapes every address behind it, as Prometheus would (the metric
    families it declares: a labelled family has no sample before its first
    event)."""
    _require("release")
    targets = {f"{RELEASE}-placement": 8778, f"{RELEASE}-operator-metrics": 9090,
               f"{RELEASE}-agent-metrics": 9465, f"{RELEASE}-api": 9467}
    script = (
        "import json, socket, urllib.request\n"
        f"targets = {targets!r}\n"
        "out = {}\n"
        "for svc, port in targets.items():\n"
        f"    name = svc + '.{NAMESPACE}.svc.cluster.local'\n"
        "    addrs = sorted({a[4][0] for a in socket.getaddrinfo(name, port, socket.AF_INET)})\n"
        "    out[svc] = {}\n"
        "    for a in addrs:\n"
        "        body = urllib.request.urlopen(f'http://{a}:{port}/metrics', timeout=10).read().decode()\n"
        "        out[svc][a] = sorted({l.split('{')[0].split(' ')[0] for l in body.splitlines() if l and not l.startswith('#')}\n"
        "                             | {l.split()[2] for l in body.splitlines() if l.startswith('# TYPE ')})\n"
        "print(json.dumps(out))\n"
    )
    node_cluster.kubectl("create", "namespace", "monitoring", check=False)
    pod = f"scrape-{uuid.uuid4().hex[:6]}"
    node_cluster.kubectl(
        "run", pod, "-n", "monitoring", f"--image={KOVA_REPOSITORY}:{kova_version()}",
        "--image-pull-policy=Never", "--restart=Never", "--command", "--",
        "python", "-c", script)
    try:
        wait_for(lambda: json.loads(node_cluster.kubectl(
            "get", "pod", pod, "-n", "monitoring", "-o", "json").stdout)["status"].get("phase")
            in ("Succeeded", "Failed"), 120, interval=1, what="the scraper pod")
        logs = node_cluster.kubectl("logs", pod, "-n", "monitoring").stdout
    finally:
        node_cluster.kubectl("delete", "namespace", "monitoring", "--wait=false", check=False)
    scraped = json.loads(logs.strip().splitlines()[-1])
    assert len(scraped[f"{RELEASE}-placement"]) == 1          # a ClusterIP
    assert len(scraped[f"{RELEASE}-operator-metrics"]) == 2   # both replicas (headless)
    assert len(scraped[f"{RELEASE}-agent-metrics"]) == 1      # one per node
    assert len(scraped[f"{RELEASE}-api"]) == 1                # a ClusterIP
    for names in scraped[f"{RELEASE}-placement"].values():
        assert "placement_requests_total" in names
    for names in scraped[f"{RELEASE}-operator-metrics"].values():
        assert any(n.startswith("kova_operator_") for n in names), names
    for names in scraped[f"{RELEASE}-agent-metrics"].values():
        assert "kova_agent_domains" in names
    for names in scraped[f"{RELEASE}-api"].values():
        assert any(n.startswith("kova_api_") for n in names), names


def test_instance_runs_through_the_in_cluster_components(node_cluster):
    _require("release")
    marker = f"KOVA-NODE-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", USER_NS)
    t0 = time.monotonic()
    node_cluster.kubectl("apply", "-f", "-", input=node_cluster.test_manifests(
        INSTANCE, USER_NS, f"#cloud-config\n{marker}: printed by the guest\n"))
    inst = node_cluster.wait_instance_phase(INSTANCE, USER_NS, "Running", 180)
    FIGURES["kubectl apply -> Instance Running"] = time.monotonic() - t0
    FIGURES["helm install -> first Instance Running"] = (
        time.monotonic() - _require("installed_at"))
    st = inst["status"]
    assert st["host"] == node_cluster.node.name
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    log_path = Path(st["console"]["logPath"])
    assert log_path.is_relative_to(node_cluster.instance_dir)
    userdata = node_cluster.wait_userdata(log_path, 240)
    FIGURES["kubectl apply -> user data on the console"] = time.monotonic() - t0
    assert f"{marker}: printed by the guest" in userdata
    # the console log through the API server's aggregation layer: the API
    # component's pod fetches it from the agent pod's stream endpoint (TLS
    # with the chart's generated certificates)
    log = node_cluster.kubectl("get", "--raw", f"{SUBRESOURCES}/namespaces/{USER_NS}/"
                               f"instances/{INSTANCE}/log").stdout
    assert f"{marker}: printed by the guest" in log
    uid = inst["metadata"]["uid"]
    allocs = _placement(node_cluster, f"/allocations/{uid}")["allocations"]
    assert list(allocs.values())[0]["resources"] == {"VCPU": 1, "MEMORY_MB": 256, "DISK_GB": 1}
    domain = f"{USER_NS}.{INSTANCE}"
    assert node_cluster.domains() == [domain]
    pid = _qemu_pid(node_cluster, domain)
    # power actions through the aggregation layer: pause and unpause the
    # guest (the same QEMU process throughout)
    for action, state in (("pause", "Paused"), ("unpause", "Running")):
        out = node_cluster.kubectl("replace", "--raw", f"{SUBRESOURCES}/namespaces/{USER_NS}/"
                                   f"instances/{INSTANCE}/{action}", "-f", "-", input="{}")
        answer = json.loads(out.stdout)
        assert (answer["result"], answer["powerState"]) == ("Success", state), answer
        assert _instance(node_cluster)["status"]["powerState"] == state
    assert _qemu_pid(node_cluster, domain) == pid
    STATE.update(uid=uid, domain=domain, qemu_pid=pid, rp_uuid=next(iter(allocs)),
                 agent_pod=_agent_pod(node_cluster)["metadata"]["name"])


def test_helm_upgrade_to_another_image_keeps_the_vm_running(node_cluster):
    pid, domain = _require("qemu_pid"), _require("domain")
    tag = f"{kova_version()}-{UPGRADE_REVISION}"
    t0 = time.monotonic()
    images = build_images(("kova",), env={"KOVA_IMAGE_REVISION": UPGRADE_REVISION},
                          progress=_progress)
    node_cluster.node.import_images(images, _progress)
    assert f"{KOVA_REPOSITORY}:{tag}" in images
    FIGURES["commit + import of the upgrade image"] = time.monotonic() - t0
    t0 = time.monotonic()
    node_cluster.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
                      "--set", f"image.tag={tag}", "--wait", "--timeout", "10m")
    pods = node_cluster.wait_pods_ready(timeout=300)
    FIGURES["helm upgrade --wait -> every pod Ready"] = time.monotonic() - t0
    assert set(_images_of_release(node_cluster).values()) == {f"{KOVA_REPOSITORY}:{tag}"}
    agent = _agent_pod(node_cluster)
    assert agent["metadata"]["name"] != STATE["agent_pod"], "the agent pod was not replaced"
    # the guest never stopped: the same QEMU process, the Instance still Running
    assert _qemu_pid(node_cluster, domain) == pid
    assert _instance(node_cluster)["status"]["phase"] == "Running"
    # ... and the new agent adopted it: it reports the running domain and
    # reconciled the Instance without building anything
    url = f"http://{agent['status']['podIP']}:9465/metrics"
    m = wait_for(lambda: (m := _metrics(url)).get('kova_agent_reconciles_total{result="ok"}')
                 and m, 60, interval=1, what="a reconcile by the new agent")
    assert m['kova_agent_domains{state="Running"}'] == 1
    assert m["kova_agent_build_duration_seconds_count"] == 0
    assert len(pods) == 7
    STATE["agent_pod"] = agent["metadata"]["name"]
    STATE["upgraded"] = True


def test_helm_rollback_keeps_the_vm_running(node_cluster):
    _require("upgraded")
    pid, domain = _require("qemu_pid"), _require("domain")
    t0 = time.monotonic()
    node_cluster.helm("rollback", RELEASE, "1", "-n", NAMESPACE, "--wait", "--timeout", "10m")
    node_cluster.wait_pods_ready(timeout=300)
    FIGURES["helm rollback --wait -> every pod Ready"] = time.monotonic() - t0
    assert set(_images_of_release(node_cluster).values()) == {
        f"{KOVA_REPOSITORY}:{kova_version()}"}
    assert _agent_pod(node_cluster)["metadata"]["name"] != STATE["agent_pod"]
    assert _qemu_pid(node_cluster, domain) == pid
    assert _instance(node_cluster)["status"]["phase"] == "Running"
    history = json.loads(node_cluster.helm("history", RELEASE, "-n", NAMESPACE,
                                           "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "superseded", "deployed"]
    assert re.match(r"Rollback to 1", history[-1]["description"])
    STATE["rolled_back"] = True


def test_uninstall_leaves_no_vm_allocation_lease_or_finalizer(node_cluster):
    _require("rolled_back")
    uid, pid = _require("uid"), _require("qemu_pid")
    # the user deletes the Instance first (docs/install.md, Uninstall) ...
    node_cluster.kubectl("delete", "instance", INSTANCE, "-n", USER_NS, "--wait=true",
                         "--timeout=180s", timeout=200)
    assert node_cluster.domains() == []
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, what="QEMU gone")
    assert not (Path(node_cluster.instance_dir) / uid).exists()
    assert _placement(node_cluster, f"/allocations/{uid}")["allocations"] == {}
    providers = _placement(node_cluster, "/resource_providers")["resource_providers"]
    for rp in providers:
        usages = _placement(node_cluster, f"/resource_providers/{rp['uuid']}/usages")
        assert not any(usages["usages"].values()), usages
    # ... then uninstalls the chart
    _uninstall(node_cluster)
    for kind in ("instances", "hosts", "flavors", "images", "servergroups"):
        items = json.loads(node_cluster.kubectl("get", f"{kind}.kova.dev", "-A",
                                                "-o", "json").stdout)["items"]
        for item in items:
            assert not item["metadata"].get("finalizers"), (kind, item["metadata"])
    # the CRDs stay, as Helm keeps crds/
    crds = node_cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/instances.kova.dev" in crds
    assert node_cluster.domains() == []
    # the API component's APIService goes with the release
    apisvc = node_cluster.kubectl("get", "apiservice", API_SERVICE, check=False)
    assert apisvc.returncode != 0 and "NotFound" in apisvc.stderr, apisvc.stdout
    STATE["uninstalled"] = True


def _uninstall(cluster: NodeCluster) -> None:
    """helm uninstall; the pods go, and the heartbeat Lease with the agent's
    ServiceAccount (garbage collector)."""
    cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m")
    wait_for(lambda: not cluster.pods(), 120, interval=1, what="the release's pods gone")

    def leases() -> list[str]:
        out = json.loads(cluster.kubectl("get", "leases", "-n", NAMESPACE, "-o", "json").stdout)
        return [i["metadata"]["name"] for i in out["items"]]

    wait_for(lambda: leases() == [], 90, interval=1, what="no heartbeat Lease left")


def test_reinstall_finds_the_kept_database_and_survives_a_postgresql_restart(node_cluster):
    """The PVC and the Secrets stay after an uninstall: installing again finds
    Placement's data, and PostgreSQL starts again on its volume (a reinstall
    used to leave it crash-looping: "data directory ... has invalid
    permissions", the volume's fsGroup had opened it to the group)."""
    _require("uninstalled")
    rp = _require("rp_uuid")

    def providers() -> list[str]:
        try:
            return [r["uuid"] for r in
                    _placement(node_cluster, "/resource_providers")["resource_providers"]]
        except urllib.error.HTTPError as exc:  # 503 while its connections reconnect
            assert exc.code == 503, exc
            return []
        except urllib.error.URLError as exc:
            # refused until kube-proxy has the new Service's endpoints (the
            # Host's Up may be the one it had before the uninstall)
            assert isinstance(exc.reason, ConnectionRefusedError), exc
            return []

    node_cluster.install()
    for pod in node_cluster.wait_pods_ready(timeout=300):
        for cs in pod["status"]["containerStatuses"]:
            assert cs["restartCount"] == 0, (pod["metadata"]["name"], cs)
    node_cluster.wait_host_up()
    assert rp in wait_for(providers, 60, interval=1, what="Placement answering")
    # PostgreSQL's pod goes (an eviction, a node reboot) and comes back
    node_cluster.kubectl("delete", "pod", f"{RELEASE}-postgresql-0", "-n", NAMESPACE,
                         "--wait=true", timeout=120)
    node_cluster.wait_pods_ready(timeout=300)
    assert rp in wait_for(providers, 60, interval=1, what="Placement answering again")
    STATE["reinstalled"] = True


STORE_IMAGE = "kova-test-uploaded"
STORE_INSTANCE = "from-the-store"


def test_image_store_upload_and_boot(node_cluster, tmp_path):
    """images.enabled on the running release, and nothing else: the chart
    makes the store's certificate and gives the agent the store's URL and CA.
    The test image goes up with `kubectl kova image upload` through `kubectl
    port-forward` (the store's certificate names localhost), verified with the
    CA read from the generated Secret; an Instance of that Image is booted by
    the chart's agent, which fetched it from the store (HTTPS to the
    Service's name, its own token) and prints its user data."""
    from kova.dev import paths
    from kova.dev.image import ensure_test_image

    _require("reinstalled")
    kubeconfig = str(node_cluster.control_plane.kubeconfig)
    t0 = time.monotonic()
    # the node offers 8Gi local volumes; PostgreSQL holds one
    node_cluster.helm("upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--reuse-values",
                      "--set", "images.enabled=true", "--set", "images.size=1Gi",
                      "--wait", "--timeout", "10m")
    pods = node_cluster.wait_pods_ready(timeout=300)
    FIGURES["helm upgrade images.enabled=true -> every pod Ready"] = time.monotonic() - t0
    assert [p["metadata"]["name"] for p in pods
            if p["metadata"]["labels"]["app.kubernetes.io/component"] == "images"]
    store_url = f"https://{RELEASE}-images.{NAMESPACE}.svc:9468"
    (agent,) = _agent_pod(node_cluster)["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["KOVA_AGENT_IMAGE_STORE_URL"] == store_url
    ca = tmp_path / "images-ca.crt"
    ca.write_bytes(base64.b64decode(node_cluster.kubectl(
        "get", "secret", f"{RELEASE}-images-tls", "-n", NAMESPACE, "-o",
        "jsonpath={.data.ca\\.crt}").stdout))
    forward = subprocess.Popen(
        [paths.kubectl(), "--kubeconfig", kubeconfig, "port-forward", "-n", NAMESPACE,
         f"svc/{RELEASE}-images", ":9468"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = forward.stdout.readline() if forward.stdout else ""
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        assert m, (line, forward.poll())
        t0 = time.monotonic()
        up = subprocess.run(
            [str(Path(sys.executable).parent / "kubectl-kova"),
             "image", "upload", str(ensure_test_image()), "--name", STORE_IMAGE,
             "--store", f"https://localhost:{m.group(1)}", "--store-ca-file", str(ca),
             "--kubeconfig", kubeconfig], capture_output=True, text=True, timeout=300)
        FIGURES["kubectl kova image upload (test image, port-forward)"] = time.monotonic() - t0
    finally:
        forward.terminate()
        forward.wait(10)
    assert up.returncode == 0, up.stderr
    assert f"Image {STORE_IMAGE} is Available" in up.stdout, up.stdout
    image = json.loads(node_cluster.kubectl("get", "images.kova.dev", STORE_IMAGE,
                                            "-o", "json").stdout)
    assert image["spec"]["source"]["url"].startswith(f"{store_url}/"), image["spec"]

    marker = f"KOVA-STORE-{uuid.uuid4().hex[:8]}"
    node_cluster.kubectl("create", "namespace", USER_NS, check=False)
    manifest = node_cluster.test_manifests(STORE_INSTANCE, USER_NS,
                                           f"#cloud-config\n{marker}: from the store\n")
    manifest = manifest.replace("imageRef: {name: kova-test}", f"imageRef: {{name: {STORE_IMAGE}}}")
    instance_only = manifest.split("---\n")[-1]
    assert f"name: {STORE_IMAGE}" in instance_only
    t0 = time.monotonic()
    node_cluster.kubectl("apply", "-f", "-", input=instance_only)
    ok = False
    try:
        inst = node_cluster.wait_instance_phase(STORE_INSTANCE, USER_NS, "Running", 240)
        userdata = node_cluster.wait_userdata(Path(inst["status"]["console"]["logPath"]), 240)
        FIGURES["kubectl apply -> user data (image from the store)"] = time.monotonic() - t0
        assert f"{marker}: from the store" in userdata
        log = node_cluster.kubectl("logs", "-n", NAMESPACE,
                                   _agent_pod(node_cluster)["metadata"]["name"], "-c",
                                   "agent").stdout
        assert (f"image store {store_url}, trusted CAs: the system trust store and "
                "/etc/kova/image-store-ca/ca.crt") in log, log[-2000:]
        # the agent's verified copy (the store's sha256) is on record
        cached = wait_for(lambda: node_cluster.node.name in (json.loads(node_cluster.kubectl(
            "get", "images.kova.dev", STORE_IMAGE, "-o", "json").stdout).get("status") or {}
        ).get("cachedOn", []), 60, interval=1, what="the Image cached on the node")
        assert cached
        ok = True
    finally:
        if not ok:  # else the next step snapshots it
            _delete_instances(node_cluster, STORE_INSTANCE)
    STATE["store"] = True


SNAPSHOT = "from-the-store-golden"
SNAPSHOT_INSTANCE = "from-the-snapshot"
#: A sector near the end of the 1 GiB root disk, past the test image's files.
SECTOR = 1800000
#: The test image's shell prompt on the serial console ("<hostname>:/# ").
PROMPT = r"[A-Za-z0-9.-]+:/# "


def _delete_instances(cluster: NodeCluster, *names: str) -> None:
    for name in names:
        cluster.kubectl("delete", "instance", name, "-n", USER_NS, "--ignore-not-found",
                        "--wait=true", "--timeout=180s", timeout=200, check=False)


def _wait_shell(tenant, name: str) -> None:
    """The guest's shell on its serial console, read with `kubectl kova logs`."""
    wait_for(lambda: "KOVA-SHELL: ttyS0" in tenant.kova("logs", name)[1], 300, interval=2,
             what=f"{name}'s shell on its console")


def _on_console(tenant, name: str, command: str, expect: str) -> str:
    """Run ``command`` in the shell of ``name``'s guest through `kubectl kova
    console` (a websocket through the aggregation layer to the API component,
    and from it to the agent pod); the first group of ``expect``."""
    from tests.e2e.test_cold_migration import on_console

    return on_console(tenant, command, expect, instance=name, prompt=PROMPT, timeout=120)


def _store_file(cluster: NodeCluster, namespace: str, name: str) -> Path:
    """The file of a TenantImage on the store's volume (the node's local
    PersistentVolume bound to the store's claim)."""
    pv_name = cluster.kubectl("get", "pvc", f"{RELEASE}-images", "-n", NAMESPACE, "-o",
                              "jsonpath={.spec.volumeName}").stdout
    pv = json.loads(cluster.kubectl("get", "pv", pv_name, "-o", "json").stdout)["spec"]
    root = Path((pv.get("local") or pv.get("hostPath"))["path"])
    return root / ".namespaces" / namespace / name / "image.qcow2"


def test_snapshot_through_the_store_boots_on_the_node(node_cluster):
    """`kubectl kova snapshot` on the node, as a tenant bound to kova-edit in
    its namespace: the API component's pod asks the agent pod to copy the
    running guest's root disk and upload it to the chart's store (HTTPS to
    the Service's name, the agent's own token), which registers a TenantImage
    in the tenant's namespace.  A marker written to the source's disk from
    its serial console (`kubectl kova console`) is read back in a second
    Instance booted from the snapshot; after the source is deleted the
    snapshot stays Available with its file on the store's volume."""
    import hashlib

    from kova.dev import paths
    from tests.e2e.test_access import Session
    from tests.support.stacks import kova_editor

    _require("store")
    user = kova_editor(node_cluster.control_plane, USER_NS, "tenant", node_cluster.root)
    tenant = Session(USER_NS, user, node_cluster.kubectl, "")
    store_url = f"https://{RELEASE}-images.{NAMESPACE}.svc:9468"
    ok = False
    try:
        _wait_shell(tenant, STORE_INSTANCE)
        mark = f"KOVA-MARK-{uuid.uuid4().hex[:8]}"
        assert _on_console(tenant, STORE_INSTANCE,
                           f"echo {mark} | dd of=/dev/vda bs=512 seek={SECTOR} conv=fsync "
                           "2>/dev/null; echo WROTE-$?", r"WROTE-(\d+)") == "0"
        t0 = time.monotonic()
        code, out, err = tenant.kova("snapshot", STORE_INSTANCE, "--image", SNAPSHOT,
                                     timeout=900)
        FIGURES["kubectl kova snapshot (1 GiB root disk, to the store)"] = time.monotonic() - t0
        assert code == 0 and (f"tenantimage.kova.dev/{SNAPSHOT} created from instance "
                              f"{USER_NS}/{STORE_INSTANCE}") in out, (out, err)
        # the source guest ran on: the copy was made without pausing it
        assert _on_console(tenant, STORE_INSTANCE, "echo ALIVE-$((40+2))",
                           r"ALIVE-(\d+)") == "42"
        src = node_cluster.instance(STORE_INSTANCE, USER_NS)
        (action,) = [a for a in src["status"]["actions"] if a["action"] == "snapshot"]
        assert action["result"] == "Success" and "guest not paused" in action["message"], action
        progress = src["status"]["snapshot"]
        assert (progress["requestId"], progress["image"], progress["phase"]) == (
            action["requestId"], SNAPSHOT, "Stored"), progress
        assert "kova.dev/snapshot-in-progress" not in src["metadata"].get("labels", {})
        # the agent removed its copy from the node's instance directory
        assert not list(Path(node_cluster.instance_dir).glob("*/snapshot-*.qcow2"))
        image = json.loads(node_cluster.kubectl("get", "tenantimage", SNAPSHOT, "-n", USER_NS,
                                                "-o", "json").stdout)
        assert image["metadata"]["annotations"]["kova.dev/snapshot-of"] == \
            f"{USER_NS}/{STORE_INSTANCE}", image["metadata"]
        assert image["spec"]["source"]["url"].startswith(f"{store_url}/"), image["spec"]
        stored = _store_file(node_cluster, USER_NS, SNAPSHOT)
        assert image["status"]["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()

        t0 = time.monotonic()
        applied = subprocess.run(
            [paths.kubectl(),
             "--kubeconfig", str(user.kubeconfig), "apply", "-f", "-"],
            input=f"""\
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: {SNAPSHOT_INSTANCE}, namespace: {USER_NS}}}
spec:
  flavorRef: {{name: small}}
  imageRef: {{name: {SNAPSHOT}, kind: TenantImage}}
  runStrategy: Always
""", capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        node_cluster.wait_instance_phase(SNAPSHOT_INSTANCE, USER_NS, "Running", 240)
        _wait_shell(tenant, SNAPSHOT_INSTANCE)
        FIGURES["kubectl apply -> shell (image from the snapshot)"] = time.monotonic() - t0
        assert _on_console(tenant, SNAPSHOT_INSTANCE,
                           f"dd if=/dev/vda bs=512 skip={SECTOR} count=1 2>/dev/null "
                           "| head -c 20; echo", r"(KOVA-MARK-[0-9a-f]{8})") == mark

        # without its source the snapshot stays Available, its file in the store
        _delete_instances(node_cluster, STORE_INSTANCE)
        after = json.loads(node_cluster.kubectl("get", "tenantimage", SNAPSHOT, "-n", USER_NS,
                                                "-o", "json").stdout)
        conds = {c["type"]: c["status"] for c in after["status"].get("conditions", [])}
        assert conds.get("Available") == "True", after["status"]
        assert after["status"]["sha256"] == image["status"]["sha256"]
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == image["status"]["sha256"]
        ok = True
    finally:
        _delete_instances(node_cluster, STORE_INSTANCE)
        if not ok:  # else the next step snapshots it
            _delete_instances(node_cluster, SNAPSHOT_INSTANCE)
    assert node_cluster.domains() == [f"{USER_NS}.{SNAPSHOT_INSTANCE}"]
    STATE.update(snapshot=True, tenant=tenant)


def _api_pods(cluster: NodeCluster) -> list[dict]:
    return [p for p in cluster.pods() if p["metadata"]["labels"].get(
        "app.kubernetes.io/component") == "api" and not p["metadata"].get("deletionTimestamp")]


def test_a_snapshot_outlives_a_restart_of_the_api_component(node_cluster):
    """Both API component pods are deleted while a snapshot uploads (the
    store's process on the node stopped with SIGSTOP, so the upload cannot
    end).  The pods the Deployment starts again take the snapshot up (the
    Instance's kova.dev/snapshot-in-progress label, their RBAC), ask the
    agent pod for its answer, which comes once the store runs again: the
    action ends Success at its first attempt, one TenantImage, no copy left
    on the node, the label gone."""
    import hashlib

    _require("snapshot")
    tenant = STATE["tenant"]
    second = f"{SNAPSHOT}-2"
    (store_pod,) = [p["metadata"]["name"] for p in node_cluster.pods()
                    if p["metadata"]["labels"]["app.kubernetes.io/component"] == "images"]
    # the container's processes: tini and `kova images serve` under it
    store_pids = _tree(_tasks()[(NAMESPACE, store_pod, "images")])
    assert len(store_pids) >= 2, store_pids
    old_api = {p["metadata"]["name"] for p in _api_pods(node_cluster)}
    assert len(old_api) == 2, old_api

    def status() -> dict:
        return node_cluster.instance(SNAPSHOT_INSTANCE, USER_NS).get("status") or {}

    def signal_store(sig: signal.Signals) -> None:
        for pid in store_pids:
            os.kill(pid, sig)

    try:
        signal_store(signal.SIGSTOP)
        try:
            code, out, err = tenant.kova("snapshot", SNAPSHOT_INSTANCE, "--image", second,
                                         "--no-wait")
            assert code == 0, (out, err)
            (req,) = [a["requestId"] for a in status()["actions"]
                      if a["action"] == "snapshot" and a["result"] == "InProgress"]
            progress = wait_for(lambda: (p := status().get("snapshot") or {}).get("phase") in (
                "Uploading", "Stored", "Failed") and p, 120, interval=0.5,
                what="the upload under way")
            assert (progress["requestId"], progress["phase"]) == (req, "Uploading"), progress
            node_cluster.kubectl("delete", "pod", "-n", NAMESPACE, *old_api, "--wait=true",
                                 timeout=120)
            wait_for(lambda: len(new := [p for p in _api_pods(node_cluster)
                                         if node_cluster.pod_ready(p)]) == 2 and new, 180,
                     interval=1, what="two new API component pods Ready")
        finally:
            signal_store(signal.SIGCONT)
        t0 = time.monotonic()

        def ended() -> dict | None:
            return next((a for a in status()["actions"] if a["requestId"] == req
                         and a["result"] != "InProgress"), None)

        final = wait_for(ended, 300, interval=1, what="the snapshot ended")
        FIGURES["store resumed -> snapshot Success (new API pods)"] = time.monotonic() - t0
        print(f"\nthe snapshot taken up by the new API component pods: {final}")
        assert final["result"] == "Success" and final.get("attempt", 1) == 1, final
        img = json.loads(node_cluster.kubectl("get", "tenantimage", second, "-n", USER_NS,
                                              "-o", "json").stdout)
        stored = _store_file(node_cluster, USER_NS, second)
        assert img["status"]["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
        assert img["metadata"]["annotations"]["kova.dev/snapshot-of"] == \
            f"{USER_NS}/{SNAPSHOT_INSTANCE}"
        events = json.loads(node_cluster.kubectl("get", "events", "-n", USER_NS, "-o",
                                                 "json").stdout)["items"]
        assert not [e for e in events if e["reason"] in ("SnapshotRetried", "SnapshotFailed")]
        assert not list(Path(node_cluster.instance_dir).glob("*/snapshot-*.qcow2"))
        wait_for(lambda: "kova.dev/snapshot-in-progress" not in node_cluster.instance(
            SNAPSHOT_INSTANCE, USER_NS)["metadata"].get("labels", {}), 60, interval=1,
            what="the snapshot-in-progress label removed")
    finally:
        _delete_instances(node_cluster, SNAPSHOT_INSTANCE)
    assert node_cluster.domains() == []


def test_uninstall_after_the_image_store(node_cluster):
    _require("reinstalled")
    _uninstall(node_cluster)

