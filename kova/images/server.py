"""``kova images serve``: the image store's HTTP(S) server.

Routes (every one but ``/healthz`` needs ``Authorization: Bearer <token>``,
a Kubernetes token: the store asks the API server who it is (TokenReview) and
whether that user may act on the Image (SubjectAccessReview, group
``kova.dev``, resource ``images``)):

``GET|HEAD /v1/images/<name>``
    the file (verb ``get``), with range requests (``Range: bytes=...``) and
    its checksum in ``X-Image-Sha256``; the compute agents fetch Images whose
    ``source.url`` points here with their own token.
``PUT /v1/images/<name>?format=qcow2|raw|iso|vmdk|vhdx|vpc|vdi``
    an upload (verb ``create``): stored and verified (:mod:`kova.images.store`),
    then the Image is created (``source.url`` here, ``sha256``, ``format``) and
    its status written (sizes, checksum, ``Available=True``, reason
    ``Stored``).  Answers 201 with the Image's figures and ``seconds``, the
    time each step took.  If the Image cannot be
    created, the file is removed again: nothing half-registered.
    A snapshot's upload (``snapshotOf=<namespace>/<instance>``) with
    ``placeholder=<uid>`` fills the TenantImage the API component created
    saving at the snapshot's request (:mod:`kova.images.placeholders`)
    instead: refused (409 ``ImageDeleted``, the file removed) when that object
    is gone or no longer saving.
``DELETE /v1/images/<name>``
    the file (verb ``delete``).
``GET|HEAD|PUT|DELETE /v1/namespaces/<namespace>/images/<name>``
    the same for a TenantImage of ``<namespace>`` (SubjectAccessReview on
    ``tenantimages`` in that namespace): a tenant's own images, which only
    users allowed in that namespace read, and agents fetch only for
    Instances of that namespace.

Refusals are JSON ``{"reason": ..., "message": ...}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from kova.conditions import now_rfc3339
from kova.crds import names
from kova.images import placeholders
from kova.images.reaper import FINALIZER, Reaper
from kova.images.settings import ImagesSettings
from kova.images.store import ISO, ImageStore, StoredImage, StoreError
from kova.kube import Credentials, Kube, KubeError, custom_path

log = logging.getLogger("kova.images.server")

FIELD_MANAGER = "kova-images"
ANNOTATION_UPLOADED_BY = f"{names.GROUP}/uploaded-by"
#: How much of a request body aiohttp holds before it stops reading the
#: connection (its buffer's limit; an upload's pieces are taken as they come).
READ_BUFSIZE = 4 << 20


def refusal(status: int, reason: str, message: str) -> web.Response:
    return web.json_response({"reason": reason, "message": message}, status=status)


class ImageServer:
    def __init__(self, cfg: ImagesSettings, kube: Kube | None = None) -> None:
        self.cfg = cfg
        self.store = ImageStore(cfg.dir, max_bytes=cfg.max_bytes)
        self.kube = kube or Kube(Credentials.load(cfg.kubeconfig))
        self.port = cfg.port
        self._runner: web.AppRunner | None = None
        #: (name, namespace) of the uploads under way.
        self.uploading: set[tuple[str, str | None]] = set()
        self.reaper = Reaper(self.kube, self.store, self.image_url, self.uploading)
        self._reaping: asyncio.Task | None = None

    # -- wiring ----------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/v1/images/{name}", self.download)
        app.router.add_put("/v1/images/{name}", self.upload)
        app.router.add_delete("/v1/images/{name}", self.remove)
        tenant = "/v1/namespaces/{namespace}/images/{name}"
        app.router.add_get(tenant, self.download)
        app.router.add_put(tenant, self.upload)
        app.router.add_delete(tenant, self.remove)
        return app

    @property
    def url(self) -> str:
        if self.cfg.public_url:
            return self.cfg.public_url.rstrip("/")
        scheme = "https" if self.cfg.tls_cert_file else "http"
        host = "127.0.0.1" if self.cfg.bind_address in ("0.0.0.0", "") else \
            self.cfg.bind_address
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        ctx = None
        if self.cfg.tls_cert_file:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.cfg.tls_cert_file, self.cfg.tls_key_file)
        else:
            log.warning("no --tls-cert-file: serving plain HTTP (development only)")
        # Up to READ_BUFSIZE bytes of an upload buffered while the store hashes and writes.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0,
                                     read_bufsize=READ_BUFSIZE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.bind_address, self.cfg.port, ssl_context=ctx)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._reaping = asyncio.create_task(self.reaper.run(), name="reaper")
        log.info("image store on %s (files in %s)", self.url, self.cfg.dir)

    async def stop(self) -> None:
        if self._reaping is not None:
            self._reaping.cancel()
            await asyncio.gather(self._reaping, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.kube.close()

    # -- authentication and authorization --------------------------------
    async def authorize(self, request: web.Request, verb: str, name: str,
                        namespace: str | None = None) -> dict:
        """The user behind the request's token, if it may ``verb`` Image ``name``
        (the TenantImage ``name`` of ``namespace``)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise web.HTTPUnauthorized(
                text='{"reason":"Unauthorized","message":"a Kubernetes bearer token is '
                     'required"}', content_type="application/json")
        review = await self.kube.create("/apis/authentication.k8s.io/v1/tokenreviews", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token}})
        status = review.get("status") or {}
        if not status.get("authenticated"):
            raise web.HTTPUnauthorized(
                text='{"reason":"Unauthorized","message":"the token is not valid"}',
                content_type="application/json")
        user = status.get("user") or {}
        resource = names.TENANT_IMAGES if namespace else names.IMAGES
        attributes = {"group": names.GROUP, "version": names.VERSION,
                      "resource": resource, "verb": verb, "name": name}
        if namespace:
            attributes["namespace"] = namespace
        spec: dict[str, Any] = {
            "user": user.get("username"), "groups": user.get("groups") or [],
            "uid": user.get("uid"), "resourceAttributes": attributes}
        if user.get("extra"):
            spec["extra"] = user["extra"]
        sar = await self.kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": spec})
        if not (sar.get("status") or {}).get("allowed"):
            where = f" in namespace {namespace}" if namespace else ""
            raise web.HTTPForbidden(
                text=json.dumps({"reason": "Forbidden",
                                 "message": f"{user.get('username')} may not {verb} "
                                            f"{resource}.{names.GROUP} {name}{where}"}),
                content_type="application/json")
        return user

    # -- routes ----------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def download(self, request: web.Request) -> web.StreamResponse:
        name, namespace = _target(request)
        try:
            stored = self.store.get(name, namespace)
        except StoreError as exc:
            return refusal(exc.status, exc.reason, exc.message)
        await self.authorize(request, "get", name, namespace)
        if stored is None:
            return refusal(404, "NotFound", f"the store holds no image {name}")
        return web.FileResponse(stored.path, headers={
            "X-Image-Sha256": stored.sha256, "Content-Type": "application/octet-stream"})

    async def remove(self, request: web.Request) -> web.Response:
        name, namespace = _target(request)
        await self.authorize(request, "delete", name, namespace)
        try:
            gone = self.store.delete(name, namespace)
        except StoreError as exc:
            return refusal(exc.status, exc.reason, exc.message)
        if not gone:
            return refusal(404, "NotFound", f"the store holds no image {name}")
        return web.json_response({"deleted": name})

    async def upload(self, request: web.Request) -> web.Response:
        name, namespace = _target(request)
        fmt = request.query.get("format", "qcow2")
        origin = request.query.get("snapshotOf")
        if origin is not None and (not namespace or not origin.startswith(f"{namespace}/")):
            return refusal(400, "BadRequest", "snapshotOf names an Instance of the "
                           "TenantImage's own namespace (<namespace>/<name>)")
        placeholder = request.query.get("placeholder") or None
        if placeholder is not None and origin is None:
            return refusal(400, "BadRequest", "placeholder (the uid of a snapshot's saving "
                           "TenantImage) goes with snapshotOf")
        user = await self.authorize(request, "create", name, namespace)
        self.uploading.add((name, namespace))
        try:
            return await self._upload(request, name, namespace, fmt,
                                      placeholders.Origin(origin, placeholder), user)
        finally:
            self.uploading.discard((name, namespace))

    async def _upload(self, request: web.Request, name: str, namespace: str | None, fmt: str,
                      origin: placeholders.Origin, user: dict) -> web.Response:
        try:
            stored = await self.store.receive(name, fmt, _chunks(request),
                                              request.content_length, namespace)
        except StoreError as exc:
            log.warning("upload of %s by %s refused: %s", name, user.get("username"),
                        exc.message)
            return refusal(exc.status, exc.reason, exc.message)
        except (ConnectionError, asyncio.CancelledError):
            log.warning("upload of %s by %s interrupted: nothing stored", name,
                        user.get("username"))
            raise
        t0 = time.monotonic()
        try:
            await self.register(stored, user, origin)
        except StoreError as exc:
            self.store.delete(name, namespace)
            log.warning("upload of %s by %s discarded: %s", name, user.get("username"),
                        exc.message)
            return refusal(exc.status, exc.reason, exc.message)
        except KubeError as exc:
            self.store.delete(name, namespace)
            body = exc.body if isinstance(exc.body, dict) else {}
            return refusal(409 if exc.status == 409 else 502, body.get("reason") or
                           "ImageNotCreated", f"the Image was not created, the upload is "
                           f"discarded: {body.get('message') or exc}")
        stored.seconds["registerSeconds"] = round(time.monotonic() - t0, 3)
        log.info("image %s stored (%s, %d bytes, sha256 %s) for %s; seconds: %s", name,
                 stored.format, stored.size, stored.sha256[:16], user.get("username"),
                 ", ".join(f"{k.removesuffix('Seconds')} {v:.2f}"
                           for k, v in stored.seconds.items() if k.endswith("Seconds")))
        return web.json_response({**stored.to_json(), "url": self.image_url(name, namespace),
                                  "seconds": stored.seconds}, status=201)

    def image_url(self, name: str, namespace: str | None = None) -> str:
        if namespace:
            return f"{self.url}/v1/namespaces/{namespace}/images/{name}"
        return f"{self.url}/v1/images/{name}"

    async def register(self, stored: StoredImage, user: dict,
                       origin: placeholders.Origin | None = None) -> None:
        """The Image (TenantImage of a namespace) of ``stored``, with its status;
        ``origin``: the Instance it is a snapshot of, and the TenantImage
        created saving for it, which is filled instead (StoreError 409
        ``ImageDeleted`` when it is gone)."""
        origin = origin or placeholders.Origin()
        ns = stored.namespace
        kind = names.ImageKind.TENANT_IMAGE if ns else names.ImageKind.IMAGE
        plural = names.TENANT_IMAGES if ns else names.IMAGES
        meta = {"name": stored.name, **({"namespace": ns} if ns else {})}
        annotations = {ANNOTATION_UPLOADED_BY: str(user.get("username"))}
        if origin.snapshot_of:
            annotations[names.ANNOTATION_SNAPSHOT_OF] = origin.snapshot_of
            annotations[names.ANNOTATION_SNAPSHOT_TIME] = now_rfc3339()
        spec = {"source": {"url": self.image_url(stored.name, ns)},
                "format": stored.format, "sha256": stored.sha256,
                **({} if stored.format == ISO else
                   {"minDiskGiB": -(-stored.virtual_size // (1 << 30))})}
        if origin.placeholder and ns:
            created = await placeholders.fill(self.kube, ns, stored.name, origin.placeholder,
                                              spec, annotations, FINALIZER)
        else:
            body = {"apiVersion": names.API_VERSION, "kind": str(kind),
                    "metadata": {**meta, "annotations": annotations,
                                 "finalizers": [FINALIZER]}, "spec": spec}
            created = await self.kube.create(custom_path(plural, namespace=ns), body)
        status = {"apiVersion": names.API_VERSION, "kind": str(kind),
                  "metadata": meta,
                  "status": {"observedGeneration": created["metadata"].get("generation", 1),
                             "sizeBytes": stored.size, "virtualSizeBytes": stored.virtual_size,
                             "sha256": stored.sha256, "format": stored.format,
                             "conditions": [{
                                 "type": "Available", "status": "True", "reason": "Stored",
                                 "message": f"uploaded by {user.get('username')} as "
                                            f"{stored.uploaded_format}, verified and stored",
                                 "lastTransitionTime": now_rfc3339()}]}}
        try:
            await self.kube.apply(custom_path(plural, stored.name, namespace=ns,
                                              subresource="status"),
                                  status, field_manager=FIELD_MANAGER)
        except KubeError as exc:  # the Image stands; agents write status when they fetch it
            log.warning("image %s: status not written: %s", stored.name, exc)


def _target(request: web.Request) -> tuple[str, str | None]:
    """The route's Image name and, for a TenantImage, its namespace."""
    return request.match_info["name"], request.match_info.get("namespace")


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    """The request's body as the pieces aiohttp received, each passed on as it
    is (no joining into larger pieces: every copy of the bytes costs CPU
    time and a larger piece falls out of the CPU's cache before it is hashed
    and written)."""
    async for chunk, _ in request.content.iter_chunks():
        if chunk:
            yield chunk
