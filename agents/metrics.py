"""Prometheus metrics and the health endpoint of the compute agent.

Each :class:`AgentMetrics` has its own registry (several agents can run in
one test process); :func:`serve` exposes it on ``/metrics`` with ``/healthz``
answering 200 while ``healthy()`` returns ``(True, reason)`` and 503 otherwise
(libvirt unreachable, watch not synced, lease not renewed).
"""

from __future__ import annotations

import http.server
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Histogram

from kova.metrics import MetricSet
from kova.metrics import serve as _serve


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.set = m = MetricSet("kova_agent", self.registry)
        self.domains = m.gauge("kova_agent_domains", "Kova domains on this host by power state.",
                               ["state"])
        self.build_seconds = m.histogram(
            "kova_agent_build_duration_seconds",
            "Time from the start of a build to the domain running (or defined).",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600))
        self.builds = m.counter("kova_agent_builds_total", "Builds by result.", ["result"])
        self.build_failures = m.counter("kova_agent_build_failures_total",
                                        "Failed builds by reason.", ["reason"])
        self.user_data_waits = m.counter(
            "kova_agent_user_data_waits_total",
            "Reads of a user-data Secret that was missing (or lacked the key).")
        self.image_cache_hits = m.counter("kova_agent_image_cache_hits_total",
                                          "Image fetches served from the cache.")
        self.image_cache_misses = m.counter("kova_agent_image_cache_misses_total",
                                            "Image fetches that had to copy or download.")
        self.image_bytes = m.counter("kova_agent_image_fetched_bytes_total",
                                     "Bytes of images downloaded or copied.")
        self.reconciles = m.counter("kova_agent_reconciles_total",
                                    "Instance reconciles by result.", ["result"])
        self.reconcile_seconds = m.histogram(
            "kova_agent_reconcile_duration_seconds", "Duration of one Instance reconcile.",
            buckets=Histogram.DEFAULT_BUCKETS)
        self.lifecycle_events = m.counter("kova_agent_libvirt_events_total",
                                          "libvirt lifecycle events by type.", ["event"])
        self.power_actions = m.counter("kova_agent_power_actions_total",
                                       "start/stop/destroy/restart actions taken.", ["action"])
        self.lease_renewals = m.counter("kova_agent_lease_renewals_total",
                                        "Heartbeat Lease renewals by result.", ["result"])
        self.queue_depth = m.gauge("kova_agent_workqueue_depth",
                                   "Instances waiting for a reconcile.")
        self.stale_domains = m.counter(
            "kova_agent_stale_domains_removed_total",
            "Domains removed because their Instance was gone or placed on another host "
            "(evacuated while this agent was away).")
        self.live_migrations = m.counter(
            "kova_agent_live_migrations_total",
            "Live migrations sent from this host, by result (Completed, Timeout, Aborted, "
            "Failed).", ["result"])
        self.live_migration_seconds = m.histogram(
            "kova_agent_live_migration_duration_seconds",
            "Total time of a completed live migration sent from this host.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200))
        self.live_migration_downtime = m.histogram(
            "kova_agent_live_migration_downtime_seconds",
            "How long the guest was paused at the end of a completed live migration.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.placement_seconds = m.histogram(
            "kova_agent_placement_request_seconds", "Placement API calls by operation.",
            ["call"], buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.placement_retries = m.counter(
            "kova_agent_placement_retries_total",
            "Placement calls retried, by reason (connection, the answer 502, 503 or 504, "
            "or a generation conflict).", ["reason"])

    def libvirt_reconnects(self, read: Callable[[], float]) -> None:
        """Expose the libvirt connection's reconnect count (read at each scrape)."""
        self.set.counter_function(
            "kova_agent_libvirt_reconnects_total",
            "Times the libvirt connection was re-opened after it was lost (libvirtd "
            "restarted).", read)

    def observe_placement(self, call: str, seconds: float) -> None:
        self.placement_seconds.labels(call=call).observe(seconds)

    def placement_retried(self, reason: str) -> None:
        self.placement_retries.labels(reason=reason).inc()


def serve(port: int, metrics: AgentMetrics, healthy: Callable[[], tuple[bool, str]],
          host: str = "0.0.0.0") -> http.server.ThreadingHTTPServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``."""
    return _serve(port, metrics.registry, health=healthy, bind=host, name="metrics")
