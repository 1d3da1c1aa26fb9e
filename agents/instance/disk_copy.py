"""Copying an Instance's disk from one agent to another, for a cold
migration (Nova copies it over SSH/rsync between compute hosts; Kova uses
the agents' own stream endpoint, mutual TLS, never the API server).

The source flattens its overlay into one standalone qcow2 (no backing file:
the destination's image cache may hold the image under another path, or not
at all) and sends it with ``PUT /v1/domains/<uid>/disk`` and its sha256 in
the ``X-Kova-Sha256`` header; the destination writes it under a temporary
name, checks the sha256, and only then renames it to the Instance's disk.
A disk is only received for an Instance without a domain on that host.
A UEFI guest's variable store (``nvram.fd``, a small raw file) goes the
same way first, ``PUT /v1/domains/<uid>/nvram`` (:func:`send` with
``part="nvram"``), so the guest keeps its boot entries and variables.

The source's step Moving of a move to another host
(:mod:`kova.agents.instance.migrate`) sends the disk with :func:`send`,
naming the Instance in ``X-Kova-Instance`` (``namespace/name``) so the
destination can tell the received directory from a leftover.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from kova.agents.virt.images import PRIVATE_MODE, private_file

SHA256_HEADER = "X-Kova-Sha256"
INSTANCE_HEADER = "X-Kova-Instance"
CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
INCOMING = ".disk.incoming.part"
NVRAM_INCOMING = ".nvram.incoming.part"


class CopyError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class Received:
    sha256: str
    size: int


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def flatten(overlay: Path, dest: Path) -> Path:
    """A standalone qcow2 copy of ``overlay`` (its backing image merged in)."""
    tmp = private_file(dest.with_name(f".{dest.name}.part"))
    proc = subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(overlay), str(tmp)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise CopyError(500, "FlattenFailed",
                        f"qemu-img convert failed: {proc.stderr.strip() or proc.stdout.strip()}")
    os.chmod(tmp, PRIVATE_MODE)
    os.replace(tmp, dest)
    return dest


async def receive(chunks: AsyncIterator[bytes], disk: Path, want_sha256: str,
                  incoming: str = INCOMING) -> Received:
    """Write ``chunks`` to ``disk`` (through a temporary file named
    ``incoming`` beside it) once their sha256 is ``want_sha256``; nothing is
    left behind otherwise (CopyError 400)."""
    want = (want_sha256 or "").lower()
    if not _HEX64.match(want):
        raise CopyError(400, "ChecksumMissing",
                        f"the {SHA256_HEADER} header must be the disk's sha256 (64 hex digits)")
    disk.parent.mkdir(parents=True, exist_ok=True)
    tmp = disk.with_name(incoming)
    h, size = hashlib.sha256(), 0
    try:
        with open(private_file(tmp), "wb") as f:
            async for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
                f.write(chunk)
        got = h.hexdigest()
        if got != want:
            raise CopyError(400, "ChecksumMismatch",
                            f"the disk received ({size} bytes) has sha256 {got}, not {want}")
        os.replace(tmp, disk)
    finally:
        tmp.unlink(missing_ok=True)
    return Received(got, size)


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def send(disk: Path, address: str, port: int, uid: str, tls: ssl.SSLContext,
         timeout: float = 600.0, *, instance: str | None = None,
         server_name: str | None = None, part: str = "disk") -> Received:
    """PUT ``disk`` to the stream endpoint ``address:port`` as Instance
    ``uid``'s disk (``part="nvram"``: its UEFI variable store), checked
    there against its sha256.  ``instance``:
    ``namespace/name``, recorded by the destination; ``server_name``: the
    name the destination's certificate must carry whatever its address.
    Raises CopyError with the destination's answer."""
    digest = sha256_of(disk)
    url = f"https://{address}:{port}/v1/domains/{uid}/{part}"
    headers = {SHA256_HEADER: digest}
    if instance:
        headers[INSTANCE_HEADER] = instance
    ext = {"sni_hostname": server_name} if server_name else None
    with httpx.Client(verify=tls, timeout=timeout) as client:
        resp = client.put(url, content=_read(disk), headers=headers, extensions=ext)
    if resp.status_code != 201:
        try:
            body = resp.json()
        except ValueError:
            body = {"reason": "Error", "message": resp.text}
        raise CopyError(resp.status_code, body.get("reason", "Error"),
                        body.get("message", resp.text))
    body = resp.json()
    return Received(body["sha256"], int(body["bytes"]))
