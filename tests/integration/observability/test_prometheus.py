"""A real Prometheus (Debian's, cached by hack/install-promtool.sh) scraping
Kova's components as they run: Placement with three worker processes, the
operator as a process, and a compute agent on the real libvirtd with a guest
booted under QEMU on the kova-test network.  It checks that every target is
up, that the running guest's per-VM series arrive, that Placement's counters
stay consistent across its workers (never reset between scrapes, and count
exactly the requests sent, whichever worker answered them), and that every
query of the chart's Grafana dashboard parses and returns a number on this
Prometheus (its query API)."""

from __future__ import annotations

import json
import math
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.agents import operator_process, remove_domain
from tests.helpers import BOOT_TIMEOUT, PlacementServer, free_port, stop_process, wait_for
from tests.support.chart import by_kind, render

REPO = Path(__file__).resolve().parents[3]
SCRAPE = "1s"


def prometheus_binary() -> str:
    proc = subprocess.run(["bash", str(REPO / "hack" / "install-promtool.sh"), "--prometheus"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


class Prometheus:
    """``prometheus`` on a free loopback port with a temporary TSDB, scraping
    ``targets`` ({job: host:port}) every second."""

    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        config = {"global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]}
                                     for job, t in targets.items()]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=15)

        def ready() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                return self.http.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 60, 0.2, "prometheus ready")

    def targets(self) -> dict[str, dict]:
        body = self.http.get("/api/v1/targets").json()
        return {t["labels"]["job"]: t for t in body["data"]["activeTargets"]}

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr``; a query that does not parse fails
        the test with Prometheus's error."""
        r = self.http.get("/api/v1/query", params={"query": expr})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body)
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.http.close()
        stop_process(self.proc)
        self.log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the chart's dashboard, read from
    the ConfigMap the chart renders."""
    objs = by_kind(render({"grafanaDashboard.enabled": True}), "ConfigMap")
    (cm,) = [o for o in objs if o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    dashboard = json.loads(cm["data"]["kova.json"])
    out = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(out) >= 10, out
    return out


def has_number(result: list[dict]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


@pytest.fixture
def stack(harness, libvirtd, libvirt_test_network, tmp_path):
    """Placement (3 workers), the operator (a process) and the agent (real
    libvirtd, guests on the kova-test network), each with /metrics on a free
    loopback port."""
    placement = PlacementServer(tmp_path, ("--workers", "3"))
    try:
        agent_port = free_port()
        harness.agent(libvirt_uri=libvirtd, domain_type="qemu", metrics_port=agent_port,
                      metrics_bind="127.0.0.1", network=libvirt_test_network,
                      placement_url=placement.url, instance_dir=tmp_path / "instances")
        with operator_process(harness, placement, tmp_path, metrics=True) as operator:
            yield {"placement": placement.url.removeprefix("http://"),
                   "operator": operator.metrics_url.removeprefix("http://").removesuffix(
                       "/metrics"),
                   "agent": f"127.0.0.1:{agent_port}", "placement_server": placement}
    finally:
        placement.stop()


def test_prometheus_scrapes_every_component_and_the_dashboard_has_data(
        harness, stack, libvirt_qemu_conn, test_image, tmp_path):
    targets = {job: stack[job] for job in ("placement", "operator", "agent")}
    prom = Prometheus(tmp_path, targets)
    domain = f"{harness.ns}.vm"
    try:
        wait_for(lambda: (t := prom.targets()) and all(
            t.get(job, {}).get("health") == "up" for job in targets) and t,
            30, 0.5, "every target up")
        for job in targets:
            assert prom.scalar(f'up{{job="{job}"}}') == 1.0, job

        # a guest scheduled by the operator and booted by the agent, after
        # Prometheus's first scrapes (so that the latency histograms move)
        image = "kova-prom-" + uuid.uuid4().hex[:6]
        harness.image(image, test_image)
        harness.instance("vm", image, schedule=False,
                         resources={"vcpus": 1, "memoryMiB": 192, "diskGiB": 1})
        harness.wait_phase("vm", "Running", timeout=BOOT_TIMEOUT)
        guest = f'namespace="{harness.ns}",name="vm"'
        series = wait_for(
            lambda: (r := prom.query(f'{{__name__=~"kova_agent_guest_.+",{guest}}}'))
            and len({s["metric"]["__name__"] for s in r}) >= 11 and r,
            60, 1, "the guest's per-VM series in Prometheus")
        names = {s["metric"]["__name__"] for s in series}
        assert {"kova_agent_guest_cpu_seconds_total", "kova_agent_guest_memory_bytes",
                "kova_agent_guest_disk_read_bytes_total",
                "kova_agent_guest_network_transmit_bytes_total"} <= names
        for s in series:  # bounded cardinality: no per-device label
            assert set(s["metric"]) == {"__name__", "namespace", "name", "job", "instance"}, s
        assert prom.scalar(f'kova_agent_guest_memory_bytes{{{guest}}}') == 192 * 2**20

        _placement_counters_add_up(prom, stack["placement_server"])

        # the checks below can fail: an unknown series has no number, and a
        # query that does not parse is refused
        assert not has_number(prom.query("kova_operator_no_such_series"))
        assert prom.http.get("/api/v1/query", params={"query": "sum("}).status_code == 400
        missing = {}
        for title, expr in dashboard_queries():
            try:
                wait_for(lambda e=expr: has_number(prom.query(e)), 60, 1, expr)
            except AssertionError:
                missing[title] = (expr, prom.query(expr))
        assert not missing, f"dashboard queries without data: {missing}"
    finally:
        prom.stop()
        # the Instance first: while it exists, the running agent would define
        # its domain again after remove_domain
        try:
            harness.delete("vm")
            wait_for(lambda: harness.get("vm") is None, 90, 1, "the Instance deleted")
        finally:
            remove_domain(libvirt_qemu_conn, domain)


def _placement_counters_add_up(prom: Prometheus, placement: PlacementServer) -> None:
    """Placement's three workers share one count: N requests on fresh
    connections (spread over the workers) raise the scraped counter by exactly
    N, and no counter ever went backwards between two scrapes."""
    workers = subprocess.run(["pgrep", "-P", str(placement.proc.pid)], capture_output=True,
                             text=True).stdout.split()
    assert len(workers) >= 3, f"Placement runs {len(workers)} worker processes, not 3"
    healthz = 'sum(placement_requests_total{route="healthz",method="GET",status="200"})'
    before = prom.scalar(healthz) or 0.0
    sent = 30
    for _ in range(sent):
        assert httpx.get(f"{placement.url}/healthz", timeout=10).status_code == 200
    wait_for(lambda: prom.scalar(healthz) == before + sent, 30, 0.5,
             f"Prometheus to see {before + sent:g} healthz requests")
    resets = prom.scalar("sum(resets(placement_requests_total[10m]))")
    assert resets == 0.0, "a Placement counter went backwards between scrapes"
    assert prom.scalar('count(up{job="placement"} == 1)') == 1.0
