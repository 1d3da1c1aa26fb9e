"""A snapshot of an Instance's root disk into a TenantImage, asked for by
Kova's API component through the stream endpoint
(``PUT /v1/domains/<uid>/snapshot?namespace=&instance=&image=&user=``).

The root disk is a qcow2 overlay on the cached image (and, after a resize or
a move, possibly a longer chain).  The agent

1. pauses a running guest (libvirt ``suspend``: QEMU stops the vCPUs, drains
   and flushes every block device, so the overlay's data and metadata are on
   disk and do not change);
2. copies the whole chain into one standalone qcow2 with
   ``qemu-img convert -U`` (reading while QEMU keeps the file open; no
   backing file in the result);
3. resumes the guest -- it was paused only for the copy; a stopped or already
   paused guest is left as it was;
4. uploads the copy to Kova's image store (``--image-store-url``) as the
   TenantImage ``<image>`` of the Instance's namespace, with the agent's own
   token; the store verifies it, creates the TenantImage and records where it
   came from (annotations ``kova.dev/snapshot-of`` and ``kova.dev/snapshot-time``);
5. removes the copy.

The API component checked that the user may create that TenantImage.  One
snapshot (or power action) per domain at a time.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from kova.agents.context import AgentContext
from kova.agents.instance import decisions
from kova.agents.virt.driver import DriverError
from kova.agents.virt.images import private_file
from kova.errors import Refusal

log = logging.getLogger("kova.agents.instance.snapshot")

CHUNK = 1 << 20


class SnapshotError(Refusal):
    """A snapshot refused or failed: its HTTP status, reason and message."""


class Snapshots:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._busy: set[str] = set()

    def run(self, uid: str, namespace: str, instance: str, image: str,
            user: str) -> dict:
        """Snapshot domain ``uid`` (Instance ``namespace/instance``) into the
        TenantImage ``image``; the store's answer with the pause's length."""
        with self._lock:
            if uid in self._busy:
                raise SnapshotError(409, "SnapshotInProgress",
                                    "a snapshot of this Instance is in progress")
            self._busy.add(uid)
        try:
            return self._run(uid, namespace, instance, image, user)
        finally:
            with self._lock:
                self._busy.discard(uid)

    def _run(self, uid: str, namespace: str, instance: str, image: str,
             user: str) -> dict:
        ctx = self.ctx
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
        copy = disk.with_name(f"snapshot-{uuid.uuid4().hex[:8]}.qcow2")
        t0 = time.monotonic()
        try:
            paused = self._copy(uid, info.state.running, disk, copy)
            copied = time.monotonic() - t0
            log.info("snapshot of %s/%s for %s: %d bytes copied in %.2fs (guest paused "
                     "%.2fs)", namespace, instance, user, copy.stat().st_size, copied, paused)
            answer = self._upload(store, copy, namespace, instance, image)
        finally:
            copy.unlink(missing_ok=True)
        total = time.monotonic() - t0
        return {**answer, "pausedSeconds": round(paused, 3), "seconds": round(total, 3),
                "message": f"TenantImage {namespace}/{image}: {answer.get('sizeBytes')} bytes "
                           f"(virtual {answer.get('virtualSizeBytes')}), guest paused "
                           f"{paused:.2f}s, {total:.2f}s in all"}

    def _copy(self, uid: str, pause: bool, disk: Path, copy: Path) -> float:
        """The disk's chain flattened into ``copy``; how long the guest was paused."""
        t0 = time.monotonic()
        try:
            if pause:
                self.ctx.driver.suspend(uid)
            proc = subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O",
                                   "qcow2", str(disk), str(private_file(copy))],
                                  capture_output=True, text=True, check=False)
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
                image: str) -> dict:
        url = f"{store.rstrip('/')}/v1/namespaces/{namespace}/images/{image}"
        token = self.ctx.kube.aio.creds.bearer()
        headers = {"Content-Length": str(copy.stat().st_size),
                   "Content-Type": "application/octet-stream"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with httpx.Client(verify=self.ctx.images.tls,
                              timeout=httpx.Timeout(60.0, read=None)) as client:
                resp = client.put(url, params={"format": "qcow2",
                                               "snapshotOf": f"{namespace}/{instance}"},
                                  content=_chunks(copy), headers=headers)
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


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
