"""/resource_providers/{uuid}/usages and /usages (from 1.9)."""

from __future__ import annotations

from kova.placement import store
from kova.placement.app import cache_headers, check_accept, json_response, validate
from kova.placement.handlers.common import path, since

_PROJECT = {"type": "string", "minLength": 1, "maxLength": 255}
_SCHEMA_1_9 = {"type": "object", "properties": {"project_id": _PROJECT, "user_id": _PROJECT},
               "required": ["project_id"], "additionalProperties": False}
_SCHEMA_1_38 = {"type": "object",
                "properties": {"project_id": _PROJECT, "user_id": _PROJECT,
                               "consumer_type": {"type": "string",
                                                 "pattern": "^[A-Z0-9_]+$|^all$|^unknown$",
                                                 "minLength": 1, "maxLength": 255}},
                "required": ["project_id"], "additionalProperties": False}


def totals_query(version) -> dict:
    return _SCHEMA_1_38 if version >= (1, 38) else _SCHEMA_1_9


def provider(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        prov = store.get_provider(conn, uuid)
        usages = store.provider_usages(conn, prov)
    return json_response({"resource_provider_generation": prov.generation, "usages": usages},
                         200, cache_headers(req))


@since(9)
def totals(req):
    check_accept(req)
    validate(req.query_dict(), totals_query(req.version), "Invalid query string parameters")
    with req.app.db.read() as conn:
        usages = store.project_usages(conn, req.get("project_id"), req.get("user_id"),
                                      req.get("consumer_type"), by_type=req.want(38))
    return json_response({"usages": usages}, 200, cache_headers(req))
