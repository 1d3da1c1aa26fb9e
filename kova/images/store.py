"""The image store's files: one directory per Image under the store's root.

::

    <root>/<name>/image.qcow2 | image.raw   the verified file
    <root>/<name>/meta.json                 name, format, sizes, sha256, original format
    <root>/.uploads/<random>/               an upload in progress
    <root>/.namespaces/<namespace>/<name>/  a TenantImage's files, as above

An upload is written to ``.uploads/`` while its sha256 is computed, with a
size limit; a format other than qcow2 or raw (vmdk, vhdx, vpc, vdi) is
converted to qcow2 with ``qemu-img convert`` (under :mod:`kova.prlimit`
limits); the result is checked with :mod:`kova.imagefile` (no backing file,
data file, ``json:`` name or extent outside the file) and only then renamed
into place.  An upload that is interrupted, too large or refused leaves
nothing behind; an Image name is stored once (images are immutable).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from kova import imagefile, prlimit
from kova.errors import Refusal

#: Formats an upload may have; the others than qcow2, raw and iso are converted.
UPLOAD_FORMATS = ("qcow2", "raw", "iso", "vmdk", "vhdx", "vpc", "vdi")
#: Stored as uploaded, after a check of its own (not a disk image qemu-img reads).
ISO = "iso"
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: Conversion gets more than ``qemu-img info``: it reads the whole image.
CONVERT_CPU_SECONDS = 3600
CONVERT_ADDRESS_SPACE = 4 << 30


class StoreError(Refusal):
    """A refused upload: ``status`` (HTTP), ``reason`` (CamelCase) and a sentence."""


@dataclasses.dataclass(frozen=True)
class StoredImage:
    name: str
    path: Path
    format: str
    size: int
    virtual_size: int
    sha256: str
    uploaded_format: str
    #: A TenantImage's namespace; None for a cluster Image.
    namespace: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "format": self.format,
                "sizeBytes": self.size, "virtualSizeBytes": self.virtual_size,
                "sha256": self.sha256, "uploadedFormat": self.uploaded_format}


class ImageStore:
    def __init__(self, root: Path | str, *, max_bytes: int = 0) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        (self.root / ".uploads").mkdir(parents=True, exist_ok=True)
        # Uploads a crash left behind.
        for leftover in (self.root / ".uploads").iterdir():
            shutil.rmtree(leftover, ignore_errors=True)

    @staticmethod
    def check_name(name: str) -> None:
        if not NAME.match(name):
            raise StoreError(400, "InvalidName",
                             f"{name!r} is not an Image name (a DNS subdomain)")

    def dir_of(self, name: str, namespace: str | None = None) -> Path:
        """Where Image ``name`` (or the TenantImage ``name`` of ``namespace``) lives."""
        self.check_name(name)
        if namespace is None:
            return self.root / name
        if not DNS_LABEL.match(namespace):
            raise StoreError(400, "InvalidName", f"{namespace!r} is not a namespace name")
        return self.root / ".namespaces" / namespace / name

    def get(self, name: str, namespace: str | None = None) -> StoredImage | None:
        where = self.dir_of(name, namespace)
        try:
            meta = json.loads((where / "meta.json").read_text())
        except (OSError, ValueError):
            return None
        return StoredImage(name=name, namespace=namespace,
                           path=where / f"image.{meta['format']}",
                           format=meta["format"], size=meta["sizeBytes"],
                           virtual_size=meta["virtualSizeBytes"], sha256=meta["sha256"],
                           uploaded_format=meta.get("uploadedFormat", meta["format"]))

    def delete(self, name: str, namespace: str | None = None) -> bool:
        target = self.dir_of(name, namespace)
        if not target.exists():
            return False
        # Out of sight first (a rename is atomic), then removed.
        trash = Path(tempfile.mkdtemp(dir=self.root / ".uploads"))
        os.replace(target, trash / name)
        shutil.rmtree(trash, ignore_errors=True)
        if namespace is not None:
            try:
                target.parent.rmdir()  # the namespace's last image
            except OSError:
                pass
        return True

    def names(self) -> list[tuple[str, str | None]]:
        """(name, namespace or None) of every stored image."""
        out: list[tuple[str, str | None]] = [
            (d.name, None) for d in self.root.iterdir()
            if d.is_dir() and not d.name.startswith(".")]
        spaces = self.root / ".namespaces"
        if spaces.is_dir():
            out += [(d.name, ns.name) for ns in spaces.iterdir() if ns.is_dir()
                    for d in ns.iterdir() if d.is_dir()]
        return out

    async def receive(self, name: str, fmt: str, chunks: AsyncIterator[bytes],
                      length: int | None = None, namespace: str | None = None
                      ) -> StoredImage:
        """Store the upload ``chunks`` as Image ``name`` (the TenantImage of
        ``namespace``); StoreError when refused."""
        self.dir_of(name, namespace)
        if fmt not in UPLOAD_FORMATS:
            raise StoreError(400, "UnsupportedFormat",
                             f"format {fmt!r} is not one of {', '.join(UPLOAD_FORMATS)}")
        if self.get(name, namespace) is not None:
            raise StoreError(409, "AlreadyExists", f"the store already holds image {name}")
        if self.max_bytes and length is not None and length > self.max_bytes:
            raise StoreError(413, "TooLarge", f"the upload is {length} bytes, over the store's "
                             f"limit of {self.max_bytes}")
        work = Path(tempfile.mkdtemp(dir=self.root / ".uploads"))
        try:
            upload = work / f"upload.{fmt}"
            digest = await self._write(upload, chunks, length)
            return await asyncio.to_thread(self._register, name, fmt, upload, work, digest,
                                           namespace)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _write(self, path: Path, chunks: AsyncIterator[bytes],
                     length: int | None) -> str:
        """The upload into ``path``; its sha256."""
        digest = hashlib.sha256()
        size = 0
        with open(path, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if self.max_bytes and size > self.max_bytes:
                    raise StoreError(413, "TooLarge", f"the upload is over the store's limit "
                                     f"of {self.max_bytes} bytes")
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and size != length:
            raise StoreError(400, "Incomplete", f"got {size} of {length} bytes")
        return digest.hexdigest()

    def _register(self, name: str, fmt: str, upload: Path, work: Path,
                  digest: str, namespace: str | None) -> StoredImage:
        try:
            if fmt == ISO:
                final_fmt, image = fmt, upload
                info = {"virtual-size": imagefile.check_iso(upload)}
            else:
                if fmt in imagefile.BOOT_FORMATS:
                    final_fmt, image = fmt, upload
                else:
                    final_fmt, image = "qcow2", self._convert(upload, fmt, work / "image.qcow2")
                info = imagefile.verify(image, final_fmt)
        except imagefile.UnsafeImage as exc:
            raise StoreError(422, "ImageInvalid", f"the {fmt} file is refused: {exc}") from None
        stored_dir = work / "stored"
        stored_dir.mkdir()
        target = stored_dir / f"image.{final_fmt}"
        os.replace(image, target)
        meta = {"name": name, "format": final_fmt, "sizeBytes": target.stat().st_size,
                "virtualSizeBytes": int(info.get("virtual-size") or 0),
                "sha256": digest if final_fmt == fmt else _sha256(target),
                "uploadedFormat": fmt}
        (stored_dir / "meta.json").write_text(json.dumps(meta, indent=1))
        target_dir = self.dir_of(name, namespace)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(stored_dir, target_dir)  # atomic; fails if the name was taken
        except OSError:
            raise StoreError(409, "AlreadyExists",
                             f"the store already holds image {name}") from None
        got = self.get(name, namespace)
        assert got is not None
        return got

    @staticmethod
    def _convert(source: Path, fmt: str, dest: Path) -> Path:
        """``source`` (checked as ``fmt`` first) as a standalone qcow2."""
        imagefile.verify(source, fmt)
        argv = prlimit.command(
            ["qemu-img", "convert", "-q", "-f", fmt, "-O", "qcow2", str(source), str(dest)],
            address_space=CONVERT_ADDRESS_SPACE, cpu_seconds=CONVERT_CPU_SECONDS)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise imagefile.UnsafeImage(f"qemu-img convert from {fmt} failed: "
                                        f"{(proc.stderr or proc.stdout).strip()}")
        return dest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
