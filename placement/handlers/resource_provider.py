"""/resource_providers and /resource_providers/{uuid}."""

from __future__ import annotations

import functools
import uuid as uuidlib

from kova.placement import errors, qparse
from kova.placement.handlers.common import path, serialize_provider
from kova.placement.objects import resource_provider as rp_obj
from kova.placement.request import cache_headers, check_accept, json_response, no_content
from kova.placement.schemas import body as schemas
from kova.placement.validation import canonical_uuid, validate

_LIST_PARAMS = [(0, {"name", "uuid"}), (3, {"member_of"}), (4, {"resources"}),
                (14, {"in_tree"}), (18, {"required"})]


def _list_schema(req) -> dict:
    return list_query(req.version)


def list_query(version) -> dict:
    """The query-string schema of GET /resource_providers at ``version``."""
    return _list_schema_for(version[1])


@functools.lru_cache(maxsize=None)
def _list_schema_for(minor_version: int) -> dict:
    props: dict = {}
    for minor, names in _LIST_PARAMS:
        if minor_version >= minor:
            for name in names:
                props[name] = {"type": "string"}
    if "uuid" in props:
        props["uuid"] = {"type": "string", "format": "uuid"}
    if "in_tree" in props:
        props["in_tree"] = {"type": "string", "format": "uuid"}
    return {"type": "object", "properties": props, "additionalProperties": False}


def create_body(version) -> dict:
    return schemas.PROVIDER_POST_1_14 if version >= (1, 14) else schemas.PROVIDER_POST


def update_body(version) -> dict:
    return schemas.PROVIDER_PUT_1_14 if version >= (1, 14) else schemas.PROVIDER_PUT


def _canonical(data: dict) -> dict:
    """Schema-checked UUIDs in their stored form (the column is 36 wide)."""
    for key in ("uuid", "parent_provider_uuid"):
        if data.get(key) is not None:
            data[key] = canonical_uuid(data[key])
    return data


def _create_input(req) -> dict:
    return _canonical(req.json(create_body(req.version)))


def create(req):
    data = _create_input(req)

    def _duplicate():
        with req.app.db.read() as conn:
            detail = rp_obj.duplicate_provider_detail(conn, data["name"], data.get("uuid"))
        return errors.Conflict(detail, code=errors.DUPLICATE_NAME)

    provider = req.app.db.run_write(rp_obj.create_provider, data["name"], data.get("uuid"),
                                    data.get("parent_provider_uuid"), conflict=_duplicate)
    return _create_reply(req, provider)


async def create_fast(req):
    """A root provider in one statement (``kova.placement.fastwrite``);
    None leaves the request to ``create``."""
    data = _create_input(req)
    if data.get("parent_provider_uuid") is not None:
        return None
    provider = await req.app.fast.create_provider(data["name"],
                                                  data.get("uuid") or str(uuidlib.uuid4()))
    return None if provider is None else _create_reply(req, provider)


def _create_reply(req, provider):
    headers = {"location": f"/resource_providers/{provider.uuid}"}
    if req.want(20):
        headers.update(cache_headers(req, provider.updated_at))
        return json_response(serialize_provider(req, provider), 200, headers)
    return no_content(201, headers)


def show(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        provider = rp_obj.get_provider(conn, uuid)
    return json_response(serialize_provider(req, provider), 200,
                         cache_headers(req, provider.updated_at))


def update(req):
    data = _canonical(req.json(update_body(req.version)))
    provider = req.app.db.run_write(rp_obj.update_provider, path(req, "uuid"), data,
                                    req.want(37))
    return json_response(serialize_provider(req, provider), 200,
                         cache_headers(req, provider.updated_at))


def delete(req):
    req.app.db.run_write(rp_obj.delete_provider, path(req, "uuid"))
    return no_content()


def list_(req):
    check_accept(req)
    validate(req.query_dict(), _list_schema(req), "Invalid query string parameters")
    snap = req.app.cache.get()
    filters = []
    name = req.get("name")
    if name is not None:
        filters.append(lambda p: p.name == name)
    uuid = req.get("uuid")
    if uuid is not None:
        filters.append(lambda p: p.uuid == uuid)
    if req.get("member_of") is not None:
        required_aggs, forbidden_aggs = qparse.member_of_params(req)
        if required_aggs:
            members = snap.providers_in_aggs(required_aggs)
            filters.append(lambda p: p.id in members)
        if forbidden_aggs:
            filters.append(lambda p: not (p.aggs & forbidden_aggs))
    if req.get("required") is not None:
        required, forbidden = qparse.required_params(req)
        names = set().union(*required) | forbidden if required else set(forbidden)
        missing = sorted(n for n in names if n not in snap.trait_names)
        if missing:
            raise errors.BadRequest(
                'Invalid trait(s) in "required" parameter: No such trait(s): %s.'
                % ", ".join(missing))
        filters.append(lambda p: all(any_of & p.traits for any_of in required)
                       and not (forbidden & p.traits))
    if req.get("in_tree") is not None:
        tree_uuid = qparse.in_tree(req.get("in_tree"))
        tree = snap.by_uuid.get(tree_uuid)
        root = tree.root_id if tree is not None else None
        filters.append(lambda p: p.root_id == root)
    if req.get("resources") is not None:
        wanted = qparse.resources(req.get("resources"))
        missing = sorted(n for n in wanted if n not in snap.rc_names)
        if missing:
            raise errors.BadRequest(
                "Invalid resource class in resources parameter: No such resource "
                f"class {missing[0]}.")
        items = list(wanted.items())
        filters.append(lambda p: all(p.can_fit(rc, amount) for rc, amount in items))
    providers = [p for p in snap.by_id.values() if all(f(p) for f in filters)]
    last = max((p.updated_at for p in providers if p.updated_at), default=None)
    return json_response({"resource_providers": [serialize_provider(req, p) for p in providers]},
                         200, cache_headers(req, last))
