"""The ``cluster`` tier: Kova installed with Helm on a real one-node cluster
of this machine (``kova.dev.cluster.NodeCluster``): a control plane with a
scheduler, a kubelet with containerd and runc, kube-proxy, CoreDNS, the
images built here without a registry, and a libvirtd of the node's own for
the agent pod.  One cluster per test session; it is torn down afterwards,
also after a failure.

The figures the tests measure (time from ``helm install`` to the first
Instance Running, upgrade and rollback) are printed at the end of the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from kova.dev.cluster import NodeCluster

#: name -> seconds, filled by the tests, printed in the terminal summary.
FIGURES: dict[str, float] = {}


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    cluster = NodeCluster(root=tmp_path_factory.mktemp("cluster"), private_libvirt=True)
    try:
        cluster.start(progress=_progress)
        yield cluster
    finally:
        cluster.destroy()


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "cluster tier figures (seconds)")
        for name, seconds in FIGURES.items():
            terminalreporter.write_line(f"{name:55} {seconds:7.1f}")
