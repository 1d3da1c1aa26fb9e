"""What a hypervisor agent may do in Placement with its own identity.

In TokenReview mode an agent authenticates with its pod-bound
service-account token; the API server tells which node the pod runs on
(``authentication.kubernetes.io/node-name``).  That agent may read
everything an agent needs (every ``GET``), and write only its own provider
tree:

* create a root provider named after its node, or a child provider (named
  ``<node>_<anything>``; a node name has no ``_``, so it can never take
  another node's name) under a provider of its tree;
* rename or re-parent a provider of its tree only within these names;
* replace or delete the inventories and traits of a provider of its tree,
  except ``COMPUTE_STATUS_DISABLED``, which is the operator's (an agent
  cannot lift its host's fencing or disabling);
* delete a provider of its tree;
* create custom traits and resource classes (never delete or rename one).

Everything else is refused: allocations of any consumer (the operator's),
aggregates (the operator's availability zones), the reshaper, other nodes'
providers.  A refusal is a 403 whose ``code`` is
``kova.placement.agent_forbidden`` and whose detail names the node.

A provider "of node N's tree" is one whose root provider is named N.  Since
only N's agent (or an administrator) can create or rename a provider to N,
a root provider named N was registered by N's agent or an administrator --
which is what the operator checks before it believes a Host's
``status.resourceProviderUUID``.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any

import sqlalchemy as sa

from kova.placement import errors
from kova.placement.db import tables as t
from kova.placement.objects.resource_provider import find_provider

AGENT_FORBIDDEN = "kova.placement.agent_forbidden"
#: The operator's trait; an agent may neither add nor remove it.
OPERATOR_TRAIT = "COMPUTE_STATUS_DISABLED"

_PROVIDER_WRITES = frozenset({
    ("resource_provider", "DELETE"),
    ("inventories", "POST"), ("inventories", "PUT"), ("inventories", "DELETE"),
    ("inventory", "PUT"), ("inventory", "DELETE"),
})


class AgentForbidden(errors.Forbidden):
    """A 403 whose body always carries its code (whatever the microversion)."""

    always_code = True

    def __init__(self, node: str, what: str) -> None:
        super().__init__(f"The agent of node {node} may not {what}.", code=AGENT_FORBIDDEN)


def name_allowed(node: str, name: Any) -> bool:
    """A provider name an agent of ``node`` may give: its node's, or
    ``<node>_...`` for a child provider."""
    return isinstance(name, str) and (name == node or name.startswith(node + "_"))


def _uuid(value: Any) -> str | None:
    try:
        return str(uuidlib.UUID(str(value)))
    except ValueError:
        return None


def _root_name(conn, uuid: Any) -> str | None:
    """The name of the root of ``uuid``'s tree (None: no such provider)."""
    canonical = _uuid(uuid) if uuid is not None else None
    provider = find_provider(conn, canonical) if canonical else None
    if provider is None:
        return None
    rp = t.resource_providers
    return conn.execute(sa.select(rp.c.name).where(rp.c.id == provider.root_id)).scalar()


def _body(req) -> dict:
    """The request's JSON object ({} when it is not one: the handler
    refuses that with a 400 of its own)."""
    try:
        data = json.loads(req.body or b"")
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def authorize(app, req, node: str) -> None:
    """Raise :class:`AgentForbidden` unless the agent of ``node`` may make
    ``req`` (already routed).  Reads are allowed; writes are checked
    against the provider tree in the database."""
    route, method = req.route_name, req.method
    if method in ("GET", "HEAD", "OPTIONS"):
        return
    if route == "trait" and method == "PUT":
        return  # creates a custom trait (a standard one exists already)
    if route == "resource_classes" and method == "POST":
        return  # a new custom class
    if route == "resource_class" and method == "PUT" and req.want(7):
        return  # from 1.7 a PUT only creates; before, it renames a class
    with app.db.read() as conn:
        _authorize_provider_write(conn, req, node)


def _owned(conn, node: str, uuid: Any) -> bool:
    return _root_name(conn, uuid) == node


def _authorize_provider_write(conn, req, node: str) -> None:
    route, method = req.route_name, req.method
    uuid = req.path_params.get("uuid")
    if route == "resource_providers" and method == "POST":
        data = _body(req)
        parent = data.get("parent_provider_uuid")
        if parent is None and data.get("name") != node:
            raise AgentForbidden(node, f"create a root resource provider named "
                                       f"{data.get('name')!r}: only one named {node!r}")
        if parent is not None and not (_owned(conn, node, parent)
                                       and name_allowed(node, data.get("name"))):
            raise AgentForbidden(node, "create a child provider outside its own tree "
                                       f"(a child is named '{node}_...' under a provider "
                                       f"of its tree)")
        return
    if uuid is not None and not _owned(conn, node, uuid):
        raise AgentForbidden(node, f"{_verb(req)} resource provider {uuid}: it is not "
                                   f"in node {node}'s provider tree")
    if (route, method) in _PROVIDER_WRITES:
        return
    if route == "resource_provider" and method == "PUT":
        data = _body(req)
        parent = data.get("parent_provider_uuid")
        current = find_provider(conn, _uuid(uuid))
        is_root = parent is None and current is not None and current.parent_id is None
        if (not name_allowed(node, data.get("name"))
                or (is_root and data.get("name") != node)
                or (parent is not None and not _owned(conn, node, parent))):
            raise AgentForbidden(node, f"rename or move resource provider {uuid} out of "
                                       "its own names and tree")
        return
    if route == "provider_traits":
        _check_operator_trait(conn, req, node, uuid)
        return
    raise AgentForbidden(node, _verb(req) + ("" if uuid is None else f" on {uuid}"))


def _check_operator_trait(conn, req, node: str, uuid: str) -> None:
    """The operator's trait stays as it is (PUT keeps it present or absent,
    DELETE of all traits only when it is absent)."""
    pt, tr = t.provider_traits, t.traits
    provider = find_provider(conn, _uuid(uuid))
    assert provider is not None  # owned
    has = conn.execute(
        sa.select(sa.func.count()).select_from(pt.join(tr, tr.c.id == pt.c.trait_id))
        .where(pt.c.resource_provider_id == provider.id, tr.c.name == OPERATOR_TRAIT)
    ).scalar() > 0
    if req.method == "DELETE":
        wants = False
    else:
        traits = _body(req).get("traits")
        wants = isinstance(traits, list) and OPERATOR_TRAIT in traits
    if has != wants:
        raise AgentForbidden(node, f"{'remove' if has else 'add'} {OPERATOR_TRAIT} "
                                   "(the operator's trait) on its provider")


_VERBS = {
    ("allocations", "POST"): "write allocations",
    ("allocation", "PUT"): "write allocations",
    ("allocation", "DELETE"): "delete allocations",
    ("provider_aggregates", "PUT"): "change aggregates (the operator's)",
    ("reshaper", "POST"): "reshape providers",
    ("trait", "DELETE"): "delete traits",
    ("resource_class", "DELETE"): "delete resource classes",
    ("resource_class", "PUT"): "rename resource classes",
}


def _verb(req) -> str:
    return _VERBS.get((req.route_name, req.method), f"{req.method} {req.route_name}")
