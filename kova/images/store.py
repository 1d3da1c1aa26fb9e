"""The image store's files: one directory per Image under the store's root.

::

    <root>/<name>/image.qcow2 | image.raw   the verified file
    <root>/<name>/meta.json                 name, format, sizes, sha256, original format
    <root>/.uploads/<random>/               an upload in progress
    <root>/.namespaces/<namespace>/<name>/  a TenantImage's files, as above

An upload is written to ``.uploads/`` while its sha256 is computed, in one
pass over the bytes (each piece hashed and written the moment it arrives,
while it is still in the CPU's cache; the disk's writeback starts as the file
grows, and one fsync at the end makes it durable), with a size limit; a
format other than qcow2 or raw (vmdk, vhdx, vpc, vdi) is converted to qcow2
with ``qemu-img convert`` (under :mod:`kova.prlimit` limits); the result is
checked with :mod:`kova.imagefile` (no backing file, data file, ``json:``
name or extent outside the file) and only then renamed into place.  An
upload that is interrupted, too large or refused leaves nothing behind; an
Image name is stored once (images are immutable).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
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
#: The disk's writeback of the file is started every this many bytes, so that
#: the fsync at the end waits for the last part only.
WRITEBACK_BYTES = 32 << 20


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
    #: Of an upload just stored: seconds spent per step (receive, fsync, check, ...).
    seconds: dict = dataclasses.field(default_factory=dict, compare=False)

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
            # A file to convert is read once by qemu-img: its result is what is kept.
            keep = fmt == ISO or fmt in imagefile.BOOT_FORMATS
            digest, seconds = await self._write(upload, chunks, length, durable=keep)
            stored = await asyncio.to_thread(self._register, name, fmt, upload, work, digest,
                                             namespace, seconds)
            return dataclasses.replace(stored, seconds=seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def _write(self, path: Path, chunks: AsyncIterator[bytes],
                     length: int | None, *, durable: bool = True) -> tuple[str, dict]:
        """The upload into ``path``; its sha256 and where the time went.

        One pass over the bytes: each chunk is hashed and written as it
        arrives, with the disk's writeback started as the file grows;
        ``durable``: one fsync at the end, in a thread.  Chunks are not
        gathered into larger batches first: a batch of megabytes falls out of
        the CPU's cache before it is hashed and written, and the copies and
        fresh allocations it takes cost more CPU time than the calls it saves
        (measured: docs/benchmarks.md, "Image upload").  (Hashing and writing
        in a worker thread while the next chunk arrives, piece by piece or in
        batches of 1 MiB, was measured twice against this on the 2-core
        machine: faster in one window with a core to spare, even or slower
        and up to a fifth more CPU time in the others -- likely the GIL passed back
        and forth with the TLS decryption -- and not kept.)"""
        loop = asyncio.get_running_loop()
        sink = _Sink(path)
        size = 0
        t0 = time.monotonic()
        try:
            async for chunk in chunks:
                size += len(chunk)
                if self.max_bytes and size > self.max_bytes:
                    raise StoreError(413, "TooLarge", f"the upload is over the store's limit "
                                     f"of {self.max_bytes} bytes")
                sink.absorb(chunk)
            received = time.monotonic() - t0
            if length is not None and size != length:
                raise StoreError(400, "Incomplete", f"got {size} of {length} bytes")
            digest, synced = await loop.run_in_executor(None, sink.finish, durable)
        finally:
            sink.close()
        return digest, {"receiveSeconds": round(received, 3),
                        "fsyncSeconds": round(synced, 3)}

    def _register(self, name: str, fmt: str, upload: Path, work: Path,
                  digest: str, namespace: str | None, seconds: dict) -> StoredImage:
        t0 = time.monotonic()
        try:
            if fmt == ISO:
                final_fmt, image = fmt, upload
                info = {"virtual-size": imagefile.check_iso(upload)}
            else:
                if fmt in imagefile.BOOT_FORMATS:
                    final_fmt, image = fmt, upload
                else:
                    final_fmt, image = "qcow2", self._convert(upload, fmt, work / "image.qcow2")
                    seconds["convertSeconds"] = round(time.monotonic() - t0, 3)
                    t0 = time.monotonic()
                    # The converted file: hashed and made durable in one read.
                    digest = _sha256(image, fsync=True)
                    seconds["hashSeconds"] = round(time.monotonic() - t0, 3)
                    t0 = time.monotonic()
                info = imagefile.verify(image, final_fmt)
        except imagefile.UnsafeImage as exc:
            raise StoreError(422, "ImageInvalid", f"the {fmt} file is refused: {exc}") from None
        seconds["checkSeconds"] = round(time.monotonic() - t0, 3)
        t0 = time.monotonic()
        stored_dir = work / "stored"
        stored_dir.mkdir()
        target = stored_dir / f"image.{final_fmt}"
        os.replace(image, target)
        meta = {"name": name, "format": final_fmt, "sizeBytes": target.stat().st_size,
                "virtualSizeBytes": int(info.get("virtual-size") or 0),
                "sha256": digest, "uploadedFormat": fmt}
        _write_durably(stored_dir / "meta.json", json.dumps(meta, indent=1).encode())
        target_dir = self.dir_of(name, namespace)
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(stored_dir, target_dir)  # atomic; fails if the name was taken
        except OSError:
            raise StoreError(409, "AlreadyExists",
                             f"the store already holds image {name}") from None
        _fsync_dir(target_dir.parent)
        seconds["renameSeconds"] = round(time.monotonic() - t0, 3)
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


def _sha256(path: Path, *, fsync: bool = False) -> str:
    """The file's sha256 (and, with ``fsync``, the file made durable)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
        if fsync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range(2)`` from the C library (None elsewhere)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing that range of the file to disk, without
    waiting for it (the fsync at the end then has little left to wait for);
    a no-op where the C library has no ``sync_file_range``."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def _not_written(exc: OSError) -> StoreError:
    """The refusal for a write the kernel refused: 507 when the disk (or the
    quota, or the file-size limit) is full, else 500."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return StoreError(507 if full else 500, "InsufficientStorage" if full else "WriteFailed",
                      f"the store could not write the upload: {exc.strerror or exc}")


class _Sink:
    """A file written and hashed in one pass."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self.digest = hashlib.sha256()
        self.size = 0
        self.written_back = 0  # writeback started up to here

    def absorb(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise _not_written(exc) from exc
        self.size += len(chunk)
        if self.size - self.written_back >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.written_back, self.size - self.written_back)
            self.written_back = self.size

    def finish(self, durable: bool) -> tuple[str, float]:
        """The sha256 and how long the fsync took."""
        t0 = time.monotonic()
        if durable:
            try:
                os.fsync(self.fd)
            except OSError as exc:
                raise _not_written(exc) from exc
        return self.digest.hexdigest(), time.monotonic() - t0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
