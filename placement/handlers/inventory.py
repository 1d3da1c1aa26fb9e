"""/resource_providers/{uuid}/inventories[/{resource_class}]."""

from __future__ import annotations

from kova.placement import errors
from kova.placement.handlers.common import path
from kova.placement.objects import inventory as inv_obj
from kova.placement.objects.resource_provider import get_provider, lock_and_bump
from kova.placement.request import NO_DATE, cache_headers, check_accept, json_response, no_content
from kova.placement.schemas import body as schemas

_record = inv_obj.record


def _out(rec: dict) -> dict:
    return {f: rec[f] for f in inv_obj.INVENTORY_FIELDS}


def list_(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        provider = get_provider(conn, uuid)
        records = inv_obj.get_inventories(conn, provider)
    return json_response({"inventories": {rc: _out(r) for rc, r in records.items()},
                          "resource_provider_generation": provider.generation},
                         200, cache_headers(req, provider.updated_at if records else NO_DATE))


def show(req):
    check_accept(req)
    uuid, rc = path(req, "uuid"), path(req, "resource_class")
    with req.app.db.read() as conn:
        provider = get_provider(conn, uuid)
        records = inv_obj.get_inventories(conn, provider)
    if rc not in records:
        raise errors.NotFound(f"No inventory of class {rc} for {uuid}")
    out = _out(records[rc])
    out["resource_provider_generation"] = provider.generation
    return json_response(out, 200, cache_headers(req, provider.updated_at))


def create(req):
    uuid = path(req, "uuid")
    data = req.json(schemas.INVENTORY_POST)
    rc = data["resource_class"]
    rec = _record(data)

    inv_obj.validate_capacity(uuid, {rc: rec}, req.want(26), "create")

    def _write(conn):
        provider = lock_and_bump(conn, uuid)
        inv_obj.add_inventory(conn, provider, rc, rec, bump=False)
        return provider

    provider = req.app.db.run_write(_write)
    out = _out(rec)
    out["resource_provider_generation"] = provider.generation
    headers = {"location": f"/resource_providers/{uuid}/inventories/{rc}"}
    headers.update(cache_headers(req))
    return json_response(out, 201, headers)


def _replace_all_input(req):
    uuid = path(req, "uuid")
    data = req.json(schemas.INVENTORIES_PUT)
    records = {rc: _record(d) for rc, d in data["inventories"].items()}
    inv_obj.validate_capacity(uuid, records, req.want(26), "update")
    return uuid, data["resource_provider_generation"], records


def replace_all(req):
    uuid, generation, records = _replace_all_input(req)

    def _write(conn):
        provider = lock_and_bump(conn, uuid, generation)
        inv_obj.set_inventories(conn, provider, records, None, bump=False)
        return provider

    return _replace_all_reply(req, records, req.app.db.run_write(_write))


async def replace_all_fast(req):
    """The common case in one statement; None leaves it to ``replace_all``."""
    uuid, generation, records = _replace_all_input(req)
    provider = await req.app.fast.set_inventories(uuid, generation, records)
    return None if provider is None else _replace_all_reply(req, records, provider)


def _replace_all_reply(req, records, provider):
    return json_response({"inventories": {rc: _out(r) for rc, r in records.items()},
                          "resource_provider_generation": provider.generation},
                         200, cache_headers(req, None if records else NO_DATE))


def update(req):
    uuid, rc = path(req, "uuid"), path(req, "resource_class")
    data = req.json(schemas.INVENTORY_PUT_ONE)
    rec = _record(data)

    inv_obj.validate_capacity(uuid, {rc: rec}, req.want(26), "update")

    def _write(conn):
        provider = lock_and_bump(conn, uuid, data["resource_provider_generation"])
        inv_obj.update_inventory(conn, provider, rc, rec, None, bump=False)
        return provider

    provider = req.app.db.run_write(_write)
    out = _out(rec)
    out["resource_provider_generation"] = provider.generation
    return json_response(out, 200, cache_headers(req))


def delete(req):
    uuid, rc = path(req, "uuid"), path(req, "resource_class")

    def _write(conn):
        provider = lock_and_bump(conn, uuid)
        inv_obj.delete_inventory(conn, provider, rc, bump=False)

    req.app.db.run_write(_write)
    return no_content()


def delete_all(req):
    if not req.want(5):
        raise errors.MethodNotAllowed(
            f"The method {req.method} is not allowed for this resource.",
            headers={"allow": "GET, POST, PUT"})
    uuid = path(req, "uuid")

    def _write(conn):
        provider = lock_and_bump(conn, uuid)
        inv_obj.set_inventories(conn, provider, {}, None, bump=False)

    req.app.db.run_write(_write)
    return no_content()
