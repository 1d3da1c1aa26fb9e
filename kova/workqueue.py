"""The keyed, level-triggered work queue of Kova's controllers, as
controller-runtime's and client-go's:

* a key waits at most once, however often it is added;
* a key is never processed by two workers at a time: one added while it is
  being processed is processed again after :meth:`done`;
* ``add_after(key, delay)`` adds it later (back-off, polling); only the
  earliest pending delay of a key is kept, and an immediate ``add`` cancels it.

:class:`KeyQueue` is that state machine, with no locking and no clock of its
own; :class:`AsyncWorkQueue` (the operator's asyncio workers) and
:class:`WorkQueue` (the agent's threads) are its two fronts.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable


class KeyQueue:
    """The queue's state; every method is O(1) or O(log n).  Times are
    ``time.monotonic()`` seconds."""

    def __init__(self) -> None:
        self._ready: deque[Hashable] = deque()
        self._waiting: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._due: dict[Hashable, float] = {}
        self._timers: list[tuple[float, int, Hashable]] = []  # a heap; stale entries skipped
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Keys waiting to be processed (not the delayed ones)."""
        return len(self._waiting)

    def add(self, key: Hashable) -> bool:
        """Queue ``key`` now (and cancel its delay); True if it became ready."""
        self._due.pop(key, None)
        if key in self._processing:
            self._dirty.add(key)
            return False
        if key in self._waiting:
            return False
        self._waiting.add(key)
        self._ready.append(key)
        return True

    def add_after(self, key: Hashable, due: float) -> None:
        """Queue ``key`` at monotonic time ``due`` unless it is due earlier."""
        old = self._due.get(key)
        if old is not None and old <= due:
            return
        self._due[key] = due
        heapq.heappush(self._timers, (due, next(self._seq), key))

    def delayed(self, key: Hashable) -> bool:
        return key in self._due

    def next_due(self) -> float | None:
        """When the earliest delayed key is due (None: none is)."""
        while self._timers and self._due.get(self._timers[0][2]) != self._timers[0][0]:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def promote(self, now: float) -> int:
        """Queue the delayed keys due by ``now``; how many became ready."""
        ready = 0
        while (due := self.next_due()) is not None and due <= now:
            _, _, key = heapq.heappop(self._timers)
            ready += self.add(key)
        return ready

    def pop(self) -> tuple[bool, Hashable]:
        """``(True, key)`` with the next ready key, now processing; or
        ``(False, None)``."""
        if not self._ready:
            return False, None
        key = self._ready.popleft()
        self._waiting.discard(key)
        self._processing.add(key)
        return True, key

    def done(self, key: Hashable) -> bool:
        """``key`` was processed; True if it was added meanwhile and is ready again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            return self.add(key)
        return False

    def clear_delayed(self) -> None:
        self._due.clear()
        self._timers.clear()


class AsyncWorkQueue:
    """The queue for asyncio workers (one event loop)."""

    def __init__(self) -> None:
        self._keys = KeyQueue()
        self._getters: deque[asyncio.Future] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: Hashable) -> None:
        if self._keys.add(key):
            self._wake()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds unless added earlier."""
        if delay <= 0:
            self.add(key)
            return
        self._keys.add_after(key, time.monotonic() + delay)
        self._arm()

    def delayed(self, key: Hashable) -> bool:
        return self._keys.delayed(key)

    async def get(self) -> Hashable:
        """The next key (processing until :meth:`done`)."""
        while True:
            found, key = self._keys.pop()
            if found:
                return key
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake()  # pass the wake-up on
                raise
            finally:
                if fut in self._getters:
                    self._getters.remove(fut)

    def done(self, key: Hashable) -> None:
        if self._keys.done(key):
            self._wake()

    def shutdown(self) -> None:
        self._keys.clear_delayed()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None

    def _wake(self) -> None:
        """Wake one waiting getter per ready key."""
        ready = len(self._keys)
        for fut in list(self._getters):
            if ready <= 0:
                break
            if not fut.done():
                fut.set_result(None)
                ready -= 1

    def _arm(self) -> None:
        """One loop timer, at the earliest due key."""
        due = self._keys.next_due()
        if due is None or (self._timer_at is not None and self._timer_at <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = due
        self._timer = loop.call_at(loop.time() + max(0.0, due - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        if self._keys.promote(time.monotonic()):
            self._wake()
        self._arm()


class WorkQueue:
    """The queue for worker threads."""

    def __init__(self) -> None:
        self._keys = KeyQueue()
        self._cond = threading.Condition()
        self._shutdown = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._keys)

    def add(self, key: Hashable) -> None:
        with self._cond:
            if not self._shutdown and self._keys.add(key):
                self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds unless added earlier."""
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            self._keys.add_after(key, time.monotonic() + delay)
            self._cond.notify_all()  # waiting getters recompute their timeout

    def delayed(self, key: Hashable) -> bool:
        with self._cond:
            return self._keys.delayed(key)

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key (processing until :meth:`done`), or None on timeout
        or after :meth:`shutdown`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                self._keys.promote(now)
                found, key = self._keys.pop()
                if found:
                    return key
                if self._shutdown:
                    return None
                due = self._keys.next_due()
                wait = None if due is None else due - now
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            if self._keys.done(key):
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._keys.clear_delayed()
            self._cond.notify_all()
