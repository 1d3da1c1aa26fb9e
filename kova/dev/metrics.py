"""Reading a Kova process's Prometheus ``/metrics`` page, for the benchmarks
and the fault tests."""

from __future__ import annotations

import httpx


def scrape(url: str, missing_ok: bool = False) -> dict[str, float]:
    """Prometheus text -> {series (name with labels): value}; ``{}`` if
    ``missing_ok`` and the process does not answer (yet)."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(url, timeout=10).text
    except httpx.TransportError:
        if missing_ok:
            return out
        raise
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out
