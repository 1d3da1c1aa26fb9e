"""NoCloud seed ISOs written by kova.agents.virt.seed, read back with pycdlib."""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib

from kova.agents.virt.seed import read_nocloud_seed, write_nocloud_seed

META = "instance-id: iid-1234\nlocal-hostname: vm-1\n"
USER = "#cloud-config\nruncmd:\n  - echo héllo\n"
NET = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def _get(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def test_seed_label_and_files(tmp_path: Path) -> None:
    seed = write_nocloud_seed(tmp_path / "seed.iso", META, USER)
    assert seed == tmp_path / "seed.iso"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]
    assert seed.stat().st_mode & 0o777 == 0o600  # holds the user data

    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_rock_ridge() and iso.has_joliet()
        assert _get(iso, rr_path="/meta-data") == META.encode()
        assert _get(iso, rr_path="/user-data") == USER.encode()
        assert _get(iso, joliet_path="/user-data") == USER.encode()
        names = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/") if c.rock_ridge}
        assert {"meta-data", "user-data"} <= names
        assert "network-config" not in names
    finally:
        iso.close()


def test_label_at_fixed_offset(tmp_path: Path) -> None:
    """What the test image's init reads: 'CD001' at 32769 and the label at 32808."""
    data = write_nocloud_seed(tmp_path / "s.iso", META, USER).read_bytes()
    assert data[32769:32774] == b"CD001"
    assert data[32808:32840].rstrip(b" ") == b"cidata"


def test_network_config_and_readback(tmp_path: Path) -> None:
    seed = write_nocloud_seed(tmp_path / "seed.iso", META, USER, network_config=NET)
    assert read_nocloud_seed(seed) == {
        "meta-data": META.encode(),
        "user-data": USER.encode(),
        "network-config": NET.encode(),
    }


def test_rewrite_replaces(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_nocloud_seed(path, META, "first")
    write_nocloud_seed(path, META, "second")
    assert read_nocloud_seed(path)["user-data"] == b"second"
