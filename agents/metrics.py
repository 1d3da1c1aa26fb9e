"""Prometheus metrics and the health endpoint of the compute agent.

``serve(port, healthy)`` starts one HTTP server thread: ``/metrics`` in the
Prometheus text format, ``/healthz`` answering 200 while ``healthy()`` returns
``(True, reason)`` and 503 otherwise (libvirt unreachable, watch not synced,
lease not renewed).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.domains = Gauge(
            "kova_agent_domains", "Kova domains on this host by power state.", ["state"], registry=r
        )
        self.build_seconds = Histogram(
            "kova_agent_build_duration_seconds",
            "Time from the start of a build to the domain running (or defined).",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.builds = Counter(
            "kova_agent_builds_total", "Builds by result.", ["result"], registry=r
        )
        self.build_failures = Counter(
            "kova_agent_build_failures_total", "Failed builds by reason.", ["reason"], registry=r
        )
        self.user_data_waits = Counter(
            "kova_agent_user_data_waits_total",
            "Reads of a user-data Secret that was missing (or lacked the key).", registry=r
        )
        self.image_cache_hits = Counter(
            "kova_agent_image_cache_hits_total", "Image fetches served from the cache.", registry=r
        )
        self.image_cache_misses = Counter(
            "kova_agent_image_cache_misses_total", "Image fetches that had to copy or download.",
            registry=r,
        )
        self.image_bytes = Counter(
            "kova_agent_image_fetched_bytes_total", "Bytes of images downloaded or copied.",
            registry=r,
        )
        self.reconciles = Counter(
            "kova_agent_reconciles_total", "Instance reconciles by result.", ["result"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "kova_agent_reconcile_duration_seconds", "Duration of one Instance reconcile.",
            registry=r,
        )
        self.lifecycle_events = Counter(
            "kova_agent_libvirt_events_total", "libvirt lifecycle events by type.", ["event"],
            registry=r,
        )
        self.power_actions = Counter(
            "kova_agent_power_actions_total", "start/stop/destroy/restart actions taken.",
            ["action"], registry=r,
        )
        self.lease_renewals = Counter(
            "kova_agent_lease_renewals_total", "Heartbeat Lease renewals by result.", ["result"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "kova_agent_workqueue_depth", "Instances waiting for a reconcile.", registry=r
        )
        self.stale_domains = Counter(
            "kova_agent_stale_domains_removed_total",
            "Domains removed because their Instance was gone or placed on another host "
            "(evacuated while this agent was away).", registry=r,
        )
        self.libvirt_reconnects = Gauge(
            "kova_agent_libvirt_reconnects", "Times the libvirt connection was re-opened after "
            "it was lost (libvirtd restarted).", registry=r,
        )


def serve(
    port: int,
    metrics: AgentMetrics,
    healthy: Callable[[], tuple[bool, str]],
    host: str = "0.0.0.0",
) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                body = generate_latest(metrics.registry)
                self._send(200, body, CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz") or self.path.startswith("/readyz"):
                ok, why = healthy()
                body = json.dumps({"ok": ok, "reason": why}).encode()
                self._send(200 if ok else 503, body, "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="metrics", daemon=True).start()
    return srv
