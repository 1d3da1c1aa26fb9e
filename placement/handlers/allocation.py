"""/allocations/{consumer_uuid}, POST /allocations (1.13),
/resource_providers/{uuid}/allocations and POST /reshaper (1.30)."""

from __future__ import annotations

import uuid as uuidlib

from kova.placement import errors
from kova.placement.handlers.common import path, since
from kova.placement.objects import allocation as alloc_obj
from kova.placement.objects.consumer import ConsumerWrite
from kova.placement.objects.reshaper import reshape as reshape_write
from kova.placement.objects.resource_provider import get_provider
from kova.placement.request import cache_headers, check_accept, json_response, no_content
from kova.placement.schemas import body as schemas
from kova.placement.validation import is_uuid


def show_for_consumer(req):
    check_accept(req)
    consumer_uuid = path(req, "consumer_uuid")
    with req.app.db.read() as conn:
        consumer, allocs, last = alloc_obj.consumer_allocations(conn, consumer_uuid)
    out: dict = {"allocations": allocs}
    if allocs and req.want(12) and consumer is not None:
        out["project_id"] = consumer.project_id
        out["user_id"] = consumer.user_id
        if req.want(28):
            out["consumer_generation"] = consumer.generation
        if req.want(38):
            out["consumer_type"] = consumer.consumer_type or "unknown"
    return json_response(out, 200, cache_headers(req, last))


def show_for_provider(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        provider = get_provider(
            conn, uuid, message=f"Resource provider '{uuid}' not found: No resource "
                                f"provider with uuid {uuid} found")
        allocs, last = alloc_obj.provider_allocations(conn, provider)
    if not req.want(28):
        for entry in allocs.values():
            entry.pop("consumer_generation", None)
    return json_response({"allocations": allocs,
                          "resource_provider_generation": provider.generation},
                         200, cache_headers(req, last))


def put_body(version) -> dict:
    for minor, schema in ((38, schemas.ALLOCATIONS_PUT_1_38), (34, schemas.ALLOCATIONS_PUT_1_34),
                          (28, schemas.ALLOCATIONS_PUT_1_28), (12, schemas.ALLOCATIONS_PUT_1_12),
                          (8, schemas.ALLOCATIONS_PUT_1_8)):
        if version >= (1, minor):
            return schema
    return schemas.ALLOCATIONS_PUT_1_0


def post_body(version) -> dict:
    for minor, schema in ((38, schemas.ALLOCATIONS_POST_1_38),
                          (34, schemas.ALLOCATIONS_POST_1_34),
                          (28, schemas.ALLOCATIONS_POST_1_28)):
        if version >= (1, minor):
            return schema
    return schemas.ALLOCATIONS_POST_1_13


def reshape_body(version) -> dict:
    if version >= (1, 38):
        return schemas.RESHAPER_1_38
    if version >= (1, 34):
        return schemas.RESHAPER_1_34
    return schemas.RESHAPER_1_30


def _consumer_uuid(value: str) -> str:
    """A consumer UUID in its canonical form, or a 400 (the body schemas only
    check ``^[0-9a-fA-F-]{36}$``, which lets through e.g. 36 dashes)."""
    if not is_uuid(value):
        raise errors.BadRequest(f"Malformed consumer_uuid: {value}")
    return str(uuidlib.UUID(value))


def _consumer_write(req, consumer_uuid: str, data: dict) -> ConsumerWrite:
    allocations = data["allocations"]
    if isinstance(allocations, list):  # before 1.12
        merged: dict = {}
        for item in allocations:
            merged.setdefault(item["resource_provider"]["uuid"], {}).update(item["resources"])
        by_rp = merged
    else:
        by_rp = {rp_uuid: dict(entry["resources"]) for rp_uuid, entry in allocations.items()}
    return ConsumerWrite(
        uuid=consumer_uuid, allocations=by_rp,
        project_id=data.get("project_id"), user_id=data.get("user_id"),
        generation=data.get("consumer_generation"), check_generation=req.want(28),
        consumer_type=data.get("consumer_type"), set_type=req.want(38))


def put_for_consumer(req):
    consumer_uuid = _consumer_uuid(path(req, "consumer_uuid"))
    data = req.json(put_body(req.version))
    write = _consumer_write(req, consumer_uuid, data)
    req.app.db.run_write(alloc_obj.replace_allocations, [write],
                         f"Unable to allocate inventory for consumer {consumer_uuid}")
    return no_content()


@since(13)
def post(req):
    data = req.json(post_body(req.version))
    writes = [_consumer_write(req, _consumer_uuid(consumer_uuid), entry)
              for consumer_uuid, entry in data.items()]
    req.app.db.run_write(alloc_obj.replace_allocations, writes, "Unable to allocate inventory")
    return no_content()


def delete_for_consumer(req):
    req.app.db.run_write(alloc_obj.delete_consumer_allocations, path(req, "consumer_uuid"))
    return no_content()


@since(30)
def reshape(req):
    data = req.json(reshape_body(req.version))
    writes = [_consumer_write(req, _consumer_uuid(c), entry)
              for c, entry in data["allocations"].items()]
    req.app.db.run_write(reshape_write, data["inventories"], writes)
    return no_content()
