"""No silent failure: every reason an Instance does not get scheduled shows
on the Instance -- ``Scheduled=False`` with a reason and a message naming
the cause, within seconds, and one Warning Event -- and clears when the
cause is fixed.  Against the real API server and a real Placement that is
stopped, or that refuses the operator's token; hosts whose filters remove
them name each filter with its count."""

from __future__ import annotations

import secrets

import pytest

from kova.crds import names as contract
from tests.fixtures.operator import cluster_on, condition, scheduled_reason
from tests.helpers import wait_for
from tests.reliability.scheduling import PlacementProcess


def warnings_about(cluster, name: str, reason: str) -> list:
    return [e for e in cluster.core.list_namespaced_event(cluster.ns).items
            if e.involved_object.name == name and e.reason == reason and e.type == "Warning"]


def assert_one_warning(cluster, name: str, reason: str) -> None:
    """Exactly one Warning Event for ``reason`` (the recorder posts it just
    after the condition is written, so it is waited for)."""
    found = wait_for(lambda: warnings_about(cluster, name, reason), 10,
                     what=f"a {reason} Event on {name}")
    assert len(found) == 1, [e.message for e in found]


def assert_cleared(cluster, name: str) -> None:
    """Scheduled (the waiting condition replaced by Scheduled=True)."""
    inst = cluster.wait_scheduled(name, timeout=30)
    cond = condition(inst, contract.COND_SCHEDULED)
    assert cond["status"] == "True" and cond["reason"] == contract.REASON_SCHEDULED


@pytest.fixture
def placement_process(tmp_path):
    procs: list[PlacementProcess] = []

    def start(**kw) -> PlacementProcess:
        p = PlacementProcess(tmp_path, f"sqlite:///{tmp_path}/placement.db", **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def test_placement_unreachable_shows_on_the_instance_and_clears(
        k8s_client, kubeconfig, kova_crds, namespace, tmp_path, placement_process):
    placement = placement_process()
    with cluster_on(k8s_client, kubeconfig, namespace, placement, tmp_path) as cluster:
        cluster.add_host("h1")
        cluster.start_operator("--placement-retry-seconds", "1")
        placement.kill()
        cluster.create_instance("vm1")
        inst = cluster.wait_reason("vm1", contract.REASON_PLACEMENT_ERROR, timeout=20)
        cond = condition(inst, contract.COND_SCHEDULED)
        assert cond["status"] == "False"
        assert placement.url in cond["message"] and "unreachable" in cond["message"]
        assert inst["status"]["phase"] == "Pending"
        # retried with back-off while it waits: still one Event
        cluster.wait("vm1", lambda _: len(warnings_about(
            cluster, "vm1", contract.REASON_PLACEMENT_ERROR)) == 1, 10, "the Warning Event")
        placement.start()
        assert_cleared(cluster, "vm1")
        assert_one_warning(cluster, "vm1", contract.REASON_PLACEMENT_ERROR)
        assert "waits for Placement" in cluster.operator_log()


def test_placement_refusing_the_operators_token_shows_and_clears(
        k8s_client, kubeconfig, kova_crds, namespace, tmp_path, placement_process):
    good, wrong = secrets.token_hex(16), secrets.token_hex(16)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"admin {good}\n")
    placement = placement_process(auth=("--token-file", str(tokens)), token=good)
    with cluster_on(k8s_client, kubeconfig, namespace, placement, tmp_path) as cluster:
        cluster.add_host("h1")
        cluster.start_operator("--placement-token", wrong)
        cluster.create_instance("vm1")
        inst = cluster.wait_reason("vm1", contract.REASON_PLACEMENT_UNAUTHORIZED, timeout=20)
        msg = condition(inst, contract.COND_SCHEDULED)["message"]
        assert "refused the operator's credentials" in msg and "HTTP 401" in msg
        assert wrong not in msg  # the token is never shown
        assert_one_warning(cluster, "vm1", contract.REASON_PLACEMENT_UNAUTHORIZED)
        # Placement re-reads its token file: the operator's token becomes valid
        tokens.write_text(f"admin {good}\nadmin {wrong}\n")
        assert_cleared(cluster, "vm1")
        assert_one_warning(cluster, "vm1", contract.REASON_PLACEMENT_UNAUTHORIZED)


def test_no_valid_host_names_each_filter_with_its_count(cluster):
    down = cluster.add_host("down1", alive=False)
    cluster.add_host("down2", alive=False)
    # a provider no Host object belongs to (a host removed from the cluster)
    cluster.placement.provider(cluster.name("stray"),
                               {"VCPU": 8, "MEMORY_MB": 8192, "DISK_GB": 100},
                               traits={"HW_ARCH_X86_64"})
    cluster.start_operator()
    cluster.create_instance("vm1")
    inst = cluster.wait_reason("vm1", contract.REASON_NO_VALID_HOST, timeout=20)
    msg = condition(inst, contract.COND_SCHEDULED)["message"]
    assert msg == ("3 candidate host(s) from Placement, none passed the filters: "
                   "Heartbeat removed 2 (host down (heartbeat expired)), "
                   "KnownHost removed 1 (no Host object for provider)"), msg
    assert_one_warning(cluster, "vm1", contract.REASON_NO_VALID_HOST)
    cluster.heartbeat(down)  # the cause fixed: its agent is back
    inst = cluster.wait_scheduled("vm1", timeout=30)
    assert inst["status"]["host"] == down
    assert scheduled_reason(inst) == contract.REASON_SCHEDULED
    assert_one_warning(cluster, "vm1", contract.REASON_NO_VALID_HOST)


def test_image_not_there_yet_shows_and_clears_when_it_is_created(cluster):
    cluster.add_host("h1")
    cluster.start_operator()
    image = cluster.name("later")
    cluster.create_instance("vm1", imageRef={"name": image})
    inst = cluster.wait_reason("vm1", contract.REASON_IMAGE_NOT_FOUND, timeout=20)
    assert image in condition(inst, contract.COND_SCHEDULED)["message"]
    assert inst["status"]["phase"] == "Pending"
    cluster.wait("vm1", lambda _: len(warnings_about(
        cluster, "vm1", contract.REASON_IMAGE_NOT_FOUND)) == 1, 10, "the Warning Event")
    cluster.create_image(image)  # the cause fixed
    assert_cleared(cluster, "vm1")
    assert_one_warning(cluster, "vm1", contract.REASON_IMAGE_NOT_FOUND)
