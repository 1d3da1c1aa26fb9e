"""What ``instances/snapshot`` may do (pure): the Instance's root disk into a
TenantImage of its namespace, made by the agent on its host
(:mod:`kova.agents.instance.snapshot`); see docs/images.md."""

from __future__ import annotations

import re

from kova.api.moves import Refusal
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import InstancePhase

#: A TenantImage's name (a DNS subdomain).
IMAGE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: The phases whose disk is on one host and not being changed by a move.
SNAPSHOT_PHASES = (InstancePhase.RUNNING, InstancePhase.STOPPED)


def refusal(inst: dict, image: str, quiesce: str = names.SnapshotQuiesce.AUTO) -> Refusal | None:
    """Why Instance ``inst`` cannot be snapshotted into ``image`` now (with
    quiescing ``quiesce``)."""
    name = inst["metadata"]["name"]
    problem = names.SnapshotQuiesce.problem(quiesce)
    if problem is not None:
        return Refusal(400, "BadRequest", f"{problem} (?quiesce=; kubectl kova snapshot "
                       "--quiesce)")
    if not image:
        return Refusal(400, "BadRequest", "the snapshot needs the name of the TenantImage to "
                       "create (?image=NAME; kubectl kova snapshot NAME --image IMAGE)")
    if len(image) > 253 or not IMAGE_NAME.match(image):
        return Refusal(400, "BadRequest", f"image {image!r} is not a valid TenantImage name "
                       "(a DNS subdomain: lower case letters, digits, '-' and '.')")
    status = ob.status(inst)
    if status.get("migration"):
        return Refusal(409, "MoveInProgress", f"instance {name} is being moved "
                       f"({status['migration'].get('type')}); snapshot it once that is done")
    if status.get("phase") not in SNAPSHOT_PHASES or not status.get("host"):
        return Refusal(409, "NotSnapshottable", f"instance {name} is {status.get('phase')}; "
                       "only a Running or Stopped instance can be snapshotted")
    return None


def forbidden(user: str, namespace: str) -> str:
    """The message of a snapshot refused to a user who may not create the
    TenantImage."""
    return (f'user "{user}" cannot create resource "tenantimages" in API group '
            f'"{names.GROUP}" in the namespace "{namespace}"')


def answer(inst: dict, req: str, user: str, result: str, message: str, image: str,
           body: dict) -> dict:
    """The InstanceAction a snapshot answers with (``body``: the agent's answer)."""
    md = inst["metadata"]
    return {
        "kind": "InstanceAction", "apiVersion": names.SUBRESOURCE_API_VERSION,
        "namespace": md["namespace"], "name": md["name"], "action": "snapshot",
        "requestId": req, "user": user, "result": result, "message": message, "image": image,
        "sha256": body.get("sha256"), "sizeBytes": body.get("sizeBytes"),
        "virtualSizeBytes": body.get("virtualSizeBytes"),
        "pausedSeconds": body.get("pausedSeconds"), "seconds": body.get("seconds"),
    }


def attempts_text(attempts: int) -> str:
    """How often a snapshot was taken, in words (its Error's message)."""
    return "taken once" if attempts == 1 else f"taken {attempts} times, lost each time"
