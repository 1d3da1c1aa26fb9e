"""JSON Schemas for request bodies, one per microversion where they differ.

Every object schema forbids unknown members, so a typo or a field from a
later microversion is a 400 (``JSON does not validate``), never a 500.
"""

from __future__ import annotations

import copy

MAX_INT = 2147483647
MIN_INT = -2147483648
SQL_SP_FLOAT_MAX = 3.40282e38
UUID = {"type": "string", "format": "uuid"}
UUID_KEY = "^[0-9a-fA-F-]{36}$"
RC_NAME = "^[A-Z0-9_]+$"
CUSTOM_NAME = "^CUSTOM_[A-Z0-9_]+$"
SUFFIX_1_33 = "^[a-zA-Z0-9_-]{1,64}$"
# Generations are 32-bit integers in the database: a larger number can
# never match, and is a 400 rather than a database error.
GENERATION = {"type": "integer", "minimum": MIN_INT, "maximum": MAX_INT}


def _obj(properties: dict, required=(), **extra) -> dict:
    schema = {"type": "object", "properties": properties,
              "required": list(required), "additionalProperties": False}
    schema.update(extra)
    return schema


def _int(minimum: int | None = None) -> dict:
    schema: dict = {"type": "integer", "maximum": MAX_INT}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


# ------------------------------------------------------------ providers
PROVIDER_POST = _obj({"name": {"type": "string", "maxLength": 200}, "uuid": UUID}, ["name"])
PROVIDER_POST_1_14 = copy.deepcopy(PROVIDER_POST)
PROVIDER_POST_1_14["properties"]["parent_provider_uuid"] = {
    "anyOf": [UUID, {"type": "null"}]}
PROVIDER_PUT = _obj({"name": {"type": "string", "maxLength": 200}}, ["name"])
PROVIDER_PUT_1_14 = copy.deepcopy(PROVIDER_POST_1_14)
del PROVIDER_PUT_1_14["properties"]["uuid"]

# ------------------------------------------------------------ inventories
_INVENTORY_FIELDS = {
    "total": _int(1),
    "reserved": _int(0),
    "min_unit": _int(1),
    "max_unit": _int(1),
    "step_size": _int(1),
    "allocation_ratio": {"type": "number", "maximum": SQL_SP_FLOAT_MAX},
}
INVENTORY_PUT_ONE = _obj({**_INVENTORY_FIELDS,
                          "resource_provider_generation": GENERATION},
                         ["total", "resource_provider_generation"])
INVENTORY_POST = _obj({**_INVENTORY_FIELDS,
                       "resource_provider_generation": GENERATION,
                       "resource_class": {"type": "string", "pattern": RC_NAME}},
                      ["total", "resource_class"])
_INVENTORY_RECORD = _obj({**_INVENTORY_FIELDS,
                          "resource_provider_generation": GENERATION},
                         ["total"])
INVENTORIES_PUT = _obj({
    "resource_provider_generation": GENERATION,
    "inventories": {"type": "object", "patternProperties": {RC_NAME: _INVENTORY_RECORD},
                    "additionalProperties": False},
}, ["resource_provider_generation", "inventories"])

# ------------------------------------------------------------ aggregates
_AGG_LIST = {"type": "array", "items": UUID, "uniqueItems": True}
AGGREGATES_PUT = _AGG_LIST
AGGREGATES_PUT_1_19 = _obj({"aggregates": _AGG_LIST,
                            "resource_provider_generation": GENERATION},
                           ["aggregates", "resource_provider_generation"])

# ------------------------------------------------------------ traits
_TRAIT = {"type": "string", "minLength": 1, "maxLength": 255}
PROVIDER_TRAITS_PUT = _obj({"traits": {"type": "array", "items": _TRAIT},
                            "resource_provider_generation": GENERATION},
                           ["traits", "resource_provider_generation"])

# ------------------------------------------------------------ resource classes
RESOURCE_CLASS = _obj({"name": {"type": "string", "pattern": CUSTOM_NAME, "maxLength": 255}},
                      ["name"])

# ------------------------------------------------------------ allocations
_RESOURCES = {"type": "object", "minProperties": 1,
              "patternProperties": {RC_NAME: {"type": "integer", "minimum": 1}},
              "additionalProperties": False}
ALLOCATIONS_PUT_1_0 = _obj({
    "allocations": {"type": "array", "minItems": 1, "items": _obj({
        "resource_provider": _obj({"uuid": UUID}, ["uuid"]),
        "resources": _RESOURCES,
    }, ["resource_provider", "resources"])},
}, ["allocations"])
_PROJECT = {"type": "string", "minLength": 1, "maxLength": 255}
ALLOCATIONS_PUT_1_8 = copy.deepcopy(ALLOCATIONS_PUT_1_0)
ALLOCATIONS_PUT_1_8["properties"].update(project_id=_PROJECT, user_id=_PROJECT)
ALLOCATIONS_PUT_1_8["required"] += ["project_id", "user_id"]


def _dict_allocations(min_properties: int) -> dict:
    return {"type": "object", "minProperties": min_properties,
            "patternProperties": {UUID_KEY: _obj({
                "generation": GENERATION,
                "resources": _RESOURCES,
            }, ["resources"])},
            "additionalProperties": False}


ALLOCATIONS_PUT_1_12 = _obj({"allocations": _dict_allocations(1),
                             "project_id": _PROJECT, "user_id": _PROJECT},
                            ["allocations", "project_id", "user_id"])
# POST /allocations entries (and PUT from 1.28) may empty a consumer.
_DELETABLE = copy.deepcopy(ALLOCATIONS_PUT_1_12)
_DELETABLE["properties"]["allocations"] = _dict_allocations(0)
ALLOCATIONS_PUT_1_28 = copy.deepcopy(_DELETABLE)
ALLOCATIONS_PUT_1_28["properties"]["consumer_generation"] = {
    "type": ["integer", "null"], "minimum": MIN_INT, "maximum": MAX_INT}
ALLOCATIONS_PUT_1_28["required"].append("consumer_generation")
_MAPPINGS = {"type": "object", "minProperties": 1,
             "patternProperties": {"^[a-zA-Z0-9_-]{0,64}$": {
                 "type": "array", "minItems": 1, "items": UUID}},
             "additionalProperties": False}
ALLOCATIONS_PUT_1_34 = copy.deepcopy(ALLOCATIONS_PUT_1_28)
ALLOCATIONS_PUT_1_34["properties"]["mappings"] = _MAPPINGS
ALLOCATIONS_PUT_1_38 = copy.deepcopy(ALLOCATIONS_PUT_1_34)
ALLOCATIONS_PUT_1_38["properties"]["consumer_type"] = {
    "type": "string", "pattern": RC_NAME, "minLength": 1, "maxLength": 255}
ALLOCATIONS_PUT_1_38["required"].append("consumer_type")


def _post(entry: dict, min_properties: int = 1) -> dict:
    return {"type": "object", "minProperties": min_properties,
            "patternProperties": {UUID_KEY: entry}, "additionalProperties": False}


ALLOCATIONS_POST_1_13 = _post(_DELETABLE)
ALLOCATIONS_POST_1_28 = _post(ALLOCATIONS_PUT_1_28)
ALLOCATIONS_POST_1_34 = _post(ALLOCATIONS_PUT_1_34)
ALLOCATIONS_POST_1_38 = _post(ALLOCATIONS_PUT_1_38)

# ------------------------------------------------------------ reshaper
_RESHAPER_INVENTORIES = {"type": "object", "minProperties": 1,
                         "patternProperties": {UUID_KEY: INVENTORIES_PUT},
                         "additionalProperties": False}
RESHAPER_1_30 = _obj({"inventories": _RESHAPER_INVENTORIES,
                      "allocations": _post(ALLOCATIONS_PUT_1_28, 0)},
                     ["inventories", "allocations"])
RESHAPER_1_34 = _obj({"inventories": _RESHAPER_INVENTORIES,
                      "allocations": _post(ALLOCATIONS_PUT_1_34, 0)},
                     ["inventories", "allocations"])
RESHAPER_1_38 = _obj({"inventories": _RESHAPER_INVENTORIES,
                      "allocations": _post(ALLOCATIONS_PUT_1_38, 0)},
                     ["inventories", "allocations"])
