"""User data sealed for one host (kova.sealing)."""

from __future__ import annotations

import stat

import pytest

from kova import sealing


def test_opens_on_its_host_for_its_instance_only(tmp_path) -> None:
    key = sealing.load_or_create(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    again = sealing.load_or_create(tmp_path / "k")  # the same key after a restart
    assert sealing.public_text(again) == sealing.public_text(key)
    other = sealing.load_or_create(tmp_path / "other")
    aad = sealing.context("ns", "vm", "uid-1", "h1")
    box = sealing.seal(sealing.public_text(key), b"#cloud-config\nsecret: 1\n", aad)
    assert b"secret" not in box.encode()
    assert sealing.unseal(key, box, aad) == b"#cloud-config\nsecret: 1\n"
    with pytest.raises(sealing.SealError):
        sealing.unseal(other, box, aad)  # another host's agent
    with pytest.raises(sealing.SealError):
        sealing.unseal(key, box, sealing.context("ns", "vm2", "uid-2", "h1"))  # moved
    tampered = box[:-4] + ("AAAA" if box[-4:] != "AAAA" else "BBBB")
    with pytest.raises(sealing.SealError):
        sealing.unseal(key, tampered, aad)
    assert len(sealing.key_id(sealing.public_text(key))) == 16
