"""Helpers for the compute agent tests."""

from __future__ import annotations

import uuid

import pytest

from kova.agents.domain import DomainMetadata, DomainSpec


@pytest.fixture
def make_spec(tmp_path):
    """A DomainSpec factory with unique uid/name per call."""

    def make(**kw) -> DomainSpec:
        uid = kw.pop("uid", str(uuid.uuid4()))
        name = kw.pop("name", f"vm-{uid[:8]}")
        namespace = kw.pop("namespace", "ns")
        meta = kw.pop("meta", None) or DomainMetadata(
            uid=uid, namespace=namespace, name=name, host="h1", image="img", generation=1
        )
        defaults = dict(
            vcpus=1,
            memory_mib=128,
            disk_path=str(tmp_path / meta.uid / "disk.qcow2"),
            console_log=str(tmp_path / meta.uid / "console.log"),
            seed_path=str(tmp_path / meta.uid / "seed.iso"),
        )
        defaults.update(kw)
        return DomainSpec(meta=meta, **defaults)

    return make


@pytest.fixture
def libvirt_conn(request):
    """A test:///default connection: the shared fixture when it exists."""
    try:
        yield request.getfixturevalue("libvirt_test_conn")
        return
    except pytest.FixtureLookupError:
        pass
    import libvirt

    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()
