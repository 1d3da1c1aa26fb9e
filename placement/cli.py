"""``kova placement serve`` and ``kova placement db upgrade``."""

from __future__ import annotations

import logging
import os
import socket

import click

from kova.placement.db.engine import default_database_url

ENV_URL = "KOVA_PLACEMENT_DATABASE_URL"
ENV_TOKEN_FILE = "KOVA_PLACEMENT_TOKEN_FILE"
ENV_K8S_AUTH = "KOVA_PLACEMENT_K8S_AUTH"  # JSON: kubeconfig, admins, readers
ENV_RANDOMIZE = "KOVA_PLACEMENT_RANDOMIZE_ALLOCATION_CANDIDATES"
_TRUE = ("1", "true", "yes", "on")
ENV_TLS_CERT = "KOVA_PLACEMENT_TLS_CERT_FILE"
ENV_TLS_KEY = "KOVA_PLACEMENT_TLS_KEY_FILE"
ENV_AUTH_STRATEGY = "KOVA_PLACEMENT_AUTH_STRATEGY"
ENV_POLICY_FILE = "KOVA_PLACEMENT_POLICY_FILE"
ENV_NEW_DEFAULTS = "KOVA_PLACEMENT_ENFORCE_NEW_DEFAULTS"
ENV_SCOPE = "KOVA_PLACEMENT_ENFORCE_SCOPE"
AUTH_STRATEGIES = ("keystone", "noauth2")
ENV_CORS = "KOVA_PLACEMENT_CORS"  # JSON: [allowed origins, allowed headers]
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


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
    return NoAuth()


def _factory():
    """uvicorn --factory entry point for multi-worker serving (reads env)."""
    from kova.placement.app import create_app

    url = os.environ.get(ENV_URL) or default_database_url()
    auth = _auth_from_env()
    cors = None
    if os.environ.get(ENV_CORS):
        import json

        from kova.placement.app import Cors

        origins, headers = json.loads(os.environ[ENV_CORS])
        cors = Cors(origins, headers)
    return create_app(url, auth=auth, migrate=False, cors=cors,
                      pool_size=int(os.environ.get("KOVA_PLACEMENT_POOL_SIZE", "10")),
                      randomize_allocation_candidates=(
                          os.environ.get(ENV_RANDOMIZE, "").strip().lower() in _TRUE))


def _check_serve_options(token_file, no_auth, k8s_mode, auth_strategy, policy_file,
                         tls_cert_file, tls_key_file) -> None:
    if sum([bool(token_file), no_auth, k8s_mode, bool(auth_strategy)]) != 1:
        raise click.UsageError(
            "choose one of --token-file, --k8s-admin/--k8s-reader (TokenReview), "
            "--auth-strategy keystone|noauth2, or --no-auth for local development")
    if policy_file and not auth_strategy:
        raise click.UsageError("--policy-file goes with --auth-strategy")
    if bool(tls_cert_file) != bool(tls_key_file):
        raise click.UsageError("--tls-cert-file and --tls-key-file go together")
    if no_auth:
        click.echo("WARNING: authentication is disabled (--no-auth); anyone who can "
                   "reach this port can change every allocation.", err=True)


def _serve_env(url, randomize, token_file, k8s, policy) -> None:
    """Hand the options to the worker processes (``_factory``) in the environment."""
    import json

    os.environ[ENV_URL] = url
    for name in (ENV_TOKEN_FILE, ENV_K8S_AUTH, ENV_AUTH_STRATEGY, ENV_POLICY_FILE):
        os.environ.pop(name, None)
    os.environ[ENV_RANDOMIZE] = "1" if randomize else "0"
    if token_file:
        os.environ[ENV_TOKEN_FILE] = os.path.abspath(token_file)
    elif k8s:
        admins, readers, kubeconfig = k8s
        os.environ[ENV_K8S_AUTH] = json.dumps({
            "kubeconfig": os.path.abspath(kubeconfig) if kubeconfig else None,
            "admins": list(admins), "readers": list(readers)})
    strategy, policy_file, new_defaults, scope = policy
    if strategy:
        os.environ[ENV_AUTH_STRATEGY] = strategy
        if policy_file:
            os.environ[ENV_POLICY_FILE] = os.path.abspath(policy_file)
        os.environ[ENV_NEW_DEFAULTS] = "1" if new_defaults else "0"
        os.environ[ENV_SCOPE] = "1" if scope else "0"


def _run(host, port, workers, log_level, tls_cert_file, tls_key_file) -> None:
    import uvicorn

    config = uvicorn.Config("kova.placement.cli:_factory", factory=True, host=host,
                            port=port, workers=workers, log_level=log_level.lower(),
                            access_log=False, ssl_certfile=tls_cert_file,
                            ssl_keyfile=tls_key_file)
    if workers <= 1:
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
    @click.option("--auth-strategy", envvar=ENV_AUTH_STRATEGY, default=None,
                  type=click.Choice(AUTH_STRATEGIES),
                  help="OpenStack identity with per-route policy: 'keystone' trusts the "
                       "headers of keystonemiddleware's auth_token in front of Kova; "
                       "'noauth2' is OpenStack's development mode (token 'admin' or "
                       "'user:project', roles in X-Roles).")
    @click.option("--policy-file", envvar=ENV_POLICY_FILE, default=None,
                  type=click.Path(dir_okay=False),
                  help="oslo.policy rule overrides (YAML or JSON), re-read when changed; "
                       "with --auth-strategy.")
    @click.option("--enforce-new-defaults/--no-enforce-new-defaults", envvar=ENV_NEW_DEFAULTS,
                  default=True, show_default=True,
                  help="Secure-RBAC defaults only; --no-enforce-new-defaults also accepts "
                       "the deprecated (legacy) rules, as oslo.policy does.")
    @click.option("--enforce-scope/--no-enforce-scope", envvar=ENV_SCOPE, default=True,
                  show_default=True,
                  help="Refuse system-scoped tokens on Placement's project-scoped rules.")
    @click.option("--cors-allowed-origin", multiple=True, metavar="ORIGIN",
                  help="Answer CORS requests from this origin (repeatable), as "
                       "oslo.middleware's [cors] allowed_origin.")
    @click.option("--cors-allow-headers", default="", metavar="H1,H2",
                  help="Request headers a CORS preflight may ask for.")
    @click.option("--log-level", default="info", show_default=True,
                  type=click.Choice(LOG_LEVELS, case_sensitive=False))
    def serve(database_url, host, port, workers, token_file, no_auth, k8s_admin, k8s_reader,
              kubeconfig, tls_cert_file, tls_key_file, randomize_allocation_candidates,
              auth_strategy, policy_file, enforce_new_defaults, enforce_scope,
              cors_allowed_origin, cors_allow_headers, log_level):
        """Serve the Placement API."""
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        k8s_mode = bool(k8s_admin or k8s_reader)
        _check_serve_options(token_file, no_auth, k8s_mode, auth_strategy, policy_file,
                             tls_cert_file, tls_key_file)
        from kova.placement.db.engine import upgrade

        url = database_url or default_database_url()
        upgrade(url)
        _serve_env(url, randomize_allocation_candidates, token_file,
                   (k8s_admin, k8s_reader, kubeconfig) if k8s_mode else None,
                   (auth_strategy, policy_file, enforce_new_defaults, enforce_scope))
        os.environ.pop(ENV_CORS, None)
        if cors_allowed_origin:
            import json

            headers = [h.strip() for h in cors_allow_headers.split(",") if h.strip()]
            os.environ[ENV_CORS] = json.dumps([list(cors_allowed_origin), headers])
        _run(host, port, workers, log_level, tls_cert_file, tls_key_file)

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
