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

* ``agents``, ``operator``, ``placement``, ``vm`` -- each component's harness:
  the compute agent on a libvirt connection (``harness``, ``small_image``), the
  operator with Placement (``cluster``), Placement's app on SQLite and Postgres
  (``api``), a VM booted for the subresource API (``vm``).
* ``tests/support/twohost.py`` -- ``two_hosts`` (per session): two libvirt
  hosts, each a libvirtd in its own network namespace with its own host UUID,
  reaching each other over TCP, for moves between hosts.

The directory is the tier: ``tests/unit/<component>/`` (no external component),
``tests/integration/<component>/`` (real kube-apiserver, Postgres or libvirtd),
``tests/e2e/`` (real QEMU guests, the one-node cluster under ``tests/e2e/cluster/``)
each get the pytest marker of their name (the cluster tier is marked ``cluster``
too); ``tests/reliability/`` holds the fault
tests, marked ``reliability`` and with the tier they need.  Shared non-fixture
code sits in ``tests/support/`` and ``tests/helpers.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.controlplane",
    "tests.fixtures.postgres",
    "tests.fixtures.libvirt",
    "tests.fixtures.crds",
    "tests.fixtures.api",
    "tests.fixtures.vm",
    "tests.fixtures.placement",
    "tests.fixtures.operator",
    "tests.fixtures.agents",
    "tests.support.twohost",
]

TIERS = ("unit", "integration", "e2e", "cluster")
DIR_TIERS = ("unit", "integration", "e2e")
TESTS = Path(__file__).resolve().parent


def tier_of(path: Path) -> str | None:
    """The tier a test module's directory gives it (tests/<tier>/...), or None
    under tests/reliability/, whose modules carry their own tier marker."""
    try:
        top = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return top if top in DIR_TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(Path(str(item.path)))
        if tier:
            item.add_marker(getattr(pytest.mark, tier))
        elif not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
    # Long variants (marked ``slow``) are deselected, not skipped, unless
    # KOVA_SLOW=1: the default run reports only tests that ran.
    if os.environ.get("KOVA_SLOW", "") in ("", "0", "false"):
        slow = [i for i in items if i.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [i for i in items if not i.get_closest_marker("slow")]
