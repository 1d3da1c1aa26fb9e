"""What ``instances/snapshot`` may do (pure): the Instance's root disk into a
TenantImage of its namespace, made by the agent on its host
(:mod:`kova.agents.instance.snapshot`); see docs/images.md."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kova.api.moves import Refusal
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import ImageKind, InstancePhase, SnapshotQuiesce

#: A TenantImage's name (a DNS subdomain).
IMAGE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
#: The phases whose disk is on one host and not being changed by a move.
SNAPSHOT_PHASES = (InstancePhase.RUNNING, InstancePhase.STOPPED)
#: The image property that requires quiescing (Glance's ``os_require_quiesce``).
REQUIRE_QUIESCE = "requireQuiesce"
#: ``quiesceFrom`` of a mode the request named (``?quiesce=``, ``--quiesce``).
FROM_REQUEST = "request"
#: ``quiesceFrom`` of the mode of a request that named none, of an image
#: that does not require quiescing.
FROM_DEFAULT = "default"


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


@dataclass(frozen=True)
class Quiesce:
    """A snapshot's quiescing and where it came from (the action's
    ``quiesce`` and ``quiesceFrom``)."""

    mode: str
    #: :data:`FROM_REQUEST`, :data:`FROM_DEFAULT` (perhaps with why, e.g.
    #: the image was not found), or the image that requires it
    #: (``Image debian-12``, ``TenantImage web-golden``).
    origin: str

    @property
    def by_image(self) -> bool:
        """Whether the Instance's image required it (not the request)."""
        return self.origin != FROM_REQUEST and not self.origin.startswith(FROM_DEFAULT)

    def note(self) -> str:
        """In words, for the action's messages: ``quiesce required by Image
        debian-12 (properties.requireQuiesce)``."""
        if self.by_image:
            return f"quiesce {self.mode} by {self.origin} (properties.{REQUIRE_QUIESCE})"
        if self.origin == FROM_REQUEST:
            return f"quiesce {self.mode} as asked"
        return f"quiesce {self.mode} by {self.origin}"


def image_named(inst: dict) -> str:
    """The image Instance ``inst`` boots from, as users name it: ``Image
    debian-12`` or ``TenantImage web-golden`` (of its namespace)."""
    ref = ob.spec(inst).get("imageRef") or {}
    return f"{ref.get('kind') or ImageKind.IMAGE} {ref.get('name')}"


def requires_quiesce(image: dict | None) -> bool:
    """Whether an Image or TenantImage requires its Instances' snapshots to
    be quiesced (``spec.properties.requireQuiesce``)."""
    props = ((image or {}).get("spec") or {}).get("properties") or {}
    return props.get(REQUIRE_QUIESCE) is True


def quiesce(inst: dict, asked: str | None, image: dict | None) -> Quiesce | Refusal:
    """The quiescing of a snapshot of ``inst`` whose request named mode
    ``asked`` (None: none), its image being ``image`` (None: not found).
    An image that requires quiescing makes it ``required`` and refuses a
    request for less (409 ``QuiesceRequired``), as Nova fails the snapshot
    of an image with ``os_require_quiesce`` that cannot be quiesced;
    otherwise the request's mode, else ``auto``."""
    if requires_quiesce(image):
        origin = image_named(inst)
        if asked in (None, SnapshotQuiesce.REQUIRED):
            return Quiesce(SnapshotQuiesce.REQUIRED, origin)
        return Refusal(409, "QuiesceRequired", (
            f"{origin} requires quiescing (properties.{REQUIRE_QUIESCE}, Glance's "
            f"os_require_quiesce): a snapshot of instance {inst['metadata']['name']} with "
            f"quiesce {asked} is refused; snapshot it without --quiesce (or with --quiesce "
            "required): the guest's file systems are frozen through its QEMU guest agent, "
            "and the snapshot fails when no agent answers"))
    if asked is not None:
        return Quiesce(asked, FROM_REQUEST)
    if image is None:
        return Quiesce(SnapshotQuiesce.AUTO, f"{FROM_DEFAULT} ({image_named(inst)} not found)")
    return Quiesce(SnapshotQuiesce.AUTO, FROM_DEFAULT)


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
