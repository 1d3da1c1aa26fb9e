"""Prometheus metrics of the operator (served by ``--metrics-port``, from the
process-wide registry; names checked by :class:`kova.metrics.MetricSet`)."""

from __future__ import annotations

from kova.metrics import MetricSet
from kova.metrics import serve as _serve

M = MetricSet("kova_operator")


def serve(port: int) -> None:
    """``/metrics`` on ``port`` (all interfaces)."""
    _serve(port, name="operator-metrics")


SCHEDULE_LATENCY = M.histogram(
    "kova_operator_schedule_latency_seconds",
    "From the Instance's creation (or its build failure) to the Scheduled status.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
SCHEDULE_DURATION = M.histogram(
    "kova_operator_schedule_duration_seconds",
    "Time of one scheduling pass: candidates, filters, weighers and claim.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CLAIM_TRIES = M.histogram(
    "kova_operator_claim_tries",
    "Claims tried per successful decision (1 = no race lost).",
    buckets=(1, 2, 3, 5, 10, 20), unit=None,
)
BATCH_SIZE = M.histogram(
    "kova_operator_schedule_batch_size",
    "Instances decided together in one scheduling batch (see kova.operator.scheduler.batch).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500), unit=None,
)
BATCH_FALLBACKS = M.counter(
    "kova_operator_schedule_batch_fallbacks_total",
    "Batch claims (POST /allocations) refused with 409 and redone one Instance at a time.",
)
OUTCOMES = M.counter(
    "kova_operator_schedule_outcomes_total",
    "Scheduling outcomes by reason (Scheduled, Rescheduled, NoValidHost, ...).",
    ["reason"],
)
BUILD_ATTEMPTS = M.counter(
    "kova_operator_build_attempts_total",
    "Build attempts started (first placements and reschedules)."
)
BUILD_FAILURES = M.counter(
    "kova_operator_build_failures_total", "Build failures reported by agents.", ["host"]
)
QUEUE_DEPTH = M.gauge(
    "kova_operator_queue_depth", "Objects waiting in the work queue.")
PENDING = M.gauge(
    "kova_operator_pending_instances", "Instances waiting for a host (Pending).")
HOSTS = M.gauge(
    "kova_operator_hosts", "Hosts by heartbeat state.", ["state"])
HOST_STATE_WRITES = M.counter(
    "kova_operator_host_state_writes_total",
    "Host status writes (state Up/Down/Unknown, Ready and Fenced conditions).")
DRAIN_MOVES = M.counter(
    "kova_operator_drain_moves_total",
    "Moves a host drain started, by mode (live, cold).", ["mode"])
DRAIN_LEFT = M.counter(
    "kova_operator_drain_left_total",
    "Instances a host drain left on their host, by reason.", ["reason"])
LEASE_EXPIRIES = M.counter(
    "kova_operator_lease_expiries_total", "Heartbeat Leases found expired by the timer.")
LEADER = M.gauge(
    "kova_operator_leader", "1 while this replica is the active one.")
MEMBERS = M.gauge(
    "kova_operator_replicas",
    "Live operator replicas sharing the Instances (--share-instances; 0 without).")
OWNED = M.gauge(
    "kova_operator_owned_instances",
    "Instances this replica owns (all of them without --share-instances).")
AUDIT_ORPHANS = M.gauge(
    "kova_operator_audit_orphan_allocations", "Allocations without an Instance (last audit)."
)
AUDIT_MISSING = M.gauge(
    "kova_operator_audit_missing_allocations",
    "Scheduled Instances without an allocation (last audit).",
)
AUDIT_SECONDS = M.gauge(
    "kova_operator_audit_duration_seconds",
    "Duration of the last audit pass (both listings, the checks and the heals).")
AUDIT_INSTANCES = M.gauge(
    "kova_operator_audit_instances", "Instances the last audit pass checked.")
AUDIT_HEALED = M.counter(
    "kova_operator_audit_healed_total", "Discrepancies healed.", ["kind"])
RECONCILES = M.counter(
    "kova_operator_reconciles_total",
    "Work-queue keys reconciled by this replica, by kind (inst, sg, host, hstate); after "
    "a start, Instances known (kova_operator_owned_instances) = reconciled "
    "(kind inst) with an empty queue means every Instance was looked at once.",
    ["kind"])
ERRORS = M.counter(
    "kova_operator_errors_total", "Unexpected errors while reconciling.", ["kind"])
PLACEMENT_SECONDS = M.histogram(
    "kova_operator_placement_request_seconds", "Placement API calls by operation.", ["call"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PLACEMENT_RETRIES = M.counter(
    "kova_operator_placement_retries_total",
    "Placement calls retried, by reason (connection, the answer 502, 503 or 504, or a "
    "generation conflict).",
    ["reason"],
)
KUBE_SECONDS = M.histogram(
    "kova_operator_kube_request_seconds", "Kubernetes API calls made by the workers.", ["verb"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_DROPPED = M.counter(
    "kova_operator_events_dropped_total",
    "Normal Events not posted because of --event-qps (the status holds the same fact).",
    ["reason"],
)
