"""Host drain (``Host.spec.drain: true``): the leader empties the host.

The host takes no new Instances from the moment the spec says so (the
scheduler's Enabled filter and the provider's ``COMPUTE_STATUS_DISABLED``
trait: :mod:`.controller`).  Every couple of seconds, for each draining
host, the leader

* starts moves of the Instances on it, at most ``spec.drainParallel`` (the
  operator's ``--drain-parallel``) under way at once: it writes the same
  migration record ``instances/migrate`` writes (step Claiming, user
  ``kova-operator (drain)``, a request id starting ``drain-``), so the
  conductor moves it exactly as a user's migration -- the scheduler picks
  the destination, server-group policies hold.  A running Instance is
  live-migrated (``drainPolicy`` Live, LiveThenCold), a stopped one (and
  every one with Cold) cold-migrated;
* confirms each cold migration it started once the guest runs on its new
  host;
* notes each move that failed: with LiveThenCold a failed live migration is
  tried cold; otherwise the Instance is *left*, with the reason (NoValidHost,
  ServerGroupPolicy, LiveMigrationFailed, NotMovable) in ``status.drain.left``
  and a Warning Event on the Host, and tried again after
  ``--drain-retry-interval``;
* writes ``status.drain`` (phase Draining, Drained or Stuck; the counts) and
  the ``Drained`` condition when they change.

``spec.drain: false`` ends it: ``status.drain`` and the condition go (a move
under way finishes).  What the leader remembers (the moves it started, the
Instances left) is rebuilt after a change of leader: moves under way are
found by their request id (at once when this replica becomes the leader,
before it finishes any of them), the Instances left are tried again once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from kova import log as kova_log
from kova.conditions import now_rfc3339, set_condition
from kova.crds import names
from kova.crds import objects as ob
from kova.crds.names import MigrationStep
from kova.kube import host_path
from kova.operator import metrics
from kova.operator.context import Context
from kova.operator.host.drainplan import (
    Attempt,
    DrainState,
    Key,
    Left,
    drain_status,
    drained_condition,
    failure,
    falls_back_cold,
    how_to_move,
    outcome,
    policy_of,
)
from kova.operator.instance import moves
from kova.operator.instance.records import Records

LOG = logging.getLogger("kova.operator")

#: Seconds between two looks at the draining hosts (a Host change wakes it).
TICK = 2.0


class DrainController:
    def __init__(self, ctx: Context, records: Records) -> None:
        self.ctx = ctx
        self.records = records
        self.states: dict[str, DrainState] = {}
        #: Hosts whose spec asks a drain or whose status still shows one: what
        #: a tick looks at (not every Host: 10 000 of them every 2 s cost the
        #: operator ~20 ms a tick).  Every Host's first event adds it here.
        self.draining: set[str] = set()
        self._wake = asyncio.Event()

    def host_changed(self, name: str, body: dict, deleted: bool) -> None:
        if deleted:
            self.states.pop(name, None)
            self.draining.discard(name)
        elif ob.spec(body).get("drain") or ob.status(body).get("drain") is not None:
            self.draining.add(name)
            self._wake.set()
        else:
            self.draining.discard(name)

    async def run(self) -> None:
        await self.ctx.informer.synced.wait()
        while True:
            self._wake.clear()
            if self.ctx.leader:
                await self.tick_all()
            else:
                self.states.clear()  # the next leader's; rebuilt if this one leads again
            try:
                await asyncio.wait_for(self._wake.wait(), TICK)
            except asyncio.TimeoutError:
                pass

    async def tick_all(self) -> None:
        informer = self.ctx.informer
        for name in sorted(self.draining):
            body = informer.host(name)
            if body is None:
                continue
            try:
                if ob.spec(body).get("drain"):
                    await self.tick(name, body)
                elif ob.status(body).get("drain") is not None:
                    await self.end(name, body)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next tick tries again
                LOG.warning("host %s: drain step failed (%s: %s)", name,
                            type(exc).__name__, exc)

    def new_term(self) -> None:
        """This replica became the leader: the moves under way off every
        draining host are adopted now, from the informer's cache, before the
        Instances are looked at again -- a move this leader finishes before
        the drain's next tick is still counted as the drain's."""
        self.states.clear()
        informer = self.ctx.informer
        if not informer.synced.is_set():
            return  # the first tick after the sync adopts them
        for name in informer.host_names():
            body = informer.host(name)
            if body is not None and ob.spec(body).get("drain"):
                self.state_of(name, body)

    # ------------------------------------------------------------ one host
    def state_of(self, name: str, host: dict) -> DrainState:
        state = self.states.get(name)
        if state is None:
            drain = ob.status(host).get("drain") or {}
            state = self.states[name] = DrainState(start=drain.get("startTime") or now_rfc3339(),
                                                   moved=int(drain.get("moved") or 0))
            self.adopt(name, state)
        return state

    def adopt(self, name: str, state: DrainState) -> None:
        """Moves off ``name`` a drain started before this leader took over."""
        for key, inst in self.ctx.informer.instances():
            mig = ob.status(inst).get("migration") or {}
            if (mig.get("sourceHost") == name
                    and str(mig.get("requestId", "")).startswith(names.DRAIN_REQUEST_PREFIX)):
                state.attempts[key] = Attempt(mig["requestId"],
                                              mig.get("mode") == names.MigrationMode.LIVE,
                                              time.monotonic())

    async def tick(self, name: str, host: dict) -> None:
        state = self.state_of(name, host)
        policy, now = policy_of(host), time.monotonic()
        spec = (policy, ob.spec(host).get("drainParallel"))
        if state.spec != spec:  # the Instances left are tried again, the new way
            state.spec = spec
            state.cold_tried |= {k for k, v in state.left.items() if falls_back_cold(
                Attempt("", True, 0.0), v, policy)}
            state.left.clear()
        on_host = sorted(self.ctx.informer.instances_on(name))
        moving, candidates = 0, []
        for key in sorted(set(on_host) | set(state.attempts)):
            inst = self.ctx.informer.instance(*key)
            if inst is None or ob.meta(inst).get("deletionTimestamp"):
                state.attempts.pop(key, None)
                state.left.pop(key, None)
                continue
            live = await self.look_at(name, host, state, key, inst, policy, now)
            if live == "moving":
                moving += 1
            elif isinstance(live, bool):
                candidates.append((key, inst, live))
        parallel = int(ob.spec(host).get("drainParallel") or self.ctx.settings.drain_parallel)
        for key, inst, live in candidates[:max(0, parallel - moving)]:
            if await self.start(name, state, key, inst, live, now):
                moving += 1
        on_host = [k for k in on_host if self.ctx.informer.instance(*k) is not None]
        await self.write_status(host, state, on_host, moving)

    async def look_at(self, name: str, host: dict, state: DrainState, key: Key,
                      inst: dict, policy: str, now: float) -> str | bool | None:
        """"moving" for an Instance under way off the host, True/False
        (live/cold) for one to start moving, None for one left or gone."""
        status = ob.status(inst)
        mig = status.get("migration") or {}
        attempt = state.attempts.get(key)
        if mig:
            if attempt is not None and mig.get("requestId") == attempt.req \
                    and mig.get("step") == MigrationStep.VERIFY:
                await self.records.patch_status(
                    inst, lambda cur: moves.drain_confirmed(cur, mig["uuid"]))
            return "moving" if mig.get("sourceHost") == name else None
        if attempt is not None:
            result = outcome(inst, attempt.req)
            if result is None:
                return "moving"  # not seen finished yet
            del state.attempts[key]
            if status.get("host") != name:
                state.moved += 1
                state.left.pop(key, None)
                return None
            why = failure(inst)
            if result == names.ActionResult.ERROR and falls_back_cold(attempt, why, policy):
                state.cold_tried.add(key)
                LOG.info("%s/%s: live migration off draining host %s failed (%s); "
                         "migrating it cold", *key, name, why.message)
                return False
            self.leave(host, state, key, why, now)
            return None
        if status.get("host") != name:
            return None
        old = state.left.get(key)
        if (old is not None and old.reason != names.DRAIN_LEFT_NOT_MOVABLE
                and now - old.at < self.ctx.settings.drain_retry_interval):
            return None
        live, refused = how_to_move(inst, policy, key in state.cold_tried)
        if refused is not None:
            self.leave(host, state, key, refused, now)
        elif live is None:
            state.left.pop(key, None)  # a passing phase: its turn comes
        return live

    def leave(self, host: dict, state: DrainState, key: Key, why: Left, now: float) -> None:
        old = state.left.get(key)
        state.left[key] = Left(why.reason, why.message, now)
        if old is None or (old.reason, old.message) != (why.reason, why.message):
            message = f"{key[0]}/{key[1]} stays on the host: {why.reason}: {why.message}"
            LOG.warning("host %s: drain: %s", host["metadata"]["name"], message)
            self.ctx.emit(host, "Warning", names.EVENT_DRAIN_LEFT, message)
            metrics.DRAIN_LEFT.labels(reason=why.reason).inc()

    async def start(self, name: str, state: DrainState, key: Key, inst: dict, live: bool,
                    now: float) -> bool:
        req = f"{names.DRAIN_REQUEST_PREFIX}{uuid.uuid4()}"
        written: list = []
        await self.records.patch_status(
            inst, lambda cur: moves.drain_started(cur, live, req), written=written)
        if not written:
            return False
        state.attempts[key] = Attempt(req, live, now)
        state.left.pop(key, None)
        metrics.DRAIN_MOVES.labels(mode="live" if live else "cold").inc()
        LOG.info("host %s: drain: %s %s/%s", name, "live-migrating" if live else
                 "migrating cold", *key, extra=kova_log.about(inst))
        return True

    async def write_status(self, host: dict, state: DrainState, on_host: list[Key],
                           moving: int) -> None:
        drain = drain_status(state, on_host, moving)
        cond = drained_condition(drain)

        def change(cur: dict) -> dict | None:
            status = ob.status(cur)
            current: dict = next((c for c in status.get("conditions") or []
                                  if c.get("type") == names.HOST_COND_DRAINED), {})
            old = status.get("drain") or {}
            if old == drain and (current.get("status"), current.get("reason"),
                                 current.get("message")) == cond:
                return None
            return {"status": {"drain": drain, "conditions": set_condition(
                status.get("conditions"), names.HOST_COND_DRAINED, *cond)}}

        if change(host) is None:
            return
        await self.ctx.kube.update_status(host_path(host["metadata"]["name"]), host, change)
        if drain["phase"] == names.DrainPhase.DRAINED and not state.drained_reported:
            state.drained_reported = True
            self.ctx.emit(host, "Normal", names.EVENT_DRAINED, cond[2])
            LOG.info("host %s: drained (%s)", host["metadata"]["name"], cond[2])
        elif drain["phase"] != names.DrainPhase.DRAINED:
            state.drained_reported = False

    async def end(self, name: str, host: dict) -> None:
        """spec.drain is false again: the drain's status and condition go."""
        self.states.pop(name, None)

        def change(cur: dict) -> dict:
            conditions = [c for c in ob.status(cur).get("conditions") or []
                          if c.get("type") != names.HOST_COND_DRAINED]
            return {"status": {"drain": None, "conditions": conditions}}

        await self.ctx.kube.update_status(host_path(host["metadata"]["name"]), host, change)
        LOG.info("host %s: drain ended", name)
