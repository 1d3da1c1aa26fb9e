"""``kova agent run``: the compute agent's command line.  Its options are the
fields of :mod:`kova.agents.settings` (each with a ``KOVA_AGENT_*``
environment variable; the host name also from ``KOVA_HOST`` or ``NODE_NAME``,
which a DaemonSet sets from the downward API ``spec.nodeName``)."""

from __future__ import annotations

import logging
import signal

import click

from kova import log
from kova import settings as kova_settings
from kova.agents.settings import PREFIX, AgentSettings
from kova.agents.settings import default_host as _default_host  # noqa: F401 - used by tests


def register(group: click.Group) -> None:
    @group.command("run")
    @kova_settings.options(AgentSettings, PREFIX)
    def run(settings: AgentSettings) -> None:
        """Run the compute agent for one host."""
        if settings.network and settings.bridge:
            raise click.UsageError("--network and --bridge are exclusive")
        if settings.stream_cert_file and not (settings.stream_key_file
                                              and settings.stream_client_ca_file):
            raise click.UsageError("--stream-cert-file needs --stream-key-file and "
                                   "--stream-client-ca-file (mutual TLS, nothing less)")
        if settings.lease_renew_seconds >= settings.lease_duration_seconds:
            raise click.BadParameter("must be shorter than --lease-duration-seconds",
                                     param_hint="--lease-renew-seconds")
        log.setup("agent", settings.log_level, settings.log_format, host=settings.host)
        from kova.agents.app import Agent

        agent = Agent(settings)

        def _term(signum, _frame):
            logging.getLogger("kova.agents").info("signal %d: stopping (domains keep running)",
                                                  signum)
            agent.request_stop()

        signal.signal(signal.SIGTERM, _term)
        signal.signal(signal.SIGINT, _term)
        agent.run_forever()
