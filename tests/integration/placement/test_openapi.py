"""The OpenAPI description (``GET /openapi.json``) and fuzzing from it.

The description is generated from the route table and the handlers' JSON
Schemas; these tests check that it covers every route and method the app
answers, with the schema each microversion validates, that it is a loadable
OpenAPI 3.1 document, and then fuzz the API from it (schemathesis): no 5xx,
no stack trace in any body, Placement's error body on every 4xx.  The
10 000-request variant is tests/reliability/test_placement_fuzz.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import jsonschema
import pytest
import schemathesis

from kova.placement import microversion
from kova.placement.app import create_app
from kova.placement.auth import NoAuth
from kova.placement.openapi import EXTRA_PATHS
from kova.placement.routes import BODIES, QUERIES, ROUTES
from tests.support.openapi_fuzz import Fuzzer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def _version(text: str) -> microversion.Version:
    major, minor = text.split(".")
    return microversion.Version(int(major), int(minor))


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    app = create_app(f"sqlite:///{tmp_path_factory.mktemp('openapi')}/p.db", auth=NoAuth())
    try:
        with TestClient(app) as client:
            r = client.get("/openapi.json")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            yield r.json()
    finally:
        app.db.dispose()


def test_covers_every_route_and_method(spec):
    served = {(pattern, method.lower()) for _name, pattern, methods in ROUTES
              for method in methods}
    served |= {(path, "get") for path in EXTRA_PATHS}
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert described == served
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["version"] == microversion.max_version_string()


def test_bodies_and_queries_are_the_handlers_schemas(spec):
    by_pattern = {pattern: name for name, pattern, _m in ROUTES}
    checked = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            key = (by_pattern.get(path), method.upper())
            if key in BODIES:
                body = op.get("requestBody", {}).get("content", {}).get(
                    "application/json", {}).get("schema")
                for note in op["x-microversions"]["body"]:
                    for v in (_version(note["from"]), _version(note["to"])):
                        expected = BODIES[key](v)
                        if note["body"] == "none":
                            assert expected is None
                        elif note["body"] == "schema":
                            assert body == expected
                        else:
                            index = int(note["body"][len("anyOf["):-1])
                            assert body["anyOf"][index] == expected
                        checked += 1
                jsonschema.Draft202012Validator.check_schema(body)
            else:
                assert "requestBody" not in op, (path, method)
            if key in QUERIES:
                names = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
                latest = QUERIES[key](microversion.Version(*microversion.MAX_VERSION))
                assert set(latest.get("properties", {})) <= names
            else:
                assert not [p for p in op.get("parameters", []) if p.get("in") == "query"]
    assert checked > 30
    # a version-gated route says from which microversion it exists
    assert spec["paths"]["/allocation_candidates"]["get"]["x-microversions"]["min"] == "1.10"
    assert spec["paths"]["/reshaper"]["post"]["x-microversions"]["min"] == "1.30"


def test_loads_as_openapi_and_cli_prints_it(spec):
    schema = schemathesis.openapi.from_dict(spec)
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in spec["paths"].values())
    out = subprocess.run([sys.executable, "-m", "kova.cli", "placement", "openapi"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == spec


def test_fuzz_from_the_openapi_description(pg_database):
    """A ~60 s sample on Postgres (the 10 000-request run is the slow variant)."""
    from kova.dev.postgres import sqlalchemy_url

    app = create_app(sqlalchemy_url(pg_database), auth=NoAuth())
    try:
        with TestClient(app, raise_server_exceptions=True) as client:
            fuzzer = Fuzzer(client)
            fuzzer.seed()
            stats = fuzzer.run(1200, seed=1)
    finally:
        app.db.dispose()
    assert stats.failures == [], json.dumps(stats.failures, indent=1)
    assert stats.server_errors == stats.tracebacks == stats.bad_error_bodies == 0
    assert stats.requests + stats.unsendable == 1200
    # every operation was exercised, and not only into 404s
    assert len(stats.by_route) == len(fuzzer.operations)
    statuses = stats.statuses()
    assert sum(n for s, n in statuses.items() if s.startswith("2")) > 50, statuses
