"""Domain life cycle on libvirt's fake hypervisor (test:///default)."""

from __future__ import annotations

import uuid

import libvirt  # noqa: E402  (libvirt-python: the "libvirt" extra, always installed)
import pytest


def _domain_xml(name: str) -> str:
    return f"""
<domain type='test'>
  <name>{name}</name>
  <uuid>{uuid.uuid4()}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
</domain>"""


def test_define_start_destroy_undefine(libvirt_test_conn) -> None:
    conn = libvirt_test_conn
    name = f"kova-test-{uuid.uuid4().hex[:8]}"
    dom = conn.defineXML(_domain_xml(name))
    try:
        assert dom.name() == name
        assert not dom.isActive()
        assert name in conn.listDefinedDomains()

        dom.create()
        assert dom.isActive()
        state, _ = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        assert dom.info()[3] == 1  # vCPUs
        assert dom.maxMemory() == 256 * 1024

        dom.destroy()
        assert not dom.isActive()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(name)


def test_builtin_domain(libvirt_test_conn) -> None:
    # The fake driver's default state has its built-in running domain "test".
    dom = libvirt_test_conn.lookupByName("test")
    assert dom.isActive()
    assert libvirt_test_conn.getType() == "TEST"
