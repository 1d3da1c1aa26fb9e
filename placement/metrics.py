"""Prometheus metrics for the Placement service.

With ``--workers N`` (N > 1) every worker process writes its samples to
files in a shared directory (prometheus_client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``), and a scrape of ``/metrics`` -- whichever
worker answers it -- adds up the counters and histograms of all workers, so
counters never jump back and forth between workers' values.  The gauges of
the database pool are summed over the live workers; the snapshot reloads
are summed over all workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
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
                         registry=REGISTRY, multiprocess_mode="sum")
POOL_CHECKED_OUT = Gauge("placement_db_pool_checked_out", "DB connections in use",
                         registry=REGISTRY, multiprocess_mode="livesum")
POOL_SIZE = Gauge("placement_db_pool_size", "DB connection pool size", registry=REGISTRY,
                  multiprocess_mode="livesum")

_GAUGES_EVERY = 1.0  # seconds between gauge updates of a worker
_last_gauges = [0.0]


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route, method).observe(seconds)


def update_gauges(app, force: bool = False) -> None:
    """The pool and snapshot gauges of this process (at most once a second,
    so that with several workers every worker's figures stay current)."""
    now = time.monotonic()
    if not force and now - _last_gauges[0] < _GAUGES_EVERY:
        return
    _last_gauges[0] = now
    pool = app.db.engine.pool
    try:
        POOL_CHECKED_OUT.set(pool.checkedout())
        POOL_SIZE.set(pool.size())
    except Exception:  # noqa: BLE001 - not every pool class counts
        pass
    SNAPSHOT_RELOADS.set(app.cache.reloads)


def render(app) -> tuple[bytes, str]:
    update_gauges(app, force=True)
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_OWNED_DIR: list[str] = []


def prepare_multiprocess() -> None:
    """Before the workers start: a fresh directory for their samples (the
    one in ``PROMETHEUS_MULTIPROC_DIR`` emptied, or a new temporary one)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
        return
    path = tempfile.mkdtemp(prefix="kova-placement-metrics-")
    _OWNED_DIR.append(path)
    os.environ[MULTIPROC_ENV] = path


def cleanup_multiprocess() -> None:
    for path in _OWNED_DIR:
        shutil.rmtree(path, ignore_errors=True)
    _OWNED_DIR.clear()
