"""Power actions on a domain, asked for by Kova's API component through the
stream endpoint (``PUT /v1/domains/<uid>/power/<action>``).

Each action looks at the domain's live state, does what it promises or
refuses with a reason, and is idempotent: asking for the state the domain is
already in succeeds without touching it.

=========  ===============================================  ==========================
action     does                                             refused (409) when
=========  ===============================================  ==========================
start      start a shut-off domain (new seed first if       paused (use unpause)
           user data, keys or host name changed)
stop       ACPI power button, repeated; powered off after   --
           the shutdown timeout; a paused domain at once
restart    hard: power off, start (Nova's hard reboot)      not running
reboot     soft: ACPI power button until the guest is       paused, not running
           off, powered off after the shutdown timeout,
           then started (Nova's soft reboot)
pause      suspend the vCPUs                                not running
unpause    resume them                                      not running, not paused
eject      empty the CD-ROM of an ISO-booted guest, on any  no ISO CD-ROM
           power state (:mod:`~kova.agents.instance.media`)
=========  ===============================================  ==========================

Whether the domain should run at all is the Instance's runStrategy, which
the agent's reconcile enforces; the API component changes it (or the
power annotation) for start and stop where that is what keeps
the result, and asks for the direct action otherwise (docs/using-your-vm.md).
Only one action runs per domain at a time: a second one gets 409.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import libvirt

from kova.agents.context import AgentContext
from kova.agents.instance import decisions, media
from kova.agents.instance.report import Reporter
from kova.agents.instance.userdata import UserData
from kova.agents.virt.driver import DomainInfo, DriverError
from kova.agents.watch import InstanceWatch
from kova.crds import names
from kova.crds.names import PowerState
from kova.errors import Refusal

log = logging.getLogger("kova.agents.instance.power_actions")

ACTIONS = ("start", "stop", "restart", "reboot", "pause", "unpause", "eject")


class ActionError(Refusal):
    """A power action refused: its HTTP status, reason and message."""


@dataclasses.dataclass(frozen=True)
class ActionResult:
    message: str
    power_state: str
    changed: bool

    def to_json(self) -> dict:
        return {"message": self.message, "powerState": self.power_state,
                "changed": self.changed}


def _paused(info: DomainInfo) -> bool:
    return info.state.state == libvirt.VIR_DOMAIN_PAUSED


class PowerActions:
    def __init__(self, ctx: AgentContext, watch: InstanceWatch, report: Reporter,
                 userdata: UserData) -> None:
        self.ctx = ctx
        self.watch = watch
        self.report = report
        self.userdata = userdata
        self.driver = ctx.driver
        self._lock = threading.Lock()
        self._busy: dict[str, str] = {}

    def run(self, uid: str, action: str, user: str, request: str = "") -> ActionResult:
        if action not in ACTIONS:
            raise ActionError(404, "UnknownAction", f"no power action {action!r}; one of "
                              + ", ".join(ACTIONS))
        with self._lock:
            if uid in self._busy:
                raise ActionError(409, "ActionInProgress",
                                  f"a {self._busy[uid]} of this domain is in progress")
            self._busy[uid] = action
        try:
            info = self.driver.get(uid)
            if info is None or not decisions.is_mine(info.meta, self.ctx.host):
                raise ActionError(404, "NotFound", f"no domain of this Instance on "
                                  f"{self.ctx.host}")
            obj = self.watch.by_uid(uid)
            log.info("%s of domain %s requested by %s", action, uid, user)
            if action == "eject":
                result = self._eject(info, obj, user, request)
            else:
                result = getattr(self, f"_{action}")(info, obj)
            if result.changed:
                self.ctx.metrics.power_actions.labels(action).inc()
                if obj is not None:
                    self.report.event(obj, "Normal", names.event_action_done(action),
                                      f"{self.ctx.host}: {result.message} (asked by {user})")
            return result
        except DriverError as exc:
            raise ActionError(503, "HypervisorError", str(exc)) from exc
        finally:
            with self._lock:
                self._busy.pop(uid, None)
            self.watch.queue_uid(uid)

    # ------------------------------------------------------------------
    def _eject(self, info: DomainInfo, obj: dict | None, user: str,
               request: str) -> ActionResult:
        try:
            changed = media.eject(self.ctx, self.watch, info, request)
        except (media.EjectError, DriverError) as exc:
            if obj is not None:
                self.report.event(obj, "Warning", names.EVENT_EJECT_FAILED,
                                  f"{self.ctx.host}: the CD-ROM was not ejected (asked by "
                                  f"{user}): {getattr(exc, 'message', exc)}")
            if isinstance(exc, media.EjectError):
                raise ActionError(exc.status, exc.reason, exc.message) from exc
            raise
        message = "ejected the CD-ROM: the guest boots from its root disk" if changed \
            else "the CD-ROM was already empty"
        return ActionResult(message, self._state(info.uuid), changed)

    def _state(self, uid: str) -> str:
        state = self.driver.state(uid)
        return state.power_state if state is not None else PowerState.NO_STATE

    def _boot(self, uid: str, obj: dict | None) -> None:
        """Start the shut-off domain, with a fresh seed if its spec changed
        (unless the agent's reconcile, keeping runStrategy Always, started it
        meanwhile)."""
        info = self.driver.get(uid)
        if info is None:
            raise ActionError(404, "NotFound", "the domain disappeared")
        if info.state.running:
            return
        if obj is not None and info.meta is not None:
            meta = self.userdata.fresh_seed(obj, info.meta)
            if meta != info.meta:
                self.driver.set_metadata(uid, meta)
        try:
            self.driver.start(uid)
        except DriverError:
            # the reconcile started it in the meantime (libvirt shows a
            # domain paused while it starts: our start became a resume)
            state = self.driver.state(uid)
            if state is None or not state.running:
                raise

    def _power_off(self, uid: str) -> bool:
        """ACPI power button until the guest is off (pressed again every
        3 s: one pressed before the guest listens is lost); pulled after the
        shutdown timeout.  True if the guest went off by itself."""
        deadline = time.monotonic() + self.ctx.cfg.shutdown_timeout
        next_press = 0.0
        while time.monotonic() < deadline:
            state = self.driver.state(uid)
            if state is None or not state.running:
                return True
            if time.monotonic() >= next_press:
                self.driver.shutdown(uid)
                next_press = time.monotonic() + 3.0
            time.sleep(0.2)
        self.driver.destroy(uid)
        return False

    def _not_running(self, info: DomainInfo, action: str) -> ActionError:
        return ActionError(409, "NotRunning", f"cannot {action}: the domain is "
                           f"{info.state.power_state}, not Running")

    # ------------------------------------------------------------------
    def _start(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if info.state.running:
            return ActionResult("already running", PowerState.RUNNING, False)
        if _paused(info):
            raise ActionError(409, "Paused", "the domain is paused: unpause it")
        self._boot(info.uuid, obj)
        return ActionResult("started", self._state(info.uuid), True)

    def _stop(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if _paused(info):
            self.driver.destroy(info.uuid)
            return ActionResult("powered off (it was paused)", self._state(info.uuid), True)
        if not info.state.running:
            return ActionResult("already stopped", info.state.power_state, False)
        clean = self._power_off(info.uuid)
        message = "shut down" if clean else (
            f"powered off: no clean shutdown within {self.ctx.cfg.shutdown_timeout:.0f}s")
        return ActionResult(message, self._state(info.uuid), True)

    def _restart(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if not (info.state.running or _paused(info)):
            raise self._not_running(info, "restart")
        self.driver.destroy(info.uuid)
        self._boot(info.uuid, obj)
        return ActionResult("restarted (powered off and started)", self._state(info.uuid), True)

    def _reboot(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if _paused(info):
            raise ActionError(409, "Paused", "the domain is paused: unpause it first, or "
                              "restart it")
        if not info.state.running:
            raise self._not_running(info, "reboot")
        clean = self._power_off(info.uuid)
        self._boot(info.uuid, obj)
        message = "rebooted (shut down and started)" if clean else (
            "rebooted: no clean shutdown within "
            f"{self.ctx.cfg.shutdown_timeout:.0f}s, so powered off and started")
        return ActionResult(message, self._state(info.uuid), True)

    def _pause(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if _paused(info):
            return ActionResult("already paused", PowerState.PAUSED, False)
        if not info.state.running:
            raise self._not_running(info, "pause")
        self.driver.suspend(info.uuid)
        return ActionResult("paused", self._state(info.uuid), True)

    def _unpause(self, info: DomainInfo, obj: dict | None) -> ActionResult:
        if info.state.running:
            return ActionResult("already running", PowerState.RUNNING, False)
        if not _paused(info):
            raise self._not_running(info, "unpause")
        self.driver.resume(info.uuid)
        return ActionResult("unpaused", self._state(info.uuid), True)
