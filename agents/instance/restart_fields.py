"""Spec fields that apply at the next start: which changed, and the
``RestartRequired`` condition that says so.  Pure functions: the status
report (:mod:`~kova.agents.instance.report`) writes the condition, the user
data module (:mod:`~kova.agents.instance.userdata`) the new seed.

``userData``, ``sshKeys`` and ``hostname`` reach the guest through the
NoCloud seed, which it reads when it boots.  The agent records a fingerprint
of what it last wrote into the seed in the domain's metadata
(``appliedSpec``); a spec that differs sets ``RestartRequired=True`` naming
the fields, and the next start (a start after a stop, ``restart``,
``reboot``) writes a new seed first.  The new seed carries a new
``instance-id`` (the uid plus the fingerprint's hash), so cloud-init treats
the boot as a new instance and applies the new user data and keys -- it runs
its per-instance modules once per instance-id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from kova.agents.virt.domain import DomainMetadata
from kova.conditions import Condition, condition_for
from kova.crds import names

#: The fields, in the order they are named in messages.
RESTART_FIELDS = ("userData", "sshKeys", "hostname")


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def fingerprint(spec: dict) -> str:
    """``userData=<hash>;sshKeys=<hash>;hostname=<hash>`` of a spec."""
    return ";".join(f"{field}={_digest(spec.get(field))}" for field in RESTART_FIELDS)


def _parse(applied: str) -> dict[str, str]:
    out = {}
    for part in applied.split(";"):
        field, _, digest = part.partition("=")
        if field:
            out[field] = digest
    return out


def pending_fields(applied: str, spec: dict) -> list[str]:
    """The fields whose value differs from what the seed holds (``applied``;
    empty: nothing is known, so nothing is pending)."""
    if not applied:
        return []
    old, new = _parse(applied), _parse(fingerprint(spec))
    return [f for f in RESTART_FIELDS if old.get(f) != new.get(f)]


def adopted(meta: DomainMetadata, spec: dict) -> DomainMetadata:
    """A domain's metadata with ``applied_spec`` (a domain from before the
    fingerprints is taken as running with the current spec)."""
    if meta.applied_spec:
        return meta
    return dataclasses.replace(meta, applied_spec=fingerprint(spec))


def instance_id(uid: str, applied: str, first: bool) -> str:
    """The NoCloud instance-id: the uid for the first seed of a domain, the
    uid and a hash of the fingerprint for every seed written after a change."""
    if first:
        return uid
    return f"{uid}-{hashlib.sha256(applied.encode()).hexdigest()[:8]}"


def message(pending: list[str], name: str) -> str:
    if not pending:
        return "the guest runs with the current spec"
    fields = ", ".join(pending)
    verb = "applies" if len(pending) == 1 else "apply"
    return (f"{fields} changed and {verb} at the next start or restart "
            f"(kubectl kova restart {name})")


def condition(obj: dict, pending: list[str]) -> Condition:
    """The RestartRequired condition of Instance ``obj`` with ``pending``
    fields waiting for a restart (False, UpToDate, when none)."""
    name = (obj.get("metadata") or {}).get("name", "")
    if pending:
        return condition_for(obj, names.COND_RESTART_REQUIRED, "True",
                             names.REASON_SPEC_CHANGED, message(pending, name))
    return condition_for(obj, names.COND_RESTART_REQUIRED, "False", names.REASON_UP_TO_DATE,
                         message([], name))
