"""Copies of a guest's disk that moves and snapshots make are private to
their owner (mode 0600), as the disk itself is: the checksummed copy a
destination receives, the flattened copy a source sends, the kept copy of a
resize and a live migration's destination disk (real qemu-img)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

from kova.agents.instance import disk_copy
from kova.agents.virt.images import private_file
from kova.agents.virt.migration import create_destination_disk


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _umask():
    old = os.umask(0o022)  # the usual umask: without care, files are 0644
    yield
    os.umask(old)


def test_private_file_replaces_a_world_readable_one(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"old")
    os.chmod(f, 0o644)
    assert private_file(f) == f
    assert _mode(f) == 0o600 and f.read_bytes() == b""


def test_received_disk_is_private(tmp_path: Path) -> None:
    data = b"guest data" * 1000

    async def chunks():
        yield data[:5000]
        yield data[5000:]

    dest = tmp_path / "inst" / "disk.qcow2"
    got = asyncio.run(disk_copy.receive(chunks(), dest, hashlib.sha256(data).hexdigest()))
    assert got.size == len(data)
    assert dest.read_bytes() == data and _mode(dest) == 0o600


def test_flattened_and_destination_disks_are_private(tmp_path: Path) -> None:
    src = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "16M"], check=True)
    os.chmod(src, 0o600)
    flat = disk_copy.flatten(src, tmp_path / "outgoing.qcow2")
    assert _mode(flat) == 0o600
    dest = tmp_path / "dest.qcow2"
    create_destination_disk(str(dest), 16 * 1024 * 1024)
    assert _mode(dest) == 0o600
