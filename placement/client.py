"""A small async client for the Placement API (used by the operator and agent).

Retries ``409 placement.concurrent_update`` answers on writes whose body the
caller can rebuild (pass a callable), and connection errors, timeouts and
answers 502/503/504 (Placement restarting, or its database) on every call,
with exponential backoff and jitter (``backoff`` doubling up to
``backoff_max``, ``retries`` times).  Retrying a write is safe because every
Placement write carries a generation: one that did commit before its answer
was lost comes back as a 409.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable

import httpx

DEFAULT_VERSION = "1.39"
#: Placement restarting (behind a proxy), or its database unavailable.
RETRY_STATUSES = (502, 503, 504)


class PlacementError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        try:
            err = response.json()["errors"][0]
        except Exception:  # noqa: BLE001 - not a Placement error body
            err = {}
        self.code = err.get("code")
        self.detail = err.get("detail", response.text)
        super().__init__(f"{self.status} {self.code}: {self.detail}")


class PlacementClient:
    def __init__(self, base_url: str, token: str | None = None, *,
                 version: str = DEFAULT_VERSION, retries: int = 10, backoff: float = 0.05,
                 backoff_max: float = 3.0, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        headers = {"openstack-api-version": f"placement {version}", "accept": "application/json"}
        if token:
            headers["x-auth-token"] = token
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        #: Retries made so far, by reason ("connection", "503", "conflict").
        self.retried: dict[str, int] = {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                       timeout=timeout, transport=transport)

    async def __aenter__(self) -> "PlacementClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _sleep(self, attempt: int, reason: str) -> None:
        self.retried[reason] = self.retried.get(reason, 0) + 1
        delay = min(self.backoff_max, self.backoff * (2 ** attempt))
        await asyncio.sleep(delay * (0.5 + random.random()))

    async def request(self, method: str, url: str, *, json: Any = None,
                      body: Callable[[], Awaitable[Any]] | None = None,
                      params: Any = None, ok: tuple[int, ...] = (200, 201, 204),
                      retry_conflicts: bool = False) -> httpx.Response:
        """Send a request; ``body`` (async callable) rebuilds the JSON per attempt."""
        for attempt in range(self.retries + 1):
            payload = await body() if body is not None else json
            try:
                resp = await self._http.request(method, url, json=payload, params=params)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
                await self._sleep(attempt, "connection")
                continue
            if resp.status_code in ok:
                return resp
            if resp.status_code in RETRY_STATUSES and attempt < self.retries:
                await self._sleep(attempt, str(resp.status_code))
                continue
            if (resp.status_code == 409 and (retry_conflicts or body is not None)
                    and attempt < self.retries):
                err = PlacementError(resp)
                if err.code == "placement.concurrent_update":
                    await self._sleep(attempt, "conflict")
                    continue
            raise PlacementError(resp)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- providers
    async def get_provider(self, uuid: str) -> dict | None:
        try:
            return (await self.request("GET", f"/resource_providers/{uuid}")).json()
        except PlacementError as exc:
            if exc.status == 404:
                return None
            raise

    async def create_provider(self, name: str, uuid: str | None = None,
                              parent: str | None = None) -> dict:
        data: dict = {"name": name}
        if uuid:
            data["uuid"] = uuid
        if parent:
            data["parent_provider_uuid"] = parent
        return (await self.request("POST", "/resource_providers", json=data)).json()

    async def ensure_provider(self, name: str, uuid: str, parent: str | None = None) -> dict:
        found = await self.get_provider(uuid)
        if found is not None:
            return found
        try:
            return await self.create_provider(name, uuid, parent)
        except PlacementError as exc:
            if exc.status == 409:
                found = await self.get_provider(uuid)
                if found is not None:
                    return found
            raise

    async def delete_provider(self, uuid: str) -> None:
        try:
            await self.request("DELETE", f"/resource_providers/{uuid}")
        except PlacementError as exc:
            if exc.status != 404:
                raise

    async def set_inventories(self, uuid: str, inventories: dict) -> dict:
        async def body():
            gen = (await self.request("GET", f"/resource_providers/{uuid}")).json()["generation"]
            return {"resource_provider_generation": gen, "inventories": inventories}
        return (await self.request("PUT", f"/resource_providers/{uuid}/inventories",
                                   body=body)).json()

    async def set_traits(self, uuid: str, traits: list[str]) -> dict:
        for name in traits:
            if name.startswith("CUSTOM_"):
                await self.request("PUT", f"/traits/{name}")

        async def body():
            gen = (await self.request("GET", f"/resource_providers/{uuid}")).json()["generation"]
            return {"resource_provider_generation": gen, "traits": traits}
        return (await self.request("PUT", f"/resource_providers/{uuid}/traits",
                                   body=body)).json()

    async def set_aggregates(self, uuid: str, aggregates: list[str]) -> dict:
        async def body():
            gen = (await self.request("GET", f"/resource_providers/{uuid}")).json()["generation"]
            return {"resource_provider_generation": gen, "aggregates": aggregates}
        return (await self.request("PUT", f"/resource_providers/{uuid}/aggregates",
                                   body=body)).json()

    async def usages(self, uuid: str) -> dict:
        return (await self.request("GET", f"/resource_providers/{uuid}/usages")).json()["usages"]

    # ---------------------------------------------------------------- scheduling
    async def allocation_candidates(self, params: dict | list) -> dict:
        return (await self.request("GET", "/allocation_candidates", params=params)).json()

    async def get_allocations(self, consumer: str) -> dict:
        return (await self.request("GET", f"/allocations/{consumer}")).json()

    async def claim(self, consumer: str, allocations: dict, project_id: str, user_id: str,
                    consumer_generation: int | None = None,
                    consumer_type: str = "INSTANCE") -> None:
        """PUT /allocations/{consumer}; a 409 is raised, never retried: the
        caller decides (another candidate, or re-read the consumer)."""
        await self.request("PUT", f"/allocations/{consumer}", json={
            "allocations": allocations, "project_id": project_id, "user_id": user_id,
            "consumer_generation": consumer_generation, "consumer_type": consumer_type})

    async def delete_allocations(self, consumer: str) -> bool:
        try:
            await self.request("DELETE", f"/allocations/{consumer}")
            return True
        except PlacementError as exc:
            if exc.status == 404:
                return False
            raise
