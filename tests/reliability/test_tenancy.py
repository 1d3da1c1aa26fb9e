"""Tenants kept to their own (security): each probe is the request an
attacker holding a tenant's credentials would make, sent with a real
ServiceAccount token to the real kube-apiserver with the chart installed
(its RBAC and admission policies); each must be refused and change nothing.

* a tenant sets, changes or removes the ``kova.dev/host`` label, strips
  Kova's finalizers, pins a host with ``schedulingHints.requestedHost``;
* a tenant that may not read Secrets names one in ``userData.secretRef``;
* a tenant asks for 1 024 vCPUs and 16 TiB of memory inline, without a Flavor;
* a compromised hypervisor (its agent's pod-bound token) reads a Secret in
  another namespace, or in its own;
* a node's credentials label their own Node with the agents' node selector.

The operator's token (``schedule`` on instances) and the agent's pod-bound
token (its own finalizer only) still do their part; the tenant's ordinary
writes (annotations, its own finalizers) still pass.  No kubelet: the Node
and the agent's Pod are API objects only.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from kova.crds import names as contract
from tests.reliability.record import record
from tests.support.chart import CHART, helm, set_args

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

API = contract.API_VERSION


def _helm(kubeconfig: Path, *args: str, **kw):
    return helm("--kubeconfig", str(kubeconfig), *args, **kw)


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
    return result


def _instance(name: str, *, labels: dict | None = None, **spec) -> str:
    return json.dumps({
        "apiVersion": API, "kind": "Instance",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {"imageRef": {"name": "kova-test"},
                 **({"flavorRef": {"name": "small"}} if "resources" not in spec else {}),
                 **spec}})


def _user(kubectl, namespace: str, name: str, rules: list[dict]) -> str:
    """A ServiceAccount with a namespaced Role of ``rules``; its token."""
    kubectl("create", "serviceaccount", name, "-n", namespace)
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name}, "rules": rules}))
    kubectl("create", "rolebinding", name, "-n", namespace, f"--role={name}",
            f"--serviceaccount={namespace}:{name}")
    return kubectl("create", "token", name, "-n", namespace, "--duration", "10m").stdout.strip()


INSTANCE_WRITER = {"apiGroups": ["kova.dev"], "resources": ["instances"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}


def test_tenant_probes_are_refused(kubeconfig, kubectl, kova_crds, namespace):
    release = f"kova-{uuid.uuid4().hex[:6]}"
    node = f"{release}-n1"
    other_ns = f"{release}-other"
    values = {
        "placement.enabled": False, "placement.externalUrl": "http://placement.invalid:8778",
        "placement.auth.existingSecret": "unused", "operator.peering.name": release,
        "networkPolicy.enabled": False, "leaseNamespace": namespace,
        "api.enabled": False, "rbac.userRoles": False, "serviceMonitor.enabled": False,
    }
    _helm(kubeconfig, "install", release, str(CHART), "--namespace", namespace,
          *set_args(values), timeout=120)
    ns = ["-n", namespace]
    refused: list[str] = []
    try:
        tenant = _user(kubectl, namespace, "tenant", [INSTANCE_WRITER])
        reader = _user(kubectl, namespace, "reader", [INSTANCE_WRITER, {
            "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
            "resourceNames": ["ud-readable"]}])
        operator = kubectl("create", "token", f"{release}-operator", *ns,
                           "--duration", "10m").stdout.strip()
        kubectl("create", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
        kubectl("create", *ns, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-n1"},
            "spec": {"serviceAccountName": f"{release}-agent", "nodeName": node,
                     "containers": [{"name": "agent", "image": "kova:0.1.0"}]}}))
        agent = kubectl("create", "token", f"{release}-agent", *ns, "--duration", "10m",
                        "--bound-object-kind", "Pod",
                        "--bound-object-name", "agent-n1").stdout.strip()
        kubectl("create", "namespace", other_ns)
        kubectl("create", "secret", "generic", "tenant-db-password", "-n", other_ns,
                "--from-literal=password=hunter2")
        for secret in ("ud-readable", "ud-other"):
            kubectl("create", "secret", "generic", secret, *ns,
                    "--from-literal=userdata=#cloud-config")

        def as_(token, *args, input=None):
            return kubectl("--token", token, *args, *ns, input=input, check=False)

        def refuse(what: str, token, *args, message: str, input=None):
            proc = as_(token, *args, input=input)
            assert proc.returncode != 0, f"{what}: allowed"
            assert message in proc.stderr, f"{what}: {proc.stderr}"
            refused.append(what)

        def allow(what: str, token, *args, input=None):
            proc = as_(token, *args, input=input)
            assert proc.returncode == 0, f"{what}: {proc.stderr}"

        pinned = _instance("pinned", schedulingHints={"requestedHost": node})
        _wait("the tenant policy to be enforced", lambda: as_(
            tenant, "create", "--dry-run=server", "-f", "-", input=pinned).returncode != 0)

        # Finding: tenants do admin things
        refuse("requestedHost on create", tenant, "create", "-f", "-", input=pinned,
               message="only a cluster administrator may pin an Instance to a host")
        refuse("host label on create", tenant, "create", "-f", "-",
               input=_instance("self-placed", labels={contract.LABEL_HOST: node}),
               message="only the Kova operator or a cluster administrator may set")
        allow("a plain Instance", tenant, "create", "-f", "-", input=_instance("vm"))
        # the operator places it: label and finalizers
        allow("the operator labels", operator, "label", "instance", "vm",
              f"{contract.LABEL_HOST}={node}")
        allow("the operator adds finalizers", operator, "patch", "instance", "vm",
              "--type=merge", "-p", json.dumps({"metadata": {"finalizers": [
                  contract.FINALIZER_OPERATOR, contract.FINALIZER_AGENT]}}))
        refuse("remove the host label", tenant, "label", "instance", "vm",
               f"{contract.LABEL_HOST}-", message="may set, change or remove the host label")
        refuse("change the host label", tenant, "label", "instance", "vm", "--overwrite",
               f"{contract.LABEL_HOST}=elsewhere", message="host label")
        refuse("strip every finalizer", tenant, "patch", "instance", "vm", "--type=merge",
               "-p", json.dumps({"metadata": {"finalizers": None}}),
               message="only Kova or a cluster administrator may remove")
        refuse("strip the operator's finalizer", tenant, "patch", "instance", "vm",
               "--type=json", "-p", json.dumps([{"op": "remove",
                                                 "path": "/metadata/finalizers/0"}]),
               message=f"may remove {contract.FINALIZER_OPERATOR}")
        refuse("the agent strips the operator's finalizer", agent, "patch", "instance", "vm",
               "--type=json", "-p", json.dumps([{"op": "remove",
                                                 "path": "/metadata/finalizers/0"}]),
               message=f"may remove {contract.FINALIZER_OPERATOR}")
        # what a tenant may still do
        allow("annotate", tenant, "annotate", "instance", "vm", "note=mine")
        allow("its own finalizer", tenant, "patch", "instance", "vm", "--type=json", "-p",
              json.dumps([{"op": "add", "path": "/metadata/finalizers/-",
                           "value": "example.com/keep"}]))
        allow("remove its own finalizer", tenant, "patch", "instance", "vm", "--type=json",
              "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers/2"}]))
        after = json.loads(kubectl("get", "instance", "vm", *ns, "-o", "json").stdout)
        assert after["metadata"]["labels"][contract.LABEL_HOST] == node
        assert after["metadata"]["finalizers"] == [contract.FINALIZER_OPERATOR,
                                                   contract.FINALIZER_AGENT]
        # the agent on the Instance's node releases its own finalizer
        allow("the agent's own finalizer", agent, "patch", "instance", "vm", "--type=json",
              "-p", json.dumps([{"op": "remove", "path": "/metadata/finalizers/1"}]))

        # Finding: user data from a Secret the writer may not read
        with_secret = _instance("ud", userData={"secretRef": {"name": "ud-readable",
                                                              "key": "userdata"}})
        proc = as_(tenant, "get", "secret", "ud-readable")
        assert proc.returncode != 0 and "forbidden" in proc.stderr  # the premise
        refuse("secretRef to an unreadable Secret", tenant, "create", "-f", "-",
               input=with_secret, message="may not read Secret")
        allow("secretRef to a readable Secret", reader, "create", "-f", "-", input=with_secret)
        refuse("secretRef changed to an unreadable Secret", reader, "patch", "instance", "ud",
               "--type=merge", "-p", json.dumps({"spec": {"userData": {"secretRef": {
                   "name": "ud-other", "key": "userdata"}}}}),
               message=f"may not read Secret {namespace}/ud-other")
        allow("an unrelated change of someone else's Instance", tenant, "annotate",
              "instance", "ud", "note=x")

        # Finding: a compromised hypervisor reads every Secret. The agent's
        # pod-bound token reads no Secret: not another tenant's, not its own
        # namespace's (user data comes sealed for its host instead).
        for where, secret in ((other_ns, "tenant-db-password"), (namespace, "ud-readable")):
            proc = kubectl("--token", agent, "get", "secret", secret, "-n", where, check=False)
            assert proc.returncode != 0, f"the agent read Secret {where}/{secret}"
            assert "Forbidden" in proc.stderr and "cannot get resource \"secrets\"" in \
                proc.stderr, proc.stderr
            refused.append(f"agent reads Secret {where}/{secret}")
        proc = kubectl("--token", agent, "auth", "can-i", "get", "secrets", "-A", check=False)
        assert proc.stdout.strip() == "no", proc.stdout

        # Finding: one node steers scheduling -- its agent keeps to its own
        # Host's status: no spec of its own at registration, no spec or
        # metadata change afterwards.
        def host(spec):
            return json.dumps({"apiVersion": API, "kind": "Host", "metadata": {"name": node},
                               "spec": spec})

        refuse("the agent registers its Host overcommitted", agent, "create", "-f", "-",
               input=host({"allocationRatios": {"vcpu": 64.0}}),
               message="with a spec of its own")
        refuse("the agent registers its Host with traits", agent, "create", "-f", "-",
               input=host({"traits": ["CUSTOM_GPU"]}), message="with a spec of its own")
        allow("the agent registers its Host", agent, "create", "-f", "-", input=host({}))
        for what, args in (
                ("unfences its Host", ("patch", "host", node, "--type=merge", "-p",
                                       '{"spec":{"fenced":false,"enabled":true}}')),
                ("raises its allocation ratio", ("patch", "host", node, "--type=merge", "-p",
                                                 '{"spec":{"allocationRatios":{"vcpu":64}}}')),
                ("annotates its Host", ("annotate", "host", node, "x=y"))):
            refuse(f"the agent {what}", agent, *args, message="but its status")
        allow("the agent writes its Host's status", agent, "patch", "host", node,
              "--subresource=status", "--type=merge", "-p", '{"status":{"instanceCount":0}}')
        got = json.loads(kubectl("get", "host", node, "-o", "json").stdout)
        assert got["spec"]["allocationRatios"]["vcpu"] == 4.0
        assert "x" not in (got["metadata"].get("annotations") or {})

        # Finding: no bound on an inline size
        refuse("1024 vCPUs inline", tenant, "create", "-f", "-", input=_instance(
            "huge", resources={"vcpus": 1024, "memoryMiB": 16 * 1024 * 1024, "diskGiB": 1}),
            message="spec.resources.vcpus")
        proc = as_(tenant, "create", "--dry-run=server", "-f", "-", input=_instance(
            "huge", resources={"vcpus": 4, "memoryMiB": 16 * 1024 * 1024, "diskGiB": 1}))
        assert proc.returncode != 0 and "spec.resources.memoryMiB" in proc.stderr, proc.stderr
        refused.append("16 TiB inline")

        names_now = kubectl("get", "instances", *ns, "-o", "name").stdout.split()
        assert sorted(names_now) == ["instance.kova.dev/ud", "instance.kova.dev/vm"], names_now
        record(fault="Tenant beyond its rights",
               injected="a tenant ServiceAccount (instances: write; no Secrets) setting, "
                        "changing and removing the kova.dev/host label, stripping Kova's "
                        "finalizers, pinning requestedHost, naming an unreadable Secret in "
                        "userData.secretRef, asking 1024 vCPUs / 16 TiB inline; the agent's "
                        "pod-bound token stripping the operator's finalizer and reading "
                        "Secrets in another namespace and its own (real "
                        "kube-apiserver, the chart's RBAC and admission policies)",
               times=len(refused), lost=0, duplicated=0, overcommitted=None,
               result=f"{len(refused)} of {len(refused)} probes refused with a message naming "
                      "the field; the Instance's label and finalizers unchanged; the operator "
                      "and the agent's own finalizer still admitted",
               figures={"refused": len(refused)})
    finally:
        for name in ("vm", "ud"):
            kubectl("patch", "instance", name, *ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)
        kubectl("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "host", node, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "namespace", other_ns, "--ignore-not-found", "--wait=false",
                check=False)
        _helm(kubeconfig, "uninstall", release, "--namespace", namespace, timeout=120)


def test_kubelet_cannot_make_its_node_a_hypervisor(kubectl):
    """A node's own credentials (user system:node:<name> in group
    system:nodes, as its kubelet authenticates; sent here through
    impersonation, which admission sees the same) label their own Node with
    the agent DaemonSet's node selector: NodeRestriction refuses it. Another
    label (the former kova.dev/hypervisor) the same credentials may set:
    that was the hole."""
    from tests.support.chart import by_kind, render

    (ds,) = by_kind(render(), "DaemonSet")
    selector = ds["spec"]["template"]["spec"]["nodeSelector"]
    assert selector and all(k.startswith("node-restriction.kubernetes.io/") for k in selector)
    node = f"worker-{uuid.uuid4().hex[:6]}"
    kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
    kubelet = ("--as", f"system:node:{node}", "--as-group", "system:nodes",
               "--as-group", "system:authenticated")
    try:
        # the credentials can write their own Node: the control
        ok = kubectl(*kubelet, "label", "node", node, "kova.dev/hypervisor=true", check=False)
        assert ok.returncode == 0, ok.stderr
        for key, value in selector.items():
            proc = kubectl(*kubelet, "label", "node", node, f"{key}={value}", check=False)
            assert proc.returncode != 0, "a kubelet labelled its own Node a hypervisor"
            assert "is not allowed to modify labels" in proc.stderr and key in proc.stderr, \
                proc.stderr
        got = json.loads(kubectl("get", "node", node, "-o", "json").stdout)
        assert not set(selector) & set(got["metadata"].get("labels") or {})
        # an administrator may
        kubectl("label", "node", node, *(f"{k}={v}" for k, v in selector.items()))
        record(fault="Kubelet makes itself a hypervisor",
               injected="a node's credentials (system:node:<name>, system:nodes; real "
                        "kube-apiserver with the Node authorizer and NodeRestriction) "
                        "labelling their own Node with the agent DaemonSet's node selector",
               times=len(selector), lost=0, duplicated=0, overcommitted=None,
               result=f"{len(selector)} of {len(selector)} refused by NodeRestriction; the "
                      "same credentials may set an unrestricted label; an administrator may "
                      "set the selector's",
               figures={"refused": len(selector)})
    finally:
        kubectl("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)
