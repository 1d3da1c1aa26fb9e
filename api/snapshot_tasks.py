"""``instances/snapshot`` answered at once: the request is checked and
recorded (``status.actions``: ``snapshot``, ``InProgress``), the API component
answers ``202 Accepted`` with the action's request id, and the snapshot runs
in a task of its own: the agent on the Instance's host copies and uploads the
disk (:mod:`kova.agents.instance.snapshot`), however long that takes -- no
longer bound by the API server's timeout for aggregated APIs (60 s).  The task
then finishes the action (``Success`` with the sizes and the pause, or
``Error`` with the reason) and, on a failure, posts a Warning Event
``SnapshotFailed`` on the Instance.  ``kubectl kova snapshot`` follows the
action until it ends (see docs/images.md).

An API component that restarts (or another replica) finds the snapshot
actions still ``InProgress`` that no task of its own follows -- at its start
and every :data:`RESUME_SECONDS` -- and asks the agent again for that
request's answer (``resume=1``): the agent answers once its snapshot ends, or
410 ``SnapshotInterrupted`` when it no longer has it (the agent restarted, or
the request never reached it).  Then the action is finished like any other:
``Success`` if the TenantImage was stored for it (the store's annotations
say so), else ``Error`` with the reason."""

from __future__ import annotations

import asyncio
import logging
import re
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
from kova.kube import custom_path
from kova.log import about

if TYPE_CHECKING:
    from kova.api.server import ApiServer

log = logging.getLogger("kova.api.snapshots")

#: The reason of the Warning Event on an Instance whose snapshot failed.
EVENT_SNAPSHOT_FAILED = "SnapshotFailed"
#: How often the API component looks for snapshot actions nobody follows.
RESUME_SECONDS = 60.0
_IMAGE_IN_MESSAGE = re.compile(r"snapshot to TenantImage (\S+)")


class SnapshotTasks:
    """The snapshots the API component has accepted and not finished."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        #: request id -> the task following it (one per request).
        self.following: dict[str, asyncio.Task] = {}
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        """Look for snapshots nobody follows now and every RESUME_SECONDS."""
        self._watch = asyncio.create_task(self._resume_loop(), name="resume snapshots")

    async def _resume_loop(self) -> None:
        while True:
            try:
                await self.resume_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the next round tries again
                log.warning("looking for unfollowed snapshots failed: %s", exc)
            await asyncio.sleep(RESUME_SECONDS)

    async def resume_orphans(self) -> int:
        """Follow every InProgress snapshot action no task of this process
        follows; how many were taken up."""
        listing = await self.server.kube.get(custom_path(names.INSTANCES))
        taken = 0
        for inst in listing.get("items") or []:
            status = inst.get("status") or {}
            for a in status.get("actions") or []:
                req = a.get("requestId") or ""
                if (a.get("action") != names.InstanceActionName.SNAPSHOT
                        or a.get("result") != names.ActionResult.IN_PROGRESS
                        or req in self.following):
                    continue
                image = _image_of(a, status.get("snapshot") or {})
                log.info("%s: taking up the snapshot of %s/%s to TenantImage %s, which no "
                         "task follows", req, inst["metadata"]["namespace"],
                         inst["metadata"]["name"], image,
                         extra={**about(inst), "request_id": req})
                self._follow(inst, req, a.get("user") or "unknown", image,
                             resume=a.get("startTime") or "")
                taken += 1
        return taken

    def _follow(self, inst: dict, req: str, user: str, image: str,
                endpoint: tuple[str, int] | None = None, resume: str | None = None) -> None:
        md = inst["metadata"]
        task = asyncio.create_task(self._run(inst, endpoint, req, user, image, resume),
                                   name=f"snapshot {md['namespace']}/{md['name']} {req}")
        self.following[req] = task

        def done(t: asyncio.Task) -> None:
            if self.following.get(req) is t:
                del self.following[req]

        task.add_done_callback(done)

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
        self._follow(inst, req, user.name, image, endpoint)
        message = (f"{what} accepted; follow it with kubectl kova actions -n {ns} {name} "
                   f"({req})")
        return web.json_response(snapshots.answer(
            inst, req, user.name, names.ActionResult.IN_PROGRESS, message, image, {}),
            status=202)

    async def _run(self, inst: dict, endpoint: tuple[str, int] | None, req: str, user: str,
                   image: str, resume: str | None = None) -> None:
        """The agent's snapshot, then its result into the history;
        ``resume``: the start time of a snapshot asked for earlier (by a
        process that is gone), whose answer is asked for again."""
        srv = self.server
        md = inst["metadata"]
        ns, name = md["namespace"], md["name"]
        t0 = time.monotonic()
        body: dict = {}
        params = {"user": user, "namespace": ns, "instance": name, "image": image,
                  "request": req}
        if resume is not None:
            params["resume"] = "1"
        try:
            if endpoint is None:
                endpoint = await srv._endpoint(inst)
            code, body = await srv.agents.put(endpoint, f"/v1/domains/{md['uid']}/snapshot",
                                              params)
            message = body.get("message") or f"the agent answered {code}"
        except AgentUnavailable as exc:
            if resume is not None:  # left InProgress: the next round asks again
                log.warning("%s: snapshot of %s/%s not taken up: %s", req, ns, name,
                            exc.message, extra={**about(inst), "request_id": req})
                return
            code, message = exc.status, exc.message
        if resume is not None and code == 410:
            stored = await self._stored_for(inst, image, resume)
            if stored is not None:
                code, message = 200, stored
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

    async def _stored_for(self, inst: dict, image: str, since: str) -> str | None:
        """The message of a snapshot whose TenantImage the store made for
        this Instance at or after ``since`` (its answer was lost), or None."""
        md = inst["metadata"]
        obj = await self.server.kube.get_or_none(
            custom_path(names.TENANT_IMAGES, image, namespace=md["namespace"]))
        notes = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        if (notes.get(names.ANNOTATION_SNAPSHOT_OF) != f"{md['namespace']}/{md['name']}"
                or notes.get(names.ANNOTATION_SNAPSHOT_TIME, "") < since):
            return None
        st = (obj or {}).get("status") or {}
        return (f"TenantImage {md['namespace']}/{image}: {st.get('sizeBytes')} bytes "
                f"(virtual {st.get('virtualSizeBytes')}), stored while the API component "
                "restarted")

    async def stop(self) -> None:
        """Stop following the snapshots under way (their agents finish them;
        the next start takes their actions up again)."""
        if self._watch is not None:
            self._watch.cancel()
        tasks = list(self.following.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *([self._watch] if self._watch else []),
                             return_exceptions=True)


def _image_of(action: dict, progress: dict) -> str:
    """The TenantImage a snapshot action makes: the agent's progress of
    that request names it, else the action's message."""
    if progress.get("requestId") == action.get("requestId") and progress.get("image"):
        return str(progress["image"])
    found = _IMAGE_IN_MESSAGE.search(action.get("message") or "")
    return found.group(1) if found else ""
