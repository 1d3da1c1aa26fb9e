"""``instances/snapshot`` answered at once: the request is checked and
recorded (``status.actions``: ``snapshot``, ``InProgress``), the API component
answers ``202 Accepted`` with the action's request id, and the snapshot runs
in a task of its own: the agent on the Instance's host copies and uploads the
disk (:mod:`kova.agents.instance.snapshot`), however long that takes -- no
longer bound by the API server's timeout for aggregated APIs (60 s).  The task
then finishes the action (``Success`` with the sizes and the pause, or
``Error`` with the reason) and, on a failure, posts a Warning Event
``SnapshotFailed`` on the Instance.  ``kubectl kova snapshot`` follows the
action until it ends (see docs/images.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from kova import actions as history
from kova import events
from kova.api import snapshots
from kova.api.agents import AgentUnavailable
from kova.api.auth import User, resource_review
from kova.crds import names
from kova.log import about

if TYPE_CHECKING:
    from kova.api.server import ApiServer

log = logging.getLogger("kova.api.snapshots")

#: The reason of the Warning Event on an Instance whose snapshot failed.
EVENT_SNAPSHOT_FAILED = "SnapshotFailed"


class SnapshotTasks:
    """The snapshots the API component has accepted and not finished."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.tasks: set[asyncio.Task] = set()

    async def accept(self, request: web.Request, inst: dict, user: User,
                     failure: Callable[..., web.Response]) -> web.Response:
        """Check, record and start a snapshot of ``inst`` into TenantImage
        ``?image=``; 202 with the InstanceAction (result InProgress)."""
        srv = self.server
        md = inst["metadata"]
        ns, name = md["namespace"], md["name"]
        image = request.query.get("image", "")
        refusal = snapshots.refusal(inst, image)
        if refusal is not None:
            return failure(refusal.code, refusal.message, reason=refusal.reason, name=name,
                           subresource="snapshot")
        review = await srv.kube.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json=resource_review(user, verb="create", namespace=ns, group=names.GROUP,
                                 resource=names.TENANT_IMAGES, name=image))
        if not (review.get("status") or {}).get("allowed"):
            return failure(403, snapshots.forbidden(user.name, ns), name=name,
                           subresource="snapshot")
        endpoint = await srv._endpoint(inst)  # an unreachable host is refused now (503)
        req = history.request_id()
        what = f"snapshot to TenantImage {image}"
        await srv._record(inst, lambda a: history.append(
            a, history.started(names.InstanceActionName.SNAPSHOT, user.name, req, what)))
        await srv._event(inst, names.EVENT_ACTION_REQUESTED,
                         f"{user.name} asked for a {what} ({req})")
        task = asyncio.create_task(self._run(inst, endpoint, req, user.name, image),
                                   name=f"snapshot {ns}/{name} {req}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        message = (f"{what} accepted; follow it with kubectl kova actions -n {ns} {name} "
                   f"({req})")
        return web.json_response(snapshots.answer(
            inst, req, user.name, names.ActionResult.IN_PROGRESS, message, image, {}),
            status=202)

    async def _run(self, inst: dict, endpoint: tuple[str, int], req: str, user: str,
                   image: str) -> None:
        """The agent's snapshot, then its result into the history."""
        srv = self.server
        md = inst["metadata"]
        ns, name = md["namespace"], md["name"]
        t0 = time.monotonic()
        body: dict = {}
        try:
            code, body = await srv.agents.put(
                endpoint, f"/v1/domains/{md['uid']}/snapshot",
                {"user": user, "namespace": ns, "instance": name, "image": image,
                 "request": req})
            message = body.get("message") or f"the agent answered {code}"
        except AgentUnavailable as exc:
            code, message = exc.status, exc.message
        result = names.ActionResult.SUCCESS if code < 300 else names.ActionResult.ERROR
        if code >= 300:
            message = f"{body.get('reason') or 'SnapshotFailed'}: {message}"
        await srv._record(inst, lambda a: history.finish(a, req, result, message))
        srv.metrics.actions.labels("snapshot", result).observe(time.monotonic() - t0)
        log.info("%s: snapshot of %s/%s to TenantImage %s: %s (%s)", req, ns, name, image,
                 result, message, extra={**about(inst), "request_id": req})
        if code >= 300:
            await events.post(srv.kube, inst, events.WARNING, EVENT_SNAPSHOT_FAILED,
                              f"snapshot to TenantImage {image} for {user} failed ({req}): "
                              f"{message}", component=names.COMPONENT_API)

    async def stop(self) -> None:
        """Stop following the snapshots under way (their agents finish them;
        the actions stay InProgress)."""
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
