"""Small helpers shared by the test packages (not fixtures)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx

from kova.dev.controlplane import free_port
from kova.dev.stack import IMAGE_HOST_PATH

__all__ = ["FileServer", "PlacementServer", "TLSFileServer", "flavor_image_manifests", "free_port",
           "instance_manifest", "serve_app", "stop_process", "wait_for"]

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


@contextlib.contextmanager
def serve_app(app) -> Iterator[str]:
    """Serve an ASGI app (e.g. ``kova.placement.app.create_app(...)``) with
    uvicorn on a free loopback port, in a thread, for the duration of the
    block; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, name="asgi-server", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 10, 0.02, what="the ASGI server to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a test's subprocess: SIGTERM, SIGKILL if it has not exited after
    ``timeout`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class FileServer:
    """A file server on loopback: Python's ``http.server`` in a thread,
    serving the files under ``root`` over plain HTTP, or over HTTPS with the
    certificate ``cert`` (PEM, the chain to present) and its key ``key``;
    on a free port unless ``port`` is given.

    Records what it saw: ``requests`` (path, negotiated TLS version or None)
    and ``paths`` (the path alone) of every GET, and ``handshake_errors`` (the
    server-side error text of every TLS handshake that failed, e.g. the
    client's "unknown ca" alert)."""

    def __init__(self, root: Path, cert: Path | None = None, key: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        import http.server
        import ssl
        import threading

        ctx = None
        if cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert), str(key))
        self.requests: list[tuple[str, str | None]] = []
        self.paths: list[str] = []
        self.handshake_errors: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *a):
                pass

            def do_GET(self):
                version = self.connection.version() if ctx is not None else None
                outer.requests.append((self.path, version))
                outer.paths.append(self.path)
                super().do_GET()

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request, client_address):
                if ctx is None:
                    return super().finish_request(request, client_address)
                # The handshake runs in the connection's own thread, so a
                # client that stalls or refuses the certificate holds up nobody.
                try:
                    tls = ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    outer.handshake_errors.append(str(exc))
                    return
                try:
                    super().finish_request(tls, client_address)
                finally:
                    tls.close()

        self.httpd = Server((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if ctx is not None else 'http'}://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True,
                                        name=f"files-{self.port}")
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class TLSFileServer(FileServer):
    """A ``FileServer`` over HTTPS: ``cert`` and ``key`` required."""

    def __init__(self, root: Path, cert: Path, key: Path, host: str = "127.0.0.1") -> None:
        super().__init__(root, cert, key, host)


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
        stop_process(self.proc, 10)
        self.log.close()


# ---- manifests for the multi-host stack tests (kova.dev.stack.Stack)
def flavor_image_manifests(flavor: str, image: str, image_path: str | Path | None = None, *,
                           memory_mib: int = 192, properties: dict[str, str] | None = None,
                           image_format: str = "qcow2", disk_gib: int = 1) -> str:
    """YAML for ``kubectl apply``: the Flavor ``flavor`` (1 vCPU, ``memory_mib``
    MiB, ``disk_gib`` GiB) and the Image ``image`` (the bootable test image at
    ``image_path``, by default where ``kova.dev.stack.link_test_image`` puts
    it; of ``image_format``, with ``properties``) that the e2e tests on a
    ``Stack`` boot their Instances from."""
    path = IMAGE_HOST_PATH if image_path is None else Path(image_path).resolve()
    props = ("  properties: {" + ", ".join(f"{k}: {v}" for k, v in properties.items()) + "}\n"
             if properties else "")
    return f"""
apiVersion: kova.dev/v1alpha1
kind: Flavor
metadata: {{name: {flavor}}}
spec: {{vcpus: 1, memoryMiB: {memory_mib}, diskGiB: {disk_gib}}}
---
apiVersion: kova.dev/v1alpha1
kind: Image
metadata: {{name: {image}}}
spec:
  source: {{hostPath: {path}}}
  format: {image_format}
{props}"""


def instance_manifest(name: str, flavor: str, image: str, user_data: str, **spec) -> str:
    """YAML for ``kubectl apply`` (a document starting with ``---``): the
    Instance ``name`` of ``flavor`` and ``image`` with inline ``user_data``;
    ``spec`` adds further fields (serverGroupRef=..., schedulingHints=...)."""
    extra = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in spec.items())
    return f"""---
apiVersion: kova.dev/v1alpha1
kind: Instance
metadata: {{name: {name}}}
spec:
  flavorRef: {{name: {flavor}}}
  imageRef: {{name: {image}}}
{extra}  userData:
    inline: {json.dumps(user_data)}
"""


def disk_boot_orders(xml: str) -> dict[str, str | None]:
    """A domain XML's disks -> their boot order: ``disk``, or
    ``cdrom:<source file or empty>`` for a CD-ROM."""
    out = {}
    for d in ET.fromstring(xml).findall("devices/disk"):
        src = d.find("source")
        key = d.get("device") if d.get("device") == "disk" else \
            f"cdrom:{(src.get('file') or '') if src is not None else ''}"
        boot = d.find("boot")
        out[key] = boot.get("order") if boot is not None else None
    return out


def small_iso(path: Path) -> Path:
    """A small ISO 9660 file at ``path`` (volume KOVACD, one README.TXT): an
    iso Image's file for tests that attach it, not boot it."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="KOVACD")
    data = b"kova cd\n" * 512
    iso.add_fp(io.BytesIO(data), len(data), "/README.TXT;1")
    iso.write(str(path))
    iso.close()
    return path
