"""``kova api serve``: Kova's API component (the Instance subresources behind
an APIService).  Its options are the fields of :mod:`kova.api.settings`
(each with a ``KOVA_API_*`` environment variable)."""

from __future__ import annotations

import asyncio
import logging

import click

from kova import log
from kova import settings as kova_settings
from kova.api.settings import PREFIX, ApiSettings
from kova.crds import names
from kova.loop import serve_until_signal


def register(group: click.Group) -> None:
    @group.command("serve", help="Serve the Instance subresources (console, vnc, log, start, "
                   "stop, restart, reboot, pause, unpause) of "
                   f"{names.SUBRESOURCE_API_VERSION}.")
    @kova_settings.options(ApiSettings, PREFIX)
    def serve(settings: ApiSettings) -> None:
        log.setup("api", settings.log_level, settings.log_format)
        try:
            asyncio.run(_run(settings))
        except ValueError as exc:  # e.g. no request-header CA published
            raise click.ClickException(str(exc)) from None


async def _run(settings: ApiSettings) -> None:
    from kova.api.server import ApiServer

    await serve_until_signal(ApiServer(settings), lambda: logging.getLogger("kova.api").info(
        "stopping %s", names.SUBRESOURCE_API_VERSION))
