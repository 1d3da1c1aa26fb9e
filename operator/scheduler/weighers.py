"""Scheduler weighers: in which order the surviving candidates are tried.

As in Nova, each weigher gives every host a raw value, the values are
normalised to 0..1 over the candidates (min-max), multiplied by the weigher's
multiplier and summed.  A positive RAM/CPU/disk multiplier spreads (most free
first), a negative one packs (least free first).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kova.crds.names import ServerGroupPolicy
from kova.operator.scheduler.filters import Candidate
from kova.operator.scheduler.request import RequestSpec


@dataclass
class WeighConfig:
    ram: float = 1.0
    cpu: float = 0.0
    disk: float = 0.0
    soft_affinity: float = 1.0
    soft_anti_affinity: float = 1.0
    build_failure: float = 1_000_000.0

    @classmethod
    def strategy(cls, name: str, **overrides: float) -> "WeighConfig":
        """``spread`` (default multipliers) or ``pack`` (RAM/CPU/disk negated)."""
        cfg = cls(**overrides)
        if name == "pack":
            cfg.ram, cfg.cpu, cfg.disk = -abs(cfg.ram), -abs(cfg.cpu), -abs(cfg.disk)
        elif name != "spread":
            raise ValueError(f"unknown weighing strategy {name!r} (spread or pack)")
        return cfg


class BuildFailures:
    """Recent build failures per host, forgotten after ``window`` seconds."""

    def __init__(self, window: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self.clock = clock
        self._events: dict[str, list[float]] = {}

    def record(self, host: str) -> None:
        self._events.setdefault(host, []).append(self.clock())

    def __bool__(self) -> bool:
        return bool(self._events)

    def forget(self, host: str) -> None:
        """Host ``host`` was deleted."""
        self._events.pop(host, None)

    def count(self, host: str) -> int:
        if host not in self._events:
            return 0
        now = self.clock()
        events = [t for t in self._events.get(host, ()) if now - t < self.window]
        if events:
            self._events[host] = events
        else:
            self._events.pop(host, None)
        return len(events)


@dataclass
class WeighContext:
    failures: BuildFailures = field(default_factory=BuildFailures)


RawFn = Callable[[Candidate, RequestSpec, WeighContext], float]


def ram_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    return float(c.free("MEMORY_MB"))


def cpu_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    rc = "PCPU" if "PCPU" in req.resources else "VCPU"
    return float(c.free(rc))


def disk_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    return float(c.free("DISK_GB"))


def soft_affinity_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    sg = req.server_group
    if sg is None or sg.policy != ServerGroupPolicy.SOFT_AFFINITY:
        return 0.0
    return float(sg.member_hosts.get(c.name, 0))


def soft_anti_affinity_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    sg = req.server_group
    if sg is None or sg.policy != ServerGroupPolicy.SOFT_ANTI_AFFINITY:
        return 0.0
    return -float(sg.member_hosts.get(c.name, 0))


def build_failure_raw(c: Candidate, req: RequestSpec, ctx: WeighContext) -> float:
    return -float(ctx.failures.count(c.name))


#: name -> (raw value function, multiplier attribute of WeighConfig)
WEIGHERS: dict[str, tuple[RawFn, str]] = {
    "RAM": (ram_raw, "ram"),
    "CPU": (cpu_raw, "cpu"),
    "Disk": (disk_raw, "disk"),
    "SoftAffinity": (soft_affinity_raw, "soft_affinity"),
    "SoftAntiAffinity": (soft_anti_affinity_raw, "soft_anti_affinity"),
    "BuildFailure": (build_failure_raw, "build_failure"),
}


def normalize(values: Sequence[float]) -> list[float]:
    """Min-max to 0..1; all equal -> all 0 (the weigher has no opinion)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [0.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def weigh(
    candidates: Sequence[Candidate], req: RequestSpec, cfg: WeighConfig,
    ctx: WeighContext | None = None,
) -> list[tuple[float, Candidate]]:
    """``(weight, candidate)`` pairs, best first (ties in random order)."""
    ctx = ctx or WeighContext()
    totals = [0.0] * len(candidates)
    sg = req.server_group
    for name, (fn, attr) in WEIGHERS.items():
        mult = getattr(cfg, attr)
        if not mult:
            continue
        # Weighers that give every host the same value change nothing.
        if name == "BuildFailure" and not ctx.failures:
            continue
        if name in ("SoftAffinity", "SoftAntiAffinity") and (
                sg is None or sg.policy != (
                    ServerGroupPolicy.SOFT_AFFINITY if name == "SoftAffinity"
                    else ServerGroupPolicy.SOFT_ANTI_AFFINITY)):
            continue
        for i, v in enumerate(normalize([fn(c, req, ctx) for c in candidates])):
            totals[i] += mult * v
    # Ties are broken at random, so concurrent decisions over equal hosts
    # spread instead of all racing for Placement's first candidate.
    jitter = [random.random() for _ in candidates]
    order = sorted(range(len(candidates)), key=lambda i: (-totals[i], jitter[i]))
    return [(totals[i], candidates[i]) for i in order]


def order_candidates(
    weighed: Sequence[tuple[float, Candidate]], preferred: Sequence[str] = ()
) -> list[Candidate]:
    """Preferred hosts (the previous alternates, in their order) first, then by
    weight."""
    rank = {h: i for i, h in enumerate(preferred)}
    first = sorted((c for _, c in weighed if c.name in rank), key=lambda c: rank[c.name])
    rest = [c for _, c in weighed if c.name not in rank]
    return first + rest
