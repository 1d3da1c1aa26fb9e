"""The agent's stream endpoint: consoles, VNC, power actions and the console
log of this host's domains, for Kova's API component only.

HTTPS with mutual TLS: the client must present a certificate signed by
``client_ca_file`` whose subject common name is one of ``allowed_clients``
(``kova-api``); anything else fails the handshake (no certificate, another
CA) or gets 403 (another name).  Users never reach it directly: they go
through the Kubernetes API server, which authenticates them, and the API
component, which asks the API server whether they may (SubjectAccessReview).

Routes (``uid`` is the domain's UUID, the Instance's metadata.uid):

* ``GET /v1/domains/<uid>/console?mode=write|read&user=<name>`` -- websocket,
  binary frames both ways (:mod:`kova.agents.stream.console`);
* ``GET /v1/domains/<uid>/vnc`` -- websocket carrying RFB;

  both websockets start with one text frame, ``{"ok": true}`` or
  ``{"ok": false, "status": 409, "reason": ..., "message": ...}`` (then the
  agent closes), so that the API component can answer the user with a
  proper HTTP error before it accepts the user's websocket;
* ``GET /v1/domains/<uid>/log?follow=1&tailBytes=N`` -- the serial console log
  file (``text/plain``, streamed while ``follow``);
* ``PUT /v1/domains/<uid>/power/<action>`` -- :mod:`kova.agents.instance.power_actions`
  (``eject`` too: :mod:`kova.agents.instance.media`);
* ``PUT /v1/domains/<uid>/snapshot?namespace=&instance=&image=&user=&request=&quiesce=``
  -- the root disk into a TenantImage, :mod:`kova.agents.instance.snapshot`
  (``quiesce``: required, auto or off; with ``resume=1``:
  the answer of snapshot ``request`` once it ends, for an API component that
  restarted meanwhile);
* ``PUT /v1/domains/<uid>/disk`` -- an Instance's disk sent by another agent
  (a cold migration), ``PUT /v1/domains/<uid>/nvram`` -- its UEFI variable
  store, sent the same way, ``PUT /v1/domains/<uid>/image-prepare`` -- the
  destination caching an ISO-booted guest's ISO before a cold migration
  stops the guest, and ``PUT /v1/domains/<uid>/live-prepare`` -- the
  destination's preparation of a live migration: for the agents' migration
  certificate (``kova-agent-mover``) only; that certificate may use no other route;
* ``GET /healthz``.

Errors are JSON ``{"reason": ..., "message": ...}`` with a 4xx/5xx status.
The server runs its own asyncio loop in a thread (the agent itself is
threaded); libvirt calls go to the loop's default executor.  Where the API
component reaches it is the Host's ``status.streamEndpoint``
(:meth:`StreamServer.host_status`, written by the registration).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from kova.agents.context import AgentContext
from kova.agents.instance import disk_copy
from kova.agents.instance.move import MoveError
from kova.agents.instance.power_actions import ActionError, PowerActions
from kova.agents.instance.snapshot import SnapshotError, Snapshots
from kova.agents.settings import AgentSettings
from kova.agents.stream.console import ConsoleError, ConsoleHub, open_vnc
from kova.crds import names

log = logging.getLogger("kova.agents.stream.server")

#: The routes (by name) of the agents' migration certificate -- and of no
#: other client: what one agent asks another during a move.
MOVER_ROUTES = frozenset({"disk", "nvram", "image-prepare", "live-prepare"})

#: A console reader whose websocket falls this far behind is disconnected.
MAX_BACKLOG = 8 * 1024 * 1024


def server_ssl_context(cfg: AgentSettings) -> ssl.SSLContext:
    """TLS that requires a client certificate signed by the stream client CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cfg.stream_client_ca_file)
    assert cfg.stream_cert_file is not None
    ctx.load_cert_chain(cfg.stream_cert_file, cfg.stream_key_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def peer_common_name(request: web.Request) -> str | None:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def error(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"reason": reason, "message": message}, status=status)


async def refuse(ws: web.WebSocketResponse, exc: ConsoleError) -> web.WebSocketResponse:
    """A websocket's first frame says whether the agent could attach; this
    one says why not (the API component answers the user with it)."""
    await ws.send_json({"ok": False, "status": exc.status, "reason": exc.reason,
                        "message": exc.message})
    await ws.close()
    return ws


class StreamServer:
    """The stream endpoint: :meth:`start` serves it in thread ``stream``.
    ``healthy`` is the agent's health check (``/healthz``)."""

    def __init__(self, ctx: AgentContext, power: PowerActions,
                 healthy: Callable[[], tuple[bool, str]]) -> None:
        cfg = ctx.cfg
        self.ctx = ctx
        self.cfg = cfg
        self.consoles = ConsoleHub(lambda: ctx.driver.conn)
        self.power = power
        self.snapshots = Snapshots(ctx)
        self.healthy = healthy
        self.port: int | None = None
        self.advertise_address = cfg.stream_advertise_address or (
            cfg.stream_bind if cfg.stream_bind not in ("0.0.0.0", "::") else _own_address())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        #: The destination's part of a live migration (namespace, name, uid,
        #: the guest's MAC or None) -> {"destUri", "destDir", "nicFilter"}; set by the agent
        #: (:meth:`kova.agents.instance.live.LiveMigrator.prepare_here`).
        self.prepare_live: Callable[[str, str, str, str | None], dict] | None = None
        #: The destination's part of a cold migration before the guest stops
        #: (namespace, name, uid) -> {"cdrom"}; set by the agent
        #: (:meth:`kova.agents.instance.migrate.Migrator.prepare_here`).
        self.prepare_image: Callable[[str, str, str], dict] | None = None

    def host_status(self) -> dict[str, Any]:
        """Host status.streamEndpoint: where Kova's API component reaches
        this agent (nothing until the endpoint listens)."""
        if self.port is None:
            return {}
        return {"streamEndpoint": {"address": self.advertise_address, "port": self.port}}

    # ------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        base = "/v1/domains/{uid}"
        app.router.add_get("/healthz", self._healthz, name="healthz")
        app.router.add_get(base + "/console", self._console)
        app.router.add_get(base + "/vnc", self._vnc)
        app.router.add_get(base + "/log", self._log)
        app.router.add_put(base + "/power/{action}", self._power)
        app.router.add_put(base + "/snapshot", self._snapshot)
        app.router.add_put(base + "/disk", self._disk, name="disk")
        app.router.add_put(base + "/nvram", self._nvram, name="nvram")
        app.router.add_put(base + "/image-prepare", self._image_prepare, name="image-prepare")
        app.router.add_put(base + "/live-prepare", self._live_prepare, name="live-prepare")
        return app

    def start(self) -> None:
        ssl_ctx = server_ssl_context(self.cfg)
        self._thread = threading.Thread(target=self._run, args=(ssl_ctx,), name="stream",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"stream endpoint: {self._error}") from self._error
        log.info("stream endpoint (mutual TLS, clients %s) on %s:%s, advertised as %s",
                 ", ".join(self.cfg.stream_allowed_clients), self.cfg.stream_bind, self.port,
                 self.advertise_address)

    def _run(self, ssl_ctx: ssl.SSLContext) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ssl_ctx))
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _serve(self, ssl_ctx: ssl.SSLContext) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.stream_bind, self.cfg.stream_port,
                           ssl_context=ssl_ctx)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else self.cfg.stream_port

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        self.consoles.close_all()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------
    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:
        name = peer_common_name(request)
        if name not in self.cfg.stream_allowed_clients:
            log.warning("stream endpoint: refused a client certificate named %r", name)
            return error(403, "Forbidden", "this client certificate may not use the agent's "
                         "stream endpoint")
        # Two identities, two route sets: the agents' migration certificate
        # may only send a disk; every other client (the API component) may
        # do anything but that -- a leaked migration key opens no console.
        route = request.match_info.route.name
        mover = name == names.STREAM_MIGRATION_CLIENT_NAME
        if route != "healthz" and mover != (route in MOVER_ROUTES):
            log.warning("stream endpoint: refused %r on %s %s", name, request.method,
                        request.path)
            return error(403, "Forbidden", f"the client certificate {name} may not use "
                         f"{request.method} {request.path}")
        return await handler(request)

    async def _healthz(self, _request: web.Request) -> web.Response:
        ok, why = self.healthy()
        return web.json_response({"ok": ok, "reason": why}, status=200 if ok else 503)

    async def _console(self, request: web.Request) -> web.StreamResponse:
        uid = request.match_info["uid"]
        writer = request.query.get("mode", "write") == "write"
        user = request.query.get("user", "unknown")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        backlog = [0]

        def put(data: bytes | None) -> None:
            if data is not None:
                backlog[0] += len(data)
                if backlog[0] > MAX_BACKLOG:
                    data = None  # too slow a reader: end its session
            queue.put_nowait(data)

        def deliver(data: bytes | None) -> None:  # libvirt's event thread
            loop.call_soon_threadsafe(put, data)

        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        try:
            att = await loop.run_in_executor(
                None, lambda: self.consoles.attach(uid, user=user, writer=writer,
                                                   deliver=deliver))
        except ConsoleError as exc:
            return await refuse(ws, exc)
        try:
            await ws.send_json({"ok": True, "writer": writer})

            async def to_client() -> None:
                while True:
                    data = await queue.get()
                    if data is None:
                        await ws.close(code=1000, message=b"the console closed")
                        return
                    backlog[0] -= len(data)
                    await ws.send_bytes(data)

            sender = asyncio.create_task(to_client())
            try:
                async for msg in ws:
                    if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT) or not writer:
                        continue
                    data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                    try:
                        await loop.run_in_executor(None, att.write, data)
                    except ConsoleError as exc:
                        await ws.close(code=1011, message=exc.message.encode()[:120])
                        break
            finally:
                sender.cancel()
        finally:
            await loop.run_in_executor(None, att.detach)
        return ws

    async def _vnc(self, request: web.Request) -> web.StreamResponse:
        uid = request.match_info["uid"]
        loop = asyncio.get_running_loop()
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=16 << 20)
        await ws.prepare(request)
        try:
            sock = await loop.run_in_executor(None, open_vnc, self.ctx.driver.conn, uid)
        except ConsoleError as exc:
            return await refuse(ws, exc)
        reader, writer = await asyncio.open_connection(sock=sock)
        await ws.send_json({"ok": True})
        log.info("VNC of %s: viewer connected (%s)", uid, request.query.get("user", "unknown"))

        async def to_client() -> None:
            while data := await reader.read(256 * 1024):
                await ws.send_bytes(data)
            await ws.close(code=1000, message=b"the display closed")

        sender = asyncio.create_task(to_client())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()
        finally:
            sender.cancel()
            writer.close()
        return ws

    async def _log(self, request: web.Request) -> web.StreamResponse:
        uid = request.match_info["uid"]
        path = self.ctx.files(uid).console
        follow = request.query.get("follow") in ("1", "true")
        try:
            tail = int(request.query.get("tailBytes", "-1"))
        except ValueError:
            return error(400, "BadRequest", "tailBytes must be an integer")
        loop = asyncio.get_running_loop()
        try:
            fh = await loop.run_in_executor(None, open, path, "rb")
        except FileNotFoundError:
            return error(404, "NoConsoleLog", "no console log on this host (the domain was "
                         "never started here)")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        try:
            if tail >= 0:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - tail))
            while True:
                data = await loop.run_in_executor(None, fh.read, 256 * 1024)
                if data:
                    await resp.write(data)
                    continue
                if not follow or not Path(path).exists():
                    break
                await asyncio.sleep(0.25)
        except ConnectionResetError:
            pass
        finally:
            fh.close()
        return resp

    async def _power(self, request: web.Request) -> web.Response:
        uid, action = request.match_info["uid"], request.match_info["action"]
        user = request.query.get("user", "unknown")
        req = request.query.get("request", "")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, self.power.run, uid, action, user, req)
        except ActionError as exc:
            return error(exc.status, exc.reason, exc.message)
        return web.json_response(result.to_json())


    async def _snapshot(self, request: web.Request) -> web.Response:
        uid, q = request.match_info["uid"], request.query
        if not all(q.get(k) for k in ("namespace", "instance", "image")):
            return error(400, "BadRequest", "namespace, instance and image are required")
        quiesce = q.get("quiesce") or names.SnapshotQuiesce.AUTO
        problem = names.SnapshotQuiesce.problem(quiesce)
        if problem is not None:
            return error(400, "BadRequest", problem)
        loop = asyncio.get_running_loop()
        if q.get("resume") and q.get("request"):  # an API component that restarted asks again
            try:
                result = await loop.run_in_executor(None, self.snapshots.resume, uid,
                                                    q["request"])
            except SnapshotError as exc:
                return error(exc.status, exc.reason, exc.message)
            return web.json_response(result)
        try:
            result = await loop.run_in_executor(None, self.snapshots.run, uid, q["namespace"],
                                                q["instance"], q["image"],
                                                q.get("user", "unknown"), q.get("request", ""),
                                                quiesce, q.get("imageUid", ""))
        except SnapshotError as exc:
            return error(exc.status, exc.reason, exc.message)
        return web.json_response(result)

    async def _disk(self, request: web.Request) -> web.Response:
        """Receive an Instance's disk from another agent (a cold migration:
        :mod:`kova.agents.instance.disk_copy`), sha256-checked."""
        return await self._receive(request, "disk", disk_copy.INCOMING)

    async def _nvram(self, request: web.Request) -> web.Response:
        """Receive a UEFI Instance's variable store from another agent (a
        cold migration, before its disk), sha256-checked."""
        return await self._receive(request, "nvram", disk_copy.NVRAM_INCOMING)

    async def _receive(self, request: web.Request, part: str,
                       incoming: str) -> web.Response:
        uid = request.match_info["uid"]
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self.ctx.driver.get, uid) is not None:
            return error(409, "DomainExists", f"a domain {uid} is defined on {self.ctx.host}: "
                         f"a {part} is only received for an Instance that has none here")
        files = self.ctx.files(uid)
        target = files.nvram if part == "nvram" else files.disk
        try:
            got = await disk_copy.receive(request.content.iter_chunked(disk_copy.CHUNK),
                                          target, request.headers.get(
                                              disk_copy.SHA256_HEADER, ""), incoming)
        except disk_copy.CopyError as exc:
            log.warning("%s of %s from %s refused: %s", part, uid, peer_common_name(request),
                        exc.message)
            return error(exc.status, exc.reason, exc.message)
        ns, _, name = request.headers.get(disk_copy.INSTANCE_HEADER, "").partition("/")
        if ns and name:
            # Names the Instance, so the leftover sweep asks about it first.
            files.info.write_text(json.dumps({"uid": uid, "namespace": ns, "name": name,
                                              "host": self.ctx.host}))
        log.info("received the %s of %s from %s: %d bytes, sha256 %s", part, uid,
                 peer_common_name(request), got.size, got.sha256)
        return web.json_response({"sha256": got.sha256, "bytes": got.size}, status=201)

    async def _image_prepare(self, request: web.Request) -> web.Response:
        """Cache the image Instance ``?namespace=&name=`` needs on this host
        before a cold migration to it stops the guest (an iso Image: its
        CD-ROM); the source agent asks at step Moving."""
        uid = request.match_info["uid"]
        ns, name = request.query.get("namespace", ""), request.query.get("name", "")
        if self.prepare_image is None or not (ns and name):
            return error(400, "BadRequest", "image-prepare needs ?namespace= and ?name=")
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, self.prepare_image, ns, name, uid)
        except MoveError as exc:
            return error(409, "NotPrepared", str(exc))
        return web.json_response(out, status=201)

    async def _live_prepare(self, request: web.Request) -> web.Response:
        """Prepare this host to receive a live migration of Instance
        ``?namespace=&name=`` (its disk file and seed): the source agent asks
        at step Preparing."""
        uid = request.match_info["uid"]
        ns, name = request.query.get("namespace", ""), request.query.get("name", "")
        mac = request.query.get("mac", "").lower() or None
        if self.prepare_live is None or not (ns and name):
            return error(400, "BadRequest", "live-prepare needs ?namespace= and ?name= on an "
                         "agent that receives live migrations")
        if mac is not None and not _MAC_RE.fullmatch(mac):
            return error(400, "BadRequest", f"live-prepare: ?mac= {mac[:40]!r} is not a MAC "
                         "address (aa:bb:cc:dd:ee:ff)")
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, self.prepare_live, ns, name, uid, mac)
        except MoveError as exc:
            return error(409, "NotPrepared", str(exc))
        log.info("prepared for the live migration of %s/%s (%s) asked by %s", ns, name, uid,
                 peer_common_name(request))
        return web.json_response(out, status=201)


_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _own_address() -> str:
    import socket

    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
