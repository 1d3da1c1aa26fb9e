"""One Instance's reconcile: read the Instance (watch cache) and its domain
(libvirt), ask :func:`~kova.agents.instance.decisions.next_step`, and call
the module that acts -- teardown, build, power, report.

Idempotent and safe to repeat after a crash at any line: the libvirt domain
(its UUID is the Instance uid) and the files under ``<instance-dir>/<uid>/``
are the only state on the host, and both are looked at afresh each time.
"""

from __future__ import annotations

import logging

from kova.agents.context import AgentContext, Key
from kova.agents.instance import decisions
from kova.agents.instance.build import Builder
from kova.agents.instance.decisions import BuildError, Step
from kova.agents.instance.live import LiveMigrator
from kova.agents.instance.migrate import Migrator
from kova.agents.instance.move import Mover
from kova.agents.instance.power import Power
from kova.agents.instance.report import Reporter
from kova.agents.instance.teardown import Teardown
from kova.agents.instance.userdata import UserData
from kova.agents.virt.driver import DomainInfo
from kova.agents.watch import InstanceWatch
from kova.crds import objects as ob

log = logging.getLogger("kova.agents.instance.reconciler")


class Reconciler:
    def __init__(self, ctx: AgentContext, watch: InstanceWatch, report: Reporter,
                 teardown: Teardown, userdata: UserData, builder: Builder,
                 power: Power, mover: Mover | None = None) -> None:
        self.ctx = ctx
        self.watch = watch
        self.report = report
        self.teardown = teardown
        self.userdata = userdata
        self.builder = builder
        self.power = power
        self.mover = mover or Mover(ctx, report, builder)
        self.migrator = Migrator(ctx, report, builder, self.mover, teardown, userdata)
        self.live = LiveMigrator(ctx, report, userdata, self.migrator.client_tls)

    def reconcile(self, key: Key) -> None:
        obj = self.watch.get(key)
        info = self._domain(obj)
        step = decisions.next_step(obj, self.ctx.host, info is not None)
        if step is Step.CLEAN_UP:
            self.userdata.forget(key)
            self.teardown.clean_up(key)
        elif step is Step.DELETE:
            assert obj is not None
            self.userdata.forget(key)
            self.teardown.delete(obj)
        elif step is Step.REMOVE_STALE:
            assert obj is not None
            self.teardown.remove_stale(obj["metadata"]["uid"], key)
        elif step is Step.WAIT:
            log.debug("%s/%s: labelled for %s but status.host is %r; waiting",
                      *key, self.ctx.host, ob.placed_host(obj or {}))
        elif step is Step.BUILD:
            assert obj is not None
            self._build(obj)
        elif step is Step.POWER:
            assert obj is not None and info is not None
            self.mover.tidy(obj)
            self._power(obj, info, just_built=False)
        elif step is Step.MOVE:
            assert obj is not None and info is not None
            self.mover.move(obj, info)
        elif step is Step.REVERT:
            assert obj is not None and info is not None
            self.mover.revert(obj, info)
        elif step is Step.SEND:
            assert obj is not None
            self.migrator.send(obj, info)
        elif step is Step.FINISH:
            assert obj is not None
            self.migrator.finish(obj, info)
        elif step is Step.DROP:
            assert obj is not None
            self.migrator.drop(obj, info)
        elif step is Step.RESTORE:
            assert obj is not None
            self.migrator.restore(obj, info)
        elif step is Step.PREPARE_LIVE:
            assert obj is not None
            self.live.prepare(obj, info)
        elif step is Step.LIVE_MIGRATE:
            assert obj is not None
            self.live.migrate(obj, info)
        # Step.LEAVE_FAILED: the operator reschedules (and resets Built)

    def _domain(self, obj: dict | None) -> DomainInfo | None:
        """The Instance's domain, read only when a step depends on it."""
        if obj is None or ob.deleting(obj):
            return None
        return self.ctx.driver.get(obj["metadata"]["uid"])

    def _build(self, obj: dict) -> None:
        if not self.userdata.ready(obj):
            return
        try:
            info = self.builder.build(obj)  # as defined: shut off, with our metadata
        except BuildError as exc:
            self.builder.failed(obj, exc)
            return
        self._power(obj, info, just_built=True)

    def _power(self, obj: dict, info: DomainInfo, *, just_built: bool) -> None:
        meta = info.meta
        first = decisions.first_start(
            obj, just_built=just_built, strategy=ob.run_strategy(obj),
            recorded_strategy=meta.run_strategy if meta is not None else "")
        done = self.power.apply(obj, info, first)
        self.report.observed(obj, done.state, applied=done.meta.applied_spec)
        self.report.events(obj, done.notices)
