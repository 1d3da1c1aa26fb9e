"""Dedicated and shared host CPUs (Nova's ``cpu_dedicated_set`` and
``cpu_shared_set``): pure functions, no libvirt calls.

A Host's ``spec.cpuDedicatedSet`` names the host CPUs kept for pinned guests:
they are the provider's PCPU inventory, the others its VCPU inventory.  A
guest of a Flavor with ``cpuPolicy: dedicated`` gets each vCPU pinned to a
dedicated CPU of its own (``<vcpupin>``), chosen here among those no other
domain of the host is pinned to; its emulator threads run on the shared CPUs
(``<emulatorpin>``).  Shared guests float over the shared CPUs only
(``<vcpu cpuset>``), so they never run on a dedicated one.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

from kova.crds.common import CPUSET

_CPUSET = re.compile(CPUSET)


def parse_cpuset(text: str) -> frozenset[int]:
    """``"0-2,5"`` -> {0, 1, 2, 5}; ValueError for anything else."""
    if not _CPUSET.match(text or ""):
        raise ValueError(f"not a CPU list: {text!r} (expected e.g. 2-5,8)")
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first:
            raise ValueError(f"not a CPU list: {text!r} ({part} runs backwards)")
        out.update(range(first, last + 1))
    return frozenset(out)


def format_cpuset(cpus: set[int] | frozenset[int]) -> str:
    """{0, 1, 2, 5} -> ``"0-2,5"``."""
    parts: list[str] = []
    run: list[int] = []
    for cpu in sorted(cpus):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            parts.append(_run(run))
        run = [cpu]
    if run:
        parts.append(_run(run))
    return ",".join(parts)


def _run(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


@dataclasses.dataclass(frozen=True)
class CpuLayout:
    """The host's CPUs split into dedicated (PCPU) and shared (VCPU) ones."""

    dedicated: frozenset[int] = frozenset()
    shared: frozenset[int] = frozenset()
    #: CPUs of the Host field the host does not have (ignored, logged).
    missing: frozenset[int] = frozenset()

    @property
    def shared_cpuset(self) -> str | None:
        """libvirt cpuset of the shared CPUs, None when nothing is dedicated
        (then guests float over every CPU, as without the setting)."""
        return format_cpuset(self.shared) if self.dedicated and self.shared else None


def layout(host_cpus: int, dedicated_set: str | None) -> CpuLayout:
    """The split of ``host_cpus`` CPUs (0..n-1) for the Host's
    ``cpuDedicatedSet`` (None or empty: nothing dedicated)."""
    every = frozenset(range(max(host_cpus, 0)))
    if not dedicated_set:
        return CpuLayout(shared=every)
    wanted = parse_cpuset(dedicated_set)
    return CpuLayout(dedicated=wanted & every, shared=every - wanted,
                     missing=wanted - every)


def pinned_cpus(domain_xml: str) -> set[int]:
    """The host CPUs a domain's vCPUs are pinned to (``<cputune><vcpupin>``)."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError:
        return set()
    out: set[int] = set()
    for pin in root.findall("cputune/vcpupin"):
        try:
            out |= parse_cpuset(pin.get("cpuset", ""))
        except ValueError:
            continue
    return out


def choose_pcpus(dedicated: frozenset[int], in_use: set[int], vcpus: int) -> tuple[int, ...]:
    """One free dedicated CPU per vCPU (lowest first); ValueError when fewer
    than ``vcpus`` are free."""
    free = sorted(dedicated - in_use)
    if len(free) < vcpus:
        raise ValueError(
            f"{vcpus} dedicated CPU(s) needed, {len(free)} free of the host's "
            f"cpuDedicatedSet {format_cpuset(dedicated) or '(empty)'}")
    return tuple(free[:vcpus])
