"""The local libvirtd (``qemu:///system``) for development and tests.

``ensure_libvirtd()`` runs ``hack/start-libvirt.sh``: without systemd it
configures ``/etc/libvirt/qemu.conf`` (QEMU as root, no security driver),
creates the ``libvirt-qemu`` user and group, starts ``virtlogd`` and ``libvirtd``
when they are not running and waits until ``qemu:///system`` answers.
Guests must use software emulation (domain ``type='qemu'``): nested KVM hangs
on these machines.
"""

from __future__ import annotations

from kova.dev.paths import run_hack

QEMU_SYSTEM_URI = "qemu:///system"


def ensure_libvirtd() -> str:
    """Make sure libvirtd runs; return the connection URI (``qemu:///system``)."""
    run_hack("start-libvirt.sh")
    return QEMU_SYSTEM_URI
