"""The host monitor's heartbeat state and expiry timer, on a cache filled by
hand (times given explicitly): a Lease makes its host Up until its deadline,
a renewal moves the deadline without a second timer entry, ``expire`` marks
Down exactly the hosts whose deadline passed, and the work it queues is one
key per host however many events came."""

from __future__ import annotations

import datetime as dt

from kova.operator.host.monitor import HostMonitor
from tests.unit.operator.test_memory import context, host, informer_with

T0 = 1_800_000_000.0


def lease(renewed: float, duration: int = 10) -> dict:
    stamp = dt.datetime.fromtimestamp(renewed, dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"name": "x"},
            "spec": {"renewTime": stamp, "leaseDurationSeconds": duration}}


def monitor_with(*names: str) -> HostMonitor:
    return HostMonitor(context(informer_with(*(host(n, rp=f"rp-{n}") for n in names))))


def hstate_keys(m: HostMonitor) -> list:
    keys = []
    while True:
        found, key = m.queue._keys.pop()
        if not found:
            return keys
        keys.append(key)
        m.queue._keys.done(key)


async def test_a_lease_makes_its_host_up_until_its_deadline():
    m = monitor_with("h1", "h2")
    m.view.leases["h1"] = lease(T0, 10)
    assert m.evaluate("h1", T0 + 1) and m.view.alive["h1"]
    assert m.evaluate("h2", T0 + 1) is True and m.view.alive["h2"] is False  # no Lease
    assert m.expire(T0 + 9.5) == 0  # not yet due
    assert m.view.alive["h1"]
    assert m.expire(T0 + 11) == 1
    assert m.view.alive["h1"] is False and m.view.is_down("h1")
    assert m.counts() == {"Up": 0, "Down": 2}
    m.ctx.queue.shutdown()


async def test_renewals_move_the_deadline_with_one_timer_entry_per_host():
    m = monitor_with("h1")
    for i in range(100):  # a renewal every second
        m.lease_changed("h1", lease(T0 + i, 10), deleted=False)
    assert len(m._heap) == 1  # the first deadline, moved on when it comes
    assert m.expire(T0 + 50) == 0 and m.view.alive["h1"]
    assert len(m._heap) == 1 and m._heap[0][0] == T0 + 99 + 10
    assert m.expire(T0 + 110) == 1 and not m.view.alive["h1"]
    m.ctx.queue.shutdown()


async def test_a_shorter_lease_is_due_at_its_own_deadline():
    m = monitor_with("h1")
    m.lease_changed("h1", lease(T0, 3600), deleted=False)
    m.lease_changed("h1", lease(T0 + 1, 3), deleted=False)  # the last renewal
    assert m.expire(T0 + 3.5) == 0 and m.view.alive["h1"]
    assert m.expire(T0 + 4.5) == 1 and not m.view.alive["h1"]
    assert m.expire(T0 + 3601) == 0  # the old entry is skipped
    m.ctx.queue.shutdown()


async def test_a_mass_expiry_is_one_key_per_host():
    names = [f"h{i}" for i in range(500)]
    m = monitor_with(*names)
    for n in names:
        m.lease_changed(n, lease(T0, 5), deleted=False)
    hstate_keys(m)  # the Up ones
    for n in names:  # the same Leases seen again (a relist): nothing to do
        m.lease_changed(n, lease(T0, 5), deleted=False)
    assert hstate_keys(m) == []
    assert m.expire(T0 + 6) == 500
    assert sorted(hstate_keys(m)) == sorted(names)
    m.ctx.queue.shutdown()


async def test_no_expiry_while_blind_and_a_lease_period_after(monkeypatch):
    m = monitor_with("h1")
    m.lease_changed("h1", lease(T0, 10), deleted=False)
    m.lease_watch_health(False)  # the API server is unreachable
    m.lease_changed("h1", lease(T0, 10), deleted=False)  # relisted, not renewed
    assert m.view.alive["h1"]
    # renewals visible again at T0+60: one Lease period (10 s) from then
    monkeypatch.setattr("kova.operator.host.monitor.time.time", lambda: T0 + 60)
    m.lease_watch_health(True)
    monkeypatch.undo()
    assert m.view.alive["h1"]
    assert m.expire(T0 + 65) == 0
    assert m.expire(T0 + 71) == 1
    m.ctx.queue.shutdown()
