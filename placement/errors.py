"""Error codes and the exception every handler raises for an HTTP error.

The codes are the strings OpenStack Placement puts in the ``code`` member of
its error bodies (from microversion 1.23 on); clients match on them.
"""

from __future__ import annotations

DEFAULT = "placement.undefined_code"
INVENTORY_INUSE = "placement.inventory.inuse"
CONCURRENT_UPDATE = "placement.concurrent_update"
DUPLICATE_NAME = "placement.duplicate_name"
PROVIDER_IN_USE = "placement.resource_provider.inuse"
PROVIDER_CANNOT_DELETE_PARENT = "placement.resource_provider.cannot_delete_parent"
RESOURCE_PROVIDER_NOT_FOUND = "placement.resource_provider.not_found"
ILLEGAL_DUPLICATE_QUERYPARAM = "placement.query.duplicate_key"
QUERYPARAM_BAD_VALUE = "placement.query.bad_value"
QUERYPARAM_MISSING_VALUE = "placement.query.missing_value"
#: Kova's own (not an OpenStack code): the database could not be reached or
#: refused the transaction for now (restarting, failing over); retry.
DATABASE_UNAVAILABLE = "placement.database.unavailable"

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class PlacementError(Exception):
    """An HTTP error answered in Placement's error body format."""

    status = 500

    def __init__(self, detail: str, code: str = DEFAULT,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.headers = headers or {}


class BadRequest(PlacementError):
    status = 400


class Unauthorized(PlacementError):
    status = 401


class BareUnauthorized(Unauthorized):
    """A 401 in webob's own JSON form (``message``/``code``/``title``), which
    OpenStack Placement answers before its error formatting runs: with
    noauth2 and behind keystonemiddleware."""

    def __init__(self) -> None:
        super().__init__("")


class Forbidden(PlacementError):
    status = 403


class NotFound(PlacementError):
    status = 404


class MethodNotAllowed(PlacementError):
    status = 405


class NotAcceptable(PlacementError):
    status = 406


class Conflict(PlacementError):
    status = 409


class UnsupportedMediaType(PlacementError):
    status = 415


class ServiceUnavailable(PlacementError):
    status = 503
