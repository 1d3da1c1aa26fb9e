"""The two-host test bed as a pytest fixture (``two_hosts``, one per test
session and worker): two libvirt hosts, each a libvirtd in its own network
namespace with its own host UUID, reachable from each other over TCP (see
:mod:`kova.dev.twohost`).  Torn down at the end of the session, also after
failures; a start that fails half-way tears down what it made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kova.dev.twohost import TwoHosts


@pytest.fixture(scope="session")
def two_hosts(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    # ``libvirtd``: hack/start-libvirt.sh has written qemu.conf and made the
    # libvirt-qemu user, which the bed's daemons need too.
    bed = TwoHosts.start(tmp_path_factory.mktemp("twohost"))
    try:
        yield bed
    finally:
        bed.stop()
