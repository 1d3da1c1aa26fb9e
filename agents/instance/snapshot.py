"""A snapshot of an Instance's root disk into a TenantImage, asked for by
Kova's API component through the stream endpoint
(``PUT /v1/domains/<uid>/snapshot?namespace=&instance=&image=&user=``).

The root disk is a qcow2 overlay on the cached image (and, after a resize or
a move, possibly a longer chain).  The agent

1. copies the whole chain, as it is at that moment, into one standalone
   qcow2 (no backing file): for a running (or paused) guest with libvirt's
   backup API (:mod:`kova.agents.virt.backup`: QEMU's backup job with
   copy-before-write; the guest is never paused), for a stopped one with
   ``qemu-img convert``; where libvirt has no backup API (its test driver),
   the guest is paused for a ``qemu-img convert -U`` (QEMU drains and flushes
   the disk first) and resumed.  A running guest whose QEMU guest agent
   answers has its file systems frozen until the backup job has started
   (:mod:`kova.agents.virt.quiesce`; ``quiesce``: required, auto or off);
2. uploads the copy to Kova's image store (``--image-store-url``) as the
   TenantImage ``<image>`` of the Instance's namespace, with the agent's own
   token; the store verifies it and fills the TenantImage the API component
   created saving at the request (its uid, ``imageUid``, is passed on: the
   store refuses the upload if that object is gone), or, for a request
   without one, creates it; it records where it came from (annotations
   ``kova.dev/snapshot-of`` and ``kova.dev/snapshot-time``);
3. removes the copy.

While it works it writes its progress into the Instance's ``status.snapshot``
(:class:`Progress`: the request id, the phase -- Copying, Uploading, Stored or
Failed -- and the phase's bytes done and in all), at each phase's start and
then at most every :data:`PROGRESS_SECONDS`, with a field manager of its own.

A backup job outlives an agent that dies midway: when the agent starts,
:func:`clean_up_after_restart` aborts the backup jobs still running on its
domains and removes the half-made copies.

The API component checked that the user may create that TenantImage.  One
snapshot (or power action) per domain at a time.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import libvirt

from kova import events
from kova.agents.context import AgentContext
from kova.agents.instance import decisions
from kova.agents.instance.report import post_event
from kova.agents.virt.backup import BackupError, BackupUnsupported, abort_backup, push_backup
from kova.agents.virt.driver import DriverError
from kova.agents.virt.images import private_file
from kova.agents.virt.quiesce import (
    MARKER,
    Freeze,
    Quiesced,
    QuiesceRefused,
    thaw_left_frozen,
)
from kova.conditions import now_rfc3339
from kova.crds import names
from kova.errors import Refusal
from kova.imagefile import qcow2_virtual_size
from kova.kube import instance_path

log = logging.getLogger("kova.agents.instance.snapshot")

#: The copy is read and sent in pieces of this size.
CHUNK = 4 << 20
#: The least time between two writes of a snapshot's progress.
PROGRESS_SECONDS = 2.0
#: The name of a copy being made, beside the root disk: snapshot-<random>.qcow2.
COPY_PREFIX = "snapshot-"


class SnapshotError(Refusal):
    """A snapshot refused or failed: its HTTP status, reason and message."""


class Progress:
    """``status.snapshot`` of one Instance: applied at a phase's start and
    at its end, else at most every ``interval`` seconds; a failed write is
    logged and never fails the snapshot.  Without a request id (an API
    component that sends none) nothing is written."""

    def __init__(self, ctx: AgentContext, namespace: str, instance: str, request: str,
                 image: str, interval: float = PROGRESS_SECONDS) -> None:
        self.ctx, self.namespace, self.instance = ctx, namespace, instance
        self.request, self.image, self.interval = request, image, interval
        self.phase: str | None = None
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int, force: bool = False,
                 message: str | None = None) -> None:
        now = time.monotonic()
        if not self.request:
            return
        if phase == self.phase and not force and now - self._last < self.interval:
            return
        self.phase, self._last = phase, now
        body = {"apiVersion": names.API_VERSION, "kind": "Instance",
                "metadata": {"name": self.instance, "namespace": self.namespace},
                "status": {"snapshot": {
                    "requestId": self.request, "image": self.image, "phase": phase,
                    "bytesDone": max(0, done), "bytesTotal": max(0, total),
                    "updateTime": now_rfc3339(),
                    **({"message": message[:1024]} if message else {})}}}
        try:
            self.ctx.kube.apply(instance_path(self.namespace, self.instance) + "/status",
                                body, field_manager=names.FIELD_MANAGER_AGENT_SNAPSHOT)
        except Exception as exc:  # noqa: BLE001 -- the progress is best effort
            log.warning("progress of snapshot %s of %s/%s not written: %s", self.request,
                        self.namespace, self.instance, exc)


#: How many finished snapshots' answers the agent keeps for an API component
#: that asks again (:meth:`Snapshots.resume`).
KEEP_RESULTS = 64


class Snapshots:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        #: request id -> set once its snapshot ended; its answer or error.
        self._ended: dict[str, threading.Event] = {}
        self._results: collections.OrderedDict[str, dict | SnapshotError] = (
            collections.OrderedDict())

    def resume(self, uid: str, request: str, timeout: float | None = None) -> dict:
        """The answer of snapshot ``request`` of domain ``uid``, once it has
        ended: an API component that restarted while the agent worked asks
        again.  410 ``SnapshotInterrupted`` when this agent never ran it or
        has forgotten it (it restarted: a snapshot it ran is over, its copy
        removed when it started again)."""
        with self._lock:
            ended = self._ended.get(request)
        if ended is None:
            raise SnapshotError(410, "SnapshotInterrupted",
                                f"the agent on {self.ctx.host} has no snapshot {request} of "
                                "this Instance (it restarted, or never received it); "
                                "nothing was stored: take the snapshot again")
        if not ended.wait(timeout):
            raise SnapshotError(504, "SnapshotInProgress",
                                f"snapshot {request} is still running on {self.ctx.host}")
        with self._lock:
            result = self._results.get(request)
        if isinstance(result, SnapshotError):
            raise result
        assert result is not None
        return result

    def _ended_with(self, request: str, result: dict | SnapshotError) -> None:
        if isinstance(result, SnapshotError):
            # Kept without its traceback and cause: their frames hold the
            # libvirt domain (and through it the connection) it failed on.
            result = SnapshotError(result.status, result.reason, result.message)
        with self._lock:
            self._results[request] = result
            while len(self._results) > KEEP_RESULTS:
                old, _ = self._results.popitem(last=False)
                self._ended.pop(old, None)
            self._ended[request].set()

    def run(self, uid: str, namespace: str, instance: str, image: str,
            user: str, request: str = "", quiesce: str = names.SnapshotQuiesce.AUTO,
            image_uid: str = "") -> dict:
        """Snapshot domain ``uid`` (Instance ``namespace/instance``) into the
        TenantImage ``image``; the store's answer with the pause's length and
        the quiescing (:mod:`kova.agents.virt.quiesce`; ``quiesce``: a
        :class:`~kova.crds.names.SnapshotQuiesce`).  ``request``: the
        action's request id, for the progress; ``image_uid``: the TenantImage
        created saving for it."""
        with self._lock:
            if uid in self._busy:
                raise SnapshotError(409, "SnapshotInProgress",
                                    "a snapshot of this Instance is in progress")
            self._busy.add(uid)
            if request:
                self._ended[request] = threading.Event()
        progress = Progress(self.ctx, namespace, instance, request, image)
        result: dict | SnapshotError = SnapshotError(500, "SnapshotFailed",
                                                     "the snapshot ended unexpectedly")
        try:
            result = self._run(uid, namespace, instance, (image, image_uid), user, progress,
                               quiesce)
            size = int(result.get("sizeBytes") or 0)
            progress(names.SnapshotPhase.STORED, size, size, force=True)
            return result
        except SnapshotError as exc:
            result = exc
            progress(names.SnapshotPhase.FAILED, 0, 0, force=True, message=exc.message)
            raise
        finally:
            with self._lock:
                self._busy.discard(uid)
            if request:
                self._ended_with(request, result)

    def _run(self, uid: str, namespace: str, instance: str, target: tuple[str, str],
             user: str, progress: Progress, quiesce: str) -> dict:
        ctx = self.ctx
        image = target[0]
        store = ctx.cfg.image_store_url
        if not store:
            raise SnapshotError(409, "NoImageStore", f"the agent on {ctx.host} has no image "
                                "store to upload to (--image-store-url)")
        info = ctx.driver.get(uid)
        if info is None or not decisions.is_mine(info.meta, ctx.host):
            raise SnapshotError(404, "NotFound", f"no domain of this Instance on {ctx.host}")
        disk = ctx.files(uid).disk
        if not disk.exists():
            raise SnapshotError(404, "NotFound", f"the Instance has no root disk on {ctx.host}")
        copy = disk.with_name(f"{COPY_PREFIX}{uuid.uuid4().hex[:8]}.qcow2")
        t0 = time.monotonic()
        try:
            progress(names.SnapshotPhase.COPYING, 0, 0, force=True)
            paused, quiesced = self._copy(uid, info.state.running, disk, copy, progress,
                                          quiesce)
            copied = time.monotonic() - t0
            log.info("snapshot of %s/%s for %s: %d bytes copied in %.2fs (%s, %s)", namespace,
                     instance, user, copy.stat().st_size, copied, pause_text(paused),
                     quiesced.text())
            if quiesced.thaw_error:
                self._thaw_failed(uid, namespace, instance, quiesced)
            t1 = time.monotonic()
            answer = self._upload(store, copy, namespace, instance, target, progress)
            uploaded = time.monotonic() - t1
            log.info("snapshot of %s/%s: uploaded in %.2fs (the store's seconds: %s)",
                     namespace, instance, uploaded, answer.get("seconds"))
        finally:
            copy.unlink(missing_ok=True)
        total = time.monotonic() - t0
        return {**answer, "pausedSeconds": round(paused, 3), "seconds": round(total, 3),
                "copySeconds": round(copied, 3), "uploadSeconds": round(uploaded, 3),
                "storeSeconds": answer.get("seconds"), "quiesce": quiesced.to_json(),
                "message": f"TenantImage {namespace}/{image}: {answer.get('sizeBytes')} bytes "
                           f"(virtual {answer.get('virtualSizeBytes')}), "
                           f"{pause_text(paused)}, {quiesced.text()}, {total:.2f}s in all"}

    def _copy(self, uid: str, running: bool, disk: Path, copy: Path,
              progress: Progress, quiesce: str) -> tuple[float, Quiesced]:
        """The disk's chain flattened into ``copy``; how long the guest was
        paused for it -- never (0.0) with the backup API, which copies while
        the guest runs; for the whole copy where libvirt has no backup API --
        and how it was quiesced: a running guest's file systems frozen
        through its guest agent until the backup job has started."""
        try:
            state = self.ctx.driver.state(uid)
            if not (running or (state is not None and not state.shutoff)):
                paused = self._convert(uid, False, disk, copy, progress)
                return paused, Quiesced(mode=quiesce, stopped=True)
            dom = self.ctx.driver.ops_conn.lookupByUUIDString(uid)
            with Freeze(dom, quiesce, self.ctx.files(uid).dir / MARKER) as freeze:
                try:
                    stats = push_backup(
                        self.ctx.driver, uid, disk, copy, on_started=freeze.thaw,
                        on_progress=lambda d, t: progress(names.SnapshotPhase.COPYING, d, t))
                    log.debug("backup of %s: %s", uid, stats)
                    paused = 0.0
                except BackupUnsupported as exc:
                    log.info("%s: pausing the guest for the copy instead", exc)
                    paused = self._convert(uid, running, disk, copy, progress)
            return paused, freeze.result
        except QuiesceRefused as exc:
            raise SnapshotError(409, "QuiesceFailed", str(exc)) from exc
        except BackupError as exc:
            raise SnapshotError(500, "SnapshotFailed", str(exc)) from exc
        except DriverError as exc:
            raise SnapshotError(503, "HypervisorError", str(exc)) from exc
        except libvirt.libvirtError as exc:
            raise SnapshotError(503, "HypervisorError", str(exc)) from exc

    def _thaw_failed(self, uid: str, namespace: str, instance: str, q: Quiesced) -> None:
        """A Warning Event: the guest's filesystems may still be frozen."""
        obj = {"metadata": {"name": instance, "namespace": namespace, "uid": uid}}
        post_event(self.ctx, obj, events.WARNING, names.EVENT_GUEST_THAW_FAILED,
                   f"the guest's filesystems, frozen for a snapshot, may still be frozen: "
                   f"{q.thaw_error} (the agent thaws them again when it starts; or virsh "
                   "domfsthaw)")

    def _convert(self, uid: str, pause: bool, disk: Path, copy: Path,
                 progress: Progress) -> float:
        """``qemu-img convert`` of the chain into ``copy`` (the guest paused
        for it if ``pause``: QEMU drains and flushes the disk); the pause."""
        t0 = time.monotonic()
        total = qcow2_virtual_size(disk)
        try:
            if pause:
                self.ctx.driver.suspend(uid)
            proc = convert_with_progress(
                disk, private_file(copy),
                lambda pct: progress(names.SnapshotPhase.COPYING, int(total * pct / 100), total))
        except DriverError as exc:
            raise SnapshotError(503, "HypervisorError", str(exc)) from exc
        finally:
            if pause:
                try:
                    self.ctx.driver.resume(uid)
                except DriverError as exc:
                    log.error("domain %s not resumed after its snapshot: %s", uid, exc)
        if proc.returncode != 0:
            raise SnapshotError(500, "SnapshotFailed", f"qemu-img convert failed: "
                                f"{(proc.stderr or proc.stdout).strip()}")
        return time.monotonic() - t0 if pause else 0.0

    def _upload(self, store: str, copy: Path, namespace: str, instance: str,
                target: tuple[str, str], progress: Progress) -> dict:
        """The copy to the store as TenantImage ``target`` (name, and the uid
        of the object created saving for it, or "")."""
        image, image_uid = target
        url = f"{store.rstrip('/')}/v1/namespaces/{namespace}/images/{image}"
        token = self.ctx.kube.aio.creds.bearer()
        headers = {"Content-Length": str(copy.stat().st_size),
                   "Content-Type": "application/octet-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        size = copy.stat().st_size
        progress(names.SnapshotPhase.UPLOADING, 0, size, force=True)
        try:
            with httpx.Client(verify=self.ctx.images.tls,
                              timeout=httpx.Timeout(60.0, read=None)) as client:
                params = {"format": "qcow2", "snapshotOf": f"{namespace}/{instance}",
                          **({"placeholder": image_uid} if image_uid else {})}
                resp = client.put(url, params=params,
                                  content=_chunks(copy, lambda done: progress(
                                      names.SnapshotPhase.UPLOADING, done, size)),
                                  headers=headers)
        except httpx.HTTPError as exc:
            raise SnapshotError(502, "StoreUnreachable", f"upload to the image store "
                                f"failed: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text[:500]}
        if resp.status_code != 201:
            raise SnapshotError(resp.status_code if 400 <= resp.status_code < 500 else 502,
                                body.get("reason") or "UploadRefused",
                                f"the image store refused the snapshot: {body.get('message')}")
        return body


def pause_text(paused: float) -> str:
    """How long the guest was paused for the copy, in words."""
    return f"guest paused {paused:.2f}s" if paused > 0 else "guest not paused"


def _chunks(path: Path, sent: Callable[[int], None]) -> Iterator[bytes]:
    """The file's chunks; ``sent(bytes so far)`` before each next one."""
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
            done += len(chunk)
            sent(done)


#: qemu-img's progress line: ``    (12.50/100%)``.
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def convert_with_progress(disk: Path, copy: Path,
                          on_percent: Callable[[float], None]) -> subprocess.CompletedProcess:
    """``qemu-img convert -U -p`` of ``disk`` into a standalone qcow2 at
    ``copy``; ``on_percent`` with each percentage qemu-img prints."""
    with subprocess.Popen(["qemu-img", "convert", "-U", "-p", "-f", "qcow2", "-O", "qcow2",
                           str(disk), str(copy)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while block := os.read(proc.stdout.fileno(), 4096):
            found = _PERCENT.findall(block)
            if found:
                on_percent(float(found[-1]))
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait()
    return subprocess.CompletedProcess(proc.args, code, "", err)


def clean_up_after_restart(ctx: AgentContext) -> None:
    """What a snapshot cut short by the agent's end left: the backup job
    still running on a domain of this host is aborted, a guest frozen for
    it thawed, the half-made copy next to a root disk removed.  The disks
    themselves are untouched."""
    try:
        domains = ctx.driver.list_domains()
    except DriverError as exc:
        log.warning("listing domains for unfinished snapshots failed: %s", exc)
        domains = []
    for d in domains:
        if decisions.is_mine(d.meta, ctx.host) and not d.state.shutoff:
            abort_backup(ctx.driver, d.uuid)
    try:
        thaw_left_frozen(ctx.driver.ops_conn, ctx.instance_dir)
    except (libvirt.libvirtError, DriverError) as exc:
        log.warning("thawing guests left frozen failed: %s", exc)
    for copy in ctx.instance_dir.glob(f"*/{COPY_PREFIX}*.qcow2"):
        log.info("removing %s, left by an unfinished snapshot", copy)
        copy.unlink(missing_ok=True)
