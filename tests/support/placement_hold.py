"""A pass-through HTTP proxy in front of Placement that can hold the
operator at one exact point: its move claim.

The operator is started with ``--placement-url`` naming the proxy; every
request is forwarded unchanged to the real Placement.  Armed, the proxy
holds the next claim of a move -- the ``POST /allocations`` giving an
allocation to a migration consumer -- either before forwarding it
(``before``: Placement never sees it) or after Placement answered, with the
answer kept back (``after``: Placement committed the claim, the operator
never learns it).  The test then kills the operator (kill -9) while it
waits for that answer: the operator stopped at step Claiming, for real, with
no hook in Kova.  Released, a held ``before`` request is dropped, never
forwarded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from kova.crds import names

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
       "content-length", "host", "accept-encoding", "content-encoding"}


def is_move_claim(method: str, path: str, body: bytes) -> bool:
    """A ``POST /allocations`` that gives a migration consumer an allocation
    (a move's claim; handing it back empties the migration consumer)."""
    if method != "POST" or path.split("?")[0].rstrip("/") != "/allocations":
        return False
    try:
        consumers = json.loads(body)
    except ValueError:
        return False
    return any(isinstance(c, dict) and c.get("consumer_type") == names.CONSUMER_TYPE_MIGRATION
               and c.get("allocations") for c in consumers.values())


class PlacementHold:
    def __init__(self, upstream: Callable[[], str]) -> None:
        #: Placement's URL, read at the first request (a stack starts its
        #: Placement after the operator's arguments are fixed)
        self.upstream = upstream
        self.mode: str | None = None  # None, "before", "after"
        self.held = threading.Event()
        self.release = threading.Event()
        #: what was held: (mode, Placement's status or None, the request body)
        self.caught: list[tuple[str, int | None, dict]] = []
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PlacementHold:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        if self._client is not None:
            self._client.close()

    def arm(self, mode: str) -> None:
        """Hold the next move claim (``before`` or ``after`` Placement saw it)."""
        assert mode in ("before", "after"), mode
        self.held.clear()
        self.release.clear()
        self.mode = mode

    def disarm(self) -> None:
        """Pass everything through again; a held request is let go."""
        self.mode = None
        self.release.set()

    def forward(self, method: str, path: str, body: bytes, headers: dict) -> httpx.Response:
        upstream = self.upstream()
        if not upstream:  # not known yet: Placement not started (clients retry a 502)
            return httpx.Response(502, json={"errors": [{"detail": "no Placement yet"}]})
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=60)
        try:
            return self._client.request(method, upstream + path, content=body, headers=headers)
        except httpx.HTTPError as exc:  # Placement down: as a gateway says it
            return httpx.Response(502, json={"errors": [{"detail": str(exc)}]})

    def _take(self, method: str, path: str, body: bytes) -> str | None:
        with self._lock:
            mode = self.mode
            if mode and is_move_claim(method, path, body):
                self.mode = None  # once
                return mode
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                hold = proxy._take(self.command, self.path, body)
                if hold == "before":
                    proxy.caught.append((hold, None, json.loads(body)))
                    proxy.held.set()
                    proxy.release.wait()
                    self.close_connection = True  # dropped: never forwarded
                    return
                resp = proxy.forward(self.command, self.path, body, headers)
                if hold == "after":
                    proxy.caught.append((hold, resp.status_code, json.loads(body)))
                    proxy.held.set()
                    proxy.release.wait()
                try:
                    self.send_response(resp.status_code)
                    for k, v in resp.headers.items():
                        if k.lower() not in HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(resp.content)))
                    self.end_headers()
                    self.wfile.write(resp.content)
                except OSError:
                    self.close_connection = True  # the operator is gone

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any

        return Handler
