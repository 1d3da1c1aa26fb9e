"""A thin async adapter over the Placement HTTP API (microversion 1.39), for
exactly the calls the operator makes.  Not a general client."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import httpx

# httpcore tries ``import sniffio`` on every request; when sniffio is not
# installed each failed import walks sys.path again (measured: ~30 ms of CPU
# per scheduled Instance).  A None entry in sys.modules makes that import fail
# at once, and httpcore then assumes asyncio, which is what runs here.
try:
    import sniffio  # noqa: F401
except ImportError:
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

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
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 max_connections: int = 20) -> None:
        headers = {
            "OpenStack-API-Version": f"placement {contract.PLACEMENT_MICROVERSION}",
            "Accept": "application/json",
        }
        if token:
            headers["X-Auth-Token"] = token
        self.url = url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, path: str, *, ok=(200,), params=None,
                    json: Any = None, allow_404: bool = False) -> Any:
        t0 = time.perf_counter()
        resp = await self.client.request(method, path, params=params, json=json)
        metrics.PLACEMENT_SECONDS.labels(call=f"{method} {_route(path)}").observe(
            time.perf_counter() - t0)
        if resp.status_code in ok:
            if resp.status_code == 204 or not resp.content:
                return None
            return resp.json()
        if allow_404 and resp.status_code == 404:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        cls = Conflict if resp.status_code == 409 else PlacementError
        raise cls(resp.status_code, body, f"{method} {path}")

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
        t0 = time.perf_counter()
        resp = await self.client.delete(f"/allocations/{consumer}")
        metrics.PLACEMENT_SECONDS.labels(call="DELETE /allocations/{uuid}").observe(
            time.perf_counter() - t0)
        if resp.status_code in (204, 404):
            return resp.status_code == 204
        raise PlacementError(resp.status_code, resp.text, f"DELETE /allocations/{consumer}")

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
