"""A thin async adapter over the Placement HTTP API (microversion 1.39), for
exactly the calls the operator makes.  Not a general client.

Every call rides out a Placement or database restart: a connection error, a
timeout, or an answer 502/503/504 (Placement answers 503 while its database
is unreachable) is retried with exponential back-off and jitter, for up to
``retry_for`` seconds, before the error reaches the reconcile (which then
retries the whole Instance with its own back-off).  Retrying a claim is
safe: ``PUT /allocations/{uid}`` carries the consumer generation, so a claim
that did commit before its answer was lost comes back as a 409, and the
scheduler adopts the allocation it finds (see scheduler.Scheduler.claim).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
import random
import re
import ssl
import time
from typing import Any

import aiohttp

from kova.crds import names
from kova.operator import metrics
from kova.operator.kube import LazySession, error_body

LOG = logging.getLogger("kova.operator.placement")


_UUID = re.compile(r"[0-9a-fA-F-]{36}")


def _route(path: str) -> str:
    return _UUID.sub("{uuid}", path)


class PlacementError(Exception):
    def __init__(self, status: int, body: Any, what: str = "") -> None:
        self.status = status
        self.body = body
        self.code = None
        if isinstance(body, dict):
            errs = body.get("errors") or []
            if errs:
                self.code = errs[0].get("code")
        super().__init__(f"{what}: Placement answered {status}: {body}")

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict) and self.body.get("errors"):
            return "; ".join(str(e.get("detail", "")) for e in self.body["errors"])
        return str(self.body)


class Conflict(PlacementError):
    """409: a concurrent update (generation) or not enough capacity."""


#: Answers that mean "not now": a proxy without a backend, or Placement
#: without its database.
RETRY_STATUSES = (502, 503, 504)
RETRY_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


class Placement(LazySession):
    """aiohttp, not httpx: per call the client side costs a tenth of the CPU
    (see :mod:`kova.operator.kube`)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 max_connections: int = 20, ca_file: str | None = None,
                 retry_for: float = 30.0, backoff: float = 0.1,
                 backoff_max: float = 2.0) -> None:
        self.retry_for = retry_for
        self.backoff = backoff
        self.backoff_max = backoff_max
        headers = {
            "OpenStack-API-Version": f"placement {names.PLACEMENT_MICROVERSION}",
            "Accept": "application/json",
        }
        if token:
            headers["X-Auth-Token"] = token
        self.url = url.rstrip("/")
        super().__init__(headers, timeout=timeout, max_connections=max_connections,
                         ssl_context=ssl.create_default_context(cafile=ca_file) if ca_file else None)

    async def _send(self, method: str, path: str, *, params=None,
                    json: Any = None) -> tuple[int, bytes]:
        """One request, retried with back-off on connection errors and
        502/503/504 for up to ``retry_for`` seconds."""
        deadline = time.monotonic() + self.retry_for
        attempt = 0
        call = f"{method} {_route(path)}"
        while True:
            t0 = time.perf_counter()
            try:
                resp = await self.send(method, self.url + path, params=params, json=json)
            except aiohttp.ClientConnectorCertificateError:
                raise  # an untrusted certificate stays untrusted
            except RETRY_ERRORS as exc:
                reason, error = "connection", exc
            else:
                metrics.PLACEMENT_SECONDS.labels(call=call).observe(time.perf_counter() - t0)
                if resp[0] not in RETRY_STATUSES:
                    return resp
                reason, error = str(resp[0]), None
            delay = min(self.backoff_max, self.backoff * (2 ** attempt))
            delay *= 0.5 + random.random()
            if time.monotonic() + delay > deadline:
                if error is not None:
                    raise error
                return resp
            metrics.PLACEMENT_RETRIES.labels(reason=reason).inc()
            if attempt == 0 or attempt % 10 == 0:
                LOG.warning("Placement %s: %s; retrying (attempt %d, next in %.2fs)", call,
                            f"{type(error).__name__}: {error}" if error else
                            f"answered {reason}", attempt + 1, delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _call(self, method: str, path: str, *, ok=(200,), params=None,
                    json: Any = None, allow_404: bool = False) -> Any:
        status, content = await self._send(method, path, params=params, json=json)
        if status in ok:
            if status == 204 or not content:
                return None
            return jsonlib.loads(content)
        if allow_404 and status == 404:
            return None
        cls = Conflict if status == 409 else PlacementError
        raise cls(status, error_body(content), f"{method} {path}")

    # ---------------------------------------------------------------- reads
    async def allocation_candidates(self, params: list[tuple[str, str]]) -> dict:
        return await self._call("GET", "/allocation_candidates", params=params)

    async def resource_providers(self, params: list[tuple[str, str]] | None = None) -> list[dict]:
        body = await self._call("GET", "/resource_providers", params=params or [])
        return body["resource_providers"]

    async def provider(self, uuid: str) -> dict | None:
        return await self._call("GET", f"/resource_providers/{uuid}", allow_404=True)

    async def consumer_allocations(self, consumer: str) -> dict:
        """``{"allocations": {rp: {"resources": {}, "generation": g}},
        "consumer_generation": n, ...}``; allocations empty when none."""
        return await self._call("GET", f"/allocations/{consumer}")

    async def provider_allocations(self, rp: str) -> dict:
        body = await self._call("GET", f"/resource_providers/{rp}/allocations")
        return body["allocations"]

    async def existing_traits(self, names: list[str]) -> set[str]:
        if not names:
            return set()
        body = await self._call("GET", "/traits", params=[("name", "in:" + ",".join(names))])
        return set(body["traits"])

    # --------------------------------------------------------------- writes
    async def claim(self, consumer: str, allocations: dict, *, project_id: str,
                    consumer_generation: int | None) -> None:
        """``PUT /allocations/{consumer}``; raises :class:`Conflict` on 409."""
        allocs = {rp: {"resources": a["resources"]} for rp, a in allocations.items()}
        await self._call("PUT", f"/allocations/{consumer}", ok=(204,), json={
            "allocations": allocs,
            "project_id": project_id,
            "user_id": names.ALLOCATION_USER_ID,
            "consumer_generation": consumer_generation,
            "consumer_type": names.CONSUMER_TYPE,
        })

    async def claim_many(self, claims: dict[str, tuple[dict, str]]) -> None:
        """``POST /allocations``: first claims of several consumers (uid ->
        (allocations, project_id)) in one transaction -- all or none; raises
        :class:`Conflict` on 409 (also when a retried POST had committed:
        the batch then falls back to claims one by one, which adopt)."""
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
        await self._call("POST", "/allocations", ok=(204,), json=body)

    async def delete_allocations(self, consumer: str) -> bool:
        """True if there were allocations."""
        status, content = await self._send("DELETE", f"/allocations/{consumer}")
        if status in (204, 404):
            return status == 204
        raise PlacementError(status, content.decode("utf-8", "replace"),
                             f"DELETE /allocations/{consumer}")

    async def update_traits(self, rp: str, add: set[str], remove: set[str],
                            retries: int = 5) -> bool:
        """Add/remove traits on a provider with its generation; True if changed."""
        for _ in range(retries):
            body = await self._call("GET", f"/resource_providers/{rp}/traits")
            current = set(body["traits"])
            wanted = (current | add) - remove
            if wanted == current:
                return False
            try:
                await self._call("PUT", f"/resource_providers/{rp}/traits", json={
                    "traits": sorted(wanted),
                    "resource_provider_generation": body["resource_provider_generation"],
                })
                return True
            except Conflict:
                continue
        raise PlacementError(409, "generation conflicts", f"traits of {rp}")

    async def update_aggregates(self, rp: str, add: set[str], remove: set[str],
                                retries: int = 5) -> bool:
        for _ in range(retries):
            body = await self._call("GET", f"/resource_providers/{rp}/aggregates")
            current = set(body["aggregates"])
            wanted = (current | add) - remove
            if wanted == current:
                return False
            try:
                await self._call("PUT", f"/resource_providers/{rp}/aggregates", json={
                    "aggregates": sorted(wanted),
                    "resource_provider_generation": body["resource_provider_generation"],
                })
                return True
            except Conflict:
                continue
        raise PlacementError(409, "generation conflicts", f"aggregates of {rp}")
