"""Prometheus metrics for the Placement service.

With ``--workers N`` (N > 1) every worker process writes its samples to
files in a shared directory (prometheus_client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``), and a scrape of ``/metrics`` -- whichever
worker answers it -- adds up the counters and histograms of all workers, so
counters never jump back and forth between workers' values.  The gauges of
the database pool are summed over the live workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kova.metrics import MetricSet

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)
# Kova's naming rules (kova.metrics) with the ``placement_`` prefix that
# Placement's metrics have always had (scrapers and alerts select on it).
_M = MetricSet("placement", REGISTRY)

REQUESTS = _M.counter("placement_requests_total", "HTTP requests by route, method and status",
                      ["route", "method", "status"])
LATENCY = _M.histogram("placement_request_duration_seconds", "Request latency by route",
                       ["route", "method"],
                       buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
CANDIDATES = _M.histogram("placement_allocation_candidates_returned",
                          "Allocation requests returned by GET /allocation_candidates",
                          buckets=(0, 1, 10, 100, 1000, 10000, 100000), unit=None)
SNAPSHOT_RELOADS = _M.counter("placement_snapshot_reloads_total", "Provider summary rebuilds")
POOL_CHECKED_OUT = _M.gauge("placement_db_pool_checked_out", "DB connections in use",
                            multiprocess_mode="livesum")
POOL_SIZE = _M.gauge("placement_db_pool_size", "DB connection pool size",
                     multiprocess_mode="livesum")

_GAUGES_EVERY = 1.0  # seconds between gauge updates of a worker
_last_gauges = [0.0]
#: Per provider-summary cache: the rebuilds already added to SNAPSHOT_RELOADS.
_counted_reloads: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    # The cache counts its rebuilds; the counter catches up with it.
    cache = app.cache
    new = cache.reloads - _counted_reloads.get(cache, 0)
    if new > 0:
        SNAPSHOT_RELOADS.inc(new)
        _counted_reloads[cache] = cache.reloads


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
