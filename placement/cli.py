"""``kova placement serve`` and ``kova placement db upgrade``."""

from __future__ import annotations

import logging
import os
import socket
import time

import click

from kova import log
from kova import settings as kova_settings
from kova.placement.db.engine import default_database_url
from kova.placement.limits import DEFAULT_MAX_BODY
from kova.placement.settings import PREFIX, PlacementSettings

ENV_URL = "KOVA_PLACEMENT_DATABASE_URL"
ENV_TOKEN_FILE = "KOVA_PLACEMENT_TOKEN_FILE"
ENV_K8S_AUTH = "KOVA_PLACEMENT_K8S_AUTH"  # JSON, set by `serve` for its workers
ENV_NO_AUTH = "KOVA_PLACEMENT_NO_AUTH"
ENV_RANDOMIZE = "KOVA_PLACEMENT_RANDOMIZE_ALLOCATION_CANDIDATES"
_TRUE = ("1", "true", "yes", "on")
ENV_TLS_CERT = "KOVA_PLACEMENT_TLS_CERT_FILE"
ENV_TLS_KEY = "KOVA_PLACEMENT_TLS_KEY_FILE"
ENV_POOL = "KOVA_PLACEMENT_POOL_SIZE"
ENV_MAX_BODY = "KOVA_PLACEMENT_MAX_REQUEST_BODY"
ENV_LOG_LEVEL = "KOVA_PLACEMENT_LOG_LEVEL"
ENV_LOG_FORMAT = "KOVA_PLACEMENT_LOG_FORMAT"
ENV_AUTH_STRATEGY = "KOVA_PLACEMENT_AUTH_STRATEGY"
ENV_POLICY_FILE = "KOVA_PLACEMENT_POLICY_FILE"
ENV_NEW_DEFAULTS = "KOVA_PLACEMENT_ENFORCE_NEW_DEFAULTS"
ENV_SCOPE = "KOVA_PLACEMENT_ENFORCE_SCOPE"
ENV_CORS = "KOVA_PLACEMENT_CORS"  # JSON, set by `serve`: [allowed origins, allowed headers]
LOG = logging.getLogger("kova.placement.cli")


def upgrade_when_reachable(url: str, wait: float, upgrade=None) -> None:
    """Run the migrations, retrying while the database cannot be reached
    (a Postgres started beside Placement comes up after it) for up to
    ``wait`` seconds; then fail with the database's error."""
    if upgrade is None:
        from kova.placement.db.engine import upgrade
    from sqlalchemy.exc import OperationalError

    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            upgrade(url)
            return
        except OperationalError as exc:
            reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise click.ClickException(
                    f"the database is not reachable ({reason}); waited {wait:g}s "
                    f"(--database-wait)") from None
            pause = min(delay, remaining)
            LOG.warning("the database is not reachable yet (%s); retrying in %.1fs", reason, pause)
            time.sleep(pause)
            delay = min(delay * 2, 5.0)


def _k8s_auth(spec: dict):
    from kova.kube import Credentials, SyncKube
    from kova.placement.auth import AGENT, StaticTokenAuth, TokenReviewAuth

    kube = SyncKube(Credentials.load(spec.get("kubeconfig")), timeout=10.0)
    roles = {f"system:serviceaccount:{sa}": "admin" for sa in spec.get("admins", [])}
    roles.update({f"system:serviceaccount:{sa}": "reader" for sa in spec.get("readers", [])})
    roles.update({f"system:serviceaccount:{sa}": AGENT for sa in spec.get("agents", [])})
    static = StaticTokenAuth(spec["token_file"]) if spec.get("token_file") else None
    return TokenReviewAuth(kube, roles, audiences=spec.get("audiences") or None, static=static)


def _policy_auth(strategy: str):
    from kova.placement.auth import KeystoneAuth, NoAuth2
    from kova.placement.policy import Enforcer

    enforcer = Enforcer(
        enforce_new_defaults=os.environ.get(ENV_NEW_DEFAULTS, "1").lower() in _TRUE,
        enforce_scope=os.environ.get(ENV_SCOPE, "1").lower() in _TRUE,
        policy_file=os.environ.get(ENV_POLICY_FILE) or None)
    return (KeystoneAuth if strategy == "keystone" else NoAuth2)(enforcer)


def _auth_from_env():
    from kova.placement.auth import NoAuth, StaticTokenAuth

    token_file = os.environ.get(ENV_TOKEN_FILE)
    k8s = os.environ.get(ENV_K8S_AUTH)
    strategy = os.environ.get(ENV_AUTH_STRATEGY)
    if strategy:
        return _policy_auth(strategy)
    if k8s:
        import json

        return _k8s_auth(json.loads(k8s))
    if token_file:
        return StaticTokenAuth(token_file)
    if os.environ.get(ENV_NO_AUTH, "").strip().lower() in _TRUE:
        return NoAuth()
    # never a silent fallback to accepting everyone
    raise RuntimeError("no authentication configured for Placement: set "
                       f"{ENV_TOKEN_FILE}, {ENV_K8S_AUTH}, {ENV_AUTH_STRATEGY} or, for "
                       f"local development only, {ENV_NO_AUTH}=1")


def _factory():
    """uvicorn --factory entry point for multi-worker serving (reads env)."""
    from kova.placement.app import create_app

    log.setup("placement", os.environ.get(ENV_LOG_LEVEL, "info"),
              os.environ.get(ENV_LOG_FORMAT, "auto"))
    url = os.environ.get(ENV_URL) or default_database_url()
    auth = _auth_from_env()
    cors = None
    if os.environ.get(ENV_CORS):
        import json

        from kova.placement.app import Cors

        origins, headers = json.loads(os.environ[ENV_CORS])
        cors = Cors(origins, headers)
    return create_app(url, auth=auth, migrate=False, cors=cors,
                      pool_size=int(os.environ.get(ENV_POOL, "10")),
                      max_request_body=int(os.environ.get(ENV_MAX_BODY, DEFAULT_MAX_BODY)),
                      randomize_allocation_candidates=(
                          os.environ.get(ENV_RANDOMIZE, "").strip().lower() in _TRUE))


def _check_serve_options(s: PlacementSettings) -> None:
    k8s_mode = bool(s.k8s_admin or s.k8s_reader)
    if sum([bool(s.token_file), s.no_auth, k8s_mode, bool(s.auth_strategy)]) != 1:
        raise click.UsageError(
            "choose one of --token-file, --k8s-admin/--k8s-reader (TokenReview), "
            "--auth-strategy keystone|noauth2, or --no-auth for local development")
    if s.k8s_agent and not (s.token_file or k8s_mode):
        raise click.UsageError("--k8s-agent goes with --k8s-admin or --token-file (the "
                               "operator's identity)")
    if s.policy_file and not s.auth_strategy:
        raise click.UsageError("--policy-file goes with --auth-strategy")
    if bool(s.tls_cert_file) != bool(s.tls_key_file):
        raise click.UsageError("--tls-cert-file and --tls-key-file go together")
    if plain_http_exposed(s) and not s.allow_plain_http:
        raise click.UsageError(
            f"refusing to take tokens over plain HTTP on {s.host}: give --tls-cert-file and "
            "--tls-key-file, listen on a loopback address, or pass --allow-plain-http "
            "(behind a TLS-terminating proxy, or on a network you trust)")


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def plain_http_exposed(s: PlacementSettings) -> bool:
    """Tokens (every mode but --no-auth) would cross a network in clear text."""
    return not s.no_auth and not s.tls_cert_file and not _loopback(s.host)


def _serve_env(s: PlacementSettings, url: str) -> None:
    """Hand the settings to the worker processes (``_factory``) in the environment."""
    import json

    os.environ.update({ENV_URL: url, ENV_RANDOMIZE: "1" if s.randomize_allocation_candidates
                       else "0", ENV_POOL: str(s.pool_size), ENV_LOG_LEVEL: s.log_level,
                       ENV_MAX_BODY: str(s.max_request_body),
                       ENV_LOG_FORMAT: s.log_format})
    for name in (ENV_TOKEN_FILE, ENV_K8S_AUTH, ENV_AUTH_STRATEGY, ENV_POLICY_FILE, ENV_CORS,
                 ENV_NO_AUTH):
        os.environ.pop(name, None)
    if s.no_auth:
        os.environ[ENV_NO_AUTH] = "1"
    elif s.token_file and not s.k8s_agent:
        os.environ[ENV_TOKEN_FILE] = os.path.abspath(s.token_file)
    elif s.k8s_admin or s.k8s_reader or s.k8s_agent:
        os.environ[ENV_K8S_AUTH] = json.dumps({
            "kubeconfig": os.path.abspath(s.kubeconfig) if s.kubeconfig else None,
            "token_file": os.path.abspath(s.token_file) if s.token_file else None,
            "admins": list(s.k8s_admin), "readers": list(s.k8s_reader),
            "agents": list(s.k8s_agent),
            "audiences": [a.strip() for a in s.k8s_audience.split(",") if a.strip()]})
    elif s.auth_strategy:
        os.environ[ENV_AUTH_STRATEGY] = s.auth_strategy
        if s.policy_file:
            os.environ[ENV_POLICY_FILE] = os.path.abspath(s.policy_file)
        os.environ[ENV_NEW_DEFAULTS] = "1" if s.enforce_new_defaults else "0"
        os.environ[ENV_SCOPE] = "1" if s.enforce_scope else "0"
    if s.cors_allowed_origin:
        headers = [h.strip() for h in s.cors_allow_headers.split(",") if h.strip()]
        os.environ[ENV_CORS] = json.dumps([list(s.cors_allowed_origin), headers])


def _run(s: PlacementSettings) -> None:
    import uvicorn

    from kova.placement.server import protocol_class

    config = uvicorn.Config("kova.placement.cli:_factory", factory=True, host=s.host,
                            port=s.port, workers=s.workers, log_level=s.log_level,
                            http=protocol_class(s.header_timeout),
                            log_config=None, access_log=False,
                            ssl_certfile=s.tls_cert_file, ssl_keyfile=s.tls_key_file)
    if s.workers <= 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    from kova.placement import metrics

    metrics.prepare_multiprocess()
    sock = config.bind_socket()
    # Worker processes rebuild the listening socket without its protocol
    # number, so asyncio does not set TCP_NODELAY on accepted connections
    # (every reply then waits ~40 ms for a delayed ACK).  Accepted sockets
    # inherit the option from the listener on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        metrics.cleanup_multiprocess()


def register(group: click.Group) -> None:
    @group.command("serve")
    @kova_settings.options(PlacementSettings, PREFIX)
    def serve(settings: PlacementSettings):
        """Serve the Placement API."""

        s = settings
        _check_serve_options(s)
        log.setup("placement", s.log_level, s.log_format)
        if s.no_auth:
            LOG.warning("authentication is disabled (--no-auth); anyone who can reach this "
                        "port can change every allocation.")
        elif plain_http_exposed(s):
            LOG.warning("serving on %s over plain HTTP (--allow-plain-http): tokens cross the "
                        "network in clear text", s.host)
        url = s.database_url or default_database_url()
        upgrade_when_reachable(url, s.database_wait)
        _serve_env(s, url)
        _run(s)

    @group.group("db")
    def db() -> None:
        """Placement database maintenance."""

    @db.command("upgrade")
    @click.option("--database-url", envvar=ENV_URL, default=None)
    @click.option("--revision", default="head", show_default=True)
    def db_upgrade(database_url, revision):
        """Apply the schema migrations (and seed standard classes/traits)."""
        from kova.placement.db.engine import upgrade

        url = database_url or default_database_url()
        upgrade(url, revision)
        click.echo(f"placement database at {revision}")

    @group.command("openapi")
    def openapi_cmd():
        """Print the OpenAPI 3.1 description of the Placement API (JSON)."""
        from kova.placement.openapi import openapi_json

        click.echo(openapi_json())
