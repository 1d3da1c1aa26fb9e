"""Prometheus metrics for the Placement service."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("placement_requests_total", "HTTP requests by route, method and status",
                   ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("placement_request_duration_seconds", "Request latency by route",
                    ["route", "method"], registry=REGISTRY,
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
CANDIDATES = Histogram("placement_allocation_candidates_returned",
                       "Allocation requests returned by GET /allocation_candidates",
                       registry=REGISTRY,
                       buckets=(0, 1, 10, 100, 1000, 10000, 100000))
SNAPSHOT_RELOADS = Gauge("placement_snapshot_reloads", "Provider summary rebuilds",
                         registry=REGISTRY)
POOL_CHECKED_OUT = Gauge("placement_db_pool_checked_out", "DB connections in use",
                         registry=REGISTRY)
POOL_SIZE = Gauge("placement_db_pool_size", "DB connection pool size", registry=REGISTRY)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route, method).observe(seconds)


def render(app) -> tuple[bytes, str]:
    pool = app.db.engine.pool
    try:
        POOL_CHECKED_OUT.set(pool.checkedout())
        POOL_SIZE.set(pool.size())
    except Exception:  # noqa: BLE001 - not every pool class counts
        pass
    SNAPSHOT_RELOADS.set(app.cache.reloads)
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
