"""In-memory provider summaries across workers: every write is seen by the
next read of every other worker, mostly through an incremental refresh."""

from __future__ import annotations

import warnings

from kova.placement.app import create_app
from kova.placement.auth import NoAuth
from tests.fixtures.placement import Api, new_uuid

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def test_two_workers_see_each_others_writes(placement_app, api):
    other = create_app(placement_app.database_url, auth=NoAuth(), migrate=False)
    try:
        with TestClient(other) as client:
            reader = Api(client)
            qs = "/allocation_candidates?resources=VCPU:2"
            assert reader.get(qs).json()["allocation_requests"] == []
            u = api.provider("w1", inventory={"VCPU": 4})
            body = reader.get(qs).json()
            assert [list(a["allocations"]) for a in body["allocation_requests"]] == [[u]]
            before = other.cache.refreshes
            assert api.allocate(new_uuid(), {u: {"VCPU": 3}}).status_code == 204
            assert reader.get(qs).json()["allocation_requests"] == []
            assert reader.get("/allocation_candidates?resources=VCPU:1").json()[
                "provider_summaries"][u]["resources"]["VCPU"] == {"capacity": 4, "used": 3}
            assert other.cache.refreshes > before  # incremental, not a full reload
            api.put("/traits/CUSTOM_NEW_ONE")  # a global change: full reload
            reloads = other.cache.reloads
            r = reader.get("/resource_providers?required=CUSTOM_NEW_ONE", version="1.18")
            assert r.status_code == 200 and other.cache.reloads == reloads + 1
            assert api.delete(f"/resource_providers/{u}").status_code == 409
            r = reader.get(f"/resource_providers?in_tree={u}")
            assert [p["uuid"] for p in r.json()["resource_providers"]] == [u]
    finally:
        other.db.dispose()
