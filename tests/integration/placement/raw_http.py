"""Raw HTTP/1.1 over a socket to a real ``kova placement serve``: what a
client on the network gets, the HTTP server's own parsing included (the
bounded-input tests and the oversized-input fuzz run)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ADMIN = "bounds-admin-token"


@contextlib.contextmanager
def serve(tmp: Path, database_url: str, *args: str):
    """``kova placement serve`` with a token file (admin ``ADMIN``) and
    ``args``; yields (port, log path)."""
    (tmp / "tokens").write_text(f"admin {ADMIN}\n")
    port = _free_port()
    log = tmp / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url",
         database_url, "--port", str(port), "--token-file", str(tmp / "tokens"),
         "--log-level", "info", "--log-format", "text", *args],
        env=dict(os.environ, KOVA_STATE=str(tmp)), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        yield port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw(port: int, head: str, body: bytes = b"", chunks: list[bytes] | None = None):
    """Send one request as bytes; return (status, headers, parsed JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(head.encode("latin-1") + b"\r\n" + body)
            for chunk in chunks or []:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if chunks is not None:
                s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = [int(line.split(b":")[1]) for line in data[:head_end].split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(data) >= head_end + 4 + length[0]:
                    break
    head_raw, _, payload = data.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in
               (line.split(":", 1) for line in lines[1:])}
    try:
        parsed = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload.decode("latin-1")  # the HTTP server's own refusal, in text
    return status, headers, parsed


def request(path="/resource_providers", method="GET", extra=(), token=None,
            length: int | None = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: placement", "Accept: application/json",
             "OpenStack-API-Version: placement latest"]
    if token:
        lines.append(f"X-Auth-Token: {token}")
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    lines += list(extra)
    return "\r\n".join(lines) + "\r\n"
