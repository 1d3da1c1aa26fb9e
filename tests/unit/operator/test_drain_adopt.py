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
