"""Bounds on what a request may carry, checked before authentication.

Placement reads a request's headers, query string and body before it knows
who is asking, so each of them is bounded here, cheaply (every check is
linear in the input and stops at its bound), and each excess is a 4xx in
Placement's JSON error body with a Kova error code (``code`` is sent at
every microversion for these: the request was refused before its
microversion was read):

* the body: ``max_body`` bytes (``--max-request-body``; 1 MiB by default,
  roomy for the largest real request, a ``POST /reshaper`` or ``POST
  /allocations`` of a few hundred providers).  A declared
  ``Content-Length`` over it is refused before a byte is read, a chunked
  body as soon as it passes it -> 413;
* headers: at most ``MAX_HEADERS`` of them, each value at most
  ``MAX_HEADER_VALUE`` characters, ``MAX_HEADER_BYTES`` in all -> 431;
* the query string: at most ``MAX_QUERY_STRING`` bytes and
  ``MAX_QUERY_FIELDS`` parameters -> 414;
* JSON bodies: nested at most ``MAX_JSON_DEPTH`` deep (Placement's deepest
  body, the reshaper's, is 5) -> 400;
* integers in the query string (``limit``, resource amounts): at most
  ``MAX_INT_DIGITS`` digits -> 400 (Python refuses to convert more than
  4 300 digits at all, and the database's integers end at 19).
"""

from __future__ import annotations

from kova.placement import errors

DEFAULT_MAX_BODY = 1024 * 1024
MAX_HEADERS = 100
MAX_HEADER_VALUE = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_QUERY_STRING = 32 * 1024
MAX_QUERY_FIELDS = 1000
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 18

#: Kova's own error codes (not OpenStack's) for the refusals of this module.
BODY_TOO_LARGE = "placement.request.body_too_large"
HEADERS_TOO_LARGE = "placement.request.headers_too_large"
QUERY_TOO_LONG = "placement.request.query_too_long"
JSON_TOO_DEEP = "placement.request.json_too_deep"


class TooLarge(errors.PlacementError):
    """A request over one of the bounds (413, 414 or 431)."""

    always_code = True

    def __init__(self, status: int, detail: str, code: str) -> None:
        super().__init__(detail, code=code, headers={"connection": "close"})
        self.status = status


def body_too_large(max_body: int) -> TooLarge:
    return TooLarge(413, f"The request body is larger than {max_body} bytes, the most this "
                    "Placement service accepts (--max-request-body).", BODY_TOO_LARGE)


def check_headers(raw_headers) -> None:
    """431 for too many, too long or too much header data (``raw_headers``:
    the ASGI scope's list of (name, value) byte pairs)."""
    if len(raw_headers) > MAX_HEADERS:
        raise TooLarge(431, f"The request has {len(raw_headers)} header fields; at most "
                       f"{MAX_HEADERS} are accepted.", HEADERS_TOO_LARGE)
    total = 0
    for name, value in raw_headers:
        if len(value) > MAX_HEADER_VALUE:
            shown = name.decode("latin-1")[:64]
            raise TooLarge(431, f"The header {shown} is {len(value)} bytes long; at most "
                           f"{MAX_HEADER_VALUE} are accepted.", HEADERS_TOO_LARGE)
        total += len(name) + len(value)
    if total > MAX_HEADER_BYTES:
        raise TooLarge(431, f"The request's header fields add up to {total} bytes; at most "
                       f"{MAX_HEADER_BYTES} are accepted.", HEADERS_TOO_LARGE)


def check_query(query_string: bytes) -> None:
    if len(query_string) > MAX_QUERY_STRING:
        raise TooLarge(414, f"The query string is {len(query_string)} bytes long; at most "
                       f"{MAX_QUERY_STRING} are accepted.", QUERY_TOO_LONG)
    fields = query_string.count(b"&") + query_string.count(b";") + 1
    if fields > MAX_QUERY_FIELDS:
        raise TooLarge(414, f"The query string has {fields} parameters; at most "
                       f"{MAX_QUERY_FIELDS} are accepted.", QUERY_TOO_LONG)


def json_depth_ok(data, body: bytes) -> bool:
    """Whether parsed JSON ``data`` nests at most ``MAX_JSON_DEPTH`` deep.

    The opening brackets in ``body`` bound the depth from above, so the
    common small body is answered by two byte counts; otherwise the parsed
    containers are walked (iteratively, each once)."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return True
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values()
                         if isinstance(v, (dict, list)))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list)))
    return True


def json_too_deep() -> errors.BadRequest:
    return errors.BadRequest(f"Malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels.",
                             code=JSON_TOO_DEEP)


def bounded_int(text: str) -> int | None:
    """``int(text)`` for at most ``MAX_INT_DIGITS`` digits (after a sign), else None."""
    digits = text.strip().lstrip("+-")
    if len(digits) > MAX_INT_DIGITS:
        return None
    return int(text)
