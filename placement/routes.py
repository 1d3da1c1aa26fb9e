"""The route table: (name, path pattern, {method: handler}), and matching.

The handlers import only ``kova.placement.request`` and below, never the
app, so importing this module (and the app, which imports it) has no cycle.
"""

from __future__ import annotations

import re
from typing import Callable

from kova.placement import errors
from kova.placement.handlers import (
    aggregate,
    allocation,
    allocation_candidate,
    inventory,
    resource_class,
    resource_provider,
    root,
    trait,
    usage,
)
from kova.placement.request import Request, Response
from kova.placement.schemas import body as schemas

Handler = Callable[[Request], Response]

ROUTES = [
    ("root", "/", {"GET": root.home}),
    ("resource_providers", "/resource_providers",
     {"GET": resource_provider.list_, "POST": resource_provider.create}),
    ("resource_provider", "/resource_providers/{uuid}",
     {"GET": resource_provider.show, "PUT": resource_provider.update,
      "DELETE": resource_provider.delete}),
    ("inventories", "/resource_providers/{uuid}/inventories",
     {"GET": inventory.list_, "POST": inventory.create, "PUT": inventory.replace_all,
      "DELETE": inventory.delete_all}),
    ("inventory", "/resource_providers/{uuid}/inventories/{resource_class}",
     {"GET": inventory.show, "PUT": inventory.update, "DELETE": inventory.delete}),
    ("provider_usages", "/resource_providers/{uuid}/usages", {"GET": usage.provider}),
    ("provider_aggregates", "/resource_providers/{uuid}/aggregates",
     {"GET": aggregate.show, "PUT": aggregate.put}),
    ("provider_allocations", "/resource_providers/{uuid}/allocations",
     {"GET": allocation.show_for_provider}),
    ("provider_traits", "/resource_providers/{uuid}/traits",
     {"GET": trait.provider_list, "PUT": trait.provider_put, "DELETE": trait.provider_delete}),
    ("resource_classes", "/resource_classes",
     {"GET": resource_class.list_, "POST": resource_class.create}),
    ("resource_class", "/resource_classes/{name}",
     {"GET": resource_class.show, "PUT": resource_class.put, "DELETE": resource_class.delete}),
    ("allocations", "/allocations", {"POST": allocation.post}),
    ("allocation", "/allocations/{consumer_uuid}",
     {"GET": allocation.show_for_consumer, "PUT": allocation.put_for_consumer,
      "DELETE": allocation.delete_for_consumer}),
    ("allocation_candidates", "/allocation_candidates",
     {"GET": allocation_candidate.list_}),
    ("traits", "/traits", {"GET": trait.list_}),
    ("trait", "/traits/{name}", {"GET": trait.show, "PUT": trait.put, "DELETE": trait.delete}),
    ("usages", "/usages", {"GET": usage.totals}),
    ("reshaper", "/reshaper", {"POST": allocation.reshape}),
]

# Async one-statement versions of the writes that register a host, tried
# first on Postgres (kova.placement.fastwrite); None falls back to ROUTES.
FAST = {
    ("resource_providers", "POST"): resource_provider.create_fast,
    ("inventories", "PUT"): inventory.replace_all_fast,
    ("provider_aggregates", "PUT"): aggregate.put_fast,
    ("provider_traits", "PUT"): trait.provider_put_fast,
}

# The JSON Schemas the handlers validate with, by (route, method), as
# functions of the microversion (None: no body).  The handlers call the same
# functions; kova.placement.openapi builds the OpenAPI description from them.
BODIES = {
    ("resource_providers", "POST"): resource_provider.create_body,
    ("resource_provider", "PUT"): resource_provider.update_body,
    ("inventories", "POST"): lambda _v: schemas.INVENTORY_POST,
    ("inventories", "PUT"): lambda _v: schemas.INVENTORIES_PUT,
    ("inventory", "PUT"): lambda _v: schemas.INVENTORY_PUT_ONE,
    ("provider_aggregates", "PUT"): aggregate.put_body,
    ("provider_traits", "PUT"): lambda _v: schemas.PROVIDER_TRAITS_PUT,
    ("resource_classes", "POST"): lambda _v: schemas.RESOURCE_CLASS,
    ("resource_class", "PUT"): resource_class.put_body,
    ("allocations", "POST"): allocation.post_body,
    ("allocation", "PUT"): allocation.put_body,
    ("reshaper", "POST"): allocation.reshape_body,
}
QUERIES = {
    ("resource_providers", "GET"): resource_provider.list_query,
    ("allocation_candidates", "GET"): allocation_candidate.list_query,
    ("traits", "GET"): lambda _v: trait.LIST_QUERY,
    ("usages", "GET"): usage.totals_query,
}

#: Routes where OpenStack Placement looks the provider up before it reads
#: the body: a bad body for a missing provider is 404 there, not 400.  Kova
#: validates first (the fast write paths need no lookup) and, only when that
#: fails, checks the provider, so the answer is the same as OpenStack's.
LOOKUP_FIRST = frozenset({("resource_provider", "PUT"), ("inventories", "PUT"),
                          ("inventories", "POST"), ("inventory", "PUT"),
                          ("provider_aggregates", "PUT")})


class Route:
    def __init__(self, name: str, pattern: str, methods: dict[str, Handler]) -> None:
        self.name = name
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.regex = re.compile("^" + regex + "$")
        self.methods = methods


def compiled() -> list[Route]:
    return [Route(name, pattern, methods) for name, pattern, methods in ROUTES]


def match(routes: list[Route], req: Request) -> Handler:
    """The handler for ``req`` (setting its route name and path parameters),
    or a 404 (no route) or 405 (no such method on the route)."""
    for route in routes:
        m = route.regex.match(req.path)
        if m is None:
            continue
        req.route_name = route.name
        req.path_params = m.groupdict()
        handler = route.methods.get(req.method)
        if handler is None:
            allow = ", ".join(sorted(route.methods))
            raise errors.MethodNotAllowed(
                f"The method {req.method} is not allowed for this resource.",
                headers={"allow": allow})
        return handler
    raise errors.NotFound("The resource could not be found.")
