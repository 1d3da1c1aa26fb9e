"""Traits and inventory of a host (pure)."""

from __future__ import annotations

from kova.agents.virt import traits
from kova.agents.virt.driver import HostInfo


def _info(**kw) -> HostInfo:
    base = dict(hostname="h", arch="x86_64", cpus=8, memory_mib=16384, cpu_model="Skylake",
                cpu_vendor="Intel", cpu_features=(), hypervisor_type="QEMU",
                hypervisor_version="7.2.0", libvirt_version="9.0.0")
    base.update(kw)
    return HostInfo(**base)


def test_cpu_flags_to_os_traits():
    got = traits.cpu_traits("x86_64", ["avx2", "sse4.2", "sse4.1", "pclmuldq", "fma", "vmx",
                                       "aes", "not-a-flag", "ssse3"])
    assert {"HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "HW_CPU_X86_SSE41", "HW_CPU_X86_CLMUL",
            "HW_CPU_X86_FMA3", "HW_CPU_X86_VMX", "HW_CPU_X86_SSSE3"} <= got
    assert not any("NOT_A_FLAG" in t for t in got)


def test_non_x86_has_no_x86_cpu_traits():
    assert traits.cpu_traits("aarch64", ["avx2"]) == set()


def test_host_traits():
    t = traits.host_traits(_info(cpu_features=("avx", "sse2")), custom=["CUSTOM_SSD", "BOGUS"])
    assert "HW_ARCH_X86_64" in t and "COMPUTE_ARCH_X86_64" in t
    assert "HW_CPU_X86_AVX" in t and "HW_CPU_X86_SSE2" in t
    assert "CUSTOM_SSD" in t and "BOGUS" not in t
    assert "COMPUTE_STATUS_DISABLED" not in t
    assert t == sorted(t)


def test_merge_keeps_foreign_traits():
    got = traits.merge_traits(["A", "B"], ["COMPUTE_STATUS_DISABLED", "OLD"],
                              ("COMPUTE_STATUS_DISABLED",))
    assert got == ["A", "B", "COMPUTE_STATUS_DISABLED"]


def test_inventory_defaults():
    inv = traits.inventory(vcpus=8, memory_mib=16384, disk_gib=100)
    assert inv["VCPU"]["allocation_ratio"] == 4.0 and inv["VCPU"]["total"] == 8
    assert inv["MEMORY_MB"]["reserved"] == 512
    assert inv["DISK_GB"]["max_unit"] == 100


def test_inventory_ratios_and_reserved():
    inv = traits.inventory(
        vcpus=4, memory_mib=2048, disk_gib=10,
        ratios={"vcpu": 16.0, "memory": 1.5, "disk": 2.0},
        reserved={"vcpus": 1, "memoryMiB": 4096, "diskGiB": 2},
    )
    assert inv["VCPU"] == {"total": 4, "reserved": 1, "min_unit": 1, "max_unit": 4,
                           "step_size": 1, "allocation_ratio": 16.0}
    assert inv["MEMORY_MB"]["reserved"] == 2048  # clamped to total
    assert inv["DISK_GB"]["allocation_ratio"] == 2.0


def test_firmware_traits_follow_what_libvirt_offers():
    bios_only = traits.host_traits(_info())
    assert "COMPUTE_FIRMWARE_BIOS" in bios_only and "COMPUTE_FIRMWARE_UEFI" not in bios_only
    both = traits.host_traits(_info(firmwares=("bios", "uefi")))
    assert {"COMPUTE_FIRMWARE_BIOS", "COMPUTE_FIRMWARE_UEFI"} <= set(both)


def test_extra_resources_join_the_inventory():
    inv = traits.inventory(vcpus=4, memory_mib=4096, disk_gib=10,
                           extra={"CUSTOM_GPU": {"total": 2, "reserved": 1},
                                  "CUSTOM_FPGA": {"total": 4, "allocationRatio": 2.0}})
    assert inv["CUSTOM_GPU"]["total"] == 2 and inv["CUSTOM_GPU"]["reserved"] == 1
    assert inv["CUSTOM_FPGA"]["allocation_ratio"] == 2.0
    assert {"VCPU", "MEMORY_MB", "DISK_GB"} <= set(inv)


def test_dedicated_cpus_are_pcpu_inventory():
    inv = traits.inventory(vcpus=8, memory_mib=4096, disk_gib=10, pcpus=2)
    assert inv["PCPU"]["total"] == 2 and inv["PCPU"]["allocation_ratio"] == 1.0
    assert inv["VCPU"]["total"] == 6
    every = traits.inventory(vcpus=2, memory_mib=4096, disk_gib=10, pcpus=2)
    assert every["PCPU"]["total"] == 2 and "VCPU" not in every
    assert "PCPU" not in traits.inventory(vcpus=2, memory_mib=4096, disk_gib=10)
