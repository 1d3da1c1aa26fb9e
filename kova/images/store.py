"""The image store's files: one directory per Image under the store's root.

::

    <root>/<name>/image.qcow2 | image.raw   the verified file
    <root>/<name>/meta.json                 name, format, sizes, sha256, original format
    <root>/.uploads/<random>/               an upload in progress
    <root>/.namespaces/<namespace>/<name>/  a TenantImage's files, as above

An upload is written to ``.uploads/`` while its sha256 is computed, in one
pass over the bytes (the pieces hashed and written in batches of about
1 MiB on a thread of their own while the event loop decrypts the next ones;
the disk's writeback starts as the file grows, and one fsync at the end
makes it durable), with a size limit; a
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
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

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
#: At most this many bytes of an upload wait to be hashed and written.
PENDING_BYTES = 8 << 20
#: Pieces are handed to the writing thread in batches of this many bytes.
BATCH_BYTES = 1 << 20
#: ... or of this many pieces (``writev`` takes at most IOV_MAX, 1024 on Linux).
BATCH_PIECES = 256


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

        One pass over the bytes, on two threads: the event loop reads and
        decrypts the body and hands its pieces over in batches of about
        ``BATCH_BYTES``; a thread of its own (:class:`_Sink`) hashes and
        writes them, with the disk's writeback started as the file grows, so
        the sha256 and the copy into the page cache run beside the TLS
        decryption on a second core.  ``durable``: one fsync at the end, in a
        thread.  (Handing each piece of 256 KiB over on its own passed the
        GIL back and forth more often and cost more CPU time; measured:
        docs/benchmarks.md, "Image upload".)"""
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
                await sink.absorb(chunk)
            await sink.flush()
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


class _Sink:
    """A file written and hashed in one pass, on a thread of its own.

    The event loop hands the pieces over (:meth:`absorb`), in batches of
    about ``BATCH_BYTES``, and goes back to decrypting the next ones while
    this thread hashes and writes them: ``hashlib``'s update and
    ``os.writev`` let go of the GIL, so on a machine with two cores the
    sha256 and the copy into the page cache run beside the TLS decryption.
    One thread takes the batches in order; at most ``max_pending`` bytes wait
    for it (the loop then waits before it reads more from the connection).
    The thread's first error (a full disk) is raised by the next
    :meth:`absorb` or by :meth:`finish`, as a StoreError; :meth:`close`
    stops the thread, dropping what was not written yet, and closes the
    file."""

    def __init__(self, path: Path, *, max_pending: int = PENDING_BYTES) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self.digest = hashlib.sha256()
        self.size = 0  # bytes written (this thread's count)
        self.written_back = 0  # writeback started up to here
        self.max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self._pieces: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()
        self._batch: list[bytes] = []  # pieces not handed over yet
        self._batch_bytes = 0
        self._lock = threading.Lock()
        self._pending = 0  # bytes handed over, not yet hashed and written
        self._room: asyncio.Event | None = None  # the loop waits for room on it
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._work, name="image-sink", daemon=True)
        self._thread.start()

    async def absorb(self, chunk: bytes) -> None:
        """Take ``chunk``; handed over with the pieces before it once they
        make ``BATCH_BYTES``; waits while ``max_pending`` bytes are ahead."""
        if self._error is not None:
            self._raise()
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        if self._batch_bytes >= BATCH_BYTES or len(self._batch) >= BATCH_PIECES:
            await self._hand_over()

    async def _hand_over(self) -> None:
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        with self._lock:
            self._pending += size
            room = None
            if self._pending > self.max_pending:
                room = self._room = asyncio.Event()
        self._pieces.put(batch)
        if room is not None:
            await room.wait()

    def _work(self) -> None:
        while (batch := self._pieces.get()) is not None:
            size = sum(map(len, batch))
            if not self._stop and self._error is None:  # else the rest is dropped
                try:
                    self._absorb(batch, size)
                except BaseException as exc:  # noqa: BLE001 -- raised in the loop
                    self._error = exc
            with self._lock:
                self._pending -= size
                room = self._room
                if room is not None and (self._pending <= self.max_pending // 2
                                         or self._error is not None):
                    self._room = None
                    self._loop.call_soon_threadsafe(room.set)

    def _absorb(self, batch: list[bytes], size: int) -> None:
        for piece in batch:
            self.digest.update(piece)
        done = os.writev(self.fd, batch)
        if done < size:  # a short write: the rest piece by piece
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                rest = rest[os.write(self.fd, rest):]
        self.size += size
        if self.size - self.written_back >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.written_back, self.size - self.written_back)
            self.written_back = self.size

    def _raise(self) -> NoReturn:
        exc = self._error
        assert exc is not None
        if not isinstance(exc, OSError):
            raise exc
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        raise StoreError(507 if full else 500, "InsufficientStorage" if full else "WriteFailed",
                         f"the store could not write the upload: {exc.strerror or exc}"
                         ) from exc

    async def flush(self) -> None:
        """Hand over the last pieces."""
        if self._batch:
            await self._hand_over()

    def finish(self, durable: bool) -> tuple[str, float]:
        """Once every piece is written: the sha256 and how long the fsync took
        (blocks: run it in a thread; after :meth:`flush`)."""
        self._pieces.put(None)
        self._thread.join()
        if self._error is not None:
            self._raise()
        t0 = time.monotonic()
        if durable:
            os.fsync(self.fd)
        return self.digest.hexdigest(), time.monotonic() - t0

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop = True
            self._pieces.put(None)
            self._thread.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
