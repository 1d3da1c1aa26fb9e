"""Bounded input: ``kova placement serve`` refuses oversized bodies (before
authentication), long and many headers, long query strings, huge integers
and deeply nested JSON with a 4xx and Placement's JSON error body, never a
5xx, and keeps serving.

Each probe is sent to the real server (uvicorn, a token file: the probes
carry no token unless they say so) as raw HTTP over a socket, so what is
measured is what a client on the network gets, the server's own parsing
included.
"""

from __future__ import annotations

import json

import pytest

from kova.placement import limits
from tests.integration.placement.raw_http import ADMIN, raw, request, serve

MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds")
    with serve(tmp, f"sqlite:///{tmp}/p.db", "--max-request-body", str(MAX_BODY)) as running:
        yield running


def error_of(status, body, want_status, code=None):
    assert status == want_status, body
    error = body["errors"][0]
    assert error["status"] == want_status and error["request_id"].startswith("req-")
    if code:
        assert error["code"] == code, body
    return error


def test_declared_large_body_refused_before_auth(server):
    port, _log = server
    # no token: the size decides before authentication does (413, not 401),
    # and the server answers without waiting for the body
    status, headers, body = raw(port, request("/resource_providers", "POST",
                                              length=50 * 1024 * 1024))
    error_of(status, body, 413, limits.BODY_TOO_LARGE)
    assert headers["connection"] == "close"


def test_chunked_large_body_refused_when_it_passes_the_bound(server):
    port, _log = server
    head = request("/resource_providers", "POST", extra=[
        "Content-Type: application/json", "Transfer-Encoding: chunked"])
    status, _h, body = raw(port, head, chunks=[b" " * 16384] * 8)
    error_of(status, body, 413, limits.BODY_TOO_LARGE)


def test_body_within_the_bound_still_served(server):
    port, _log = server
    payload = json.dumps({"name": "bounds-" + "x" * 100}).encode()
    padded = payload + b" " * (MAX_BODY - len(payload))  # exactly the bound
    status, _h, body = raw(port, request("/resource_providers", "POST", token=ADMIN,
                                         length=len(padded)), padded)
    assert status == 200, body
    # and without a token, a small body is a 401 as before
    status, _h, body = raw(port, request("/resource_providers", "POST", length=2), b"{}")
    error_of(status, body, 401)


def test_5000_digit_microversion(server):
    port, _log = server
    head = request("/resource_providers", token=ADMIN).replace(
        "placement latest", "placement 1." + "9" * 5000)
    status, headers, body = raw(port, head)
    error = error_of(status, body, 406)
    assert len(error["detail"]) < 300
    head = request("/resource_providers", token=ADMIN).replace(
        "placement latest", "placement " + "1" * 5000 + ".0")
    error_of(*raw(port, head)[::2], 406)


def test_5000_digit_limit_and_amount(server):
    port, _log = server
    status, _h, body = raw(port, request(
        "/allocation_candidates?resources=VCPU:1&limit=" + "9" * 5000, token=ADMIN))
    error_of(status, body, 400, "placement.query.bad_value")
    for amount in ("9" * 5000, "9" * 4000, "9" * 19):
        status, _h, body = raw(port, request(
            f"/allocation_candidates?resources=VCPU:{amount}", token=ADMIN))
        error_of(status, body, 400)
        status, _h, body = raw(port, request(
            f"/resource_providers?resources=VCPU:{amount}", token=ADMIN))
        error_of(status, body, 400)


def test_long_and_many_headers(server):
    port, _log = server
    long_value = "x" * (limits.MAX_HEADER_VALUE + 1)
    status, _h, body = raw(port, request(extra=[f"X-Padding: {long_value}"]))
    error_of(status, body, 431, limits.HEADERS_TOO_LARGE)
    many = [f"X-Pad-{i}: {i}" for i in range(limits.MAX_HEADERS + 1)]
    status, _h, body = raw(port, request(extra=many))
    error_of(status, body, 431, limits.HEADERS_TOO_LARGE)
    status, _h, body = raw(port, request(token="t" * 5000))  # a long token: 401, not 5xx
    error_of(status, body, 401)
    # past 16 KiB of head the HTTP server (uvicorn) refuses the request itself
    status, _h, body = raw(port, request(extra=["X-Padding: " + "x" * 100_000]))
    assert 400 <= status < 500, body


def test_long_query_string(server):
    port, _log = server
    path = "/resource_providers?name=" + "a" * (limits.MAX_QUERY_STRING + 1)
    status, _h, body = raw(port, request(path))
    error_of(status, body, 414, limits.QUERY_TOO_LONG)
    path = "/resource_providers?" + "&".join(["name=a"] * (limits.MAX_QUERY_FIELDS + 1))
    status, _h, body = raw(port, request(path))
    error_of(status, body, 414, limits.QUERY_TOO_LONG)
    # past 64 KiB the HTTP server (uvicorn) refuses the request line itself
    status, _h, body = raw(port, request("/resource_providers?name=" + "a" * 200_000))
    assert 400 <= status < 500, body


@pytest.mark.parametrize("depth", [limits.MAX_JSON_DEPTH + 1, 10000])
def test_deeply_nested_json(server, depth):
    port, _log = server
    for payload in (b"[" * depth + b"]" * depth,
                    b'{"a":' * depth + b"1" + b"}" * depth,
                    b'{"name": "deep", "uuid": ' + b"[" * depth + b"]" * depth + b"}"):
        status, _h, body = raw(port, request("/resource_providers", "POST", token=ADMIN,
                                             length=len(payload)), payload)
        error_of(status, body, 400)
        assert "nested deeper" in body["errors"][0]["detail"], body


def test_still_serving_and_no_traceback(server):
    port, log = server
    status, _h, body = raw(port, request("/resource_providers", token=ADMIN))
    assert status == 200
    assert "Traceback" not in log.read_text()
