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


class _Unknown(Exception):
    """A schema this module does not judge: always fall back."""


def _type(schema) -> Check:
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(k not in _TYPES for k in kinds):
        raise _Unknown
    tests = [_TYPES[k] for k in kinds]
    return lambda v: any(t(v) for t in tests)


def _enum(schema) -> Check:
    options = schema["enum"]
    return lambda v: any(type(v) is type(o) and v == o for o in options)


def _any_of(schema) -> Check:
    subs = [compile_schema(s) for s in schema["anyOf"]]
    return lambda v: any(c(v) for c in subs)


def _minimum(schema) -> Check:
    lo = schema["minimum"]
    return lambda v: not _is_number(v) or v >= lo


def _maximum(schema) -> Check:
    hi = schema["maximum"]
    return lambda v: not _is_number(v) or v <= hi


def _min_length(schema) -> Check:
    n = schema["minLength"]
    return lambda v: type(v) is not str or len(v) >= n


def _max_length(schema) -> Check:
    n = schema["maxLength"]
    return lambda v: type(v) is not str or len(v) <= n


def _pattern(schema) -> Check:
    rx = re.compile(schema["pattern"])
    return lambda v: type(v) is not str or rx.search(v) is not None


def _format(schema) -> Check:
    if schema["format"] != "uuid":
        raise _Unknown
    return lambda v: type(v) is not str or _uuid_ok(v)


def _items(schema) -> Check:
    item = compile_schema(schema["items"])
    return lambda v: type(v) is not list or all(item(x) for x in v)


def _min_items(schema) -> Check:
    n = schema["minItems"]
    return lambda v: type(v) is not list or len(v) >= n


def _unique_items(schema) -> Check | None:
    if not schema["uniqueItems"]:
        return None
    # only lists of strings are judged here (1 == 1.0 == True subtleties)
    return lambda v: type(v) is not list or (
        all(type(x) is str for x in v) and len(set(v)) == len(v))


def _min_properties(schema) -> Check:
    n = schema["minProperties"]
    return lambda v: type(v) is not dict or len(v) >= n


def _required(schema) -> Check:
    req = list(schema["required"])
    return lambda v: type(v) is not dict or all(k in v for k in req)


_KEYWORDS = {"type": _type, "enum": _enum, "anyOf": _any_of, "minimum": _minimum,
             "maximum": _maximum, "minLength": _min_length, "maxLength": _max_length,
             "pattern": _pattern, "format": _format, "items": _items,
             "minItems": _min_items, "uniqueItems": _unique_items,
             "minProperties": _min_properties, "required": _required}


def _members(schema) -> Check | None:
    """properties / patternProperties / additionalProperties together."""
    props = {k: compile_schema(s) for k, s in schema.get("properties", {}).items()}
    patterns = [(re.compile(p), compile_schema(s))
                for p, s in schema.get("patternProperties", {}).items()]
    additional = schema.get("additionalProperties", True)
    if additional not in (True, False):
        raise _Unknown
    if not (props or patterns or additional is False):
        return None

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
    return members


def compile_schema(schema: dict) -> Check:
    if not isinstance(schema, dict) or set(schema) - _KNOWN:
        return _never
    checks: list[Check] = []
    try:
        for keyword, build in _KEYWORDS.items():
            if keyword in schema:
                check = build(schema)
                if check is not None:
                    checks.append(check)
        members = _members(schema)
    except _Unknown:
        return _never
    if members is not None:
        checks.append(members)

    def run(v) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True
    return run
