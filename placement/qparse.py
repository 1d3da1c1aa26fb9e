"""Parsing of the query parameters shared by several routes.

``resources=VCPU:2,MEMORY_MB:512``, ``required=T1,!T2`` / ``required=in:T1,T2``,
``member_of=<agg>`` / ``in:<a>,<b>`` / ``!<agg>`` / ``!in:<a>,<b>``, ``in_tree``.
Each bad value is a 400 with the message OpenStack Placement gives.
"""

from __future__ import annotations

from kova.placement import errors, limits
from kova.placement.validation import is_uuid


def resources(value: str) -> dict[str, int]:
    if value.strip() == "":
        raise errors.BadRequest(
            "Badly formed resources parameter. Expected resources query string "
            "parameter in form: ?resources=VCPU:2,MEMORY_MB:1024. Got: empty string.")
    out: dict[str, int] = {}
    for item in value.split(","):
        try:
            name, amount_s = item.split(":")
        except ValueError:
            raise errors.BadRequest(
                "Badly formed resources parameter. Expected resources query string "
                f"parameter in form: ?resources=VCPU:2,MEMORY_MB:1024. Got: {item}.") from None
        try:
            amount = limits.bounded_int(amount_s)
            if amount is None:
                raise ValueError(amount_s)
        except ValueError:
            raise errors.BadRequest(
                f"Requested resource {name} expected positive integer amount. "
                f"Got: {amount_s[:64]}.") from None
        if amount < 1:
            raise errors.BadRequest(
                f"Requested resource {name} requires amount >= 1. Got: {amount}.")
        out[name] = amount
    return out


def traits_value(value: str, allow_forbidden: bool, allow_any: bool):
    """One ``required`` value -> ([set of OR-ed traits, ...], {forbidden})."""
    if value.startswith("in:"):
        if not allow_any:
            raise errors.BadRequest(
                "Invalid query string parameters: The format 'in:HW_CPU_X86_VMX,"
                f"CUSTOM_MAGIC' only supported since microversion 1.39. Got: {value}")
        any_traits = {s.strip() for s in value[3:].split(",")}
        if not all(any_traits):
            raise errors.BadRequest(
                "Invalid query string parameters: Expected 'required' parameter value "
                f"of the form: in:HW_CPU_X86_VMX,CUSTOM_MAGIC. Got an empty trait in: {value}")
        if any(tr.startswith("!") for tr in any_traits):
            raise errors.BadRequest(
                "Invalid query string parameters: The format 'in:HW_CPU_X86_VMX,"
                f"CUSTOM_MAGIC' does not support forbidden traits. Got: {value}")
        return [frozenset(any_traits)], set()
    items = [s.strip() for s in value.split(",")]
    forbidden = {s.lstrip("!") for s in items if s.startswith("!")}
    if not all(items) or not all(forbidden):
        form = "HW_CPU_X86_VMX,!CUSTOM_MAGIC" if allow_forbidden else "HW_CPU_X86_VMX,CUSTOM_MAGIC"
        raise errors.BadRequest(
            "Invalid query string parameters: Expected 'required' parameter value of "
            f"the form: {form}. Got an empty trait in: {value}")
    if forbidden and not allow_forbidden:
        raise errors.BadRequest(
            "Invalid query string parameters: Expected 'required' parameter value of "
            f"the form: HW_CPU_X86_VMX,CUSTOM_MAGIC. Got: {value}")
    required = [frozenset([s]) for s in items if not s.startswith("!")]
    return required, forbidden


def required_params(req, suffix: str = ""):
    allow_forbidden = req.want(22)
    allow_any = req.want(39)
    values = req.getall("required" + suffix)
    if not allow_any:
        values = values[-1:]
    required: list[frozenset[str]] = []
    forbidden: set[str] = set()
    for value in values:
        r, f = traits_value(value, allow_forbidden, allow_any)
        required += r
        forbidden |= f
    return required, forbidden


def member_of_value(value: str):
    if "," in value and not (value.startswith("in:") or value.startswith("!in:")):
        raise errors.BadRequest(
            "Multiple values for 'member_of' must be prefixed with the 'in:' or "
            f"'!in:' keyword using the valid microversion. Got: {value}")
    required: set[str] = set()
    forbidden: set[str] = set()
    if value.startswith("!in:"):
        forbidden = set(value[4:].split(","))
    elif value.startswith("!"):
        forbidden = {value[1:]}
    elif value.startswith("in:"):
        required = set(value[3:].split(","))
    else:
        required = {value}
    for agg in required | forbidden:
        if not is_uuid(agg):
            raise errors.BadRequest(
                "Invalid query string parameters: Expected 'member_of' parameter to "
                f"contain valid UUID(s). Got: {agg}")
    return required, forbidden


def member_of_params(req, suffix: str = ""):
    values = req.getall("member_of" + suffix)
    if not req.want(24) and len(values) > 1:
        raise errors.BadRequest(f"Multiple member_of{suffix} parameters are not supported")
    required: list[set[str]] = []
    forbidden: set[str] = set()
    for value in values:
        r, f = member_of_value(value)
        if r:
            required.append(r)
        if f:
            if not req.want(32):
                raise errors.BadRequest(
                    f"Forbidden member_of{suffix} parameters are not supported in the "
                    "specified microversion")
            forbidden |= f
    return required, forbidden


def in_tree(value: str) -> str:
    value = value.strip()
    if not is_uuid(value):
        raise errors.BadRequest(
            "Invalid query string parameters: Expected 'in_tree' parameter to be a "
            f"format of uuid. Got: {value}")
    return value
