"""/traits and /resource_providers/{uuid}/traits (from 1.6)."""

from __future__ import annotations

import re

from kova.placement import errors
from kova.placement.handlers.common import path, since
from kova.placement.objects import trait as trait_obj
from kova.placement.objects.resource_provider import get_provider
from kova.placement.request import cache_headers, check_accept, json_response, no_content
from kova.placement.schemas import body as schemas
from kova.placement.validation import validate

_CUSTOM = re.compile(r"^CUSTOM_[A-Z0-9_]+$")
LIST_QUERY = {"type": "object", "properties": {"name": {"type": "string"},
                                                  "associated": {"type": "string"}},
                "additionalProperties": False}


@since(6)
def list_(req):
    check_accept(req)
    validate(req.query_dict(), LIST_QUERY, "Invalid query string parameters")
    name_filter = None
    name = req.get("name")
    if name is not None:
        op, sep, value = name.partition(":")
        if not sep:
            raise errors.BadRequest(
                "Badly formatted name parameter. Expected name query string parameter "
                f'in form: ?name=[in|startswith]:[name1,name2|prefix]. Got: "{name}"')
        if op == "in":
            name_filter = ("in", value.split(","))
        elif op == "startswith":
            name_filter = ("startswith", value)
    associated = None
    if req.get("associated") is not None:
        value = req.get("associated").lower()
        if value not in ("true", "false"):
            raise errors.BadRequest(
                'The query parameter "associated" only accepts "true" or "false"')
        associated = value == "true"
    with req.app.db.read() as conn:
        names = trait_obj.list_traits(conn, name_filter, associated)
    return json_response({"traits": names}, 200, cache_headers(req))


@since(6)
def show(req):
    check_accept(req)
    name = path(req, "name")
    with req.app.db.read() as conn:
        if not trait_obj.trait_ids(conn, [name]):
            raise errors.NotFound(f"No such trait(s): {name}")
    return no_content(204, cache_headers(req))


@since(6)
def put(req):
    name = path(req, "name")
    if len(name) > 255 or not _CUSTOM.match(name):
        raise errors.BadRequest(
            "The trait is invalid. A valid trait must be no longer than 255 characters, "
            'start with the prefix "CUSTOM_" and use following characters: "A"-"Z", '
            '"0"-"9" and "_"')
    created = req.app.db.run_write(trait_obj.ensure_trait, name)
    headers = {"location": f"/traits/{name}"}
    headers.update(cache_headers(req))
    return no_content(201 if created else 204, headers)


@since(6)
def delete(req):
    req.app.db.run_write(trait_obj.delete_trait, path(req, "name"))
    return no_content()


@since(6)
def provider_list(req):
    check_accept(req)
    uuid = path(req, "uuid")
    with req.app.db.read() as conn:
        provider = get_provider(conn, uuid)
        names = trait_obj.provider_traits(conn, provider)
    return json_response({"traits": names, "resource_provider_generation": provider.generation},
                         200, cache_headers(req, provider.updated_at))


@since(6)
def provider_put(req):
    uuid = path(req, "uuid")
    data = req.json(schemas.PROVIDER_TRAITS_PUT)
    provider = req.app.db.run_write(trait_obj.replace_provider_traits, uuid,
                                    data["resource_provider_generation"], data["traits"])
    return _provider_put_reply(req, data, provider)


async def provider_put_fast(req):
    """In one statement; None leaves the request to ``provider_put``."""
    if not req.want(6):
        return None
    data = req.json(schemas.PROVIDER_TRAITS_PUT)
    provider = await req.app.fast.set_traits(path(req, "uuid"),
                                             data["resource_provider_generation"],
                                             data["traits"])
    return None if provider is None else _provider_put_reply(req, data, provider)


def _provider_put_reply(req, data, provider):
    return json_response({"traits": sorted(set(data["traits"])),
                          "resource_provider_generation": provider.generation},
                         200, cache_headers(req))


@since(6)
def provider_delete(req):
    req.app.db.run_write(trait_obj.replace_provider_traits, path(req, "uuid"), None, [])
    return no_content()
