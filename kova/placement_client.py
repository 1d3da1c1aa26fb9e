"""Kova's one Placement client (OpenStack Placement API, microversion 1.39):
async for the operator, with a blocking facade for the thread-based agent.

One error type, :class:`PlacementError` (``status``, ``code``, ``detail``),
and its :class:`Conflict` subclass for 409 answers.  One retry policy
(:class:`RetryPolicy`): a connection error, a timeout, or an answer
502/503/504 (Placement restarting behind a proxy, or without its database)
is retried with exponential back-off and jitter until a time budget is
spent; the last answer or error then reaches the caller.  A generation
conflict (409 ``placement.concurrent_update``) is retried only by the calls
that can rebuild their body from a fresh read (inventories, traits,
aggregates); a claim's 409 always reaches the caller, who decides (another
candidate, or adopt the allocation found).  Retrying a claim after a lost
answer is safe: ``PUT /allocations/{uid}`` carries the consumer generation,
so a claim that did commit comes back as a 409.

aiohttp, not httpx: per call the client side costs a tenth of the CPU (see
:mod:`kova.kube`), and the operator makes a few calls per scheduled Instance.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from kova.crds import names
from kova.loop import LoopThread, blocking

LOG = logging.getLogger("kova.placement_client")

#: Answers that mean "not now": a proxy without a backend, or Placement
#: without its database.
RETRY_STATUSES = (502, 503, 504)
RETRY_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
_UUID = re.compile(r"[0-9a-fA-F-]{36}")


def route(path: str) -> str:
    """``path`` with uuids replaced by ``{uuid}`` (a metrics label)."""
    return _UUID.sub("{uuid}", path)


def placement_trouble(exc: BaseException, url: str, client: str,
                      hint: str) -> tuple[str, str] | None:
    """The condition reason and message for a Placement call that failed
    because of Placement: credentials refused (``hint`` says what the
    ``client`` -- "operator", "agent" -- should check), a 5xx after the
    retries, or no answer at all; None for any other answer (a bad request
    is the caller's bug)."""
    if isinstance(exc, PlacementError):
        if exc.status in (401, 403):
            return (names.REASON_PLACEMENT_UNAUTHORIZED,
                    f"Placement at {url} refused the {client}'s credentials "
                    f"(HTTP {exc.status}: {exc.detail}); {hint}")
        if exc.status >= 500:
            return (names.REASON_PLACEMENT_ERROR,
                    f"Placement at {url} answered {exc.status}: {exc.detail}")
        return None
    return (names.REASON_PLACEMENT_ERROR,
            f"Placement at {url} is unreachable ({type(exc).__name__}: {exc})")


def placement_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from a call whose retries were spent) means Placement
    cannot be reached yet: a connection error, a timeout, or 502/503/504."""
    if isinstance(exc, PlacementError):
        return exc.status in RETRY_STATUSES
    return isinstance(exc, RETRY_ERRORS)


class PlacementError(Exception):
    """Placement answered ``status``; ``code`` is its error code
    (``placement.concurrent_update``, ...) when the body has one."""

    def __init__(self, status: int, body: Any, what: str = "") -> None:
        self.status = status
        self.body = body
        self.code: str | None = None
        if isinstance(body, dict) and body.get("errors"):
            self.code = body["errors"][0].get("code")
        super().__init__(f"{what}: Placement answered {status}: {self.detail}")

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict) and self.body.get("errors"):
            return "; ".join(str(e.get("detail", "")) for e in self.body["errors"])
        return str(self.body)


#: What a call to Placement ends with when Placement itself is the problem
#: (unreachable, an error answer after the retries, credentials refused):
#: see :func:`placement_trouble`.
PLACEMENT_FAILURES = (PlacementError, *RETRY_ERRORS)


class Conflict(PlacementError):
    """409: a concurrent update (generation) or not enough capacity."""


@dataclass
class RetryPolicy:
    """Back-off for transient failures: ``backoff`` doubling up to
    ``backoff_max`` seconds, each delay jittered by x0.5 to x1.5, for at most
    ``budget`` seconds in all (and at most ``max_retries`` retries, if set)."""

    budget: float = 30.0
    backoff: float = 0.1
    backoff_max: float = 2.0
    max_retries: int | None = None

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * (2 ** attempt)) * (0.5 + random.random())


def _body(content: bytes) -> Any:
    try:
        return jsonlib.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _same_inventory(current: dict, wanted: dict) -> bool:
    if set(current) != set(wanted):
        return False
    for rc, inv in wanted.items():
        cur = current[rc]
        for k, v in inv.items():
            if k in cur and float(cur[k]) != float(v):
                return False
    return True


class TokenFile:
    """A bearer token read from a file, read again whenever the file changes
    (a kubelet-projected service-account token is replaced before it
    expires): a hypervisor agent's own identity in Placement."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._token = ""

    def __call__(self) -> str:
        try:
            st = os.stat(self.path)  # follows the kubelet's ..data symlink swap
        except OSError:
            return self._token
        if (st.st_mtime_ns, st.st_ino) != self._seen:
            with open(self.path) as fh:
                self._token = fh.read().strip()
            self._seen = (st.st_mtime_ns, st.st_ino)
        return self._token


class PlacementClient:
    """The async client.  ``observe(call, seconds)`` and ``on_retry(reason)``
    feed a component's metrics; ``retried`` counts the retries by reason
    (``connection``, ``502``, ``503``, ``504``, ``conflict``)."""

    def __init__(self, url: str, token: str | None = None, *, ca_file: str | None = None,
                 token_file: str | None = None, timeout: float = 30.0, max_connections: int = 20,
                 retry: RetryPolicy | None = None,
                 microversion: str = names.PLACEMENT_MICROVERSION,
                 observe: Callable[[str, float], None] | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.retried: dict[str, int] = {}
        self._headers = {"OpenStack-API-Version": f"placement {microversion}",
                         "Accept": "application/json"}
        if token:
            self._headers["X-Auth-Token"] = token
        #: A token file (re-read when it changes) instead of a fixed token.
        self._token_file = TokenFile(token_file) if token_file else None
        self._timeout = timeout
        self._max_connections = max_connections
        self._ssl: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_file)
                                            if ca_file else True)
        self._observe = observe
        self._on_retry = on_retry
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> PlacementClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------- transport
    async def _once(self, method: str, path: str, params: Any,
                    json: Any) -> tuple[int, bytes]:
        data = None
        headers: dict[str, str] | None = None
        if json is not None:
            data = jsonlib.dumps(json)
            headers = {"Content-Type": "application/json"}
        if self._token_file is not None:
            headers = {**(headers or {}), "X-Auth-Token": self._token_file()}
        async with self.session.request(method, self.url + path, params=params, data=data,
                                        headers=headers) as resp:
            return resp.status, await resp.read()

    def _count_retry(self, reason: str) -> None:
        self.retried[reason] = self.retried.get(reason, 0) + 1
        if self._on_retry is not None:
            self._on_retry(reason)

    async def send(self, method: str, path: str, *, params: Any = None,
                   json: Any = None) -> tuple[int, bytes]:
        """One request under the retry policy: its final status and body."""
        policy = self.retry
        deadline = time.monotonic() + policy.budget
        call = f"{method} {route(path)}"
        attempt = 0
        while True:
            t0 = time.perf_counter()
            error: BaseException | None = None
            try:
                status, content = await self._once(method, path, params, json)
            except aiohttp.ClientConnectorCertificateError:
                raise  # an untrusted certificate stays untrusted
            except RETRY_ERRORS as exc:
                reason, error = "connection", exc
            else:
                if self._observe is not None:
                    self._observe(call, time.perf_counter() - t0)
                if status not in RETRY_STATUSES:
                    return status, content
                reason = str(status)
            delay = policy.delay(attempt)
            if (time.monotonic() + delay > deadline
                    or (policy.max_retries is not None and attempt >= policy.max_retries)):
                if error is not None:
                    raise error
                return status, content
            self._count_retry(reason)
            if attempt == 0 or attempt % 10 == 0:
                LOG.warning("Placement %s: %s; retrying (attempt %d, next in %.2fs)", call,
                            f"{type(error).__name__}: {error}" if error else
                            f"answered {reason}", attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,),
                   params: Any = None, json: Any = None, allow_404: bool = False) -> Any:
        """A request whose answer must be one of ``ok``: its JSON (None when
        empty); None for a 404 with ``allow_404``; else :class:`PlacementError`
        (:class:`Conflict` for 409)."""
        status, content = await self.send(method, path, params=params, json=json)
        if status in ok:
            return jsonlib.loads(content) if content and status != 204 else None
        if allow_404 and status == 404:
            return None
        cls = Conflict if status == 409 else PlacementError
        raise cls(status, _body(content), f"{method} {path}")

    async def retry_conflicts(self, write: Callable[[], Awaitable[Any]],
                              what: str, retries: int = 10) -> Any:
        """``write()``, again after each generation conflict (409
        ``placement.concurrent_update``): ``write`` reads the generation it
        sends, so its body is rebuilt each time.  The one place Kova retries
        a 409."""
        for _ in range(retries):
            try:
                return await write()
            except Conflict as exc:
                if exc.code not in (None, "placement.concurrent_update"):
                    raise
                self._count_retry("conflict")
        raise Conflict(409, "too many generation conflicts", what)

    async def generation(self, rp: str) -> int:
        """The provider's current generation."""
        provider = await self.get_provider(rp)
        if provider is None:
            raise PlacementError(404, f"resource provider {rp} not found", f"provider {rp}")
        return provider["generation"]

    # ---------------------------------------------------------------- reads
    async def allocation_candidates(self, params: Any) -> dict:
        return await self.call("GET", "/allocation_candidates", params=params)

    async def resource_providers(self, params: Any = None) -> list[dict]:
        body = await self.call("GET", "/resource_providers", params=params or [])
        return body["resource_providers"]

    async def get_provider(self, rp: str) -> dict | None:
        return await self.call("GET", f"/resource_providers/{rp}", allow_404=True)

    async def find_provider(self, name: str) -> dict | None:
        """The provider called ``name``, or None."""
        found = await self.resource_providers([("name", name)])
        return found[0] if found else None

    async def consumer_allocations(self, consumer: str) -> dict:
        """``{"allocations": {rp: {"resources": {}, "generation": g}},
        "consumer_generation": n, ...}``; allocations empty when none."""
        return await self.call("GET", f"/allocations/{consumer}")

    async def provider_allocations(self, rp: str) -> dict:
        body = await self.call("GET", f"/resource_providers/{rp}/allocations")
        return body["allocations"]

    async def existing_traits(self, trait_names: Iterable[str]) -> set[str]:
        """Which of ``trait_names`` Placement knows."""
        wanted = sorted(trait_names)
        if not wanted:
            return set()
        body = await self.call("GET", "/traits", params=[("name", "in:" + ",".join(wanted))])
        return set(body["traits"])

    async def usages(self, rp: str) -> dict[str, int]:
        body = await self.call("GET", f"/resource_providers/{rp}/usages")
        return body.get("usages") or {}

    async def get_inventories(self, rp: str) -> dict:
        return await self.call("GET", f"/resource_providers/{rp}/inventories")

    async def get_traits(self, rp: str) -> dict:
        """``{"traits": [...], "resource_provider_generation": g}``."""
        return await self.call("GET", f"/resource_providers/{rp}/traits")

    # ------------------------------------------------------------ providers
    async def create_provider(self, name: str, uuid: str | None = None,
                              parent: str | None = None) -> dict:
        data: dict[str, str] = {"name": name}
        if uuid:
            data["uuid"] = uuid
        if parent:
            data["parent_provider_uuid"] = parent
        return await self.call("POST", "/resource_providers", ok=(200, 201), json=data)

    async def ensure_provider(self, name: str, uuid: str | None = None,
                              parent: str | None = None) -> dict:
        """The provider called ``name``, created (with ``uuid``) if missing."""
        found = await self.find_provider(name)
        if found is not None:
            return found
        try:
            await self.create_provider(name, uuid or names.provider_uuid(name), parent)
        except Conflict:
            pass  # created meanwhile
        got = await self.find_provider(name) or (await self.get_provider(uuid) if uuid else None)
        if got is None:
            raise PlacementError(404, f"provider {name} vanished after its creation", name)
        return got

    async def delete_provider(self, rp: str) -> None:
        await self.call("DELETE", f"/resource_providers/{rp}", ok=(204,), allow_404=True)

    async def set_inventories(self, rp: str, inventories: dict) -> dict:
        """Replace the provider's inventories (nothing written when equal)."""
        current = (await self.get_inventories(rp)).get("inventories") or {}
        if _same_inventory(current, inventories):
            return {"inventories": current}

        async def write() -> dict:
            return await self.call("PUT", f"/resource_providers/{rp}/inventories", json={
                "resource_provider_generation": await self.generation(rp),
                "inventories": inventories})
        return await self.retry_conflicts(write, f"inventories of {rp}")

    async def ensure_resource_class(self, name: str) -> None:
        """Create the custom resource class ``name`` unless it exists."""
        await self.call("PUT", f"/resource_classes/{name}", ok=(201, 204))

    async def set_traits(self, rp: str, traits: Iterable[str],
                         keep: Iterable[str] = ()) -> list[str]:
        """Replace the provider's traits with ``traits`` (custom ones created
        first), keeping those of ``keep`` it has at the time of the write
        (traits other components own); recomputed after every conflict."""
        traits, keep = sorted(set(traits)), set(keep)
        for t in traits:
            if t.startswith("CUSTOM_"):
                await self.call("PUT", f"/traits/{t}", ok=(201, 204))
        wanted: list[str] = traits

        async def write() -> None:
            nonlocal wanted
            current = await self.get_traits(rp)
            have = current.get("traits") or []
            wanted = sorted(set(traits) | (set(have) & keep))
            if sorted(have) != wanted:
                await self.call("PUT", f"/resource_providers/{rp}/traits", json={
                    "resource_provider_generation": current["resource_provider_generation"],
                    "traits": wanted})
        await self.retry_conflicts(write, f"traits of {rp}")
        return wanted

    async def update_traits(self, rp: str, add: Iterable[str], remove: Iterable[str]) -> bool:
        """Add and remove traits; True if the provider's traits changed."""
        return await self._update_set(rp, "traits", set(add), set(remove))

    async def set_aggregates(self, rp: str, aggregates: Iterable[str]) -> dict:
        async def write() -> dict:
            return await self.call("PUT", f"/resource_providers/{rp}/aggregates", json={
                "aggregates": sorted(set(aggregates)),
                "resource_provider_generation": await self.generation(rp)})
        return await self.retry_conflicts(write, f"aggregates of {rp}")

    async def update_aggregates(self, rp: str, add: Iterable[str],
                                remove: Iterable[str]) -> bool:
        """Add and remove aggregates; True if the provider's changed."""
        return await self._update_set(rp, "aggregates", set(add), set(remove))

    async def _update_set(self, rp: str, what: str, add: set[str], remove: set[str]) -> bool:
        changed = False

        async def write() -> None:
            nonlocal changed
            body = await self.call("GET", f"/resource_providers/{rp}/{what}")
            current = set(body[what])
            wanted = (current | add) - remove
            changed = wanted != current
            if changed:
                await self.call("PUT", f"/resource_providers/{rp}/{what}", json={
                    what: sorted(wanted),
                    "resource_provider_generation": body["resource_provider_generation"]})
        await self.retry_conflicts(write, f"{what} of {rp}", retries=5)
        return changed

    # ---------------------------------------------------------- allocations
    async def claim(self, consumer: str, allocations: dict, project_id: str,
                    user_id: str = names.ALLOCATION_USER_ID, *,
                    consumer_generation: int | None = None,
                    consumer_type: str = names.CONSUMER_TYPE) -> None:
        """``PUT /allocations/{consumer}``; :class:`Conflict` on 409, never
        retried: the caller decides."""
        allocs = {rp: {"resources": a["resources"]} for rp, a in allocations.items()}
        await self.call("PUT", f"/allocations/{consumer}", ok=(204,), json={
            "allocations": allocs, "project_id": project_id, "user_id": user_id,
            "consumer_generation": consumer_generation, "consumer_type": consumer_type})

    async def claim_many(self, claims: dict[str, tuple[dict, str]]) -> None:
        """``POST /allocations``: first claims of several consumers (uid ->
        (allocations, project_id)) in one transaction -- all or none;
        :class:`Conflict` on 409 (also when a retried POST had committed: the
        caller then falls back to claims one by one, which adopt)."""
        body = {}
        for consumer, (allocations, project_id) in claims.items():
            body[consumer] = {
                "allocations": {rp: {"resources": a["resources"]}
                                for rp, a in allocations.items()},
                "project_id": project_id,
                "user_id": names.ALLOCATION_USER_ID,
                "consumer_generation": None,
                "consumer_type": names.CONSUMER_TYPE,
            }
        await self.call("POST", "/allocations", ok=(204,), json=body)

    async def move_allocations(self, consumers: dict[str, dict]) -> None:
        """``POST /allocations``: the allocations of several existing or new
        consumers replaced in one transaction -- all or none (Nova's
        ``move_allocations`` for a migration).  ``consumers`` maps a consumer
        to ``{"allocations": {rp: {"resources": ...}} (empty: none),
        "project_id", "consumer_generation", "consumer_type"}``;
        :class:`Conflict` on 409 (a generation moved, or no capacity)."""
        body = {}
        for consumer, c in consumers.items():
            body[consumer] = {
                "allocations": {rp: {"resources": a["resources"]}
                                for rp, a in (c.get("allocations") or {}).items()},
                "project_id": c["project_id"],
                "user_id": names.ALLOCATION_USER_ID,
                "consumer_generation": c.get("consumer_generation"),
                "consumer_type": c.get("consumer_type", names.CONSUMER_TYPE),
            }
        await self.call("POST", "/allocations", ok=(204,), json=body)

    async def delete_allocations(self, consumer: str) -> bool:
        """Delete a consumer's allocations; True if there were any."""
        status, content = await self.send("DELETE", f"/allocations/{consumer}")
        if status in (204, 404):
            return status == 204
        raise PlacementError(status, _body(content), f"DELETE /allocations/{consumer}")


class SyncPlacementClient:
    """:class:`PlacementClient` for threads: each method blocks until done."""

    def __init__(self, url: str, token: str | None = None, **kwargs: Any) -> None:
        self.loop = LoopThread("kova-placement")
        self.aio = PlacementClient(url, token, **kwargs)

    get_provider = blocking("get_provider")
    find_provider = blocking("find_provider")
    ensure_provider = blocking("ensure_provider")
    delete_provider = blocking("delete_provider")
    resource_providers = blocking("resource_providers")
    get_inventories = blocking("get_inventories")
    set_inventories = blocking("set_inventories")
    ensure_resource_class = blocking("ensure_resource_class")
    get_traits = blocking("get_traits")
    set_traits = blocking("set_traits")
    usages = blocking("usages")
    consumer_allocations = blocking("consumer_allocations")

    def close(self) -> None:
        self.loop.close(self.aio.close)
