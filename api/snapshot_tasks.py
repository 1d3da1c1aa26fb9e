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

While an Instance has a snapshot in progress the API component labels it
(:data:`~kova.crds.names.LABEL_SNAPSHOT_IN_PROGRESS`, the newest snapshot's
request id).  An API component that restarts (or another replica) finds the
snapshot actions still ``InProgress`` that no task of its own follows -- at
its start and every ``--snapshot-resume-seconds``, listing only the labelled
Instances -- and asks the agent again for that request's answer
(``resume=1``); so does an API component whose connection to the agent was
cut off midway.  The agent answers once its snapshot ends, or 410
``SnapshotInterrupted`` when it no longer has it (the agent restarted, or the
request never reached it).  Then ``Success`` if the TenantImage was stored
for it (the store's annotations say so); else the snapshot is taken again --
same request id, same TenantImage -- up to ``--snapshot-attempts`` attempts
in all, each recorded in the action (``attempt``, its message) and a Normal
Event ``SnapshotRetried``; after the last, ``Error`` with the reason.

The TenantImage exists from the request on (:mod:`kova.api.placeholders`):
created saving, filled by the image store, marked failed when the snapshot
fails for good."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from kova import actions as history
from kova import events
from kova.api import placeholders, snapshots
from kova.api.agents import CONNECTION_LOST, AgentUnavailable
from kova.api.auth import User, resource_review
from kova.api.moves import Refusal
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import KubeError, custom_path, image_path, instance_path
from kova.log import about

if TYPE_CHECKING:
    from kova.api.server import ApiServer

log = logging.getLogger("kova.api.snapshots")

#: The reason of the Warning Event on an Instance whose snapshot failed.
EVENT_SNAPSHOT_FAILED = "SnapshotFailed"
_IMAGE_IN_MESSAGE = re.compile(r"snapshot to TenantImage ([^\s,]+)")


class SnapshotTasks:
    """The snapshots the API component has accepted and not finished."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        #: request id -> the task following it (one per request).
        self.following: dict[str, asyncio.Task] = {}
        #: request ids being recorded by :meth:`accept`, not followed yet: a
        #: round of :meth:`resume_orphans` meanwhile must not take them up.
        self._accepting: set[str] = set()
        self._watch: asyncio.Task | None = None

    def start(self) -> None:
        """Look for snapshots nobody follows now and every
        --snapshot-resume-seconds."""
        self._watch = asyncio.create_task(self._resume_loop(), name="resume snapshots")

    async def _resume_loop(self) -> None:
        everything = True
        while True:
            try:
                await self.resume_orphans(everything)
                everything = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the next round tries again
                log.warning("looking for unfollowed snapshots failed: %s", exc)
            await asyncio.sleep(self.server.cfg.snapshot_resume_seconds)

    async def resume_orphans(self, everything: bool = False) -> int:
        """Follow every InProgress snapshot action no task of this process
        follows, on the Instances labelled as having one (with
        ``everything``, the first round after a start: on every Instance, so
        that an action recorded before the label existed is found once);
        how many were taken up."""
        query = {} if everything else {"labelSelector": names.LABEL_SNAPSHOT_IN_PROGRESS}
        listing = await self.server.kube.get(custom_path(names.INSTANCES), query)
        taken = 0
        for inst in listing.get("items") or []:
            status = inst.get("status") or {}
            for a in status.get("actions") or []:
                req = a.get("requestId") or ""
                if not _in_progress(a) or req in self.following or req in self._accepting:
                    continue
                image = _image_of(a, status.get("snapshot") or {})
                log.info("%s: taking up the snapshot of %s/%s to TenantImage %s, which no "
                         "task follows", req, inst["metadata"]["namespace"],
                         inst["metadata"]["name"], image,
                         extra={**about(inst), "request_id": req})
                self._follow(inst, Attempt(
                    req, a.get("user") or "unknown", image, a.get("startTime") or "",
                    int(a.get("attempt") or 1), a.get("imageUID") or "",
                    a.get("quiesce") or names.SnapshotQuiesce.AUTO,
                    a.get("quiesceFrom") or ""), resume=True)
                taken += 1
        return taken

    def _follow(self, inst: dict, at: Attempt, endpoint: tuple[str, int] | None = None,
                resume: bool = False) -> None:
        md = inst["metadata"]
        task = asyncio.create_task(self._run(inst, endpoint, at, resume),
                                   name=f"snapshot {md['namespace']}/{md['name']} {at.req}")
        self.following[at.req] = task

        def done(t: asyncio.Task) -> None:
            if self.following.get(at.req) is t:
                del self.following[at.req]

        task.add_done_callback(done)

    async def accept(self, request: web.Request, inst: dict, user: User,
                     failure: Callable[..., web.Response]) -> web.Response:
        """Check, record and start a snapshot of ``inst`` into TenantImage
        ``?image=``; 202 with the InstanceAction (result InProgress)."""
        srv = self.server
        md = inst["metadata"]
        ns, name = md["namespace"], md["name"]
        image = request.query.get("image", "")
        checked = await self._check(inst, user, image, request.query.get("quiesce") or None)
        if isinstance(checked, Refusal):
            return failure(checked.code, checked.message, reason=checked.reason, name=name,
                           subresource="snapshot")
        source, choice = checked
        quiesce = choice.mode
        endpoint = await srv._endpoint(inst)  # an unreachable host is refused now (503)
        req = history.request_id()
        what = f"snapshot to TenantImage {image}"
        try:  # the TenantImage at once, saving: a name taken is refused before any copy
            uid = (await placeholders.create(srv.kube, inst, image, req, user.name, source)
                   )["metadata"]["uid"]
        except KubeError as exc:
            if exc.status != 409:
                raise
            return failure(409, f"TenantImage {ns}/{image} already exists: nothing was "
                           "copied (delete it, or choose another name)", reason="AlreadyExists",
                           name=name, subresource="snapshot")
        entry = {**history.started(names.InstanceActionName.SNAPSHOT, user.name, req,
                                   f"{what}, {choice.note()}"),
                 "image": image, "attempt": 1, "imageUID": uid, "quiesce": quiesce,
                 "quiesceFrom": choice.origin}
        self._accepting.add(req)
        try:
            # The label first: an action recorded is always found again.
            await srv.kube.merge_patch(instance_path(ns, name), {
                "metadata": {"labels": {names.LABEL_SNAPSHOT_IN_PROGRESS: req}}})
            await srv._record(inst, lambda a: history.append(a, entry))
            self._follow(inst, Attempt(req, user.name, image, entry["startTime"], 1, uid,
                                       quiesce, choice.origin), endpoint=endpoint)
        except BaseException as exc:
            await placeholders.mark_failed(srv.kube, inst, image, req, uid,
                                           f"the request was not recorded: {exc}")
            raise
        finally:
            self._accepting.discard(req)
        await srv._event(inst, names.EVENT_ACTION_REQUESTED,
                         f"{user.name} asked for a {what}, {choice.note()} ({req})")
        message = (f"{what} accepted ({choice.note()}); follow it with kubectl kova actions "
                   f"-n {ns} {name} ({req})")
        return web.json_response({**snapshots.answer(
            inst, req, user.name, names.ActionResult.IN_PROGRESS, message, image, {}),
            "quiesce": quiesce, "quiesceFrom": choice.origin}, status=202)

    async def _check(self, inst: dict, user: User, image: str, asked: str | None
                     ) -> tuple[dict | None, snapshots.Quiesce] | Refusal:
        """Why a snapshot of ``inst`` into TenantImage ``image`` with
        quiescing ``asked`` (None: as the Instance's image says) is refused;
        else the image the Instance boots from (None: gone) and the
        snapshot's quiescing."""
        ns = inst["metadata"]["namespace"]
        refusal = snapshots.refusal(inst, image, asked or names.SnapshotQuiesce.AUTO)
        if refusal is not None:
            return refusal
        review = await self.server.kube.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json=resource_review(user, verb="create", namespace=ns, group=names.GROUP,
                                 resource=names.TENANT_IMAGES, name=image))
        if not (review.get("status") or {}).get("allowed"):
            return Refusal(403, "", snapshots.forbidden(user.name, ns))
        source = await self._source_image(inst)
        if isinstance(source, Refusal):
            return source
        choice = snapshots.quiesce(inst, asked, source)
        return choice if isinstance(choice, Refusal) else (source, choice)

    async def _source_image(self, inst: dict) -> dict | Refusal | None:
        """The Image or TenantImage ``inst`` boots from (None when it is
        gone): whether it requires quiescing, the properties its snapshot
        keeps; a 503 ``ImageUnreadable`` refusal when it cannot be read."""
        key = ob.image_key(inst)
        try:
            return await self.server.kube.get_or_none(image_path(key)) if key else None
        except (KubeError, aiohttp.ClientError, OSError) as exc:
            return Refusal(503, "ImageUnreadable", (
                f"{snapshots.image_named(inst)} could not be read to know whether it requires "
                f"quiescing (properties.{snapshots.REQUIRE_QUIESCE}): {exc}; nothing was "
                "copied"))

    async def _run(self, inst: dict, endpoint: tuple[str, int] | None, at: Attempt,
                   resume: bool = False) -> None:
        """The agent's snapshot, then its result into the history.
        ``resume``: the snapshot was asked for earlier (by a process that is
        gone, or over a connection that was lost): its answer is asked for
        again; a snapshot the agent no longer has and whose TenantImage was
        not stored is taken again, up to --snapshot-attempts in all."""
        srv = self.server
        t0 = time.monotonic()
        while True:
            answer = await self._ask(inst, endpoint, at, resume)
            if answer is None:
                return  # left InProgress: the next round asks again
            code, body, message = answer
            if code >= 300 and at.image_uid and (
                    stored := await self._stored_for(inst, at)) is not None:
                code, message = 200, stored  # filled by the store, its answer lost
                break
            if not resume or code != 410:
                break
            stored = await self._stored_for(inst, at)
            if stored is not None:
                code, message = 200, stored
                break
            if at.attempt >= srv.cfg.snapshot_attempts:
                message = f"{message} ({snapshots.attempts_text(at.attempt)})"
                break
            at.attempt += 1
            await self._again(inst, at, f"{body.get('reason') or 'SnapshotInterrupted'}: "
                              f"{message}")
            endpoint, resume = None, False
        await self._finish(inst, at, code, body, message, time.monotonic() - t0)

    async def _ask(self, inst: dict, endpoint: tuple[str, int] | None, at: Attempt,
                   resume: bool) -> tuple[int, dict, str] | None:
        """The agent's answer (status, body, message); None when it could
        not be had now and the snapshot may still be under way (or lost):
        the next round of :meth:`resume_orphans` asks again."""
        srv = self.server
        md = inst["metadata"]
        params = {"user": at.user, "namespace": md["namespace"], "instance": md["name"],
                  "image": at.image, "request": at.req, "quiesce": at.quiesce}
        if resume:
            params["resume"] = "1"
        if at.image_uid:
            params["imageUid"] = at.image_uid
        try:
            if endpoint is None:
                endpoint = await srv._endpoint(inst)
            code, body = await srv.agents.put(endpoint, f"/v1/domains/{md['uid']}/snapshot",
                                              params)
        except AgentUnavailable as exc:
            if not (resume or at.attempt > 1 or exc.reason == CONNECTION_LOST):
                return exc.status, {}, exc.message
            log.warning("%s: snapshot of %s/%s not followed now: %s; asked again within %.0fs",
                        at.req, md["namespace"], md["name"], exc.message,
                        srv.cfg.snapshot_resume_seconds,
                        extra={**about(inst), "request_id": at.req})
            if exc.reason == CONNECTION_LOST:
                note = (f"attempt {at.attempt}: {exc.message}; the agent is asked again for "
                        f"the snapshot to TenantImage {at.image}")
                await srv._record(inst, lambda a: _update(a, at.req, message=note))
            return None
        return code, body, body.get("message") or f"the agent answered {code}"

    async def _again(self, inst: dict, at: Attempt, why: str) -> None:
        """Record and announce that the snapshot is taken again."""
        srv = self.server
        md = inst["metadata"]
        note = (f"attempt {at.attempt} of {srv.cfg.snapshot_attempts}: snapshot to "
                f"TenantImage {at.image} taken again ({why})")
        await srv._record(inst, lambda a: _update(a, at.req, attempt=at.attempt, message=note))
        log.info("%s: %s/%s: %s", at.req, md["namespace"], md["name"], note,
                 extra={**about(inst), "request_id": at.req})
        await events.post(srv.kube, inst, events.NORMAL, names.EVENT_SNAPSHOT_RETRIED,
                          f"{note} ({at.req})", component=names.COMPONENT_API)

    async def _finish(self, inst: dict, at: Attempt, code: int, body: dict, message: str,
                      seconds: float) -> None:
        """The action's result, the label removed, an Event on a failure."""
        srv = self.server
        md = inst["metadata"]
        ns, name = md["namespace"], md["name"]
        result = names.ActionResult.SUCCESS if code < 300 else names.ActionResult.ERROR
        if code >= 300:
            message = f"{body.get('reason') or 'SnapshotFailed'}: {message}"
        if at.quiesce_from and (choice := snapshots.Quiesce(at.quiesce, at.quiesce_from)
                                ).by_image:
            message = f"{message} ({choice.note()})"
        await srv._record(inst, lambda a: history.finish(a, at.req, result, message))
        if code >= 300 and at.image_uid and await placeholders.mark_failed(
                srv.kube, inst, at.image, at.req, at.image_uid, message):
            log.info("%s: TenantImage %s/%s of the failed snapshot marked failed", at.req, ns,
                     at.image, extra={**about(inst), "request_id": at.req})
        await self._unlabel(inst)
        srv.metrics.actions.labels("snapshot", result).observe(seconds)
        log.info("%s: snapshot of %s/%s to TenantImage %s: %s (%s)", at.req, ns, name, at.image,
                 result, message, extra={**about(inst), "request_id": at.req})
        if code >= 300:
            await events.post(srv.kube, inst, events.WARNING, EVENT_SNAPSHOT_FAILED,
                              f"snapshot to TenantImage {at.image} for {at.user} failed "
                              f"({at.req}): {message}", component=names.COMPONENT_API)

    async def _unlabel(self, inst: dict) -> None:
        """The in-progress label off the Instance once the snapshot it names
        has ended and no other one is in progress (guarded by the
        resourceVersion: a snapshot accepted meanwhile keeps it)."""
        md = inst["metadata"]
        path = instance_path(md["namespace"], md["name"])

        def change(cur: dict) -> dict | None:
            label = ((cur["metadata"].get("labels") or {})
                     .get(names.LABEL_SNAPSHOT_IN_PROGRESS))
            actions = (cur.get("status") or {}).get("actions") or []
            named = history.find(actions, label or "")
            if (cur["metadata"]["uid"] != md["uid"] or not label or named is None
                    or any(_in_progress(a) for a in actions)):
                return None
            return {"metadata": {"labels": {names.LABEL_SNAPSHOT_IN_PROGRESS: None}}}

        try:
            current = await self.server.kube.get_or_none(path)
            if current is not None:
                await self.server.kube.patch_guarded(path, current, change, retries=10)
        except (KubeError, RuntimeError, aiohttp.ClientError, OSError) as exc:
            log.warning("label %s of %s/%s not removed: %s", names.LABEL_SNAPSHOT_IN_PROGRESS,
                        md["namespace"], md["name"], exc, extra=about(inst))

    async def _stored_for(self, inst: dict, at: Attempt) -> str | None:
        """The message of a snapshot whose TenantImage the store filled (or,
        for a snapshot recorded without one, made for this Instance at or
        after the action started): its answer was lost; or None."""
        md = inst["metadata"]
        obj = await self.server.kube.get_or_none(
            custom_path(names.TENANT_IMAGES, at.image, namespace=md["namespace"]))
        notes = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        if at.image_uid:
            if (obj is None or obj["metadata"].get("uid") != at.image_uid
                    or (obj.get("spec") or {}).get("saving")
                    or not (obj.get("spec") or {}).get("sha256")):
                return None
        elif (notes.get(names.ANNOTATION_SNAPSHOT_OF) != f"{md['namespace']}/{md['name']}"
                or notes.get(names.ANNOTATION_SNAPSHOT_TIME, "") < at.since):
            return None
        st = (obj or {}).get("status") or {}
        return (f"TenantImage {md['namespace']}/{at.image}: {st.get('sizeBytes')} bytes "
                f"(virtual {st.get('virtualSizeBytes')}), stored while its answer was lost")

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


@dataclass
class Attempt:
    """One snapshot request as the API component follows it."""

    req: str
    user: str
    image: str
    #: When the action started: a TenantImage stored since is its own.
    since: str
    attempt: int = 1
    #: The uid of its TenantImage, created saving at the request ("" for an
    #: action recorded without one: the store then creates the TenantImage).
    image_uid: str = ""
    #: Its quiescing through the guest agent (required, auto, off).
    quiesce: str = names.SnapshotQuiesce.AUTO
    #: Where that came from (:attr:`kova.api.snapshots.Quiesce.origin`; ""
    #: for an action recorded without it).
    quiesce_from: str = ""


def _in_progress(action: dict) -> bool:
    return (action.get("action") == names.InstanceActionName.SNAPSHOT
            and action.get("result") == names.ActionResult.IN_PROGRESS)


def _update(actions: list[dict] | None, req: str, **fields: object) -> list[dict] | None:
    """``actions`` with fields of the InProgress entry ``req`` changed; None
    when it is not there or has ended (nothing to write)."""
    entry = history.find(actions, req)
    if entry is None or entry.get("result") != names.ActionResult.IN_PROGRESS:
        return None
    if isinstance(fields.get("message"), str):
        fields["message"] = str(fields["message"])[:1024]
    return [{**a, **fields} if a is entry else a for a in actions or []]


def _image_of(action: dict, progress: dict) -> str:
    """The TenantImage a snapshot action makes: its own field ``image``;
    for an action recorded before that field existed, the agent's progress
    of that request, else the action's message (both cheap to read)."""
    if action.get("image"):
        return str(action["image"])
    if progress.get("requestId") == action.get("requestId") and progress.get("image"):
        return str(progress["image"])
    found = _IMAGE_IN_MESSAGE.search(action.get("message") or "")
    return found.group(1) if found else ""
