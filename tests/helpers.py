"""Small helpers shared by the test packages (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from kova.dev.controlplane import free_port

__all__ = ["PlacementServer", "free_port", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]

#: How long a software-emulated (TCG) guest may take to print what a test
#: waits for on its serial console.  A liveness limit, not a performance
#: figure: the test image boots in ~7 s on an idle machine, but 60-90 s were
#: seen with the two cores at load average ~24.  KOVA_BOOT_TIMEOUT overrides.
BOOT_TIMEOUT = float(os.environ.get("KOVA_BOOT_TIMEOUT", "240"))


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that.
    Fails with the last value seen after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


class PlacementServer:
    """The real Placement service (``kova placement serve``) on SQLite, as a
    subprocess on a free loopback port, without auth."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "placement.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kova.cli", "placement", "serve", "--database-url",
             f"sqlite:///{workdir}/placement.db", "--no-auth", "--port", str(self.port),
             "--log-level", "warning", *extra_args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **env} if env else None)
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"OpenStack-API-Version": "placement 1.39"})

        def up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"placement exited: {self.log_path.read_text()}")
            try:
                return self.http.get("/").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 60, 0.2, "placement")

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
