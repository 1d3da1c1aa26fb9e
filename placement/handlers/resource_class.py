"""/resource_classes (from 1.2)."""

from __future__ import annotations

from kova.placement import errors
from kova.placement.handlers.common import by_version, path, since
from kova.placement.objects import resource_class as rc_obj
from kova.placement.request import cache_headers, check_accept, json_response, no_content
from kova.placement.schemas import body as schemas
from kova.placement.validation import validate


def _one(name: str) -> dict:
    return {"name": name, "links": [{"rel": "self", "href": f"/resource_classes/{name}"}]}


@since(2)
def list_(req):
    check_accept(req)
    with req.app.db.read() as conn:
        names = rc_obj.list_resource_classes(conn)
    return json_response({"resource_classes": [_one(n) for n in names]}, 200,
                         cache_headers(req))


@since(2)
def show(req):
    check_accept(req)
    name = path(req, "name")
    with req.app.db.read() as conn:
        if not rc_obj.resource_class_exists(conn, name):
            raise errors.NotFound(f"No such resource class {name}.")
    return json_response(_one(name), 200, cache_headers(req))


@since(2)
def create(req):
    data = req.json(schemas.RESOURCE_CLASS)
    req.app.db.run_write(rc_obj.create_resource_class, data["name"])
    return no_content(201, {"location": f"/resource_classes/{data['name']}"})


def _rename(req):
    name = path(req, "name")
    data = req.json(schemas.RESOURCE_CLASS)
    req.app.db.run_write(rc_obj.rename_resource_class, name, data["name"])
    return json_response(_one(data["name"]), 200, cache_headers(req))


def _ensure(req):
    name = path(req, "name")
    validate({"name": name}, schemas.RESOURCE_CLASS)
    created = req.app.db.run_write(rc_obj.ensure_resource_class, name)
    # no cache headers here, as in OpenStack Placement
    return no_content(201 if created else 204, {"location": f"/resource_classes/{name}"})


put = by_version((2, _rename), (7, _ensure))


def put_body(version) -> dict | None:
    """A rename (body ``{"name"}``) before 1.7; from 1.7 PUT creates, no body."""
    return schemas.RESOURCE_CLASS if version < (1, 7) else None


@since(2)
def delete(req):
    req.app.db.run_write(rc_obj.delete_resource_class, path(req, "name"))
    return no_content()
