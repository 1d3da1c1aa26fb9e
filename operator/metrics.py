"""Prometheus metrics of the operator (served by ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SCHEDULE_LATENCY = Histogram(
    "kova_operator_schedule_latency_seconds",
    "From the Instance's creation (or its build failure) to the Scheduled status.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
SCHEDULE_DURATION = Histogram(
    "kova_operator_schedule_duration_seconds",
    "Time of one scheduling pass: candidates, filters, weighers and claim.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CLAIM_TRIES = Histogram(
    "kova_operator_claim_tries",
    "Claims tried per successful decision (1 = no race lost).",
    buckets=(1, 2, 3, 5, 10, 20),
)
BATCH_SIZE = Histogram(
    "kova_operator_schedule_batch_size",
    "Instances decided together in one scheduling batch (see kova.operator.scheduler.batch).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
BATCH_FALLBACKS = Counter(
    "kova_operator_schedule_batch_fallbacks_total",
    "Batch claims (POST /allocations) refused with 409 and redone one Instance at a time.",
)
OUTCOMES = Counter(
    "kova_operator_schedule_outcomes_total",
    "Scheduling outcomes by reason (Scheduled, Rescheduled, NoValidHost, ...).",
    ["reason"],
)
BUILD_ATTEMPTS = Counter(
    "kova_operator_build_attempts_total", "Build attempts started (first placements and reschedules)."
)
BUILD_FAILURES = Counter(
    "kova_operator_build_failures_total", "Build failures reported by agents.", ["host"]
)
QUEUE_DEPTH = Gauge("kova_operator_queue_depth", "Objects waiting in the work queue.")
PENDING = Gauge("kova_operator_pending_instances", "Instances waiting for a host (Pending).")
HOSTS = Gauge("kova_operator_hosts", "Hosts by heartbeat state.", ["state"])
LEADER = Gauge("kova_operator_leader", "1 while this replica is the active one.")
AUDIT_ORPHANS = Gauge(
    "kova_operator_audit_orphan_allocations", "Allocations without an Instance (last audit)."
)
AUDIT_MISSING = Gauge(
    "kova_operator_audit_missing_allocations",
    "Scheduled Instances without an allocation (last audit).",
)
AUDIT_HEALED = Counter("kova_operator_audit_healed_total", "Discrepancies healed.", ["kind"])
ERRORS = Counter("kova_operator_errors_total", "Unexpected errors while reconciling.", ["kind"])
PLACEMENT_SECONDS = Histogram(
    "kova_operator_placement_request_seconds", "Placement API calls by operation.", ["call"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
PLACEMENT_RETRIES = Counter(
    "kova_operator_placement_retries_total",
    "Placement calls retried, by reason (connection, or the answer: 502, 503, 504).",
    ["reason"],
)
KUBE_SECONDS = Histogram(
    "kova_operator_kube_request_seconds", "Kubernetes API calls made by the workers.", ["verb"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_DROPPED = Counter(
    "kova_operator_events_dropped_total",
    "Normal Events not posted because of --event-qps (the status holds the same fact).",
    ["reason"],
)
