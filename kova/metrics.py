"""Prometheus metrics, in one style for every Kova component.

Names: ``kova_<component>_<what>[_<unit>]`` -- counters end in ``_total``,
durations in ``_seconds``, sizes in ``_bytes``; a gauge never ends in
``_total``.  :class:`MetricSet` creates a component's metrics and refuses a
name that breaks these rules, so the check runs whenever the module is
imported (and in the unit tests).

:func:`serve` exposes a registry on ``/metrics`` (``?name[]=`` selects
series) -- and, when given a health
function, ``/healthz`` and ``/readyz`` (200 or 503 with a JSON reason) -- from
a daemon thread whose connections time out, so a stuck scraper cannot hold
a thread forever.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

_NAME = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")
UNITS = ("_seconds", "_bytes")
#: Scraper connections are closed after this many seconds without a request.
TIMEOUT = 10.0

Health = Callable[[], tuple[bool, str]]
#: How prometheus_client's multiprocess mode combines a gauge of several
#: processes ("live...": only the processes still running).
GaugeMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum",
                    "mostrecent", "livemostrecent"]


class NameError_(ValueError):  # noqa: N801 - not the builtin NameError
    """A metric name that breaks Kova's naming rules."""


class MetricSet:
    """The metrics of one component: ``prefix`` (e.g. ``kova_agent``) and the
    registry they are exposed from (default: the process-wide one)."""

    def __init__(self, prefix: str, registry: CollectorRegistry | None = None) -> None:
        self.prefix = prefix
        self.registry = registry if registry is not None else REGISTRY

    def _name(self, name: str) -> str:
        if not name.startswith(self.prefix + "_") or not _NAME.match(name):
            raise NameError_(f"metric {name!r} must be {self.prefix}_<lower_case_words>")
        return name

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        if not name.endswith("_total"):
            raise NameError_(f"counter {name!r} must end in _total")
        return Counter(self._name(name), doc, list(labels), registry=self.registry)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = (), *,
              multiprocess_mode: GaugeMode = "all") -> Gauge:
        """A gauge; ``multiprocess_mode`` says how prometheus_client's
        multiprocess mode combines the values of several worker processes
        (``livesum``: summed over the live ones, ...)."""
        if name.endswith("_total"):
            raise NameError_(f"gauge {name!r} must not end in _total (a counter's suffix)")
        return Gauge(self._name(name), doc, list(labels), registry=self.registry,
                     multiprocess_mode=multiprocess_mode)

    def histogram(self, name: str, doc: str, labels: Sequence[str] = (), *,
                  buckets: Iterable[float], unit: str | None = "_seconds") -> Histogram:
        """A histogram whose name ends in ``unit`` (None: a plain count, such
        as tries or batch sizes)."""
        if unit is not None and not name.endswith(unit):
            raise NameError_(f"histogram {name!r} must end in its unit {unit}")
        if unit is None and name.endswith(UNITS):
            raise NameError_(f"histogram {name!r} names a unit: pass unit=")
        return Histogram(self._name(name), doc, list(labels), buckets=tuple(buckets),
                         registry=self.registry)

    def family(self, kind: str, name: str, doc: str,
               labels: Sequence[str] = ()) -> CounterMetricFamily | GaugeMetricFamily:
        """A ``counter`` or ``gauge`` family for a collector that reads its
        values at scrape time, named by the same rules."""
        if kind == "counter":
            if not name.endswith("_total"):
                raise NameError_(f"counter {name!r} must end in _total")
            return CounterMetricFamily(self._name(name)[: -len("_total")], doc,
                                       labels=list(labels))
        if name.endswith("_total"):
            raise NameError_(f"gauge {name!r} must not end in _total (a counter's suffix)")
        return GaugeMetricFamily(self._name(name), doc, labels=list(labels))

    def counter_function(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A counter whose value is ``read()`` at each scrape (a count kept
        elsewhere, such as a connection's reconnects)."""
        if not name.endswith("_total"):
            raise NameError_(f"counter {name!r} must end in _total")
        full = self._name(name)[: -len("_total")]

        class _Collector:
            def collect(self) -> Iterable[Metric]:
                family = CounterMetricFamily(full, doc)
                family.add_metric([], read())
                yield family

        self.registry.register(_Collector())


class _Handler(http.server.BaseHTTPRequestHandler):
    registry: CollectorRegistry = REGISTRY
    health: Health | None = None
    timeout = TIMEOUT

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path, _, query = self.path.partition("?")
        if path == "/metrics":
            # ?name[]=a&name[]=b: only those series (as prometheus_client's own
            # handler does); a scraper polling one counter often then costs the
            # process no more than that counter, not the whole page
            wanted = urllib.parse.parse_qs(query).get("name[]")
            registry = self.registry.restricted_registry(wanted) if wanted else self.registry
            self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz") and self.health is not None:
            ok, why = self.health()
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


def serve(port: int, registry: CollectorRegistry | None = None, *,
          health: Health | None = None, bind: str = "0.0.0.0",
          name: str = "metrics") -> http.server.ThreadingHTTPServer:
    """Serve ``registry`` (and ``health``) on ``bind:port`` from a daemon
    thread; ``shutdown()`` and ``server_close()`` the result to stop it."""
    handler = type("MetricsHandler", (_Handler,), {
        "registry": registry if registry is not None else REGISTRY,
        "health": staticmethod(health) if health is not None else None,
    })
    server = http.server.ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server
