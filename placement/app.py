"""The Placement ASGI application.

A small router in front of plain synchronous handlers (they run in a worker
thread: the storage layer is synchronous SQLAlchemy).  Around every request:
a request id, microversion negotiation (400/406 before any handler), route
and method matching (404/405), authentication (401/403), the error body
format of OpenStack Placement and the version headers on every reply.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from urllib.parse import parse_qsl

import anyio
import sqlalchemy as sa

from kova.placement import agentpolicy, errorpage, errors, limits, metrics, microversion, routes
from kova.placement.auth import Authenticator, NoAuth
from kova.placement.cache import SnapshotCache
from kova.placement.db.engine import Database, default_database_url, upgrade
from kova.placement.objects.resource_provider import find_provider
from kova.placement.request import Request, Response, json_response

LOG = logging.getLogger("kova.placement")


async def _read_body(receive, max_body: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_body``
    bytes; chunks are joined once (linear in the size)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_body:
                raise limits.body_too_large(max_body)
            chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _declared_length(raw_headers) -> int | None:
    for name, value in raw_headers:
        if name.lower() == b"content-length":
            value = value.strip()
            # a malformed length is refused later (400, _check_content_type)
            return int(value) if value.isdigit() and len(value) <= 18 else None
    return None


async def _lifespan(app: PlacementApp, receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            app.db.dispose()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _raw_headers(req: Request, resp: Response) -> list[tuple[bytes, bytes]]:
    raw = [(b"x-openstack-request-id", req.request_id.encode())]
    if resp.content_type:
        raw.append((b"content-type", resp.content_type.encode()))
    raw.append((b"content-length", str(len(resp.body)).encode()))
    for k, v in resp.headers.items():
        raw.append((k.encode(), str(v).encode()))
    return raw


def _check_content_type(req: Request) -> None:
    """A body needs a Content-Type (400, before routing, as OpenStack)."""
    clen = req.headers.get("content-length")
    if clen and not req.headers.get("content-type"):
        try:
            length = int(clen)
        except ValueError:
            raise errors.BadRequest("content-length header must be an integer") from None
        if length > 0:
            raise errors.BadRequest("content-type header required when content-length > 0")


class Cors:
    """Cross-origin requests from browsers (oslo.middleware's cors filter):
    a preflight ``OPTIONS`` is answered here; replies to allowed origins
    carry ``Access-Control-Allow-Origin``."""

    def __init__(self, allowed_origins, allow_headers=()) -> None:
        self.origins = frozenset(allowed_origins)
        self.headers = frozenset(h.lower() for h in allow_headers)

    def is_preflight(self, req: Request) -> bool:
        return (req.method == "OPTIONS" and "origin" in req.headers
                and "access-control-request-method" in req.headers)

    def preflight(self, req: Request) -> Response:
        resp = Response(200, None, content_type=None)
        if req.headers["origin"] not in self.origins:
            return resp
        wanted = [h.strip().lower() for h in
                  req.headers.get("access-control-request-headers", "").split(",") if h.strip()]
        if any(h not in self.headers for h in wanted):
            return resp
        resp.headers["access-control-allow-origin"] = req.headers["origin"]
        resp.headers["access-control-allow-methods"] = req.headers[
            "access-control-request-method"]
        if wanted:
            resp.headers["access-control-allow-headers"] = ",".join(wanted)
        resp.headers["vary"] = "Origin"
        return resp

    def decorate(self, req: Request, resp: Response) -> None:
        origin = req.headers.get("origin")
        if origin in self.origins:
            resp.headers["access-control-allow-origin"] = origin
            resp.headers["vary"] = ", ".join(filter(None, [resp.headers.get("vary"), "Origin"]))


class PlacementApp:
    """The ASGI callable."""

    def __init__(self, database_url: str | None = None, *, auth: Authenticator | None = None,
                 migrate: bool = True, pool_size: int = 10,
                 fast_writes: bool | None = None,
                 randomize_allocation_candidates: bool = False,
                 cors: Cors | None = None,
                 max_request_body: int = limits.DEFAULT_MAX_BODY) -> None:
        self.cors = cors
        #: The largest request body accepted (413 above it, before auth).
        self.max_request_body = max_request_body
        self.database_url = database_url or default_database_url()
        if migrate:
            upgrade(self.database_url)
        self.db = Database(self.database_url, pool_size=pool_size)
        self.cache = SnapshotCache(self.db)
        if auth is None:
            LOG.warning("Placement app created without an authenticator: every request is "
                        "accepted (pass auth=NoAuth() to say so)")
            auth = NoAuth()
        elif isinstance(auth, NoAuth):
            LOG.warning("authentication is disabled (--no-auth): anyone who can reach this "
                        "service can change every allocation")
        self.auth = auth
        #: OpenStack's [placement] randomize_allocation_candidates: ``limit``
        #: samples at random instead of taking the first N.
        self.randomize_allocation_candidates = randomize_allocation_candidates
        self.routes = routes.compiled()
        self.limiter = anyio.CapacityLimiter(max(4, pool_size))
        if fast_writes is None:
            fast_writes = os.environ.get("KOVA_PLACEMENT_FAST_WRITES", "1") != "0"
        self.fast = None
        self.fast_handlers: dict = {}
        if fast_writes and self.db.is_postgres:
            from kova.placement.fastwrite import FastWriter

            self.fast = FastWriter(self.db, max_connections=max(2, pool_size // 2))
            self.db.on_dispose.append(self.fast.close)
            self.fast_handlers = routes.FAST

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(self, receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        raw_headers = scope.get("headers", [])
        query_string = scope.get("query_string", b"")
        refused = None
        body = b""
        try:
            limits.check_headers(raw_headers)
            limits.check_query(query_string)
            declared = _declared_length(raw_headers)
            if declared is not None and declared > self.max_request_body:
                raise limits.body_too_large(self.max_request_body)
            body = await _read_body(receive, self.max_request_body)
        except limits.TooLarge as exc:
            refused = exc
        if refused is None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
            query = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True,
                              max_num_fields=limits.MAX_QUERY_FIELDS)
        else:
            # Refused before anything else is looked at: only Accept (for
            # the error's media type) is taken from headers that are bounded
            # by the server's own limits at worst.
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in raw_headers if k.lower() == b"accept"
                       and len(v) <= limits.MAX_HEADER_VALUE}
            query = []
        req = Request(scope["method"], scope["path"], query, headers, body)
        req.app = self
        if refused is not None:
            resp = self.error_response(req, refused, versioned=False)
        else:
            resp = await self.dispatch(req)
        location = resp.headers.get("location")
        if location is not None and location.startswith("/"):
            # absolute, as OpenStack (webob) sends it
            host = headers.get("host") or "%s:%s" % tuple(scope.get("server") or ("", ""))
            resp.headers["location"] = f"{scope.get('scheme', 'http')}://{host}{location}"
        elapsed = time.perf_counter() - start
        metrics.observe_request(req.route_name, req.method, resp.status, elapsed)
        metrics.update_gauges(self)
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": _raw_headers(req, resp)})
        await send({"type": "http.response.body", "body": resp.body})
        if resp.status >= 500 and resp.status != 503:  # a 503 is logged where it arose
            LOG.error("%s %s %s -> %s", req.request_id, req.method, req.path, resp.status,
                      extra={"request_id": req.request_id})
        elif LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s %s -> %s (%.1f ms)", req.request_id, req.method, req.path,
                      resp.status, elapsed * 1000, extra={"request_id": req.request_id})

    # ------------------------------------------------------------ dispatch
    async def _service_route(self, req: Request) -> Response | None:
        """/healthz, /metrics and /openapi.json: no microversion, no auth."""
        if req.path == "/healthz":
            req.route_name = "healthz"
            return await anyio.to_thread.run_sync(self._healthz, limiter=self.limiter)
        if req.path == "/metrics":
            req.route_name = "metrics"
            body, ctype = metrics.render(self)
            return Response(200, body, content_type=ctype)
        if req.path == "/openapi.json":
            from kova.placement.openapi import openapi_json

            req.route_name = "openapi"
            return Response(200, openapi_json())
        return None

    async def _handle(self, req: Request) -> Response:
        """Negotiate, route, authenticate and run the handler (the fast
        one-statement version first where there is one)."""
        self.auth.identify(req)
        req.version = microversion.extract_version(req.headers)
        _check_content_type(req)
        if "\x00" in req.path or any("\x00" in k or "\x00" in v for k, v in req.query):
            raise errors.BadRequest("NUL characters are not allowed in the path or the "
                                    "query string")
        handler = routes.match(self.routes, req)
        if req.route_name != "root":
            self.auth.check(req)
            if req.agent_node is not None:
                await anyio.to_thread.run_sync(agentpolicy.authorize, self, req,
                                               req.agent_node, limiter=self.limiter)
        fast = self.fast_handlers.get((req.route_name, req.method))
        if fast is not None:
            resp = await fast(req)
            if resp is not None:
                return resp
        return await anyio.to_thread.run_sync(handler, req, limiter=self.limiter)

    async def dispatch(self, req: Request) -> Response:
        if self.cors is not None:
            if self.cors.is_preflight(req):
                return self.cors.preflight(req)
            resp = await self._dispatch(req)
            self.cors.decorate(req, resp)
            return resp
        return await self._dispatch(req)

    async def _dispatch(self, req: Request) -> Response:
        resp = await self._service_route(req)
        if resp is not None:
            return resp
        try:
            resp = await self._handle(req)
        except microversion.UnacceptableVersion as exc:
            # OpenStack answers a bad microversion without version headers
            return self.error_response(
                req, errors.NotAcceptable(f"Invalid microversion: {exc}"), versioned=False)
        except microversion.MalformedVersion as exc:
            return self.error_response(
                req, errors.BadRequest(f"Invalid microversion: {exc}"), versioned=False)
        except errors.BadRequest as exc:
            if (req.route_name, req.method) in routes.LOOKUP_FIRST:
                exc = await anyio.to_thread.run_sync(
                    self._missing_provider, req, limiter=self.limiter) or exc
            resp = self.error_response(req, exc)
        except errors.PlacementError as exc:
            resp = self.error_response(req, exc)
        except Exception as exc:  # noqa: BLE001 - the error body must still be JSON
            resp = self._unexpected(req, exc)
        resp.headers["openstack-api-version"] = f"placement {req.version}"
        resp.headers["vary"] = "openstack-api-version"
        return resp

    def _unexpected(self, req: Request, exc: Exception) -> Response:
        """The answer to an exception no handler turned into an error."""
        if database_unavailable(exc):
            # The database is restarting, failing over or unreachable (or
            # a transaction kept deadlocking): nothing was written, or the
            # client's generation check catches it on retry.  A 503 tells
            # clients to retry, not that Placement is broken.
            LOG.warning("%s %s %s: database unavailable: %s", req.request_id, req.method,
                        req.path, str(getattr(exc, "orig", exc)).strip().splitlines()[0])
            return self.error_response(req, errors.ServiceUnavailable(
                "The database is unavailable; please retry.",
                code=errors.DATABASE_UNAVAILABLE, headers={"retry-after": "1"}))
        LOG.error("%s unexpected error\n%s", req.request_id, traceback.format_exc(),
                  extra={"request_id": req.request_id})
        return self.error_response(req, errors.PlacementError(
            "An unexpected error occurred; see the service log "
            f"for request {req.request_id}."))

    def _missing_provider(self, req: Request) -> errors.NotFound | None:
        """A 404 if the path's provider does not exist (see routes.LOOKUP_FIRST)."""
        uuid = req.path_params.get("uuid", "")
        with self.db.read() as conn:
            if find_provider(conn, uuid) is not None:
                return None
        return errors.NotFound(f"No resource provider with uuid {uuid} found")

    def error_response(self, req: Request, exc: errors.PlacementError,
                       versioned: bool = True) -> Response:
        title = errors.TITLES.get(exc.status, "Error")
        ctype = errorpage.media_type(req.headers.get("accept"))
        headers = dict(exc.headers)
        if isinstance(exc, errors.BareUnauthorized) and ctype == "application/json":
            return json_response(errorpage.webob_json(exc.status, title), exc.status, headers)
        if ctype != "application/json":
            body = errorpage.page(exc.status, title, exc.detail, ctype)
            return Response(exc.status, body, headers, content_type=f"{ctype}; charset=UTF-8")
        error = {"status": exc.status, "title": title, "detail": exc.detail,
                 "request_id": req.request_id}
        if (versioned and req.want(23)) or getattr(exc, "always_code", False):
            error["code"] = exc.code
        if not versioned and exc.status == 406:
            error["max_version"] = microversion.max_version_string()
            error["min_version"] = microversion.min_version_string()
        return json_response({"errors": [error]}, exc.status, headers)

    def _healthz(self) -> Response:
        try:
            self.db.counter()
        except Exception as exc:  # noqa: BLE001
            return json_response({"status": "error", "detail": str(exc)}, 503)
        return json_response({"status": "ok"})


def database_unavailable(exc: BaseException) -> bool:
    """A database error that means "not now": the server is unreachable,
    restarting or ended the session (OperationalError, InterfaceError, or
    any DBAPI error that invalidated its connection)."""
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def create_app(database_url: str | None = None, **kwargs) -> PlacementApp:
    return PlacementApp(database_url, **kwargs)
