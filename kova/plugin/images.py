"""``kubectl kova image upload FILE --name N``: put a disk image into Kova's
image store (``kova images serve``), which verifies it, converts formats
other than qcow2 and raw to qcow2, and creates the Image.

The store is found from ``--store`` or ``$KOVA_IMAGE_STORE``; it
authenticates the kubeconfig's bearer token with the API server
(TokenReview) and asks whether its user may create the Image
(SubjectAccessReview), so RBAC on ``images.kova.dev`` decides.
"""

from __future__ import annotations

import os
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from kova import imagefile
from kova.plugin.client import Cluster, PluginError

FORMATS = ("qcow2", "raw", "iso", "vmdk", "vhdx", "vpc", "vdi")
BY_SUFFIX = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso", ".vmdk": "vmdk",
             ".vhdx": "vhdx", ".vhd": "vpc", ".vdi": "vdi"}
CHUNK = 4 << 20
MiB = float(1 << 20)


def guess_format(path: Path) -> str:
    fmt = BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise PluginError(f"cannot tell the format of {path.name} from its name: give "
                          f"--format ({', '.join(FORMATS)})")
    return fmt


class Progress:
    """One line on stderr, rewritten: percent, MiB done, MiB/s."""

    def __init__(self, name: str, total: int, stream: TextIO | None = None) -> None:
        self.name, self.total = name, total
        self.stream: Any = stream or sys.stderr
        self.t0 = self._last = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.2 or self.done >= self.total:
            self._last = now
            self.show(now)

    def show(self, now: float, end: str = "") -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate = self.done / MiB / max(now - self.t0, 1e-6)
        tty = getattr(self.stream, "isatty", lambda: False)()
        line = (f"uploading {self.name}: {pct:5.1f}% {self.done / MiB:.1f} of "
                f"{self.total / MiB:.1f} MiB, {rate:.1f} MiB/s")
        self.stream.write(("\r" if tty else "") + line + ("" if tty else "\n") + end)
        self.stream.flush()


def _body(path: Path, progress: Progress) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            progress.add(len(chunk))
            yield chunk


def upload(cluster: Cluster, path: Path, name: str, fmt: str | None, store: str,
           ca_file: str | None, stream: TextIO | None = None,
           namespace: str | None = None) -> dict:
    """Upload ``path`` as Image ``name`` (the TenantImage ``name`` of
    ``namespace``); the store's answer (the image's figures)."""
    if not path.is_file():
        raise PluginError(f"{path}: no such file")
    fmt = fmt or guess_format(path)
    if fmt == "iso":  # checked here first: a wrong file is not sent at all
        try:
            imagefile.check_iso(path)
        except imagefile.UnsafeImage as exc:
            raise PluginError(f"{path.name} cannot be uploaded as iso: {exc}") from None
    token = cluster.creds.bearer()
    if not token:
        raise PluginError("the image store authenticates Kubernetes bearer tokens; the "
                          "kubeconfig's user has none (a token, or a tokenFile)")
    size = path.stat().st_size
    progress = Progress(name, size, stream)
    where = f"/v1/namespaces/{namespace}" if namespace else "/v1"
    url = f"{store.rstrip('/')}{where}/images/{name}"
    import httpx  # here: the other commands start without it (and the rich it pulls in)

    try:
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        with httpx.Client(verify=verify, timeout=httpx.Timeout(60.0, read=None)) as c:
            resp = c.put(url, params={"format": fmt}, content=_body(path, progress),
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Length": str(size),
                                  "Content-Type": "application/octet-stream"})
    except httpx.HTTPError as exc:
        raise PluginError(f"upload of {name} to {store} failed: {exc}; nothing was "
                          f"registered") from None
    if resp.status_code != 201:
        try:
            err = resp.json()
        except ValueError:
            err = {"reason": resp.reason_phrase, "message": resp.text[:500]}
        raise PluginError(f"upload of {name} refused ({resp.status_code} "
                          f"{err.get('reason')}): {err.get('message')}")
    return resp.json()


@click.group()
def image() -> None:
    """Kova's images: upload a disk image into the image store."""


@image.command("upload")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Name of the Image to create.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Format of FILE (default: from its suffix); vmdk, vhdx, vpc (vhd) and vdi "
                   "are converted to qcow2 by the store; iso (an ISO 9660 image) is stored as "
                   "is.")
@click.option("--store", envvar="KOVA_IMAGE_STORE", required=True,
              help="URL of Kova's image store (kova images serve).  [env var: "
                   "KOVA_IMAGE_STORE]")
@click.option("--store-ca-file", envvar="KOVA_IMAGE_STORE_CA_FILE", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="CA bundle (PEM) that signed the store's certificate.")
@click.option("-n", "--namespace", default=None,
              help="Upload a TenantImage of this namespace (only its Instances boot from it; "
                   "needs create on tenantimages there, which kova-edit has). Without it: a "
                   "cluster-wide Image (administrators).")
@click.option("--kubeconfig", default=None, help="Path to the kubeconfig file.")
@click.option("--context", default=None, help="The kubeconfig context to use.")
@click.pass_context
def upload_command(ctx: click.Context, file: Path, name: str, fmt: str | None, store: str,
                   store_ca_file: str | None, namespace: str | None, kubeconfig: str | None,
                   context: str | None) -> None:
    """Upload FILE as Image NAME: verified (no backing or external data file),
    converted to qcow2 unless it is qcow2 or raw, its size, virtual size and
    sha256 computed; the Image is created once the store holds it.

    \b
    Examples:
      kubectl kova image upload debian-12.vmdk --name debian-12 --store https://images:9468
      kubectl kova image upload my-app.qcow2 --name my-app -n team-a --store https://images:9468
    """
    o = dict(ctx.find_root().obj or {})
    cluster = Cluster(kubeconfig or o.get("kubeconfig") or os.environ.get("KUBECONFIG"),
                      context or o.get("context"))
    ctx.call_on_close(cluster.close)
    namespace = namespace or o.get("namespace")
    got = upload(cluster, file, name, fmt, store, store_ca_file, namespace=namespace)
    converted = (f" (converted from {got['uploadedFormat']})"
                 if got["uploadedFormat"] != got["format"] else "")
    kind = f"TenantImage {namespace}/{name}" if namespace else f"Image {name}"
    click.echo(f"image {name}: stored as {got['format']}{converted}, "
               f"{got['sizeBytes']} bytes, virtual size {got['virtualSizeBytes']} bytes, "
               f"sha256 {got['sha256']}; {kind} is Available")
