"""Hosts and heartbeats at scale, through a real ``kova operator run``: a
burst of registrations is absorbed (each Host written once per state it
goes through, renewals write nothing, every write a PUT of the status: the
API server counts no PATCH of a Host's status), a mass expiry of Leases is
found by the expiry timer (not by listing) and marks every host Down, and SIGTERM
stops an operator whose workers are stuck within ``--shutdown-grace``."""

from __future__ import annotations

import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from kova.crds import names as contract
from kova.dev.controlplane import free_port
from kova.dev.metrics import scrape
from tests.fixtures.operator import lease_time, wait_for

N_HOSTS = 150
WRITES = "kova_operator_host_state_writes_total"
EXPIRIES = "kova_operator_lease_expiries_total"


def _register(cluster, count: int, prefix: str) -> list[str]:
    """``count`` hosts at once, as their agents register them (Host, then
    the heartbeat Lease), eight at a time."""
    def one(i: int) -> str:
        name = cluster.add_host(f"{prefix}{i:03d}", provider=False, alive=False)
        cluster.heartbeat(name)
        return name

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def _states(cluster, hosts: list[str]) -> dict[str, int]:
    wanted = set(hosts)
    out: dict[str, int] = {}
    for h in cluster.api.list_cluster_custom_object("kova.dev", "v1alpha1", "hosts")["items"]:
        if h["metadata"]["name"] in wanted:
            state = (h.get("status") or {}).get("state") or "none"
            out[state] = out.get(state, 0) + 1
    return out


def _host_status_requests(k8s) -> dict[str, float]:
    """The API server's count of requests to ``hosts/status``, by verb."""
    text = httpx.get(k8s.server + "/metrics", verify=str(k8s.ca_file), timeout=30,
                     headers={"Authorization": f"Bearer {k8s.admin_token}"}).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            series, _, value = line.rpartition(" ")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', series))
            if labels.get("resource") == "hosts" and labels.get("subresource") == "status":
                out[labels["verb"]] = out.get(labels["verb"], 0.0) + float(value)
    return out


def _renew_all(cluster, hosts: list[str], duration: int) -> None:
    spec = {"spec": {"leaseDurationSeconds": duration, "renewTime": lease_time()}}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda h: cluster.coord.patch_namespaced_lease(
            h, contract.LEASE_NAMESPACE, spec), hosts))


def test_mass_registration_renewals_and_mass_expiry(cluster, k8s):
    mport = free_port()
    cluster.start_operator("--metrics-port", str(mport), "--host-check-interval", "5")
    url = f"http://127.0.0.1:{mport}/metrics"
    wait_for(lambda: scrape(url, missing_ok=True), 60, what="operator metrics")
    base = scrape(url)
    requests_before = _host_status_requests(k8s)

    hosts = _register(cluster, N_HOSTS, "burst-")
    wait_for(lambda: _states(cluster, hosts).get("Up") == N_HOSTS, 90,
             what=f"{N_HOSTS} hosts Up")
    time.sleep(1)  # let a late (stale) write show up if there were one
    m = scrape(url)
    writes = m.get(WRITES, 0) - base.get(WRITES, 0)
    # At most one write per state a host went through (Unknown before its
    # Lease came, then Up); a write per event would be far more.
    assert N_HOSTS <= writes <= 2 * N_HOSTS, writes
    # ... each a guarded PUT of the watched Host's status, none a merge
    # patch (the hosts here register no provider: nothing else writes their
    # status)
    requests = _host_status_requests(k8s)
    puts = requests.get("PUT", 0) - requests_before.get("PUT", 0)
    assert puts >= writes, (puts, writes)  # a conflict (409) is a PUT more
    assert requests.get("PATCH", 0) == requests_before.get("PATCH", 0), requests

    # Renewals change nothing: no Host is written again.
    _renew_all(cluster, hosts, 3600)
    time.sleep(2)
    assert scrape(url).get(WRITES, 0) == m.get(WRITES, 0)

    # A rack power loss: every Lease renewed once more with a short
    # duration, then never again.  The expiry timer (not a listing: the
    # counter says so) marks every host Down.
    duration = 3
    _renew_all(cluster, hosts, duration)
    t0 = time.monotonic()
    wait_for(lambda: _states(cluster, hosts).get("Down") == N_HOSTS, duration + 60,
             interval=0.2, what=f"{N_HOSTS} hosts Down")
    print(f"{N_HOSTS} Leases of {duration}s expired: all Down "
          f"{time.monotonic() - t0:.1f}s after the last renewal")
    assert scrape(url).get(EXPIRIES, 0) - base.get(EXPIRIES, 0) >= N_HOSTS
    ready = cluster.get_host(hosts[0])["status"]["conditions"]
    assert any(c["type"] == "Ready" and c["status"] == "False"
               and c["reason"] == contract.HOST_REASON_DOWN for c in ready)


def test_sigterm_stops_a_loaded_operator_within_the_grace(cluster):
    """Workers stuck on a Placement that accepts connections and never
    answers, 300 Hosts and Leases arriving, 60 Instances queued: SIGTERM
    still ends the process within --shutdown-grace."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(1024)  # never accepted: every request hangs
    real_url = cluster.placement.url
    cluster.placement.url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    try:
        mport, grace = free_port(), 4.0
        proc = cluster.start_operator("--metrics-port", str(mport), "--shutdown-grace",
                                      str(grace), "--workers", "4",
                                      "--placement-retry-seconds", "600")
        url = f"http://127.0.0.1:{mport}/metrics"
        wait_for(lambda: scrape(url, missing_ok=True), 60, what="operator metrics")
        for i in range(60):
            cluster.create_instance(f"vm-{i:02d}")
        _register(cluster, 300, "load-")
        wait_for(lambda: scrape(url).get("kova_operator_queue_depth", 0) > 0, 60,
                 what="work waiting in the operator's queue")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(grace + 30)
        took = time.monotonic() - t0
        print(f"exited {took:.1f}s after SIGTERM (grace {grace}s), status {rc}")
        stopping = [line for line in cluster.operator_log().splitlines()
                    if "stopping" in line or "shutdown" in line]
        print("\n".join(stopping))
        assert took <= grace + 3, (took, stopping)
        assert any("stopping (at most" in line for line in stopping)  # the clock ran
        assert rc == 0
    finally:
        cluster.placement.url = real_url
        blackhole.close()
