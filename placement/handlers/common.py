"""Helpers shared by the handlers."""

from __future__ import annotations

import functools

from kova.placement import errors


def since(minor: int, status: int = 404, until: int | None = None):
    """Only answer from microversion 1.<minor> (to 1.<until>); else 404/405."""

    def decorator(fn):
        @functools.wraps(fn)
        def wrapper(req):
            if req.version < (1, minor) or (until is not None and req.version > (1, until)):
                if status == 405:
                    raise errors.MethodNotAllowed(
                        f"The method {req.method} is not allowed for this resource.")
                raise errors.NotFound("The resource could not be found.")
            return fn(req)
        wrapper.min_version = (1, minor)  # for the OpenAPI description
        wrapper.max_version = (1, until) if until is not None else None
        return wrapper
    return decorator


def by_version(*table):
    """Pick the handler for the request's version from (min_minor, fn) pairs."""
    ordered = sorted(table, key=lambda item: item[0], reverse=True)

    def dispatch(req):
        for minor, fn in ordered:
            if req.version >= (1, minor):
                return fn(req)
        raise errors.NotFound("The resource could not be found.")
    dispatch.min_version = (1, ordered[-1][0])
    return dispatch


def provider_links(req, uuid: str) -> list[dict]:
    url = f"/resource_providers/{uuid}"
    links = [{"rel": "self", "href": url}]
    rels = ["inventories", "usages"]
    if req.want(1):
        rels.append("aggregates")
    if req.want(6):
        rels.append("traits")
    if req.want(11):
        rels.append("allocations")
    links.extend({"rel": rel, "href": f"{url}/{rel}"} for rel in rels)
    return links


def serialize_provider(req, p) -> dict:
    data = {"uuid": p.uuid, "name": p.name, "generation": p.generation,
            "links": provider_links(req, p.uuid)}
    if req.want(14):
        data["parent_provider_uuid"] = p.parent_uuid
        data["root_provider_uuid"] = p.root_uuid
    return data


def path(req, name: str) -> str:
    return req.path_params[name]
