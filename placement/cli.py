"""``kova placement serve`` and ``kova placement db upgrade``."""

from __future__ import annotations

import logging
import os
import socket
import time

import click

from kova.placement.db.engine import default_database_url

ENV_URL = "KOVA_PLACEMENT_DATABASE_URL"
ENV_TOKEN_FILE = "KOVA_PLACEMENT_TOKEN_FILE"
ENV_K8S_AUTH = "KOVA_PLACEMENT_K8S_AUTH"  # JSON: kubeconfig, admins, readers
ENV_RANDOMIZE = "KOVA_PLACEMENT_RANDOMIZE_ALLOCATION_CANDIDATES"
_TRUE = ("1", "true", "yes", "on")
ENV_TLS_CERT = "KOVA_PLACEMENT_TLS_CERT_FILE"
ENV_TLS_KEY = "KOVA_PLACEMENT_TLS_KEY_FILE"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
ENV_DB_WAIT = "KOVA_PLACEMENT_DATABASE_WAIT"
log = logging.getLogger("kova.placement.cli")


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
            log.warning("the database is not reachable yet (%s); retrying in %.1fs", reason, pause)
            time.sleep(pause)
            delay = min(delay * 2, 5.0)


def _k8s_auth(spec: dict):
    from kubernetes import client, config

    from kova.placement.auth import TokenReviewAuth

    cfg = client.Configuration()
    if spec.get("kubeconfig"):
        config.load_kube_config(config_file=spec["kubeconfig"], client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    roles = {f"system:serviceaccount:{sa}": "admin" for sa in spec.get("admins", [])}
    roles.update({f"system:serviceaccount:{sa}": "reader" for sa in spec.get("readers", [])})
    return TokenReviewAuth(client.ApiClient(cfg), roles)


def _factory():
    """uvicorn --factory entry point for multi-worker serving (reads env)."""
    from kova.placement.app import create_app
    from kova.placement.auth import NoAuth, StaticTokenAuth

    url = os.environ.get(ENV_URL) or default_database_url()
    token_file = os.environ.get(ENV_TOKEN_FILE)
    k8s = os.environ.get(ENV_K8S_AUTH)
    if k8s:
        import json

        auth = _k8s_auth(json.loads(k8s))
    elif token_file:
        auth = StaticTokenAuth(token_file)
    else:
        auth = NoAuth()
    return create_app(url, auth=auth, migrate=False,
                      pool_size=int(os.environ.get("KOVA_PLACEMENT_POOL_SIZE", "10")),
                      randomize_allocation_candidates=(
                          os.environ.get(ENV_RANDOMIZE, "").strip().lower() in _TRUE))


def register(group: click.Group) -> None:
    @group.command("serve")
    @click.option("--database-url", envvar=ENV_URL, default=None,
                  help="SQLAlchemy URL (default: sqlite:///$KOVA_STATE/placement.db; "
                       "production: postgresql+psycopg://user@host/db).")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", default=8778, show_default=True, type=int)
    @click.option("--workers", default=1, show_default=True, type=int)
    @click.option("--token-file", envvar=ENV_TOKEN_FILE, default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="Static tokens: lines of '<admin|reader> <token>'.")
    @click.option("--no-auth", is_flag=True, help="Accept every request (development only).")
    @click.option("--k8s-admin", multiple=True, metavar="NAMESPACE:SERVICEACCOUNT",
                  help="Verify bearer tokens with the Kubernetes TokenReview API; this "
                       "service account gets the admin role (repeatable).")
    @click.option("--k8s-reader", multiple=True, metavar="NAMESPACE:SERVICEACCOUNT",
                  help="Service account with the read-only role (TokenReview mode).")
    @click.option("--kubeconfig", default=None, type=click.Path(dir_okay=False),
                  help="For TokenReview mode outside the cluster (default: in-cluster).")
    @click.option("--tls-cert-file", envvar=ENV_TLS_CERT, default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="Serve HTTPS with this PEM certificate (chain); needs --tls-key-file.")
    @click.option("--tls-key-file", envvar=ENV_TLS_KEY, default=None,
                  type=click.Path(exists=True, dir_okay=False),
                  help="The PEM private key of --tls-cert-file.")
    @click.option("--randomize-allocation-candidates/--no-randomize-allocation-candidates",
                  envvar=ENV_RANDOMIZE, default=False, show_default=True,
                  help="With `limit`, GET /allocation_candidates returns a random sample "
                       "of all candidates instead of the first N (and shuffles them "
                       "without a limit), as OpenStack's [placement] "
                       "randomize_allocation_candidates: schedulers that ask for few "
                       "candidates still spread over every host.")
    @click.option("--database-wait", envvar=ENV_DB_WAIT, default=60.0, show_default=True,
                  type=click.FloatRange(min=0),
                  help="Seconds to keep retrying an unreachable database at start "
                       "(the schema migrations) before giving up.")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(LOG_LEVELS, case_sensitive=False))
    def serve(database_url, host, port, workers, token_file, no_auth, k8s_admin, k8s_reader,
              kubeconfig, tls_cert_file, tls_key_file, randomize_allocation_candidates,
              database_wait, log_level):
        """Serve the Placement API."""
        import uvicorn

        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        k8s_mode = bool(k8s_admin or k8s_reader)
        if sum([bool(token_file), no_auth, k8s_mode]) != 1:
            raise click.UsageError(
                "choose one of --token-file, --k8s-admin/--k8s-reader (TokenReview), "
                "or --no-auth for local development")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise click.UsageError("--tls-cert-file and --tls-key-file go together")
        if no_auth:
            click.echo("WARNING: authentication is disabled (--no-auth); anyone who can "
                       "reach this port can change every allocation.", err=True)
        url = database_url or default_database_url()
        upgrade_when_reachable(url, database_wait)
        os.environ[ENV_URL] = url
        os.environ.pop(ENV_TOKEN_FILE, None)
        os.environ.pop(ENV_K8S_AUTH, None)
        os.environ[ENV_RANDOMIZE] = "1" if randomize_allocation_candidates else "0"
        if token_file:
            os.environ[ENV_TOKEN_FILE] = os.path.abspath(token_file)
        elif k8s_mode:
            import json

            os.environ[ENV_K8S_AUTH] = json.dumps({
                "kubeconfig": os.path.abspath(kubeconfig) if kubeconfig else None,
                "admins": list(k8s_admin), "readers": list(k8s_reader)})
        config = uvicorn.Config("kova.placement.cli:_factory", factory=True, host=host,
                                port=port, workers=workers, log_level=log_level.lower(),
                                access_log=False, ssl_certfile=tls_cert_file,
                                ssl_keyfile=tls_key_file)
        if workers <= 1:
            uvicorn.Server(config).run()
            return
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        # Worker processes rebuild the listening socket without its protocol
        # number, so asyncio does not set TCP_NODELAY on accepted connections
        # (every reply then waits ~40 ms for a delayed ACK).  Accepted sockets
        # inherit the option from the listener on Linux.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Multiprocess(config, sockets=[sock]).run()

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
