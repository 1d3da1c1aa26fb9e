"""A test namespace and a local stack of one simulated host, for the e2e
modules that drive a real guest through ``kubectl kova``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kova.dev.stack import Stack


@contextmanager
def temp_namespace(kubectl: Callable, prefix: str) -> Iterator[str]:
    """A namespace ``<prefix>-<random>``, deleted (waiting) afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)


@contextmanager
def one_host_stack(k8s, kova_api, namespace: str, root: Path, prefix: str,
                   operator_args: list[str] | None = None,
                   log_lines: int = 15) -> Iterator[Stack]:
    """Operator, Placement and one agent (host ``<prefix>-<random>``) with the
    API component's stream PKI; the tail of each log printed afterwards."""
    st = Stack(root=root / "stack", stream_pki_dir=kova_api.pki.ca_crt.parent,
               operator_args=operator_args or [])
    host = f"{prefix}-{uuid.uuid4().hex[:5]}"
    try:
        st.start(k8s, [host], progress=lambda m: None, namespaces=[namespace])
        st.wait_hosts_up()
        yield st
    finally:
        st.stop()
        for log in st.log_dir.glob("*.log"):
            print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-log_lines:]))
