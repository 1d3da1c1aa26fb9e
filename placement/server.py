"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn bounds the idle time between requests of a keep-alive connection,
but not how long a client may take to send a request's headers: a client
that connects and sends its headers a byte at a time (slow loris) holds a
connection, and enough of them hold every connection the server can take.
:func:`protocol_class` arms a timer when a connection opens and after each
response, and disarms it once a request's headers are complete; when it
fires, the connection is closed.  Works with both of uvicorn's parsers
(httptools and h11).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOG = logging.getLogger("kova.placement.server")
DEFAULT_HEADER_TIMEOUT = 10.0
ENV_TIMEOUT = "KOVA_PLACEMENT_HEADER_TIMEOUT"


class _HeaderDeadline:
    """Mixed in before one of uvicorn's HTTP protocol classes."""

    header_timeout: float = float(os.environ.get(ENV_TIMEOUT) or DEFAULT_HEADER_TIMEOUT)
    _header_timer: asyncio.TimerHandle | None = None
    loop: Any
    transport: Any
    client: Any

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        self._arm()  # first: a pipelined request's headers disarm it in super()
        super().on_response_complete()  # type: ignore[misc]

    # the headers are complete: httptools calls this, h11 creates a cycle
    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()  # type: ignore[misc]

    def handle_events(self) -> None:
        super().handle_events()  # type: ignore[misc]
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            LOG.warning("closing the connection of %s: no complete request headers within "
                        "%gs", "%s:%d" % self.client if self.client else "a client",
                        self.header_timeout)
            self.transport.close()


# Module-level classes: uvicorn's worker processes receive the protocol
# class by reference (pickled), and the timeout through the environment.
class H11Deadline(_HeaderDeadline, H11Protocol):
    pass


class HttpToolsDeadline(_HeaderDeadline, HttpToolsProtocol):
    pass


def protocol_class(timeout: float, http: str = "auto") -> type:
    """uvicorn's HTTP protocol class (``http``: auto, httptools or h11)
    with a ``timeout`` (seconds) for a request's headers (in this process
    and, through the environment, in worker processes)."""
    os.environ[ENV_TIMEOUT] = repr(float(timeout))
    _HeaderDeadline.header_timeout = float(timeout)
    if http in ("auto", "httptools"):
        return HttpToolsDeadline
    return H11Deadline
