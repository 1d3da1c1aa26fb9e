"""Is a disk image file safe to give a guest?  One answer for the compute
agent's cache and the image store.

A qcow2 (or vmdk) file can name other files that QEMU then opens on the
host: a backing file, an external data file (qcow2 v3), extents (vmdk), or
a ``json:`` pseudo-filename that opens any block driver.  A guest booted from
such an image reads (and may write) whatever the name points at -- a host
disk, ``/etc/shadow``, a device.  So an image is checked twice before use:

1. :func:`inspect_header` reads the file's header in Python, without running
   anything: the magic must agree with the declared format, and a qcow2 must
   have no backing file, no external data file (incompatible feature bit 2 or
   the data-file header extension) and no encryption;
2. :func:`qemu_img_info` runs ``qemu-img info`` with the format forced
   (``-f``; a file is never probed for its format) under an address-space and
   CPU-time limit (:mod:`kova.prlimit`), and :func:`check_info` refuses any
   backing file, data file, ``json:`` name or vmdk extent outside the file
   itself.

Every refusal is an :class:`UnsafeImage` whose message says what was found.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

from kova import prlimit

#: Formats a guest boots from.
BOOT_FORMATS = ("qcow2", "raw")

QCOW2_MAGIC = b"QFI\xfb"
#: Magic numbers of formats that can name other files; a file declared raw
#: that starts with one of them is refused (it was mislabelled).
MAGICS = {
    QCOW2_MAGIC: "qcow2",
    b"KDMV": "vmdk",
    b"# Disk DescriptorFile": "vmdk",
    b"QED\x00": "qed",
    b"vhdxfile": "vhdx",
    b"conectix": "vpc",
    b"<<< Oracle VM VirtualBox Disk Image >>>": "vdi",
}
#: qcow2 incompatible feature bit 2: the guest data lives in an external file.
QCOW2_EXTERNAL_DATA = 1 << 2
#: qcow2 header extension naming the external data file ("DATA").
QCOW2_EXT_DATA_FILE = 0x44415441
QEMU_IMG_TIMEOUT = 120.0


class UnsafeImage(Exception):
    """The file is not a usable image of its declared format; ``str()`` says why."""


def detect_magic(head: bytes) -> str | None:
    """The format whose magic ``head`` starts with, if any."""
    for magic, fmt in MAGICS.items():
        if head.startswith(magic):
            return fmt
    return None


def qcow2_virtual_size(path: Path | str) -> int:
    """The virtual size a qcow2 file's header records (0 if unreadable or
    not qcow2)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return 0
    if len(head) < 32 or not head.startswith(QCOW2_MAGIC):
        return 0
    return int(struct.unpack_from(">Q", head, 24)[0])


def inspect_header(path: Path | str, fmt: str) -> None:
    """Refuse a file whose header disagrees with ``fmt`` or names another file."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    found = detect_magic(head)
    if fmt == "raw":
        if found is not None:
            raise UnsafeImage(f"the file is declared raw but is a {found} image")
        return
    if fmt != "qcow2":
        if found != fmt:
            raise UnsafeImage(f"the file is declared {fmt} but is {found or 'not a known format'}")
        return
    if found != "qcow2":
        raise UnsafeImage(f"the file is declared qcow2 but is {found or 'not a qcow2 image'}")
    _check_qcow2_header(head)


def _check_qcow2_header(head: bytes) -> None:
    if len(head) < 72:
        raise UnsafeImage("the qcow2 header is truncated")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    crypt_method = struct.unpack_from(">I", head, 32)[0]
    if backing_offset or backing_size:
        raise UnsafeImage("the qcow2 image names a backing file")
    if crypt_method:
        raise UnsafeImage("the qcow2 image is encrypted")
    if version < 3:
        return
    if len(head) < 104:
        raise UnsafeImage("the qcow2 v3 header is truncated")
    incompatible = struct.unpack_from(">Q", head, 72)[0]
    if incompatible & QCOW2_EXTERNAL_DATA:
        raise UnsafeImage("the qcow2 image keeps its data in an external data file")
    header_length = struct.unpack_from(">I", head, 100)[0]
    offset = header_length
    while offset + 8 <= len(head):
        ext_type, ext_len = struct.unpack_from(">II", head, offset)
        if ext_type == 0:
            break
        if ext_type == QCOW2_EXT_DATA_FILE:
            raise UnsafeImage("the qcow2 image names an external data file")
        offset += 8 + ((ext_len + 7) & ~7)


def qemu_img_info(path: Path | str, fmt: str, *, timeout: float = QEMU_IMG_TIMEOUT) -> dict:
    """``qemu-img info`` of ``path`` read as ``fmt`` (never probed), run under
    :mod:`kova.prlimit`'s limits; UnsafeImage when qemu-img cannot read it."""
    argv = prlimit.command(["qemu-img", "info", "-f", fmt, "--output=json", "-U", str(path)])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UnsafeImage(f"qemu-img info did not finish in {timeout:.0f}s") from None
    if proc.returncode != 0:
        why = proc.stderr.strip() or proc.stdout.strip()
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode} (over its CPU or memory limit) {why}"
        raise UnsafeImage(f"qemu-img cannot read it as {fmt}: {why.strip()}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise UnsafeImage("qemu-img info printed no JSON") from None


def check_info(info: dict, fmt: str, path: Path | str) -> None:
    """Refuse what ``qemu-img info`` shows of an external reference."""
    if info.get("format") != fmt:
        raise UnsafeImage(f"the file is declared {fmt} but qemu-img reads {info.get('format')}")
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    if backing:
        kind = "a json: pseudo-file" if str(backing).startswith("json:") else "a backing file"
        raise UnsafeImage(f"the image names {kind} ({backing})")
    if str(info.get("filename", "")).startswith("json:"):
        raise UnsafeImage("the image is opened through a json: pseudo-file")
    if info.get("encrypted"):
        raise UnsafeImage("the image is encrypted")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise UnsafeImage(f"the image keeps its data in an external data file "
                          f"({data['data-file']})")
    own = str(Path(path).resolve())
    for extent in data.get("extents") or ():
        name = extent.get("filename")
        if name and str(Path(name).resolve()) != own:
            raise UnsafeImage(f"the image has an extent in another file ({name})")


def verify(path: Path | str, fmt: str) -> dict:
    """Both checks; the ``qemu-img info`` of a safe file."""
    inspect_header(path, fmt)
    info = qemu_img_info(path, fmt)
    check_info(info, fmt, path)
    return info


def check_iso(path: Path) -> int:
    """The size of ``path`` if it is an ISO 9660 image (pycdlib reads its
    volume descriptors and directory tree); UnsafeImage otherwise.  A file
    that starts with the magic number of a disk format (a qcow2 or vmdk
    declared iso) is refused too."""
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    with open(path, "rb") as fh:
        magic = detect_magic(fh.read(64))
    if magic is not None:
        raise UnsafeImage(f"declared iso but is a {magic} image")
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except PyCdlibException as exc:
        raise UnsafeImage(f"not an ISO 9660 image ({exc})") from None
    except (OSError, ValueError, struct.error) as exc:
        raise UnsafeImage(f"not a readable ISO 9660 image ({exc})") from None
    iso.close()
    return path.stat().st_size
