"""The chart against the real API server of the test session:

* ``helm template`` of every values combination validated strictly by
  kubeconform against JSON Schemas generated from *this* API server's
  OpenAPI v3 (built-in kinds), from the Kova CRDs and from kopf's peering CRDs;
* a real ``helm install`` whose objects are all accepted (there is no kubelet
  or scheduler here, so pods are created but never run), then ``helm uninstall``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from kova.crds.json_schema import KUBECONFORM_TEMPLATE, write_schemas
from tests.fixtures.crds import strict_openapi
from tests.support.chart import CHART, COMBINATIONS, chart_crds, dump, helm, render, set_args

REPO = Path(__file__).resolve().parents[3]
# Prometheus Operator's CRDs are not installed on the test API server, so
# ServiceMonitor and PrometheusRule have no schema here; tests/unit/helm/test_chart.py
# and tests/unit/helm/test_alerts.py check them.
NO_SCHEMA = {"ServiceMonitor", "PrometheusRule"}


@pytest.fixture(scope="session")
def schema_dir(kubectl, tmp_path_factory) -> Path:
    """kubeconform schemas for every kind the chart renders, from the API
    server's OpenAPI v3 and the CRDs shipped in the chart."""
    out = tmp_path_factory.mktemp("schemas")
    kinds: set[tuple[str, str]] = set()  # (apiVersion, kind)
    for combo in COMBINATIONS.values():
        kinds |= {(o["apiVersion"], o["kind"]) for o in render(combo)}
    paths = json.loads(kubectl("get", "--raw", "/openapi/v3").stdout)["paths"]
    wanted_gv = {av for av, kind in kinds if not av.startswith(("kova.dev/", "kopf.dev/"))
                 and kind not in NO_SCHEMA}
    for av in sorted(wanted_gv):
        path = "api/v1" if av == "v1" else f"apis/{av}"
        assert path in paths, f"the API server does not serve {av}"
        spec = json.loads(kubectl("get", "--raw", f"/openapi/v3/{path}").stdout)
        comps = strict_openapi(spec["components"]["schemas"])
        group, _, version = av.rpartition("/")
        for ref, schema in spec["components"]["schemas"].items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                if (gvk["group"], gvk["version"]) != (group, version):
                    continue
                if (av, gvk["kind"]) not in kinds:
                    continue
                doc = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                       "$ref": f"#/components/schemas/{ref}",
                       "components": {"schemas": comps}}
                # kubeconform's {{ .Group }} of a core kind is its version, "v1"
                target = out / (group or version) / f"{gvk['kind'].lower()}_{version}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(doc))
    write_schemas(out)  # the Kova kinds, strict
    for crd in chart_crds().values():  # kopf's peering kinds
        if crd["spec"]["group"] != "kopf.dev":
            continue
        (ver,) = crd["spec"]["versions"]
        kind = crd["spec"]["names"]["kind"]
        doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "additionalProperties": False, "required": ["apiVersion", "kind", "metadata"],
               "properties": {"apiVersion": {"enum": [f"kopf.dev/{ver['name']}"]},
                              "kind": {"enum": [kind]}, "metadata": {"type": "object"},
                              **strict_openapi(ver["schema"]["openAPIV3Schema"]["properties"])}}
        target = out / "kopf.dev" / f"{kind.lower()}_{ver['name']}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))
    missing = {(av, k) for av, k in kinds if k not in NO_SCHEMA
               and not (out / av.split("/")[0] / f"{k.lower()}_{av.split('/')[-1]}.json").exists()}
    assert not missing, f"no schema for {missing}"
    return out


def _kubeconform(binary: str, schemas: Path, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "-strict", "-summary", "-output", "text",
         "-schema-location", f"{schemas}/{KUBECONFORM_TEMPLATE}",
         "-skip", ",".join(sorted(NO_SCHEMA)), "-"],  # one -skip: a second replaces it
        input=text, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_kubeconform_strict_against_the_api_server_schemas(combo, kubeconform_bin, schema_dir):
    objs = render(COMBINATIONS[combo], include_crds=True)
    # CRDs are validated by tests/integration/crds/test_crds.py; here the rest
    objs = [o for o in objs if o["kind"] != "CustomResourceDefinition"]
    proc = _kubeconform(kubeconform_bin, schema_dir, dump(objs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checked = len([o for o in objs if o["kind"] not in NO_SCHEMA])
    assert f"Valid: {checked}, Invalid: 0, Errors: 0" in proc.stdout, proc.stdout


def test_kubeconform_check_has_teeth(kubeconform_bin, schema_dir) -> None:
    objs = render()
    dep = next(o for o in objs if o["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    proc = _kubeconform(kubeconform_bin, schema_dir, dump([dep]))
    assert proc.returncode != 0 and "runAsNonroot" in proc.stdout


# ---------------------------------------------------------------------------
# A real install


def _helm_k(kubeconfig: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return helm("--kubeconfig", str(kubeconfig), *args, **kw)


def _wait(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_helm_install_is_accepted_by_the_api_server(kubeconfig, kubectl, kova_crds, namespace):
    """Everything the chart creates is accepted by the real API server; the
    controller manager turns the Deployments and the StatefulSet into Pods
    (which stay Pending: no scheduler, no kubelet here). Then uninstall."""
    release = f"kova-{uuid.uuid4().hex[:6]}"
    values = {
        # the session's API server is shared: keep cluster-wide names unique
        "operator.peering.name": release,
        "leaseNamespace": namespace,
        "serviceMonitor.enabled": False,
        # one per cluster, held by the session's API component (tests/integration/api): the
        # APIService v1alpha1.subresources.kova.dev and the kova-view/edit/admin
        # roles (kubeconform checks them above; tests/integration/api applies the chart's)
        "api.enabled": False, "rbac.userRoles": False,
        # the test Node below never becomes Ready (no kubelet)
        "agent.tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                               "effect": "NoSchedule"}],
    }
    # a hypervisor Node (an API object only) so that the DaemonSet makes a Pod
    node = f"{release}-hv"
    kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node, "labels": {"node-restriction.kubernetes.io/kova-hypervisor": "true"}}}))
    proc = _helm_k(kubeconfig, "install", release, str(CHART), "--namespace", namespace,
                   *set_args(values), timeout=120)
    assert "STATUS: deployed" in proc.stdout, proc.stdout
    assert "Kova 0.1.0 is installed" in proc.stdout  # NOTES.txt rendered
    try:
        manifest = _helm_k(kubeconfig, "get", "manifest", release, "--namespace", namespace).stdout
        objs = [o for o in yaml.safe_load_all(manifest) if o]
        assert len(objs) >= 25
        for obj in objs:
            args = ["get", f"{obj['kind']}.{obj['apiVersion'].split('/')[0]}"
                    if "/" in obj["apiVersion"] else obj["kind"], obj["metadata"]["name"],
                    "-o", "name"]
            if obj["metadata"].get("namespace"):
                args += ["-n", obj["metadata"]["namespace"]]
            kubectl(*args)

        # Pods of the Deployments, the StatefulSet and the DaemonSet (the
        # privileged agent with its host paths) are accepted as rendered
        def pods():
            out = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
            comps = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p
                     for p in out["items"]}
            names = sorted(p["metadata"]["labels"].get("app.kubernetes.io/component")
                           for p in out["items"])
            want = ["agent", "operator", "operator", "placement", "postgresql"]
            return comps if names == want else None

        comps = _wait("the agent, operator, placement and postgresql pods", pods, timeout=30)
        agent = comps["agent"]["spec"]
        # (the DaemonSet controller pins it to the node with node affinity)
        assert node in json.dumps(agent["affinity"]["nodeAffinity"])
        assert agent["containers"][0]["securityContext"]["privileged"] is True

        # the admission policies' CEL type-checks against the Kova CRDs
        for vap in (o for o in objs if o["kind"] == "ValidatingAdmissionPolicy"):
            def checked(name=vap["metadata"]["name"]):
                got = json.loads(kubectl("get", "validatingadmissionpolicy", name,
                                         "-o", "json").stdout)
                status = got.get("status") or {}
                return status if status.get("observedGeneration") else None

            status = _wait(f"type checking of {vap['metadata']['name']}", checked)
            assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status

        # a second install of the same release is an upgrade that keeps the tokens
        before = kubectl("get", "secret", f"{release}-placement-auth", "-n", namespace,
                         "-o", "jsonpath={.data.admin-token}").stdout
        _helm_k(kubeconfig, "upgrade", release, str(CHART), "--namespace", namespace,
                *set_args(values), timeout=120)
        after = kubectl("get", "secret", f"{release}-placement-auth", "-n", namespace,
                        "-o", "jsonpath={.data.admin-token}").stdout
        assert before and before == after
    finally:
        _helm_k(kubeconfig, "uninstall", release, "--namespace", namespace, "--wait",
                "--timeout", "60s", timeout=120)
        kubectl("delete", "node", node, "--wait=false", check=False)
    assert not kubectl("get", "clusterroles", "-l", f"app.kubernetes.io/instance={release}",
                       "-o", "name").stdout.strip()
    assert not kubectl("get", "validatingadmissionpolicies", "-l",
                       f"app.kubernetes.io/instance={release}", "-o", "name").stdout.strip()
    # generated secrets are kept on purpose (helm.sh/resource-policy: keep)
    kubectl("get", "secret", f"{release}-placement-auth", "-n", namespace)


def test_generated_certificate_and_tokens_are_kept_across_upgrades(kubeconfig, kubectl,
                                                                  kova_crds, namespace):
    """images.enabled without images.tls.existingSecret: the chart's image
    store certificate is made on install and found again (lookup) on
    upgrade, so the agents' pod template (its checksum) does not change and
    the agents keep trusting the store; it stays after uninstall (keep).
    Placement's pod template does not change either: its checksum of the
    generated tokens is of the tokens its Secret holds."""
    release = f"kova-{uuid.uuid4().hex[:6]}"
    values = {"operator.peering.name": release, "leaseNamespace": namespace,
              "api.enabled": False, "rbac.userRoles": False, "images.enabled": True}
    secret = f"{release}-images-tls"

    def template(kind: str, name: str) -> dict:
        obj = json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        return obj["spec"]["template"]

    def state() -> tuple[str, ...]:
        data = json.loads(kubectl("get", "secret", secret, "-n", namespace,
                                  "-o", "json").stdout)["data"]
        return (data["tls.crt"], data["ca.crt"],
                template("daemonset", f"{release}-agent")["metadata"]["annotations"][
                    "checksum/images-tls"],
                json.dumps(template("deployment", f"{release}-placement"), sort_keys=True))

    _helm_k(kubeconfig, "install", release, str(CHART), "--namespace", namespace,
            *set_args(values), timeout=120)
    try:
        first = state()
        assert "BEGIN CERTIFICATE" in base64.b64decode(first[1]).decode()
        _helm_k(kubeconfig, "upgrade", release, str(CHART), "--namespace", namespace,
                *set_args({**values, "images.logLevel": "debug"}), timeout=120)
        assert state() == first
    finally:
        _helm_k(kubeconfig, "uninstall", release, "--namespace", namespace, "--wait",
                "--timeout", "60s", timeout=120)
    kubectl("get", "secret", secret, "-n", namespace)
    kubectl("delete", "secret", secret, "-n", namespace, check=False)


# ---------------------------------------------------------------------------
# The agents' admission policy, with real pod-bound tokens


@pytest.mark.reliability
def test_agent_node_restriction_with_pod_bound_tokens(kubeconfig, kubectl, kova_crds, namespace):
    """An agent's token bound to a pod on node A may write Host A, the
    Instances scheduled to A and Lease A, nothing of node B; a token not bound to a pod
    may write nothing. (No kubelet: the Nodes and the Pod are API objects only.)"""
    release = f"kova-{uuid.uuid4().hex[:6]}"
    node_a, node_b = f"{release}-a", f"{release}-b"
    values = {
        "placement.enabled": False, "placement.externalUrl": "http://placement.invalid:8778",
        "placement.auth.existingSecret": "unused", "operator.enabled": False,
        "networkPolicy.enabled": False, "leaseNamespace": namespace,
        "api.enabled": False, "rbac.userRoles": False,
    }
    _helm_k(kubeconfig, "install", release, str(CHART), "--namespace", namespace,
            *set_args(values), timeout=120)
    sa = f"{release}-agent"
    try:
        for node in (node_a, node_b):
            kubectl("create", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
        kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-a"},
            "spec": {"serviceAccountName": sa, "nodeName": node_a,
                     "containers": [{"name": "agent", "image": "kova:0.1.0"}]}}))
        bound = kubectl("create", "token", sa, "-n", namespace, "--duration", "10m",
                        "--bound-object-kind", "Pod", "--bound-object-name", "agent-a").stdout.strip()
        unbound = kubectl("create", "token", sa, "-n", namespace, "--duration", "10m").stdout.strip()
        who = json.loads(kubectl("--token", bound, "auth", "whoami", "-o", "json").stdout)
        assert who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"] == [node_a]

        refused = []

        def as_agent(token, *args, ok: bool, message: str = ""):
            proc = kubectl("--token", token, *args, check=False)
            if ok:
                assert proc.returncode == 0, proc.stderr
            else:
                assert proc.returncode != 0, f"{args} was allowed"
                assert "ValidatingAdmissionPolicy" in proc.stderr and message in proc.stderr, \
                    proc.stderr
                refused.append(args)

        def rbac_denied(token, *args, input=None):
            proc = kubectl("--token", token, *args, input=input, check=False)
            assert proc.returncode != 0, f"{args} was allowed"
            assert "forbidden" in proc.stderr and "cannot" in proc.stderr, proc.stderr
            refused.append(args)

        def host(name):
            return json.dumps({"apiVersion": "kova.dev/v1alpha1", "kind": "Host",
                               "metadata": {"name": name}, "spec": {}})

        def enforced(*args, input=None):
            """Policies take effect a moment after they are created: wait until
            a server-side dry run of a forbidden request is denied by one."""
            def denied():
                proc = kubectl("--token", bound, *args, "--dry-run=server", input=input,
                               check=False)
                return proc.returncode != 0 and "ValidatingAdmissionPolicy" in proc.stderr
            _wait(f"the admission policy to deny {args}", denied, timeout=30)

        enforced("create", "-f", "-", input=host(node_b))

        # Hosts
        proc = kubectl("--token", unbound, "create", "-f", "-", input=host(node_a), check=False)
        assert proc.returncode != 0 and "bound to a pod" in proc.stderr, proc.stderr
        proc = kubectl("--token", bound, "create", "-f", "-", input=host(node_b), check=False)
        assert proc.returncode != 0 and f"may not write Host {node_b}" in proc.stderr, proc.stderr
        kubectl("--token", bound, "create", "-f", "-", input=host(node_a))
        kubectl("create", "-f", "-", input=host(node_b))  # the admin may
        status = json.dumps({"status": {"state": "Up"}})
        as_agent(bound, "patch", "host", node_a, "--subresource=status", "--type=merge",
                 "-p", status, ok=True)
        as_agent(bound, "patch", "host", node_b, "--subresource=status", "--type=merge",
                 "-p", status, ok=False, message=f"may not write Host {node_b}")
        as_agent(bound, "annotate", "host", node_b, "x=y", ok=False, message="may not write Host")

        # Instances
        for name, node in (("on-a", node_a), ("on-b", node_b)):
            kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
                "apiVersion": "kova.dev/v1alpha1", "kind": "Instance",
                "metadata": {"name": name, "labels": {"kova.dev/host": node}},
                "spec": {"flavorRef": {"name": "small"}, "imageRef": {"name": "kova-test"}}}))
        fin = json.dumps({"metadata": {"finalizers": ["kova.dev/agent"]}})
        enforced("patch", "instance", "on-b", "-n", namespace, "--type=merge", "-p", fin)
        as_agent(bound, "patch", "instance", "on-a", "-n", namespace, "--type=merge", "-p", fin,
                 ok=True)
        as_agent(bound, "patch", "instance", "on-b", "-n", namespace, "--type=merge", "-p", fin,
                 ok=False, message="may write only the Instances scheduled to it")
        as_agent(bound, "patch", "instance", "on-b", "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": {"phase": "Running"}}),
                 ok=False, message="may write only the Instances scheduled to it")
        as_agent(bound, "label", "instance", "on-a", "-n", namespace, "--overwrite",
                 f"kova.dev/host={node_b}", ok=False,
                 # refused by this policy ("may not move an Instance") or the
                 # tenant restriction (the host label is the operator's), whichever runs first
                 message="kova.dev/host")
        as_agent(unbound, "patch", "instance", "on-a", "-n", namespace, "--type=merge",
                 "-p", json.dumps({"metadata": {"annotations": {"x": "y"}}}),
                 ok=False, message="bound to a pod")
        # Leases: only its own node's heartbeat
        def lease(name):
            return json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": {"name": name, "namespace": namespace},
                               "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})

        enforced("create", "-f", "-", input=lease(node_b))
        kubectl("--token", bound, "create", "-f", "-", input=lease(node_a))
        proc = kubectl("--token", bound, "create", "-f", "-", input=lease(node_b), check=False)
        assert proc.returncode != 0 and "may not write the Lease" in proc.stderr, proc.stderr
        kubectl("create", "-f", "-", input=lease(node_b))  # the admin may
        as_agent(bound, "patch", "lease", node_b, "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"holderIdentity": node_a}}),
                 ok=False, message="may not write the Lease")
        as_agent(bound, "patch", "lease", node_a, "-n", namespace, "--type=merge",
                 "-p", json.dumps({"spec": {"leaseDurationSeconds": 30}}), ok=True)
        # RBAC still applies underneath: no Flavor or Image writes at all, no
        # Instance created or deleted, whatever the token.
        flavor = json.dumps({
            "apiVersion": "kova.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": release},
            "spec": {"vcpus": 1, "memoryMiB": 64, "diskGiB": 1}})
        image = json.dumps({
            "apiVersion": "kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": release},
            "spec": {"source": {"url": "https://images.invalid/x.qcow2"}, "format": "qcow2"}})
        for token in (bound, unbound):
            rbac_denied(token, "create", "-f", "-", input=flavor)
            rbac_denied(token, "create", "-f", "-", input=image)
        kubectl("create", "-f", "-", input=flavor)  # the admin's
        kubectl("create", "-f", "-", input=image)
        for kind in ("flavor", "image"):
            for token in (bound, unbound):
                rbac_denied(token, "patch", kind, release, "--type=merge",
                            "-p", '{"metadata":{"labels":{"x":"y"}}}')
                rbac_denied(token, "delete", kind, release, "--wait=false")
        rbac_denied(bound, "delete", "instance", "on-b", "-n", namespace, "--wait=false")
        rbac_denied(bound, "delete", "instance", "on-a", "-n", namespace, "--wait=false")
        proc = kubectl("--token", bound, "create", "-n", namespace, "-f", "-", check=False,
                       input=json.dumps({
                           "apiVersion": "kova.dev/v1alpha1", "kind": "Instance",
                           "metadata": {"name": "made-by-agent", "labels": {"kova.dev/host": node_a}},
                           "spec": {"flavorRef": {"name": "small"},
                                    "imageRef": {"name": "kova-test"}}}))
        assert proc.returncode != 0 and "forbidden" in proc.stderr, proc.stderr
        refused.append(("create", "instance"))
        # Every refused write left the objects as they were.
        for kind in ("flavor", "image"):
            obj = json.loads(kubectl("get", kind, release, "-o", "json").stdout)
            assert "x" not in (obj["metadata"].get("labels") or {})
            assert not obj["metadata"].get("deletionTimestamp")
        host_b = json.loads(kubectl("get", "host", node_b, "-o", "json").stdout)
        assert (host_b.get("status") or {}).get("state") != "Up"
        assert "x" not in (host_b["metadata"].get("annotations") or {})
        inst_b = json.loads(kubectl("get", "instance", "on-b", "-n", namespace,
                                    "-o", "json").stdout)
        assert not inst_b["metadata"].get("finalizers")
        assert not (inst_b.get("status") or {}).get("phase")
        from tests.reliability.record import record

        record(fault="Agent token beyond its node",
               injected="an agent ServiceAccount token bound to a Pod on node A (and one not "
                        "bound to a pod) writing node B's Host, Instances and Lease, relabelling "
                        "an Instance to B, creating/deleting Instances, writing Flavors and "
                        "Images (real kube-apiserver, the chart's RBAC and admission policies)",
               times=len(refused), lost=0, duplicated=0, overcommitted=None,
               result=f"{len(refused)} of {len(refused)} forbidden writes refused (by "
                      "ValidatingAdmissionPolicy or RBAC), the objects unchanged; node A's own "
                      "Host, Instances and Lease writable (lost: 0 writes let through)",
               figures={"refused": len(refused)})
    finally:
        kubectl("patch", "instance", "on-a", "-n", namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)
        kubectl("delete", "host", node_a, node_b, "--ignore-not-found", "--wait=false", check=False)
        kubectl("delete", "flavor,image", release, "--ignore-not-found", "--wait=false",
                check=False)
        kubectl("delete", "node", node_a, node_b, "--ignore-not-found", "--wait=false", check=False)
        _helm_k(kubeconfig, "uninstall", release, "--namespace", namespace, timeout=120)
