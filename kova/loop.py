"""A private asyncio event loop on a daemon thread, for thread-based callers.

The compute agent is built on threads (libvirt calls block), while Kova's
HTTP clients (:mod:`kova.kube`, :mod:`kova.placement_client`) are asyncio
code.  A :class:`LoopThread` runs those clients' coroutines for the agent's
threads: :meth:`LoopThread.run` blocks the calling thread until the coroutine
finishes on the loop, so many threads share one connection pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "kova-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (raising what it
        raised).  Never call it from the loop's own thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop")
        return self.submit(coro).result(timeout)

    def close(self, cleanup: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Run ``cleanup()`` on the loop (closing sessions), then stop it."""
        if not self._thread.is_alive():
            return
        if cleanup is not None:
            try:
                self.run(cleanup(), timeout=10)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


def blocking(name: str) -> Callable[..., Any]:
    """A method that runs coroutine method ``name`` of ``self.aio`` on
    ``self.loop`` (a :class:`LoopThread`) and returns its result: the sync
    facades' methods, so the async client is the only implementation."""
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.loop.run(getattr(self.aio, name)(*args, **kwargs))

    call.__name__ = name
    call.__doc__ = f"Blocking form of the async client's ``{name}``."
    return call


async def serve_until_signal(server: Any, on_stop: Callable[[], None] | None = None) -> None:
    """``await server.start()``, wait for SIGTERM or SIGINT, then (after
    ``on_stop``) ``await server.stop()``: the main loop of Kova's servers."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        if on_stop is not None:
            on_stop()
        await server.stop()
