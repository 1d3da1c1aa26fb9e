"""NoCloud seed images for cloud-init (and for Kova's test image).

A NoCloud seed is an ISO 9660 file system whose volume label is ``cidata`` and
whose root holds ``meta-data``, ``user-data`` and optionally
``network-config``.  cloud-init finds it by that label; Kova's test image reads
the label itself at byte 32808 of the device.  The ISO is written with pycdlib
(pure Python: no xorriso/genisoimage needed on the host) with Rock Ridge and
Joliet names, so Linux and Windows guests both see the lower-case file names.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

SEED_LABEL = "cidata"

#: NoCloud file name -> ISO 9660 level-1 name (8.3, upper case, no '-').
_ISO_NAMES = {
    "meta-data": "/METADATA.;1",
    "user-data": "/USERDATA.;1",
    "network-config": "/NETWORKC.;1",
    "vendor-data": "/VENDORDA.;1",
}


def nocloud_files(
    meta_data: str, user_data: str, network_config: str | None = None
) -> dict[str, bytes]:
    """The files of a NoCloud seed, by name."""
    files = {"meta-data": meta_data.encode(), "user-data": user_data.encode()}
    if network_config is not None:
        files["network-config"] = network_config.encode()
    return files


def write_nocloud_seed(
    path: str | os.PathLike[str],
    meta_data: str,
    user_data: str,
    network_config: str | None = None,
) -> Path:
    """Write a NoCloud seed ISO (label ``cidata``) to ``path``; return the path.

    The file is written next to ``path`` and renamed into place, so a reader
    never sees a half-written seed; its mode is 0600 (it holds the user
    data).
    """
    import pycdlib

    path = Path(path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        for name, data in nocloud_files(meta_data, user_data, network_config).items():
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                _ISO_NAMES[name],
                rr_name=name,
                joliet_path="/" + name,
            )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            # 0600: the seed holds the user data (libvirt's DAC driver gives
            # it to QEMU's user at start)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                iso.write_fp(fh)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        iso.close()
    return path


def read_nocloud_seed(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The NoCloud files in seed ISO ``path`` (by their Rock Ridge names)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        files: dict[str, bytes] = {}
        for name in _ISO_NAMES:
            out = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(out, rr_path="/" + name)
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                continue
            files[name] = out.getvalue()
        return files
    finally:
        iso.close()
