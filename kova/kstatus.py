"""kstatus conditions of an Instance: ``Reconciling`` while Kova converges
on its spec, ``Stalled`` when it cannot (phase Error), derived from the phase
whoever writes the phase (operator or agent) writes.

Flux (kstatus), ``kubectl wait --for=condition=Stalled=false`` and Argo CD's
health checks (docs/gitops.md) read them: an Instance in Error is Failed, not
Current.  ``Ready`` stays what the agent reports.

A pure function; the writers add its result to the status they write, with
their own condition helper (which keeps lastTransitionTime while the status
holds).
"""

from __future__ import annotations

from kova.crds.models import InstancePhase

COND_RECONCILING = "Reconciling"
COND_STALLED = "Stalled"

#: Phases on the way to the spec's state.
CONVERGING = {InstancePhase.PENDING.value, InstancePhase.SCHEDULING.value,
              InstancePhase.SCHEDULED.value, InstancePhase.BUILDING.value,
              InstancePhase.MIGRATING.value, InstancePhase.DELETING.value}


def conditions(phase: str | None, error_reason: str = "",
               error_message: str = "") -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) of Reconciling and Stalled for an
    Instance in ``phase``; ``error_reason``/``error_message`` explain an Error."""
    if phase == InstancePhase.ERROR.value:
        return [(COND_RECONCILING, "False", "Error", "Kova stopped trying: see Stalled"),
                (COND_STALLED, "True", error_reason or "Error",
                 error_message or "the Instance is in phase Error")]
    if phase == InstancePhase.UNKNOWN.value:
        return [(COND_RECONCILING, "True", "HostDown", "its host is Down: waiting for it to "
                 "come back or to be fenced (then it is evacuated)"),
                (COND_STALLED, "False", "HostDown", "")]
    if phase in CONVERGING or phase is None:
        label = phase or InstancePhase.PENDING.value
        return [(COND_RECONCILING, "True", label, f"phase {label}"),
                (COND_STALLED, "False", label, "")]
    return [(COND_RECONCILING, "False", phase, f"phase {phase}: as the spec asks"),
            (COND_STALLED, "False", phase, "")]
