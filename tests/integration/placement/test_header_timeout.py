"""A client that sends its request headers slowly (slow loris) is dropped by
the real ``kova placement serve`` (uvicorn, two worker processes), over a
real socket; complete requests are still answered."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import PlacementServer
from tests.reliability.record import record

pytestmark = pytest.mark.reliability


def _trickle(port: int, seconds: float) -> tuple[float | None, int]:
    """Send a request's headers a byte every 0.2 s, never finishing them;
    (seconds until the server closed the connection or None, bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /resource_providers HTTP/1.1\r\nHost: placement\r\n")
    start = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - start < seconds:
            try:
                sock.sendall(b"X")
                sent += 1
                sock.settimeout(0.2)
                if sock.recv(1024) == b"":
                    return time.monotonic() - start, sent
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, sent
        return None, sent
    finally:
        sock.close()


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and its Content-Length of body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return data


def test_slow_headers_are_dropped(tmp_path):
    server = PlacementServer(tmp_path, ("--header-timeout", "1", "--workers", "2"))
    try:
        closed_after, sent = _trickle(server.port, 8)
        assert closed_after is not None, f"still open after 8 s ({sent} header bytes)"
        assert closed_after < 4, closed_after
        # an idle connection that never sends a byte is dropped too
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            assert idle.recv(1) == b""
        finally:
            idle.close()
        # complete requests, also a second one on a kept-alive connection
        # after a pause shorter than the deadline, are answered
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            for _ in range(2):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: placement\r\n\r\n")
                assert _response(sock).startswith(b"HTTP/1.1 200")
                time.sleep(0.5)
        finally:
            sock.close()
        assert server.http.get("/resource_providers").status_code == 200
        assert "no complete request headers within 1s" in server.log_path.read_text()
        record(fault="Slow-loris client", injected="`kova placement serve --workers 2 "
               "--header-timeout 1`: request headers sent a byte every 0.2 s; a connection "
               "that sends nothing", times=2, lost=0, duplicated=0, overcommitted=None,
               result=f"both connections closed by the server (the trickling one after "
                      f"{closed_after:.1f} s, {sent} header bytes); complete requests, also "
                      "a second one on a kept-alive connection, answered",
               figures={"closed_after_s": round(closed_after, 2), "header_bytes_sent": sent})
    finally:
        server.stop()
