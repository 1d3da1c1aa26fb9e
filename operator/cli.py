"""``kova operator run`` and ``kova operator audit``; their options are the
fields of :mod:`kova.operator.settings`."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from kova import log
from kova import settings as kova_settings
from kova.operator.settings import PREFIX, ClientSettings, Settings

if TYPE_CHECKING:
    from kova.operator.audit import AuditReport


def setup_logging(level: str, fmt: str) -> None:
    log.setup("operator", level, fmt)
    kopf_level = logging.getLogger().level
    logging.getLogger("kopf").setLevel(kopf_level)
    if kopf_level > logging.DEBUG:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


@dataclass
class AuditSettings(ClientSettings):
    """``kova operator audit``: the client settings only."""


def register(group: click.Group) -> None:
    @group.command("run")
    @kova_settings.options(Settings, PREFIX)
    def run(settings: Settings) -> None:
        """Run the scheduler, conductor and host monitor."""
        if settings.all_namespaces and settings.namespaces:
            raise click.UsageError("--namespace and --all-namespaces exclude each other")
        settings.all_namespaces = not settings.namespaces
        setup_logging(settings.log_level, settings.log_format)
        sys.exit(run_operator(settings))

    @group.command("audit")
    @kova_settings.options(AuditSettings, PREFIX)
    @click.option("--heal", is_flag=True, help="Delete orphan allocations and claim missing ones.")
    @click.option("--namespace", "namespaces", multiple=True,
                  help="Only this namespace's Instances and allocations (repeatable; "
                       "default: all).")
    def audit(settings: AuditSettings, heal: bool, namespaces: tuple[str, ...]) -> None:
        """Compare Placement's allocations with the Instances; print a JSON report.

        Exit status 0 when clean (or everything was healed), 1 otherwise."""
        level = settings.log_level if settings.log_level != "info" else "warning"
        setup_logging(level, settings.log_format)
        report = asyncio.run(_audit(settings, heal, namespaces))
        click.echo(json.dumps(report.as_dict(), indent=2))
        remaining = report.heal_failed if heal else (not report.clean)
        sys.exit(1 if remaining else 0)


async def _audit(settings: ClientSettings, heal: bool,
                 namespaces: tuple[str, ...] = ()) -> AuditReport:
    from kova.kube import Credentials, Kube
    from kova.operator.audit import run_audit
    from kova.placement_client import PlacementClient, RetryPolicy

    kube = Kube(Credentials.load(settings.kubeconfig))
    placement = PlacementClient(settings.placement_url, settings.placement_token,
                                ca_file=settings.placement_ca_file,
                                retry=RetryPolicy(budget=settings.placement_retry_seconds))
    try:
        return await run_audit(kube, placement, heal=heal, namespaces=tuple(namespaces))
    finally:
        await kube.close()
        await placement.close()


def run_operator(settings: Settings) -> int:
    from kova.operator.metrics import serve

    if settings.metrics_port:
        serve(settings.metrics_port)

    async def main() -> None:
        from kova.operator.app import Operator

        operator = Operator(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if settings.peering and not settings.share_instances:
            from kova.operator.peering import ensure_peering

            await ensure_peering(operator.creds, settings)
        await operator.run(stop_flag=stop)

    asyncio.run(main())
    return 0
