"""The compiled fast check never accepts what JSON Schema rejects."""

from __future__ import annotations

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from kova.placement.schemas import body
from kova.placement.schemas.fast import compile_schema
from kova.placement.validation import FORMAT_CHECKER as _FORMAT_CHECKER

SCHEMAS = {name: value for name, value in vars(body).items()
           if name.isupper() and isinstance(value, (dict, list)) and isinstance(value, dict)}
UUID = "8a1c3e2e-4a8b-4c1d-9e2f-0123456789ab"
KEYS = sorted({k for s in SCHEMAS.values() for k in s.get("properties", {})}
              | {"VCPU", "CUSTOM_X", "bad key", UUID, "resources", "total", "generation"})

scalars = (st.none() | st.booleans() | st.integers(-3, 2**31 + 3) | st.sampled_from([1.0, 0.5])
           | st.sampled_from(["", "x", UUID, "VCPU", "CUSTOM_A", "not-a-uuid", "a" * 300]))
json_values = st.recursive(
    scalars, lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS), children, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SCHEMAS)), json_values)
def test_fast_accept_implies_valid(name, doc):
    schema = SCHEMAS[name]
    if compile_schema(schema)(doc):
        jsonschema.Draft4Validator(schema, format_checker=_FORMAT_CHECKER).validate(doc)


def test_fast_accepts_typical_bodies():
    inv = {"resource_provider_generation": 0, "inventories": {"VCPU": {"total": 8}}}
    assert compile_schema(body.INVENTORIES_PUT)(inv)
    assert compile_schema(body.ALLOCATIONS_PUT_1_38)({
        "allocations": {UUID: {"resources": {"VCPU": 1}}}, "project_id": "p", "user_id": "u",
        "consumer_generation": None, "consumer_type": "INSTANCE"})
    assert not compile_schema(body.INVENTORIES_PUT)({**inv, "extra": 1})
