"""The local libvirtd (``qemu:///system``) for development and tests.

``ensure_libvirtd()`` runs ``hack/start-libvirt.sh``: without systemd it
configures ``/etc/libvirt/qemu.conf`` (QEMU as root, no security driver),
creates the ``libvirt-qemu`` user and group, starts ``virtlogd`` and ``libvirtd``
when they are not running and waits until ``qemu:///system`` answers.
Guests must use software emulation (domain ``type='qemu'``): nested KVM hangs
on these machines.
"""

from __future__ import annotations

import subprocess

from kova.dev.paths import hack_dir

QEMU_SYSTEM_URI = "qemu:///system"


def ensure_libvirtd() -> str:
    """Make sure libvirtd runs; return the connection URI (``qemu:///system``)."""
    script = hack_dir() / "start-libvirt.sh"
    proc = subprocess.run(
        ["bash", str(script)], check=False, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{script} failed with exit code {proc.returncode}:\n{proc.stderr}{proc.stdout}"
        )
    return QEMU_SYSTEM_URI
