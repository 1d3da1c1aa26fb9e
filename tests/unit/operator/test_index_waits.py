"""kopf's wait for its indexes, shared (informer.share_index_waits): N
workers waiting while N objects are indexed are one waiter on kopf's
condition, not N (each notification walks every waiter of the condition,
and each waiter leaving removes itself from that list: N*N/2 steps each way),
and each still returns only once every index is full."""

from __future__ import annotations

import asyncio

import kopf

from kova.operator.informer import share_index_waits

ToggleSet = kopf._cogs.aiokits.aiotoggles.ToggleSet  # noqa: SLF001 (the class patched)


async def _index_at_start(n: int) -> tuple[int, list[bool]]:
    """kopf's start-up: ``n`` objects listed, each worker indexes its object
    (drops its toggle) then waits for every index; the listing's end is
    one more toggle, dropped last.  (the waiters on kopf's condition just
    before that, what each worker saw when it returned)"""
    ts = ToggleSet(all)
    listing = await ts.make_toggle(name="listing")
    toggles = [await ts.make_toggle(name=str(i)) for i in range(n)]
    seen: list[bool] = []

    async def worker(toggle) -> None:
        await ts.drop_toggle(toggle)
        await ts.wait_for(True)
        seen.append(ts.is_on())

    tasks = [asyncio.create_task(worker(t)) for t in toggles]
    while len(ts) > 1:
        await asyncio.sleep(0)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not seen  # nobody passes before the listing's end
    # asyncio.Condition keeps its waiting futures in ``_waiters``
    waiters = len(ts._condition._waiters)  # noqa: SLF001
    await ts.drop_toggle(listing)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    return waiters, seen


def test_index_waits_are_shared():
    share_index_waits()
    n = 2000
    waiters, seen = asyncio.run(_index_at_start(n))
    assert seen == [True] * n
    assert waiters == 1  # unshared: n


def test_share_index_waits_applies_once():
    share_index_waits()
    wait_for = ToggleSet.wait_for
    share_index_waits()
    assert ToggleSet.wait_for is wait_for
