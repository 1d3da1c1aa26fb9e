"""Removing things from the host: the agent's finalizer, a deleted Instance's
domain and disks, stale domains (an Instance gone, or placed on another host
while this one was away), and instance directories a crashed build left.

Nothing is removed on the word of the watch cache alone: a stale domain goes
only after a direct GET of the Instance confirms it is no longer placed here,
and only once the watch has synced.  Only domains whose Kova metadata names
this host are ever touched.
"""

from __future__ import annotations

import json
import logging

from kova import finalizers
from kova.agents.context import AgentContext, Key
from kova.agents.instance import decisions
from kova.agents.instance.report import Reporter
from kova.agents.virt.driver import DomainInfo
from kova.agents.virt.images import remove_tree
from kova.agents.watch import InstanceWatch
from kova.crds import names
from kova.crds import objects as ob
from kova.kube import instance_path

log = logging.getLogger("kova.agents.instance.teardown")


class Teardown:
    def __init__(self, ctx: AgentContext, watch: InstanceWatch, report: Reporter) -> None:
        self.ctx = ctx
        self.watch = watch
        self.report = report

    # ------------------------------------------------------------------
    # The finalizer: added before anything is created on the host, removed
    # once everything is gone.
    def add_finalizer(self, obj: dict) -> dict:
        kube = self.ctx.kube
        path = instance_path(*ob.key(obj))
        return kube.run(finalizers.add(kube.aio, path, obj, names.FINALIZER_AGENT))

    def remove_finalizer(self, obj: dict) -> None:
        kube = self.ctx.kube
        path = instance_path(*ob.key(obj))
        kube.run(finalizers.remove(kube.aio, path, obj, names.FINALIZER_AGENT))

    # ------------------------------------------------------------------
    def delete(self, obj: dict) -> None:
        """Instance ``obj`` is being deleted: its domain, disks and seed go,
        then the agent's finalizer."""
        if names.FINALIZER_AGENT not in ob.finalizers(obj):
            return
        log.info("%s/%s: deleting the domain and its disks", *ob.key(obj))
        self.remove(obj["metadata"]["uid"])
        self.remove_finalizer(obj)
        self.report.event(obj, "Normal", names.EVENT_DELETED,
                          f"domain, disks and seed removed from {self.ctx.host}")

    def remove(self, uid: str) -> None:
        """Destroy and undefine domain ``uid`` and remove its directory."""
        driver = self.ctx.driver
        self.ctx.memory.forget_domain(uid)
        if driver.lookup(uid) is not None:
            driver.destroy(uid)
            self.ctx.metrics.power_actions.labels("destroy").inc()
            driver.undefine(uid)
        remove_tree(self.ctx.files(uid).dir)
        self.watch.forget_uid(uid)

    # ------------------------------------------------------------------
    # Stale domains
    def live_instance(self, key: Key) -> dict | None:
        """The Instance as the API server has it now (not the cache); None if
        it is gone."""
        return self.ctx.kube.get_or_none(instance_path(*key))

    def still_ours(self, key: Key, uid: str) -> bool:
        """Ask the API server (not the cache) whether Instance uid is still
        placed on this host."""
        obj = self.live_instance(key)
        return (decisions.placed_here(obj, uid, self.ctx.host)
                or decisions.kept_for_move(obj, uid, self.ctx.host))

    def remove_stale(self, uid: str, key: Key) -> None:
        """Remove domain ``uid`` of Instance ``key`` unless the API server says
        the Instance is still placed here."""
        obj = self.live_instance(key)
        if (decisions.placed_here(obj, uid, self.ctx.host)
                or decisions.kept_for_move(obj, uid, self.ctx.host)):
            return
        info = self.ctx.driver.get(uid)
        running = info is not None and info.state.running
        log.warning("removing stale domain %s of %s/%s (%s): its Instance is gone or placed "
                    "on another host", uid, *key, "was running" if running else "not running")
        self.remove(uid)
        self.ctx.metrics.stale_domains.inc()
        if obj is not None and ob.uid(obj) == uid:
            self.report.event(obj, "Normal", names.EVENT_STALE_DOMAIN_REMOVED,
                              decisions.stale_removed_message(obj, self.ctx.host))

    def clean_up(self, key: Key) -> None:
        """Instance ``key`` is gone or no longer on this host: remove its domains."""
        if not self.watch.synced.is_set():
            return
        mine = self.mine(self.ctx.driver.list_domains())
        refs = [decisions.DomainRef(d.uuid, d.meta.namespace, d.meta.name)
                for d in mine if d.meta is not None]
        for uid in decisions.domains_of(refs, key):
            self.remove_stale(uid, key)

    def mine(self, domains: list[DomainInfo]) -> list[DomainInfo]:
        """The domains this agent created (their metadata names this host)."""
        return [d for d in domains if decisions.is_mine(d.meta, self.ctx.host)]

    # ------------------------------------------------------------------
    def sweep_dirs(self, domain_uids: set[str]) -> None:
        """Remove instance directories that belong to no domain and no
        Instance of this host (a build that crashed half-way)."""
        known = self.watch.uids()
        for path in self.ctx.instance_dir.iterdir():
            if not decisions.leftover_candidate(path.name, is_dir=path.is_dir(),
                                                known_uids=known, domain_uids=domain_uids):
                continue
            try:
                info = json.loads((path / "instance.json").read_text())
            except (OSError, ValueError):
                info = {}
            ns, name = info.get("namespace"), info.get("name")
            if ns and name and self.still_ours((ns, name), path.name):
                continue
            log.info("removing leftover instance directory %s", path)
            remove_tree(path)
