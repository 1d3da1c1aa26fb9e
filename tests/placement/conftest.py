"""Placement functional-test fixtures: the same tests on SQLite and Postgres.

``backend_url`` is module-scoped and parametrized over both stores; the app
(migrated once per module and backend) is shared, and ``api`` empties the
data tables before each test so tests never see each other's providers.
"""

from __future__ import annotations

import uuid
import warnings

import pytest
import sqlalchemy as sa

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from kova.placement.app import create_app
from kova.placement.auth import NoAuth

DATA_TABLES = ("allocations", "consumers", "inventories", "resource_provider_traits",
               "resource_provider_aggregates", "placement_aggregates", "resource_providers")


@pytest.fixture(scope="module", params=[
    "sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def backend_url(request, tmp_path_factory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('placement')}/placement.db"
    from kova.dev.postgres import sqlalchemy_url

    return sqlalchemy_url(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="module")
def placement_app(backend_url):
    app = create_app(backend_url, auth=NoAuth())
    yield app
    app.db.dispose()


class Api:
    """A TestClient that sends a microversion header on every request."""

    def __init__(self, client: TestClient, version: str = "latest") -> None:
        self.client = client
        self.version = version

    def request(self, method, url, version=None, headers=None, **kwargs):
        hdrs = {"openstack-api-version": f"placement {version or self.version}"}
        if version == "none":
            hdrs = {}
        hdrs.update(headers or {})
        return self.client.request(method, url, headers=hdrs, **kwargs)

    def get(self, url, **kw):
        return self.request("GET", url, **kw)

    def put(self, url, **kw):
        return self.request("PUT", url, **kw)

    def post(self, url, **kw):
        return self.request("POST", url, **kw)

    def delete(self, url, **kw):
        return self.request("DELETE", url, **kw)

    # ---- conveniences for building fixtures
    def provider(self, name=None, parent=None, inventory=None, traits=None, aggregates=None,
                 uuid_=None):
        body = {"name": name or f"rp-{uuid.uuid4().hex[:8]}"}
        if parent:
            body["parent_provider_uuid"] = parent
        if uuid_:
            body["uuid"] = uuid_
        r = self.post("/resource_providers", json=body, version="1.39")
        assert r.status_code == 200, r.text
        rp = r.json()
        gen = rp["generation"]
        if inventory:
            invs = {rc: (v if isinstance(v, dict) else {"total": v})
                    for rc, v in inventory.items()}
            r = self.put(f"/resource_providers/{rp['uuid']}/inventories", version="1.39",
                         json={"resource_provider_generation": gen, "inventories": invs})
            assert r.status_code == 200, r.text
            gen = r.json()["resource_provider_generation"]
        if traits:
            for t in traits:
                if t.startswith("CUSTOM_"):
                    self.put(f"/traits/{t}", version="1.39")
            r = self.put(f"/resource_providers/{rp['uuid']}/traits", version="1.39",
                         json={"resource_provider_generation": gen, "traits": list(traits)})
            assert r.status_code == 200, r.text
            gen = r.json()["resource_provider_generation"]
        if aggregates:
            r = self.put(f"/resource_providers/{rp['uuid']}/aggregates", version="1.39",
                         json={"resource_provider_generation": gen, "aggregates": aggregates})
            assert r.status_code == 200, r.text
        return rp["uuid"]

    def allocate(self, consumer, allocs, version="1.39", generation=None, **extra):
        body = {"allocations": {rp: {"resources": res} for rp, res in allocs.items()},
                "project_id": extra.get("project_id", "proj"),
                "user_id": extra.get("user_id", "user"),
                "consumer_generation": generation,
                "consumer_type": extra.get("consumer_type", "INSTANCE")}
        return self.put(f"/allocations/{consumer}", json=body, version=version)


def _truncate(app) -> None:
    from kova.placement.db.engine import touch_all
    from kova.placement.objects.aggregate import AGGREGATE_IDS

    AGGREGATE_IDS.clear()  # aggregates are never deleted outside tests
    with app.db.write() as conn:
        for name in DATA_TABLES:
            conn.execute(sa.text(f"DELETE FROM {name}"))
        touch_all(conn)  # tell every worker's in-memory summaries


@pytest.fixture
def api(placement_app):
    _truncate(placement_app)
    with TestClient(placement_app, raise_server_exceptions=True) as client:
        yield Api(client)


def new_uuid() -> str:
    return str(uuid.uuid4())
