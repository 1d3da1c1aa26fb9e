"""The per-host image cache and the qcow2 overlays instances boot from.

Cached images live in ``<cache_dir>/`` (Nova's ``_base``), one file per image
content, named by its SHA-256: ``<sha256>.<format>``.  A fetch

* is shared: Instances of the same image wait for one download (a per-key
  lock in the process, plus an ``flock`` on ``<key>.lock`` for other
  processes sharing the directory);
* is atomic: data goes to a temporary file in the same directory, is
  hashed while written, fsynced, verified, then renamed into place;
* is verified: when the Image names a sha256 a file that does not match is
  refused (:data:`~kova.crds.names.ERROR_IMAGE_CHECKSUM`) and removed;
  the file must be safe (:mod:`kova.imagefile`: its header and ``qemu-img
  info``, run with the format forced and under CPU and memory limits, show no
  backing file, external data file, ``json:`` name or extent -- a qcow2 could
  otherwise point a guest at any file on the host);
* is confined (:mod:`~kova.agents.virt.image_sources`): hostPath only inside
  the image directories, URLs to no loopback, link-local or blocked network,
  plain http:// only with a sha256, a size and a time cap on downloads, and no
  URL credentials in messages, logs or the cache's metadata;
* logs its progress (every 10 % or 5 s);
* verifies https:// servers against the system trust store (OpenSSL's
  default paths, which honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus an
  optional CA bundle (``kova agent run --image-ca-file``); a server the agent
  does not trust is refused with a message that says so
  (:data:`~kova.crds.names.ERROR_IMAGE_DOWNLOAD`).

Images without a sha256 are cached under the hash of their source
(``src-<sha256 of the URL or path>``), verified against nothing but still
checked with ``qemu-img info``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from kova import imagefile
from kova.agents.virt.image_sources import SourcePolicy, SourceRefused, redact_url
from kova.crds import names

log = logging.getLogger("kova.agents.virt.images")


class _RedactURLs(logging.Filter):
    """httpx logs every request's URL: without its credentials and query here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a
                                for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_RedactURLs())

CHUNK = 1 << 20
MAX_REDIRECTS = 5
#: Seconds after its last use during which disk pressure does not evict a
#: cached image (a build fetched it and is making its overlay).
PRESSURE_GRACE = 120.0
GiB = 1 << 30


class ImageError(Exception):
    """An image cannot be used; ``code`` is one of the ERROR_* codes of :mod:`kova.crds.names`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """The parts of an Image's spec the cache needs."""

    name: str
    url: str | None = None
    host_path: str | None = None
    sha256: str | None = None
    format: str = "qcow2"

    #: A TenantImage's namespace (None: a cluster Image); ``name`` is then
    #: ``<namespace>/<name>``.
    namespace: str | None = None

    @classmethod
    def from_image(cls, image: dict) -> "ImageSource":
        """From an Image or TenantImage object (a dict as the API returns it)."""
        spec = image.get("spec") or {}
        source = spec.get("source") or {}
        meta = image.get("metadata") or {}
        namespace = meta.get("namespace") or None
        return cls(
            name=f"{namespace}/{meta.get('name', '')}" if namespace else meta.get("name", ""),
            namespace=namespace,
            url=source.get("url"),
            host_path=source.get("hostPath"),
            sha256=spec.get("sha256"),
            format=spec.get("format") or "qcow2",
        )

    @property
    def location(self) -> str:
        return self.url or self.host_path or ""

    @property
    def shown(self) -> str:
        """The location as messages and logs show it (no URL credentials)."""
        return redact_url(self.url) if self.url else (self.host_path or "")

    @property
    def key(self) -> str:
        if self.sha256:
            return self.sha256.lower()
        return "src-" + hashlib.sha256(self.location.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedImage:
    path: Path
    sha256: str
    size: int
    virtual_size: int
    format: str
    hit: bool


@dataclasses.dataclass
class CacheStats:
    """Counters the metrics module exports (see kova.agents.metrics)."""

    hits: int = 0
    misses: int = 0
    bytes_fetched: int = 0


def qemu_img_info(path: Path | str, fmt: str = "qcow2") -> dict:
    """``qemu-img info`` of a file of format ``fmt`` (forced, under limits)."""
    try:
        return imagefile.qemu_img_info(path, fmt)
    except imagefile.UnsafeImage as exc:
        raise ImageError(names.ERROR_IMAGE_INVALID, f"{path}: {exc}") from None


def tls_context(*ca_files: Path | str | None) -> ssl.SSLContext:
    """The TLS settings of image downloads: certificates and host names are
    verified against the system trust store (OpenSSL's default paths --
    ``/etc/ssl/certs`` on Debian, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), and
    against the CAs in each PEM bundle of ``ca_files`` as well (a private
    mirror's CA, the CA of Kova's image store; public image URLs stay
    trusted).

    Raises ValueError naming the file when one cannot be read or holds no
    certificate."""
    ctx = ssl.create_default_context()
    for ca_file in ca_files:
        if not ca_file:
            continue
        try:
            ctx.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"image CA file {ca_file}: cannot load it: {exc}") from exc
    return ctx


def _peer_address(resp: httpx.Response) -> str | None:
    """The IP address the response came from (None when the transport does
    not tell, as a test transport)."""
    stream = resp.extensions.get("network_stream")
    if stream is None:
        return None
    addr = stream.get_extra_info("server_addr")
    return str(addr[0]) if addr else None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (httpx -> httpcore -> ssl), if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


class ImageCache:
    """Fetch, verify and share images on one host."""

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        http: httpx.Client | None = None,
        on_progress: Callable[[str, int, int | None], None] | None = None,
        timeout: float = 60.0,
        ca_file: Path | str | None = None,
        store_ca_file: Path | str | None = None,
        policy: SourcePolicy | None = None,
        auth: Callable[[str, str | None], dict[str, str]] | None = None,
    ) -> None:
        self.dir = Path(cache_dir)
        self.policy = policy or SourcePolicy()
        #: Headers for a URL of an image of a namespace (None: a cluster
        #: Image): the agent's token for Kova's image store.
        self._auth = auth
        self.dir.mkdir(parents=True, exist_ok=True)
        self._http = http
        self._ca_files = [str(f) for f in (ca_file, store_ca_file) if f]
        # One context for every download (loading the trust store once); an
        # unreadable CA file fails here, when the agent starts.
        self._tls = tls_context(ca_file, store_ca_file)
        self._timeout = timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.stats = CacheStats()
        self._on_progress = on_progress

    @property
    def tls(self) -> ssl.SSLContext:
        """The TLS context the cache verifies image servers with (the system
        trust store and --image-ca-file): the image store's, for uploads too."""
        return self._tls

    def set_auth(self, auth: Callable[[str, str | None], dict[str, str]] | None) -> None:
        self._auth = auth

    # ------------------------------------------------------------------
    def _lock_for(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with self._lock_for(key):
            self.dir.mkdir(parents=True, exist_ok=True)  # it may have been removed
            with open(self.dir / f".{key}.lock", "w") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)

    def path_for(self, source: ImageSource) -> Path:
        return self.dir / f"{source.key}.{source.format}"

    def _meta_path(self, path: Path) -> Path:
        return path.with_suffix(path.suffix + ".json")

    # ------------------------------------------------------------------
    def fetch(self, source: ImageSource) -> CachedImage:
        """The cached, verified copy of ``source``; fetched on a miss."""
        if not source.url and not source.host_path:
            raise ImageError(names.ERROR_IMAGE_NOT_FOUND, f"image {source.name} has no source")
        if source.format not in ("qcow2", "raw", names.ImageFormat.ISO):
            raise ImageError(names.ERROR_IMAGE_INVALID, f"image {source.name} is {source.format}: "
                             "an Instance boots from a qcow2, raw or iso image only")
        final = self.path_for(source)
        with self._locked(source.key):
            if final.exists():
                meta = self._read_meta(final)
                if meta is not None:
                    self.stats.hits += 1
                    if source.name not in meta.get("names", ()):
                        meta["names"] = [*meta.get("names", ()), source.name]
                        self._write_meta(final, meta)
                    with contextlib.suppress(OSError):
                        os.utime(self._meta_path(final))  # last use, for evict()
                    log.debug("image %s: cache hit %s", source.name, final)
                    return CachedImage(
                        path=final, sha256=meta["sha256"], size=meta["size"],
                        virtual_size=meta["virtualSize"], format=source.format, hit=True,
                    )
                # A file without its metadata is a leftover: fetch again.
                final.unlink(missing_ok=True)
            self.stats.misses += 1
            tmp = self.dir / f".{source.key}.{os.getpid()}.{threading.get_ident()}.part"
            try:
                started = time.monotonic()
                digest, size = self._get(source, tmp)
                if source.sha256 and digest != source.sha256.lower():
                    raise ImageError(
                        names.ERROR_IMAGE_CHECKSUM,
                        f"image {source.name}: sha256 of {source.shown} is {digest}, "
                        f"expected {source.sha256.lower()}",
                    )
                info = self._check_format(source, tmp)
                os.replace(tmp, final)
                meta = {
                    "name": source.name,
                    "names": [source.name],
                    "source": source.shown,
                    "sha256": digest,
                    "size": size,
                    "virtualSize": int(info.get("virtual-size") or size),
                    "format": source.format,
                    "fetchedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
                self._write_meta(final, meta)
                self.stats.bytes_fetched += size
                log.info(
                    "image %s: cached %s (%d bytes, sha256 %s) in %.1fs",
                    source.name, final, size, digest[:16], time.monotonic() - started,
                )
                return CachedImage(
                    path=final, sha256=digest, size=size,
                    virtual_size=meta["virtualSize"], format=source.format, hit=False,
                )
            finally:
                tmp.unlink(missing_ok=True)

    def _get(self, source: ImageSource, tmp: Path) -> tuple[str, int]:
        """The source's bytes into ``tmp``: (sha256, size)."""
        try:
            if source.url:
                return self._download(source, tmp)
            return self._copy_local(source, tmp)
        except SourceRefused as exc:
            code = names.ERROR_IMAGE_DOWNLOAD if exc.transient else names.ERROR_IMAGE_INVALID
            raise ImageError(code, f"image {source.name}: {exc}") from None

    def _read_meta(self, path: Path) -> dict | None:
        try:
            meta = json.loads(self._meta_path(path).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("size") != path.stat().st_size:
            return None
        return meta

    def _write_meta(self, path: Path, meta: dict) -> None:
        mp = self._meta_path(path)
        tmp = mp.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, mp)

    def _check_format(self, source: ImageSource, path: Path) -> dict:
        try:
            if source.format == names.ImageFormat.ISO:  # read as ISO 9660, used as is
                return {"virtual-size": imagefile.check_iso(path)}
            return imagefile.verify(path, source.format)
        except imagefile.UnsafeImage as exc:
            raise ImageError(names.ERROR_IMAGE_INVALID,
                             f"image {source.name} ({source.shown}): {exc}; refusing it") from None

    def _progress(self, source: ImageSource, done: int, total: int | None, state: dict) -> None:
        now = time.monotonic()
        pct = int(done * 100 / total) if total else None
        if (pct is not None and pct >= state.get("pct", -10) + 10) or now - state.get("t", 0) >= 5:
            state["pct"] = pct if pct is not None else state.get("pct", -10)
            state["t"] = now
            if total:
                log.info("image %s: %d/%d bytes (%d%%)", source.name, done, total, pct)
            else:
                log.info("image %s: %d bytes", source.name, done)
        if self._on_progress:
            self._on_progress(source.name, done, total)

    def _download(self, source: ImageSource, tmp: Path) -> tuple[str, int]:
        assert source.url
        client = self._http or httpx.Client(timeout=self._timeout, follow_redirects=False,
                                            verify=self._tls)
        shown = source.shown
        log.info("image %s: downloading %s", source.name, shown)
        try:
            with self._open(client, source) as resp:
                return self._receive(source, resp, tmp)
        except httpx.HTTPError as exc:
            tls = _ssl_cause(exc)
            if tls is not None:
                raise ImageError(names.ERROR_IMAGE_DOWNLOAD,
                                 self._tls_message(source, exc, tls)) from exc
            text = str(exc).replace(source.url, shown)
            raise ImageError(
                names.ERROR_IMAGE_DOWNLOAD, f"image {source.name}: {shown}: {text}"
            ) from exc
        finally:
            if self._http is None:
                client.close()

    @contextlib.contextmanager
    def _open(self, client: httpx.Client, source: ImageSource) -> Iterator[httpx.Response]:
        """The response to GET ``source.url``, redirects followed by hand:
        every URL on the way, and the address each connection reached, pass
        the source policy."""
        url = source.url or ""
        for _hop in range(MAX_REDIRECTS + 1):
            self.policy.check_url(url, sha256=source.sha256)
            headers = self._auth(url, source.namespace) if self._auth else None
            with client.stream("GET", url, headers=headers) as resp:
                peer = _peer_address(resp)
                if peer is not None:
                    self.policy.check_address(url, peer)
                if resp.is_redirect and "location" in resp.headers:
                    url = str(resp.url.join(resp.headers["location"]))
                    continue
                if resp.status_code == 404:
                    raise ImageError(names.ERROR_IMAGE_NOT_FOUND,
                                     f"image {source.name}: {redact_url(url)} answered "
                                     f"404 Not Found")
                if resp.status_code >= 400:
                    raise ImageError(names.ERROR_IMAGE_DOWNLOAD,
                                     f"image {source.name}: {redact_url(url)} answered "
                                     f"{resp.status_code}")
                yield resp
                return
        raise ImageError(names.ERROR_IMAGE_DOWNLOAD,
                         f"image {source.name}: {source.shown}: more than {MAX_REDIRECTS} "
                         f"redirects")

    def _receive(self, source: ImageSource, resp: httpx.Response, tmp: Path) -> tuple[str, int]:
        """The body into ``tmp``, within the size and time caps."""
        cap, deadline = self.policy.max_bytes, self.policy.max_seconds
        length = resp.headers.get("content-length")
        total = int(length) if length is not None and length.isdigit() else None
        if cap and total is not None and total > cap:
            raise ImageError(names.ERROR_IMAGE_INVALID,
                             f"image {source.name}: {source.shown} is {total} bytes, over the "
                             f"agent's limit of {cap} (--image-max-bytes)")
        digest = hashlib.sha256()
        size = 0
        state: dict = {}
        started = time.monotonic()
        with open(tmp, "wb") as out:
            for chunk in resp.iter_bytes(CHUNK):
                size += len(chunk)
                if cap and size > cap:
                    raise ImageError(names.ERROR_IMAGE_INVALID,
                                     f"image {source.name}: {source.shown} sent more than the "
                                     f"agent's limit of {cap} bytes (--image-max-bytes)")
                if deadline and time.monotonic() - started > deadline:
                    raise ImageError(names.ERROR_IMAGE_DOWNLOAD,
                                     f"image {source.name}: {source.shown} took longer than "
                                     f"{deadline:.0f}s (--image-download-seconds) after "
                                     f"{size} bytes")
                out.write(chunk)
                digest.update(chunk)
                self._progress(source, size, total, state)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and size != total:
            raise ImageError(
                names.ERROR_IMAGE_DOWNLOAD,
                f"image {source.name}: got {size} of {total} bytes",
            )
        return digest.hexdigest(), size

    @property
    def trusted(self) -> str:
        """Which CAs https:// image servers are verified against (for messages)."""
        return " and ".join(["the system trust store", *self._ca_files])

    def _tls_message(self, source: ImageSource, exc: httpx.HTTPError, tls: ssl.SSLError) -> str:
        # The request's URL: after a redirect it is not source.url.
        try:
            url = exc.request.url
            where = f"{url.host}:{url.port or 443}"
        except RuntimeError:  # no request attached
            parts = urllib.parse.urlsplit(source.url or "")
            where = f"{parts.hostname}:{parts.port or 443}"
        if isinstance(tls, ssl.SSLCertVerificationError):
            why = tls.verify_message or tls.reason or str(tls)
            return (f"image {source.name}: TLS certificate verification failed for {where} "
                    f"({source.shown}): {why}; the agent trusts {self.trusted} "
                    f"(--image-ca-file / KOVA_AGENT_IMAGE_CA_FILE names a CA bundle to add)")
        return (f"image {source.name}: TLS handshake with {where} failed ({source.shown}): "
                f"{tls.reason or tls}")

    def _copy_local(self, source: ImageSource, tmp: Path) -> tuple[str, int]:
        assert source.host_path
        real = self.policy.host_path(source.host_path)
        if not real.exists():
            raise ImageError(
                names.ERROR_IMAGE_NOT_FOUND,
                f"image {source.name}: {source.host_path} does not exist on this host",
            )
        if not real.is_file():
            raise ImageError(
                names.ERROR_IMAGE_NOT_FOUND,
                f"image {source.name}: {source.host_path} is not a regular file",
            )
        log.info("image %s: copying %s", source.name, real)
        total = real.stat().st_size
        cap = self.policy.max_bytes
        if cap and total > cap:
            raise ImageError(names.ERROR_IMAGE_INVALID,
                             f"image {source.name}: {source.host_path} is {total} bytes, over "
                             f"the agent's limit of {cap} (--image-max-bytes)")
        # A hard link shares the blocks (the image must then never be changed
        # in place -- replacing it by rename is fine); otherwise copy.
        try:
            os.link(real, tmp)
            linked = True
        except OSError:
            linked = False
        digest = hashlib.sha256()
        size = 0
        state: dict = {}
        if linked:
            with open(tmp, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    self._progress(source, size, total, state)
        else:
            with open(real, "rb") as fin, open(tmp, "wb") as out:
                while chunk := fin.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    self._progress(source, size, total, state)
                out.flush()
                os.fsync(out.fileno())
        return digest.hexdigest(), size

    # ------------------------------------------------------------------
    def cached(self) -> list[Path]:
        return sorted(
            p for p in self.dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix in (".qcow2", ".raw", ".iso")
        )

    def prune(self, in_use: set[Path], min_age: float = 0.0) -> list[Path]:
        """Remove cached images that no overlay uses and that were not used
        (fetched or hit) for ``min_age`` seconds; return what was removed."""
        return [Path(m["path"]) for m in self.evict(in_use, min_age=min_age)]

    def _last_used(self, path: Path) -> float:
        try:
            return self._meta_path(path).stat().st_mtime
        except OSError:
            return path.stat().st_mtime if path.exists() else 0.0

    def free_percent(self) -> float:
        usage = shutil.disk_usage(self.dir)
        return 100.0 * usage.free / usage.total if usage.total else 100.0

    def evict(self, in_use: set[Path], *, min_age: float | None = None,
              min_free_percent: float = 0.0) -> list[dict]:
        """Remove cached images that no overlay uses (``in_use``: the files
        overlays are backed by): each unused for ``min_age`` seconds (None:
        no age limit -- only pressure evicts), and then, least recently used
        first, more while the file system has less than ``min_free_percent``
        free (but none used in the last :data:`PRESSURE_GRACE` seconds: a build
        between its fetch and its overlay).  Returns the removed files'
        metadata, each with its ``path``."""
        keep = {p.resolve() for p in in_use}
        now = time.time()
        candidates = sorted((self._last_used(p), p) for p in self.cached()
                            if p.resolve() not in keep)
        removed: list[dict] = []
        for last_used, path in candidates:
            idle = now - last_used
            aged = min_age is not None and idle >= min_age
            pressed = (min_free_percent > 0 and idle >= PRESSURE_GRACE
                       and self.free_percent() < min_free_percent)
            if not (aged or pressed):
                continue
            used_before = now - (min_age or 0.0) if aged else now - PRESSURE_GRACE
            gone = self._remove(path, keep, used_before, "unused" if aged else "disk pressure")
            if gone is not None:
                removed.append(gone)
        return removed

    def _remove(self, path: Path, keep: set[Path], used_before: float, why: str) -> dict | None:
        """Remove ``path`` unless it was used after ``used_before`` (checked
        again under its lock: a fetch may just have hit it)."""
        key = path.name.rsplit(".", 1)[0]
        with self._locked(key):
            if not path.exists() or path.resolve() in keep or self._last_used(path) > used_before:
                return None
            meta = self._read_meta(path) or {}
            path.unlink(missing_ok=True)
            self._meta_path(path).unlink(missing_ok=True)
        log.info("image cache: removed %s (%s; images %s)", path.name, why,
                 ", ".join(meta.get("names") or [meta.get("name", "?")]))
        return {**meta, "path": str(path)}


#: The mode of a guest's disk and seed: readable by their owner only (root,
#: or QEMU's user after libvirt's dynamic ownership chowns them at start),
#: not by every local user of the node.
PRIVATE_MODE = 0o600


def private_file(path: Path) -> Path:
    """An empty file at ``path`` with mode :data:`PRIVATE_MODE` (replacing
    one there): a copy of a guest's disk written into it (``open(..., "wb")``,
    ``shutil.copyfile``, ``qemu-img``) keeps that mode."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    return path


def create_overlay(base: CachedImage, dest: Path, size_bytes: int) -> Path:
    """A qcow2 overlay at ``dest`` backed by ``base``, ``size_bytes`` large
    (at least the image's own virtual size); written atomically."""
    if size_bytes < base.virtual_size:
        raise ImageError(
            names.ERROR_DISK_TOO_SMALL,
            f"the image needs {base.virtual_size} bytes of disk, the instance has {size_bytes}",
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    # created 0600 first: qemu-img truncates an existing file and keeps its
    # mode (libvirt's DAC driver gives the file to QEMU's user at start)
    private_file(tmp)
    proc = subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", base.format,
         "-b", str(base.path), str(tmp), str(size_bytes)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(
            names.ERROR_IMAGE_INVALID,
            f"qemu-img create failed: {proc.stderr.strip() or proc.stdout.strip()}",
        )
    os.chmod(tmp, PRIVATE_MODE)
    os.replace(tmp, dest)
    return dest


def create_blank_disk(dest: Path, size_bytes: int) -> Path:
    """An empty qcow2 of ``size_bytes`` at ``dest`` (the root disk of an
    Instance that boots from an ISO); written atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    private_file(tmp)
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), str(size_bytes)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ImageError(names.ERROR_INTERNAL,
                         f"qemu-img create failed: {proc.stderr.strip() or proc.stdout.strip()}")
    os.chmod(tmp, PRIVATE_MODE)
    os.replace(tmp, dest)
    return dest


def backing_file(overlay: Path) -> Path | None:
    """The backing file an overlay names, or None."""
    try:
        info = qemu_img_info(overlay)
    except ImageError:
        return None
    name = info.get("full-backing-filename") or info.get("backing-filename")
    return Path(name) if name else None


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
