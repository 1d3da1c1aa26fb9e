"""The image store's settings: ``kova images serve`` options and their
``KOVA_IMAGES_*`` environment variables (see :mod:`kova.settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from kova.settings import format_setting, level_setting, setting

PREFIX = "KOVA_IMAGES_"

_FILE = click.Path(exists=True, dir_okay=False)


@dataclass
class ImagesSettings:
    dir: Path = setting(Path("/var/lib/kova/image-store"),
                        "Where the store keeps its image files (one directory per Image).",
                        type=click.Path(file_okay=False, path_type=Path))
    kubeconfig: str | None = setting(
        None, "kubeconfig file (default: in-cluster service account, then ~/.kube/config).",
        env="KUBECONFIG")
    bind_address: str = setting("0.0.0.0", "Address the server listens on.")
    port: int = setting(9468, "Port (0: any free port).", type=click.IntRange(0, 65535))
    tls_cert_file: str | None = setting(
        None, "Serving certificate (PEM); without it the store speaks plain HTTP (a local "
        "development stack only: tokens then cross the network in the clear).", type=_FILE)
    tls_key_file: str | None = setting(None, "The private key (PEM) of --tls-cert-file.",
                                       type=_FILE)
    public_url: str | None = setting(
        None, "The store's URL as the agents reach it, e.g. https://kova-images.kova-system.svc"
        ":9468; uploaded Images get source.url <public-url>/v1/images/<name> (default: the "
        "address and port it listens on).")
    max_bytes: int = setting(64 << 30, "Largest upload in bytes (0: no limit).",
                             type=click.IntRange(min=0))
    log_level: str = level_setting()
    log_format: str = format_setting()
