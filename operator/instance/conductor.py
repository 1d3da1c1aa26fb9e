"""The conductor (Nova's nova-conductor build path): a new Instance is
placed and recorded; a failed build is moved to another host (the attempt
goes into the history annotation) or, with no attempt left or a failure no
host can fix, ends in phase Error with its claim freed; an Instance in Error
for an Image that changed since starts over."""

from __future__ import annotations

import json
import logging
import time

from kova import log as kova_log
from kova.crds import names
from kova.crds import objects as ob
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.view import parse_time
from kova.operator.instance import status as st
from kova.operator.instance.placing import Move, Placer
from kova.operator.instance.plan import Step, attempts
from kova.operator.instance.records import Records
from kova.operator.quota import QuotaExceeded, Quotas
from kova.operator.scheduler.request import InvalidRequest, MissingDependency, RequestSpec
from kova.operator.scheduler.scheduler import NoValidHost
from kova.placement_client import PLACEMENT_FAILURES, placement_trouble

LOG = logging.getLogger("kova.operator")


class Conductor:
    def __init__(self, ctx: Context, records: Records, placer: Placer) -> None:
        self.ctx = ctx
        self.records = records
        self.placer = placer
        self.quotas = Quotas(ctx.kube, ctx.informer)

    # ------------------------------------------------------------ new build
    async def build(self, key: tuple, body: dict) -> None:
        """Place a new Instance and record it (or say why it waits)."""
        t0 = time.monotonic()
        uid = body["metadata"]["uid"]
        try:
            _, size = self.placer.request(body)  # validate before touching anything
        except MissingDependency as exc:
            await self.wait(key, body, exc.reason, exc.message, "%s/%s uid=%s waits: %s "
                            "(retry in %.1fs, or when it appears)")
            return
        except InvalidRequest as exc:
            await self.records.set_error(body, exc.reason, exc.message)
            return
        try:
            async with self.quotas.admit(body, size) as claimed:
                decision, size = await self.placer.place(body)
                claimed(size)
        except QuotaExceeded as exc:
            await self.wait(key, body, exc.reason, exc.message,
                            "%s/%s uid=%s waits for quota: %s (retry in %.1fs)")
            return
        except NoValidHost as exc:
            await self.wait(key, body, names.REASON_NO_VALID_HOST, exc.message,
                            "no valid host for %s/%s uid=%s: %s (retry in %.1fs)")
            return
        except PLACEMENT_FAILURES as exc:
            await self.placement_failed(key, body, exc)
            return
        metrics.SCHEDULE_DURATION.observe(time.monotonic() - t0)
        metrics.CLAIM_TRIES.observe(decision.tries)
        self.ctx.ledger.settle(key)
        self.ctx.ledger.reset_backoff(key)
        message = st.scheduled_message(decision.host, decision.alternates, decision.adopted)
        placed = await self.placer.record(body, decision, size, attempts=1,
                                          reason=names.REASON_SCHEDULED, message=message)
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_SCHEDULED).inc()
        metrics.BUILD_ATTEMPTS.inc()
        created = parse_time(body["metadata"].get("creationTimestamp"))
        if created:
            metrics.SCHEDULE_LATENCY.observe(max(0.0, time.time() - created))
        LOG.info("scheduled %s/%s uid=%s on %s (tries=%d adopted=%s alternates=%s)",
                 key[1], key[2], uid, decision.host, decision.tries, decision.adopted,
                 ",".join(decision.alternates), extra=kova_log.about(body))
        self.ctx.emit(body, "Normal", names.REASON_SCHEDULED, message)

    async def wait(self, key: tuple, body: dict, reason: str, message: str,
                   log_format: str) -> None:
        """The Instance waits (Pending): retried with back-off, or at once
        when what it waits for appears."""
        metrics.OUTCOMES.labels(reason=reason).inc()
        self.ctx.ledger.wait(key)
        await self.records.set_waiting(body, reason, message)
        delay = self.ctx.retry_later(key)
        LOG.info(log_format, key[1], key[2], body["metadata"]["uid"], message, delay)

    async def placement_failed(self, key: tuple, body: dict, exc: BaseException) -> None:
        """Placement is the reason the Instance does not progress: it waits
        (Pending, Scheduled=False naming the cause, one Warning Event) and is
        retried with back-off; anything else is re-raised."""
        trouble = placement_trouble(
            exc, self.ctx.settings.placement_url, "operator",
            "check the operator's --placement-token and Placement's tokens")
        if trouble is None:
            raise exc
        reason, message = trouble
        await self.wait(key, body, reason, message,
                        "%s/%s uid=%s waits for Placement: %s (retry in %.1fs)")

    # ------------------------------------------------------------ failed build
    async def note_attempt(self, body: dict, host: str, n: int, cond: dict) -> dict:
        """Add failed attempt ``n`` on ``host`` to the Instance's history
        annotation (once)."""
        history = st.with_attempt(st.attempts_history(body), n, host, cond)
        if history is None:
            return body
        body = await self.records.patch_metadata(body, {
            "annotations": {names.ANNOTATION_ATTEMPTS: json.dumps(history)}})
        self.ctx.failures.record(host)
        metrics.BUILD_FAILURES.labels(host=host).inc()
        meta = body["metadata"]
        LOG.info("build of %s/%s uid=%s failed on %s (attempt %d): %s", meta["namespace"],
                 meta["name"], meta["uid"], host, n, cond.get("message", ""))
        return body

    async def fail_build(self, body: dict, step: Step) -> None:
        """The build failed and is not retried: free the claim, phase Error."""
        host, n, cond = ob.placed_host(body) or "", attempts(body), st.build_failure(body)
        body = await self.note_attempt(body, host, n, cond)
        if step.reason == names.REASON_MAX_ATTEMPTS:
            message = st.max_attempts_message(n, st.attempts_history(body))
        else:
            message = st.terminal_failure_message(host, cond.get("message", ""))
        await self.give_up(body, cond, step.reason, message)

    async def give_up(self, body: dict, cond: dict, reason: str, message: str) -> None:
        body = await self.mark_image_failure(body, cond)
        uid = body["metadata"]["uid"]
        await self.ctx.placement.delete_allocations(uid)
        self.ctx.ledger.released(uid)
        await self.records.set_error(body, reason, message, clear_host=True)

    async def reschedule(self, key: tuple, body: dict) -> None:
        """Move the claim to another host (not one that failed this Instance
        already; its alternates first) and record attempt n+1."""
        host, n, cond = ob.placed_host(body) or "", attempts(body), st.build_failure(body)
        alternates = ob.status(body).get("alternateHosts") or []
        body = await self.note_attempt(body, host, n, cond)
        meta = body["metadata"]
        uid, history = meta["uid"], st.attempts_history(body)
        try:
            self.placer.request(body)
        except (MissingDependency, InvalidRequest) as exc:
            await self.ctx.placement.delete_allocations(uid)
            await self.records.set_error(body, exc.reason, exc.message, clear_host=True)
            return
        excluded = {h["host"] for h in history}

        def adjust(req: RequestSpec) -> None:
            req.excluded_hosts = set(excluded)
            req.preferred_hosts = [h for h in alternates if h not in excluded]

        _, generation = await self.placer.current_claim(uid)
        try:
            decision, size = await self.placer.place(body, adjust=adjust,
                                                     move=Move(generation))
        except NoValidHost as exc:
            await self.give_up(body, cond, names.REASON_NO_VALID_HOST,
                               st.no_host_left_message(exc.message, history))
            return
        msg = st.rescheduled_message(decision.host, host, n + 1, self.ctx.settings.max_attempts)
        placed = await self.placer.record(
            body, decision, size, attempts=n + 1, reason=names.REASON_RESCHEDULED, message=msg,
            reset_built=f"build failed on {host}: " + cond.get("message", ""))
        if placed is None:
            return
        metrics.OUTCOMES.labels(reason=names.REASON_RESCHEDULED).inc()
        metrics.BUILD_ATTEMPTS.inc()
        LOG.info("rescheduled %s/%s uid=%s from %s to %s", meta["namespace"], meta["name"],
                 uid, host, decision.host)
        self.ctx.emit(body, "Normal", names.REASON_RESCHEDULED, msg)

    # ------------------------------------------------------------ image retry
    async def mark_image_failure(self, body: dict, cond: dict) -> dict:
        """Before an Instance goes to Error for a failure of its Image, note
        which version of the Image failed (retry_image's trigger)."""
        if st.failure_code(cond) not in names.IMAGE_FAILURE_CODES:
            return body
        image = ob.image_key(body)
        return await self.records.patch_metadata(body, {"annotations": {
            names.ANNOTATION_FAILED_IMAGE: self.ctx.informer.image_identity(image)}})

    async def retry_image(self, key: tuple, body: dict, step: Step) -> None:
        """The Image an Instance failed with was re-created or changed: start
        over (attempt history cleared, Pending, then scheduled as new)."""
        meta = body["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        msg = st.image_retry_message(ob.ref_name(body, "imageRef"), step.image_from,
                                     step.image_to)
        body = await self.records.patch_metadata(body, {"annotations": {
            names.ANNOTATION_ATTEMPTS: None, names.ANNOTATION_FAILED_IMAGE: None}})
        body = await self.records.patch_status(body, lambda cur: st.retrying(cur, msg))
        self.ctx.ledger.restarted(uid, step.image_from)
        self.ctx.ledger.reset_backoff(key)
        metrics.OUTCOMES.labels(reason=names.REASON_RETRYING).inc()
        LOG.info("%s/%s uid=%s: %s", ns, name, uid, msg)
        self.ctx.emit(body, "Normal", names.REASON_RETRYING, msg)
        self.ctx.enqueue(key)
