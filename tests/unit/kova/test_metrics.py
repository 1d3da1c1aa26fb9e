"""kova.metrics: one naming style (checked when a metric is created) and the
metrics/health server every long-running component uses."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from kova.metrics import MetricSet, NameError_, serve
from tests.helpers import free_port


@pytest.mark.parametrize("make", [
    lambda m: m.counter("kova_test_requests", "no _total"),
    lambda m: m.gauge("kova_test_things_total", "a gauge named like a counter"),
    lambda m: m.histogram("kova_test_latency", "no unit", buckets=(1,)),
    lambda m: m.histogram("kova_test_size_bytes", "a unit but unit=None", buckets=(1,),
                          unit=None),
    lambda m: m.counter("other_requests_total", "wrong prefix"),
    lambda m: m.counter("kova_test_Bad_total", "upper case"),
])
def test_names_that_break_the_rules_are_refused(make):
    with pytest.raises(NameError_):
        make(MetricSet("kova_test", CollectorRegistry()))


def test_every_component_metric_follows_the_rules():
    import kova.operator.metrics  # noqa: F401 - created (and checked) at import
    import kova.placement.metrics  # noqa: F401 - the same rules, prefix placement_
    from kova.agents.metrics import AgentMetrics

    m = AgentMetrics()
    m.libvirt_reconnects(lambda: 3)
    m.observe_placement("GET /resource_providers", 0.01)
    m.placement_retried("503")


def test_server_serves_metrics_and_health():
    registry = CollectorRegistry()
    m = MetricSet("kova_test", registry)
    m.counter("kova_test_things_total", "Things.").inc(2)
    m.counter_function("kova_test_reconnects_total", "Reconnects.", lambda: 5)
    state = {"ok": True}
    port = free_port()
    srv = serve(port, registry, health=lambda: (state["ok"], "why"), bind="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        text = httpx.get(f"{base}/metrics").text
        assert "kova_test_things_total 2.0" in text and "kova_test_reconnects_total 5.0" in text
        assert httpx.get(f"{base}/healthz").json() == {"ok": True, "reason": "why"}
        state["ok"] = False
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert httpx.get(f"{base}/nothing").status_code == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_server_serves_only_the_series_asked_for():
    """``?name[]=`` (as Prometheus' federation and prometheus_client's own
    handler spell it): the other collectors are not even collected -- a
    poller of one counter does not pay for a page of 10 000 hosts."""
    registry = CollectorRegistry()
    m = MetricSet("kova_test", registry)
    m.counter("kova_test_things_total", "Things.").inc(2)
    collected: list[int] = []

    class Large:
        def describe(self):
            return [GaugeMetricFamily("kova_test_hosts", "Per host.")]

        def collect(self):
            collected.append(1)
            family = GaugeMetricFamily("kova_test_hosts", "Per host.", labels=["host"])
            for i in range(3):
                family.add_metric([f"h{i}"], 1)
            yield family

    registry.register(Large())
    port = free_port()
    srv = serve(port, registry, bind="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}/metrics"
        text = httpx.get(base, params={"name[]": "kova_test_things_total"}).text
        assert "kova_test_things_total 2.0" in text
        assert "kova_test_hosts" not in text and not collected
        both = httpx.get(base, params=[("name[]", "kova_test_things_total"),
                                       ("name[]", "kova_test_hosts")]).text
        assert 'kova_test_hosts{host="h2"} 1.0' in both and "kova_test_things_total" in both
        assert 'kova_test_hosts{host="h0"}' in httpx.get(base).text
    finally:
        srv.shutdown()
        srv.server_close()


def test_gauge_multiprocess_mode_combines_processes(tmp_path):
    """Two processes set the same gauge in prometheus_client's multiprocess
    mode; with multiprocess_mode="sum" a scrape sees one summed value, where
    the default ("all") keeps one sample per process."""
    from prometheus_client import generate_latest, multiprocess

    code = ("from prometheus_client import CollectorRegistry\n"
            "from kova.metrics import MetricSet\n"
            "m = MetricSet('kova_test', CollectorRegistry())\n"
            "m.gauge('kova_test_summed', 'x', multiprocess_mode='sum').set(3)\n"
            "m.gauge('kova_test_each', 'x').set(3)\n")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    lines = generate_latest(registry).decode().splitlines()
    assert "kova_test_summed 6.0" in lines
    assert len([x for x in lines if x.startswith("kova_test_each{")]) == 2
