"""A domain's power: start, stop (ACPI power button, repeated, then destroy
after ``--shutdown-timeout``) and restart, as the Instance's run strategy,
the power annotation (Manual) and the restart annotation ask
(:func:`~kova.agents.instance.decisions.power_action`,
:func:`~kova.agents.instance.decisions.restart`).  The run strategy applied,
the restart token acted on and the fingerprint of the spec the seed holds
are kept in the domain's Kova metadata; a start writes a new seed first when
user data, SSH keys or host name changed (:meth:`UserData.fresh_seed
<kova.agents.instance.userdata.UserData.fresh_seed>`).

Direct power actions asked for through the stream endpoint (pause, reboot,
...) are :mod:`~kova.agents.instance.power_actions`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kova.agents.context import AgentContext
from kova.agents.instance import decisions, restart_fields
from kova.agents.instance.decisions import Restart
from kova.agents.instance.userdata import UserData
from kova.agents.virt.domain import DomainMetadata
from kova.agents.virt.driver import DomainInfo, DomainState
from kova.crds import names
from kova.crds import objects as ob

log = logging.getLogger("kova.agents.instance.power")

#: An Event to post: (type, reason, message).
Notice = tuple[str, str, str]


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Power.apply` did: the domain's state afterwards, the
    Events to post, and the domain's Kova metadata as recorded."""

    state: DomainState
    notices: list[Notice]
    meta: DomainMetadata


class Power:
    def __init__(self, ctx: AgentContext, userdata: UserData) -> None:
        self.ctx = ctx
        self.userdata = userdata

    def apply(self, obj: dict, info: DomainInfo, first_start: bool) -> Outcome:
        """Bring the domain's power where the Instance wants it."""
        uid = obj["metadata"]["uid"]
        key = ob.key(obj)
        strategy = ob.run_strategy(obj)
        ann = ob.annotations_of(obj)
        meta = restart_fields.adopted(
            info.meta or DomainMetadata(uid=uid, namespace=key[0], name=key[1]), ob.spec(obj))
        power_ann = ann.get(names.ANNOTATION_POWER)
        action = decisions.power_action(strategy, info.state, first_start=first_start,
                                        power_annotation=power_ann)
        token = ann.get(names.ANNOTATION_RESTART, "")
        what = decisions.restart(token, meta.restart_token, first_start=first_start,
                                 running=info.state.running, action=action)
        notices: list[Notice] = []
        state = info.state
        if what is Restart.RESTART:
            now, meta = self._restart(obj, meta, token, notices)
            state = now or state
        if action == decisions.START:
            now, meta = self._start(obj, meta, strategy, notices)
            state = now or state
        elif action == decisions.STOP:
            state = self._stop(obj, uid, strategy, power_ann, notices) or state
        else:
            self._settled(uid, state, first_start)
        new_meta = decisions.recorded_metadata(
            meta, strategy=strategy, restart_token=None if what is Restart.NONE else token)
        if new_meta != info.meta and info.meta is not None:
            self.ctx.driver.set_metadata(uid, new_meta)
        return Outcome(state, notices, new_meta)

    def _restart(self, obj: dict, meta: DomainMetadata, token: str,
                 notices: list[Notice]) -> tuple[DomainState | None, DomainMetadata]:
        driver = self.ctx.driver
        log.info("%s/%s: restart requested (%s)", *ob.key(obj), token)
        notices.append(("Normal", names.EVENT_RESTARTED, f"domain restarted on {self.ctx.host}"))
        driver.destroy(meta.uid)
        meta = self.userdata.fresh_seed(obj, meta)
        driver.start(meta.uid)
        self.ctx.metrics.power_actions.labels("restart").inc()
        return driver.state(meta.uid), meta

    def _start(self, obj: dict, meta: DomainMetadata, strategy: str,
               notices: list[Notice]) -> tuple[DomainState | None, DomainMetadata]:
        ctx = self.ctx
        key = ob.key(obj)
        uid = meta.uid
        ctx.memory.stopping.pop(uid, None)
        log.info("%s/%s: starting the domain (runStrategy %s)", *key, strategy)
        meta = self.userdata.fresh_seed(obj, meta)
        t_start = time.monotonic()
        ctx.driver.start(uid)
        log.info("%s/%s: domain started in %.2fs", *key, time.monotonic() - t_start)
        ctx.metrics.power_actions.labels("start").inc()
        state = ctx.driver.state(uid)
        notices.append(("Normal", names.EVENT_STARTED, f"domain started on {ctx.host}"))
        started = ctx.memory.build_started.pop(uid, None)
        if started is not None:
            ctx.metrics.build_seconds.observe(time.monotonic() - started)
        return state, meta

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
