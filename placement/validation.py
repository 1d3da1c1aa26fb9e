"""Input checks shared by the handlers: JSON Schema validation (a fast
accept-only check first, jsonschema for the verdict and its message), UUIDs
and strings the database can store."""

from __future__ import annotations

import uuid as uuidlib

import jsonschema

from kova.placement import errors

FORMAT_CHECKER = jsonschema.FormatChecker()


@FORMAT_CHECKER.checks("uuid")
def _is_uuid(value) -> bool:
    if not isinstance(value, str):
        return True
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def canonical_uuid(value: str) -> str:
    """``value`` (any form ``uuid.UUID`` accepts: braces, urn:, no dashes,
    upper case) as the 36-character lower-case form the database stores."""
    return str(uuidlib.UUID(value))


def is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


# Keyed by id(): schemas must be long-lived objects (module constants or
# memoised per microversion), never built per request.
_VALIDATORS: dict[int, tuple] = {}


def validate(data, schema: dict, what: str = "JSON does not validate") -> None:
    entry = _VALIDATORS.get(id(schema))
    if entry is None:
        from kova.placement.schemas.fast import compile_schema

        entry = (schema, compile_schema(schema),
                 jsonschema.Draft4Validator(schema, format_checker=FORMAT_CHECKER))
        _VALIDATORS[id(schema)] = entry
    _schema, fast, validator = entry
    if fast(data):
        return
    try:
        validator.validate(data)
    except jsonschema.ValidationError as exc:
        # jsonschema's full text, as OpenStack Placement answers (only on
        # this error path: valid input never gets here)
        raise errors.BadRequest(f"{what}: {exc}") from None


def storable(value) -> bool:
    """No NUL character and no unpaired surrogate in any string (key or
    value): Postgres text cannot hold NUL, and neither is valid UTF-8."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    return True
