"""What ``kubectl kova eject`` (``PUT .../instances/<name>/eject``) means for
an Instance: a pure function, :func:`plan_eject`.

Only an Instance booted from an iso Image has a CD-ROM to eject (its NoCloud
seed is not one the user may eject).  The agent on its host empties the
drive on any power state -- live on a running or paused guest, in the
definition of a stopped one -- and records ``status.cdrom.ejected``, which
restarts, redefinitions and moves then keep (docs/images.md).  Refused
(409, Kova's reason in ``details.causes``): being deleted, not placed yet,
moving, no ISO (``NoCdrom``), ejected already (``AlreadyEjected``).
"""

from __future__ import annotations

from kova.api.power import Plan
from kova.crds import names
from kova.crds import objects as ob


def _refuse(reason: str, message: str, code: int = 409) -> Plan:
    return Plan("refuse", message, code=code, reason=reason)


def plan_eject(instance: dict, image: dict | None) -> Plan:
    """``image``: the Image or TenantImage the Instance boots (None: gone)."""
    name = ob.meta(instance).get("name", "")
    status = ob.status(instance)
    if ob.meta(instance).get("deletionTimestamp"):
        return _refuse("Deleting", f"instance {name} is being deleted")
    if image is None:
        return _refuse("NoCdrom", f"instance {name} has no CD-ROM to eject: its image "
                       f"{ob.image_key(instance) or '(none)'} does not exist")
    fmt = ob.spec(image).get("format") or names.ImageFormat.QCOW2
    if fmt != names.ImageFormat.ISO:
        return _refuse("NoCdrom", f"instance {name} has no CD-ROM to eject: it boots "
                       f"from image {ob.image_key(instance)} of format {fmt}, not iso")
    if (status.get("cdrom") or {}).get("ejected"):
        return _refuse("AlreadyEjected", f"the CD-ROM of instance {name} is ejected "
                       "already: it boots from its root disk")
    if not status.get("host"):
        return _refuse("NotPlaced", f"instance {name} is not placed on a host yet "
                       f"(phase {status.get('phase') or 'Pending'})")
    if status.get("migration"):
        step = status["migration"].get("step")
        return _refuse("Moving", f"instance {name} is being moved (step {step}): eject "
                       "its CD-ROM once the move is confirmed or reverted")
    return Plan("agent", "eject the CD-ROM")
