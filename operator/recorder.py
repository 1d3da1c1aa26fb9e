"""Kubernetes Events of the operator, posted in the background.

Informational (Normal) Events are rate limited by a token bucket of
``--event-qps`` / ``--event-burst``: the same fact is in the object's status
condition, and in a burst an Event per Instance would cost the API server as
much as the placement itself.  Warnings are always posted.
"""

from __future__ import annotations

import asyncio
import time

from kova import events
from kova.crds import names
from kova.kube import Kube
from kova.operator import metrics


class EventRecorder:
    def __init__(self, kube: Kube, enabled: bool = True, qps: float = 5.0,
                 burst: int = 25, maxsize: int = 10000) -> None:
        self.kube = kube
        self.enabled = enabled
        self.qps = qps
        self.burst = burst
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        self._tokens = 0.0
        self._tokens_at: float | None = None

    def emit(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """Queue an Event about ``obj`` (dropped when Events are off, or a
        Normal one over the rate limit, or the queue is full)."""
        if not self.enabled:
            return
        if type_ == "Normal" and not self._token():
            metrics.EVENTS_DROPPED.labels(reason=reason).inc()
            return
        try:
            self._queue.put_nowait((obj, type_, reason, message))
        except asyncio.QueueFull:
            pass

    def _token(self) -> bool:
        """Take a token of the bucket (qps 0 = no limit)."""
        if self.qps <= 0:
            return True
        now = time.monotonic()
        burst = max(1.0, float(self.burst))
        if self._tokens_at is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * self.qps)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def poster(self) -> None:
        """Post the queued Events, one at a time (best effort), forever."""
        while True:
            obj, type_, reason, message = await self._queue.get()
            await events.post(self.kube, obj, type_, reason, message,
                              component=names.COMPONENT_OPERATOR)
