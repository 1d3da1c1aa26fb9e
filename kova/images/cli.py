"""``kova images serve``: Kova's image store.  Its options are the fields of
:mod:`kova.images.settings` (each with a ``KOVA_IMAGES_*`` variable)."""

from __future__ import annotations

import asyncio

import click

from kova import log
from kova import settings as kova_settings
from kova.images.settings import PREFIX, ImagesSettings
from kova.loop import serve_until_signal


def register(group: click.Group) -> None:
    @group.command("serve", help="Store image files and serve them to the compute agents "
                   "(range requests, sha256; Kubernetes tokens, TokenReview + "
                   "SubjectAccessReview on the Image); uploads from kubectl kova image upload.")
    @kova_settings.options(ImagesSettings, PREFIX)
    def serve(settings: ImagesSettings) -> None:
        log.setup("images", settings.log_level, settings.log_format)
        asyncio.run(_run(settings))


async def _run(settings: ImagesSettings) -> None:
    from kova.images.server import ImageServer

    await serve_until_signal(ImageServer(settings))
