"""One Instance's reconcile: read the Instance (watch cache) and its domain
(libvirt), ask :func:`~kova.agents.instance.decisions.next_step`, and call
the module that acts -- teardown, build, power, report.

Idempotent and safe to repeat after a crash at any line: the libvirt domain
(its UUID is the Instance uid) and the files under ``<instance-dir>/<uid>/``
are the only state on the host, and both are looked at afresh each time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
        self.live = LiveMigrator(ctx, report, userdata, self.migrator.client_tls,
                                 builder)

    def reconcile(self, key: Key) -> None:
        obj = self.watch.get(key)
        info = self._domain(obj)
        step = decisions.next_step(obj, self.ctx.host, info is not None)
        if step is Step.CLEAN_UP:
            self.userdata.forget(key)
            self.teardown.clean_up(key)
        elif step is Step.WAIT:
            log.debug("%s/%s: labelled for %s but status.host is %r; waiting",
                      *key, self.ctx.host, ob.placed_host(obj or {}))
        elif step is not Step.LEAVE_FAILED:  # that one: the operator reschedules
            assert obj is not None
            self._handlers[step](obj, info)

    @property
    def _handlers(self) -> dict[Step, Callable[[dict, DomainInfo | None], None]]:
        """The step -> what acts, for the steps of an Instance this host
        holds (its domain, ``info``, None where the step allows it)."""
        return {
            Step.DELETE: self._delete,
            Step.REMOVE_STALE: lambda obj, _: self.teardown.remove_stale(
                obj["metadata"]["uid"], ob.key(obj)),
            Step.BUILD: lambda obj, _: self._build(obj),
            Step.POWER: self._tidy_and_power,
            Step.MOVE: lambda obj, info: self.mover.move(obj, _defined(info)),
            Step.REVERT: lambda obj, info: self.mover.revert(obj, _defined(info)),
            Step.SEND: self.migrator.send,
            Step.FINISH: self.migrator.finish,
            Step.DROP: self.migrator.drop,
            Step.RESTORE: self.migrator.restore,
            Step.PREPARE_LIVE: self.live.prepare,
            Step.LIVE_MIGRATE: self.live.migrate,
        }

    def _delete(self, obj: dict, info: DomainInfo | None) -> None:
        self.userdata.forget(ob.key(obj))
        self.teardown.delete(obj)

    def _tidy_and_power(self, obj: dict, info: DomainInfo | None) -> None:
        self.mover.tidy(obj)
        self._power(obj, _defined(info), just_built=False)

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


def _defined(info: DomainInfo | None) -> DomainInfo:
    """``info`` of a step taken only when the domain is defined."""
    assert info is not None
    return info
