"""Consumers: who holds allocations, and their generations (1.28+)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kova.placement import errors
from kova.placement.db import tables as t

c = t.consumers

# Consumers written before microversion 1.8 have no project or user.
INCOMPLETE_PROJECT = "00000000-0000-0000-0000-000000000000"
INCOMPLETE_USER = "00000000-0000-0000-0000-000000000000"


@dataclass
class ConsumerWrite:
    """What one consumer's allocations should become."""

    uuid: str
    allocations: dict  # rp_uuid -> {rc_name: amount}
    project_id: str | None
    user_id: str | None
    generation: int | None = None
    check_generation: bool = False
    consumer_type: str | None = None
    set_type: bool = False
    extra: dict = field(default_factory=dict)


def _generation_conflict(expected, got) -> errors.Conflict:
    return errors.Conflict(
        "consumer generation conflict - expected %s but got %s"
        % ("null" if expected is None else expected, got), code=errors.CONCURRENT_UPDATE)


def lock_consumers(conn: Connection, writes: list[ConsumerWrite]) -> dict:
    """Row-lock the consumers being written and check the generations the
    writes expect (where they check them); {uuid: row or None}."""
    existing = {}
    for w in writes:
        row = conn.execute(sa.select(c).where(c.c.uuid == w.uuid).with_for_update()).first()
        existing[w.uuid] = row
        if not w.check_generation:
            continue
        if row is None and w.generation is not None:
            raise errors.Conflict(
                "consumer generation conflict - expected null but got %s" % w.generation,
                code=errors.CONCURRENT_UPDATE)
        if row is not None and row.generation != w.generation:
            raise _generation_conflict(row.generation, w.generation)
    return existing


def write_consumers(conn: Connection, writes: list[ConsumerWrite], existing: dict,
                    now) -> None:
    """Create, update (generation + 1) or delete (no allocations left) the
    consumer rows of ``writes``; ``existing`` is from ``lock_consumers``."""
    for w in writes:
        row = existing[w.uuid]
        if not w.allocations:
            if row is not None:
                conn.execute(sa.delete(c).where(c.c.id == row.id))
            continue
        if w.project_id is None:
            project, user = INCOMPLETE_PROJECT, INCOMPLETE_USER
        else:
            project, user = w.project_id, w.user_id or INCOMPLETE_USER
        if row is None:
            # A racing creator of the same consumer makes this INSERT fail;
            # Database.run_write answers 409 placement.concurrent_update.
            conn.execute(sa.insert(c).values(
                uuid=w.uuid, project_id=project, user_id=user,
                consumer_type=w.consumer_type if w.set_type else None,
                generation=1, created_at=now, updated_at=now))
            continue
        values = {"project_id": project, "user_id": user,
                  "generation": row.generation + 1, "updated_at": now}
        if w.set_type:
            values["consumer_type"] = w.consumer_type
        res = conn.execute(sa.update(c).where(c.c.id == row.id,
                                              c.c.generation == row.generation)
                           .values(**values))
        if res.rowcount != 1:
            raise errors.Conflict("consumer generation conflict",
                                  code=errors.CONCURRENT_UPDATE)
