"""Least privilege: each component's Roles and ClusterRoles, as the chart
renders them, against an allow-list of verbs per (API group, resource).

The allow-lists are the maximum a component may hold; with the default values
the chart must grant exactly them (so a needed permission cannot silently go
missing either). Changing a component's needs means changing both the chart
(templates/rbac.yaml) and this file.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.support.chart import COMBINATIONS, by_kind, render

READ = {"get", "list", "watch"}
KOVA = "kova.dev"

#: component -> {(apiGroup, resource): verbs} granted cluster-wide.
CLUSTER: dict[str, dict[tuple[str, str], set[str]]] = {
    "operator": {
        # labels, finalizer, annotations; "schedule": admitted to set the host label,
        # remove Kova's finalizers (templates/tenant-restriction.yaml); "update":
        # the placement record and the status as guarded PUTs
        (KOVA, "instances"): READ | {"patch", "update", "schedule"},
        (KOVA, "instances/status"): {"get", "patch", "update"},
        (KOVA, "hosts"): READ | {"patch"},            # annotations (host monitor)
        (KOVA, "hosts/status"): {"get", "patch", "update"},  # state, conditions: PUTs
        (KOVA, "flavors"): READ,
        (KOVA, "images"): READ,
        (KOVA, "tenantimages"): READ,
        (KOVA, "servergroups"): READ,
        (KOVA, "servergroups/status"): {"get", "patch", "update"},  # members, hosts, PolicySatisfied
        ("", "nodes"): READ,                          # out-of-service taint fences a Host
        ("", "resourcequotas"): {"list", "watch"},             # kova.dev/* quota limits
        ("", "secrets"): {"get"},                     # user data sealed for the host
        ("", "events"): {"create"},
        ("events.k8s.io", "events"): {"create"},
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},  # kopf
        ("kopf.dev", "clusterkopfpeerings"): READ | {"patch"},  # leader election
    },
    "agent": {
        (KOVA, "instances"): READ | {"patch"},        # its finalizer
        (KOVA, "instances/status"): {"get", "patch"},
        (KOVA, "instances/finalizers"): {"update"},
        (KOVA, "hosts"): {"get", "create", "patch"},  # registers its own Host
        (KOVA, "hosts/status"): {"get", "patch"},
        (KOVA, "flavors"): {"get"},
        (KOVA, "images"): {"get"},
        (KOVA, "images/status"): {"patch"},           # its verified copy (cachedOn)
        (KOVA, "tenantimages"): {"get", "create"},       # boots; uploads snapshots
        (KOVA, "tenantimages/status"): {"patch"},
        ("", "events"): {"create"},
    },
    "placement": {
        ("authentication.k8s.io", "tokenreviews"): {"create"},
    },
    "api": {
        ("authorization.k8s.io", "subjectaccessreviews"): {"create"},  # may the user?
        # runStrategy / kova.dev/power; list: snapshots left unfollowed
        (KOVA, "instances"): {"get", "list", "patch"},
        (KOVA, "instances/status"): {"get", "patch"},  # status.actions
        (KOVA, "hosts"): {"get"},                     # status.streamEndpoint
        # a snapshot's TenantImage, saving, from its request on; stored while it was away
        (KOVA, "tenantimages"): {"get", "create"},
        (KOVA, "tenantimages/status"): {"patch"},     # Saving, then SnapshotFailed
        # the Instance's Image: an ISO for eject? at a snapshot: requireQuiesce,
        # the properties kept
        (KOVA, "images"): {"get"},
        ("", "events"): {"create"},
    },
}

#: The users' roles (templates/user-roles.yaml), aggregated into view/edit/admin.
SUB = "subresources.kova.dev"
POWER = {f"instances/{a}" for a in ("start", "stop", "restart", "reboot", "pause", "unpause",
                                    "resize-confirm", "resize-revert", "migrate",
                                    "snapshot", "eject")}
USER_WRITE = READ | {"create", "update", "patch", "delete"}
USER_ROLES: dict[str, dict[tuple[str, str], set[str]]] = {
    "kova-view": {
        (KOVA, "instances"): READ, (KOVA, "servergroups"): READ, (KOVA, "tenantimages"): READ,
        (KOVA, "flavors"): READ, (KOVA, "images"): READ, (KOVA, "hosts"): READ,
        (SUB, "instances/log"): {"get"},
    },
    "kova-edit": {
        (KOVA, "instances"): USER_WRITE, (KOVA, "servergroups"): USER_WRITE,
        (KOVA, "tenantimages"): USER_WRITE,  # a namespace's own images; public ones: admins
        (KOVA, "flavors"): READ, (KOVA, "images"): READ, (KOVA, "hosts"): READ,
        (SUB, "instances/log"): {"get"}, (SUB, "instances/console"): {"get"},
        (SUB, "instances/vnc"): {"get"}, **{(SUB, r): {"update"} for r in POWER},
    },
    "kova-admin": {
        (KOVA, "instances"): USER_WRITE | {"deletecollection"},
        (KOVA, "servergroups"): USER_WRITE | {"deletecollection"},
        (KOVA, "tenantimages"): USER_WRITE | {"deletecollection"},
        (KOVA, "flavors"): READ, (KOVA, "images"): READ, (KOVA, "hosts"): READ,
        (SUB, "instances/log"): {"get"}, (SUB, "instances/console"): {"get"},
        (SUB, "instances/vnc"): {"get"}, **{(SUB, r): {"update"} for r in POWER},
    },
}
AGGREGATE = {"kova-view": "view", "kova-edit": "edit", "kova-admin": "admin"}

#: Only with operator.watchNamespaces (kopf in namespaced mode).
NAMESPACED_OPERATOR_EXTRA = {
    ("kopf.dev", "kopfpeerings"): READ | {"patch"},
    ("", "namespaces"): {"list", "watch"},
}

#: component -> {(apiGroup, resource): verbs} in the lease namespace only.
LEASES: dict[str, dict[tuple[str, str], set[str]]] = {
    "operator": {("coordination.k8s.io", "leases"): READ},
    "agent": {("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"}},
}

#: Only with operator.shareInstances: the replicas' member Leases (in the
#: release namespace, here the default kova-system).
SHARED_OPERATOR_EXTRA = {("coordination.k8s.io", "leases"): READ | {"create", "patch"}}

NEVER = {"*", "delete", "deletecollection", "escalate", "bind", "impersonate", "approve", "sign"}


def _grants(objs, kind: str) -> dict[str, dict[tuple[str, str], set[str]]]:
    """component -> (group, resource) -> verbs of the rendered roles of kind."""
    out: dict[str, dict[tuple[str, str], set[str]]] = defaultdict(lambda: defaultdict(set))
    for role in by_kind(objs, kind):
        comp = role["metadata"]["labels"]["app.kubernetes.io/component"]
        if comp == "user-roles":  # people's roles: test_user_roles
            continue
        for rule in role["rules"]:
            assert not rule.get("nonResourceURLs"), role["metadata"]["name"]
            assert "*" not in rule["apiGroups"] and "*" not in rule["resources"]
            assert not set(rule["verbs"]) & NEVER, (role["metadata"]["name"], rule)
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    out[comp][(group, res)] |= set(rule["verbs"])
    return {c: dict(g) for c, g in out.items()}


def _allowed(component: str, values: dict) -> dict[tuple[str, str], set[str]]:
    allowed = dict(CLUSTER[component])
    if component == "operator" and any(k.startswith("operator.watchNamespaces") for k in values):
        allowed |= NAMESPACED_OPERATOR_EXTRA
    return allowed


def _allowed_in_namespace(component: str, values: dict) -> dict[tuple[str, str], set[str]]:
    allowed = dict(LEASES[component])
    if component == "operator" and values.get("operator.shareInstances"):
        allowed |= SHARED_OPERATOR_EXTRA
    return allowed


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_cluster_roles_within_allow_list(combo: str) -> None:
    values = COMBINATIONS[combo]
    granted = _grants(render(values), "ClusterRole")
    for comp, rules in granted.items():
        allowed = _allowed(comp, values)
        for key, verbs in rules.items():
            assert key in allowed, f"{comp} may not touch {key}"
            assert verbs <= allowed[key], f"{comp} on {key}: {verbs - allowed[key]} not allowed"


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_roles_within_allow_list(combo: str) -> None:
    values = COMBINATIONS[combo]
    objs = render(values)
    lease_ns = values.get("leaseNamespace", "kova-system")
    for role in by_kind(objs, "Role"):
        assert role["metadata"]["namespace"] == lease_ns
    for comp, rules in _grants(objs, "Role").items():
        allowed = _allowed_in_namespace(comp, values)
        for key, verbs in rules.items():
            assert key in allowed, f"{comp} may not touch {key} in {lease_ns}"
            assert verbs <= allowed[key]


def test_defaults_grant_exactly_the_allow_list() -> None:
    objs = render()
    assert _grants(objs, "ClusterRole") == CLUSTER
    assert _grants(objs, "Role") == LEASES


def test_bindings_tie_each_role_to_its_own_service_account() -> None:
    objs = render()
    roles = {(o["kind"], o["metadata"]["name"]): o for o in by_kind(objs, "Role") + by_kind(objs, "ClusterRole")}
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        ref = binding["roleRef"]
        if ref["name"] == "extension-apiserver-authentication-reader":
            # the built-in Role: the API component reads the request-header CA
            assert binding["metadata"]["namespace"] == "kube-system"
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kova-api",
                                            "namespace": "kova-system"}]
            continue
        role = roles[(ref["kind"], ref["name"])]
        comp = role["metadata"]["labels"]["app.kubernetes.io/component"]
        assert binding["metadata"]["labels"]["app.kubernetes.io/component"] == comp
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"kova-{comp}",
                                        "namespace": "kova-system"}]
    # PostgreSQL and Placement get no API token unless they need one
    sas = {o["metadata"]["name"]: o for o in by_kind(objs, "ServiceAccount")}
    assert sas["kova-postgresql"]["automountServiceAccountToken"] is False
    no_tr = render({"placement.tokenReview": False, "placement.agentIdentity": "sharedToken"})
    assert "placement" not in _grants(no_tr, "ClusterRole")
    (dep,) = [d for d in by_kind(no_tr, "Deployment") if d["metadata"]["name"] == "kova-placement"]
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_rbac_create_false_renders_no_rbac() -> None:
    objs = render({"rbac.create": False})
    for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
        assert not by_kind(objs, kind)


@pytest.mark.reliability
def test_least_privilege_across_value_combinations() -> None:
    """Every component, every values combination: no grant beyond the
    allow-list, nothing in NEVER; recorded for docs/reliability.md."""
    from tests.reliability.record import record

    checked = beyond = 0
    components: set[str] = set()
    for _combo, values in sorted(COMBINATIONS.items()):
        objs = render(values)
        for kind, allowed_for in (("ClusterRole", lambda c: _allowed(c, values)),
                                  ("Role", lambda c: _allowed_in_namespace(c, values))):
            for comp, rules in _grants(objs, kind).items():
                components.add(comp)
                allowed = allowed_for(comp)
                for key, verbs in rules.items():
                    checked += 1
                    beyond += len(verbs - allowed.get(key, set()))
    assert beyond == 0
    assert components == {"operator", "agent", "placement", "api"}
    record(fault="RBAC least privilege",
           injected=f"the chart rendered with {len(COMBINATIONS)} values combinations; every "
                    "Role and ClusterRole of the operator, agent, Placement and API component "
                    "compared with "
                    "its allow-list (PostgreSQL: no API token)",
           times=checked, lost=beyond, duplicated=0, overcommitted=None,
           result=f"{checked} (group, resource) grants checked, {beyond} verbs beyond the "
                  "allow-lists (shown as lost); no wildcard, delete, escalate, bind or "
                  "impersonate",
           figures={"grants_checked": checked, "combinations": len(COMBINATIONS)})


def test_user_roles() -> None:
    """kova-view / kova-edit / kova-admin: exactly these rules, aggregated into
    view / edit / admin; a viewer may read the console log but not use the
    console, VNC or power; nobody may write Flavors, Images or Hosts (fence a
    host) through them; none may escalate or bind."""
    objs = render()
    roles = {r["metadata"]["name"]: r for r in by_kind(objs, "ClusterRole")
             if r["metadata"]["labels"]["app.kubernetes.io/component"] == "user-roles"}
    assert set(roles) == set(USER_ROLES)
    for name, role in roles.items():
        label = f"rbac.authorization.k8s.io/aggregate-to-{AGGREGATE[name]}"
        assert role["metadata"]["labels"][label] == "true"
        granted: dict[tuple[str, str], set[str]] = defaultdict(set)
        for rule in role["rules"]:
            assert not set(rule["verbs"]) & {"*", "escalate", "bind", "impersonate"}
            for group in rule["apiGroups"]:
                for res in rule["resources"]:
                    granted[(group, res)] |= set(rule["verbs"])
        assert dict(granted) == USER_ROLES[name], name
        for res in ("flavors", "images", "hosts"):
            assert granted[(KOVA, res)] == READ
    assert not {(SUB, "instances/console"), (SUB, "instances/vnc")} & set(USER_ROLES["kova-view"])
    assert not POWER & {r for _g, r in USER_ROLES["kova-view"]}
    assert not by_kind(render({"rbac.create": False}), "ClusterRole")


def test_agents_read_no_secret_unless_asked() -> None:
    """By default the operator seals user data for each host and no agent may
    read a Secret; agent.userDataFrom=secret gives the agents the read (and
    the operator none)."""
    default = _grants(render(), "ClusterRole")
    assert ("", "secrets") not in default["agent"]
    assert default["operator"][("", "secrets")] == {"get"}
    objs = render({"agent.userDataFrom": "secret"})
    legacy = _grants(objs, "ClusterRole")
    assert legacy["agent"][("", "secrets")] == {"get"}
    assert ("", "secrets") not in legacy["operator"]
    (op,) = [d for d in by_kind(objs, "Deployment")
             if d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"]
    assert "--no-seal-user-data" in op["spec"]["template"]["spec"]["containers"][0]["args"]
