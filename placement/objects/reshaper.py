"""POST /reshaper: inventories and allocations of several providers changed
in one transaction (moving resources from a provider to its children)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.objects.allocation import remove_allocations, replace_allocations
from kova.placement.objects.consumer import ConsumerWrite, check_consumer_generations
from kova.placement.objects.inventory import record, set_inventories, validate_capacity
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
    _lock_checked(conn, inventories)
    # Drop the moving consumers' allocations first so inventory that they
    # used can be removed, then set inventories, then write allocations.
    if writes:
        check_consumer_generations(conn, writes)
        remove_allocations(conn, [w.uuid for w in writes])
    for rp_uuid, entry in inventories.items():
        provider = get_provider(conn, rp_uuid)
        records = {rc: record(rec) for rc, rec in entry["inventories"].items()}
        validate_capacity(rp_uuid, records, True, "update")
        set_inventories(conn, provider, records, None)
    if writes:
        for w in writes:
            w.check_generation = False
        replace_allocations(conn, writes, "Unable to allocate inventory")
