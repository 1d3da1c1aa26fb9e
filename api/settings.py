"""The API component's settings: ``kova api serve`` options and their
``KOVA_API_*`` environment variables, each default written once here (see
:mod:`kova.settings`; the table in docs/api-component.md is generated from
these fields)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from kova.crds import names
from kova.settings import format_setting, level_setting, off_if_negative, setting

PREFIX = "KOVA_API_"

_FILE = click.Path(exists=True, dir_okay=False)


def _names(value: tuple[str, ...]) -> tuple[str, ...]:
    """Repeated flags, or one value holding several (comma separated)."""
    return tuple(n.strip() for v in value for n in v.split(",") if n.strip())


@dataclass
class ApiSettings:
    kubeconfig: str | None = setting(
        None, "kubeconfig file (default: in-cluster service account, then ~/.kube/config).",
        env="KUBECONFIG")
    bind_address: str = setting("0.0.0.0", "Address the HTTPS server listens on.")
    port: int = setting(8443, "HTTPS port (0: any free port).",
                        type=click.IntRange(0, 65535))
    tls_cert_file: str = setting(
        "", "Serving certificate (PEM); the APIService's caBundle must trust it and it must "
        "name <service>.<namespace>.svc.", type=_FILE, required=True)
    tls_key_file: str = setting("", "The private key (PEM) of --tls-cert-file.", type=_FILE,
                                required=True)
    requestheader_client_ca_file: str | None = setting(
        None, "CA of the API server's front-proxy client certificate (default: what the API "
        "server publishes in kube-system/extension-apiserver-authentication).", type=_FILE)
    requestheader_allowed_names: tuple[str, ...] = setting(
        (), "Common name the front-proxy certificate may carry (repeatable or comma "
        "separated; default: as published by the API server).", metavar="NAME",
        convert=_names)
    agent_client_cert_file: str = setting(
        "", f"Client certificate (PEM, common name {names.STREAM_CLIENT_NAME}) for the "
        "agents' stream endpoints.", type=_FILE, required=True)
    agent_client_key_file: str = setting(
        "", "The private key (PEM) of --agent-client-cert-file.", type=_FILE, required=True)
    agent_ca_file: str = setting("", "CA that signed the agents' stream certificates.",
                                 type=_FILE, required=True)
    agent_server_name: str = setting(
        names.STREAM_SERVER_NAME, "Name the agents' certificates are checked against "
        "(whatever address a Host advertises).")
    action_timeout: float = setting(
        120.0, "Seconds a power action waits for status.powerState to confirm it.",
        type=click.FloatRange(min=1))
    snapshot_attempts: int = setting(
        3, "How many times a snapshot is taken when the agent loses it (restarted midway) "
        "before its action ends Error.", type=click.IntRange(min=1))
    snapshot_resume_seconds: float = setting(
        60.0, "How often the API component looks for snapshots in progress that no task of "
        "its own follows (after its restart or a lost agent connection).",
        type=click.FloatRange(min=0.5))
    metrics_port: int = setting(
        9467, "/metrics, /healthz and /readyz on this port (plain HTTP; 0: off; -1 is taken "
        "as 0).", type=click.IntRange(min=-1), convert=off_if_negative)
    metrics_bind: str = setting("0.0.0.0", "Address the metrics server listens on.")
    log_level: str = level_setting()
    log_format: str = format_setting()
