"""``kova api serve``: the Instance subresources behind the APIService
``v1alpha1.subresources.kova.dev``.

Every request comes from the Kubernetes API server's front proxy
(:mod:`kova.api.auth`), is authorized with a SubjectAccessReview, then:

* ``GET .../instances/<name>/console`` and ``.../vnc`` (websockets) are
  piped to a websocket of the agent on the Instance's host
  (:mod:`kova.api.agents`);
* ``GET .../instances/<name>/log`` streams the serial console log from it;
* ``PUT .../instances/<name>/<start|stop|restart|reboot|pause|unpause>``
  follow :func:`kova.api.power.plan`, are recorded in ``status.actions``
  with the requesting user, and answer once ``status.powerState`` shows
  the result (or 504 after ``--action-timeout`` seconds);
* ``PUT .../instances/<name>/eject`` empties the CD-ROM of an Instance
  booted from an iso Image (:func:`kova.api.media.plan_eject`), recorded and
  answered like the power actions once the agent did it;
* ``PUT .../instances/<name>/snapshot?image=`` is recorded and answered at
  once (202), the snapshot followed in the background
  (:mod:`kova.api.snapshot_tasks`).

Errors are Kubernetes ``Status`` bodies (what kubectl and client libraries
parse), with Kova's own reason in ``details.causes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry

from kova import actions as history
from kova import events, metrics
from kova.api import discovery, media, moves, power
from kova.api.agents import AgentClient, AgentUnavailable, endpoint_of
from kova.api.auth import (
    CONFIGMAP,
    RequestHeaderConfig,
    Unauthenticated,
    User,
    access_review,
    authenticate,
)
from kova.api.settings import ApiSettings
from kova.api.snapshot_tasks import SnapshotTasks
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import SUBRESOURCE_API_VERSION, SUBRESOURCE_GROUP
from kova.kube import Credentials, Kube, KubeError, host_path, image_path, instance_path
from kova.log import about

log = logging.getLogger("kova.api")

PREFIX = f"/apis/{SUBRESOURCE_API_VERSION}"


class Metrics:
    """The API component's metrics (``kova_api_*``), in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        m = metrics.MetricSet("kova_api", self.registry)
        self.requests = m.counter("kova_api_requests_total", "Subresource requests by "
                                  "subresource and HTTP status.", ["subresource", "code"])
        self.sessions = m.gauge("kova_api_sessions", "Open console and VNC sessions.",
                                ["kind"])
        self.actions = m.histogram("kova_api_action_duration_seconds", "Power actions "
                                   "(and eject) from request to confirmed result, by action "
                                   "and result.",
                                   ["action", "result"],
                                   buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120))


def failure(code: int, message: str, *, reason: str | None = None, name: str | None = None,
            subresource: str | None = None) -> web.Response:
    return web.json_response(discovery.status(code, message, kova_reason=reason, name=name,
                                              subresource=subresource), status=code)


class ApiServer:
    def __init__(self, cfg: ApiSettings, kube: Kube | None = None) -> None:
        self.cfg = cfg
        self.kube = kube or Kube(Credentials.load(cfg.kubeconfig))
        self.agents = AgentClient(cfg.agent_client_cert_file, cfg.agent_client_key_file,
                                  cfg.agent_ca_file, cfg.agent_server_name)
        self.metrics = Metrics()
        self.snapshots = SnapshotTasks(self)
        self.requestheader: RequestHeaderConfig | None = None
        self._runners: list[web.AppRunner] = []
        self._metrics_server: Any = None
        self.port: int | None = None

    # ------------------------------------------------------------------ set-up
    async def load_requestheader(self) -> RequestHeaderConfig:
        if self.cfg.requestheader_client_ca_file:
            with open(self.cfg.requestheader_client_ca_file) as f:
                cfg = RequestHeaderConfig(client_ca=f.read())
        else:
            cfg = RequestHeaderConfig.from_configmap(await self.kube.get(CONFIGMAP))
        if self.cfg.requestheader_allowed_names:
            cfg = dataclasses.replace(cfg, allowed_names=self.cfg.requestheader_allowed_names)
        return cfg

    def ssl_context(self, rh: RequestHeaderConfig) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cfg.tls_cert_file, self.cfg.tls_key_file)
        rh.apply_to(ctx)
        return ctx

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/apis", self._json(discovery.api_group_list))
        app.router.add_get(f"/apis/{SUBRESOURCE_GROUP}", self._json(discovery.api_group))
        app.router.add_get(PREFIX, self._json(discovery.api_resource_list))
        app.router.add_get("/openapi/v2", self._json(discovery.openapi_v2))
        app.router.add_get("/openapi/v3", self._json(discovery.openapi_v3_index))
        app.router.add_route(
            "*", PREFIX + "/namespaces/{namespace}/instances/{name}/{subresource}",
            self._subresource)
        return app

    async def start(self) -> None:
        self.requestheader = await self.load_requestheader()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.bind_address, self.cfg.port,
                           ssl_context=self.ssl_context(self.requestheader))
        await site.start()
        self._runners.append(runner)
        self.port = _bound_port(site, self.cfg.port)
        log.info("serving %s on %s:%s (front-proxy names: %s)", SUBRESOURCE_API_VERSION,
                 self.cfg.bind_address, self.port,
                 ", ".join(self.requestheader.allowed_names) or "any")
        self.snapshots.start()  # snapshots a restarted API component left unfollowed
        if self.cfg.metrics_port:
            self._metrics_server = metrics.serve(self.cfg.metrics_port, self.metrics.registry,
                                                 health=self.healthy, bind=self.cfg.metrics_bind)
            log.info("metrics and /healthz on port %s",
                     self._metrics_server.server_address[1])

    async def stop(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        for runner in self._runners:
            await runner.cleanup()
        await self.snapshots.stop()
        await self.agents.close()
        await self.kube.close()

    def healthy(self) -> tuple[bool, str]:
        """Serving once the request-header trust is loaded."""
        if self.requestheader is None:
            return False, "the request-header CA is not loaded yet"
        return True, "ok"

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    def _json(make):
        async def handler(_request: web.Request) -> web.Response:
            return web.json_response(make())
        return handler

    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        assert self.requestheader is not None
        try:
            request["user"] = authenticate(peercert, request.headers, self.requestheader)
        except Unauthenticated as exc:
            log.warning("refused %s %s from %s: %s", request.method, request.path,
                        request.remote, exc)
            return failure(401, str(exc))
        return await handler(request)

    async def _authorized(self, user: User, verb: str, ns: str, name: str, sub: str,
                          group: str | None = None) -> bool:
        review = await self.kube.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            json=access_review(user, verb=verb, namespace=ns, name=name, subresource=sub,
                               group=group))
        return bool((review.get("status") or {}).get("allowed"))

    # ------------------------------------------------------------------ routing
    async def _subresource(self, request: web.Request) -> web.StreamResponse:
        sub = request.match_info["subresource"]
        resp = await self._dispatch(request, sub)
        self.metrics.requests.labels(sub if sub in discovery.SUBRESOURCES else "other",
                                     str(resp.status)).inc()
        return resp

    async def _dispatch(self, request: web.Request, sub: str) -> web.StreamResponse:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        user: User = request["user"]
        if sub not in discovery.SUBRESOURCES:
            return failure(404, f"instances have no subresource {sub!r} in "
                           f"{SUBRESOURCE_GROUP}; there are "
                           + ", ".join(discovery.SUBRESOURCES), name=name)
        method, verb = discovery.SUBRESOURCES[sub]
        if request.method != method:
            return failure(405, f"instances/{sub} takes {method}, not {request.method}",
                           name=name)
        if not await self._authorized(user, verb, ns, name, sub):
            log.info("%s may not %s instances/%s of %s/%s", user.name, verb, sub, ns, name)
            return failure(403, f'user "{user.name}" cannot {verb} resource "instances/{sub}" '
                           f'in API group "{SUBRESOURCE_GROUP}" in the namespace "{ns}"',
                           name=name)
        inst = await self.kube.get_or_none(instance_path(ns, name))
        if inst is None:
            return failure(404, f'{names.INSTANCES}.{names.GROUP} "{name}" not found in '
                           f'namespace "{ns}"', name=name)
        try:
            if sub in ("console", "vnc"):
                return await self._stream(request, inst, sub, user)
            if sub == "log":
                return await self._log(request, inst)
            if sub in moves.SUBRESOURCES:
                return await self._move(request, inst, sub, user)
            if sub == "snapshot":
                return await self.snapshots.accept(request, inst, user, failure)
            if sub == "eject":
                return await self._act(inst, sub, user, media.plan_eject(
                    inst, await self._image_of(inst)))
            return await self._act(inst, sub, user, power.plan(sub, inst))
        except AgentUnavailable as exc:
            return failure(exc.status, exc.message, reason=exc.reason, name=name)

    async def _endpoint(self, inst: dict) -> tuple[str, int]:
        host = (inst.get("status") or {}).get("host")
        if not host:
            raise AgentUnavailable(409, "NotPlaced", f"instance {inst['metadata']['name']} is "
                                   "not placed on a host yet")
        return endpoint_of(await self.kube.get_or_none(host_path(host)), host)

    # ------------------------------------------------------------------ console, vnc
    async def _stream(self, request: web.Request, inst: dict, sub: str,
                      user: User) -> web.StreamResponse:
        md = inst["metadata"]
        what = "serial console" if sub == "console" else "VNC display"
        refusal = power.console_refusal(inst, what)
        if refusal:
            return failure(409, refusal[1], reason=refusal[0], name=md["name"])
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=16 << 20)
        if not ws.can_prepare(request).ok:
            return failure(400, f"instances/{sub} is a websocket: use kubectl kova {sub} "
                           f"{md['name']}", name=md["name"])
        endpoint = await self._endpoint(inst)
        params = {"user": user.name}
        if sub == "console":
            params["mode"] = "read" if request.query.get("mode") == "read" else "write"
        upstream = await self.agents.websocket(endpoint, f"/v1/domains/{md['uid']}/{sub}",
                                               params)
        await ws.prepare(request)
        mode = f" ({'read-only' if params.get('mode') == 'read' else 'read-write'})" \
            if sub == "console" else ""
        log.info("%s opened the %s of %s/%s%s", user.name, what, md["namespace"], md["name"],
                 mode, extra=about(inst))
        await self._event(inst, names.EVENT_CONSOLE_CONNECTED if sub == "console"
                          else names.EVENT_VNC_CONNECTED, f"{user.name} opened the {what}{mode}")
        self.metrics.sessions.labels(sub).inc()
        t0 = time.monotonic()
        try:
            await _pipe(ws, upstream)
        finally:
            self.metrics.sessions.labels(sub).dec()
            log.info("%s closed the %s of %s/%s after %.0fs", user.name, what,
                     md["namespace"], md["name"], time.monotonic() - t0, extra=about(inst))
        return ws

    async def _log(self, request: web.Request, inst: dict) -> web.StreamResponse:
        md = inst["metadata"]
        endpoint = await self._endpoint(inst)
        params = {"follow": "1" if request.query.get("follow") in ("1", "true") else "0"}
        if "tailBytes" in request.query:
            params["tailBytes"] = request.query["tailBytes"]
        upstream = await self.agents.get_stream(endpoint, f"/v1/domains/{md['uid']}/log",
                                                params)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
        except ConnectionResetError:
            pass
        finally:
            upstream.release()
        return resp

    # ------------------------------------------------------------------ power, eject
    async def _image_of(self, inst: dict) -> dict | None:
        key = ob.image_key(inst)
        return await self.kube.get_or_none(image_path(key)) if key else None

    async def _act(self, inst: dict, action: str, user: User,
                   plan: power.Plan) -> web.Response:
        md = inst["metadata"]
        if plan.kind == "refuse":
            return failure(plan.code, plan.message, reason=plan.reason, name=md["name"],
                           subresource=action)
        req = history.request_id()
        t0 = time.monotonic()
        context = {**about(inst), "request_id": req}
        log.info("%s: %s of %s/%s asked by %s: %s", req, action, md["namespace"], md["name"],
                 user.name, plan.message, extra=context)
        await self._record(inst, lambda a: history.append(
            a, history.started(action, user.name, req, plan.message)))
        await self._event(inst, names.EVENT_ACTION_REQUESTED,
                          f"{user.name} asked to {action} it ({req})")
        code, result, message = 200, names.ActionResult.SUCCESS, plan.message
        try:
            if plan.kind == "patch":
                await self.kube.merge_patch(instance_path(md["namespace"], md["name"]),
                                            plan.patch or {})
            elif plan.kind == "agent":
                code, message = await self._agent_action(inst, action, user, req)
            if code < 300 and plan.target:
                if not await self._wait_power(md, plan.target):
                    code, message = 504, (f"{action} not confirmed within "
                                          f"{self.cfg.action_timeout:.0f}s: powerState is not "
                                          f"{plan.target} yet")
        except KubeError as exc:
            code, message = exc.status if 400 <= exc.status < 600 else 500, str(exc.body)
        except AgentUnavailable as exc:
            code, message = exc.status, exc.message
        if code >= 300:
            result = names.ActionResult.ERROR
        await self._record(inst, lambda a: history.finish(a, req, result, message))
        self.metrics.actions.labels(action, result).observe(time.monotonic() - t0)
        log.info("%s: %s of %s/%s: %s (%s)", req, action, md["namespace"], md["name"], result,
                 message, extra=context)
        if code >= 300:
            return failure(code, message, reason="ActionFailed", name=md["name"],
                           subresource=action)
        current = ob.status(await self.kube.get_or_none(
            instance_path(md["namespace"], md["name"])) or {})
        return web.json_response({
            "kind": "InstanceAction", "apiVersion": SUBRESOURCE_API_VERSION,
            "namespace": md["namespace"], "name": md["name"], "action": action,
            "requestId": req, "user": user.name, "result": result, "message": message,
            "powerState": current.get("powerState"),
            **({"cdrom": current["cdrom"]} if current.get("cdrom") else {}),
        })

    # ------------------------------------------------------------------ moves
    async def _move(self, request: web.Request, inst: dict, sub: str,
                    user: User) -> web.Response:
        """resize-confirm/-revert, migrate --abort: the decision into status.migration,
        answered once the operator finished the move (504 after --action-timeout);
        migrate: a new migration record, answered at once (kubectl follows it)."""
        md = inst["metadata"]
        path = instance_path(md["namespace"], md["name"])
        req = history.request_id()
        host = request.query.get("host") or None
        live, abort = (request.query.get(k) in ("true", "1") for k in ("live", "abort"))
        refusal, change, mig_uuid = moves.request_change(inst, sub, user.name, host, req,
                                                         live=live, abort=abort)
        if refusal is None and sub == "migrate" and not abort:
            refusal = await self._migrate_hosts(inst, host, user)
        if refusal is not None:
            return failure(refusal.code, refusal.message, reason=refusal.reason,
                           name=md["name"], subresource=sub)
        await self.kube.patch_guarded(path + "/status", inst, change, read_path=path,
                                      retries=10)
        log.info("%s: %s of %s/%s asked by %s", req, sub, md["namespace"], md["name"],
                 user.name, extra={**about(inst), "request_id": req})
        await self._event(inst, names.EVENT_ACTION_REQUESTED,
                          f"{user.name} asked to {sub} ({req})")
        code, message = 200, f"{sub} recorded"
        if sub != "migrate" or abort:
            deadline = time.monotonic() + self.cfg.action_timeout
            while not moves.decided(await self.kube.get_or_none(path), mig_uuid):
                if time.monotonic() > deadline:
                    code, message = 504, (f"{sub} recorded; the move is not finished after "
                                          f"{self.cfg.action_timeout:.0f}s")
                    break
                await asyncio.sleep(0.25)
            else:
                message = f"{sub}: done"
        if code >= 300:
            return failure(code, message, reason="ActionFailed", name=md["name"],
                           subresource=sub)
        current = await self.kube.get_or_none(path) or inst
        return web.json_response(moves.answer(current, sub, req, user.name, message))

    async def _migrate_hosts(self, inst: dict, host: str | None,
                             user: User) -> moves.Refusal | None:
        """Naming the destination is an administrator's choice (verb
        ``schedule`` on instances); both hosts must be able to take part."""
        md = inst["metadata"]
        if host and not await self._authorized(user, "schedule", md["namespace"], md["name"],
                                               "", group=names.GROUP):
            return moves.host_forbidden(user.name)
        return await moves.hosts_refusal(
            inst, host, lambda name: self.kube.get_or_none(host_path(name)))

    async def _agent_action(self, inst: dict, action: str, user: User,
                            req: str) -> tuple[int, str]:
        endpoint = await self._endpoint(inst)
        code, body = await self.agents.put(
            endpoint, f"/v1/domains/{inst['metadata']['uid']}/power/{action}",
            {"user": user.name, "request": req})
        return code, body.get("message") or f"the agent answered {code}"

    async def _wait_power(self, md: dict, target: str) -> bool:
        path = instance_path(md["namespace"], md["name"])
        deadline = time.monotonic() + self.cfg.action_timeout
        while True:
            cur = await self.kube.get_or_none(path)
            if cur is None or cur["metadata"]["uid"] != md["uid"]:
                return False
            if (cur.get("status") or {}).get("powerState") == target:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.25)

    async def _record(self, inst: dict, change) -> None:
        """Merge-patch status.actions (computed by ``change`` from the
        current list), guarded by the resourceVersion; the history is best
        effort: a failure is logged."""
        md = inst["metadata"]
        path = instance_path(md["namespace"], md["name"])

        def patch(cur: dict) -> dict | None:
            if cur["metadata"]["uid"] != md["uid"]:
                return None  # another Instance of the same name
            new = change((cur.get("status") or {}).get("actions"))
            return None if new is None else {"status": {"actions": new}}

        try:
            current = await self.kube.get_or_none(path)  # the history as it is now
            if current is not None:
                await self.kube.patch_guarded(path + "/status", current, patch, read_path=path,
                                              retries=10)
        except KubeError as exc:
            if exc.status != 404:
                log.warning("status.actions of %s/%s not written: %s", md["namespace"],
                            md["name"], exc, extra=about(inst))
        except (RuntimeError, aiohttp.ClientError, OSError) as exc:
            log.warning("status.actions of %s/%s not written: %s", md["namespace"], md["name"],
                        exc, extra=about(inst))

    async def _event(self, inst: dict, reason: str, message: str) -> None:
        await events.post(self.kube, inst, events.NORMAL, reason, message,
                          component=names.COMPONENT_API)


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until either side closes; then close the other."""

    async def up() -> None:
        async for msg in client:
            if msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)

    async def down() -> None:
        async for msg in upstream:
            if msg.type == WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await client.send_str(msg.data)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        reason = (upstream.close_code, b"the agent closed the session")
        await upstream.close()
        if not client.closed:
            await client.close(code=reason[0] or 1000, message=reason[1])


def _bound_port(site: web.TCPSite, default: int) -> int:
    server: Any = site._server  # the listening sockets (port 0: the one chosen)
    sockets = getattr(server, "sockets", None) or []
    return sockets[0].getsockname()[1] if sockets else default
