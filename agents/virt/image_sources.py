"""Where the compute agent may fetch an image from: the rules an Image's
``source`` must pass before a byte is read.

* ``hostPath`` must lie in one of the image directories
  (``--image-host-dir``, default ``/var/lib/kova/images``): the path as
  written, after normalisation, is inside the directory; symbolic links the
  administrator placed there are followed, but the file they reach must be a
  regular file outside ``/proc``, ``/sys`` and ``/dev``
  (``/proc/self/environ`` holds the agent's credentials);
* a URL's host must not resolve to a loopback, link-local, unspecified or
  multicast address, nor to a network of ``--image-url-blocked-network``
  (the cluster's pod and service networks); ``--image-url-allowed-network``
  exempts networks (a mirror on a private address, a test server on
  loopback).  The address the connection reached is checked again once it is
  open (a name that resolves differently the second time gains nothing), and
  every redirect is checked the same way;
* a plain ``http://`` URL needs the Image's ``sha256`` (admission requires it
  too; the agent refuses an Image stored before that rule);
* URLs in messages, logs and on disk go through :func:`redact_url`: no user
  name, password or query string (a pre-signed URL's signature) is repeated.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Never image servers, unless allowed explicitly.
ALWAYS_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128",            # loopback
    "169.254.0.0/16", "fe80::/10",       # link-local (cloud metadata services)
    "0.0.0.0/8", "::/128",               # unspecified
    "224.0.0.0/4", "ff00::/8",           # multicast
    "100.100.100.200/32",                # a metadata address outside link-local
))
FORBIDDEN_TREES = ("/proc", "/sys", "/dev")
DEFAULT_IMAGE_DIR = "/var/lib/kova/images"


class SourceRefused(Exception):
    """The source breaks a rule; ``str()`` says which.  ``transient``: it may
    pass later (a name that does not resolve now)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def redact_url(url: str | None) -> str:
    """``url`` without credentials and without its query string."""
    if not url:
        return ""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unparseable URL>"
    user = "***@" if parts.username is not None or parts.password is not None else ""
    query = "?<redacted>" if parts.query else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}{query}"


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs from settings; ValueError naming a bad one."""
    out = []
    for v in values:
        for part in str(v).replace(",", " ").split():
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not an IP network (CIDR)") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class SourcePolicy:
    """The agent's rules for image sources (from its settings)."""

    host_dirs: tuple[str, ...] = (DEFAULT_IMAGE_DIR,)
    blocked: tuple[Network, ...] = ()
    allowed: tuple[Network, ...] = ()
    #: Largest image file (bytes; 0: no limit).
    max_bytes: int = 0
    #: Longest download, start to end (seconds; 0: no limit).
    max_seconds: float = 0.0

    # -- hostPath --------------------------------------------------------
    def host_path(self, path: str) -> Path:
        """The file ``path`` names, if it is inside an image directory."""
        given = os.path.normpath(path)
        if not os.path.isabs(given):
            raise SourceRefused(f"hostPath {path} is not absolute")
        inside = [d for d in self.host_dirs
                  if os.path.commonpath([given, os.path.normpath(d)]) == os.path.normpath(d)
                  and given != os.path.normpath(d)]
        if not inside:
            raise SourceRefused(
                f"hostPath {path} is outside the image directories of this host "
                f"({', '.join(self.host_dirs) or 'none'}; --image-host-dir)")
        real = os.path.realpath(given)
        for tree in FORBIDDEN_TREES:
            if real == tree or real.startswith(tree + "/"):
                raise SourceRefused(f"hostPath {path} leads to {real}, which is no image")
        return Path(real)

    # -- URLs ------------------------------------------------------------
    def check_address(self, url: str, address: str) -> None:
        try:
            ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise SourceRefused(f"{redact_url(url)}: {address} is not an IP address") from None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in n for n in self.allowed):
            return
        for net in (*ALWAYS_BLOCKED, *self.blocked):
            if ip.version == net.version and ip in net:
                raise SourceRefused(
                    f"{redact_url(url)} reaches {ip}, in {net}, where images are not fetched "
                    f"from (loopback, link-local, multicast and --image-url-blocked-network; "
                    f"--image-url-allowed-network exempts a network)")

    def check_url(self, url: str, *, sha256: str | None) -> None:
        """Refuse a URL by its form and by every address its host resolves to."""
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise SourceRefused(f"{redact_url(url)}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceRefused(f"{redact_url(url)}: only http:// and https:// URLs are fetched")
        if parts.scheme == "http" and not sha256:
            raise SourceRefused(f"{redact_url(url)} is plain http:// and the Image has no "
                                f"sha256 (spec.sha256 is required for an http:// source.url)")
        try:
            infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise SourceRefused(f"{redact_url(url)}: cannot resolve {parts.hostname}: "
                                f"{exc.strerror or exc}", transient=True) from None
        for info in infos:
            self.check_address(url, str(info[4][0]))
