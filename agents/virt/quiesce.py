"""Quiescing a guest for a snapshot through the QEMU guest agent.

Every Kova domain has the guest agent's virtio-serial channel
(``org.qemu.guest_agent.0``).  When a program in the guest has the channel
open -- libvirt shows ``state='connected'`` on the channel's target in the
live domain XML, from QEMU's VSERPORT_CHANGE event -- :class:`Freeze` asks
the agent, through libvirt (``virDomainFSFreeze``), to flush and freeze the
guest's file systems (``guest-fsfreeze-freeze``; the agent runs its
fsfreeze hook first, where applications flush their own state).  The
snapshot then starts its backup job, whose point in time is the job's start,
and thaws at once (``virDomainFSThaw``); the ``with`` block thaws in every
case, however it ends.

libvirt does not thaw a frozen guest on its own, and neither does the guest
kernel: a freeze outlives the agent process that asked for it.  So the
domain's directory holds a marker (:data:`MARKER`) from just before the
freeze until the thaw succeeded, and an agent that starts again thaws every
domain whose marker it finds (:func:`thaw_left_frozen`).  The QEMU guest
agent itself thaws when it exits cleanly; one that starts while the file
systems are frozen still accepts a thaw.

Without an agent on the channel the snapshot is crash-consistent
(:attr:`~kova.crds.names.SnapshotQuiesce.AUTO`) or refused
(:attr:`~kova.crds.names.SnapshotQuiesce.REQUIRED`) before anything is
copied.
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import libvirt

from kova.crds.names import SnapshotQuiesce

log = logging.getLogger("kova.agents.virt.quiesce")

#: The guest agent's channel, as every Kova domain names it.
AGENT_CHANNEL = "org.qemu.guest_agent.0"
#: In the Instance's directory while its guest may be frozen.
MARKER = "fsfrozen"
#: Attempts and the pause between them for a thaw that failed.
THAW_ATTEMPTS = 3
THAW_RETRY_SECONDS = 1.0


class QuiesceRefused(Exception):
    """A snapshot that requires quiescing, of a guest whose agent does not
    answer (or could not freeze)."""


def agent_state(domain_xml: str) -> str:
    """The guest agent channel's state in a live domain XML: ``connected``
    (a program in the guest has it open), ``disconnected``, ``unknown`` (the
    hypervisor driver does not say), or ``none`` (no such channel)."""
    for chan in ET.fromstring(domain_xml).iterfind("./devices/channel"):
        target = chan.find("target")
        if target is not None and target.get("name") == AGENT_CHANNEL:
            return target.get("state") or "unknown"
    return "none"


@dataclass
class Quiesced:
    """What a snapshot did about the guest's file systems."""

    mode: str
    #: How many file systems the guest agent froze; None when not frozen.
    filesystems: int | None = None
    #: How long the freeze (the guest's flush) took.
    freeze_seconds: float = 0.0
    #: From the freeze's end to the thaw's end, as the host saw it.
    frozen_seconds: float = 0.0
    #: Why the guest was not frozen (None when it was).
    reason: str | None = None
    #: Set when the thaw failed (the guest may still be frozen).
    thaw_error: str | None = None
    #: The guest was stopped: its disk at rest, nothing to freeze.
    stopped: bool = False

    def text(self) -> str:
        """The quiescing in words, for the snapshot's message."""
        if self.stopped:
            return "guest stopped: nothing to quiesce"
        if self.filesystems is None:
            return f"not quiesced ({self.reason}): crash-consistent"
        fs = "filesystem" if self.filesystems == 1 else "filesystems"
        out = (f"{self.filesystems} {fs} frozen for {self.frozen_seconds * 1000:.0f} ms "
               "by the guest agent")
        if self.thaw_error:
            out += f", THAW FAILED ({self.thaw_error}): the guest may still be frozen"
        return out

    def to_json(self) -> dict:
        return {"mode": self.mode, "frozen": self.filesystems is not None,
                "filesystems": self.filesystems,
                "freezeSeconds": round(self.freeze_seconds, 3),
                "frozenSeconds": round(self.frozen_seconds, 3),
                "reason": self.reason, "thawError": self.thaw_error, "stopped": self.stopped}


class Freeze:
    """``with Freeze(dom, mode, marker) as q:`` freezes the guest's file
    systems if its agent answers (and ``mode`` is not off), :meth:`thaw`
    thaws them as soon as the copy's point in time is fixed, and leaving the
    block thaws them if that did not happen yet.  ``q.result`` says what was
    done.  Raises :class:`QuiesceRefused` on entry when ``mode`` is
    required and the guest could not be frozen (nothing is left frozen)."""

    def __init__(self, dom: libvirt.virDomain, mode: str, marker: Path) -> None:
        self.dom, self.marker = dom, marker
        self.result = Quiesced(mode=mode)
        self._frozen_at: float | None = None

    def __enter__(self) -> Freeze:
        mode = self.result.mode
        if mode == SnapshotQuiesce.OFF:
            self.result.reason = "quiescing off for this snapshot"
            return self
        why = self._cannot_freeze()
        if why is None:
            why = self._freeze()
        if why is not None:
            self.result.reason = why
            if mode == SnapshotQuiesce.REQUIRED:
                raise QuiesceRefused(f"the snapshot requires quiescing and {why}")
        return self

    def _cannot_freeze(self) -> str | None:
        try:
            state = agent_state(self.dom.XMLDesc(0))
        except libvirt.libvirtError as exc:
            return f"the domain's XML could not be read: {exc.get_error_message()}"
        if state == "none":
            return "the domain has no guest agent channel"
        if state != "connected":
            return "no guest agent is connected on its channel"
        return None

    def _freeze(self) -> str | None:
        """Freeze; None once frozen, else why not (nothing left frozen)."""
        self.marker.write_text(f"{time.time():.3f}\n")
        t0 = time.monotonic()
        try:
            count = self.dom.fsFreeze(None, 0)
        except libvirt.libvirtError as exc:
            # A freeze that failed midway leaves nothing frozen (the guest
            # agent thaws what it froze); a timeout may not: thaw to be sure.
            self._thaw_once()
            self.marker.unlink(missing_ok=True)
            return f"the guest agent did not freeze its filesystems: {exc.get_error_message()}"
        self._frozen_at = time.monotonic()
        self.result.filesystems = int(count)
        self.result.freeze_seconds = self._frozen_at - t0
        return None

    def _thaw_once(self) -> str | None:
        try:
            self.dom.fsThaw(None, 0)
            return None
        except libvirt.libvirtError as exc:
            return exc.get_error_message()

    def thaw(self) -> None:
        """Thaw a frozen guest (once; retried a few times when it fails)."""
        if self._frozen_at is None:
            return
        error = None
        for attempt in range(THAW_ATTEMPTS):
            error = self._thaw_once()
            if error is None:
                break
            log.warning("thaw of %s failed (attempt %d): %s", self.dom.name(), attempt + 1,
                        error)
            time.sleep(THAW_RETRY_SECONDS)
        self.result.frozen_seconds = time.monotonic() - self._frozen_at
        self._frozen_at = None
        if error is None:
            self.marker.unlink(missing_ok=True)
        else:
            self.result.thaw_error = error
            log.error("the filesystems of %s may still be frozen: %s (thawed again when the "
                      "agent starts)", self.dom.name(), error)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.thaw()


def thaw_left_frozen(conn: libvirt.virConnect, instance_dir: Path) -> list[str]:
    """Thaw each domain whose directory holds the freeze marker (an agent
    that ended between a freeze and its thaw); the uids thawed."""
    thawed = []
    for marker in instance_dir.glob(f"*/{MARKER}"):
        uid = marker.parent.name
        try:
            dom = conn.lookupByUUIDString(uid)
            if dom.isActive():
                dom.fsThaw(None, 0)
                log.warning("thawed the filesystems of %s, frozen by a snapshot that ended "
                            "with the agent", dom.name())
                thawed.append(uid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                            libvirt.VIR_ERR_OPERATION_INVALID):
                log.warning("thaw of %s after a restart failed: %s", uid, exc)
                continue
        marker.unlink(missing_ok=True)
    return thawed
