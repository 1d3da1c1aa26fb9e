"""A fast accept-only check for the JSON Schema subset Placement uses.

``compile_schema(schema)`` returns a function that answers True only for
documents the schema certainly accepts.  False means "not sure": the caller
then runs the real ``jsonschema`` validator, which decides and produces the
error message.  So the compiled check may be stricter than JSON Schema (for
example it treats 1.0 as not an integer) but never more lenient, and schemas
with keywords it does not know always fall back.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable

Check = Callable[[Any], bool]

_KNOWN = {"type", "properties", "required", "additionalProperties", "patternProperties",
          "minimum", "maximum", "minLength", "maxLength", "pattern", "enum", "anyOf",
          "items", "minItems", "uniqueItems", "minProperties", "format"}


def _never(_value) -> bool:
    return False


def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    return type(v) in (int, float)


def _uuid_ok(v) -> bool:
    try:
        uuid.UUID(v)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


_TYPES: dict[str, Check] = {
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list,
    "string": lambda v: type(v) is str,
    "integer": _is_int,
    "number": _is_number,
    "null": lambda v: v is None,
    "boolean": lambda v: type(v) is bool,
}


def compile_schema(schema: dict) -> Check:
    if not isinstance(schema, dict) or set(schema) - _KNOWN:
        return _never
    checks: list[Check] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if any(k not in _TYPES for k in kinds):
            return _never
        tests = [_TYPES[k] for k in kinds]
        checks.append(lambda v: any(t(v) for t in tests))
    if "enum" in schema:
        options = schema["enum"]
        checks.append(lambda v: any(type(v) is type(o) and v == o for o in options))
    if "anyOf" in schema:
        subs = [compile_schema(s) for s in schema["anyOf"]]
        checks.append(lambda v: any(c(v) for c in subs))
    if "minimum" in schema:
        lo = schema["minimum"]
        checks.append(lambda v: not _is_number(v) or v >= lo)
    if "maximum" in schema:
        hi = schema["maximum"]
        checks.append(lambda v: not _is_number(v) or v <= hi)
    if "minLength" in schema:
        n = schema["minLength"]
        checks.append(lambda v, n=n: type(v) is not str or len(v) >= n)
    if "maxLength" in schema:
        n = schema["maxLength"]
        checks.append(lambda v, n=n: type(v) is not str or len(v) <= n)
    if "pattern" in schema:
        rx = re.compile(schema["pattern"])
        checks.append(lambda v: type(v) is not str or rx.search(v) is not None)
    if "format" in schema:
        if schema["format"] != "uuid":
            return _never
        checks.append(lambda v: type(v) is not str or _uuid_ok(v))
    if "items" in schema:
        item = compile_schema(schema["items"])
        checks.append(lambda v: type(v) is not list or all(item(x) for x in v))
    if "minItems" in schema:
        n = schema["minItems"]
        checks.append(lambda v, n=n: type(v) is not list or len(v) >= n)
    if schema.get("uniqueItems"):
        # only lists of strings are judged here (1 == 1.0 == True subtleties)
        checks.append(lambda v: type(v) is not list or (
            all(type(x) is str for x in v) and len(set(v)) == len(v)))
    if "minProperties" in schema:
        n = schema["minProperties"]
        checks.append(lambda v, n=n: type(v) is not dict or len(v) >= n)
    if "required" in schema:
        req = list(schema["required"])
        checks.append(lambda v: type(v) is not dict or all(k in v for k in req))
    props = {k: compile_schema(s) for k, s in schema.get("properties", {}).items()}
    patterns = [(re.compile(p), compile_schema(s))
                for p, s in schema.get("patternProperties", {}).items()]
    additional = schema.get("additionalProperties", True)
    if additional not in (True, False):
        return _never
    if props or patterns or additional is False:
        def members(v) -> bool:
            if type(v) is not dict:
                return True
            for key, value in v.items():
                matched = False
                check = props.get(key)
                if check is not None:
                    matched = True
                    if not check(value):
                        return False
                for rx, sub in patterns:
                    if rx.search(key):
                        matched = True
                        if not sub(value):
                            return False
                if not matched and additional is False:
                    return False
            return True
        checks.append(members)

    def run(v) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True
    return run
