"""Placement's settings: ``kova placement serve`` options and their
``KOVA_PLACEMENT_*`` environment variables, each default written once here
(see :mod:`kova.settings`; the table in docs/placement.md is generated from
these fields)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from kova.placement.auth import DEFAULT_AUDIENCE
from kova.placement.limits import DEFAULT_MAX_BODY
from kova.placement.server import DEFAULT_HEADER_TIMEOUT
from kova.settings import format_setting, level_setting, setting

PREFIX = "KOVA_PLACEMENT_"
#: --auth-strategy: OpenStack identity with per-route policy.
AUTH_STRATEGIES = ("keystone", "noauth2")


@dataclass
class PlacementSettings:
    database_url: str | None = setting(
        None, "SQLAlchemy URL (default: sqlite:///$KOVA_STATE/placement.db; production: "
        "postgresql+psycopg://user@host/db).", show_default=False)
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8778, "Port to listen on.", type=click.IntRange(1, 65535))
    workers: int = setting(1, "Worker processes.", type=click.IntRange(min=1))
    pool_size: int = setting(10, "Database connections per worker process.",
                             type=click.IntRange(min=1))
    token_file: str | None = setting(
        None, "Static tokens: lines of '<admin|reader> <token>'.",
        type=click.Path(exists=True, dir_okay=False))
    no_auth: bool = setting(False, "Accept every request (development only).",
                            flag="--no-auth")
    k8s_admin: tuple[str, ...] = setting(
        factory=tuple, help="Verify bearer tokens with the Kubernetes TokenReview API; this "
        "service account gets the admin role (repeatable).", metavar="NAMESPACE:SERVICEACCOUNT")
    k8s_reader: tuple[str, ...] = setting(
        factory=tuple, help="Service account with the read-only role (TokenReview mode).",
        metavar="NAMESPACE:SERVICEACCOUNT")
    k8s_agent: tuple[str, ...] = setting(
        factory=tuple, help="TokenReview mode: the hypervisor agents' service account "
        "(repeatable). Each agent is known by the node of the pod its token is bound to and "
        "may write only that node's provider tree (no allocations, no aggregates). Goes with "
        "--k8s-admin, or with --token-file (the operator keeps its static admin token).",
        metavar="NAMESPACE:SERVICEACCOUNT")
    k8s_audience: str = setting(
        DEFAULT_AUDIENCE, "TokenReview mode: the audience a token must be issued for "
        "(comma-separated for several): a projected service-account token with this "
        "audience, not the pod's default token, which any API-server client accepts. "
        "'' accepts the API server's own audience (not recommended).", metavar="AUDIENCE")
    kubeconfig: str | None = setting(
        None, "For TokenReview mode outside the cluster (default: in-cluster).",
        type=click.Path(dir_okay=False))
    tls_cert_file: str | None = setting(
        None, "Serve HTTPS with this PEM certificate (chain); needs --tls-key-file.",
        type=click.Path(exists=True, dir_okay=False))
    tls_key_file: str | None = setting(
        None, "The PEM private key of --tls-cert-file.",
        type=click.Path(exists=True, dir_okay=False))
    allow_plain_http: bool = setting(
        False, "Serve tokens over plain HTTP on an address other than loopback (without "
        "--tls-cert-file): only behind a TLS-terminating proxy or on a network you trust.",
        flag="--allow-plain-http")
    randomize_allocation_candidates: bool = setting(
        False, "With `limit`, GET /allocation_candidates returns a random sample of all "
        "candidates instead of the first N (and shuffles them without a limit), as "
        "OpenStack's [placement] randomize_allocation_candidates: schedulers that ask for "
        "few candidates still spread over every host.")
    auth_strategy: str | None = setting(
        None, "OpenStack identity with per-route policy: 'keystone' trusts the headers of "
        "keystonemiddleware's auth_token in front of Kova; 'noauth2' is OpenStack's "
        "development mode (token 'admin' or 'user:project', roles in X-Roles).",
        type=click.Choice(AUTH_STRATEGIES))
    policy_file: str | None = setting(
        None, "oslo.policy rule overrides (YAML or JSON), re-read when changed; with "
        "--auth-strategy.", type=click.Path(dir_okay=False))
    enforce_new_defaults: bool = setting(
        True, "Secure-RBAC defaults only; --no-enforce-new-defaults also accepts the "
        "deprecated (legacy) rules, as oslo.policy does.")
    enforce_scope: bool = setting(
        True, "Refuse system-scoped tokens on Placement's project-scoped rules.")
    cors_allowed_origin: tuple[str, ...] = setting(
        factory=tuple, help="Answer CORS requests from this origin (repeatable), as "
        "oslo.middleware's [cors] allowed_origin.", metavar="ORIGIN")
    cors_allow_headers: str = setting(
        "", "Request headers a CORS preflight may ask for (comma-separated).",
        metavar="H1,H2", show_default=False)
    database_wait: float = setting(
        60.0, "Seconds to keep retrying an unreachable database at start (a Postgres started "
        "beside Placement, as the chart's bundled one, answers after it); then exit with the "
        "database's error.", type=click.FloatRange(min=0))
    max_request_body: int = setting(
        DEFAULT_MAX_BODY, "Largest request body accepted, in bytes: a larger one is a 413 before "
        "authentication (a declared Content-Length before a byte is read).",
        type=click.IntRange(min=1024))
    header_timeout: float = setting(
        DEFAULT_HEADER_TIMEOUT, "Seconds a client has to send a request's headers (from "
        "connecting, or from the previous response); then the connection is closed, so "
        "clients that send headers slowly cannot hold every connection.",
        type=click.FloatRange(min=0.1))
    log_level: str = level_setting()
    log_format: str = format_setting()
