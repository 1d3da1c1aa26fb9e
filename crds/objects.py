"""Typed reads of raw API objects.

The controllers work on the plain dicts the API server returns (converting
every watched object to a pydantic model would cost the operator more than
scheduling it).  These accessors replace the ``(obj.get("spec") or {}).get(...)``
chains: each returns an empty dict, list or None for a missing part, never
raises on an object the API server may legitimately return.
"""

from __future__ import annotations

from typing import Any

from .names import LABEL_HOST, ImageKind, InstancePhase, RunStrategy

Obj = dict[str, Any]


def meta(obj: Obj) -> Obj:
    """``metadata`` (empty when missing)."""
    return obj.get("metadata") or {}


def spec(obj: Obj) -> Obj:
    """``spec`` (empty when missing)."""
    return obj.get("spec") or {}


def status(obj: Obj) -> Obj:
    """``status`` (empty when missing)."""
    return obj.get("status") or {}


def uid(obj: Obj) -> str | None:
    return meta(obj).get("uid")


def labels(obj: Obj) -> dict[str, str]:
    return meta(obj).get("labels") or {}


def annotations_of(obj: Obj) -> dict[str, str]:
    return meta(obj).get("annotations") or {}


def finalizers(obj: Obj) -> list[str]:
    return list(meta(obj).get("finalizers") or [])


def key(obj: Obj) -> tuple[str, str]:
    """``(namespace, name)`` (namespace ``""`` for a cluster-scoped object)."""
    md = meta(obj)
    return md.get("namespace") or "", md.get("name") or ""


def deleting(obj: Obj) -> bool:
    """The object has a deletionTimestamp."""
    return bool(meta(obj).get("deletionTimestamp"))


def ref_name(obj: Obj, field: str) -> str | None:
    """``spec.<field>.name`` of a reference (``flavorRef``, ``imageRef``,
    ``serverGroupRef``), or None."""
    return (spec(obj).get(field) or {}).get("name")


def image_key(obj: Obj) -> str | None:
    """The image an Instance boots, as one string: ``<name>`` for a cluster
    Image, ``<namespace>/<name>`` for a TenantImage of the Instance's
    namespace (``spec.imageRef.kind``); None without an imageRef."""
    ref = spec(obj).get("imageRef") or {}
    name = ref.get("name")
    if not name:
        return None
    if ref.get("kind") == ImageKind.TENANT_IMAGE:
        return f"{meta(obj).get('namespace') or ''}/{name}"
    return name


def placed_host(obj: Obj) -> str | None:
    """An Instance's ``status.host``."""
    return status(obj).get("host")


def labelled_host(obj: Obj) -> str | None:
    """An Instance's host label (the agent watches by it)."""
    return labels(obj).get(LABEL_HOST)


def phase(obj: Obj) -> InstancePhase | None:
    """An Instance's ``status.phase`` (None when unset or not a known phase)."""
    value = status(obj).get("phase")
    try:
        return InstancePhase(value) if value else None
    except ValueError:
        return None


def run_strategy(obj: Obj) -> RunStrategy:
    """An Instance's ``spec.runStrategy`` (Always when unset)."""
    value = spec(obj).get("runStrategy")
    try:
        return RunStrategy(value) if value else RunStrategy.ALWAYS
    except ValueError:
        return RunStrategy.ALWAYS
