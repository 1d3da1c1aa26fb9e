"""Hosts: keep each Host's resource provider in step with ``Host.spec``
(Nova's ``COMPUTE_STATUS_DISABLED`` trait for a disabled, maintained,
draining or fenced host; the availability zone as a Placement aggregate), and react to
Host and Node changes.  The provider itself (inventory, traits of the
hardware) is the agent's."""

from __future__ import annotations

import asyncio
import logging
import time

from kova.conditions import get_condition, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import host_path
from kova.operator.context import Context
from kova.placement_client import PlacementError

LOG = logging.getLogger("kova.operator")


def provider_state(body: dict, fenced: bool) -> tuple[bool, str | None]:
    """(disabled, zone) the Host's provider should have."""
    spec = ob.spec(body)
    disabled = (not spec.get("enabled", True)
                or bool(spec.get("drain"))
                or bool((spec.get("maintenance") or {}).get("enabled"))
                or fenced)
    return disabled, spec.get("availabilityZone")


class ProviderPrefetch:
    """Every provider, and which carry the disabled trait, read in two
    requests when a term starts -- when every Host is synced at once -- so
    that 10 000 hosts cost Placement two reads instead of 20 000 (one
    provider and one trait read per host).  Each host uses the prefetched
    facts once, within ``ttl`` seconds of the read; a retry, a later change
    or a provider the read did not see reads Placement itself."""

    def __init__(self, ctx: Context, ttl: float = 30.0) -> None:
        self.ctx = ctx
        self.ttl = ttl
        self._task: asyncio.Task | None = None
        self._at = 0.0
        self._used: set[str] = set()
        self._expired = False

    def reset(self) -> None:
        self._task, self._used, self._expired = None, set(), False

    async def _read(self) -> tuple[dict[str, dict], set[str]]:
        placement = self.ctx.placement
        providers = await placement.resource_providers()
        disabled = await placement.resource_providers([("required", names.TRAIT_DISABLED)])
        self._at = time.monotonic()
        # let the listing go after its time (~30 MiB at 10 000 hosts)
        asyncio.get_running_loop().call_later(self.ttl, self._expire)
        return {p["uuid"]: p for p in providers}, {p["uuid"] for p in disabled}

    def _expire(self) -> None:
        self._task, self._used, self._expired = None, set(), True

    async def take(self, name: str) -> tuple[dict[str, dict], set[str]] | None:
        """(providers by uuid, uuids of the disabled ones) for host ``name``'s
        first sync of the term; None to read Placement per provider."""
        if name in self._used or self._expired:
            return None
        if self._task is None:
            self._task = asyncio.create_task(self._read())
        try:
            facts = await asyncio.shield(self._task)
        except Exception as exc:  # noqa: BLE001 -- any failure: read one by one
            # A failed read is not kept: every host of this term reads its
            # own provider (and meets Placement's error, if it lasts, there).
            self._expired = True
            self._task = None
            LOG.info("providers not prefetched (%s: %s); reading them one by one",
                     type(exc).__name__, exc)
            return None
        if time.monotonic() - self._at > self.ttl:
            self._expire()
            return None
        self._used.add(name)
        return facts


class HostController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: Host name -> (provider, disabled, zone) last written to Placement.
        self.synced: dict[str, tuple] = {}
        self.prefetch = ProviderPrefetch(ctx)

    def new_term(self) -> None:
        """Another replica may have changed the providers meanwhile."""
        self.synced.clear()
        self.prefetch.reset()

    # ------------------------------------------------------------ events
    def host_changed(self, name: str, body: dict, deleted: bool) -> None:
        ctx = self.ctx
        if deleted:
            ctx.hosts.forget(name)
            ctx.failures.forget(name)
            self.synced.pop(name, None)
            ctx.ledger.forget_key(("host", name))
            return
        changed, fencing_flipped = ctx.hosts.spec_changed(name, body)
        if changed:
            ctx.enqueue(("host", name))
            ctx.retrigger_pending()
            if fencing_flipped:
                ctx.enqueue_host_instances(name)

    def node_changed(self, name: str, body: dict, deleted: bool) -> None:
        ctx = self.ctx
        if not ctx.hosts.node_changed(name, body, deleted):
            return
        LOG.info("node %s: %s taint %s", name, names.TAINT_OUT_OF_SERVICE,
                 "added" if ctx.hosts.node_oos.get(name) else "removed")
        ctx.enqueue(("host", name))
        if ctx.informer.host(name) is not None:
            ctx.enqueue(("hstate", name))  # the Fenced condition
        ctx.enqueue_host_instances(name)
        ctx.retrigger_pending()

    # ------------------------------------------------------------ reconcile
    async def reconcile(self, name: str) -> None:
        """Keep the provider's disabled trait and zone aggregate in step with
        Host.spec."""
        body = self.ctx.informer.host(name)
        if body is None:
            return
        rp = ob.status(body).get("resourceProviderUUID")
        if not rp:
            return
        facts = None
        if name not in self.synced and self.ctx.hosts.verified.get(name) != rp:
            facts = await self.prefetch.take(name)
        known = facts[0].get(rp) if facts else None
        if not await self.verify_provider(name, body, rp, known) or not self.ctx.leader:
            return  # replicas sharing Instances verify; the leader alone writes
        disabled, zone = provider_state(body, self.ctx.hosts.fence_reason(name, body) is not None)
        sig = (rp, disabled, zone)
        if self.synced.get(name) == sig:
            return
        # The prefetched trait is the provider's as of the term's start,
        # before any write of this term to it (this is its first sync).
        has_trait = (rp in facts[1]) if facts and known is not None else None
        try:
            await self._sync(name, body, rp, disabled, zone, has_trait)
        except PlacementError as exc:
            if exc.status == 404:
                LOG.warning("host %s: resource provider %s not found in Placement", name, rp)
                return
            raise
        self.synced[name] = sig
        LOG.info("host %s: provider %s disabled=%s zone=%s", name, rp, disabled, zone)

    async def verify_provider(self, name: str, body: dict, rp: str,
                              provider: dict | None = None) -> bool:
        """Is ``rp`` (written by the Host's agent) host ``name``'s own
        provider?  Placement must hold it as a root provider named after the
        Host -- which, with per-agent identities, only that host's agent or
        an administrator can register.  A Host naming another host's
        provider gets none (the scheduler does not see it, its disabled
        trait and zone are not written to that provider), a Warning Event
        and ``ProviderVerified=False``; a missing provider is retried."""
        view = self.ctx.hosts
        if view.verified.get(name) == rp:
            return True
        if provider is None:  # not prefetched
            provider = await self.ctx.placement.get_provider(rp)
        if provider is None:
            raise PlacementError(404, f"resource provider {rp} of host {name} is not in "
                                      "Placement (yet)", f"host {name}")
        owned = provider.get("name") == name and not provider.get("parent_provider_uuid")
        view.provider_checked(name, rp, owned)
        cond = get_condition(body, names.HOST_COND_PROVIDER)
        if owned:
            if self.ctx.leader and cond is not None and cond.get("status") != "True":
                await self._provider_condition(body, "True", names.HOST_REASON_PROVIDER_OWNED,
                                               f"resource provider {rp} is this host's own")
            self.ctx.retrigger_pending()
            return True
        message = (f"status.resourceProviderUUID {rp} is not this host's resource provider: "
                   f"Placement holds it as {provider.get('name')!r}"
                   + (" (a child provider)" if provider.get("parent_provider_uuid") else "")
                   + "; the host gets no Instances until its agent registers its own")
        LOG.warning("host %s: %s", name, message)
        if self.ctx.leader and (cond is None or cond.get("status") != "False"
                                or cond.get("message") != message):
            await self._provider_condition(body, "False", names.HOST_REASON_PROVIDER_NOT_OWNED,
                                           message)
            self.ctx.emit(body, "Warning", names.HOST_REASON_PROVIDER_NOT_OWNED, message)
        return False

    async def _provider_condition(self, body: dict, status: str, reason: str,
                                  message: str) -> None:
        name = body["metadata"]["name"]

        def change(cur: dict) -> dict:
            return {"status": {"conditions": set_condition(
                ob.status(cur).get("conditions"), names.HOST_COND_PROVIDER, status, reason,
                message)}}

        # a PUT of the cached Host's status, guarded by its resourceVersion
        # (cheaper for the API server than a merge patch); a conflict reads
        # the Host again and sets the condition on what it holds then
        await self.ctx.kube.update_status(host_path(name), body, change)

    async def _sync(self, name: str, body: dict, rp: str, disabled: bool,
                    zone: str | None, has_trait: bool | None = None) -> None:
        """``has_trait``: whether the provider carries the disabled trait, if
        known from the prefetch (None: read it)."""
        placement = self.ctx.placement
        if has_trait is not None and has_trait == disabled:
            pass  # already as wanted
        elif disabled:
            await placement.update_traits(rp, {names.TRAIT_DISABLED}, set())
        else:
            await placement.update_traits(rp, set(), {names.TRAIT_DISABLED})
        applied = ob.annotations_of(body).get(names.ANNOTATION_APPLIED_ZONE)
        add = {names.az_aggregate_uuid(zone)} if zone else set()
        remove = {names.az_aggregate_uuid(applied)} if applied and applied != zone else set()
        if add or remove:
            # A host in no zone, never in one: nothing to read or write (a
            # start with 10 000 such hosts saves 10 000 reads of Placement).
            await placement.update_aggregates(rp, add, remove)
        if applied != zone:
            await self.ctx.kube.merge_patch(host_path(name), {"metadata": {"annotations": {
                names.ANNOTATION_APPLIED_ZONE: zone}}})
