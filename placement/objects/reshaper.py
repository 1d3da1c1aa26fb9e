"""POST /reshaper: inventories and allocations of several providers changed
in one transaction (moving resources from a provider to its children)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.objects.allocation import replace_allocations
from kova.placement.objects.consumer import ConsumerWrite
from kova.placement.objects.inventory import (
    get_inventories,
    record,
    set_inventories,
    validate_capacity,
)
from kova.placement.objects.resource_provider import find_provider, get_provider


def _lock_checked(conn: Connection, inventories: dict) -> None:
    """Lock every provider named in ``inventories`` (in uuid order), after
    checking each exists (400) and has the given generation (409)."""
    providers = {}
    for rp_uuid in sorted(inventories):
        if find_provider(conn, rp_uuid) is None:
            raise errors.BadRequest(
                f"Resource provider {rp_uuid} in inventories not found",
                code=errors.RESOURCE_PROVIDER_NOT_FOUND)
        providers[rp_uuid] = get_provider(conn, rp_uuid, lock=True)
    for rp_uuid, entry in inventories.items():
        actual, given = providers[rp_uuid].generation, entry["resource_provider_generation"]
        if actual != given:
            raise errors.Conflict(
                f"resource provider generation conflict for provider {rp_uuid}: "
                f"actual: {actual}, given: {given}", code=errors.CONCURRENT_UPDATE)


def reshape(conn: Connection, inventories: dict, writes: list[ConsumerWrite]) -> None:
    """As OpenStack Placement does it, with the same generation changes:
    each provider with new inventory gets an interim inventory (its current
    records plus the new ones, so nothing in use is removed yet), then the
    allocations are replaced (consumer generations checked), then each
    provider's inventory is set to what was asked for."""
    _lock_checked(conn, inventories)
    records = {rp_uuid: {rc: record(rec) for rc, rec in entry["inventories"].items()}
               for rp_uuid, entry in inventories.items()}
    for rp_uuid, wanted in records.items():
        validate_capacity(rp_uuid, wanted, True, "update")
    for rp_uuid, wanted in records.items():
        if not wanted:
            continue
        provider = get_provider(conn, rp_uuid)
        interim = {**get_inventories(conn, provider), **wanted}
        set_inventories(conn, provider, interim, None)
    if writes:
        replace_allocations(conn, writes, "Unable to allocate inventory")
    for rp_uuid, wanted in records.items():
        set_inventories(conn, get_provider(conn, rp_uuid), wanted, None)
