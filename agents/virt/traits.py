"""Placement traits and inventory of a host, from what libvirt reports.

Pure functions: :func:`host_traits` maps libvirt CPU feature names onto
os-traits names (``HW_CPU_X86_*``) and adds the ``COMPUTE_*`` capabilities
this driver offers (``COMPUTE_FIRMWARE_UEFI`` where libvirt offers an EFI
firmware); :func:`inventory` turns capacity plus the Host's
allocation ratios and reserved amounts into a Placement inventory.
"""

from __future__ import annotations

import os_traits

from kova.agents.virt.driver import HostInfo

_ALL = frozenset(os_traits.get_traits())

#: libvirt feature names whose os-traits name is not the plain upper-case form.
CPU_FEATURE_ALIASES = {
    "pclmuldq": "HW_CPU_X86_CLMUL",
    "pclmulqdq": "HW_CPU_X86_CLMUL",
    "fma": "HW_CPU_X86_FMA3",
    "sse4.1": "HW_CPU_X86_SSE41",
    "sse4.2": "HW_CPU_X86_SSE42",
    "sse4a": "HW_CPU_X86_SSE4A",
    "avx512-vpopcntdq": "HW_CPU_X86_AVX512VPOPCNTDQ",
    "avx512vnni": "HW_CPU_X86_AVX512VNNI",
    "avx512-vnni": "HW_CPU_X86_AVX512VNNI",
    "avx512-bf16": "HW_CPU_X86_AVX512BF16" if "HW_CPU_X86_AVX512BF16" in _ALL else "",
    "vaes": "HW_CPU_X86_AVX512VAES",
    "gfni": "HW_CPU_X86_AVX512GFNI",
    "vpclmulqdq": "HW_CPU_X86_AVX512VPCLMULQDQ",
    "amd-sev": "HW_CPU_X86_AMD_SEV",
    "svm": "HW_CPU_X86_SVM",
    "vmx": "HW_CPU_X86_VMX",
    "3dnow": "HW_CPU_X86_3DNOW",
}

ARCH_TRAITS = {
    "x86_64": ("HW_ARCH_X86_64", "COMPUTE_ARCH_X86_64"),
    "aarch64": ("HW_ARCH_AARCH64", "COMPUTE_ARCH_AARCH64"),
}

#: What this driver supports whatever the hardware (see kova.agents.virt.domain).
DRIVER_TRAITS = (
    "COMPUTE_NODE",
    "COMPUTE_IMAGE_TYPE_QCOW2",
    "COMPUTE_IMAGE_TYPE_RAW",
    "COMPUTE_STORAGE_BUS_VIRTIO",
    "COMPUTE_STORAGE_BUS_IDE",
    "COMPUTE_STORAGE_BUS_SATA",
    "COMPUTE_STORAGE_BUS_SCSI",
    "COMPUTE_NET_VIF_MODEL_VIRTIO",
    "COMPUTE_NET_VIF_MODEL_E1000",
    "COMPUTE_NET_VIF_MODEL_RTL8139",
    "COMPUTE_GRAPHICS_MODEL_NONE",
)

#: Traits of the firmware libvirt offers guests (HostInfo.firmwares).
FIRMWARE_TRAITS = {"bios": "COMPUTE_FIRMWARE_BIOS", "uefi": "COMPUTE_FIRMWARE_UEFI"}


def cpu_traits(arch: str, features: tuple[str, ...] | list[str]) -> set[str]:
    out: set[str] = set()
    if arch not in ("x86_64", "i686"):
        return out
    for feature in features:
        name = CPU_FEATURE_ALIASES.get(feature.lower())
        if name is None:
            name = "HW_CPU_X86_" + feature.upper().replace(".", "").replace("-", "_")
        if name and name in _ALL:
            out.add(name)
    return out


def host_traits(
    info: HostInfo,
    *,
    domain_type: str = "qemu",
    custom: list[str] | None = None,
) -> list[str]:
    """The traits the agent manages for its provider (the operator owns
    COMPUTE_STATUS_DISABLED; see :func:`merge_traits`)."""
    traits = set(cpu_traits(info.arch, info.cpu_features))
    traits.update(t for t in ARCH_TRAITS.get(info.arch, ()) if t in _ALL)
    traits.update(t for t in DRIVER_TRAITS if t in _ALL)
    traits.update(FIRMWARE_TRAITS[f] for f in info.firmwares if f in FIRMWARE_TRAITS)
    for t in custom or []:
        if t.startswith("CUSTOM_"):
            traits.add(t)
    return sorted(traits)


def merge_traits(wanted: list[str], current: list[str], keep: tuple[str, ...]) -> list[str]:
    """The agent's traits plus those in ``keep`` that the provider has now
    (traits other components own, e.g. COMPUTE_STATUS_DISABLED)."""
    return sorted(set(wanted) | {t for t in current if t in keep})


def inventory(
    *,
    vcpus: int,
    memory_mib: int,
    disk_gib: int,
    ratios: dict | None = None,
    reserved: dict | None = None,
    extra: dict | None = None,
    pcpus: int = 0,
) -> dict[str, dict]:
    """The Placement inventory of a host.  ``ratios``, ``reserved`` and
    ``extra`` are the Host spec's ``allocationRatios``, ``reserved`` and
    ``extraResources`` (camelCase keys): each ``CUSTOM_*`` class of
    ``extra`` is added with its total, reserved amount and ratio.  ``pcpus``
    of the ``vcpus`` host CPUs are dedicated: PCPU (never overcommitted),
    the rest VCPU."""
    ratios = ratios or {}
    reserved = reserved or {}

    def entry(total: int, res: int, ratio: float) -> dict:
        total = max(int(total), 1)
        return {
            "total": total,
            "reserved": min(max(int(res), 0), total),
            "min_unit": 1,
            "max_unit": total,
            "step_size": 1,
            "allocation_ratio": float(ratio),
        }

    inv = {
        "VCPU": entry(vcpus - pcpus, reserved.get("vcpus", 0), ratios.get("vcpu", 4.0)),
        "MEMORY_MB": entry(memory_mib, reserved.get("memoryMiB", 512), ratios.get("memory", 1.0)),
        "DISK_GB": entry(disk_gib, reserved.get("diskGiB", 0), ratios.get("disk", 1.0)),
    }
    if pcpus > 0:
        inv["PCPU"] = entry(pcpus, 0, 1.0)
        if vcpus - pcpus < 1:
            del inv["VCPU"]  # every CPU is dedicated
    for rc, amounts in sorted((extra or {}).items()):
        if rc.startswith("CUSTOM_") and int(amounts.get("total") or 0) >= 1:
            inv[rc] = entry(amounts["total"], amounts.get("reserved", 0),
                            amounts.get("allocationRatio", 1.0))
    return inv
