"""A thin async adapter over the Placement HTTP API (microversion 1.39), for
exactly the calls the operator makes.  Not a general client."""

from __future__ import annotations

import json as jsonlib
import logging
import re
import time
from typing import Any

import aiohttp

from kova.operator import contract, metrics

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


class Placement:
    """aiohttp, not httpx: per call the client side costs a tenth of the CPU
    (see :mod:`kova.operator.kube`)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 max_connections: int = 20) -> None:
        headers = {
            "OpenStack-API-Version": f"placement {contract.PLACEMENT_MICROVERSION}",
            "Accept": "application/json",
        }
        if token:
            headers["X-Auth-Token"] = token
        self.url = url.rstrip("/")
        self._headers = headers
        self._timeout = timeout
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._max_connections))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _send(self, method: str, path: str, params=None, json: Any = None,
                    ) -> tuple[int, bytes]:
        data = headers = None
        if json is not None:
            data = jsonlib.dumps(json)
            headers = {"Content-Type": "application/json"}
        t0 = time.perf_counter()
        async with self.session.request(method, self.url + path, params=params, data=data,
                                        headers=headers) as resp:
            status, content = resp.status, await resp.read()
        metrics.PLACEMENT_SECONDS.labels(call=f"{method} {_route(path)}").observe(
            time.perf_counter() - t0)
        return status, content

    async def _call(self, method: str, path: str, *, ok=(200,), params=None,
                    json: Any = None, allow_404: bool = False) -> Any:
        status, content = await self._send(method, path, params, json)
        if status in ok:
            if status == 204 or not content:
                return None
            return jsonlib.loads(content)
        if allow_404 and status == 404:
            return None
        try:
            body = jsonlib.loads(content)
        except ValueError:
            body = content.decode("utf-8", "replace")
        cls = Conflict if status == 409 else PlacementError
        raise cls(status, body, f"{method} {path}")

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
            "user_id": contract.ALLOCATION_USER_ID,
            "consumer_generation": consumer_generation,
            "consumer_type": contract.CONSUMER_TYPE,
        })

    async def claim_many(self, claims: dict[str, tuple[dict, str]]) -> None:
        """``POST /allocations``: first claims of several consumers (uid ->
        (allocations, project_id)) in one transaction -- all or none; raises
        :class:`Conflict` on 409."""
        body = {}
        for consumer, (allocations, project_id) in claims.items():
            body[consumer] = {
                "allocations": {rp: {"resources": a["resources"]}
                                for rp, a in allocations.items()},
                "project_id": project_id,
                "user_id": contract.ALLOCATION_USER_ID,
                "consumer_generation": None,
                "consumer_type": contract.CONSUMER_TYPE,
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
