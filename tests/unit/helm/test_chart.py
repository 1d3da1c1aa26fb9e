"""The Helm chart helm/kova, offline: lint, CRD copies, values schema, and
what every values combination renders (no API server needed)."""

from __future__ import annotations

import json

import click
import pytest
import yaml

from kova.crds import generate as gen
from tests.support.chart import (
    CHART,
    COMBINATIONS,
    by_kind,
    chart_crds,
    component,
    helm,
    one,
    pod_spec,
    render,
    render_text,
    set_args,
    workloads,
)

# ---------------------------------------------------------------------------
# CRDs


def test_chart_crds_equal_generated_ones() -> None:
    """helm/kova/crds/ holds exactly what `kova crds generate` writes
    (refresh with hack/update-chart-crds.sh)."""
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("kova.dev_*.yaml")}
    generated = {p.name: p.read_text() for p in gen.GENERATED_DIR.glob("*.yaml")}
    stale = "helm/kova/crds/ is stale: run hack/update-chart-crds.sh"
    assert chart == generated, stale
    assert chart == gen.render_all(), stale
    assert gen.check(CHART / "crds") == []


def test_chart_ships_kopf_peering_crds() -> None:
    from kova.operator.peering import manifests

    crds = chart_crds()
    want = {c["metadata"]["name"]: c for c in manifests()[:2]}
    got = {c["metadata"]["name"]: c for name, c in crds.items() if name.startswith("kopf.dev_")}
    assert got == want, "helm/kova/crds/ is stale: run hack/update-chart-crds.sh"


def test_include_crds_renders_all_of_them() -> None:
    objs = render(include_crds=True)
    names = {o["metadata"]["name"] for o in by_kind(objs, "CustomResourceDefinition")}
    assert names == {c["metadata"]["name"] for c in chart_crds().values()}
    assert len(names) == 8


# ---------------------------------------------------------------------------
# lint and values schema


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_helm_lint_strict(combo: str) -> None:
    proc = helm("lint", "--strict", str(CHART), "--namespace", "kova-system",
                *set_args(COMBINATIONS[combo]))
    assert "0 chart(s) failed" in proc.stdout, proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


def test_values_yaml_matches_the_schema_keys() -> None:
    """Every key in values.yaml is described in values.schema.json (which
    forbids unknown keys, so a typo in --set fails)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(v, s, path):
        if s.get("type") == "object" and "properties" in s and isinstance(v, dict):
            for key, sub in v.items():
                assert key in s["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, s["properties"][key], f"{path}.{key}")

    walk(values, schema, "")
    import jsonschema

    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema)


@pytest.mark.parametrize("values, message", [
    ({"operator.replica": 3}, "additional properties 'replica' not allowed"),
    ({"agent.domainType": "xen"}, "/agent/domainType"),
    ({"placement.externalUrl": "placement:8778"}, "/placement/externalUrl"),
    ({"image.digest": "latest"}, "/image/digest"),
    ({"postgresql.password": "p@ss/word"}, "/postgresql/password"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"agent.imageCA.secret": "Mirror CA"}, "/agent/imageCA/secret"),
    ({"agent.imageCA.key": ""}, "/agent/imageCA/key"),
    ({"placement.agentIdentity": "node"}, "/placement/agentIdentity"),
])
def test_schema_rejects_bad_values(values: dict, message: str) -> None:
    proc = render_text(values, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize("values, message", [
    ({"postgresql.enabled": False}, "Placement needs a database"),
    ({"placement.enabled": False}, "placement.externalUrl is required"),
    ({"operator.peering.enabled": False}, "needs operator.peering.enabled"),
    ({"placement.tokenReview": False}, "placement.agentIdentity=podToken needs"),
    ({"agent.imageCA.secret": "a", "agent.imageCA.configMap": "b"},
     "agent.imageCA: set secret or configMap, not both"),
])
def test_inconsistent_values_fail_with_a_message(values: dict, message: str) -> None:
    proc = render_text(values, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------
# What is rendered


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_every_combination_renders_consistent_objects(combo: str) -> None:
    objs = render(COMBINATIONS[combo])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering", "Namespace",
                      "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                      "APIService"}
    seen = set()
    for obj in objs:
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace"), meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        assert len(meta["name"]) <= 63
        labels = meta["labels"]
        assert labels["app.kubernetes.io/part-of"] == "kova"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, key
        else:
            assert meta.get("namespace"), key
    # every Service selects the pods of a rendered workload
    pods = [pod_spec(w) and w["spec"]["template"]["metadata"]["labels"] for w in workloads(objs)]
    for svc in by_kind(objs, "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pods), svc["metadata"]["name"]
    # every referenced ServiceAccount is rendered (or given by the user)
    sas = {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}
    for w in workloads(objs):
        assert pod_spec(w)["serviceAccountName"] in sas


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_only_the_agent_is_privileged_or_root(combo: str) -> None:
    values = COMBINATIONS[combo]
    for w in workloads(render(values)):
        for c in pod_spec(w)["containers"]:
            sc = c["securityContext"]
            assert c["resources"]["limits"] and c["resources"]["requests"]
            assert sc["readOnlyRootFilesystem"] is True
            if component(w) == "agent":
                assert sc["runAsUser"] == 0
                assert sc["privileged"] is values.get("agent.privileged", True)
                if not sc["privileged"]:
                    assert sc["capabilities"]["drop"] == ["ALL"]
                    assert sc["allowPrivilegeEscalation"] is False
            else:
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 999
                assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}
                assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not pod_spec(w).get("hostNetwork") and not pod_spec(w).get("hostPID")
            host_paths = [v for v in pod_spec(w)["volumes"] if "hostPath" in v]
            assert not host_paths or component(w) == "agent"


def test_agent_daemonset() -> None:
    objs = render()
    ds = one(objs, "DaemonSet", "kova-agent")
    spec = pod_spec(ds)
    assert spec["nodeSelector"] == {"node-restriction.kubernetes.io/kova-hypervisor": "true"}
    (c,) = spec["containers"]
    assert c["image"] == "kova:0.1.0"
    assert c["args"][:2] == ["agent", "run"]
    assert "--host=$(NODE_NAME)" in c["args"]
    assert "--libvirt-uri=qemu:///system" in c["args"]
    assert "--instance-dir=/var/lib/kova/instances" in c["args"]
    assert "--placement-url=http://kova-placement.kova-system.svc:8778" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # its own pod-bound token for Placement, not the operator's admin token
    assert "KOVA_PLACEMENT_TOKEN" not in env
    assert env["KOVA_PLACEMENT_TOKEN_FILE"]["value"] == "/var/run/secrets/kova/placement/token"
    (projected,) = [v for v in spec["volumes"] if v["name"] == "placement-token"]
    assert projected["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "kova-placement", "expirationSeconds": 3600, "path": "token"}}]
    (pc,) = pod_spec(one(objs, "Deployment", "kova-placement"))["containers"]
    assert "--k8s-agent=kova-system:kova-agent" in pc["args"]
    shared = render({"placement.agentIdentity": "sharedToken"})
    (sc,) = pod_spec(one(shared, "DaemonSet", "kova-agent"))["containers"]
    assert {e["name"]: e for e in sc["env"]}["KOVA_PLACEMENT_TOKEN"]["valueFrom"][
        "secretKeyRef"] == {"name": "kova-placement-auth", "key": "admin-token"}
    (pc,) = pod_spec(one(shared, "Deployment", "kova-placement"))["containers"]
    assert not any(a.startswith("--k8s-agent") for a in pc["args"])
    # host paths are mounted at the same path as on the node: libvirtd (on the
    # node) opens the files the agent names in the domain XML
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["libvirt-socket"]["hostPath"] == {"path": "/var/run/libvirt", "type": "Directory"}
    assert vols["instances"]["hostPath"] == {"path": "/var/lib/kova/instances",
                                             "type": "DirectoryOrCreate"}
    assert vols["host-images"]["hostPath"] == {"path": "/var/lib/kova/images",
                                               "type": "DirectoryOrCreate"}
    for name in ("libvirt-socket", "instances", "host-images"):
        assert mounts[name] == vols[name]["hostPath"]["path"]
    assert [m.get("readOnly") for m in c["volumeMounts"] if m["name"] == "host-images"] == [True]
    no_images = pod_spec(one(render({"agent.hostImageDir": ""}), "DaemonSet", "kova-agent"))
    assert "host-images" not in {v["name"] for v in no_images["volumes"]}
    assert spec["automountServiceAccountToken"] is True


def test_operator_deployment_elects_a_leader() -> None:
    objs = render()
    dep = one(objs, "Deployment", "kova-operator")
    assert dep["spec"]["replicas"] == 2
    (c,) = pod_spec(dep)["containers"]
    assert {"--peering", "--peering-name=kova"} <= set(c["args"])
    assert one(objs, "ClusterKopfPeering", "kova")
    assert one(objs, "PodDisruptionBudget", "kova-operator")["spec"]["minAvailable"] == 1
    assert "podAntiAffinity" in pod_spec(dep)["affinity"]

    alone = render(COMBINATIONS["namespaced-operator-no-peering"])
    dep = one(alone, "Deployment", "kova-operator")
    (c,) = pod_spec(dep)["containers"]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "--standalone" in c["args"] and "--namespace=vms" in c["args"]
    assert not by_kind(alone, "ClusterKopfPeering") and not by_kind(alone, "KopfPeering")

    ns_peering = render(COMBINATIONS["peering-namespaced-external-placement"])
    assert {(o["metadata"]["namespace"], o["metadata"]["name"])
            for o in by_kind(ns_peering, "KopfPeering")} == {("vms", "kova"), ("dev", "kova")}


def test_operator_replicas_can_all_schedule() -> None:
    objs = render(COMBINATIONS["share-instances"])
    dep = one(objs, "Deployment", "kova-operator")
    assert dep["spec"]["replicas"] == 3 and "strategy" not in dep["spec"]
    (c,) = pod_spec(dep)["containers"]
    assert {"--share-instances", "--peering-name=kova", "--member-namespace=kova-system",
            "--member-lease-seconds=15"} <= set(c["args"])
    assert "--standalone" not in c["args"] and "--peering" not in c["args"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
           for e in c["env"]}
    assert env["KOVA_OPERATOR_REPLICA_IDENTITY"] == "metadata.name"
    assert env["KOVA_OPERATOR_REPLICA_POD_UID"] == "metadata.uid"
    role = one(objs, "Role", "kova-operator-members")
    assert role["metadata"]["namespace"] == "kova-system"
    assert role["rules"][0]["resources"] == ["leases"]
    assert "delete" not in role["rules"][0]["verbs"]
    assert one(objs, "RoleBinding", "kova-operator-members")
    # without it, no member Leases and no Role for them
    assert "kova-operator-members" not in {r["metadata"]["name"]
                                           for r in by_kind(render(), "Role")}


def test_placement_database_wiring() -> None:
    objs = render()
    (c,) = pod_spec(one(objs, "Deployment", "kova-placement"))["containers"]
    env = [e["name"] for e in c["env"]]
    # $(POSTGRES_PASSWORD) expands only if defined before the URL
    assert env.index("POSTGRES_PASSWORD") < env.index("KOVA_PLACEMENT_DATABASE_URL")
    url = {e["name"]: e for e in c["env"]}["KOVA_PLACEMENT_DATABASE_URL"]["value"]
    assert url == ("postgresql+psycopg://placement:$(POSTGRES_PASSWORD)"
                   "@kova-postgresql:5432/placement")
    pg = pod_spec(one(objs, "StatefulSet", "kova-postgresql"))
    # a restarted PostgreSQL must find its data directory as it left it
    assert pg["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    assert "--token-file=/etc/kova/placement/tokens" in c["args"]
    # without placement.tls the chart says plain HTTP is meant (serve refuses otherwise)
    assert "--allow-plain-http" in c["args"]
    # the operator asks for a limited number of candidates: they must be sampled
    assert "--randomize-allocation-candidates" in c["args"]
    (c,) = pod_spec(one(render({"placement.randomizeAllocationCandidates": False}),
                        "Deployment", "kova-placement"))["containers"]
    assert "--randomize-allocation-candidates" not in c["args"]
    secret = one(objs, "Secret", "kova-placement-auth")
    admin = secret["stringData"]["admin-token"]
    assert len(admin) == 40 and f"admin    {admin}" in secret["stringData"]["tokens"]

    ext = render(COMBINATIONS["external-db-secret"])
    assert not by_kind(ext, "StatefulSet")
    # both Placement Secrets are the user's (the stream certificates are the chart's)
    assert not [s for s in by_kind(ext, "Secret") if "-tls" not in s["metadata"]["name"]]
    (c,) = pod_spec(one(ext, "Deployment", "kova-placement"))["containers"]
    (url,) = [e for e in c["env"] if e["name"] == "KOVA_PLACEMENT_DATABASE_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "kova-db", "key": "url"}
    assert one(ext, "PodDisruptionBudget", "kova-placement")

    inline = render(COMBINATIONS["external-db-url-monitoring"])
    secret = one(inline, "Secret", "kova-placement-db")
    assert secret["stringData"]["url"].startswith("postgresql+psycopg://")


def test_service_monitors() -> None:
    objs = render(COMBINATIONS["external-db-url-monitoring"])
    mons = by_kind(objs, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in mons} == {"kova-placement", "kova-operator", "kova-agent"}
    services = by_kind(objs, "Service")
    for mon in mons:
        (ep,) = mon["spec"]["endpoints"]
        (svc,) = [s for s in services
                  if mon["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
                  and any(p["name"] == ep["port"] for p in s["spec"]["ports"])]
        assert ep["path"] == "/metrics"
    assert not by_kind(render(), "ServiceMonitor")


def test_placement_tls() -> None:
    """placement.tls.existingSecret: Placement serves HTTPS with the Secret's
    certificate and key; the operator and the agents get an https:// URL and
    only the CA (never the key); probes and the ServiceMonitor speak HTTPS."""
    objs = render(COMBINATIONS["external-db-url-monitoring"])
    placement = pod_spec(one(objs, "Deployment", "kova-placement"))
    (c,) = placement["containers"]
    assert "--tls-cert-file=/etc/kova/placement-tls/tls.crt" in c["args"]
    assert "--tls-key-file=/etc/kova/placement-tls/tls.key" in c["args"]
    assert "--allow-plain-http" not in c["args"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["startupProbe"]["httpGet"]["scheme"] == "HTTPS"
    (tls,) = [v for v in placement["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "kova-placement-tls"
    assert {i["key"] for i in tls["secret"]["items"]} == {"tls.crt", "tls.key"}
    for kind, name, env_name in (("Deployment", "kova-operator", "KOVA_OPERATOR_PLACEMENT_CA_FILE"),
                                 ("DaemonSet", "kova-agent", "KOVA_PLACEMENT_CA_FILE")):
        spec = pod_spec(one(objs, kind, name))
        (c,) = spec["containers"]
        assert "--placement-url=https://kova-placement.kova-system.svc:8778" in c["args"], c["args"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env[env_name] == "/etc/kova/placement-ca/ca.crt"
        (ca,) = [v for v in spec["volumes"] if v["name"] == "placement-ca"]
        assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # no tls.key
        assert {"name": "placement-ca", "mountPath": "/etc/kova/placement-ca",
                "readOnly": True} in c["volumeMounts"]
    (mon,) = [m for m in by_kind(objs, "ServiceMonitor") if m["metadata"]["name"] == "kova-placement"]
    (ep,) = mon["spec"]["endpoints"]
    assert ep["scheme"] == "https"
    assert ep["tlsConfig"]["ca"]["secret"] == {"name": "kova-placement-tls", "key": "ca.crt"}
    assert ep["tlsConfig"]["serverName"] == "kova-placement.kova-system.svc"

    # An external https:// Placement: only the CA, under its own key.
    ext = render(COMBINATIONS["peering-namespaced-external-placement"])
    (c,) = pod_spec(one(ext, "Deployment", "kova-operator"))["containers"]
    assert "--placement-url=https://placement.example:8778" in c["args"]
    (ca,) = [v for v in pod_spec(one(ext, "Deployment", "kova-operator"))["volumes"]
             if v["name"] == "placement-ca"]
    assert ca["secret"] == {"secretName": "placement-ca", "defaultMode": 0o444,
                            "items": [{"key": "ca.pem", "path": "ca.crt"}]}

    # Without TLS: plain HTTP and nothing mounted.
    plain = render()
    for kind, name in (("Deployment", "kova-operator"), ("DaemonSet", "kova-agent"),
                       ("Deployment", "kova-placement")):
        spec = pod_spec(one(plain, kind, name))
        assert not [v for v in spec["volumes"] if v["name"] in ("placement-ca", "tls")]
        assert not [a for a in spec["containers"][0]["args"]
                    if "https://" in a or "tls" in a and "stream-tls" not in a
                    and "migration-tls" not in a and not a.startswith("--live-migration-uri=")]


def test_agent_image_ca() -> None:
    """agent.imageCA: the agents trust the CA bundle of a Secret or a ConfigMap
    for https:// image URLs (--image-ca-file through its environment
    variable), mounted read-only; without it nothing is mounted."""
    for values, source in (
            (COMBINATIONS["external-db-url-monitoring"],
             {"secret": {"secretName": "image-mirror-tls", "defaultMode": 0o444,
                         "items": [{"key": "ca.crt", "path": "ca.crt"}]}}),
            (COMBINATIONS["namespaced-operator-no-peering"],
             {"configMap": {"name": "image-mirror-ca", "defaultMode": 0o444,
                            "items": [{"key": "ca-bundle.pem", "path": "ca.crt"}]}})):
        spec = pod_spec(one(render(values), "DaemonSet", "kova-agent"))
        (c,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["KOVA_AGENT_IMAGE_CA_FILE"] == "/etc/kova/image-ca/ca.crt"
        assert {"name": "image-ca", "mountPath": "/etc/kova/image-ca",
                "readOnly": True} in c["volumeMounts"]
        (vol,) = [v for v in spec["volumes"] if v["name"] == "image-ca"]
        assert vol == {"name": "image-ca", **source}
    spec = pod_spec(one(render(), "DaemonSet", "kova-agent"))
    assert "KOVA_AGENT_IMAGE_CA_FILE" not in {e["name"] for e in spec["containers"][0]["env"]}
    assert "image-ca" not in {v["name"] for v in spec["volumes"]}


def test_network_policies() -> None:
    objs = render()
    pols = {p["metadata"]["name"]: p for p in by_kind(objs, "NetworkPolicy")}
    assert set(pols) == {"kova-placement", "kova-postgresql", "kova-operator", "kova-agent",
                         "kova-api", "kova-agent-stream"}
    # the agents' stream endpoints: from the API component's pods and the
    # other agents (a cold migration's disk copy)
    (rule,) = pols["kova-agent-stream"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "stream", "protocol": "TCP"}]
    assert rule["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "kova", "app.kubernetes.io/instance": "kova",
        "app.kubernetes.io/component": comp}}} for comp in ("api", "agent")]
    pg = pols["kova-postgresql"]["spec"]
    assert pg["egress"] == []
    assert pg["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "kova", "app.kubernetes.io/instance": "kova",
        "app.kubernetes.io/component": "placement"}}}]
    assert not by_kind(render({"networkPolicy.enabled": False}), "NetworkPolicy")


def test_agent_node_restriction_policy() -> None:
    objs = render()
    vaps = {p["metadata"]["name"]: p for p in by_kind(objs, "ValidatingAdmissionPolicy")
            if p["metadata"]["name"].startswith("kova-agent-")}
    assert set(vaps) == {f"kova-agent-node-restriction-{r}" for r in ("hosts", "instances", "leases")}
    for vap in vaps.values():
        assert vap["apiVersion"] == "admissionregistration.k8s.io/v1"
        (cond,) = vap["spec"]["matchConditions"]
        assert cond["expression"] == (
            "request.userInfo.username == 'system:serviceaccount:kova-system:kova-agent'")
        assert "authentication.kubernetes.io/node-name" in vap["spec"]["variables"][0]["expression"]
        assert vap["spec"]["failurePolicy"] == "Fail"
    bindings = by_kind(objs, "ValidatingAdmissionPolicyBinding")
    assert {b["spec"]["policyName"] for b in bindings} == set(vaps) | {"kova-tenant-restriction"}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)
    off = render(COMBINATIONS["peering-namespaced-external-placement"])
    assert [p["metadata"]["name"] for p in by_kind(off, "ValidatingAdmissionPolicy")] == [
        "kova-tenant-restriction"]
    without = by_kind(render({"rbac.tenantRestriction": False}), "ValidatingAdmissionPolicy")
    assert "kova-tenant-restriction" not in {p["metadata"]["name"] for p in without}


def test_lease_roles_live_in_the_lease_namespace() -> None:
    objs = render(COMBINATIONS["peering-namespaced-external-placement"])
    ns = one(objs, "Namespace", "kova-leases")
    assert ns["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {o["metadata"]["namespace"] for o in by_kind(objs, "Role")} == {"kova-leases"}
    # RoleBindings: the leases, and the API component's reading of the
    # request-header CA in kube-system (the built-in Role)
    others = [b for b in by_kind(objs, "RoleBinding")
              if b["metadata"]["namespace"] != "kova-leases"]
    assert [(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in others] == [
        ("kube-system", "extension-apiserver-authentication-reader")]


# ---------------------------------------------------------------------------
# The chart speaks the components' command lines


def _command(*path: str) -> click.Command:
    from kova.cli import main

    cmd: click.Command = main
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def _check_args(cmd: click.Command, args: list[str], env: list[dict]) -> None:
    opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    envvars = {p.envvar for p in cmd.params if isinstance(p.envvar, str)}
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in opts, f"{arg} is not an option of {cmd.name}"
    for var in env:
        if var["name"].startswith("KOVA_"):
            assert var["name"] in envvars, f"{var['name']} is not read by {cmd.name}"


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_args_and_env_are_options_of_the_real_cli(combo: str) -> None:
    commands = {"placement": ("placement", "serve"), "operator": ("operator", "run"),
                "agent": ("agent", "run"), "api": ("api", "serve")}
    for w in workloads(render(COMBINATIONS[combo])):
        if component(w) not in commands:
            continue
        (c,) = pod_spec(w)["containers"]
        assert c["args"][:2] == list(commands[component(w)])
        _check_args(_command(*commands[component(w)]), c["args"][2:], c.get("env", []))


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _expanded_vars_are_defined(container: dict) -> None:
    """Kubernetes expands $(VAR) in args only for the container's own
    variables: every one the chart writes must be among them."""
    import re

    used = {v for a in container["args"] for v in re.findall(r"\$\(([A-Z_]+)\)", a)}
    assert used <= set(_env(container)), used - set(_env(container))


def test_agent_live_migration_uri() -> None:
    """agent.liveMigration.uri becomes the agent's --live-migration-uri:
    by default qemu+tls:// to the node's address (status.hostIP through the
    downward API, expanded by Kubernetes), qemu+tcp:// or the node's name on
    request, nothing when empty; a URI of another transport or no libvirt
    system instance is refused by the values schema."""
    agent = _command("agent", "run")
    for values, want in (
            ({}, "qemu+tls://$(NODE_IP)/system"),
            ({"agent.liveMigration.uri": "qemu+tcp://$(NODE_IP)/system"},
             "qemu+tcp://$(NODE_IP)/system"),
            ({"agent.liveMigration.uri": "qemu+tls://$(NODE_NAME)/system"},
             "qemu+tls://$(NODE_NAME)/system"),
            ({"agent.liveMigration.uri": "qemu+tls://[$(NODE_IP)]/system?no_verify=0"},
             "qemu+tls://[$(NODE_IP)]/system?no_verify=0"),
            ({"agent.liveMigration.uri": ""}, None)):
        (c,) = pod_spec(one(render(values), "DaemonSet", "kova-agent"))["containers"]
        got = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--live-migration-uri=")]
        assert got == ([want] if want else []), (values, got)
        assert _env(c)["NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
        _expanded_vars_are_defined(c)
        _check_args(agent, c["args"][2:], c["env"])
    for bad in ("http://node/system", "qemu+ssh://node/system", "qemu+tls://node/session",
                "qemu:///system", "qemu+tls://$(NODE_IP)/system extra"):
        proc = render_text({"agent.liveMigration.uri": bad}, check=False)
        assert proc.returncode != 0 and "/agent/liveMigration/uri" in proc.stderr, (bad, proc)
    proc = helm("lint", "--strict", str(CHART), "--namespace", "kova-system",
                *set_args({"agent.liveMigration.uri": "qemu+tcp://$(NODE_IP)/system"}))
    assert "0 chart(s) failed" in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def _pem_cert(text: str):
    from cryptography import x509

    return x509.load_pem_x509_certificate(text.encode())


def test_image_store() -> None:
    """images.enabled: the image store's Deployment (one writer of its
    PersistentVolumeClaim), Service, and the RBAC it needs (TokenReview,
    SubjectAccessReview, create Images, patch their status); its args are
    options of `kova images serve`."""
    objs = render({"images": {"enabled": True}})
    dep = one(objs, "Deployment", "kova-images")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod_spec(dep)["containers"]
    assert c["args"][:2] == ["images", "serve"]
    assert "--public-url=https://kova-images.kova-system.svc:9468" in c["args"]
    _check_args(_command("images", "serve"), c["args"][2:], c.get("env", []))
    claim = one(objs, "PersistentVolumeClaim", "kova-images")
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert one(objs, "Service", "kova-images")["spec"]["ports"][0]["port"] == 9468
    store_verbs = {"create", "get", "list", "watch", "patch"}  # and the finalizer
    rules = {(g, r): set(rule["verbs"]) for rule in one(objs, "ClusterRole", "kova-images")[
        "rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {("authentication.k8s.io", "tokenreviews"): {"create"},
                     ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
                     ("kova.dev", "images"): store_verbs, ("kova.dev", "images/status"): {"patch"},
                     ("kova.dev", "tenantimages"): store_verbs,
                     ("kova.dev", "tenantimages/status"): {"patch"}}
    assert not [o for o in render() if o["metadata"]["name"].startswith("kova-images")]
    proc = helm("lint", "--strict", str(CHART), "--namespace", "kova-system",
                *set_args({"images.enabled": True}))
    assert "0 chart(s) failed" in proc.stdout and "[WARNING]" not in proc.stdout, proc.stdout


def test_image_store_certificate_is_made_and_wired_to_the_agents() -> None:
    """Without images.tls.existingSecret the chart makes the store's CA and
    certificate (kept on upgrades: resource-policy keep, lookup), valid for
    the Service's names and for localhost (port-forward); the store mounts
    the certificate and key, the agents only the CA (--image-store-ca-file)
    and the store's URL (--image-store-url), the same URL the store records
    in its Images; both restart when the certificate changes."""
    import base64
    import datetime
    import ipaddress

    from cryptography import x509

    objs = render({"images.enabled": True})
    secret = one(objs, "Secret", "kova-images-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"tls.crt", "tls.key", "ca.crt"}
    ca, crt = _pem_cert(data["ca.crt"]), _pem_cert(data["tls.crt"])
    crt.verify_directly_issued_by(ca)
    assert ca.subject != crt.subject and "PRIVATE KEY" in data["tls.key"]
    san = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) >= {
        "kova-images.kova-system.svc", "kova-images.kova-system.svc.cluster.local", "localhost"}
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert crt.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) > \
        datetime.timedelta(days=3000)

    store = pod_spec(one(objs, "Deployment", "kova-images"))
    (sc,) = store["containers"]
    url = next(a.split("=", 1)[1] for a in sc["args"] if a.startswith("--public-url="))
    (tls,) = [v for v in store["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == "kova-images-tls"
    assert {i["key"] for i in tls["secret"]["items"]} == {"tls.crt", "tls.key"}

    ds = one(objs, "DaemonSet", "kova-agent")
    spec = pod_spec(ds)
    (c,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KOVA_AGENT_IMAGE_STORE_URL"] == url
    assert env["KOVA_AGENT_IMAGE_STORE_CA_FILE"] == "/etc/kova/image-store-ca/ca.crt"
    assert {"name": "image-store-ca", "mountPath": "/etc/kova/image-store-ca",
            "readOnly": True} in c["volumeMounts"]
    (vol,) = [v for v in spec["volumes"] if v["name"] == "image-store-ca"]
    assert vol["secret"] == {"secretName": "kova-images-tls", "defaultMode": 0o444,
                             "items": [{"key": "ca.crt", "path": "ca.crt"}]}  # no key
    _check_args(_command("agent", "run"), c["args"][2:], c["env"])
    assert "KOVA_AGENT_IMAGE_CA_FILE" not in env  # agent.imageCA stays the user's
    sums = (ds["spec"]["template"]["metadata"]["annotations"]["checksum/images-tls"],
            one(objs, "Deployment", "kova-images")["spec"]["template"]["metadata"][
                "annotations"]["checksum/images-tls"])
    assert sums[0] == sums[1]

    # a mirror's CA (agent.imageCA) and the store's together
    both = render({"images.enabled": True, "agent.imageCA.configMap": "mirror-ca"})
    (c,) = pod_spec(one(both, "DaemonSet", "kova-agent"))["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KOVA_AGENT_IMAGE_CA_FILE"] == "/etc/kova/image-ca/ca.crt"
    assert env["KOVA_AGENT_IMAGE_STORE_CA_FILE"] == "/etc/kova/image-store-ca/ca.crt"

    # images off: the agents know no store
    (c,) = pod_spec(one(render(), "DaemonSet", "kova-agent"))["containers"]
    assert not {"KOVA_AGENT_IMAGE_STORE_URL", "KOVA_AGENT_IMAGE_STORE_CA_FILE"} & set(_env(c))


def test_image_store_existing_secret_wins() -> None:
    """images.tls.existingSecret: no certificate is made; the store mounts
    that Secret and the agents its CA under images.tls.caKey; with caKey ""
    (a certificate of a CA the system trust store knows) the agents get the
    URL and no CA file."""
    objs = render({"images.enabled": True, "images.tls.existingSecret": "images-tls",
                   "images.tls.caKey": "issuer.pem"})
    assert not [o for o in by_kind(objs, "Secret") if o["metadata"]["name"] == "kova-images-tls"]
    store = pod_spec(one(objs, "Deployment", "kova-images"))
    assert [v["secret"]["secretName"] for v in store["volumes"] if v["name"] == "tls"] == [
        "images-tls"]
    spec = pod_spec(one(objs, "DaemonSet", "kova-agent"))
    (vol,) = [v for v in spec["volumes"] if v["name"] == "image-store-ca"]
    assert vol["secret"]["secretName"] == "images-tls"
    assert vol["secret"]["items"] == [{"key": "issuer.pem", "path": "ca.crt"}]
    assert "checksum/images-tls" not in spec.get("annotations", {})
    public = render({"images.enabled": True, "images.tls.existingSecret": "images-tls",
                     "images.tls.caKey": ""})
    spec = pod_spec(one(public, "DaemonSet", "kova-agent"))
    env = _env(spec["containers"][0])
    assert env["KOVA_AGENT_IMAGE_STORE_URL"]["value"] == "https://kova-images.kova-system.svc:9468"
    assert "KOVA_AGENT_IMAGE_STORE_CA_FILE" not in env
    assert "image-store-ca" not in {v["name"] for v in spec["volumes"]}


def test_agent_image_sources() -> None:
    """The agent's image directory and the networks image URLs may not (or
    may) reach it through its environment, as `kova agent run` reads
    them; a value that is no CIDR is refused by the values schema."""
    nets = {"agent": {"imageURLBlockedNetworks": ["10.244.0.0/16", "10.96.0.0/12"],
                      "imageURLAllowedNetworks": ["10.96.10.0/24"]}}
    (c,) = pod_spec(one(render(nets), "DaemonSet", "kova-agent"))["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KOVA_AGENT_IMAGE_HOST_DIRS"] == "/var/lib/kova/images"
    assert env["KOVA_AGENT_IMAGE_URL_BLOCKED_NETWORKS"] == "10.244.0.0/16 10.96.0.0/12"
    assert env["KOVA_AGENT_IMAGE_URL_ALLOWED_NETWORKS"] == "10.96.10.0/24"
    _check_args(_command("agent", "run"), [], c["env"])
    (c,) = pod_spec(one(render(), "DaemonSet", "kova-agent"))["containers"]
    assert "KOVA_AGENT_IMAGE_URL_BLOCKED_NETWORKS" not in {e["name"] for e in c["env"]}
    bad = render_text({"agent": {"imageURLBlockedNetworks": ["nope"]}}, check=False)
    assert bad.returncode != 0 and "imageURLBlockedNetworks" in bad.stderr
