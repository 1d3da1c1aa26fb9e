"""Ejecting the ISO of an Instance booted from an iso Image (``kubectl kova
eject``, the power action ``eject`` of :mod:`~kova.agents.instance.power_actions`).

In order, each step safe to repeat after a crash at any line:

1. libvirt's change-media: on a running or paused domain the CD-ROM's
   medium is removed at once (the guest sees an empty drive); the domain's
   persistent definition is rewritten with the drive empty and the root
   disk first in the boot order (:func:`kova.agents.virt.cdrom.eject`);
2. the record ``status.cdrom`` (``ejected: true``, field manager
   ``kova-agent-media``): what the domain XML builder reads, so that a
   rebuilt definition, a cold or live migration and a resize keep the drive
   empty (:func:`kova.agents.instance.build.cdrom_ejected`);
3. the Instance's ``cdrom.iso`` link removed: the ISO is then in the host's
   image cache like any image no Instance uses, evicted by the cache's rules.

Asking again once it is ejected succeeds without touching the domain (and
finishes steps 2 and 3 if an earlier eject stopped midway).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from kova.agents.context import AgentContext
from kova.agents.virt import cdrom
from kova.agents.virt.driver import DomainInfo
from kova.agents.watch import InstanceWatch
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.errors import Refusal
from kova.kube import instance_path

log = logging.getLogger("kova.agents.instance.media")


class EjectError(Refusal):
    """An eject refused or failed: its HTTP status, reason and message."""


def eject(ctx: AgentContext, watch: InstanceWatch, info: DomainInfo, request: str) -> bool:
    """Eject the ISO of domain ``info``; True if the domain changed.
    Raises :class:`EjectError` (409 NoCdrom: no ISO drive; 503 when the
    record could not be written) or ``DriverError``."""
    files = ctx.files(info.uuid)
    seed = str(files.seed)
    if cdrom.iso_cdrom(ET.fromstring(info.xml), seed) is None:
        raise EjectError(409, "NoCdrom", "the domain has no CD-ROM to eject: its Instance "
                         "did not boot from an iso Image")
    changed = cdrom.eject(ctx.driver, info.uuid, seed)
    meta = info.meta
    if meta is None:
        raise EjectError(404, "NotFound", "the domain carries no Kova metadata")
    body = {"apiVersion": names.API_VERSION, "kind": "Instance",
            "metadata": {"name": meta.name, "namespace": meta.namespace},
            "status": {"cdrom": {"ejected": True, "ejectTime": now_rfc3339(),
                                 **({"requestId": request[:64]} if request else {})}}}
    try:
        new = ctx.kube.apply(instance_path(meta.namespace, meta.name) + "/status", body,
                             field_manager=names.FIELD_MANAGER_AGENT_MEDIA)
    except Exception as exc:  # noqa: BLE001 -- reported: the eject is asked again
        raise EjectError(503, "StatusNotWritten",
                         f"the CD-ROM is ejected on {ctx.host} but status.cdrom could not "
                         f"be written ({exc}); ask again") from exc
    if new is not None:
        watch.store_own_write(new)
    files.cdrom.unlink(missing_ok=True)
    log.info("%s/%s: CD-ROM ejected%s", meta.namespace, meta.name,
             "" if changed else " (it was already empty)")
    return changed
