"""A replica that becomes the leader adopts the drains' moves under way at
once, from the informer's cache (kova.operator.host.drain.DrainController.
new_term); the change of leader against the API server:
tests/integration/operator/test_drain.py."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kova.crds import names
from kova.operator.host.drain import DrainController


class Cache:
    def __init__(self, hosts: dict[str, dict], instances: dict[tuple, dict]) -> None:
        self.hosts, self.objs = hosts, instances
        self.synced = asyncio.Event()

    def host_names(self) -> list[str]:
        return list(self.hosts)

    def host(self, name: str) -> dict | None:
        return self.hosts.get(name)

    def instances(self):
        return self.objs.items()


def _moving(source: str, req: str, step: str = "Migrated") -> dict:
    return {"metadata": {"name": "vm"}, "status": {"host": source, "migration": {
        "sourceHost": source, "requestId": req, "mode": "live", "step": step}}}


def test_new_term_adopts_the_moves_off_draining_hosts_only_once_synced() -> None:
    cache = Cache(
        {"a": {"metadata": {"name": "a"}, "spec": {"drain": True},
               "status": {"drain": {"startTime": "2026-01-01T00:00:00Z", "moved": 1}}},
         "b": {"metadata": {"name": "b"}, "spec": {}}},
        {("ns", "vm1"): _moving("a", f"{names.DRAIN_REQUEST_PREFIX}1"),
         ("ns", "vm2"): _moving("a", "req-2"),  # a user's migration: not the drain's
         ("ns", "vm3"): _moving("b", f"{names.DRAIN_REQUEST_PREFIX}3")})
    drains = DrainController(SimpleNamespace(informer=cache), records=None)  # type: ignore[arg-type]
    drains.new_term()
    assert drains.states == {}  # the cache not complete yet: the first tick adopts
    cache.synced.set()
    drains.new_term()
    assert list(drains.states) == ["a"]
    state = drains.states["a"]
    assert {k: a.req for k, a in state.attempts.items()} == {
        ("ns", "vm1"): f"{names.DRAIN_REQUEST_PREFIX}1"}
    assert state.moved == 1 and state.attempts[("ns", "vm1")].live


def test_a_tick_looks_only_at_the_hosts_draining_or_ending_a_drain() -> None:
    """``tick_all`` walks the Hosts whose events said drain (spec) or a drain
    status left to clear, not every Host in the cache."""
    hosts = {f"h{i}": {"metadata": {"name": f"h{i}"}, "spec": {}} for i in range(1000)}
    hosts["h7"] = {"metadata": {"name": "h7"}, "spec": {"drain": True}}
    hosts["h9"] = {"metadata": {"name": "h9"}, "spec": {},
                   "status": {"drain": {"phase": "Drained"}}}
    cache = Cache(hosts, {})
    drains = DrainController(SimpleNamespace(informer=cache), records=None)  # type: ignore[arg-type]
    for name, body in hosts.items():
        drains.host_changed(name, body, False)
    assert drains.draining == {"h7", "h9"}
    seen: list[tuple[str, str]] = []

    async def tick(name: str, host: dict) -> None:
        seen.append(("tick", name))

    async def end(name: str, host: dict) -> None:
        seen.append(("end", name))

    drains.tick, drains.end = tick, end  # type: ignore[method-assign]
    looked: list[str] = []
    cache.host = lambda name: looked.append(name) or hosts.get(name)  # type: ignore[method-assign]
    asyncio.run(drains.tick_all())
    assert seen == [("tick", "h7"), ("end", "h9")] and sorted(looked) == ["h7", "h9"]

    # the drain ended and its status cleared: the host leaves the set
    hosts["h9"] = {"metadata": {"name": "h9"}, "spec": {}, "status": {}}
    drains.host_changed("h9", hosts["h9"], False)
    drains.host_changed("h7", hosts["h7"], True)
    assert drains.draining == set()
