"""The agent's API token rotates under it (a kubeconfig ``tokenFile`` with
TokenRequest tokens bound to Secrets; the old token revoked after each
rotation): the agent keeps renewing its heartbeat Lease and builds an
Instance scheduled after the rotation."""

from __future__ import annotations

import time

from tests.fixtures.agents import wait_for


def _renewed(harness) -> float:
    lease = harness.coord.read_namespaced_lease(harness.host, "kova-system")
    return lease.spec.renew_time.timestamp()


def test_agent_keeps_working_after_its_token_file_is_rotated(harness, rotating_token,
                                                             small_image, libvirt_conn):
    rt = rotating_token
    harness.agent(kubeconfig=str(rt.kubeconfig))
    harness.image(f"img-{harness.host}", small_image)
    harness.instance("before", f"img-{harness.host}")
    harness.wait_phase("before", "Running")

    old = rt.rotate()
    assert rt.status_with(old) == 401
    rotated = time.time()
    wait_for(lambda: _renewed(harness) > rotated + 1, 15, what="Lease renewed with the new token")
    harness.instance("after", f"img-{harness.host}")
    got = harness.wait_phase("after", "Running")
    assert got["status"]["host"] == harness.host
