"""The operator's writes to an Instance: its status (through the pure
builders of :mod:`.status`, guarded by the resourceVersion, each write with
its kstatus conditions: :mod:`kova.kstatus`), the placement
record (finalizer + host label, then status), the host label, the
operator's finalizer, and the Error phase."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kova import finalizers
from kova.conditions import get_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.kstatus import with_kstatus
from kova.kube import KubeError, instance_path
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.instance import status as st

LOG = logging.getLogger("kova.operator")

Change = Callable[[dict], "dict | None"]


def _path(body: dict) -> str:
    meta = body["metadata"]
    return instance_path(meta["namespace"], meta["name"])


class Records:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def patch_status(self, body: dict, change: Change, retries: int = 5,
                           written: list | None = None) -> dict:
        """Write the status as the merge patch ``change(current)`` leaves it
        (a PUT of the status, guarded by the resourceVersion: cheaper for the
        API server than the patch; conditions are replaced as a whole list).  When
        ``change`` returns None there is nothing to write: ``current`` is
        returned as it is (and nothing appended to ``written``)."""
        wrote: list[bool] = []

        def patch(current: dict) -> dict | None:
            status = change(current)
            wrote[:] = [status is not None]
            # every phase written carries its kstatus conditions (kova.kstatus)
            return None if status is None else {"status": with_kstatus(status, current)}

        path = _path(body)
        current = await self.ctx.kube.update_guarded(path + "/status", body, patch,
                                                     read_path=path, retries=retries)
        if written is not None and wrote and wrote[0]:
            written.append(True)
        return current

    async def patch_metadata(self, body: dict, metadata: dict) -> dict:
        return await self.ctx.kube.merge_patch(_path(body), {"metadata": metadata})

    async def ensure_label(self, body: dict) -> dict:
        return await self.patch_metadata(body, {"labels": {
            names.LABEL_HOST: ob.placed_host(body)}})

    async def ensure_finalizer(self, body: dict) -> dict:
        return await finalizers.add(self.ctx.kube, _path(body), body, names.FINALIZER_OPERATOR)

    async def record_placement(self, body: dict, host: str, alternates: list[str],
                               size: dict, *, attempts: int, reason: str, message: str,
                               reset_built: str | None = None) -> dict | None:
        """Metadata first -- our finalizer and the label that makes the agent
        see the Instance (it acts once status.host names it) -- then status.

        Returns None when the Instance went away (or is being deleted, which
        forbids new finalizers) after the claim: the claim is released.  Also
        None when this very placement is already recorded -- by another
        scheduler that claimed first and whose claim this one adopted, or by
        this process before a restart: nothing is written or announced twice."""
        recorded = await self._record_metadata(body, host)
        if recorded is None:
            return None

        def change(current: dict) -> dict | None:
            return st.scheduled(current, host=host, alternates=alternates, attempts=attempts,
                                size=size, reason=reason, message=message,
                                reset_built=reset_built)

        written: list = []
        recorded = await self.patch_status(recorded, change, written=written)
        return recorded if written else None

    async def _record_metadata(self, body: dict, host: str) -> dict | None:
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]

        def change(current: dict) -> dict:
            fins = ob.finalizers(current)
            patch: dict = {"metadata": {"labels": {names.LABEL_HOST: host}}}
            if names.FINALIZER_OPERATOR not in fins:
                patch["metadata"]["finalizers"] = fins + [names.FINALIZER_OPERATOR]
            return patch

        try:
            return await self.ctx.kube.update_guarded(instance_path(ns, name), body, change)
        except KubeError as exc:
            if exc.status not in (404, 422):
                raise
        LOG.info("%s/%s went away after its claim; releasing it", ns, name)
        await self.ctx.placement.delete_allocations(meta["uid"])
        self.ctx.ledger.released(meta["uid"])
        return None

    async def set_waiting(self, body: dict, reason: str, message: str) -> None:
        """Pending with ``Scheduled=False`` (and a Warning Event when the
        reason is new)."""
        if st.waiting_recorded(body, reason, message):
            return
        previous: list = []

        def change(cur: dict) -> dict | None:
            # judged on the status written at the time (``body`` may be an
            # older copy: two reconciles of one Instance, one Event)
            if st.waiting_recorded(cur, reason, message):
                return None
            previous[:] = [(get_condition(cur, names.COND_SCHEDULED) or {}).get("reason")]
            return st.waiting(cur, reason, message)

        written: list = []
        body = await self.patch_status(body, change, written=written)
        if written and previous and previous[0] != reason:
            self.ctx.emit(body, "Warning", reason, message)

    async def set_error(self, body: dict, reason: str, message: str,
                        clear_host: bool = False) -> dict:
        """Phase Error (``clear_host``: no host, no host label: its claim was
        freed)."""
        metrics.OUTCOMES.labels(reason=reason).inc()
        self.ctx.ledger.failed(body["metadata"]["uid"])
        body = await self.patch_status(
            body, lambda cur: st.error(cur, reason, message, clear_host=clear_host))
        if clear_host:
            body = await self.patch_metadata(body, {"labels": {names.LABEL_HOST: None}})
        meta = body["metadata"]
        LOG.warning("instance %s/%s uid=%s in Error: %s: %s", meta["namespace"],
                    meta["name"], meta["uid"], reason, message)
        self.ctx.emit(body, "Warning", reason, message)
        return body
