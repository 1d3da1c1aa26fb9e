"""One-statement writes on Postgres (``kova.placement.fastwrite``).

Creating a provider and replacing its inventory, aggregates and traits are
each one SQL statement sent from the event loop.  Anything the statement
cannot do on its own (unknown names, generation conflicts, an inventory that
leaves out a class) falls back to the general path, which answers exactly as
before.  These tests check both branches through the HTTP API, that the
fast branch really is one statement with no general-path SQL, that other
workers see the writes (incrementally), that the change log is pruned, and
that racing writers of one provider still conflict.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from kova.placement.app import create_app
from kova.placement.auth import NoAuth
from tests.fixtures.placement import Api, _truncate

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


AGG_A, AGG_B = str(uuid.UUID(int=0xA)), str(uuid.UUID(int=0xB))
INVENTORY = {"VCPU": {"total": 32, "max_unit": 16},
             "MEMORY_MB": {"total": 8192, "min_unit": 128},
             "DISK_GB": {"total": 8192, "min_unit": 5}}


@pytest.fixture(scope="module")
def pg_url(pg_database):
    from kova.dev.postgres import sqlalchemy_url

    return sqlalchemy_url(pg_database)


@pytest.fixture(scope="module")
def app(pg_url):
    app = create_app(pg_url, auth=NoAuth())
    assert app.fast is not None  # on by default on Postgres
    yield app
    app.db.dispose()


@pytest.fixture
def api(app):
    _truncate(app)
    with TestClient(app, raise_server_exceptions=True) as client:
        yield Api(client)


class SqlCounter:
    """Counts the statements the general path (SQLAlchemy) sends."""

    def __init__(self, engine) -> None:
        self.engine, self.count = engine, 0
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *_args) -> None:
        self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


def _register(api, name, aggregates, traits, inventory=INVENTORY):
    """The four writes of the perfload benchmark; returns (uuid, generation)."""
    r = api.post("/resource_providers", json={"name": name})
    assert r.status_code == 200, r.text
    u, gen = r.json()["uuid"], r.json()["generation"]
    assert gen == 0 and r.json()["root_provider_uuid"] == u
    assert r.headers["location"] == f"http://testserver/resource_providers/{u}"
    r = api.put(f"/resource_providers/{u}/inventories",
                json={"resource_provider_generation": gen, "inventories": inventory})
    assert r.status_code == 200, r.text
    assert r.json()["resource_provider_generation"] == gen + 1
    r = api.put(f"/resource_providers/{u}/aggregates",
                json={"resource_provider_generation": gen + 1, "aggregates": aggregates})
    assert r.status_code == 200, r.text
    assert r.json() == {"aggregates": sorted(aggregates), "resource_provider_generation": gen + 2}
    r = api.put(f"/resource_providers/{u}/traits",
                json={"resource_provider_generation": gen + 2, "traits": traits})
    assert r.status_code == 200, r.text
    assert r.json() == {"traits": sorted(traits), "resource_provider_generation": gen + 3}
    return u, gen + 3


def test_registering_a_host_is_four_statements(app, api):
    # the first use of an aggregate creates it on the general path
    _register(api, "first", [AGG_A, AGG_B], ["HW_CPU_X86_AVX2"])
    counter = SqlCounter(app.db.engine)
    fast, fallbacks = app.fast.statements, app.fast.fallbacks
    try:
        u, gen = _register(api, "second", [AGG_A], ["HW_CPU_X86_AVX2", "STORAGE_DISK_SSD"])
    finally:
        counter.close()
    assert app.fast.statements - fast == 4
    assert app.fast.fallbacks - fallbacks == 0
    assert counter.count == 0  # nothing else touched the database
    # and the data is all there
    assert api.get(f"/resource_providers/{u}").json()["generation"] == gen
    invs = api.get(f"/resource_providers/{u}/inventories").json()["inventories"]
    assert invs["VCPU"] == {"total": 32, "reserved": 0, "min_unit": 1, "max_unit": 16,
                            "step_size": 1, "allocation_ratio": 1.0}
    assert invs["MEMORY_MB"]["min_unit"] == 128 and invs["DISK_GB"]["total"] == 8192
    assert api.get(f"/resource_providers/{u}/aggregates").json()["aggregates"] == [AGG_A]
    assert api.get(f"/resource_providers/{u}/traits").json()["traits"] == [
        "HW_CPU_X86_AVX2", "STORAGE_DISK_SSD"]
    r = api.get("/allocation_candidates?resources=VCPU:1,DISK_GB:10,MEMORY_MB:256"
                f"&member_of={AGG_A}&required=STORAGE_DISK_SSD")
    assert list(r.json()["provider_summaries"]) == [u]


def _fallbacks(app):
    """fn -> (its answer, how many fast statements fell back meanwhile)."""
    def fallbacks(fn):
        before = app.fast.fallbacks
        r = fn()
        return r, app.fast.fallbacks - before
    return fallbacks


def test_inventory_changes_and_fallbacks_answer_as_the_general_path(app, api):
    u, gen = _register(api, "cn", [AGG_A], ["HW_CPU_X86_AVX2"])
    base = f"/resource_providers/{u}"
    fallbacks = _fallbacks(app)
    # change a field, add a class: fast
    inv = dict(INVENTORY, VCPU={"total": 64, "max_unit": 16, "allocation_ratio": 2.0},
               VGPU={"total": 2})
    r, fb = fallbacks(lambda: api.put(f"{base}/inventories", json={
        "resource_provider_generation": gen, "inventories": inv}))
    assert r.status_code == 200 and fb == 0
    gen = r.json()["resource_provider_generation"]
    got = api.get(f"{base}/inventories").json()["inventories"]
    assert got["VCPU"]["total"] == 64 and got["VCPU"]["allocation_ratio"] == 2.0
    assert got["VGPU"]["total"] == 2
    # the same inventory again still bumps the generation
    r = api.put(f"{base}/inventories", json={"resource_provider_generation": gen,
                                             "inventories": inv})
    assert r.status_code == 200 and r.json()["resource_provider_generation"] == gen + 1
    gen += 1
    # an allocation, then leaving its class out: general path, 409 inventory.inuse
    consumer = str(uuid.uuid4())
    assert api.allocate(consumer, {u: {"VGPU": 1}}).status_code == 204
    gen = api.get(base).json()["generation"]
    r, fb = fallbacks(lambda: api.put(f"{base}/inventories", json={
        "resource_provider_generation": gen, "inventories": INVENTORY}))
    assert r.status_code == 409 and fb == 1
    assert r.json()["errors"][0]["code"] == "placement.inventory.inuse"
    assert "VGPU" in api.get(f"{base}/inventories").json()["inventories"]
    # leaving out an unused class: general path, 200, the class is gone
    assert api.delete(f"/allocations/{consumer}").status_code == 204
    gen = api.get(base).json()["generation"]
    r, fb = fallbacks(lambda: api.put(f"{base}/inventories", json={
        "resource_provider_generation": gen, "inventories": INVENTORY}))
    assert r.status_code == 200 and fb == 1
    gen = r.json()["resource_provider_generation"]
    assert sorted(api.get(f"{base}/inventories").json()["inventories"]) == [
        "DISK_GB", "MEMORY_MB", "VCPU"]


def test_link_changes_and_fallbacks_answer_as_the_general_path(app, api):
    u, gen = _register(api, "cn", [AGG_A], ["HW_CPU_X86_AVX2"])
    base = f"/resource_providers/{u}"
    fallbacks = _fallbacks(app)
    # stale generation: 409 concurrent_update, nothing changed
    for path, body in [("inventories", {"inventories": INVENTORY}),
                       ("aggregates", {"aggregates": [AGG_B]}),
                       ("traits", {"traits": ["HW_CPU_X86_SSE2"]})]:
        r, fb = fallbacks(lambda path=path, body=body: api.put(f"{base}/{path}", json={
            "resource_provider_generation": gen - 1, **body}))
        assert r.status_code == 409 and fb == 1, r.text
        assert r.json()["errors"][0]["code"] == "placement.concurrent_update"
    assert api.get(base).json()["generation"] == gen
    assert api.get(f"{base}/aggregates").json()["aggregates"] == [AGG_A]
    assert api.get(f"{base}/traits").json()["traits"] == ["HW_CPU_X86_AVX2"]
    # unknown names: 400 from the general path
    r, fb = fallbacks(lambda: api.put(f"{base}/traits", json={
        "resource_provider_generation": gen, "traits": ["CUSTOM_NOT_THERE"]}))
    assert r.status_code == 400 and fb == 1
    r, fb = fallbacks(lambda: api.put(f"{base}/inventories", json={
        "resource_provider_generation": gen, "inventories": {"CUSTOM_NOPE": {"total": 1}}}))
    assert r.status_code == 400 and fb == 1
    # unknown provider: 404
    missing = str(uuid.uuid4())
    r = api.put(f"/resource_providers/{missing}/traits",
                json={"resource_provider_generation": 0, "traits": []})
    assert r.status_code == 404
    # custom traits are looked up by the statement itself
    assert api.put("/traits/CUSTOM_FAST").status_code == 201
    r, fb = fallbacks(lambda: api.put(f"{base}/traits", json={
        "resource_provider_generation": gen, "traits": ["CUSTOM_FAST", "CUSTOM_FAST"]}))
    assert r.status_code == 200 and fb == 0
    assert r.json()["traits"] == ["CUSTOM_FAST"]
    gen = r.json()["resource_provider_generation"]
    # empty lists remove everything
    r = api.put(f"{base}/traits", json={"resource_provider_generation": gen, "traits": []})
    assert r.status_code == 200
    gen = r.json()["resource_provider_generation"]
    r = api.put(f"{base}/aggregates", json={"resource_provider_generation": gen,
                                            "aggregates": []})
    assert r.status_code == 200
    assert api.get(f"{base}/traits").json()["traits"] == []
    assert api.get(f"{base}/aggregates").json()["aggregates"] == []
    # duplicate name or uuid: 409 duplicate_name with the general path's detail
    r = api.post("/resource_providers", json={"name": "cn"})
    assert r.status_code == 409
    assert r.json()["errors"][0]["code"] == "placement.duplicate_name"
    assert "name: cn" in r.json()["errors"][0]["detail"]
    r = api.post("/resource_providers", json={"name": "other", "uuid": u})
    assert r.status_code == 409 and f"uuid: {u}" in r.json()["errors"][0]["detail"]
    # a child provider takes the general path and gets its root right
    r = api.post("/resource_providers", json={"name": "child", "parent_provider_uuid": u})
    assert r.status_code == 200 and r.json()["root_provider_uuid"] == u


def test_other_workers_see_fast_writes_incrementally(app, api):
    other = create_app(app.database_url, auth=NoAuth(), migrate=False)
    try:
        with TestClient(other) as client:
            reader = Api(client)
            qs = (f"/allocation_candidates?resources=VCPU:1&member_of={AGG_A}"
                  "&required=HW_CPU_X86_AVX2")
            assert reader.get(qs).json()["allocation_requests"] == []
            u1, _ = _register(api, "a1", [AGG_A], ["HW_CPU_X86_AVX2"])
            assert list(reader.get(qs).json()["provider_summaries"]) == [u1]
            refreshes, reloads = other.cache.refreshes, other.cache.reloads
            u2, gen2 = _register(api, "a2", [AGG_A], ["HW_CPU_X86_AVX2"])
            assert sorted(reader.get(qs).json()["provider_summaries"]) == sorted([u1, u2])
            r = api.put(f"/resource_providers/{u2}/traits",
                        json={"resource_provider_generation": gen2, "traits": []})
            assert r.status_code == 200
            assert list(reader.get(qs).json()["provider_summaries"]) == [u1]
            assert other.cache.refreshes > refreshes and other.cache.reloads == reloads
    finally:
        other.db.dispose()


def test_change_log_is_pruned(app, api, monkeypatch):
    other = create_app(app.database_url, auth=NoAuth(), migrate=False)
    monkeypatch.setattr(app.db, "PRUNE_EVERY", 4)
    monkeypatch.setattr(app.db, "KEEP_CHANGES", 8)
    try:
        with TestClient(other) as client:
            reader = Api(client)
            qs = "/allocation_candidates?resources=VCPU:1"
            assert reader.get(qs).json()["allocation_requests"] == []
            reloads = other.cache.reloads
            uuids = [_register(api, f"p{i}", [AGG_A], ["HW_CPU_X86_AVX2"])[0]
                     for i in range(6)]  # 24 writes: the log keeps only the last 8
            with app.db.engine.connect() as conn:
                counter, horizon = conn.execute(sa.text(
                    "SELECT (SELECT counter FROM placement_state WHERE id = 1), "
                    "(SELECT counter FROM placement_state WHERE id = 2)")).one()
                oldest = conn.execute(sa.text(
                    "SELECT min(counter) FROM placement_changes")).scalar_one()
            assert horizon >= counter - 8 - 4 and oldest > horizon
            # the reader is behind the horizon: it reloads everything
            assert sorted(reader.get(qs).json()["provider_summaries"]) == sorted(uuids)
            assert other.cache.reloads == reloads + 1
    finally:
        other.db.dispose()


def test_racing_writers_of_one_provider(app, api):
    u, gen = _register(api, "race", [AGG_A], ["HW_CPU_X86_AVX2"])
    traits = ["HW_CPU_X86_SSE2", "HW_CPU_X86_AVX", "STORAGE_DISK_SSD", "HW_CPU_X86_SSE42",
              "HW_CPU_X86_AVX2", "HW_NIC_SRIOV", "HW_CPU_X86_SSE41", "HW_CPU_X86_SSSE3"]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://placement",
                                     headers={"openstack-api-version": "placement 1.39"}) as c:
            rs = await asyncio.gather(*[
                c.put(f"/resource_providers/{u}/traits",
                      json={"resource_provider_generation": gen, "traits": [t]})
                for t in traits])
            return rs

    rs = asyncio.run(main())
    winners = [t for t, r in zip(traits, rs, strict=False) if r.status_code == 200]
    assert len(winners) == 1, [r.status_code for r in rs]
    assert all(r.status_code == 409 and r.json()["errors"][0]["code"] ==
               "placement.concurrent_update" for r in rs if r.status_code != 200)
    assert api.get(f"/resource_providers/{u}").json()["generation"] == gen + 1
    assert api.get(f"/resource_providers/{u}/traits").json()["traits"] == winners
