"""One lease-namespace setting read by both sides: the agent renews its
heartbeat Lease in the namespace ``--lease-namespace`` names and the operator
(``kova operator run --lease-namespace``, the same flag and the same
``KOVA_LEASE_NAMESPACE`` variable) reads it there, so the Host goes Up.  An
operator left on the default namespace sees no heartbeat: the Host stays
Unknown -- the setting really is what connects the two."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kova.cli import main
from kova.crds import names as contract
from tests.fixtures.agents import operator_process, wait_for


def _state(harness) -> str | None:
    return ((harness.host_obj() or {}).get("status") or {}).get("state")


def test_operator_and_agent_on_a_non_default_lease_namespace(harness, placement, tmp_path):
    from kubernetes.client import ApiException

    lease_ns = harness.ns  # the test's own namespace, not kova-system
    assert lease_ns != contract.LEASE_NAMESPACE
    harness.agent(placement_url=placement.url, lease_namespace=lease_ns)
    lease = harness.coord.read_namespaced_lease(harness.host, lease_ns)
    assert lease.spec.holder_identity == harness.host
    with pytest.raises(ApiException) as missing:
        harness.coord.read_namespaced_lease(harness.host, contract.LEASE_NAMESPACE)
    assert missing.value.status == 404

    for d in ("default-ns", "lease-ns"):
        (tmp_path / d).mkdir()
    # The operator on the default namespace finds no Lease for the host.
    with operator_process(harness, placement, tmp_path / "default-ns"):
        wait_for(lambda: _state(harness) == contract.HostState.UNKNOWN, 30,
                 what="Host Unknown: no heartbeat in the default Lease namespace")
    # The same operator told the agent's namespace: the heartbeat is seen.
    with operator_process(harness, placement, tmp_path / "lease-ns",
                          "--lease-namespace", lease_ns) as op:
        wait_for(lambda: _state(harness) == contract.HostState.UP, 30,
                 what="Host Up with its Lease in the test namespace")
        assert op.poll() is None
    conds = {c["type"]: c for c in harness.host_obj()["status"]["conditions"]}
    assert conds[contract.HOST_COND_READY]["status"] == "True", conds


@pytest.mark.parametrize("command", ["operator", "agent"])
def test_one_flag_and_variable_on_both_sides(command):
    out = CliRunner().invoke(main, [command, "run", "--help"]).output
    assert "--lease-namespace" in out and "KOVA_LEASE_NAMESPACE" in out, out
