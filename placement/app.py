"""The Placement ASGI application.

A small router in front of plain synchronous handlers (they run in a worker
thread: the storage layer is synchronous SQLAlchemy).  Around every request:
a request id, microversion negotiation (400/406 before any handler), route
and method matching (404/405), authentication (401/403), the error body
format of OpenStack Placement and the version headers on every reply.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
import uuid as uuidlib
from email.utils import format_datetime
from typing import Callable
from urllib.parse import parse_qsl

import anyio
import jsonschema
import sqlalchemy as sa

from kova.placement import errors, metrics, microversion
from kova.placement.auth import Authenticator, NoAuth
from kova.placement.cache import SnapshotCache
from kova.placement.db.engine import Database, default_database_url, upgrade

LOG = logging.getLogger("kova.placement")

_FORMAT_CHECKER = jsonschema.FormatChecker()


@_FORMAT_CHECKER.checks("uuid")
def _is_uuid(value) -> bool:
    if not isinstance(value, str):
        return True
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def canonical_uuid(value: str) -> str:
    """``value`` (any form ``uuid.UUID`` accepts: braces, urn:, no dashes,
    upper case) as the 36-character lower-case form the database stores."""
    return str(uuidlib.UUID(value))


def is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


# Keyed by id(): schemas must be long-lived objects (module constants or
# memoised per microversion), never built per request.
_VALIDATORS: dict[int, tuple] = {}


def validate(data, schema: dict, what: str = "JSON does not validate") -> None:
    entry = _VALIDATORS.get(id(schema))
    if entry is None:
        from kova.placement.schemas.fast import compile_schema

        entry = (schema, compile_schema(schema),
                 jsonschema.Draft4Validator(schema, format_checker=_FORMAT_CHECKER))
        _VALIDATORS[id(schema)] = entry
    _schema, fast, validator = entry
    if fast(data):
        return
    try:
        validator.validate(data)
    except jsonschema.ValidationError as exc:
        raise errors.BadRequest(f"{what}: {exc.message}") from None


def _storable(value) -> bool:
    """No NUL character and no unpaired surrogate in any string (key or
    value): Postgres text cannot hold NUL, and neither is valid UTF-8."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


#: Routes where OpenStack Placement looks the provider up before it reads
#: the body: a bad body for a missing provider is 404 there, not 400.  Kova
#: validates first (the fast write paths need no lookup) and, only when that
#: fails, checks the provider, so the answer is the same as OpenStack's.
_LOOKUP_FIRST = frozenset({("resource_provider", "PUT"), ("inventories", "PUT"),
                           ("inventories", "POST"), ("inventory", "PUT"),
                           ("provider_aggregates", "PUT")})


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "version", "request_id",
                 "app", "role", "route_name", "path_params")

    def __init__(self, method: str, path: str, query: list[tuple[str, str]],
                 headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.version = microversion.Version(*microversion.MIN_VERSION)
        self.request_id = "req-" + str(uuidlib.uuid4())
        self.app: PlacementApp | None = None
        self.role = "admin"
        self.route_name = "unknown"
        self.path_params: dict[str, str] = {}

    # query helpers
    def getall(self, key: str) -> list[str]:
        return [v for k, v in self.query if k == key]

    def get(self, key: str, default=None):
        for k, v in self.query:
            if k == key:
                return v
        return default

    def query_dict(self) -> dict[str, str]:
        """Last value per key, like webob's MultiDict in dict() form."""
        return {k: v for k, v in self.query}

    def json(self, schema: dict | None = None):
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise errors.UnsupportedMediaType(
                "The media type %s is not supported, use application/json"
                % (ctype or "None"))
        try:
            data = json.loads(self.body or b"")
        except ValueError as exc:
            raise errors.BadRequest(f"Malformed JSON: {exc}") from None
        if (b"\\u" in self.body or b"\xed" in self.body) and not _storable(data):
            # only \u escapes, or UTF-8-encoded surrogates (0xED 0xA0..0xBF,
            # which json.loads lets through), can put these into a string
            raise errors.BadRequest(
                "Malformed JSON: strings may not contain NUL characters or unpaired "
                "surrogates")
        if schema is not None:
            validate(data, schema)
        return data

    def want(self, minor: int) -> bool:
        return self.version >= (1, minor)


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(self, status: int = 200, body: bytes | str | None = None,
                 headers: dict[str, str] | None = None,
                 content_type: str | None = "application/json") -> None:
        self.status = status
        if isinstance(body, str):
            body = body.encode()
        self.body = body or b""
        self.headers = headers or {}
        self.content_type = content_type if self.body else None


def json_response(data, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(data, separators=(", ", ": ")), headers)


def no_content(status: int = 204, headers: dict | None = None) -> Response:
    return Response(status, None, headers, None)


_NOW_DATE: list = [0, ""]  # (second, its HTTP date): most replies carry "now"


def http_date(value) -> str:
    import datetime

    if value is None:
        second = int(time.time())
        if _NOW_DATE[0] != second:
            now = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
            _NOW_DATE[:] = [second, format_datetime(now, usegmt=True)]
        return _NOW_DATE[1]
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return format_datetime(value, usegmt=True)


def cache_headers(req: Request, last_modified=None) -> dict[str, str]:
    """Last-Modified and Cache-Control from microversion 1.15."""
    if not req.want(15):
        return {}
    return {"last-modified": http_date(last_modified), "cache-control": "no-cache"}


def check_accept(req: Request) -> None:
    accept = req.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        mtype = part.split(";")[0].strip().lower()
        if mtype in ("application/json", "*/*", "application/*"):
            return
    raise errors.NotAcceptable("Only application/json is provided")


Handler = Callable[[Request], Response]


class Route:
    def __init__(self, name: str, pattern: str, methods: dict[str, Handler]) -> None:
        self.name = name
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.regex = re.compile("^" + regex + "$")
        self.methods = methods


class PlacementApp:
    """The ASGI callable."""

    def __init__(self, database_url: str | None = None, *, auth: Authenticator | None = None,
                 migrate: bool = True, pool_size: int = 10,
                 fast_writes: bool | None = None,
                 randomize_allocation_candidates: bool = False) -> None:
        from kova.placement.handlers import FAST, ROUTES

        self.database_url = database_url or default_database_url()
        if migrate:
            upgrade(self.database_url)
        self.db = Database(self.database_url, pool_size=pool_size)
        self.cache = SnapshotCache(self.db)
        self.auth = auth or NoAuth()
        #: OpenStack's [placement] randomize_allocation_candidates: ``limit``
        #: samples at random instead of taking the first N.
        self.randomize_allocation_candidates = randomize_allocation_candidates
        self.routes = [Route(name, pattern, methods) for name, pattern, methods in ROUTES]
        self.limiter = anyio.CapacityLimiter(max(4, pool_size))
        if fast_writes is None:
            fast_writes = os.environ.get("KOVA_PLACEMENT_FAST_WRITES", "1") != "0"
        self.fast = None
        self.fast_handlers: dict = {}
        if fast_writes and self.db.is_postgres:
            from kova.placement.fastwrite import FastWriter

            self.fast = FastWriter(self.db, max_connections=max(2, pool_size // 2))
            self.db.on_dispose.append(self.fast.close)
            self.fast_handlers = FAST

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.db.dispose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        req = Request(scope["method"], scope["path"], query, headers, body)
        req.app = self
        start = time.perf_counter()
        resp = await self.dispatch(req)
        elapsed = time.perf_counter() - start
        metrics.observe_request(req.route_name, req.method, resp.status, elapsed)
        raw_headers = [(b"x-openstack-request-id", req.request_id.encode())]
        if resp.content_type:
            raw_headers.append((b"content-type", resp.content_type.encode()))
        raw_headers.append((b"content-length", str(len(resp.body)).encode()))
        for k, v in resp.headers.items():
            raw_headers.append((k.encode(), str(v).encode()))
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": raw_headers})
        await send({"type": "http.response.body", "body": resp.body})
        if resp.status >= 500 and resp.status != 503:  # a 503 is logged where it arose
            LOG.error("%s %s %s -> %s", req.request_id, req.method, req.path, resp.status,
                      extra={"request_id": req.request_id})
        elif LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s %s -> %s (%.1f ms)", req.request_id, req.method, req.path,
                      resp.status, elapsed * 1000, extra={"request_id": req.request_id})

    # ------------------------------------------------------------ dispatch
    async def dispatch(self, req: Request) -> Response:
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
        try:
            try:
                req.version = microversion.extract_version(req.headers)
            except microversion.MalformedVersion as exc:
                raise errors.BadRequest(f"Invalid microversion: {exc}") from None
            except microversion.UnacceptableVersion as exc:
                resp = self.error_response(
                    req, errors.NotAcceptable(f"Invalid microversion: {exc}"), versioned=False)
                return resp
            if "\x00" in req.path or any("\x00" in k or "\x00" in v for k, v in req.query):
                raise errors.BadRequest("NUL characters are not allowed in the path or the "
                                        "query string")
            handler = self._match(req)
            if req.route_name != "root":
                self.auth.check(req)
            resp = None
            fast = self.fast_handlers.get((req.route_name, req.method))
            if fast is not None:
                resp = await fast(req)
            if resp is None:
                resp = await anyio.to_thread.run_sync(handler, req, limiter=self.limiter)
        except errors.BadRequest as exc:
            if (req.route_name, req.method) in _LOOKUP_FIRST:
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
            # The database is restarting, failing over or unreachable (or a
            # transaction kept deadlocking): nothing was written, or the
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
        """A 404 if the path's provider does not exist (see _LOOKUP_FIRST)."""
        from kova.placement import store

        uuid = req.path_params.get("uuid", "")
        with self.db.read() as conn:
            if store.find_provider(conn, uuid) is not None:
                return None
        return errors.NotFound(f"No resource provider with uuid {uuid} found")

    def _match(self, req: Request) -> Handler:
        for route in self.routes:
            m = route.regex.match(req.path)
            if m is None:
                continue
            req.route_name = route.name
            req.path_params = m.groupdict()
            handler = route.methods.get(req.method)
            if handler is None:
                allow = ", ".join(sorted(route.methods))
                raise errors.MethodNotAllowed(
                    "The method specified is not allowed for this resource.",
                    headers={"allow": allow})
            return handler
        raise errors.NotFound("The resource could not be found.")

    def error_response(self, req: Request, exc: errors.PlacementError,
                       versioned: bool = True) -> Response:
        body = {"status": exc.status, "title": errors.TITLES.get(exc.status, "Error"),
                "detail": exc.detail, "request_id": req.request_id}
        if versioned and req.want(23):
            body["code"] = exc.code
        if not versioned and exc.status == 406:
            body["max_version"] = microversion.max_version_string()
            body["min_version"] = microversion.min_version_string()
        resp = json_response({"errors": [body]}, exc.status, dict(exc.headers))
        if not versioned:
            resp.headers["openstack-api-version"] = f"placement {req.version}"
            resp.headers["vary"] = "openstack-api-version"
        return resp

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
