"""Looking at the guests of the stack's simulated hosts (their private
libvirtd and QEMU processes), for the fault tests."""

from __future__ import annotations

from pathlib import Path

import libvirt

from kova.dev.stack import Stack


def _domains(uri: str) -> dict[str, bool]:
    """uuid -> active, of every domain on one host's libvirtd."""
    conn = libvirt.open(uri)
    try:
        out = {}
        for d in conn.listAllDomains(0):
            try:
                out[d.UUIDString()] = bool(d.isActive())
            except libvirt.libvirtError:
                continue  # undefined while we looked: gone
        return out
    finally:
        conn.close()


def _qemu_pid(stack: Stack, host: str, domain: str) -> int | None:
    path = stack.root / "libvirt" / host / "run" / "qemu" / f"{domain}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _destroy_all(uri: str) -> None:
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return
    try:
        for d in conn.listAllDomains(0):
            try:
                if d.isActive():
                    d.destroy()
                d.undefine()
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()
