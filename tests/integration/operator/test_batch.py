"""Integration: batch scheduling (kova.operator.scheduler.batch) against the real API
server and a real Placement -- a burst decided in batches fills the hosts
exactly, a batch claim that loses a race (a real 409 from Placement) falls
back to claims one by one without overcommitting, and a claim made before a
restart is adopted inside a batch."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from kova.crds import names as contract
from kova.dev.controlplane import free_port
from tests.fixtures.operator import wait_for

SLOT = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}  # the cluster fixture's flavor


def metric(port: int, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def scheduled(cluster) -> list[dict]:
    return [i for i in cluster.instances() if (i.get("status") or {}).get("phase") == "Scheduled"]


def check_no_overcommit(cluster, capacity_mib: int) -> None:
    for host, rp in cluster.hosts.items():
        usage = cluster.placement.usages(rp)
        assert usage.get("MEMORY_MB", 0) <= capacity_mib, (host, usage)


def start_and_wait_scheduled(cluster, n: int, *args: str) -> int:
    """Start the operator (32 workers, metrics on a free port, further
    ``args``) and wait until ``n`` Instances are Scheduled; return the
    metrics port."""
    mport = free_port()
    cluster.start_operator("--metrics-port", str(mport), "--workers", "32", *args)
    wait_for(lambda: len(scheduled(cluster)) == n, 60, interval=0.3, what="all scheduled")
    return mport


def check_recorded(cluster, insts: list[dict], consumers: dict[str, str]) -> None:
    """One allocation per Instance and none else; each on the host, with the
    label and finalizer, the Instance records, decided at the first attempt."""
    assert set(consumers) == {i["metadata"]["uid"] for i in insts}
    rp_host = {rp: h for h, rp in cluster.hosts.items()}
    for inst in insts:
        uid, host = inst["metadata"]["uid"], inst["status"]["host"]
        assert rp_host[consumers[uid]] == host, inst["metadata"]["name"]
        assert inst["metadata"]["labels"][contract.LABEL_HOST] == host
        assert contract.FINALIZER_OPERATOR in inst["metadata"]["finalizers"]
        assert inst["status"]["attempts"] == 1


def test_burst_in_batches_fills_hosts_exactly(cluster):
    """24 Instances for 6 hosts with room for 4 each, all waiting when the
    operator starts: decided in batches, every host ends exactly full (the
    batch counts its own choices, so no batch claim is ever refused), every
    Instance recorded, allocations equal Instances."""
    for i in range(6):
        cluster.add_host(f"h{i}", vcpus=16, memory_mib=4 * 512, disk_gib=100)
    n = 24
    for i in range(n):
        cluster.create_instance(f"b{i:02d}")
    mport = start_and_wait_scheduled(cluster, n)
    insts = cluster.instances()
    consumers = cluster.placement.all_consumers()
    check_recorded(cluster, insts, consumers)
    for host, rp in cluster.hosts.items():
        assert cluster.placement.usages(rp)["MEMORY_MB"] == 4 * 512, host
    batches = metric(mport, "kova_operator_schedule_batch_size_count")
    members = metric(mport, "kova_operator_schedule_batch_size_sum")
    assert members == n and batches < n, (batches, members)  # some batch had several
    assert metric(mport, "kova_operator_schedule_batch_fallbacks_total") == 0


class RacingProxy:
    """An HTTP pass-through in front of the real Placement that, just before
    forwarding the first ``POST /allocations`` (a batch claim), lets another
    scheduler fill one of the hosts that batch chose -- a race that real
    timing produces only by chance, made certain.  Placement itself then
    answers the batch with its real 409."""

    def __init__(self, upstream: str, fill) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=30)
        self.fill = fill
        self.raced: list[str] = []
        self.batch_posts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "POST" and self.path.startswith("/allocations"):
                    proxy.batch_posts += 1
                    if not proxy.raced:
                        claims = json.loads(body)
                        rp = next(iter(next(iter(claims.values()))["allocations"]))
                        proxy.fill(rp)
                        proxy.raced.append(rp)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                resp = proxy.upstream.request(self.command, self.path, content=body,
                                              headers=headers)
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_PUT = do_POST = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


def test_batch_claim_that_loses_a_race_falls_back_without_overcommit(cluster):
    """Another scheduler takes a host between the batch's candidates and its
    claim: Placement refuses the whole batch (409, nothing written), the
    operator claims the Instances one by one, moving those meant for the lost
    host elsewhere; the end state is complete and within capacity."""
    capacity = 6 * 512
    for i in range(4):
        cluster.add_host(f"h{i}", vcpus=16, memory_mib=capacity, disk_gib=100)
    http = cluster.placement.http
    competitor = str(uuid.uuid4())

    def fill(rp: str) -> None:
        """The other scheduler claims everything that is left on ``rp``."""
        used = cluster.placement.usages(rp).get("MEMORY_MB", 0)
        r = http.put(f"/allocations/{competitor}", json={
            "allocations": {rp: {"resources": {"MEMORY_MB": capacity - used}}},
            "project_id": "other", "user_id": "other", "consumer_generation": None,
            "consumer_type": "INSTANCE"})
        assert r.status_code == 204, r.text

    proxy = RacingProxy(cluster.placement.url, fill)
    try:
        n = 12  # 4 hosts x 6 slots, one host lost to the competitor: 18 left
        for i in range(n):
            cluster.create_instance(f"r{i:02d}")
        mport = start_and_wait_scheduled(cluster, n, "--placement-url", proxy.url)
        assert proxy.raced, "no batch claim was made"
        (lost,) = proxy.raced
        insts = cluster.instances()
        consumers = cluster.placement.all_consumers()
        assert consumers.pop(competitor) == lost
        check_recorded(cluster, insts, consumers)
        assert lost not in consumers.values()  # nobody got onto the host that was taken
        check_no_overcommit(cluster, capacity)
        assert metric(mport, "kova_operator_schedule_batch_fallbacks_total") >= 1
    finally:
        proxy.close()


def test_claim_made_before_a_restart_is_adopted_in_a_batch(cluster):
    """An Instance whose claim was made but never recorded (the operator died
    in between) sits in a batch with others: the batch claim gets 409 for that
    consumer, and the fallback adopts the existing claim instead of making a
    second one."""
    for i in range(3):
        cluster.add_host(f"h{i}", vcpus=16, memory_mib=8 * 512, disk_gib=100)
    n = 10
    for i in range(n):
        cluster.create_instance(f"a{i:02d}")
    victim = cluster.get("a03")
    hosts = list(cluster.hosts)
    pre_rp = cluster.hosts[hosts[2]]
    r = cluster.placement.http.put(f"/allocations/{victim['metadata']['uid']}", json={
        "allocations": {pre_rp: {"resources": SLOT}},
        "project_id": contract.project_id(cluster.ns), "user_id": contract.ALLOCATION_USER_ID,
        "consumer_generation": None, "consumer_type": contract.CONSUMER_TYPE})
    assert r.status_code == 204, r.text
    start_and_wait_scheduled(cluster, n)
    insts = cluster.instances()
    consumers = cluster.placement.all_consumers()
    check_recorded(cluster, insts, consumers)
    assert cluster.get("a03")["status"]["host"] == hosts[2]
    alloc = cluster.placement.allocations(victim["metadata"]["uid"])
    assert set(alloc) == {pre_rp} and alloc[pre_rp]["resources"] == SLOT
    check_no_overcommit(cluster, 8 * 512)


def test_normal_events_are_rate_limited_warnings_are_not(cluster):
    """--event-qps/--event-burst: a burst gets at most a bucketful of
    Scheduled Events (the rest are counted as dropped; every status still
    says Scheduled), while a Warning (NoValidHost) is posted with the bucket
    empty."""
    cluster.add_host("h0", vcpus=16, memory_mib=16 * 512, disk_gib=100)
    n = 8
    for i in range(n):
        cluster.create_instance(f"e{i}")
    mport = free_port()
    # one token per 1000 s: only the bucket of 3 is ever posted
    cluster.start_operator("--metrics-port", str(mport), "--event-qps", "0.001",
                           "--event-burst", "3")
    wait_for(lambda: len(scheduled(cluster)) == n, 60, interval=0.3, what="all scheduled")

    def events(reason: str) -> list:
        return [e for e in cluster.core.list_namespaced_event(cluster.ns).items
                if e.reason == reason]

    wait_for(lambda: len(events("Scheduled")) == 3, 20, what="three Scheduled Events")
    assert metric(mport, "kova_operator_events_dropped_total") == n - 3
    cluster.create_instance("huge", resources={"vcpus": 64, "memoryMiB": 512, "diskGiB": 1})
    cluster.wait_reason("huge", "NoValidHost")
    wait_for(lambda: [e for e in events("NoValidHost") if e.involved_object.name == "huge"],
             20, what="the NoValidHost Warning")
    assert e_type(events("NoValidHost")) == {"Warning"}
    assert len(events("Scheduled")) == 3


def e_type(events: list) -> set[str]:
    return {e.type for e in events}


def test_burst_of_two_flavors_in_batches(cluster):
    """Two groups in the same batches (a 512 MiB and a 1 GiB flavor): each
    group claims before the next one asks Placement, so no batch claim is
    refused and no host gets more than it holds."""
    capacity = 6 * 512
    for i in range(3):
        cluster.add_host(f"h{i}", vcpus=16, memory_mib=capacity, disk_gib=100)
    big = cluster.name("big")
    cluster.create_flavor(big, vcpus=1, memoryMiB=1024, diskGiB=1)
    names = []
    for i in range(6):
        cluster.create_instance(f"s{i}")
        names.append(f"s{i}")
        if i < 4:
            cluster.create_instance(f"d{i}", flavorRef={"name": big})
            names.append(f"d{i}")
    n = len(names)  # 6 x 512 MiB + 4 x 1 GiB = 14 of 18 slots
    mport = start_and_wait_scheduled(cluster, n)
    insts = cluster.instances()
    consumers = cluster.placement.all_consumers()
    check_recorded(cluster, insts, consumers)
    check_no_overcommit(cluster, capacity)
    for inst in insts:
        want = 1024 if inst["metadata"]["name"].startswith("d") else 512
        alloc = cluster.placement.allocations(inst["metadata"]["uid"])
        assert [a["resources"]["MEMORY_MB"] for a in alloc.values()] == [want]
    assert metric(mport, "kova_operator_schedule_batch_fallbacks_total") == 0
