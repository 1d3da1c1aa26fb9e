"""The operator's memory of Instances: everything it knows about an Instance
beyond what the API server says, in one place, dropped in one call
(:meth:`Ledger.forget`) when the Instance is deleted.

The API server and Placement are the records; this memory only bridges the
moments between a write and its watch event (a claim made but not yet seen
in ``status.host``, a phase Error written but a stale copy still Pending) and
keeps the retry state of the work queue's keys.  A restarted operator starts
with an empty ledger and loses nothing.

Server-group locks are here too: one ``asyncio.Lock`` per group, alive only
while a placement holds or waits for it (:class:`GroupLocks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Hashable

#: A work-queue key: ``("inst", namespace, name)``, ``("sg", namespace, name)``
#: or ``("host", name)``.
Key = Hashable


class GroupLocks:
    """One lock per server group, so that the members of a group are placed
    one at a time (each sees where the others went).  A lock exists only while
    someone holds or waits for it: the map never grows with groups that come
    and go."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, namespace: str, group: str) -> AsyncIterator[None]:
        key = (namespace, group)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[key]


class Ledger:
    """Per-Instance memory (keyed by uid) and per-key retry state."""

    def __init__(self) -> None:
        #: uid -> host of the claims this process made and records (or recorded).
        self.own_hosts: dict[str, str] = {}
        #: Claims found in Placement for Instances that do not record them yet.
        self.unrecorded: dict[str, str] = {}
        #: Server-group members known to hold no claim (see discover_member_claims).
        self.no_claim: set[str] = set()
        #: Keys of Instances waiting for a host or a missing object.
        self.pending: set[Key] = set()
        #: Key -> failed tries in a row (the back-off's exponent).
        self.retries: Counter = Counter()
        #: uids this process put in phase Error (stale copies are ignored).
        self.errored: set[str] = set()
        #: uid -> the failed-image annotation this process retried after.
        self.retried: dict[str, str] = {}
        self.groups = GroupLocks()

    # ------------------------------------------------------------ forgetting
    def forget(self, uid: str | None, key: Key) -> None:
        """The Instance ``uid`` (work-queue key ``key``) was deleted."""
        if uid:
            self.own_hosts.pop(uid, None)
            self.unrecorded.pop(uid, None)
            self.no_claim.discard(uid)
            self.errored.discard(uid)
            self.retried.pop(uid, None)
        self.forget_key(key)

    def forget_key(self, key: Key) -> None:
        """No retry state for ``key`` (its object was deleted)."""
        self.pending.discard(key)
        self.retries.pop(key, None)

    def new_term(self) -> None:
        """This replica became the active one: what it learnt of other
        Instances' claims may be out of date (another replica claimed)."""
        self.no_claim.clear()
        self.unrecorded.clear()

    def sizes(self) -> dict[str, int]:
        """How many entries each map holds (for tests and debugging)."""
        return {"own_hosts": len(self.own_hosts), "unrecorded": len(self.unrecorded),
                "no_claim": len(self.no_claim), "pending": len(self.pending),
                "retries": len(self.retries), "errored": len(self.errored),
                "retried": len(self.retried), "group_locks": len(self.groups)}

    # ------------------------------------------------------------ claims
    def claimed(self, uid: str, host: str) -> None:
        """This process claimed ``host`` for ``uid`` (recording follows)."""
        self.own_hosts[uid] = host
        self.no_claim.discard(uid)

    def released(self, uid: str) -> None:
        """This process's claim of ``uid`` is gone or not recorded: a retry
        finds the claim in Placement (and adopts it) instead of trusting this."""
        self.own_hosts.pop(uid, None)

    def host_of(self, uid: str, recorded: str | None) -> str | None:
        """The host an Instance is on, as far as its status (``recorded``) and
        this process's own claims tell."""
        return recorded or self.own_hosts.get(uid)

    def member_host(self, uid: str, recorded: str | None) -> str | None:
        """A server-group member's host: recorded, claimed by this process,
        or found in Placement."""
        return recorded or self.own_hosts.get(uid) or self.unrecorded.get(uid)

    # ------------------------------------------------------------ Error
    def failed(self, uid: str) -> None:
        """This process put ``uid`` in phase Error."""
        self.errored.add(uid)
        self.unrecorded.pop(uid, None)

    def restarted(self, uid: str, failed_image: str) -> None:
        """``uid`` left phase Error to start over after an image change."""
        self.retried[uid] = failed_image
        self.errored.discard(uid)

    # ------------------------------------------------------------ waiting
    def wait(self, key: Key) -> None:
        """``key`` waits for a host or a missing object (re-queued when one
        appears: see the operator's retrigger)."""
        self.pending.add(key)

    def settle(self, key: Key) -> None:
        self.pending.discard(key)

    def backoff(self, key: Key, base: float, cap: float) -> float:
        """The next retry delay of ``key``: ``base`` doubled per failed try in
        a row, at most ``cap``, jittered by x0.8 to x1.2."""
        n = self.retries[key]
        self.retries[key] += 1
        delay = min(cap, base * (2 ** n))
        return delay * (0.8 + 0.4 * random.random())

    def reset_backoff(self, key: Key) -> None:
        self.retries.pop(key, None)
