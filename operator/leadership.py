"""Which replica acts.  kopf's peering pauses every replica that sees a live
peer of higher priority (so with distinct priorities exactly one replica
handles events); :class:`Leadership` reads the same peering object and
mirrors that decision for the operator's own tasks (workers, host monitor,
audit).  A replica that becomes the active one looks at everything again.

With ``--share-instances`` kopf peering is off and :mod:`.membership` decides
instead (the oldest live replica leads); :meth:`Leadership.update` is shared."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.view import parse_time

LOG = logging.getLogger("kova.operator")

#: Seconds between two looks at the peering object.
CHECK_INTERVAL = 2.0


def peering_path(all_namespaces: bool, namespaces: tuple[str, ...], name: str) -> str:
    if all_namespaces:
        return f"/apis/kopf.dev/v1/clusterkopfpeerings/{name}"
    return f"/apis/kopf.dev/v1/namespaces/{namespaces[0]}/kopfpeerings/{name}"


def is_leader(peering: dict | None, identity: str, priority: int, now: float) -> bool:
    """No live peer (other than ``identity``) has a priority as high as ours."""
    if peering is None:
        return False
    for ident, info in (peering.get("status") or {}).items():
        if ident == identity or not isinstance(info, dict):
            continue
        seen = parse_time(info.get("lastseen"))
        if seen is None or now > seen + float(info.get("lifetime") or 60):
            continue
        if int(info.get("priority") or 0) >= priority:
            return False
    return True


class Leadership:
    def __init__(self, ctx: Context, identity: str, priority: int,
                 elected: Callable[[], None]) -> None:
        self.ctx = ctx
        self.identity = identity
        self.priority = priority
        self.elected = elected

    async def run(self) -> None:
        s, ctx = self.ctx.settings, self.ctx
        if not s.peering:
            ctx.leader = True
            metrics.LEADER.set(1)
            return
        path = peering_path(s.all_namespaces, s.namespaces, s.peering_name)
        first = True
        while True:
            try:
                obj = await ctx.kube.get_or_none(path)
                self.update(is_leader(obj, self.identity, self.priority, time.time()), first)
                first = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOG.warning("leadership check: %s", exc)
            await asyncio.sleep(CHECK_INTERVAL)

    def update(self, leader: bool, first: bool = False) -> None:
        ctx = self.ctx
        if leader and not ctx.leader:
            LOG.info("this replica (%s, priority %d) is now the active one",
                     self.identity, self.priority)
            ctx.leader = True
            self.elected()
        elif not leader and (ctx.leader or first):
            LOG.info("standing by: another replica is the active one")
            ctx.leader = False
        metrics.LEADER.set(1 if ctx.leader else 0)
