"""Kova's one Kubernetes API client: async for the operator, with a blocking
facade for the thread-based agent and for Placement's TokenReview.

aiohttp rather than httpx or the official client: measured against the real
API server, a PATCH costs the client ~0.4 ms of CPU with aiohttp and ~4 ms
with httpx (its connection pool and TLS stream layers), and the operator makes
two or three such calls per scheduled Instance (docs/benchmarks.md).  The
official client's config loaders are reused for reading kubeconfigs and the
in-cluster service account.

Credentials stay valid for a long-running process: a bearer token read from a
file (the in-cluster service-account token, which the kubelet rotates, or a
kubeconfig ``tokenFile``) is read again whenever the file changes; a
kubeconfig with an ``exec`` or ``auth-provider`` user is evaluated again when
its token expires; and an answer 401 makes the client reload its credentials
and retry the request once.

:class:`SyncKube` runs the same :class:`Kube` on a private event loop
(:class:`kova.loop.LoopThread`); its watches deliver events to the calling
thread through a queue.  This is the only module of Kova that talks to the
Kubernetes API, apart from kopf inside the operator's informer and the local
development tooling (import-linter checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import logging
import os
import queue
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kova.crds import names
from kova.loop import LoopThread, blocking

LOG = logging.getLogger("kova.kube")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
#: How often a token file is looked at (stat) for a new token, at most.
TOKEN_CHECK_SECONDS = 1.0


class KubeError(Exception):
    """The API server answered ``status`` (its Status object in ``body``)."""

    def __init__(self, status: int, body: Any, what: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{what}: {status} {body}")

    @property
    def reason(self) -> str:
        """The Status object's reason (NotFound, Conflict, ...), or ''."""
        return str(self.body.get("reason") or "") if isinstance(self.body, dict) else ""


# ---------------------------------------------------------------------------
# Credentials


def _bearer_of(cfg: Any) -> str | None:
    """The bearer token an official-client Configuration carries."""
    keys = cfg.api_key or {}
    value = keys.get("BearerToken") or keys.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token if scheme.lower() == "bearer" and token else value


def _kubeconfig_entries(path: str, context: str | None = None
                        ) -> tuple[dict | None, dict | None, dict | None]:
    """(context, cluster, user) bodies of the kubeconfig's active (or named)
    context, each None when the kubeconfig has none (all when unreadable)."""
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None, None, None
    ctx = _named(doc.get("contexts"), "context", context or doc.get("current-context"))
    cluster = _named(doc.get("clusters"), "cluster", (ctx or {}).get("cluster"))
    user = _named(doc.get("users"), "user", (ctx or {}).get("user"))
    return ctx, cluster, user


#: What a kubeconfig's cluster and user may hold for :meth:`Credentials._plain`.
PLAIN_CLUSTER_KEYS = {"server", "certificate-authority", "insecure-skip-tls-verify"}
PLAIN_USER_KEYS = {"token", "tokenFile", "client-certificate", "client-key"}


def _named(entries: Any, key: str, name: Any) -> dict | None:
    """The ``key`` body (``context``, ``cluster``, ``user``) of the kubeconfig
    entry called ``name``, if there is one."""
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(key)
            return body if isinstance(body, dict) else {}
    return None


def _token_file(path: str, user: dict) -> Path | None:
    """The ``tokenFile`` of kubeconfig ``path``'s user entry ``user``, if it names one."""
    token_file = user.get("tokenFile")
    if not token_file:
        return None
    return (Path(path).resolve().parent / token_file) if not os.path.isabs(token_file) \
        else Path(token_file)


def merged(target: Any, patch: Any) -> Any:
    """``target`` as the JSON merge patch ``patch`` (RFC 7386) leaves it: an
    object merged key by key, a None value removing its key, anything else
    (a list too) replacing.  ``target`` is not changed; the result shares
    the parts the patch does not touch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


class Credentials:
    """Where the API server is and how to authenticate to it, kept fresh.

    Load with :meth:`load`; :meth:`bearer` is the token to send now (cheap:
    the token file is looked at once a second at most), :meth:`refresh`
    forces a reload (after a 401)."""

    def __init__(self, server: str, *, ca_file: str | None = None, insecure: bool = False,
                 cert_file: str | None = None, key_file: str | None = None,
                 token: str | None = None, token_file: Path | None = None,
                 reload: Callable[[], Any] | None = None, namespace: str | None = None) -> None:
        self.server = server.rstrip("/")
        #: The namespace of the kubeconfig's context (in a pod: its own), if any.
        self.namespace = namespace
        self.ca_file = ca_file
        self.insecure = insecure
        self.cert_file = cert_file
        self.key_file = key_file
        self._token = token
        self._token_file = token_file
        self._file_stamp: tuple | None = None
        self._reload = reload  # -> an official Configuration, freshly loaded
        self._cfg: Any = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        #: The pod's own service account (loaded in-cluster).
        self.in_cluster = False
        if token_file is not None:
            self._read_token_file()

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> Credentials:
        """From ``kubeconfig``; without one, the in-cluster service account
        when running in a pod, else ``$KUBECONFIG`` or ``~/.kube/config``."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST") \
                and (SERVICE_ACCOUNT_DIR / "token").exists():
            from kubernetes import client, config

            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            try:
                namespace: str | None = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
            except OSError:
                namespace = None
            creds = cls(cfg.host, ca_file=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                        token_file=SERVICE_ACCOUNT_DIR / "token", namespace=namespace)
            creds.in_cluster = True
            return creds
        path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] \
            or os.path.expanduser("~/.kube/config")

        def reload() -> Any:
            from kubernetes import client, config

            cfg = client.Configuration()
            config.load_kube_config(config_file=path, context=context,
                                    client_configuration=cfg, persist_config=False)
            return cfg

        entries = _kubeconfig_entries(path, context)
        plain = cls._plain(path, entries, reload)
        if plain is not None:
            return plain
        cfg = reload()
        ctx, _, user = entries
        creds = cls(cfg.host, ca_file=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
                    cert_file=cfg.cert_file, key_file=cfg.key_file,
                    token_file=_token_file(path, user or {}), reload=reload,
                    namespace=(ctx or {}).get("namespace"))
        creds._cfg = cfg
        return creds

    @classmethod
    def _plain(cls, path: str, entries: tuple[dict | None, dict | None, dict | None],
               reload: Callable[[], Any]) -> Credentials | None:
        """The credentials of a kubeconfig whose context names only a server,
        a CA file (or insecure-skip-tls-verify), a token or token file and
        client certificate files -- read here, without the official client,
        whose import alone takes a short command 0.15-0.3 s; None for
        anything else (exec plugins, auth providers, embedded data, ...),
        which the official loader reads.  A refresh still reloads with it."""
        ctx, cluster, user = entries
        if (ctx is None or cluster is None or user is None or not cluster.get("server")
                or set(cluster) - PLAIN_CLUSTER_KEYS or set(user) - PLAIN_USER_KEYS
                or bool(user.get("client-certificate")) != bool(user.get("client-key"))):
            return None
        base = os.path.abspath(os.path.dirname(path))  # as the official loader resolves them
        files = {key: os.path.normpath(os.path.join(base, str(value)))
                 for key, value in (*cluster.items(), *user.items())
                 if key in ("certificate-authority", "client-certificate", "client-key")
                 and value}
        if not all(os.path.isfile(f) for f in files.values()):
            return None  # the official loader says which is missing
        server = str(cluster["server"]).rstrip("/")
        https = server.startswith("https")
        return cls(server, ca_file=files.get("certificate-authority") if https else None,
                   insecure=bool(cluster.get("insecure-skip-tls-verify")),
                   cert_file=files.get("client-certificate"),
                   key_file=files.get("client-key"),
                   token=None if user.get("tokenFile") else user.get("token"),
                   token_file=_token_file(path, user), reload=reload,
                   namespace=ctx.get("namespace"))

    # ---------------------------------------------------------------- tokens
    def _read_token_file(self) -> bool:
        """Read the token file if it changed; True if the token did."""
        assert self._token_file is not None
        try:
            st = self._token_file.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._file_stamp:
                return False
            token = self._token_file.read_text().strip() or None
        except OSError as exc:
            LOG.warning("cannot read the API token file %s: %s", self._token_file, exc)
            return False
        self._file_stamp = stamp
        changed = token != self._token
        if changed and self._token is not None:
            LOG.info("API token file %s changed: using the new token", self._token_file)
        self._token = token
        return changed

    def bearer(self) -> str | None:
        """The bearer token to send now (None: authenticate by certificate)."""
        now = time.monotonic()
        if now < self._next_check:
            return self._token
        with self._lock:
            self._next_check = now + TOKEN_CHECK_SECONDS
            if self._token_file is not None:
                self._read_token_file()
            elif self._cfg is not None:
                hook = getattr(self._cfg, "refresh_api_key_hook", None)
                if hook is not None:  # exec / auth-provider: re-run when expired
                    hook(self._cfg)
                self._token = _bearer_of(self._cfg)
        return self._token

    def refresh(self) -> bool:
        """Reload the credentials now (after a 401); True if the token changed."""
        with self._lock:
            self._next_check = time.monotonic() + TOKEN_CHECK_SECONDS
            if self._token_file is not None:
                self._file_stamp = None
                return self._read_token_file()
            if self._reload is None:
                return False
            old = self._token
            try:
                self._cfg = self._reload()
            except Exception as exc:  # noqa: BLE001 - keep the old credentials
                LOG.warning("reloading the kubeconfig failed: %s", exc)
                return False
            self._token = _bearer_of(self._cfg)
            return self._token != old

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


# ---------------------------------------------------------------------------
# Paths


def custom_path(plural: str, name: str | None = None, *, namespace: str | None = None,
                subresource: str | None = None) -> str:
    """The path of a Kova object (or, without ``name``, of the collection)."""
    base = f"/apis/{names.API_VERSION}"
    if namespace:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


def image_path(image_key: str, *, subresource: str | None = None) -> str:
    """The path of an Image (``<name>``) or TenantImage (``<namespace>/<name>``,
    see :func:`kova.crds.objects.image_key`)."""
    namespace, _, name = image_key.rpartition("/")
    plural = names.TENANT_IMAGES if namespace else names.IMAGES
    return custom_path(plural, name, namespace=namespace or None, subresource=subresource)


def instance_path(namespace: str, name: str) -> str:
    return custom_path(names.INSTANCES, name, namespace=namespace)


def host_path(name: str) -> str:
    return custom_path(names.HOSTS, name)


def lease_path(namespace: str, name: str = "") -> str:
    """A host's heartbeat Lease in ``namespace``, or (no name) the list of them."""
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


def error_body(content: bytes) -> Any:
    """An error answer's body: its JSON, else its text."""
    try:
        return jsonlib.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# The client


class Kube:
    """The async client.  Its aiohttp session is created on first use, in the
    running event loop (a session belongs to the loop it was made in)."""

    def __init__(self, creds: Credentials, *, max_connections: int = 20,
                 timeout: float = 30.0,
                 observe: Callable[[str, float], None] | None = None) -> None:
        self.creds = creds
        self.server = creds.server
        self._timeout = timeout
        self._max_connections = max_connections
        self._ssl = creds.ssl_context()
        self._observe = observe
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.creds.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _send(self, method: str, path: str, params: Any, data: str | None,
                    content_type: str | None) -> tuple[int, bytes]:
        async with self.session.request(method, self.server + path, params=params, data=data,
                                        headers=self._headers(content_type)) as resp:
            return resp.status, await resp.read()

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None,
                      content_type: str | None = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        """One call; its JSON answer (None when empty).  Raises
        :class:`KubeError` for an answer not in ``ok``; a 401 is retried once
        with reloaded credentials."""
        t0 = time.perf_counter()
        data = None if json is None else jsonlib.dumps(json)
        ctype = (content_type or "application/json") if data is not None else None
        status, content = await self._send(method, path, params, data, ctype)
        if status == 401 and self.creds.refresh():
            LOG.info("the API server refused the token (401): retrying with the new one")
            status, content = await self._send(method, path, params, data, ctype)
        if self._observe is not None:
            self._observe(method, time.perf_counter() - t0)
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s %s: %d (%.1f ms)", method, path, status,
                      (time.perf_counter() - t0) * 1000)
        if status not in ok:
            raise KubeError(status, error_body(content), f"{method} {path}")
        return jsonlib.loads(content) if content else None

    async def get(self, path: str, params: Any = None) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str, params: Any = None) -> Any:
        """The object, or None if it does not exist (404)."""
        try:
            return await self.get(path, params)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_all(self, path: str, params: dict[str, str] | None = None,
                   page: int = 500) -> dict:
        """Every item of a collection (read in pages); ``{"items": [...],
        "metadata": {"resourceVersion": ...}}`` of the last page."""
        items: list[dict] = []
        query = {**(params or {}), "limit": str(page)}
        while True:
            body = await self.get(path, query)
            items += body.get("items") or []
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                body["items"] = items
                return body
            query["continue"] = cont

    async def create(self, path: str, body: dict) -> Any:
        return await self.request("POST", path, json=body)

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path, ok=(200, 202))

    async def merge_patch(self, path: str, body: dict) -> Any:
        return await self.request("PATCH", path, json=body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, ops: list[dict]) -> Any:
        return await self.request("PATCH", path, json=ops, content_type=JSON_PATCH)

    async def replace(self, path: str, body: dict) -> Any:
        """PUT ``body``: the whole object (its resourceVersion, when set, is
        the precondition)."""
        return await self.request("PUT", path, json=body)

    async def update_guarded(self, path: str, current: dict,
                             change: Callable[[dict], dict | None], *,
                             read_path: str | None = None, retries: int = 5) -> dict:
        """As :meth:`patch_guarded`, but written as a PUT of the whole object
        as the merge patch ``change(current)`` would leave it
        (:func:`merged`), guarded by ``current``'s resourceVersion; ``path``
        ending in ``/status`` writes the status.  The API server spends ~16 %
        less CPU on it than on the merge patch: it neither serializes the
        stored object nor applies a patch to it (``bench/instance_writes.py``)."""
        return await self._guarded(
            "PUT", path, current, change,
            lambda cur, patch: self.replace(path, merged(cur, patch)), read_path, retries)

    async def update_status(self, path: str, current: dict,
                            change: Callable[[dict], dict | None], *,
                            retries: int = 5) -> dict | None:
        """:meth:`update_guarded` of the status of the object at ``path``
        (read again from ``path`` on a conflict); None when the object is
        gone (404)."""
        try:
            return await self.update_guarded(path + "/status", current, change,
                                             read_path=path, retries=retries)
        except KubeError as exc:
            if exc.status != 404:
                raise
            return None

    async def patch_guarded(self, path: str, current: dict,
                            change: Callable[[dict], dict | None], *,
                            read_path: str | None = None, retries: int = 5) -> dict:
        """Merge-patch ``change(current)`` onto ``path``, guarded by the
        object's resourceVersion: on a conflict (409) the object is read again
        (from ``read_path``, default ``path``) and ``change`` asked again.
        When ``change`` returns None nothing is written and the object as last
        read is returned; else the patched object.  KubeError for other
        refusals (404: gone); RuntimeError after ``retries`` conflicts."""

        def guarded_patch(cur: dict, patch: dict) -> Awaitable[Any]:
            meta = {**(patch.get("metadata") or {}),
                    "resourceVersion": cur["metadata"]["resourceVersion"]}
            return self.merge_patch(path, {**patch, "metadata": meta})

        return await self._guarded("PATCH", path, current, change, guarded_patch,
                                   read_path, retries)

    async def _guarded(self, verb: str, path: str, current: dict,
                       change: Callable[[dict], dict | None],
                       write: Callable[[dict, dict], Awaitable[Any]],
                       read_path: str | None, retries: int) -> dict:
        """The read-change-write loop of both guarded writes: ``write(current,
        change(current))`` until it is not refused with a conflict."""
        for _ in range(retries):
            patch = change(current)
            if patch is None:
                return current
            try:
                return await write(current, patch)
            except KubeError as exc:
                if exc.status != 409:
                    raise
            current = await self.get(read_path or path)
        raise RuntimeError(f"{verb} {path}: still conflicting after {retries} tries")

    async def apply(self, path: str, body: dict, *, field_manager: str,
                    force: bool = True) -> Any:
        """Server-side apply ``body`` (JSON is YAML) as ``field_manager``."""
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        return await self.request("PATCH", path, json=body, params=params,
                                  content_type=APPLY_PATCH)

    @contextlib.asynccontextmanager
    async def _open(self, path: str, params: Any, timeout: aiohttp.ClientTimeout,
                    what: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long GET whose body is read as it comes (KubeError unless 200)."""
        async with self.session.get(self.server + path, params=params, headers=self._headers(),
                                    timeout=timeout) as resp:
            if resp.status == 401:
                self.creds.refresh()
            if resp.status != 200:
                raise KubeError(resp.status, error_body(await resp.read()), f"{what} {path}")
            yield resp

    async def watch(self, path: str, params: dict[str, str] | None = None, *,
                    timeout_seconds: int = 300) -> AsyncIterator[dict]:
        """The watch events of a collection (``{"type": ..., "object": ...}``)
        until the server ends the watch (after ``timeout_seconds``)."""
        query = {**(params or {}), "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                        sock_read=timeout_seconds + 30)
        async with self._open(path, query, timeout, "WATCH") as resp:
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield jsonlib.loads(line)

    async def stream(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """The body of a long GET (such as a followed console log), chunk by
        chunk as the server sends it; no read timeout."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout)
        async with self._open(path, params, timeout, "GET") as resp:
            async for chunk in resp.content.iter_any():
                yield chunk


# ---------------------------------------------------------------------------
# The blocking facade


class WatchStream:
    """A watch (or a streamed body) running on the loop thread, read as an
    iterator by one thread; :meth:`stop` ends it from any thread."""

    _END = object()
    #: What :meth:`get` returns once the stream has ended.
    ENDED = object()

    def __init__(self, loop: LoopThread, events: AsyncIterator[Any]) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._future = loop.submit(self._pump(events))

    async def _pump(self, events: AsyncIterator[Any]) -> None:
        try:
            async for event in events:
                self._queue.put(event)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - handed to the reading thread
            self._queue.put(exc)
        finally:
            self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def get(self, timeout: float) -> Any:
        """The next item if one comes within ``timeout`` seconds, else None;
        :attr:`ENDED` once the stream has ended (raising what ended it, if
        it failed)."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is self._END:
            self._queue.put(self._END)  # ended for every later call too
            return self.ENDED
        if isinstance(item, Exception):
            raise item
        return item

    def stop(self) -> None:
        self._future.cancel()
        self._queue.put(self._END)


class SyncKube:
    """:class:`Kube` for threads: each method blocks until the call is done."""

    def __init__(self, creds: Credentials, **kwargs: Any) -> None:
        self.loop = LoopThread("kova-kube")
        self.aio = Kube(creds, **kwargs)

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        """Run a coroutine (e.g. one of :mod:`kova.finalizers`) on the loop."""
        return self.loop.run(coro, timeout)

    request = blocking("request")
    get = blocking("get")
    get_or_none = blocking("get_or_none")
    list_all = blocking("list_all")
    create = blocking("create")
    delete = blocking("delete")
    merge_patch = blocking("merge_patch")
    json_patch = blocking("json_patch")
    patch_guarded = blocking("patch_guarded")
    apply = blocking("apply")

    def watch(self, path: str, params: dict[str, str] | None = None, *,
              timeout_seconds: int = 300) -> WatchStream:
        return WatchStream(self.loop, self.aio.watch(path, params,
                                                     timeout_seconds=timeout_seconds))

    def stream(self, path: str, params: dict[str, str] | None = None) -> WatchStream:
        """:meth:`Kube.stream` as an iterator of byte chunks."""
        return WatchStream(self.loop, self.aio.stream(path, params))

    def close(self) -> None:
        self.loop.close(self.aio.close)


@contextlib.contextmanager
def sync_kube(kubeconfig: str | None = None, **kwargs: Any) -> Iterator[SyncKube]:
    """A :class:`SyncKube` for a short job, closed afterwards."""
    kube = SyncKube(Credentials.load(kubeconfig), **kwargs)
    try:
        yield kube
    finally:
        kube.close()
