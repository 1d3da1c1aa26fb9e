"""A small synchronous Placement client for the agent's registration.

The agent is thread based (libvirt calls block), so it speaks to Placement
with a plain ``httpx.Client``; ``kova.placement.client`` is the async client
the operator uses.  Only what registration needs: find or create the host's
resource provider, set its inventory and traits (retrying on generation
conflicts) and read its usages.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid as uuidlib
from typing import Any

import httpx

from kova.crds import names

log = logging.getLogger("kova.agents.placement")

#: uuid5 namespace of host resource providers: a provider created before a
#: crash is found again under the same uuid.
PROVIDER_NAMESPACE = uuidlib.UUID("3d5f0f7e-4a8e-5c39-9f54-6b6f76612d61")


def provider_uuid(host: str) -> str:
    return str(uuidlib.uuid5(PROVIDER_NAMESPACE, f"host:{host}"))


class PlacementError(Exception):
    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Placement:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 15.0,
                 microversion: str | None = None, ca_file: str | None = None) -> None:
        headers = {
            "OpenStack-API-Version": f"placement {microversion or names.PLACEMENT_MICROVERSION}",
            "Accept": "application/json",
        }
        if token:
            headers["X-Auth-Token"] = token
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout,
                                 verify=verify)

    def close(self) -> None:
        self.http.close()

    def _req(self, method: str, path: str, *, json: Any = None, ok=(200, 201, 204)) -> httpx.Response:
        for attempt in range(5):
            try:
                resp = self.http.request(method, path, json=json)
            except httpx.TransportError as exc:
                if attempt == 4:
                    raise PlacementError(f"{method} {path}: {exc}") from exc
                time.sleep(0.2 * 2**attempt)
                continue
            if resp.status_code in ok:
                return resp
            if resp.status_code >= 500 and attempt < 4:
                time.sleep(0.2 * 2**attempt)
                continue
            code = ""
            try:
                errs = resp.json().get("errors") or []
                code = errs[0].get("code", "") if errs else ""
                detail = errs[0].get("detail", "") if errs else resp.text
            except ValueError:
                detail = resp.text
            raise PlacementError(f"{method} {path}: {resp.status_code} {detail}",
                                 resp.status_code, code)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------
    def get_provider(self, rp_uuid: str) -> dict | None:
        try:
            return self._req("GET", f"/resource_providers/{rp_uuid}").json()
        except PlacementError as exc:
            if exc.status == 404:
                return None
            raise

    def find_provider(self, name: str) -> dict | None:
        resp = self.http.get("/resource_providers", params={"name": name})
        if resp.status_code != 200:
            raise PlacementError(f"GET /resource_providers?name={name}: {resp.status_code}",
                                 resp.status_code)
        rps = resp.json().get("resource_providers") or []
        return rps[0] if rps else None

    def ensure_provider(self, name: str, rp_uuid: str | None = None) -> dict:
        """The provider called ``name``, created (with ``rp_uuid``) if missing."""
        found = self.find_provider(name)
        if found is not None:
            return found
        rp_uuid = rp_uuid or provider_uuid(name)
        try:
            self._req("POST", "/resource_providers", json={"name": name, "uuid": rp_uuid})
        except PlacementError as exc:
            if exc.status != 409:
                raise
        got = self.find_provider(name) or self.get_provider(rp_uuid)
        if got is None:
            raise PlacementError(f"provider {name} vanished after creation")
        return got

    def _with_generation(self, rp_uuid: str, fn) -> dict:
        for _ in range(10):
            rp = self.get_provider(rp_uuid)
            if rp is None:
                raise PlacementError(f"provider {rp_uuid} not found", 404)
            try:
                return fn(rp["generation"])
            except PlacementError as exc:
                if exc.status == 409:
                    continue
                raise
        raise PlacementError(f"provider {rp_uuid}: too many generation conflicts", 409)

    def get_inventories(self, rp_uuid: str) -> dict:
        return self._req("GET", f"/resource_providers/{rp_uuid}/inventories").json()

    def set_inventories(self, rp_uuid: str, inventories: dict) -> dict:
        current = self.get_inventories(rp_uuid).get("inventories") or {}
        if _same_inventory(current, inventories):
            return {"inventories": current}
        return self._with_generation(rp_uuid, lambda gen: self._req(
            "PUT", f"/resource_providers/{rp_uuid}/inventories",
            json={"resource_provider_generation": gen, "inventories": inventories},
        ).json())

    def get_traits(self, rp_uuid: str) -> list[str]:
        return self._req("GET", f"/resource_providers/{rp_uuid}/traits").json().get("traits") or []

    def set_traits(self, rp_uuid: str, traits: list[str], keep: tuple[str, ...] = ()) -> list[str]:
        """Replace the provider's traits with ``traits``, keeping those of
        ``keep`` that it has at the time of the write (traits other components
        own); recomputed on every generation conflict."""
        for t in traits:
            if t.startswith("CUSTOM_"):
                self._req("PUT", f"/traits/{t}", ok=(201, 204))
        for _ in range(10):
            cur = self._req("GET", f"/resource_providers/{rp_uuid}/traits").json()
            have = cur.get("traits") or []
            wanted = sorted(set(traits) | {t for t in have if t in keep})
            if sorted(have) == wanted:
                return wanted
            try:
                self._req("PUT", f"/resource_providers/{rp_uuid}/traits", json={
                    "resource_provider_generation": cur["resource_provider_generation"],
                    "traits": wanted,
                })
                return wanted
            except PlacementError as exc:
                if exc.status != 409:
                    raise
        raise PlacementError(f"provider {rp_uuid}: too many generation conflicts", 409)

    def usages(self, rp_uuid: str) -> dict[str, int]:
        return self._req("GET", f"/resource_providers/{rp_uuid}/usages").json().get("usages") or {}


def _same_inventory(current: dict, wanted: dict) -> bool:
    if set(current) != set(wanted):
        return False
    for rc, inv in wanted.items():
        cur = current[rc]
        for k, v in inv.items():
            if k in cur and (float(cur[k]) != float(v)):
                return False
    return True
