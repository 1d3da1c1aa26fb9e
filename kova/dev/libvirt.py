"""The local libvirtd (``qemu:///system``) for development and tests.

``ensure_libvirtd()`` runs ``hack/start-libvirt.sh``: without systemd it
configures ``/etc/libvirt/qemu.conf`` (QEMU as root, no security driver),
creates the ``libvirt-qemu`` user and group, starts ``virtlogd`` and ``libvirtd``
when they are not running and waits until ``qemu:///system`` answers.
Guests must use software emulation (domain ``type='qemu'``): nested KVM hangs
on these machines.

``ensure_test_network()`` runs ``hack/start-libvirt-network.sh``: defines (once)
and starts the NAT network ``kova-test`` (bridge ``kovabr0``, a free
192.168.X.0/24 with libvirt's dnsmasq handing out DHCP leases) and returns its
name, for the agent's ``--network``.  Read its subnet from the network's XML.
"""

from __future__ import annotations

from kova.dev.paths import run_hack

QEMU_SYSTEM_URI = "qemu:///system"


def ensure_libvirtd() -> str:
    """Make sure libvirtd runs; return the connection URI (``qemu:///system``)."""
    run_hack("start-libvirt.sh")
    return QEMU_SYSTEM_URI


def ensure_test_network() -> str:
    """Make sure the libvirt NAT network for guests with an address runs on
    ``qemu:///system``; return its name (``kova-test`` unless
    ``KOVA_TEST_NETWORK`` says otherwise)."""
    return run_hack("start-libvirt-network.sh")
