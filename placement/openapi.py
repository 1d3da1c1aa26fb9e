"""The OpenAPI 3.1 description of Kova Placement, built from the code.

Nothing here is written by hand twice: the paths and methods come from the
route table (``kova.placement.routes.ROUTES``), the microversion range of
each operation from the handlers' ``since``/``by_version`` gates, and the
request bodies and query strings from the JSON Schemas the handlers validate
with (``routes.BODIES`` / ``routes.QUERIES``, functions of the
microversion).  Where a schema changes across microversions, the operation's
schema is the ``anyOf`` of all of them and ``x-microversions`` says which one
applies from which version.  JSON Schema Draft 4 as used in
``kova.placement.schemas`` is valid in OpenAPI 3.1 (JSON Schema 2020-12).

Served at ``GET /openapi.json``; ``kova placement openapi`` prints it.
"""

from __future__ import annotations

import copy
import functools
import json
import re

from kova.placement import errors, microversion

VERSIONS = [(1, minor) for minor in range(microversion.MIN_VERSION[1],
                                          microversion.MAX_VERSION[1] + 1)]

# Routes the app answers outside the Placement API (no microversion, no auth).
EXTRA_PATHS = {
    "/healthz": ("healthz", "Health: 200 when the database answers, else 503."),
    "/metrics": ("metrics", "Prometheus metrics (text exposition format)."),
    "/openapi.json": ("openapi", "This OpenAPI description."),
}

ERROR_BODY = {
    "type": "object",
    "required": ["errors"],
    "properties": {"errors": {
        "type": "array", "minItems": 1,
        "items": {
            "type": "object",
            "required": ["status", "title", "detail", "request_id"],
            "properties": {
                "status": {"type": "integer"},
                "title": {"type": "string"},
                "detail": {"type": "string"},
                "request_id": {"type": "string"},
                "code": {"type": "string",
                         "description": "machine-readable, from microversion 1.23"},
                "max_version": {"type": "string"},
                "min_version": {"type": "string"},
            },
        },
    }},
}


def _vstr(version) -> str:
    return f"{version[0]}.{version[1]}"


def _ranges(fn, available) -> list[tuple[tuple, tuple, dict | None]]:
    """[(first, last, schema)] over the microversions an operation exists in,
    merging neighbouring versions with the same schema (by identity/equality)."""
    out: list = []
    for v in available:
        schema = fn(microversion.Version(*v))
        if out and (out[-1][2] is schema or out[-1][2] == schema):
            out[-1] = (out[-1][0], v, out[-1][2])
        else:
            out.append((v, v, schema))
    return out


def _available(handler) -> list[tuple]:
    lo = getattr(handler, "min_version", None) or microversion.MIN_VERSION
    hi = getattr(handler, "max_version", None) or microversion.MAX_VERSION
    return [v for v in VERSIONS if tuple(lo) <= v <= tuple(hi)]


def _index(unique: list, schema) -> int:
    for i, u in enumerate(unique):
        if u is schema or u == schema:
            return i
    return -1


def _body(fn, available: list) -> tuple[dict | None, list]:
    """The request body schema over all microversions, and which applies when."""
    ranges = _ranges(fn, available)
    unique: list = []
    for _lo, _hi, s in ranges:
        if s is not None and _index(unique, s) < 0:
            unique.append(s)
    notes = [{"from": _vstr(lo), "to": _vstr(hi),
              "body": "none" if s is None else "schema" if len(unique) == 1
              else f"anyOf[{_index(unique, s)}]"} for lo, hi, s in ranges]
    if not unique:
        return None, notes
    if len(unique) == 1:
        return copy.deepcopy(unique[0]), notes
    return {"anyOf": [copy.deepcopy(s) for s in unique]}, notes


def _example_name(pattern: str) -> list[str]:
    """Concrete query names for a patternProperties key such as
    ``^resources([1-9][0-9]*)?$``: the bare name and one suffixed name."""
    m = re.fullmatch(r"\^(\w+)\((.*)\)\?\$", pattern)
    if m is None:
        return []
    base, suffix = m.groups()
    return [base, base + ("1" if suffix.startswith("[1-9]") else "_NET1")]


def _query_parameters(fn, available: list) -> list[dict]:
    params: dict[str, dict] = {}
    required_everywhere: set[str] | None = None
    for v in available:
        schema = fn(microversion.Version(*v))
        props = dict(schema.get("properties", {}))
        for pattern, sub in schema.get("patternProperties", {}).items():
            for name in _example_name(pattern):
                props.setdefault(name, dict(sub, **{"x-name-pattern": pattern}))
        for name, sub in props.items():
            entry = params.setdefault(name, {"first": v, "schema": sub})
            entry["last"] = v
            entry["schema"] = sub
        req = set(schema.get("required", []))
        required_everywhere = req if required_everywhere is None else required_everywhere & req
    out = []
    for name, entry in sorted(params.items(), key=lambda kv: (kv[1]["first"], kv[0])):
        sub = copy.deepcopy(entry["schema"])
        pattern = sub.pop("x-name-pattern", None)
        desc = f"microversions {_vstr(entry['first'])}–{_vstr(entry['last'])}"
        if pattern:
            desc += f"; any name matching {pattern}"
        out.append({"name": name, "in": "query", "schema": sub, "description": desc,
                    "required": name in (required_everywhere or set()) and
                    entry["first"] == available[0] and entry["last"] == available[-1]})
    return out


def _version_header() -> dict:
    return {"name": "OpenStack-API-Version", "in": "header", "required": False,
            "description": "placement X.Y (default 1.0) or placement latest",
            "schema": {"type": "string",
                       "enum": [f"placement {_vstr(v)}" for v in VERSIONS]
                       + ["placement latest"]}}


def _responses(with_body: bool) -> dict:
    error = {"description": "error", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    ok: dict = {"description": "success"}
    if with_body:
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    return {"2XX": ok, "4XX": error}


@functools.lru_cache(maxsize=1)
def _build() -> str:
    from kova.placement.routes import BODIES, QUERIES, ROUTES

    paths: dict = {}
    for name, pattern, methods in ROUTES:
        item: dict = {}
        path_params = re.findall(r"\{(\w+)\}", pattern)
        for method, handler in sorted(methods.items()):
            available = _available(handler)
            op: dict = {
                "operationId": f"{name}_{method.lower()}",
                "summary": (handler.__doc__ or "").strip().split("\n")[0] or f"{method} {pattern}",
                "x-microversions": {"min": _vstr(available[0]), "max": _vstr(available[-1])},
                "parameters": [{"name": p, "in": "path", "required": True,
                                "schema": {"type": "string"}} for p in path_params]
                + [{"$ref": "#/components/parameters/Version"}],
                "responses": _responses(method == "GET" or (name, method) in BODIES),
                "security": [] if name == "root" else [{"token": []}],
            }
            if (name, method) in QUERIES:
                op["parameters"] += _query_parameters(QUERIES[(name, method)], available)
            if (name, method) in BODIES:
                schema, notes = _body(BODIES[(name, method)], available)
                op["x-microversions"]["body"] = notes
                if schema is not None:
                    op["requestBody"] = {
                        "required": all(n["body"] != "none" for n in notes),
                        "content": {"application/json": {"schema": schema}}}
            item[method.lower()] = op
        paths[pattern] = item
    for path, (op_id, summary) in EXTRA_PATHS.items():
        paths[path] = {"get": {"operationId": op_id, "summary": summary, "security": [],
                               "responses": {"200": {"description": "success"}}}}
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "Kova Placement",
            "version": microversion.max_version_string(),
            "description": (
                "OpenStack Placement-compatible API, microversions "
                f"{microversion.min_version_string()}–{microversion.max_version_string()}. "
                "Generated from the service's route table and request JSON Schemas. "
                "Errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.TITLES.items()))),
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_BODY},
            "parameters": {"Version": _version_header()},
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token",
                          "description": "static token or Kubernetes service-account token "
                                         "(also accepted as Authorization: Bearer)"}},
        },
    }
    return json.dumps(doc, indent=1, sort_keys=False)


def openapi_json() -> str:
    return _build()


def openapi() -> dict:
    return json.loads(_build())
