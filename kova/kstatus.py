"""kstatus conditions of an Instance: ``Reconciling`` while Kova converges
on its spec, ``Stalled`` when it cannot (phase Error), derived from the phase
whoever writes the phase (the operator or the agent) writes.

Flux (kstatus), ``kubectl wait --for=condition=Stalled=false`` and Argo CD's
health checks (docs/gitops.md) read them: an Instance in Error is Failed, not
Current.  ``Ready`` stays what the agent reports.

Pure functions over status dicts, shared by the operator (merge patches of
the whole conditions list) and the agent (server-side apply of the
conditions it owns); the conditions are made with :mod:`kova.conditions`,
which keeps lastTransitionTime while a status holds.
"""

from __future__ import annotations

from kova.conditions import Condition, new_condition, set_condition
from kova.crds.names import COND_RECONCILING, COND_SCHEDULED, COND_STALLED, InstancePhase

#: Phases on the way to the spec's state.
CONVERGING = frozenset({InstancePhase.PENDING, InstancePhase.SCHEDULING,
                        InstancePhase.SCHEDULED, InstancePhase.BUILDING,
                        InstancePhase.MIGRATING, InstancePhase.RESIZING,
                        InstancePhase.DELETING})

Rows = list[tuple[str, str, str, str]]


def conditions(phase: str | None, error_reason: str = "", error_message: str = "") -> Rows:
    """(type, status, reason, message) of Reconciling and Stalled for an
    Instance in ``phase``; ``error_reason``/``error_message`` explain an Error."""
    if phase == InstancePhase.ERROR:
        return [(COND_RECONCILING, "False", "Error", "Kova stopped trying: see Stalled"),
                (COND_STALLED, "True", error_reason or "Error",
                 error_message or "the Instance is in phase Error")]
    if phase == InstancePhase.UNKNOWN:
        return [(COND_RECONCILING, "True", "HostDown", "its host is Down: waiting for it to "
                 "come back or to be fenced (then it is evacuated)"),
                (COND_STALLED, "False", "HostDown", "")]
    if phase in CONVERGING or phase is None:
        label = str(phase or InstancePhase.PENDING)
        return [(COND_RECONCILING, "True", label, f"phase {label}"),
                (COND_STALLED, "False", label, "")]
    return [(COND_RECONCILING, "False", phase, f"phase {phase}: as the spec asks"),
            (COND_STALLED, "False", phase, "")]


def with_kstatus(status: dict, current: dict) -> dict:
    """``status`` -- what a writer is about to write into Instance
    ``current`` -- with Reconciling and Stalled added:

    * when it sets the phase, the conditions of that phase (an Error is
      explained by the Scheduled condition, of ``status`` or ``current``);
    * when it writes conditions but no phase, the current Reconciling and
      Stalled as they are (another writer's phase: its word on them stands;
      server-side apply would remove a condition the agent applied before
      and leaves out now), made from the current phase if there are none;
    * else ``status`` unchanged.

    The conditions of ``status`` are either the whole list (the operator's
    merge patch) or the writer's own (the agent's apply); either way a
    condition keeps its lastTransitionTime while its status holds.
    """
    if "phase" not in status and "conditions" not in status:
        return status
    now = current.get("status") or {}
    existing: dict[str, Condition] = {c.get("type", ""): c for c in now.get("conditions") or []}
    conds = status.get("conditions")
    if conds is None:
        conds = list(existing.values())
    own = {c.get("type"): c for c in conds}
    why = own.get(COND_SCHEDULED) or existing.get(COND_SCHEDULED) or {}
    phase = status.get("phase") or now.get("phase")
    generation = (current.get("metadata") or {}).get("generation")
    for type_, cstatus, reason, message in conditions(phase, why.get("reason", ""),
                                                      why.get("message", "")):
        gen = generation
        if "phase" not in status and type_ in existing:
            old = existing[type_]
            cstatus, reason, message = old["status"], old["reason"], old.get("message", "")
            gen = old.get("observedGeneration")
        if type_ in own:
            conds = set_condition(conds, type_, cstatus, reason, message, gen)
        else:
            conds = [*conds, new_condition(existing.get(type_), type_, cstatus, reason,
                                           message, gen)]
    return {**status, "conditions": conds}
