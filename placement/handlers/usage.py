"""/resource_providers/{uuid}/usages and /usages (from 1.9)."""

from __future__ import annotations

from kova.placement.handlers.common import path, since
from kova.placement.objects import usage as usage_obj
from kova.placement.objects.resource_provider import get_provider
from kova.placement.request import cache_headers, check_accept, json_response
from kova.placement.validation import validate

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
        prov = get_provider(conn, uuid)
        usages = usage_obj.provider_usages(conn, prov)
    return json_response({"resource_provider_generation": prov.generation, "usages": usages},
                         200, cache_headers(req))


@since(9)
def totals(req):
    check_accept(req)
    validate(req.query_dict(), totals_query(req.version), "Invalid query string parameters")
    with req.app.db.read() as conn:
        usages = usage_obj.project_usages(conn, req.get("project_id"), req.get("user_id"),
                                      req.get("consumer_type"), by_type=req.want(38))
    return json_response({"usages": usages}, 200, cache_headers(req))
