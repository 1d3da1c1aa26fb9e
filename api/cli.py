"""``kova api serve``: Kova's API component (the Instance subresources behind
an APIService).  Every option has an environment variable ``KOVA_API_*``."""

from __future__ import annotations

import asyncio
import logging
import signal

import click


def register(group: click.Group) -> None:
    @group.command("serve")
    @click.option("--kubeconfig", envvar="KUBECONFIG", default=None,
                  help="kubeconfig file (default: in-cluster service account, then "
                       "~/.kube/config).")
    @click.option("--bind-address", envvar="KOVA_API_BIND_ADDRESS", default="0.0.0.0",
                  show_default=True)
    @click.option("--port", envvar="KOVA_API_PORT", default=8443, show_default=True,
                  type=click.IntRange(0, 65535), help="HTTPS port (0: any free port).")
    @click.option("--tls-cert-file", envvar="KOVA_API_TLS_CERT_FILE", required=True,
                  type=click.Path(exists=True, dir_okay=False),
                  help="Serving certificate (PEM); the APIService's caBundle must trust it "
                       "and it must name <service>.<namespace>.svc.")
    @click.option("--tls-key-file", envvar="KOVA_API_TLS_KEY_FILE", required=True,
                  type=click.Path(exists=True, dir_okay=False), help="Its private key.")
    @click.option("--requestheader-client-ca-file", envvar="KOVA_API_REQUESTHEADER_CA_FILE",
                  default=None, type=click.Path(exists=True, dir_okay=False),
                  help="CA of the API server's front-proxy client certificate (default: "
                       "what the API server publishes in kube-system/"
                       "extension-apiserver-authentication).")
    @click.option("--requestheader-allowed-names", envvar="KOVA_API_REQUESTHEADER_ALLOWED_NAMES",
                  default=None,
                  help="Comma-separated common names the front-proxy certificate may carry "
                       "(default: as published by the API server).")
    @click.option("--agent-client-cert-file", envvar="KOVA_API_AGENT_CLIENT_CERT_FILE",
                  required=True, type=click.Path(exists=True, dir_okay=False),
                  help="Client certificate (PEM, common name kova-api) for the agents' stream "
                       "endpoints.")
    @click.option("--agent-client-key-file", envvar="KOVA_API_AGENT_CLIENT_KEY_FILE",
                  required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--agent-ca-file", envvar="KOVA_API_AGENT_CA_FILE", required=True,
                  type=click.Path(exists=True, dir_okay=False),
                  help="CA that signed the agents' stream certificates.")
    @click.option("--agent-server-name", envvar="KOVA_API_AGENT_SERVER_NAME",
                  default="kova-agent", show_default=True,
                  help="Name the agents' certificates are checked against (whatever address "
                       "a Host advertises).")
    @click.option("--action-timeout", envvar="KOVA_API_ACTION_TIMEOUT", default=120.0,
                  show_default=True, type=click.FloatRange(min=1),
                  help="Seconds a power action waits for status.powerState to confirm it.")
    @click.option("--metrics-port", envvar="KOVA_API_METRICS_PORT", default=9467,
                  show_default=True, type=int, help="/metrics and /healthz (plain HTTP); "
                  "-1 disables.")
    @click.option("--metrics-bind", envvar="KOVA_API_METRICS_BIND", default="0.0.0.0",
                  show_default=True)
    @click.option("--log-level", envvar="KOVA_API_LOG_LEVEL", default="info", show_default=True,
                  type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
    @click.option("--log-format", envvar="KOVA_API_LOG_FORMAT",
                  type=click.Choice(["text", "json"]), default="text", show_default=True)
    def serve(kubeconfig, bind_address, port, tls_cert_file, tls_key_file,
              requestheader_client_ca_file, requestheader_allowed_names,
              agent_client_cert_file, agent_client_key_file, agent_ca_file, agent_server_name,
              action_timeout, metrics_port, metrics_bind, log_level, log_format):
        """Serve the Instance subresources (console, vnc, log, start, stop, restart,
        reboot, pause, unpause) of subresources.kova.dev/v1alpha1."""
        from kova.agents.cli import setup_logging
        from kova.api.server import ApiConfig

        setup_logging(log_level, log_format)
        allowed = None
        if requestheader_allowed_names is not None:
            allowed = tuple(n.strip() for n in requestheader_allowed_names.split(",")
                            if n.strip())
        cfg = ApiConfig(
            kubeconfig=kubeconfig, bind=bind_address, port=port, tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file, requestheader_client_ca_file=requestheader_client_ca_file,
            requestheader_allowed_names=allowed, agent_client_cert_file=agent_client_cert_file,
            agent_client_key_file=agent_client_key_file, agent_ca_file=agent_ca_file,
            agent_server_name=agent_server_name, action_timeout=action_timeout,
            metrics_port=None if metrics_port < 0 else metrics_port, metrics_bind=metrics_bind)
        try:
            asyncio.run(_run(cfg))
        except ValueError as exc:  # e.g. no request-header CA published
            raise click.ClickException(str(exc)) from None


async def _run(cfg) -> None:
    from kova.api.server import ApiServer

    server = ApiServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        logging.getLogger("kova.api").info("stopping")
        await server.stop()
