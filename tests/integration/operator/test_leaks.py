"""A stripped finalizer does not leak an allocation for good: the periodic
audit heals orphans by default (no --audit-heal given)."""

from __future__ import annotations

from tests.fixtures.operator import wait_for


def test_stripped_finalizer_is_healed_by_default(cluster):
    h = cluster.add_host("h1")
    op = cluster.start_operator()
    cluster.create_instance("vm1")
    uid = cluster.wait_scheduled("vm1")["metadata"]["uid"]
    assert list(cluster.placement.allocations(uid)) == [cluster.hosts[h]]
    # what the tenant restriction keeps to administrators: the finalizers
    # removed and the Instance deleted while the operator is away (a running
    # operator would put its finalizer back first)
    cluster.stop_operator(op)
    cluster.api.patch_namespaced_custom_object(
        "kova.dev", "v1alpha1", cluster.ns, "instances", "vm1",
        {"metadata": {"finalizers": None}})
    cluster.delete("vm1")
    wait_for(lambda: cluster.get("vm1") is None, 20, what="vm1 gone")
    assert list(cluster.placement.allocations(uid)) == [cluster.hosts[h]]  # leaked
    cluster.start_operator("--audit-interval", "1")
    wait_for(lambda: cluster.placement.allocations(uid) == {}, 30, what="the leak healed")
