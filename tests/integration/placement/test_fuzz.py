"""Random bodies and query strings never make the service answer 500."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kova.placement.app import create_app
from kova.placement.auth import NoAuth
from tests.fixtures.placement import Api

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

UUID = "8a1c3e2e-4a8b-4c1d-9e2f-0123456789ab"
KEYS = ["name", "uuid", "parent_provider_uuid", "resource_provider_generation", "inventories",
        "total", "reserved", "allocation_ratio", "traits", "aggregates", "allocations",
        "resources", "project_id", "user_id", "consumer_generation", "consumer_type",
        "mappings", "VCPU", UUID, "x"]
scalars = (st.none() | st.booleans() | st.integers(-2, 2**40)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["", "VCPU", UUID, "CUSTOM_X", "in:", "!", "a" * 300]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS), c, max_size=4), max_leaves=10)
ROUTES = [("POST", "/resource_providers"), ("PUT", "/resource_providers/{rp}"),
          ("PUT", "/resource_providers/{rp}/inventories"),
          ("POST", "/resource_providers/{rp}/inventories"),
          ("PUT", "/resource_providers/{rp}/inventories/VCPU"),
          ("PUT", "/resource_providers/{rp}/traits"),
          ("PUT", "/resource_providers/{rp}/aggregates"),
          ("PUT", "/allocations/" + UUID), ("POST", "/allocations"), ("POST", "/reshaper"),
          ("POST", "/resource_classes")]
QS_KEYS = ["resources", "resources1", "required", "required_A", "member_of", "in_tree",
           "limit", "group_policy", "root_required", "same_subtree", "name", "uuid",
           "project_id", "consumer_type", "associated"]
QS_VALUES = st.sampled_from(["", "VCPU:1", "VCPU:0", "VCPU:x", "X:1", "!HW_CPU_X86_AVX2",
                             "in:A,B", "in:", UUID, "!" + UUID, "in:" + UUID, "1", "-1",
                             "isolate", "_A", ",", "true", "HW_CPU_X86_AVX2,!STORAGE_DISK_SSD"])


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory):
    app = create_app(f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/p.db", auth=NoAuth())
    with TestClient(app) as client:
        api = Api(client)
        rp = api.provider("fuzz", inventory={"VCPU": 8})
        yield api, rp
    app.db.dispose()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(ROUTES), body=values,
       version=st.sampled_from(["1.0", "1.12", "1.19", "1.28", "1.34", "1.38", "latest"]))
def test_bodies_never_500(fuzz_api, route, body, version):
    api, rp = fuzz_api
    method, path = route
    r = api.request(method, path.format(rp=rp), version=version, json=body)
    assert r.status_code < 500, r.text


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/allocation_candidates", "/resource_providers", "/traits",
                             "/usages"]),
       params=st.lists(st.tuples(st.sampled_from(QS_KEYS), QS_VALUES), max_size=5),
       version=st.sampled_from(["1.10", "1.17", "1.25", "1.33", "1.36", "latest"]))
def test_query_strings_never_500(fuzz_api, path, params, version):
    api, _rp = fuzz_api
    r = api.request("GET", path, version=version, params=params)
    assert r.status_code < 500, r.text
