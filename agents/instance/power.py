"""A domain's power: start, stop (ACPI power button, repeated, then destroy
after ``--shutdown-timeout``) and restart, as the Instance's run strategy,
the power annotation (Manual) and the restart annotation ask
(:func:`~kova.agents.instance.decisions.power_action`,
:func:`~kova.agents.instance.decisions.restart`).  The run strategy applied
and the restart token acted on are kept in the domain's Kova metadata.
"""

from __future__ import annotations

import logging
import time

from kova.agents.context import AgentContext
from kova.agents.instance import decisions
from kova.agents.instance.decisions import Restart
from kova.agents.virt.domain import DomainMetadata
from kova.agents.virt.driver import DomainInfo, DomainState
from kova.crds import names
from kova.crds import objects as ob

log = logging.getLogger("kova.agents.instance.power")

#: An Event to post: (type, reason, message).
Notice = tuple[str, str, str]


class Power:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx

    def apply(self, obj: dict, info: DomainInfo,
              first_start: bool) -> tuple[DomainState, list[Notice]]:
        """Bring the domain's power where the Instance wants it; the state it
        is in afterwards and the Events to post about it."""
        uid = obj["metadata"]["uid"]
        key = ob.key(obj)
        strategy = ob.run_strategy(obj)
        ann = ob.annotations_of(obj)
        meta = info.meta or DomainMetadata(uid=uid, namespace=key[0], name=key[1])
        power_ann = ann.get(names.ANNOTATION_POWER)
        action = decisions.power_action(strategy, info.state, first_start=first_start,
                                        power_annotation=power_ann)
        token = ann.get(names.ANNOTATION_RESTART, "")
        what = decisions.restart(token, meta.restart_token, first_start=first_start,
                                 running=info.state.running, action=action)
        notices: list[Notice] = []
        state = info.state
        if what is Restart.RESTART:
            state = self._restart(obj, uid, token, notices) or state
        if action == decisions.START:
            state = self._start(obj, uid, strategy, notices) or state
        elif action == decisions.STOP:
            state = self._stop(obj, uid, strategy, power_ann, notices) or state
        else:
            self._settled(uid, state, first_start)
        new_meta = decisions.recorded_metadata(
            meta, strategy=strategy, restart_token=None if what is Restart.NONE else token)
        if new_meta != meta and info.meta is not None:
            self.ctx.driver.set_metadata(uid, new_meta)
        return state, notices

    def _restart(self, obj: dict, uid: str, token: str,
                 notices: list[Notice]) -> DomainState | None:
        driver = self.ctx.driver
        log.info("%s/%s: restart requested (%s)", *ob.key(obj), token)
        notices.append(("Normal", names.EVENT_RESTARTED, f"domain restarted on {self.ctx.host}"))
        driver.destroy(uid)
        driver.start(uid)
        self.ctx.metrics.power_actions.labels("restart").inc()
        return driver.state(uid)

    def _start(self, obj: dict, uid: str, strategy: str,
               notices: list[Notice]) -> DomainState | None:
        ctx = self.ctx
        key = ob.key(obj)
        ctx.memory.stopping.pop(uid, None)
        log.info("%s/%s: starting the domain (runStrategy %s)", *key, strategy)
        t_start = time.monotonic()
        ctx.driver.start(uid)
        log.info("%s/%s: domain started in %.2fs", *key, time.monotonic() - t_start)
        ctx.metrics.power_actions.labels("start").inc()
        state = ctx.driver.state(uid)
        notices.append(("Normal", names.EVENT_STARTED, f"domain started on {ctx.host}"))
        started = ctx.memory.build_started.pop(uid, None)
        if started is not None:
            ctx.metrics.build_seconds.observe(time.monotonic() - started)
        return state

    def _stop(self, obj: dict, uid: str, strategy: str, power_ann: str | None,
              notices: list[Notice]) -> DomainState | None:
        ctx = self.ctx
        key = ob.key(obj)
        stopping = ctx.memory.stopping
        if uid not in stopping:
            notices.append(("Normal", names.EVENT_STOPPING,
                            f"shutting the domain down on {ctx.host} (runStrategy {strategy})"))
            log.info("%s/%s: stopping the domain (runStrategy %s%s)", *key, strategy,
                     f", {names.ANNOTATION_POWER}={power_ann}" if power_ann else "")
        first = stopping.setdefault(uid, time.monotonic())
        timeout = ctx.cfg.shutdown_timeout
        if decisions.stop_by_destroy(first, time.monotonic(), timeout):
            log.warning("%s/%s: no clean shutdown within %.0fs; destroying", *key, timeout)
            ctx.driver.destroy(uid)
            ctx.metrics.power_actions.labels("destroy").inc()
            stopping.pop(uid, None)
            return ctx.driver.state(uid)
        ctx.driver.shutdown(uid)  # repeated: an early ACPI press can be lost
        ctx.metrics.power_actions.labels("stop").inc()
        ctx.queue.add_after(key, 2.0)
        return None

    def _settled(self, uid: str, state: DomainState, first_start: bool) -> None:
        """No power action: forget a shutdown that is over, and a build whose
        domain was not started by this reconcile."""
        memory = self.ctx.memory
        if not state.running:
            memory.stopping.pop(uid, None)
        if not first_start:
            memory.build_started.pop(uid, None)
