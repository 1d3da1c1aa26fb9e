"""The request and response objects the handlers see, and the reply helpers
(JSON bodies, cache headers, the Accept check)."""

from __future__ import annotations

import datetime
import json
import time
import uuid as uuidlib
from email.utils import format_datetime
from typing import Any

from kova.placement import errors, limits, microversion
from kova.placement.validation import storable, validate


class Request:
    __slots__ = ("method", "path", "query", "headers", "body", "version", "request_id",
                 "app", "role", "route_name", "path_params", "credentials", "agent_node")

    def __init__(self, method: str, path: str, query: list[tuple[str, str]],
                 headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.version = microversion.Version(*microversion.MIN_VERSION)
        self.request_id = "req-" + str(uuidlib.uuid4())
        self.app: Any = None
        self.role = "admin"
        self.route_name = "unknown"
        self.path_params: dict[str, str] = {}
        self.credentials: Any = None
        #: The node of an agent's token (TokenReview mode), else None.
        self.agent_node: str | None = None

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
        except RecursionError:  # the decoder's own bound, far deeper than ours
            raise limits.json_too_deep() from None
        if not limits.json_depth_ok(data, self.body):
            raise limits.json_too_deep()
        if (b"\\u" in self.body or b"\xed" in self.body) and not storable(data):
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
    if value is None:
        second = int(time.time())
        if _NOW_DATE[0] != second:
            now = datetime.datetime.fromtimestamp(second, datetime.timezone.utc)
            _NOW_DATE[:] = [second, format_datetime(now, usegmt=True)]
        return _NOW_DATE[1]
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return format_datetime(value, usegmt=True)


#: ``cache_headers(req, NO_DATE)``: Cache-Control without Last-Modified, where
#: OpenStack Placement has no date to send (e.g. an empty inventory).
NO_DATE = object()


def cache_headers(req: Request, last_modified=None) -> dict[str, str]:
    """Last-Modified (None: now) and Cache-Control from microversion 1.15."""
    if not req.want(15):
        return {}
    if last_modified is NO_DATE:
        return {"cache-control": "no-cache"}
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
