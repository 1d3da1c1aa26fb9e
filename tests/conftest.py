"""Shared test configuration.

Fixtures live in ``tests/fixtures/`` as plugins, one per real component:

* ``controlplane`` -- one etcd + kube-apiserver (+ controller manager) per test
  session; ``k8s`` (the running ControlPlane), ``kubeconfig``, ``k8s_client``
  (a ``kubernetes.client.ApiClient``), ``namespace`` (fresh per test, deleted
  afterwards) and ``kubectl`` (runs the real kubectl against it).
* ``postgres`` -- the local Postgres 15 server; ``postgres_server_url`` and
  ``pg_database`` (a fresh database per test module, dropped afterwards).
* ``libvirt`` -- ``libvirt_test_conn`` (``test:///default``), ``libvirt_qemu_conn``
  (``qemu:///system`` on the locally started libvirtd) and ``test_image``.
* ``api`` -- ``kova_api`` (Kova's API component for the session, registered as
  the APIService) and ``make_user`` (a ServiceAccount bound to a role, with a
  kubeconfig).

Tiers are pytest markers: ``unit``, ``integration``, ``e2e``, ``cluster`` (the
chart on a real one-node cluster, ``tests/cluster/``).  A test module
without a marker is marked ``unit`` automatically.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.controlplane",
    "tests.fixtures.postgres",
    "tests.fixtures.libvirt",
    "tests.fixtures.crds",
    "tests.fixtures.api",
]

TIERS = ("unit", "integration", "e2e", "cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
    # Long variants (marked ``slow``) are deselected, not skipped, unless
    # KOVA_SLOW=1: the default run reports only tests that ran.
    if os.environ.get("KOVA_SLOW", "") in ("", "0", "false"):
        slow = [i for i in items if i.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if not i.get_closest_marker("slow")]
